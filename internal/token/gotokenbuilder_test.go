package token_test

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"io"
	"strconv"
	"strings"
	"testing"

	rtctokenbuilder2 "github.com/AgoraIO-Community/go-tokenbuilder/rtctokenbuilder"

	"github.com/broker-dev/broker/internal/token"
)

// go-tokenbuilder v1.3.0 is what Agora's sample token server uses; it is a
// test-only dependency, used here as a second, independent reference.

const (
	refAppID = "970CA35de60c44645bbae8a215061b33"
	refCert  = "5CFd2fd1755d40ecb72977518be15d3b"
)

// TestBuilder_MatchesGoTokenBuilder mints with go-tokenbuilder, reads back its
// random issue time and salt, rebuilds with the same values, and requires the
// same decompressed content, signature included. The token strings differ:
// go-tokenbuilder compresses the content, the builder stores it.
func TestBuilder_MatchesGoTokenBuilder(t *testing.T) {
	tests := []struct {
		name    string
		channel string
		uid     uint32
		account string
		role    token.Role
		expire  uint32
	}{
		{"publisher uid", "room-1", 2882341273, "", token.RolePublisher, 3600},
		{"subscriber uid", "room-1", 1, "", token.RoleSubscriber, 600},
		{"uid 0", "lobby", 0, "", token.RoleSubscriber, 60},
		{"largest uid", "x", 1<<32 - 1, "", token.RolePublisher, 86400},
		{"publisher account", "Agora Room #7", 0, "alice@example.com", token.RolePublisher, 3600},
		{"subscriber account", "room-2", 0, "bob", token.RoleSubscriber, 1},
		{"account \"0\"", "room-3", 0, "0", token.RoleSubscriber, 3600},
		{"longest names", strings.Repeat("c", token.MaxChannelLen), 0, strings.Repeat("a", token.MaxAccountLen), token.RolePublisher, 3600},
	}
	b, err := token.NewBuilder(refAppID, refCert)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ref string
			if tt.account != "" {
				ref, err = rtctokenbuilder2.BuildTokenWithAccount(refAppID, refCert, tt.channel, tt.account, rtctokenbuilder2.Role(tt.role), tt.expire)
			} else {
				ref, err = rtctokenbuilder2.BuildTokenWithUid(refAppID, refCert, tt.channel, tt.uid, rtctokenbuilder2.Role(tt.role), tt.expire)
			}
			if err != nil {
				t.Fatalf("go-tokenbuilder: %v", err)
			}
			parsed, err := token.Parse(ref)
			if err != nil {
				t.Fatalf("Parse(go-tokenbuilder token): %v", err)
			}
			if !parsed.Verify(refCert) {
				t.Fatal("go-tokenbuilder token does not verify")
			}
			got, err := b.RTC(token.RTCRequest{
				Channel: tt.channel, UID: tt.uid, Account: tt.account, Role: tt.role, Expire: tt.expire,
				IssuedAt: parsed.IssuedAt, Salt: parsed.Salt,
			})
			if err != nil {
				t.Fatal(err)
			}
			if gotContent, refContent := content(t, got), content(t, ref); !bytes.Equal(gotContent, refContent) {
				t.Errorf("content differs from go-tokenbuilder's (issue_ts %d, salt %d)\n got %x\nwant %x",
					parsed.IssuedAt, parsed.Salt, gotContent, refContent)
			}
			wantUID := tt.account
			if wantUID == "" && tt.uid != 0 {
				wantUID = strconv.FormatUint(uint64(tt.uid), 10)
			}
			if s := parsed.Services[0]; s.Channel != tt.channel || s.UID != wantUID {
				t.Errorf("service %+v: want channel %q uid %q", s, tt.channel, wantUID)
			}
		})
	}
}

// content base64- and zlib-decodes a 007 token without the package's decoder.
func content(t *testing.T, s string) []byte {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, token.Version007))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zlib.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	c, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
