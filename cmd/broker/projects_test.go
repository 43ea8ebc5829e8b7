package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	projAppID = "5f1d9c1e2b3a4c5d6e7f8091a2b3c4d5"
	projCert1 = "1a2b3c4d5e6f708192a3b4c5d6e7f809"
	projCert2 = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
)

// The file's projects join the default project BROKER_APP_ID defines; TTLs
// default to the broker's; certificates may come from files.
func TestConfigFile_ProjectsJoinTheDefaultProject(t *testing.T) {
	certFile := filepath.Join(t.TempDir(), "cert")
	if err := os.WriteFile(certFile, []byte(projCert2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, `maxTTL: 2h
defaultTTL: 1h
projects:
  - name: staging
    appID: `+projAppID+`
    certificates: [`+projCert1+`, `+projCert2+`]
    issuers: [default]
    defaultTTL: 10m
  - name: second
    appID: `+projAppID+`
    certificateFiles: [`+certFile+`]
`)
	cfg, err := loadWith(t, validEnv(), "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range cfg.Projects {
		got = append(got, p.Name+" "+p.AppID+" "+strings.Join(p.Certificates, "+")+" "+p.DefaultTTL.String()+"/"+p.MaxTTL.String())
	}
	want := []string{
		"default 0123456789abcdef0123456789abcdef fedcba9876543210fedcba9876543210 1h0m0s/2h0m0s",
		"staging " + projAppID + " " + projCert1 + "+" + projCert2 + " 10m0s/2h0m0s",
		"second " + projAppID + " " + projCert2 + " 1h0m0s/2h0m0s",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("projects:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if cfg.Projects[1].Issuers[0] != "default" || cfg.Projects[2].Issuers != nil {
		t.Errorf("issuers: %v, %v", cfg.Projects[1].Issuers, cfg.Projects[2].Issuers)
	}

	// Without BROKER_APP_ID the file's projects are all there is.
	env := validEnv()
	delete(env, "BROKER_APP_ID")
	delete(env, "BROKER_APP_CERTIFICATE")
	if cfg, err := loadWith(t, env, "--config", path); err != nil || len(cfg.Projects) != 2 {
		t.Errorf("projects without BROKER_APP_ID: %+v, %v", cfg, err)
	}
	if _, err := loadWith(t, env); err == nil || !strings.Contains(err.Error(), "BROKER_APP_ID") {
		t.Errorf("neither BROKER_APP_ID nor projects: %v", err)
	}
	if cfg.Projects[0].DefaultTTL != time.Hour {
		t.Errorf("the default project's TTL: %s", cfg.Projects[0].DefaultTTL)
	}
}

// Every bad project is reported with the file's line, and no certificate.
func TestConfigFile_ProjectErrorsNameTheLineNotTheCertificate(t *testing.T) {
	path := writeConfig(t, `projects:
  - name: default
    appID: `+projAppID+`
    certificates: [`+projCert1+`]
  - name: Bad_Name
    appID: nothex
    certificates: [`+projCert1+`, `+projCert2+`, `+projCert1+`]
    issuers: [nobody]
    maxTTL: 48h
  - name: twins
    appID: `+projAppID+`
    certificates: [`+projCert1+`, `+projCert1+`]
  - name: short
    appID: `+projAppID+`
    certificates: [`+projCert1+`]
    maxTTL: 1m
    defaultTTL: 2m
  - name: typo
    appId: `+projAppID+`
`)
	_, err := loadWith(t, validEnv(), "--config", path)
	if err == nil {
		t.Fatal("bad projects accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		`line 19: projects: unknown key "appId" (did you mean "appID"?)`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	path = writeConfig(t, strings.Replace(readFile(t, path), "    appId: "+projAppID+"\n", "", 1))
	_, err = loadWith(t, validEnv(), "--config", path)
	msg = err.Error()
	for _, want := range []string{
		`line 2: project "default": is also defined by BROKER_APP_ID`,
		`line 5: project "Bad_Name": a project name may only contain`,
		`line 5: project "Bad_Name": appID must be 32 hexadecimal characters`,
		`line 5: project "Bad_Name": needs one or two App certificates`,
		`line 5: project "Bad_Name": issuers: "nobody" is not a configured issuer`,
		`line 5: project "Bad_Name": maxTTL must be a duration from 1s to 24h`,
		`line 10: project "twins": its two certificates are the same`,
		`line 13: project "short": defaultTTL must not exceed maxTTL`,
		`line 18: project "typo": appID must be 32 hexadecimal characters`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, projCert1) || strings.Contains(msg, projCert2) {
		t.Error("an error quotes a certificate")
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// config check prints the projects with their certificates redacted.
func TestConfigCheck_PrintsProjectsWithoutCertificates(t *testing.T) {
	path := writeConfig(t, `projects:
  - name: staging
    appID: `+projAppID+`
    certificates: [`+projCert1+`, `+projCert2+`]
`)
	code, out, stderr := runBroker(t, validEnv(), "config", "check", path)
	if code != 0 {
		t.Fatalf("config check = %d %s", code, stderr)
	}
	for _, want := range []string{"projects:", "  - name: default  # BROKER_APP_ID", "  - name: staging  # " + path + " line 2",
		"    appID: " + projAppID, "    certificates: [<redacted>, <redacted>]  # the first signs"} {
		if !strings.Contains(out, want) {
			t.Errorf("config check output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+stderr, projCert1) || strings.Contains(out+stderr, projCert2) || strings.Contains(out, "fedcba9876543210fedcba9876543210") {
		t.Errorf("config check printed a certificate:\n%s", out)
	}
}

// A project's Agora account and NCS secret come from its entry (secrets
// from files), the default project's from the environment; config check
// redacts them, and half an account is an error naming the line.
func TestConfigFile_ProjectAgoraAccounts(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "customer-secret")
	ncs := filepath.Join(dir, "ncs-secret")
	if err := os.WriteFile(secret, []byte("rest-s3cret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ncs, []byte("ncs-s3cret-value"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, `projects:
  - name: staging
    appID: `+projAppID+`
    certificates: [`+projCert1+`]
    agoraCustomerID: staging-customer
    agoraCustomerSecretFile: `+secret+`
    agoraNCSSecretFile: `+ncs+`
`)
	env := validEnv()
	env["BROKER_AGORA_CUSTOMER_ID"], env["BROKER_AGORA_CUSTOMER_SECRET"], env["BROKER_AGORA_NCS_SECRET"] = "default-customer", "default-rest-s3cret", "default-ncs-s3cret"
	cfg, err := loadWith(t, env, "--config", path)
	if err != nil {
		t.Fatal(err)
	}
	want := []agoraAccount{{"default-customer", "default-rest-s3cret", "default-ncs-s3cret"}, {"staging-customer", "rest-s3cret-value", "ncs-s3cret-value"}}
	for i, p := range cfg.Projects {
		if p.Agora != want[i] {
			t.Errorf("project %s: Agora account %+v", p.Name, p.Agora)
		}
	}
	code, out, stderr := runBroker(t, env, "config", "check", path)
	if code != 0 || !strings.Contains(out, "agoraCustomerID: staging-customer") || !strings.Contains(out, "POST /v1/agora/events/staging") {
		t.Fatalf("config check = %d:\n%s%s", code, out, stderr)
	}
	for _, s := range []string{"s3cret"} {
		if strings.Contains(out+stderr, s) {
			t.Errorf("config check printed a secret:\n%s", out)
		}
	}
	path = writeConfig(t, strings.Replace(readFile(t, path), "    agoraCustomerSecretFile: "+secret+"\n", "", 1))
	if _, err := loadWith(t, env, "--config", path); err == nil || !strings.Contains(err.Error(), `line 2: project "staging": agoraCustomerID and agoraCustomerSecretFile go together`) {
		t.Errorf("half an account: %v", err)
	}
	delete(env, "BROKER_APP_ID")
	delete(env, "BROKER_APP_CERTIFICATE")
	if _, err := loadWith(t, env, "--config", path); err == nil || !strings.Contains(err.Error(), "default project's (BROKER_APP_ID), which is not set") {
		t.Errorf("the default project's account without the default project: %v", err)
	}
}
