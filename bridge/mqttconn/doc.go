// Package mqttconn is the small MQTT 3.1.1 and MQTT 5 client of the relay's hot path: the
// agent's connection to its own broker (MQTT 5) and to every peer broker (3.1.1). It reads through one buffer, coalesces
// writes, and completes acknowledged publishes with callbacks, which a general client (paho, used
// everywhere else) does with a token and a goroutine each. It imports nothing else from this
// module. Rules of the MQTT 3.1.1 OASIS standard are cited as [MQTT-x.y.z-n] beside the code
// that keeps them; sections as §x.y (MQTT 5 sections say "MQTT 5"). PUBACK, PUBREC, PUBREL and
// PUBCOMP are sent in their 2-byte form in both versions (MQTT 5: reason code 0, no property).
//
// # Packets sent
//
//	CONNECT      protocol "MQTT", level 4, or 0x84 (4 with Mosquitto's bridge bit: the broker
//	             applies no-local and retain-as-published to this client), or 5 (MQTT 5: a
//	             session that is not clean gets Session Expiry Interval 0xFFFFFFFF; no other
//	             property, so the broker sends no topic alias); clean session (Clean Start) or
//	             not; keepalive in seconds; client id; optional will (QoS 1, retained or not, no
//	             will properties); optional username and password
//	PUBLISH      QoS 0, 1 or 2, retain flag, in MQTT 5 the properties given (Props: the
//	             Message Expiry Interval first, then Props.Raw as is; an MQTT 3.1.1
//	             connection drops them); one packet id per QoS 1/2 publish, or one the
//	             caller held (Hold, HoldNext) and sends again with DUP on a resumed session;
//	             a payload may be given in parts (PublishParts), written without joining them
//	PUBACK       for each QoS 1 PUBLISH received, when its user calls Message.Ack
//	PUBREC       for each QoS 2 PUBLISH received, when its user calls Message.Ack
//	PUBREL       on PUBREC, releasing our QoS 2 publish (after the publisher's received hook),
//	             and on Release, for a QoS 2 publish of an earlier connection of the session
//	PUBCOMP      on PUBREL, completing a QoS 2 message received
//	SUBSCRIBE    one packet for a set of filters with their QoS (MQTT 5: plus the connection's
//	             SubOptions, e.g. no-local and retain-as-published; no properties)
//	UNSUBSCRIBE  one packet for a set of filters
//	PINGREQ      every half keepalive
//	DISCONNECT   on Close
//
// # Packets read
//
//	CONNACK      first packet; a non-zero return code fails Dial; bit 0 is session present
//	PUBLISH      handed to the onPublish callback as a Message (with its packet id, DUP flag,
//	             time read and, in MQTT 5, its properties checked and split by
//	             SplitPublishProps: no Topic Alias or Subscription Identifier), on the reader
//	             goroutine
//	PUBACK       completes a QoS 1 publish
//	PUBREC       answered with PUBREL; in MQTT 5 one with a failure reason code completes the
//	             publish without PUBREL (the broker dropped it, as 3.1.1 does silently)
//	PUBREL       answered with PUBCOMP
//	PUBCOMP      completes a QoS 2 publish
//	SUBACK       completes Subscribe; a return code from 0x80 makes it fail with ErrRefused
//	UNSUBACK     completes Unsubscribe
//	PINGRESP     only proves the broker alive: a connection that reads nothing for 1.5
//	             keepalives ends
//	DISCONNECT   MQTT 5 only: the connection ends with its reason code
//
// Any other packet, or a malformed one, ends the connection with ErrMalformed. Publishes in
// flight when a connection ends complete with ErrConnLost; a Conn never reconnects, a Link dials
// again with jittered backoff.
//
// packet.go also exports the encoder (AppendConnect, AppendPublishHeader, AppendSubscribe,
// AppendString, AppendRemainingLength, ...) and ReadPacket for tests that drive a broker with
// raw packets. The HAProxy health-check CONNECT (package haproxy) is encoded there on its own,
// because the configuration generators import nothing else from this module.
package mqttconn
