package token_test

import (
	"testing"

	rtctokenbuilder2 "github.com/AgoraIO-Community/go-tokenbuilder/rtctokenbuilder"

	"github.com/broker-dev/broker/internal/token"
)

// The broker's hot path: a publisher token for a numeric uid, one hour, with
// the issue time and salt filled in per token. BenchmarkGoTokenBuilderRTC is
// the same token from go-tokenbuilder v1.3.0, for comparison in one run.

func BenchmarkBuildRTC(b *testing.B) {
	builder, err := token.NewBuilder(refAppID, refCert)
	if err != nil {
		b.Fatal(err)
	}
	req := token.RTCRequest{Channel: "7d72365eb983485397e3e3f9d460bdda", UID: 2882341273, Role: token.RolePublisher, Expire: 3600}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := builder.RTC(req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGoTokenBuilderRTC(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rtctokenbuilder2.BuildTokenWithUid(refAppID, refCert, "7d72365eb983485397e3e3f9d460bdda", 2882341273, rtctokenbuilder2.RolePublisher, 3600); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	builder, err := token.NewBuilder(refAppID, refCert)
	if err != nil {
		b.Fatal(err)
	}
	s, err := builder.RTC(token.RTCRequest{Channel: "7d72365eb983485397e3e3f9d460bdda", UID: 2882341273, Role: token.RolePublisher, Expire: 3600})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		tok, err := token.Parse(s)
		if err != nil || !tok.Verify(refCert) {
			b.Fatal("parse or verify failed")
		}
	}
}
