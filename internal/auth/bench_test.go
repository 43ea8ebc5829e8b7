package auth

import (
	"context"
	"testing"
)

// BenchmarkVerifyCached measures the hot path: a client reusing its token.
func BenchmarkVerifyCached(b *testing.B) {
	p := newTestProvider(b, "rsa-1")
	v, _ := startVerifier(b, p, nil)
	tok := p.token(b, "rsa-1", p.claims(nil))
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyUncachedRS256 measures a first sight of a token: parse,
// RS256 signature check, claim checks, identity mapping.
func BenchmarkVerifyUncachedRS256(b *testing.B) {
	p := newTestProvider(b, "rsa-1")
	v, _ := startVerifier(b, p, nil)
	tok := p.token(b, "rsa-1", p.claims(nil))
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		v.cache.flush()
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIssuersVerifyCached is BenchmarkVerifyCached through a set of two
// issuers: a token seen before is answered from its issuer's cache without
// reading iss to pick the issuer.
func BenchmarkIssuersVerifyCached(b *testing.B) {
	p, other := newTestProvider(b, "rsa-1"), newTestProvider(b, "rsa-2")
	logs := &logBuffer{}
	s := startIssuers(b, issuerConfig(p, "", logs, nil), issuerConfig(other, "other", logs, nil))
	tok := p.token(b, "rsa-1", p.claims(nil))
	ctx := context.Background()
	if _, err := s.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}
