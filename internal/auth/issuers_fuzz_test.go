package auth

import (
	"context"
	"strings"
	"testing"
)

// Whatever a client sends as a bearer token, a set of issuers answers with
// an identity from a configured issuer or an error: never a panic, never an
// identity of an issuer it does not have.
func FuzzIssuersVerify(f *testing.F) {
	p, other := newTestProvider(f, "rsa-1"), newTestProvider(f, "rsa-2")
	logs := &logBuffer{}
	s := startIssuers(f, issuerConfig(p, "", logs, nil), issuerConfig(other, "other", logs, nil))
	good := p.token(f, "rsa-1", p.claims(nil))
	for _, seed := range []string{good, other.token(f, "rsa-2", other.claims(nil)), good[:len(good)/2], "", ".", "..", "a.b.c",
		strings.Replace(good, ".", "..", 1), "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.", good + "x"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		id, err := s.Verify(context.Background(), raw)
		if err != nil {
			return
		}
		if _, ok := s.QualifierFor(id.Issuer); !ok {
			t.Fatalf("accepted a token of issuer %q, which is not configured", id.Issuer)
		}
	})
}
