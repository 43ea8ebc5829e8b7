package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validEnv is a complete, valid serve configuration.
func validEnv() map[string]string {
	return map[string]string{
		"BROKER_DATABASE_URL":    "postgres://broker:s3cretpw@127.0.0.1:1/broker",
		"BROKER_OIDC_ISSUER":     "https://idp.example.com",
		"BROKER_OIDC_AUDIENCE":   "app",
		"BROKER_APP_ID":          "0123456789abcdef0123456789abcdef",
		"BROKER_APP_CERTIFICATE": "fedcba9876543210fedcba9876543210",
		"BROKER_AUDIT_KEY":       strings.Repeat("ab", 32),
	}
}

func envFunc(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestServe_InvalidConfigExitsOneNamingVariableNotValue(t *testing.T) {
	cases := []struct {
		name, key, value, wantMsg string
	}{
		{"certificate not hex", "BROKER_APP_CERTIFICATE", "not-hex", "BROKER_APP_CERTIFICATE (--app-certificate) must be 32 hexadecimal characters"},
		{"app id short", "BROKER_APP_ID", "abc", "BROKER_APP_ID (--app-id) must be 32 hexadecimal characters"},
		{"app id unset", "BROKER_APP_ID", "", "BROKER_APP_ID (--app-id) is required"},
		{"certificate unset", "BROKER_APP_CERTIFICATE", "", "BROKER_APP_CERTIFICATE (--app-certificate) is required"},
		{"database unreachable", "BROKER_OIDC_LEEWAY", "30s", `cannot reach the database "broker" at 127.0.0.1:1`},
		{"audit key short", "BROKER_AUDIT_KEY", "c2hvcnRrZXk=", "BROKER_AUDIT_KEY (--audit-key) decodes to 8 bytes, need at least 32"},
		{"previous audit key short", "BROKER_AUDIT_PREVIOUS_KEYS", strings.Repeat("cd", 32) + ",c2hvcnRrZXk=", "BROKER_AUDIT_PREVIOUS_KEYS (--audit-previous-keys) entry 2 decodes to 8 bytes, need at least 32"},
		{"previous audit key not encoded", "BROKER_AUDIT_PREVIOUS_KEYS", "not-hex!", "BROKER_AUDIT_PREVIOUS_KEYS (--audit-previous-keys) entry 1 must be hex or base64"},
		{"database url scheme", "BROKER_DATABASE_URL", "mysql://root:hunter2@db/x", "BROKER_DATABASE_URL (--database-url) must be a postgres:// or postgresql:// URL"},
		{"issuer not a url", "BROKER_OIDC_ISSUER", "idp.example.com", "BROKER_OIDC_ISSUER (--oidc-issuer) must be an absolute http(s) URL"},
		{"retention in weeks", "BROKER_AUDIT_RETENTION", "8w", "BROKER_AUDIT_RETENTION (--audit-retention) must be a number of days such as 400d"},
		{"retention under a day", "BROKER_AUDIT_RETENTION", "1h", "BROKER_AUDIT_RETENTION (--audit-retention) must be a number of days such as 400d"},
		{"retention zero days", "BROKER_AUDIT_RETENTION", "0d", "BROKER_AUDIT_RETENTION (--audit-retention) must be a number of days such as 400d"},
		{"max ttl over a day", "BROKER_MAX_TTL", "48h", "BROKER_MAX_TTL (--max-ttl) must be a duration from 1s to 24h0m0s"},
		{"hs256 allowed", "BROKER_OIDC_ALGORITHMS", "RS256,HS256", `BROKER_OIDC_ALGORITHMS (--oidc-algorithms) has "HS256"`},
		{"audience missing", "BROKER_OIDC_AUDIENCE", "", "BROKER_OIDC_AUDIENCE (--oidc-audience) is required"},
		{"bootstrap admin shape", "BROKER_BOOTSTRAP_ADMINS", "alice", `BROKER_BOOTSTRAP_ADMINS (--bootstrap-admins) has "alice"`},
		{"console client not an audience", "BROKER_CONSOLE_CLIENT_ID", "console", "BROKER_OIDC_AUDIENCE (--oidc-audience) must include BROKER_CONSOLE_CLIENT_ID"},
		{"Agora customer without its secret", "BROKER_AGORA_CUSTOMER_ID", "0123456789abcdef", "BROKER_AGORA_CUSTOMER_ID and BROKER_AGORA_CUSTOMER_SECRET go together"},
		{"Agora API over http", "BROKER_AGORA_API_URL", "http://api.agora.io", "BROKER_AGORA_API_URL (--agora-api-url) must be an https URL"},
		{"CLI client not an audience", "BROKER_CLI_CLIENT_ID", "broker-cli", "BROKER_OIDC_AUDIENCE (--oidc-audience) must include BROKER_CLI_CLIENT_ID: CLI logins are ID tokens issued to that client"},
		{"console redirect", "BROKER_CONSOLE_REDIRECT_URL", "https://x/cb", "BROKER_CONSOLE_REDIRECT_URL (--console-redirect-url) must be an absolute http(s) URL ending in /console/callback"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := validEnv()
			env[tc.key] = tc.value
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"broker", "serve"}, envFunc(env), strings.NewReader(""), &stdout, &stderr)
			code := exitCode(err, &stderr)
			if code != 1 {
				t.Fatalf("exit %d, want 1 (err %v)", code, err)
			}
			if !strings.Contains(stderr.String(), tc.wantMsg) {
				t.Fatalf("stderr %q does not contain %q", stderr.String(), tc.wantMsg)
			}
			out := stdout.String() + stderr.String()
			for _, secret := range []string{"not-hex", "s3cretpw", "hunter2", "c2hvcnRrZXk=", strings.Repeat("cd", 32), env["BROKER_AUDIT_KEY"], env["BROKER_APP_CERTIFICATE"]} {
				if secret != "" && strings.Contains(out, secret) {
					t.Fatalf("output leaks a secret value %q: %q", secret, out)
				}
			}
		})
	}
}

func TestServe_FlagsOverrideEnvironmentAndSeedFallbacksWork(t *testing.T) {
	env := validEnv()
	delete(env, "BROKER_APP_ID")
	delete(env, "BROKER_APP_CERTIFICATE")
	env["APP_ID"] = "0123456789ABCDEF0123456789abcdef"
	env["APP_CERTIFICATE"] = "fedcba9876543210fedcba9876543210"
	fs := newFlagSet("serve", &bytes.Buffer{})
	cfg, err := loadConfig(fs, []string{"--addr", "127.0.0.1:9999"}, envFunc(env), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:9999" || cfg.AppID != env["APP_ID"] || cfg.AppCertificate != env["APP_CERTIFICATE"] {
		t.Fatalf("got addr %q app id %q", cfg.Addr, cfg.AppID)
	}
	if cfg.MaxTTL.Hours() != 24 || cfg.DefaultTTL.Hours() != 24 || cfg.AccountClaim != "sub" || cfg.GroupsClaim != "groups" {
		t.Fatalf("defaults not applied: %+v", cfg.MaxTTL)
	}
}

func TestLoadConfig_AuditPreviousKeysInTheOrderGiven(t *testing.T) {
	env := validEnv()
	first, second := strings.Repeat("cd", 32), base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xef}, 40))
	env["BROKER_AUDIT_PREVIOUS_KEYS"] = " " + first + " ,, " + second + ","
	cfg, err := loadConfig(newFlagSet("serve", &bytes.Buffer{}), nil, envFunc(env), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{bytes.Repeat([]byte{0xcd}, 32), bytes.Repeat([]byte{0xef}, 40)}
	if len(cfg.AuditPreviousKeys) != 2 || !bytes.Equal(cfg.AuditPreviousKeys[0], want[0]) || !bytes.Equal(cfg.AuditPreviousKeys[1], want[1]) {
		t.Errorf("previous keys = %d keys; want the two configured, in order", len(cfg.AuditPreviousKeys))
	}
	delete(env, "BROKER_AUDIT_PREVIOUS_KEYS")
	cfg, err = loadConfig(newFlagSet("serve", &bytes.Buffer{}), nil, envFunc(env), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AuditPreviousKeys != nil {
		t.Errorf("unset: %d previous keys; want none", len(cfg.AuditPreviousKeys))
	}
}

func TestRun_UnknownCommandExitsTwoWithUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"broker", "frobnicate"}, envFunc(nil), strings.NewReader(""), &stdout, &stderr)
	if code := exitCode(err, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "usage: broker") {
		t.Fatalf("no usage on stderr: %q", stderr.String())
	}
}

func TestRun_HelpListsCommands(t *testing.T) {
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"broker", "help"}, envFunc(nil), strings.NewReader(""), &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"serve", "version"} {
		if !strings.Contains(stdout.String(), c) {
			t.Fatalf("help lacks %q: %s", c, stdout.String())
		}
	}
}

// TestSecrets_FromFilesNeverFromTheCommandLine: every secret may come from
// <NAME>_FILE; both ways is an error naming both; a secret flag is refused.
func TestSecrets_FromFilesNeverFromTheCommandLine(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := validEnv()
	for _, k := range []string{"BROKER_APP_CERTIFICATE", "BROKER_AUDIT_KEY"} {
		env[k+"_FILE"], env[k] = write(k, env[k]), ""
	}
	cfg, err := loadConfig(newFlagSet("serve", &bytes.Buffer{}), nil, envFunc(env), nil)
	if err != nil || cfg.AppCertificate != validEnv()["BROKER_APP_CERTIFICATE"] || len(cfg.AuditKey) != 32 {
		t.Fatalf("secrets from files: %+v, %v", cfg, err)
	}
	env["BROKER_APP_CERTIFICATE"] = validEnv()["BROKER_APP_CERTIFICATE"]
	if _, err := loadConfig(newFlagSet("serve", &bytes.Buffer{}), nil, envFunc(env), nil); err == nil ||
		!strings.Contains(err.Error(), "BROKER_APP_CERTIFICATE_FILE are both set") {
		t.Fatalf("a secret set both ways: %v", err)
	}
	env = validEnv()
	env["BROKER_AUDIT_KEY_FILE"], env["BROKER_AUDIT_KEY"] = filepath.Join(dir, "missing"), ""
	if _, err := loadConfig(newFlagSet("serve", &bytes.Buffer{}), nil, envFunc(env), nil); err == nil ||
		!strings.Contains(err.Error(), "cannot be read from BROKER_AUDIT_KEY_FILE") {
		t.Fatalf("an unreadable secret file: %v", err)
	}
	for _, flag := range []string{"--database-url", "--database-password", "--app-certificate", "--audit-key", "--audit-previous-keys", "--console-client-secret"} {
		_, err := loadConfig(newFlagSet("serve", &bytes.Buffer{}), []string{flag, "s3cretvalue"}, envFunc(validEnv()), nil)
		if err == nil || !strings.Contains(err.Error(), "not taken from the command line") || strings.Contains(err.Error(), "s3cretvalue") {
			t.Errorf("%s on the command line: %v", flag, err)
		}
	}
}

// TestDatabasePassword_JoinsAURLThatNamesOnlyTheUser: the password may come
// on its own (a mounted secret), never in two places.
func TestDatabasePassword_JoinsAURLThatNamesOnlyTheUser(t *testing.T) {
	load := func(url, password string) (*config, error) {
		env := validEnv()
		env["BROKER_DATABASE_URL"], env["BROKER_DATABASE_PASSWORD"] = url, password
		return loadConfig(newFlagSet("serve", &bytes.Buffer{}), nil, envFunc(env), nil)
	}
	cfg, err := load("postgres://broker@db:5432/broker?sslmode=disable", "p@ss/w:rd")
	if err != nil || cfg.DatabaseURL != "postgres://broker:p%40ss%2Fw%3Ard@db:5432/broker?sslmode=disable" {
		t.Fatalf("the joined URL is not the expected one (error: %v)", err)
	}
	if _, err := load("postgres://broker:other@db/broker", "pw"); err == nil || !strings.Contains(err.Error(), "in one place") || strings.Contains(err.Error(), "other") {
		t.Errorf("a password in both: %v", err)
	}
	if _, err := load("postgres://db/broker", "pw"); err == nil || !strings.Contains(err.Error(), "name the user") {
		t.Errorf("no user to give the password to: %v", err)
	}
	if cfg, err := load("postgres://broker:pw@db/broker", ""); err != nil || cfg.DatabaseURL != "postgres://broker:pw@db/broker" {
		t.Errorf("the URL alone was changed (error: %v)", err)
	}
}

// TestDatabaseURL_ForDevReadsWhatServeReads: broker dev's optional database
// comes from the same settings, password and _FILE forms included.
func TestDatabaseURL_ForDevReadsWhatServeReads(t *testing.T) {
	if u, err := databaseURL(envFunc(map[string]string{})); err != nil || u != "" {
		t.Fatalf("unset: %q, %v; want no database", u, err)
	}
	u, err := databaseURL(envFunc(map[string]string{"BROKER_DATABASE_URL": "postgres://dev@127.0.0.1/broker", "BROKER_DATABASE_PASSWORD": "pw"}))
	if err != nil || u != "postgres://dev:pw@127.0.0.1/broker" {
		t.Fatalf("with a password: the URL is not joined (error: %v)", err)
	}
	if _, err := databaseURL(envFunc(map[string]string{"BROKER_DATABASE_URL": "mysql://x"})); err == nil || !strings.Contains(err.Error(), "BROKER_DATABASE_URL") {
		t.Fatalf("a wrong scheme: %v, want an error naming the variable", err)
	}
}
