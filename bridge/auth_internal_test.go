package bridge

import (
	"errors"
	"strings"
	"testing"
)

// Signed status JSON (auth.go): the tag is the JSON's last member, bound to the topic.
func TestSignerJSON(t *testing.T) {
	s := newSigner([]byte("0123456789abcdef"))
	obj := []byte(`{"node":"b2","agent_up":true,"time":"2026-01-01T00:00:00Z"}`)
	sealed := s.sealJSON("$HA/t/b2/status", obj)
	if !strings.HasSuffix(string(sealed), `"}`) || !strings.Contains(string(sealed), `,"sig":"`) {
		t.Fatalf("sealed: %s", sealed)
	}
	got, err := s.openJSON("$HA/t/b2/status", sealed)
	if err != nil || string(got) != string(obj) {
		t.Fatalf("open: %s, %v", got, err)
	}
	tampered := strings.Replace(string(sealed), `"agent_up":true`, `"agent_up":fals`, 1)
	for name, c := range map[string]struct{ topic, msg string }{
		"unsigned":    {"$HA/t/b2/status", string(obj)},
		"other topic": {"$HA/t/b3/status", string(sealed)},
		"tampered":    {"$HA/t/b2/status", tampered},
		"short":       {"$HA/t/b2/status", `{}`},
		"bad hex":     {"$HA/t/b2/status", string(obj[:len(obj)-1]) + `,"sig":"zz345678901234567890123456789012"}`},
	} {
		if _, err := s.openJSON(c.topic, []byte(c.msg)); !errors.Is(err, ErrForged) {
			t.Errorf("%s: err %v, want ErrForged", name, err)
		}
	}
	var none *signer
	if got := none.sealJSON("x", obj); string(got) != string(obj) {
		t.Errorf("no secret: %s", got)
	}
}

// Client ids: plain without a secret, with a secret the plain id, "-" and a 16-digit tag that
// depends on the secret and the id.
func TestClientIDsFromSecret(t *testing.T) {
	plain := NewTopics("c", "$forward/")
	if got := plain.LocalID("b1"); got != "mha-c-b1-local" {
		t.Errorf("plain local id %q", got)
	}
	a, b := plain.WithIDSecret([]byte("secret one 012345")), plain.WithIDSecret([]byte("secret two 012345"))
	ids := map[string]bool{}
	for _, id := range []string{a.LocalID("b1"), a.LinkID("b1", "b2"), a.PullID("b1", "b2"), a.ReaderID("b1", "b2"), a.ProbeID("b1"), b.LocalID("b1")} {
		if !strings.HasPrefix(id, plain.ClientPrefix()) || len(id) < 17 || id[len(id)-17] != '-' || ids[id] {
			t.Errorf("id %q: want a distinct mha-c-...-<16 hex> id", id)
		}
		ids[id] = true
	}
	if a.LocalID("b1") != plain.WithIDSecret([]byte("secret one 012345")).LocalID("b1") {
		t.Error("the same secret gives different ids")
	}
}

// openJSON never panics, accepts only what sealJSON wrote for the same topic, and gives back
// exactly the sealed object.
func FuzzSignerOpenJSON(f *testing.F) {
	s := newSigner([]byte("0123456789abcdef"))
	f.Add("$HA/t/b1/status", []byte(`{"agent_up":true}`))
	f.Add("$HA/t/b1/status", []byte(`{}`))
	f.Add("x", []byte(`,"sig":"00000000000000000000000000000000"}`))
	f.Fuzz(func(t *testing.T, topic string, msg []byte) {
		if got, err := s.openJSON(topic, msg); err == nil {
			if again := s.sealJSON(topic, got); string(again) != string(msg) {
				t.Fatalf("opened %q from %q, which seals to %q", got, msg, again)
			}
		}
		if sealed := s.sealJSON(topic, msg); string(sealed) != string(msg) {
			got, err := s.openJSON(topic, sealed)
			if err != nil || string(got) != string(msg) {
				t.Fatalf("round trip of %q: %q, %v", msg, got, err)
			}
		}
	})
}
