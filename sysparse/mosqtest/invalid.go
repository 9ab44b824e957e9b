// The table test of a configuration generator's invalid parameters (haproxy.Generate,
// keepalived.Generate): each case changes one valid input and names the exact error.

package mosqtest

import (
	"errors"
	"testing"

	"github.com/hashicorp/go-multierror"
)

// InvalidCase is one invalid input: Change turns a valid P into it, and Want is the error text
// after the generator's prefix.
type InvalidCase[P any] struct {
	Name   string
	Change func(p *P)
	Want   string
}

// Generator is what InvalidParams needs of a generator.
type Generator[P any] struct {
	// Valid returns a fresh valid input for each case.
	Valid    func() P
	Generate func(P) ([]byte, error)
	// Err is the sentinel every validation error wraps, Prefix the text its errors start with.
	Err    error
	Prefix string
}

// InvalidParams runs each case as a subtest and requires that Generate refuses it: an error
// that wraps g.Err, that is a *multierror.Error (every problem reported at once), that reads
// exactly g.Prefix+Want, and no output beside it.
func InvalidParams[P any](t *testing.T, g Generator[P], cases []InvalidCase[P]) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			p := g.Valid()
			tc.Change(&p)
			out, err := g.Generate(p)
			if err == nil {
				t.Fatalf("Generate accepted the params and wrote:\n%s", out)
			}
			if out != nil {
				t.Errorf("Generate returned output with an error")
			}
			if !errors.Is(err, g.Err) {
				t.Errorf("errors.Is(err, %v) = false for %v", g.Err, err)
			}
			var merr *multierror.Error
			if !errors.As(err, &merr) {
				t.Errorf("errors.As(err, *multierror.Error) = false for %v", err)
			}
			if got := err.Error(); got != g.Prefix+tc.Want {
				t.Errorf("error\n got %s\nwant %s", got, g.Prefix+tc.Want)
			}
		})
	}
}
