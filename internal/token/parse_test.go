package token

import (
	"bytes"
	"compress/zlib"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// signingInfo builds a 007 signing_info header for testAppID followed by body
// (service count and services).
func signingInfo(body ...[]byte) []byte {
	info := binary.LittleEndian.AppendUint16(nil, uint16(len(testAppID)))
	info = append(info, testAppID...)
	info = binary.LittleEndian.AppendUint32(info, 1111111) // issue_ts
	info = binary.LittleEndian.AppendUint32(info, 600)     // expire
	info = binary.LittleEndian.AppendUint32(info, 1)       // salt
	return append(info, bytes.Join(body, nil)...)
}

// sealed signs info with testCert and encodes it as a 007 token.
func sealed(info []byte) string {
	var sig [sha256.Size]byte
	newSigner().sign007(&sig, []byte(testCert), 1111111, 1, info)
	content := append(binary.LittleEndian.AppendUint16(nil, sha256.Size), sig[:]...)
	return encode007(append(content, info...))
}

func u16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func str(s string) []byte { return append(u16(uint16(len(s))), s...) }

var rtcService = bytes.Join([][]byte{u16(1), u16(1), u16(1), u32(600), str("room"), str("42")}, nil)

func TestParse_RejectsMalformedTokensWithTheFieldAtFault(t *testing.T) {
	sig := append(u16(sha256.Size), make([]byte, sha256.Size)...)
	zlibOf := func(b []byte) string {
		var buf bytes.Buffer
		w := zlib.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.String()
	}
	tests := []struct {
		name, token, field string
	}{
		{"empty", "", "version"},
		{"006 token", "006970CA35de60c44645bbae8a215061b33IACV", "version"},
		{"too long", "007" + strings.Repeat("A", MaxTokenLen), "token"},
		{"not base64", "007eJx!!!", "base64"},
		{"URL-safe base64", "007eJx-_", "base64"},
		{"not zlib", "007" + base64.StdEncoding.EncodeToString([]byte("plain text")), "zlib"},
		{"truncated zlib", encode007(sig)[:20], "base64"},
		{"bad Adler-32", "007" + base64.StdEncoding.EncodeToString(append([]byte(zlibOf(sig))[:len(zlibOf(sig))-1], 0)), "zlib"},
		{"bytes after the zlib stream", "007" + base64.StdEncoding.EncodeToString(append([]byte(zlibOf(sig)), 0)), "zlib"},
		{"zlib bomb", "007" + base64.StdEncoding.EncodeToString([]byte(zlibOf(make([]byte, MaxContentLen+1)))), "zlib"},
		{"empty content", encode007(nil), "signature"},
		{"short signature", encode007(append(u16(31), make([]byte, 31)...)), "signature"},
		{"truncated app id", encode007(append(sig, u16(32)...)), "app_id"},
		{"missing service count", encode007(append(sig, signingInfo()...)), "service_count"},
		{"service count beyond the data", sealed(signingInfo(u16(60000), rtcService)), "service_count"},
		{"missing second service", sealed(signingInfo(u16(2), rtcService)), "service[1].type"},
		{"privilege count beyond the data", sealed(signingInfo(u16(1), u16(1), u16(60000))), "service[0].privileges"},
		{"truncated channel", sealed(signingInfo(u16(1), u16(1), u16(0), u16(10), []byte("ab"))), "service[0].channel"},
		{"trailing bytes", sealed(signingInfo(u16(1), rtcService, []byte{0})), "end"},
		{"RTM2 table beyond the data", sealed(signingInfo(u16(1), u16(8), u16(0), str("u"), u16(9000))), "service[0].permissions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := Parse(tt.token)
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Field != tt.field {
				t.Fatalf("err = %v, want *ParseError for %s", err, tt.field)
			}
			if tok != nil {
				t.Error("token returned with a parse error")
			}
		})
	}
}

func TestParse_StopsAtUnknownServiceAndStillVerifies(t *testing.T) {
	info := signingInfo(u16(3), rtcService, u16(9), []byte("opaque body of a future service"))
	tok, err := Parse(sealed(info))
	var ue *UnknownServiceError
	if !errors.As(err, &ue) || ue.Index != 1 || ue.Type != 9 {
		t.Fatalf("err = %v, want *UnknownServiceError{Index: 1, Type: 9}", err)
	}
	if tok == nil || len(tok.Services) != 1 || tok.Services[0].Channel != "room" {
		t.Fatalf("token = %+v, want the RTC service decoded before the unknown one", tok)
	}
	if !tok.Verify(testCert) {
		t.Error("Verify = false: the signature covers the undecoded bytes too")
	}
}

func TestParse_AcceptsAnySalt(t *testing.T) {
	info := signingInfo(u16(1), rtcService)
	binary.LittleEndian.PutUint32(info[2+32+8:], 0xFFFFFFFF)
	var sig [sha256.Size]byte
	newSigner().sign007(&sig, []byte(testCert), 1111111, 0xFFFFFFFF, info)
	content := append(append(u16(sha256.Size), sig[:]...), info...)
	tok, err := Parse(encode007(content))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Salt != 0xFFFFFFFF || !tok.Verify(testCert) {
		t.Errorf("salt %d, verifies %v: want 4294967295 and true", tok.Salt, tok.Verify(testCert))
	}
}

func TestVerify_RejectsTamperingAndWrongCertificates(t *testing.T) {
	good := sealed(signingInfo(u16(1), rtcService))
	content, err := inflate(good)
	if err != nil {
		t.Fatal(err)
	}
	for i := 2; i < len(content); i++ {
		mutated := bytes.Clone(content)
		mutated[i] ^= 0x01
		tok, err := Parse(encode007(mutated))
		if err != nil {
			continue // no longer decodes: also a rejection
		}
		if tok.Verify(testCert) {
			t.Fatalf("flipping a bit of byte %d still verifies", i)
		}
	}
	tok := mustParse(t, good)
	for _, cert := range []string{"", "short", strings.ToLower(testCert), testCert + "0"} {
		if tok.Verify(cert) {
			t.Errorf("Verify(%q) = true", cert)
		}
	}
	if (&AccessToken{}).Verify(testCert) {
		t.Error("the zero AccessToken verifies")
	}
}

func TestAccessToken_DeadlinesAreRelativeToIssueTime(t *testing.T) {
	tok := &AccessToken{IssuedAt: 1_700_000_000, Expire: 3600}
	if got := tok.ExpiresAt(); got != 1_700_003_600 {
		t.Errorf("ExpiresAt = %d, want 1700003600", got)
	}
	if at, never := tok.PrivilegeDeadline(600); at != 1_700_000_600 || never {
		t.Errorf("PrivilegeDeadline(600) = %d, %v; want 1700000600, false", at, never)
	}
	if _, never := tok.PrivilegeDeadline(0); !never {
		t.Error("PrivilegeDeadline(0): want never")
	}
	max := &AccessToken{IssuedAt: 1<<32 - 1, Expire: 1<<32 - 1}
	if got := max.ExpiresAt(); got != 2*(1<<32-1) {
		t.Errorf("ExpiresAt overflowed: %d", got)
	}
}

func TestParse006_RejectsMalformedTokensWithTheFieldAtFault(t *testing.T) {
	const prefix = "006" + testAppID
	enc := func(parts ...[]byte) string {
		return prefix + base64.StdEncoding.EncodeToString(bytes.Join(parts, nil))
	}
	sig := str(strings.Repeat("s", 32))
	message := bytes.Join([][]byte{u32(1), u32(1111111), u16(1), u16(1), u32(0)}, nil)
	tests := []struct {
		name, token, field string
	}{
		{"empty", "", "version"},
		{"007 token", "007eJxSYBBbsMMnKq7p", "version"},
		{"too long", prefix + strings.Repeat("A", MaxTokenLen), "token"},
		{"short app id", "006970CA35de60c", "app_id"},
		{"non-hex app id", "006970CA35de60c44645bbae8a215061bXX", "app_id"},
		{"not base64", prefix + "!!!", "base64"},
		{"short signature", enc(str("s")), "signature"},
		{"missing CRCs", enc(sig), "channel_crc"},
		{"missing message", enc(sig, u32(0), u32(0)), "message"},
		{"bytes after the message", enc(sig, u32(0), u32(0), str(string(message)), []byte{0}), "end"},
		{"privilege count beyond the message", enc(sig, u32(0), u32(0), str(string(message[:8])+string(u16(9)))), "privileges"},
		{"bytes after the privileges", enc(sig, u32(0), u32(0), str(string(message)+"x")), "message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := Parse006(tt.token)
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Field != tt.field {
				t.Fatalf("err = %v, want *ParseError for %s", err, tt.field)
			}
			if tok != nil {
				t.Error("token returned with a parse error")
			}
		})
	}
}

// TestParsers_NeverPanic feeds both parsers every truncation and many
// single-byte corruptions of every official vector: of the token string, and of
// the decoded bytes, where the binary decoders are reached directly.
func TestParsers_NeverPanic(t *testing.T) {
	try := func(what string, parse func() error) {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("panic %v on %s", r, what)
			}
		}()
		if err := parse(); err != nil {
			var pe *ParseError
			var ue *UnknownServiceError
			if !errors.As(err, &pe) && !errors.As(err, &ue) {
				t.Fatalf("%s: error %v (%T) is neither *ParseError nor *UnknownServiceError", what, err, err)
			}
		}
	}
	parse007 := func(tok *AccessToken, err error) error {
		if tok != nil {
			tok.Verify(testCert)
		} else if err == nil {
			return errors.New("neither token nor error")
		}
		return err
	}
	parse006 := func(tok *AccessToken006, err error) error {
		if tok != nil {
			tok.Verify(testCert, "c", "1")
		} else if err == nil {
			return errors.New("neither token nor error")
		}
		return err
	}
	for _, v := range loadVectors(t) {
		s := v.ExpectedToken
		for i := range len(s) {
			for _, input := range []string{s[:i], s[:i] + "A" + s[i+1:]} {
				try(strconv.Quote(input), func() error { return parse007(Parse(input)) })
				try(strconv.Quote(input), func() error { return parse006(Parse006(input)) })
			}
		}
		if v.Version == Version007 {
			content, err := inflate(s)
			if err != nil {
				t.Fatal(err)
			}
			mutate(content, func(b []byte) {
				try(fmt.Sprintf("content %x", b), func() error { return parse007(parseContent(b)) })
			})
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(s[35:])
		if err != nil {
			t.Fatal(err)
		}
		mutate(raw, func(b []byte) {
			input := s[:35] + base64.StdEncoding.EncodeToString(b)
			try(strconv.Quote(input), func() error { return parse006(Parse006(input)) })
		})
	}
}

// mutate calls f with every truncation of b and with each byte of b replaced in
// turn by 0x00, 0x01, 0x7F and 0xFF.
func mutate(b []byte, f func([]byte)) {
	for i := range len(b) {
		f(b[:i])
		for _, c := range []byte{0x00, 0x01, 0x7F, 0xFF} {
			m := bytes.Clone(b)
			m[i] = c
			f(m)
		}
	}
}

func TestAccountAsUID_ReadsGenerously(t *testing.T) {
	for in, want := range map[string]int64{
		"1805641522": 1805641522, "01805641522": 1805641522, "+1805641522": 1805641522, " 1805641522 ": 1805641522,
		"0": 0, "000": 0, "4294967295": 4294967295, "00004294967295": 4294967295, "1": 1,
		"4294967296": -1, "99999999999": -1, "-1": -1, "++1": -1, "+": -1, "": -1, " ": -1, "1 2": -1,
		"alice": -1, "12a": -1, "1.0": -1, "1e3": -1, "0x10": -1,
	} {
		n, ok := AccountAsUID(in)
		if want < 0 {
			if ok {
				t.Errorf("AccountAsUID(%q) = %d, true; want not a uid", in, n)
			}
			continue
		}
		if !ok || int64(n) != want {
			t.Errorf("AccountAsUID(%q) = %d, %v; want %d", in, n, ok, want)
		}
	}
}
