package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const (
	testAppID = "970CA35de60c44645bbae8a215061b33"
	testCert  = "5CFd2fd1755d40ecb72977518be15d3b"
)

func newTestBuilder(t testing.TB) *Builder {
	t.Helper()
	b, err := NewBuilder(testAppID, testCert)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func validRequest() RTCRequest {
	return RTCRequest{Channel: "room-1", UID: 42, Role: RolePublisher, Expire: 3600}
}

func TestNewBuilder_RejectsMalformedAppIDAndCertificate(t *testing.T) {
	tests := []struct {
		name, appID, cert, field string
	}{
		{"short app id", "970CA35de60c", testCert, "app_id"},
		{"non-hex app id", "970CA35de60c44645bbae8a215061b3g", testCert, "app_id"},
		{"empty certificate", testAppID, "", "app_certificate"},
		{"long certificate", testAppID, testCert + "0", "app_certificate"},
		{"non-hex certificate", testAppID, "5CFd2fd1755d40ecb72977518be15d3Z", "app_certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewBuilder(tt.appID, tt.cert)
			var ie *InputError
			if !errors.As(err, &ie) || ie.Field != tt.field {
				t.Fatalf("err = %v, want *InputError for %s", err, tt.field)
			}
			if tt.cert != "" && strings.Contains(err.Error(), tt.cert) {
				t.Error("error message contains the certificate")
			}
		})
	}
}

func TestBuilderRTC_RejectsInvalidInputByField(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*RTCRequest)
		field string
	}{
		{"empty channel", func(r *RTCRequest) { r.Channel = "" }, "channel"},
		{"channel of 64 bytes", func(r *RTCRequest) { r.Channel = strings.Repeat("a", 64) }, "channel"},
		{"slash in channel", func(r *RTCRequest) { r.Channel = "a/b" }, "channel"},
		{"quote in channel", func(r *RTCRequest) { r.Channel = `a"b` }, "channel"},
		{"non-ASCII channel", func(r *RTCRequest) { r.Channel = "café" }, "channel"},
		{"wildcard not requested", func(r *RTCRequest) { r.Channel = "Agora*" }, "channel"},
		{"account of 256 bytes", func(r *RTCRequest) { r.Account = strings.Repeat("a", 256) }, "account"},
		{"backslash in account", func(r *RTCRequest) { r.Account = `a\b` }, "account"},
		{"wildcard account", func(r *RTCRequest) { r.Account = "*"; r.AllowWildcard = true }, "account"},
		{"role 0", func(r *RTCRequest) { r.Role = 0 }, "role"},
		{"role 3", func(r *RTCRequest) { r.Role = 3 }, "role"},
		{"expire 0", func(r *RTCRequest) { r.Expire = 0 }, "expire"},
		{"expire over 24h", func(r *RTCRequest) { r.Expire = 86401 }, "expire"},
		{"RTM user of 65 bytes", func(r *RTCRequest) { r.RTMUser = strings.Repeat("u", 65) }, "rtm_user"},
		{"newline in RTM user", func(r *RTCRequest) { r.RTMUser = "u\n" }, "rtm_user"},
	}
	b := newTestBuilder(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validRequest()
			tt.edit(&req)
			tok, err := b.RTC(req)
			var ie *InputError
			if !errors.As(err, &ie) || ie.Field != tt.field {
				t.Fatalf("err = %v, want *InputError for %s", err, tt.field)
			}
			if tok != "" {
				t.Errorf("token %q returned with an error", tok)
			}
			if strings.Contains(err.Error(), testCert) {
				t.Error("error message contains the certificate")
			}
		})
	}
}

func TestBuilderRTC_AcceptsLimitsAndExplicitWildcards(t *testing.T) {
	tests := []struct {
		name string
		edit func(*RTCRequest)
	}{
		{"channel of 63 bytes", func(r *RTCRequest) { r.Channel = strings.Repeat("a", 63) }},
		{"every allowed character", func(r *RTCRequest) { r.Channel = " !#$%&()+-:;<=.>?@[]^_{}|~,aZ09" }},
		{"wildcard channel", func(r *RTCRequest) { r.Channel = "*"; r.AllowWildcard = true }},
		{"prefix wildcard", func(r *RTCRequest) { r.Channel = "Agora*"; r.AllowWildcard = true }},
		{"account of 255 bytes", func(r *RTCRequest) { r.Account = strings.Repeat("a", 255) }},
		{"uid 0", func(r *RTCRequest) { r.UID = 0 }},
		{"largest uid", func(r *RTCRequest) { r.UID = 1<<32 - 1 }},
		{"expire 1", func(r *RTCRequest) { r.Expire = 1 }},
		{"expire 24h", func(r *RTCRequest) { r.Expire = 86400 }},
		{"RTM user of 64 bytes", func(r *RTCRequest) { r.RTMUser = strings.Repeat("u", 64) }},
	}
	b := newTestBuilder(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validRequest()
			tt.edit(&req)
			if _, err := b.RTC(req); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBuilderRTM_RejectsInvalidInputByField(t *testing.T) {
	b := newTestBuilder(t)
	for _, tt := range []struct {
		name   string
		user   string
		expire uint32
		field  string
	}{
		{"empty user", "", 60, "rtm_user"},
		{"user of 65 bytes", strings.Repeat("u", 65), 60, "rtm_user"},
		{"expire 0", "u", 0, "expire"},
		{"expire over 24h", "u", 86401, "expire"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.RTM(tt.user, tt.expire, 0, 0)
			var ie *InputError
			if !errors.As(err, &ie) || ie.Field != tt.field {
				t.Fatalf("err = %v, want *InputError for %s", err, tt.field)
			}
		})
	}
}

func TestBuilder_ZeroValueRefusesToSign(t *testing.T) {
	var b *Builder
	if _, err := b.RTC(validRequest()); !errors.Is(err, errNoApp) {
		t.Errorf("nil Builder: err = %v, want errNoApp", err)
	}
	if _, err := new(Builder).RTM("u", 60, 0, 0); !errors.Is(err, errNoApp) {
		t.Errorf("zero Builder: err = %v, want errNoApp", err)
	}
}

func TestBuilderRTC_RolesGrantAgoraPrivileges(t *testing.T) {
	b := newTestBuilder(t)
	for _, tt := range []struct {
		role Role
		want []uint16
	}{
		{RolePublisher, []uint16{PrivilegeJoinChannel, PrivilegePublishAudio, PrivilegePublishVideo, PrivilegePublishData}},
		{RoleSubscriber, []uint16{PrivilegeJoinChannel}},
	} {
		t.Run(tt.role.String(), func(t *testing.T) {
			req := validRequest()
			req.Role = tt.role
			tok := mustParse(t, mustRTC(t, b, req))
			var got []uint16
			for _, p := range tok.Services[0].Privileges {
				got = append(got, p.ID)
				if p.Expire != req.Expire {
					t.Errorf("privilege %d expires after %d s, want %d", p.ID, p.Expire, req.Expire)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("privileges %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBuilder_FillsInIssueTimeAndRandomSalt(t *testing.T) {
	b := newTestBuilder(t)
	a := mustParse(t, mustRTC(t, b, validRequest()))
	c := mustParse(t, mustRTC(t, b, validRequest()))
	if a.IssuedAt == 0 || a.Salt == 0 || a.Salt >= maxSalt {
		t.Errorf("issued at %d, salt %d: want now and a salt in [1, %d)", a.IssuedAt, a.Salt, maxSalt)
	}
	if a.Salt == c.Salt {
		t.Errorf("two tokens share salt %d", a.Salt)
	}
}

// TestBuilder_RoundTrip is a property test: for random valid requests, Parse
// gives back exactly the inputs and the signature verifies.
func TestBuilder_RoundTrip(t *testing.T) {
	b := newTestBuilder(t)
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("abcxyzABCXYZ0189 !#$%&()+-:;<=.>?@[]^_{}|~,")
	randName := func(maxLen int) string {
		s := make([]byte, 1+rng.IntN(maxLen))
		for i := range s {
			s[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(s)
	}
	for i := range 2000 {
		req := RTCRequest{
			Channel:  randName(MaxChannelLen),
			UID:      rng.Uint32(),
			Role:     Role(1 + rng.IntN(2)),
			Expire:   1 + rng.Uint32N(MaxExpire),
			IssuedAt: 1 + rng.Uint32(),
			Salt:     1 + rng.Uint32(),
		}
		if req.IssuedAt == 0 || req.Salt == 0 {
			continue // wrapped around: zero means "fill in"
		}
		if rng.IntN(4) == 0 {
			req.Channel, req.AllowWildcard = req.Channel[:len(req.Channel)/2]+"*", true
		}
		if rng.IntN(2) == 0 {
			req.Account = randName(MaxAccountLen)
		}
		if rng.IntN(3) == 0 {
			req.RTMUser = randName(MaxRTMUserLen)
		}
		s, err := b.RTC(req)
		if err != nil {
			t.Fatalf("case %d: RTC(%+v): %v", i, req, err)
		}
		tok := mustParse(t, s)
		if !tok.Verify(testCert) {
			t.Fatalf("case %d: signature does not verify", i)
		}
		if tok.AppID != testAppID || tok.IssuedAt != req.IssuedAt || tok.Expire != req.Expire || tok.Salt != req.Salt {
			t.Fatalf("case %d: header %+v does not match %+v", i, tok, req)
		}
		wantUID := req.Account
		if wantUID == "" && req.UID != 0 {
			wantUID = strconv.FormatUint(uint64(req.UID), 10)
		}
		rtc := tok.Services[0]
		if rtc.Type != ServiceRTC || rtc.Channel != req.Channel || rtc.UID != wantUID {
			t.Fatalf("case %d: RTC service %+v does not match %+v", i, rtc, req)
		}
		wantServices := 1
		if req.RTMUser != "" {
			wantServices = 2
			rtm := tok.Services[1]
			if rtm.Type != ServiceRTM || rtm.User != req.RTMUser || len(rtm.Privileges) != 1 ||
				rtm.Privileges[0] != (Privilege{ID: PrivilegeLogin, Expire: req.Expire}) {
				t.Fatalf("case %d: RTM service %+v does not match %+v", i, rtm, req)
			}
		}
		if len(tok.Services) != wantServices {
			t.Fatalf("case %d: %d services, want %d", i, len(tok.Services), wantServices)
		}
	}
}

func TestBuilderRTM_RoundTrip(t *testing.T) {
	b := newTestBuilder(t)
	s, err := b.RTM("alice@example.com", 600, 1700000000, 7)
	if err != nil {
		t.Fatal(err)
	}
	tok := mustParse(t, s)
	want := Service{Type: ServiceRTM, User: "alice@example.com", Privileges: []Privilege{{PrivilegeLogin, 600}}}
	if len(tok.Services) != 1 || tok.Services[0].Type != want.Type || tok.Services[0].User != want.User ||
		tok.Services[0].Privileges[0] != want.Privileges[0] || tok.IssuedAt != 1700000000 || tok.Salt != 7 {
		t.Fatalf("got %+v, want one service %+v", tok, want)
	}
	if !tok.Verify(testCert) {
		t.Error("signature does not verify")
	}
}

func TestBuilder_IsSafeForConcurrentUse(t *testing.T) {
	b := newTestBuilder(t)
	want := mustRTC(t, b, RTCRequest{Channel: "c", UID: 1, Role: RolePublisher, Expire: 60, IssuedAt: 5, Salt: 6})
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for range 200 {
				got, err := b.RTC(RTCRequest{Channel: "c", UID: 1, Role: RolePublisher, Expire: 60, IssuedAt: 5, Salt: 6})
				if err == nil && got != want {
					err = errors.New("concurrent builds gave a different token")
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestSigner_MatchesCryptoHMAC(t *testing.T) {
	s := newSigner()
	for _, keyLen := range []int{0, 4, 32, 63, 64, 65, 200} {
		for _, msgLen := range []int{0, 1, 55, 64, 200} {
			key := []byte(strings.Repeat("k", keyLen))
			msg := []byte(strings.Repeat("m", msgLen))
			h := hmac.New(sha256.New, key)
			h.Write(msg)
			var got [sha256.Size]byte
			s.mac(&got, key, msg[:msgLen/2], msg[msgLen/2:])
			if !hmac.Equal(got[:], h.Sum(nil)) {
				t.Errorf("key %d bytes, message %d bytes: differs from crypto/hmac", keyLen, msgLen)
			}
		}
	}
}

func mustRTC(t testing.TB, b *Builder, req RTCRequest) string {
	t.Helper()
	s, err := b.RTC(req)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustParse(t testing.TB, s string) *AccessToken {
	t.Helper()
	tok, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
