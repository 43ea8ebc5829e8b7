package main

import (
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeConfig writes a configuration file for a test.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "broker.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func loadWith(t *testing.T, env map[string]string, args ...string) (*config, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return loadConfig(fs, args, envFunc(env), nil)
}

// The single-tenant file: every setting by its key; lists as YAML lists.
const fileConfig = `addr: ":9090"
databaseURL: postgres://broker:filepw@127.0.0.1:1/broker
oidcIssuer: https://idp.example.com
oidcAudience: [app, console]
appID: 0123456789abcdef0123456789abcdef
appCertificate: fedcba9876543210fedcba9876543210
auditKey: abababababababababababababababababababababababababababababababab
rateLimit: 5
`

func TestConfigFile_ReadsEverySettingByItsKey(t *testing.T) {
	c, err := loadWith(t, map[string]string{configFileEnv: writeConfig(t, fileConfig)})
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":9090" || c.RateLimit != 5 || strings.Join(c.OIDCAudience, ",") != "app,console" || c.OIDCIssuer != "https://idp.example.com" {
		t.Errorf("config = addr %q rate %v audience %q issuer %q", c.Addr, c.RateLimit, c.OIDCAudience, c.OIDCIssuer)
	}
}

func TestConfigFile_FlagsThenEnvironmentThenFileThenDefaults(t *testing.T) {
	path := writeConfig(t, fileConfig)
	c, err := loadWith(t, map[string]string{configFileEnv: path, "BROKER_ADDR": ":7070", "BROKER_RATE_LIMIT": "3"}, "--rate-limit", "2")
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":7070" || c.RateLimit != 2 || c.RateBurst != 20 || c.AppID != "0123456789abcdef0123456789abcdef" {
		t.Errorf("addr %q (env wins over the file), rate %v (flag wins), burst %d (default), app id %q (file)", c.Addr, c.RateLimit, c.RateBurst, c.AppID)
	}
	for env, want := range map[string]string{"BROKER_ADDR": "environment", "BROKER_RATE_LIMIT": "flag --rate-limit",
		"BROKER_RATE_BURST": "default", "BROKER_APP_ID": path + " line 5"} {
		if got := c.sources[env]; got != want {
			t.Errorf("source of %s = %q, want %q", env, got, want)
		}
	}
	// --config names the file too, and wins over BROKER_CONFIG.
	other := writeConfig(t, strings.Replace(fileConfig, `":9090"`, `":6060"`, 1))
	if c, err = loadWith(t, map[string]string{configFileEnv: path}, "--config", other); err != nil || c.Addr != ":6060" {
		t.Errorf("--config: addr %v, err %v", c, err)
	}
}

func TestConfigFile_IsStrictAndNamesKeyAndLine(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"unknown key", "addr: :1\nauditkey: x\n", `line 2: unknown key "auditkey" (did you mean "auditKey"?)`},
		{"environment name as key", "BROKER_ADDR: :1\n", `line 1: unknown key "BROKER_ADDR"`},
		{"set twice", "addr: :1\naddr: :2\n", `line 2: "addr" is set twice`},
		{"mapping where a value goes", "addr:\n  host: x\n", "line 2: addr: a value or a list of values is expected"},
		{"not a mapping", "- addr\n", "line 1: the file must be a mapping of settings"},
		{"issuers not a list", "issuers: x\n", "line 1: issuers must be a list"},
		{"unknown issuer key", "issuers:\n  - issuer: https://a.example\n    audience: app\n", `line 3: issuers: unknown key "audience" (did you mean "audiences"?)`},
		{"required claim as mapping", "issuers:\n  - issuer: https://a.example\n    requiredClaims:\n      tid: {a: b}\n", "requiredClaims.tid: a value or a list of values is expected"},
		{"not YAML", "addr: [\n", "yaml:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadWith(t, map[string]string{configFileEnv: writeConfig(t, tt.text)})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	if _, err := loadWith(t, map[string]string{configFileEnv: filepath.Join(t.TempDir(), "missing.yaml")}); err == nil ||
		!strings.Contains(err.Error(), "BROKER_CONFIG: no such file or directory") {
		t.Errorf("missing file: %v", err)
	}
}

func TestConfigFile_ValueErrorsNameTheFileLineAndKeyNotTheValue(t *testing.T) {
	text := strings.Replace(fileConfig, "auditKey: abab", "auditKey: ~~ab", 1) + "rateBurst: 0\n"
	_, err := loadWith(t, map[string]string{configFileEnv: writeConfig(t, text)})
	for _, want := range []string{"line 7: auditKey (BROKER_AUDIT_KEY) must be hex or base64", "line 9: rateBurst (BROKER_RATE_BURST) must be a whole number"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to contain %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "~~ab") {
		t.Error("the error repeats the secret's value")
	}
}

func TestConfigFile_IssuersListReplacesTheOIDCSettings(t *testing.T) {
	base := strings.Replace(strings.Replace(fileConfig, "oidcIssuer: https://idp.example.com\n", "", 1), "oidcAudience: [app, console]\n", "", 1)
	issuers := `issuers:
  - issuer: https://accounts.example.com
    audiences: [app]
    requiredClaims:
      email_verified: true
      hd: [example.com, example.org]
  - name: okta
    issuer: https://acme.okta.com/oauth2/default
    audiences: api://broker
    tokenType: access_token
    requiredScopes: [rtc.publish]
`
	c, err := loadWith(t, map[string]string{configFileEnv: writeConfig(t, base+issuers)})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Issuers) != 2 || c.Issuers[1].Name != "okta" || c.Issuers[1].TokenType != "access_token" ||
		len(c.Issuers[0].RequiredClaims["hd"]) != 2 || c.Issuers[0].RequiredClaims["email_verified"][0] != true {
		t.Errorf("issuers = %+v", c.Issuers)
	}
	for name, bad := range map[string]string{
		"two default issuers":   strings.Replace(issuers, "  - name: okta\n    issuer:", "  - issuer:", 1),
		"a bad name":            strings.Replace(issuers, "name: okta", "name: Okta Inc", 1),
		"scopes on ID tokens":   strings.Replace(issuers, "tokenType: access_token", "tokenType: id_token", 1),
		"a symmetric algorithm": strings.Replace(issuers, "audiences: [app]", "audiences: [app]\n    algorithms: [HS256]", 1),
	} {
		if _, err := loadWith(t, map[string]string{configFileEnv: writeConfig(t, base+bad)}); err == nil || !strings.Contains(err.Error(), "broker.yaml: issuers:") {
			t.Errorf("%s: err = %v, want the file's issuers refused", name, err)
		}
	}
	_, err = loadWith(t, map[string]string{configFileEnv: writeConfig(t, base+issuers), "BROKER_OIDC_ISSUER": "https://idp.example.com"})
	if err == nil || !strings.Contains(err.Error(), "BROKER_OIDC_ISSUER (--oidc-issuer) is set per issuer") {
		t.Errorf("an issuers list and BROKER_OIDC_ISSUER: err = %v", err)
	}
}

func TestConfigCheck_PrintsTheEffectiveConfigurationWithoutSecrets(t *testing.T) {
	path := writeConfig(t, fileConfig)
	code, out, errOut := runBroker(t, map[string]string{"BROKER_LOG_LEVEL": "debug"}, "config", "check", path)
	if code != 0 {
		t.Fatalf("config check = %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		`addr: ":9090"  # ` + path + ` line 1 (BROKER_ADDR)`,
		"logLevel: debug  # environment (BROKER_LOG_LEVEL)",
		"rateBurst: 20  # default (BROKER_RATE_BURST)",
		"auditKey: <redacted>", "appCertificate: <redacted>", "databaseURL: <redacted>",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	withIssuers := strings.Replace(strings.Replace(fileConfig, "oidcIssuer: https://idp.example.com\n", "", 1), "oidcAudience: [app, console]\n", "", 1) +
		"issuers:\n  - issuer: https://a.example\n    audiences: [app]\n    requiredClaims:\n      email_verified: true\n      tid: \"true\"\n"
	if code, out, errOut := runBroker(t, nil, "config", "check", writeConfig(t, withIssuers)); code != 0 ||
		!strings.Contains(out, "      email_verified: [true]\n") || !strings.Contains(out, `      tid: ["true"]`) {
		t.Errorf("issuers: exit %d, stderr %q, output:\n%s", code, errOut, out)
	}
	for _, secret := range []string{"filepw", "fedcba9876543210", "abababab"} {
		if strings.Contains(out+errOut, secret) {
			t.Errorf("config check printed a secret")
		}
	}
	if strings.Contains(out, "other users may read it") {
		t.Error("a file with secrets and mode 0600 drew a warning")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, out, _ = runBroker(t, nil, "config", "check", path)
	if want := "# warning: " + path + " holds secrets (databaseURL, appCertificate, auditKey) and other users may read it (mode 0644)"; !strings.Contains(out, want) {
		t.Errorf("a readable file with secrets: output lacks %q:\n%s", want, out)
	}
	if code, _, errOut := runBroker(t, nil, "config", "check", writeConfig(t, "adr: x\n")); code != 1 || !strings.Contains(errOut, `unknown key "adr"`) {
		t.Errorf("bad file: exit %d, stderr %q", code, errOut)
	}
	if code, _, _ := runBroker(t, nil, "config", "check"); code != 2 {
		t.Errorf("no file: exit %d, want 2 (usage)", code)
	}
}

func TestDev_RefusesAnIssuersList(t *testing.T) {
	path := writeConfig(t, "issuers:\n  - issuer: https://a.example\n    audiences: [app]\n")
	code, _, errOut := runBroker(t, map[string]string{configFileEnv: path}, "dev")
	if code != 2 || !strings.Contains(errOut, "built-in issuer") {
		t.Errorf("broker dev with an issuers list: exit %d, stderr %q", code, errOut)
	}
}

// A hostile or broken file is an error, never a panic.
func FuzzReadConfigFile(f *testing.F) {
	for _, seed := range []string{fileConfig, "", "addr: [\n", "issuers:\n  - issuer: x\n    requiredClaims:\n      a: [1, true, x]\n",
		"issuers: [{name: a, requiredClaims: {b: {c: d}}}]\n", "? [a]\n: b\n", "*a\n", "&a [*a]\n", "addr: !!binary aGk=\n"} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = loadWith(t, map[string]string{configFileEnv: path})
	})
}

func TestConfigFile_IssuersAreReadExactly(t *testing.T) {
	base := "issuers:\n  - issuer: https://a.example\n    audiences: [app]\n"
	for name, tt := range map[string]struct{ text, want string }{
		"a key set twice":           {base + "    audiences: [other]\n", `"audiences" is set twice`},
		"a required claim twice":    {base + "    requiredClaims:\n      tid: a\n      tid: b\n", "requiredClaims.tid is set twice"},
		"an octal-looking number":   {base + "    requiredClaims:\n      tid: 0123\n", `"0123" is not a string, true, false or a decimal number`},
		"a hexadecimal number":      {base + "    requiredClaims:\n      tid: 0x1F\n", `"0x1F" is not a string`},
		"a claim name with a space": {base + "    accountClaim: e mail\n", "accountClaim must be a claim name"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := loadWith(t, map[string]string{configFileEnv: writeConfig(t, tt.text)})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	big := base + "    requiredClaims:\n      tid: 123456789012345678901234\n      ok: [true, \"0123\"]\n"
	env := validEnv()
	delete(env, "BROKER_OIDC_ISSUER")
	delete(env, "BROKER_OIDC_AUDIENCE")
	env[configFileEnv] = writeConfig(t, big)
	c, err := loadWith(t, env)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Issuers[0].RequiredClaims; got["tid"][0] != json.Number("123456789012345678901234") || got["ok"][0] != true || got["ok"][1] != "0123" {
		t.Errorf("required claims = %#v; want every digit kept, true, and the quoted string", got)
	}
}
