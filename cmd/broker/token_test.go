package main

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/broker-dev/broker/internal/token"
)

// Agora's mock app and the official Go token for a subscriber with uid
// 2882341273 on the mock channel, issue_ts 1111111, salt 1, 600 s.
const (
	mockAppID   = "970CA35de60c44645bbae8a215061b33"
	mockCert    = "5CFd2fd1755d40ecb72977518be15d3b"
	mockChannel = "7d72365eb983485397e3e3f9d460bdda"
	officialRTC = "007eJxSYBBbsMMnKq7p9Hf/HcIX5kce9b518kCiQgSr5Zrp4X1Tu6UUGCzNDZwdjU1TUs0Mkk1MzExMk5ISUy0SjQxNDcwMk4yN3b8IMEQwMTAwMoAwBIL4CgzmKeZGxmamqUmWFsYmFqbGluapxqnGaZYpJmYGSSkpiVwMRhYWRsYmhkbmxoAAAAD//8JqJOM="
	// official006 is the 006 token for the same channel and uid, ts 1111111.
	official006 = "006970CA35de60c44645bbae8a215061b33IACV0fZUBw+72cVoL9eyGGh3Q6Poi8bgjwVLnyKSJyOXR7dIfRBXoFHlEAABAAAAR/QQAAEAAQCvKDdW"
)

// runCLI runs the broker command line and returns stdout, stderr and the exit
// status main would use.
func runCLI(t *testing.T, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), append([]string{"broker"}, args...), func(k string) string { return env[k] }, strings.NewReader(""), &stdout, &stderr)
	code := exitCode(err, &stderr)
	return stdout.String(), stderr.String(), code
}

func TestTokenMint_ReproducesTheOfficialGoToken(t *testing.T) {
	out, errOut, code := runCLI(t, nil, "token", "mint", "--app-id", mockAppID, "--app-cert", mockCert,
		"--channel", mockChannel, "--uid", "2882341273", "--role", "subscriber", "--expire", "600",
		"--issued-at", "1111111", "--salt", "1")
	if code != 0 || !sameToken(t, out, officialRTC) {
		t.Fatalf("exit %d, stdout %q, stderr %q; want the official token", code, out, errOut)
	}
}

// sameToken reports whether the printed token carries exactly the content
// and signature of want: the broker wraps them in a zlib stream of its own,
// not byte for byte the official builder's.
func sameToken(t *testing.T, printed, want string) bool {
	t.Helper()
	got, err := token.Parse(strings.TrimSuffix(printed, "\n"))
	if err != nil || !strings.HasSuffix(printed, "\n") {
		return false
	}
	w, err := token.Parse(want)
	if err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(got, w)
}

func TestTokenMint_TakesAppFromEnvironment(t *testing.T) {
	args := []string{"token", "mint", "--channel", mockChannel, "--uid", "2882341273", "--expire", "600", "--issued-at", "1111111", "--salt", "1"}
	tests := []struct {
		name  string
		env   map[string]string
		flags []string
	}{
		{"broker variables", map[string]string{"BROKER_APP_ID": mockAppID, "BROKER_APP_CERTIFICATE": mockCert}, nil},
		{"seed variables", map[string]string{"APP_ID": mockAppID, "APP_CERTIFICATE": mockCert}, nil},
		{"broker variables win over seed ones", map[string]string{
			"BROKER_APP_ID": mockAppID, "BROKER_APP_CERTIFICATE": mockCert,
			"APP_ID": "00000000000000000000000000000000", "APP_CERTIFICATE": "00000000000000000000000000000000",
		}, nil},
		{"flags win over variables", map[string]string{
			"BROKER_APP_ID": "00000000000000000000000000000000", "BROKER_APP_CERTIFICATE": "00000000000000000000000000000000",
		}, []string{"--app-id", mockAppID, "--app-cert", mockCert}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, tt.env, append(args, tt.flags...)...)
			if code != 0 || !sameToken(t, out, officialRTC) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want the official token", code, out, errOut)
			}
		})
	}
}

func TestTokenMint_BuildsWildcardAccountAndRTMTokens(t *testing.T) {
	env := map[string]string{"BROKER_APP_ID": mockAppID, "BROKER_APP_CERTIFICATE": mockCert}
	out, errOut, code := runCLI(t, env, "token", "mint", "--channel", "Agora*", "--account", "alice",
		"--role", "publisher", "--rtm-user", "alice", "--expire", "120")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	tok, err := token.Parse(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Verify(mockCert) || tok.Expire != 120 || len(tok.Services) != 2 {
		t.Fatalf("token %+v: want a verified 120 s token with RTC and RTM", tok)
	}
	rtc, rtm := tok.Services[0], tok.Services[1]
	if rtc.Channel != "Agora*" || rtc.UID != "alice" || len(rtc.Privileges) != 4 || rtm.User != "alice" {
		t.Errorf("services %+v", tok.Services)
	}
}

func TestTokenMint_RejectsInvalidInputWithExitStatus1(t *testing.T) {
	env := map[string]string{"BROKER_APP_ID": mockAppID, "BROKER_APP_CERTIFICATE": mockCert}
	base := []string{"token", "mint", "--channel", "room"}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		mention string
	}{
		{"no app id", map[string]string{"BROKER_APP_CERTIFICATE": mockCert}, []string{"--uid", "1"}, "app id"},
		{"no certificate", map[string]string{"BROKER_APP_ID": mockAppID}, []string{"--uid", "1"}, "certificate"},
		{"malformed certificate", map[string]string{"BROKER_APP_ID": mockAppID, "BROKER_APP_CERTIFICATE": "secret-but-not-hex"}, []string{"--uid", "1"}, "app_certificate"},
		{"neither uid nor account", env, nil, "--uid or --account"},
		{"both uid and account", env, []string{"--uid", "1", "--account", "a"}, "--uid or --account"},
		{"empty account", env, []string{"--account", ""}, "--account"},
		{"uid not a number", env, []string{"--uid", "abc"}, "--uid"},
		{"uid beyond 32 bits", env, []string{"--uid", "4294967296"}, "--uid"},
		{"negative uid", env, []string{"--uid", "-1"}, "--uid"},
		{"unknown role", env, []string{"--uid", "1", "--role", "admin"}, "--role"},
		{"expire 0", env, []string{"--uid", "1", "--expire", "0"}, "expire"},
		{"expire over 24h", env, []string{"--uid", "1", "--expire", "86401"}, "expire"},
		{"salt 0", env, []string{"--uid", "1", "--salt", "0"}, "--salt"},
		{"issued-at not a number", env, []string{"--uid", "1", "--issued-at", "yesterday"}, "--issued-at"},
		{"bad RTM user", env, []string{"--uid", "1", "--rtm-user", strings.Repeat("u", 65)}, "rtm_user"},
		{"account outside the charset", env, []string{"--account", "a/b"}, "account"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, tt.env, append(base, tt.args...)...)
			if code != 1 || out != "" {
				t.Fatalf("exit %d, stdout %q: want exit 1 and nothing on stdout", code, out)
			}
			if !strings.Contains(errOut, tt.mention) {
				t.Errorf("stderr %q does not mention %q", errOut, tt.mention)
			}
			if strings.Contains(errOut, mockCert) || strings.Contains(errOut, "secret-but-not-hex") {
				t.Errorf("stderr %q contains the certificate", errOut)
			}
		})
	}
	t.Run("channel outside the charset", func(t *testing.T) {
		out, errOut, code := runCLI(t, env, "token", "mint", "--channel", "a/b", "--uid", "1")
		if code != 1 || out != "" || !strings.Contains(errOut, "channel") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
}

func TestTokenInspect_Decodes007AndVerifies(t *testing.T) {
	out, errOut, code := runCLI(t, nil, "token", "inspect", "--app-cert", mockCert, "--now", "1111700", officialRTC)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var got struct {
		Version        string `json:"version"`
		AppID          string `json:"appId"`
		IssuedAt       string `json:"issuedAt"`
		Expire         uint32 `json:"expireSeconds"`
		ExpiresAt      string `json:"expiresAt"`
		Expired        bool   `json:"expired"`
		Salt           uint32 `json:"salt"`
		SignatureValid *bool  `json:"signatureValid"`
		Services       []struct {
			Name       string `json:"name"`
			Channel    string `json:"channel"`
			UID        string `json:"uid"`
			Privileges []struct {
				Name      string  `json:"name"`
				Value     uint32  `json:"value"`
				ExpiresAt *string `json:"expiresAt"`
				Expired   bool    `json:"expired"`
			} `json:"privileges"`
		} `json:"services"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out)
	}
	if got.Version != "007" || got.AppID != mockAppID || got.IssuedAt != "1970-01-13T20:38:31Z" || got.Expire != 600 ||
		got.ExpiresAt != "1970-01-13T20:48:31Z" || got.Expired || got.Salt != 1 || got.SignatureValid == nil || !*got.SignatureValid {
		t.Errorf("header %+v", got)
	}
	if len(got.Services) != 1 || got.Services[0].Name != "rtc" || got.Services[0].Channel != mockChannel ||
		got.Services[0].UID != "2882341273" || len(got.Services[0].Privileges) != 1 {
		t.Fatalf("services %+v", got.Services)
	}
	p := got.Services[0].Privileges[0]
	if p.Name != "join_channel" || p.Value != 600 || p.ExpiresAt == nil || *p.ExpiresAt != "1970-01-13T20:48:31Z" || p.Expired {
		t.Errorf("privilege %+v", p)
	}
}

func TestTokenInspect_ReportsExpiryAtNow(t *testing.T) {
	for _, tt := range []struct {
		now     string
		expired bool
	}{
		{"1111710", false},
		{"1111711", true},
	} {
		out, _, code := runCLI(t, nil, "token", "inspect", "--now", tt.now, officialRTC)
		want := `"expired": ` + map[bool]string{true: "true", false: "false"}[tt.expired]
		if code != 0 || strings.Count(out, want) != 2 || strings.Contains(out, "signatureValid") {
			t.Errorf("--now %s: exit %d, want token and privilege %s and no signature check\n%s", tt.now, code, want, out)
		}
	}
}

func TestTokenInspect_FlagsAfterTheToken(t *testing.T) {
	out, errOut, code := runCLI(t, nil, "token", "inspect", officialRTC, "--app-cert", mockCert)
	if code != 0 || !strings.Contains(out, `"signatureValid": true`) {
		t.Fatalf("exit %d, stderr %q\n%s", code, errOut, out)
	}
}

func TestTokenInspect_WrongCertificateExits1(t *testing.T) {
	out, errOut, code := runCLI(t, nil, "token", "inspect", "--app-cert", "5CFd2fd1755d40ecb72977518be15d3c", officialRTC)
	if code != 1 || !strings.Contains(out, `"signatureValid": false`) {
		t.Fatalf("exit %d, stderr %q\n%s", code, errOut, out)
	}
	if strings.Contains(out+errOut, "5CFd2fd1755d40ecb72977518be15d3c") {
		t.Error("output contains the certificate")
	}
}

func TestTokenInspect_Decodes006AndVerifiesWithChannelAndUID(t *testing.T) {
	out, errOut, code := runCLI(t, nil, "token", "inspect", "--app-cert", mockCert,
		"--channel", mockChannel, "--uid", "2882341273", "--now", "1111110", official006)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{`"version": "006"`, `"expiresAt": "1970-01-13T20:38:31Z"`, `"expired": false`, `"name": "join_channel"`,
		`"value": 1446455471`, `"signatureValid": true`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s\n%s", want, out)
		}
	}

	_, _, code = runCLI(t, nil, "token", "inspect", "--app-cert", mockCert, "--channel", "other", "--uid", "2882341273", official006)
	if code != 1 {
		t.Errorf("another channel: exit %d, want 1", code)
	}
	out, errOut, code = runCLI(t, nil, "token", "inspect", "--app-cert", mockCert, official006)
	if code != 1 || out != "" || !strings.Contains(errOut, "--channel") {
		t.Errorf("no channel: exit %d, stdout %q, stderr %q: want exit 1 asking for --channel", code, out, errOut)
	}
}

func TestTokenInspect_RejectsUndecodableInput(t *testing.T) {
	for _, tt := range []struct{ name, input string }{
		{"not a token", "hello"},
		{"broken 007", "007eJx!!!"},
		{"truncated 007", officialRTC[:60]},
		{"broken 006", official006[:50]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, nil, "token", "inspect", tt.input)
			if code == 0 || out != "" || errOut == "" {
				t.Errorf("exit %d, stdout %q, stderr %q: want a non-zero exit with a message", code, out, errOut)
			}
		})
	}
}

func TestToken_UsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"token"},
		{"token", "frobnicate"},
		{"token", "inspect"},
		{"token", "inspect", officialRTC, officialRTC},
		{"token", "mint", "--no-such-flag"},
		{"token", "mint", "extra"},
	} {
		if _, _, code := runCLI(t, nil, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

func TestTokenInspect_ChecksWithTheCertificateFromTheEnvironment(t *testing.T) {
	out, errOut, code := runCLI(t, map[string]string{"BROKER_APP_CERTIFICATE": mockCert}, "token", "inspect", officialRTC)
	if code != 0 || !strings.Contains(out, `"signatureValid": true`) {
		t.Fatalf("exit %d, stderr %q\n%s", code, errOut, out)
	}
	out, _, code = runCLI(t, map[string]string{"BROKER_APP_CERTIFICATE": "5CFd2fd1755d40ecb72977518be15d3c"}, "token", "inspect", officialRTC)
	if code != 1 || !strings.Contains(out, `"signatureValid": false`) {
		t.Fatalf("wrong certificate from the environment: exit %d\n%s", code, out)
	}
}
