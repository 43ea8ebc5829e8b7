package token

import (
	"errors"
	"testing"
)

// FuzzParse007 tries each input both as a token string and as decompressed
// content, so the fuzzer reaches the binary decoder without having to forge
// zlib streams. The seed corpus is testdata/fuzz/FuzzParse007.
func FuzzParse007(f *testing.F) {
	f.Fuzz(func(t *testing.T, input string) {
		checkParse007(t, Parse, input)
		checkParse007(t, func(s string) (*AccessToken, error) { return parseContent([]byte(s)) }, input)
	})
}

func checkParse007(t *testing.T, parse func(string) (*AccessToken, error), s string) {
	tok, err := parse(s)
	var ue *UnknownServiceError
	switch {
	case err == nil:
		if tok == nil {
			t.Fatal("no token and no error")
		}
	case errors.As(err, &ue):
		if tok == nil || len(tok.Services) != ue.Index {
			t.Fatalf("unknown service %d: want the %d services before it", ue.Index, ue.Index)
		}
	default:
		var pe *ParseError
		if !errors.As(err, &pe) || tok != nil {
			t.Fatalf("err = %v (%T) with token %v: want a *ParseError and no token", err, err, tok)
		}
		return
	}
	tok.Verify(testCert)
}

// FuzzParse006 checks that Parse006 returns either a token or a *ParseError
// and that Verify never panics. The seed corpus is testdata/fuzz/FuzzParse006.
func FuzzParse006(f *testing.F) {
	f.Fuzz(func(t *testing.T, input string) {
		tok, err := Parse006(input)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || tok != nil {
				t.Fatalf("err = %v (%T) with token %v: want a *ParseError and no token", err, err, tok)
			}
			return
		}
		tok.Verify(testCert, "channel", "42")
	})
}
