package sysparse

import (
	"fmt"
	"strconv"
	"strings"
)

// Message phrases of N and E lines.
const (
	phraseClient   = "New client connected from "
	phraseBridge   = "New bridge connected from "
	phraseExpire   = "Expiring client "
	expireSuffix   = " due to timeout."
	phraseBadRW    = "Bad socket read/write on client "
	phraseClientID = "Client "
	takeoverSuffix = " already connected, closing old connection."
	errnoInfix     = " disconnected: "
)

// disconnectForms are the endings of "Client <id>..." lines that Mosquitto 2.0.11 logs on
// .../N when a connection ends (src/loop.c do_disconnect, src/handle_disconnect.c). No ending
// is the end of another one. Two more forms are parsed apart: "Client <id> disconnected:
// <system error>." and "Bad socket read/write on client <id>: <error>".
var disconnectForms = [...]struct {
	suffix string
	reason Reason
}{
	{" disconnected.", ReasonDisconnect},
	{" closed its connection.", ReasonClosed},
	{" has exceeded timeout, disconnecting.", ReasonTimeout},
	{" disconnected due to protocol error.", ReasonProtocolError},
	{" disconnected due to malformed packet.", ReasonOther},
	{" disconnected, not authorised.", ReasonOther},
	{" disconnected due to oversize packet.", ReasonOther},
	{" disconnected due to oversize payload.", ReasonOther},
	{" disconnected due to out of memory.", ReasonOther},
	{" disconnected due to QoS too high or retain not supported.", ReasonOther},
	{" been disconnected by administrative action.", ReasonOther},
}

// parseNE parses a line of .../N or .../E (errTopic). It finds the message after the
// timestamp: first after the learned prefix, then at each place a prefix may end (the start
// of the line, after each ": "); the first place where a known message starts decides. The
// timestamp itself is strftime output and never starts with one of the phrases.
//
// Only .../N carries connect, disconnect and expiry lines, and only the takeover line is read
// from .../E: other levels log texts that end with a client id and could then pass for one of
// these lines.
func (p *Parser) parseNE(errTopic bool, line string) (Event, error) {
	trunc := len(line) >= LineMax
	tried := -1
	if c, ok := p.shapeCut(line); ok {
		tried = c
		if ev, ok, err := p.message(errTopic, line, c, trunc); ok {
			return ev, err
		}
	}
	for cut := 0; cut >= 0; cut = nextCut(line, cut) {
		if cut == tried {
			continue
		}
		if ev, ok, err := p.message(errTopic, line, cut, trunc); ok {
			return ev, err
		}
	}
	return Event{Truncated: trunc}, nil
}

// message parses the message that starts after a prefix of cut bytes. ok reports that a known
// message starts there.
func (p *Parser) message(errTopic bool, line string, cut int, trunc bool) (ev Event, ok bool, err error) {
	msg := line[cut:]
	cs := p.scratch[:0]
	defer func() { p.scratch = cs[:0] }()
	switch {
	case errTopic:
		rest, found := strings.CutPrefix(msg, phraseClientID)
		if !found {
			return Event{}, false, nil
		}
		if id, found := strings.CutSuffix(rest, takeoverSuffix); found && id != "" {
			cs = append(cs, cand{id: id, kind: TakenOver})
		}
		if len(cs) == 0 {
			// Another error line about a client, or a takeover line cut by the buffer.
			p.learn(line[:cut])
			return Event{Truncated: trunc, Timestamp: timestamp(line, cut)}, true, nil
		}
	case strings.HasPrefix(msg, phraseClient), strings.HasPrefix(msg, phraseBridge):
		bridge := strings.HasPrefix(msg, phraseBridge)
		rest := msg[len(phraseClient):]
		after, found := afterAddress(rest)
		if !found {
			if trunc {
				p.learn(line[:cut])
				return Event{Kind: Connected, Bridge: bridge, Truncated: true, Timestamp: timestamp(line, cut)}, true, nil
			}
			return Event{}, true, fmt.Errorf("%w: connect line %q: no \"<ip>:<port> as \"", ErrMalformed, line)
		}
		cs = appendConnects(cs, after)
		if len(cs) == 0 {
			p.learn(line[:cut])
			if trunc {
				// The id, or the "(p2, c1, k60)" after it, was cut: ClientID is the start of
				// the id (maybe with the start of that group) and is not remembered.
				return Event{Kind: Connected, Bridge: bridge, ClientID: after, Truncated: true, Timestamp: timestamp(line, cut)}, true, nil
			}
			return Event{}, true, fmt.Errorf("%w: connect line %q: no \"(p<n>, c<n>, k<n>).\" after the id", ErrMalformed, line)
		}
		for i := range cs {
			cs[i].kind = Connected
		}
		ev.Bridge = bridge
	case strings.HasPrefix(msg, phraseExpire):
		rest := msg[len(phraseExpire):]
		id, found := strings.CutSuffix(rest, expireSuffix)
		if !found || id == "" {
			p.learn(line[:cut])
			if trunc {
				return Event{Kind: Expired, ClientID: rest, Truncated: true, Timestamp: timestamp(line, cut)}, true, nil
			}
			return Event{}, true, fmt.Errorf("%w: expiry line %q: no %q", ErrMalformed, line, expireSuffix)
		}
		cs = append(cs, cand{id: id, kind: Expired})
	case strings.HasPrefix(msg, phraseBadRW):
		// "Bad socket read/write on client <id>: <error>": the error text (mosquitto_strerror)
		// has no ": ", the id may: the last ": " ends the id.
		rest := msg[len(phraseBadRW):]
		if i := strings.LastIndex(rest, ": "); i > 0 {
			cs = append(cs, cand{id: rest[:i], kind: Disconnected, reason: ReasonOther, detail: "bad socket read/write: " + rest[i+2:]})
		}
		if len(cs) == 0 {
			p.learn(line[:cut])
			return Event{Truncated: trunc, Timestamp: timestamp(line, cut)}, true, nil
		}
	case strings.HasPrefix(msg, phraseClientID):
		rest := msg[len(phraseClientID):]
		cs = appendDisconnects(cs, rest)
		if id, found := strings.CutSuffix(rest, takeoverSuffix); found && id != "" {
			cs = append(cs, cand{id: id, kind: TakenOver})
		}
		if len(cs) == 0 {
			// Another notice about a client, or a line cut before its ending.
			p.learn(line[:cut])
			return Event{Truncated: trunc, Timestamp: timestamp(line, cut)}, true, nil
		}
	default:
		return Event{}, false, nil
	}
	p.learn(line[:cut])

	pick := p.resolve(cs)
	if pick < 0 {
		ev.Readings = readings(cs)
		pick = 0
	}
	c := cs[pick]
	// A line that parsed up to its known ending was not cut, even at LineMax bytes.
	ev.Kind, ev.ClientID, ev.Timestamp = c.kind, c.id, timestamp(line, cut)
	switch c.kind {
	case Connected:
		ev.Protocol, ev.CleanSession, ev.KeepAlive, ev.Username = c.protocol, c.clean, c.keep, c.user
		for _, c := range cs {
			p.Remember(c.id)
		}
	case Disconnected:
		ev.Reason, ev.Detail = c.reason, c.detail
		if ev.Readings == nil && c.id != UnknownClient {
			p.Forget(c.id)
		}
		if c.id == UnknownClient && p.Known(UnknownClient) && ev.Readings == nil {
			// A connection that never sent CONNECT, or a client that chose "<unknown>" as its
			// id: the empty reading stands for the first.
			ev.Readings = []Reading{{ClientID: UnknownClient}, {ClientID: ""}}
		}
	case Expired:
		if ev.Readings == nil {
			p.Forget(c.id)
		}
	}
	return ev, true, nil
}

// appendDisconnects appends the readings of "<id><ending>" for each disconnect form whose
// ending the line has.
func appendDisconnects(cs []cand, rest string) []cand {
	for _, f := range disconnectForms {
		if id, ok := strings.CutSuffix(rest, f.suffix); ok && id != "" {
			detail := ""
			if f.reason == ReasonOther {
				detail = strings.TrimSuffix(strings.TrimPrefix(f.suffix, " "), ".")
			}
			cs = append(cs, cand{id: id, kind: Disconnected, reason: f.reason, detail: detail})
		}
	}
	// "Client <id> disconnected: <strerror(errno)>.": a system error text has no ':', ','
	// or '.', which keeps this form apart from the fixed endings above; so only the last
	// " disconnected: " can start it.
	if body, ok := strings.CutSuffix(rest, "."); ok {
		i := strings.LastIndex(body, errnoInfix)
		if i > 0 {
			errText := body[i+len(errnoInfix):]
			if errText != "" && !strings.ContainsAny(errText, ":,.") {
				cs = append(cs, cand{id: body[:i], kind: Disconnected, reason: ReasonOther, detail: "disconnected: " + errText})
			}
		}
	}
	return cs
}

// afterAddress returns what follows "<ip>:<port> as " in a connect line. The address is
// Mosquitto's own text and has no " as "; the first " as " after a ":<port>" ends it.
func afterAddress(rest string) (string, bool) {
	for from := 0; ; {
		i := strings.Index(rest[from:], " as ")
		if i < 0 {
			return "", false
		}
		i += from
		j := i
		for j > 0 && rest[j-1] >= '0' && rest[j-1] <= '9' {
			j--
		}
		if j < i && j > 0 && rest[j-1] == ':' {
			return rest[i+len(" as "):], true
		}
		from = i + 1
	}
}

// appendConnects appends one reading per place where "<id>" may end in "<id> (p2, c1, k60)."
// or "<id> (p2, c1, k60, u'<user>').". Without a username only the end of the line can be the
// group; a username may itself contain such a group, and then more than one reading remains.
func appendConnects(cs []cand, after string) []cand {
	for from := 0; ; {
		i := strings.Index(after[from:], " (p")
		if i < 0 {
			return cs
		}
		i += from
		if i > 0 {
			if c, ok := parseConnectGroup(after[i:]); ok {
				c.id = after[:i]
				cs = append(cs, c)
			}
		}
		from = i + 1
	}
}

// parseConnectGroup parses " (p<n>, c<n>, k<n>)." or " (p<n>, c<n>, k<n>, u'<user>')." that
// must reach the end of the line.
func parseConnectGroup(s string) (cand, bool) {
	var c cand
	s = s[len(" (p"):]
	var ok bool
	if c.protocol, s, ok = leadingInt(s); !ok {
		return c, false
	}
	if s, ok = strings.CutPrefix(s, ", c"); !ok {
		return c, false
	}
	var clean int
	if clean, s, ok = leadingInt(s); !ok || clean > 1 {
		return c, false
	}
	c.clean = clean == 1
	if s, ok = strings.CutPrefix(s, ", k"); !ok {
		return c, false
	}
	if c.keep, s, ok = leadingInt(s); !ok {
		return c, false
	}
	if s == ")." {
		return c, true
	}
	if s, ok = strings.CutPrefix(s, ", u'"); !ok {
		return c, false
	}
	if c.user, ok = strings.CutSuffix(s, "')."); !ok {
		return c, false
	}
	return c, true
}

func leadingInt(s string) (int, string, bool) {
	n := 0
	for n < len(s) && n < 10 && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	if n == 0 {
		return 0, s, false
	}
	v, err := strconv.Atoi(s[:n])
	if err != nil {
		return 0, s, false
	}
	return v, s[n:], true
}
