package mqttconn

import (
	"bytes"
	"errors"
	"testing"
)

// A PUBLISH's properties lose Topic Alias and Subscription Identifier, whose meaning is the
// connection's and the subscriber's; the expiry goes apart; the others keep their order and
// their duplicates, and encode back to the same bytes.
func TestSplitPublishProps(t *testing.T) {
	user1 := []byte{PropUserProperty, 0, 1, 'k', 0, 1, '1'}
	user2 := []byte{PropUserProperty, 0, 1, 'k', 0, 1, '2'}
	ct := []byte{PropContentType, 0, 1, 'j'}
	in := bytes.Join([][]byte{{PropTopicAlias, 0, 3}, user1, {PropMessageExpiry, 0, 0, 1, 0}, ct,
		{PropSubscriptionID, 0x81, 0x01}, user2, {PropPayloadFormat, 1}}, nil)
	p, err := SplitPublishProps(in)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Join([][]byte{user1, ct, user2, {PropPayloadFormat, 1}}, nil)
	if !bytes.Equal(p.Raw, want) || p.Expiry != 256 {
		t.Errorf("got %x expiry %d, want %x expiry 256", p.Raw, p.Expiry, want)
	}
	again, err := SplitPublishProps(AppendProps(nil, p)[1:])
	if err != nil || !bytes.Equal(again.Raw, want) || again.Expiry != 256 {
		t.Errorf("re-encoded: %x %d %v", again.Raw, again.Expiry, err)
	}
	if p, _ := SplitPublishProps(want); &p.Raw[0] != &want[0] {
		t.Error("nothing to drop: the properties are copied")
	}
	for name, bad := range map[string][]byte{
		"session expiry":       {PropSessionExpiry, 0, 0, 0, 1},
		"truncated string":     {PropContentType, 0, 5, 'j'},
		"truncated user value": {PropUserProperty, 0, 1, 'k', 0},
		"truncated expiry":     {PropMessageExpiry, 0, 0},
		"invalid UTF-8":        {PropContentType, 0, 1, 0xff},
		"NUL in a user key":    {PropUserProperty, 0, 1, 0, 0, 0},
		"wildcard response":    {PropResponseTopic, 0, 3, 'a', '/', '#'},
	} {
		if _, err := SplitPublishProps(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}
