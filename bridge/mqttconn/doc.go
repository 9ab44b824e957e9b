// Package mqttconn is the small MQTT 3.1.1 client of the relay's hot path: the agent's
// connection to its own broker and to every peer broker. It reads through one buffer, coalesces
// writes, and completes acknowledged publishes with callbacks, which a general client (paho, used
// everywhere else) does with a token and a goroutine each. It imports nothing else from this
// module. Rules of the MQTT 3.1.1 OASIS standard are cited as [MQTT-x.y.z-n] beside the code
// that keeps them; sections as §x.y.
//
// # Packets sent
//
//	CONNECT      protocol "MQTT", level 4, or 0x84 (4 with Mosquitto's bridge bit: the broker
//	             applies no-local and retain-as-published to this client); clean session or
//	             not; keepalive in seconds; client id; optional will (QoS 1, retained or not);
//	             optional username and password
//	PUBLISH      QoS 0, 1 or 2, retain flag; one packet id per QoS 1/2 publish, or one the
//	             caller held (Hold, HoldNext) and sends again with DUP on a resumed session;
//	             a payload may be given in parts (PublishParts), written without joining them
//	PUBACK       for each QoS 1 PUBLISH received, when its user calls Message.Ack
//	PUBREC       for each QoS 2 PUBLISH received, when its user calls Message.Ack
//	PUBREL       on PUBREC, releasing our QoS 2 publish (after the publisher's received hook),
//	             and on Release, for a QoS 2 publish of an earlier connection of the session
//	PUBCOMP      on PUBREL, completing a QoS 2 message received
//	SUBSCRIBE    one packet for a set of filters with their QoS
//	UNSUBSCRIBE  one packet for a set of filters
//	PINGREQ      every half keepalive
//	DISCONNECT   on Close
//
// # Packets read
//
//	CONNACK      first packet; a non-zero return code fails Dial; bit 0 is session present
//	PUBLISH      handed to the onPublish callback as a Message (with its packet id and DUP
//	             flag), on the reader goroutine
//	PUBACK       completes a QoS 1 publish
//	PUBREC       answered with PUBREL
//	PUBREL       answered with PUBCOMP
//	PUBCOMP      completes a QoS 2 publish
//	SUBACK       completes Subscribe; a 0x80 return code makes it fail with ErrRefused
//	UNSUBACK     completes Unsubscribe
//	PINGRESP     only proves the broker alive: a connection that reads nothing for 1.5
//	             keepalives ends
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
