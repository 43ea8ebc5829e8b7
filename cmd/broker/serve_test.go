package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/pg/pgtest"
)

func TestServe_RefusesASchemaThatIsBehind(t *testing.T) {
	db := pgtest.NewEmpty(t)
	env := validEnv()
	env["BROKER_DATABASE_URL"] = db.URL
	code, _, stderr := runBroker(t, env, "serve", "--addr", "127.0.0.1:0")
	if code != 1 || !strings.Contains(stderr, "run `broker migrate up`") {
		t.Fatalf("exit %d, stderr %q; want 1 telling the operator to run broker migrate up", code, stderr)
	}
}

func TestServe_MigrateAutoAppliesThenServes(t *testing.T) {
	db := pgtest.NewEmpty(t)
	env := validEnv()
	addr := freeAddr(t)
	env["BROKER_DATABASE_URL"], env["BROKER_MIGRATE"], env["BROKER_ADDR"] = db.URL, "auto", addr
	env["BROKER_OIDC_ISSUER"] = "http://127.0.0.1:9/no-provider" // loopback, nothing listening
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"broker", "serve"}, envFunc(env), strings.NewReader(""), logs, logs) }()
	waitFor(t, "/healthz", 20*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	// The identity provider is down: the broker serves, but is not ready.
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d with an unreachable identity provider, want 503", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}
	if !strings.Contains(logs.String(), "migrations applied") {
		t.Fatalf("no migration line in the log:\n%s", logs.String())
	}
}

func TestServe_AdminListenerOwnsMetricsAndProfilesAndHealthcheckReadsIt(t *testing.T) {
	db := pgtest.NewEmpty(t)
	env := validEnv()
	addr, admin := freeAddr(t), freeAddr(t)
	env["BROKER_DATABASE_URL"], env["BROKER_MIGRATE"], env["BROKER_ADDR"], env["BROKER_ADMIN_ADDR"] = db.URL, "auto", addr, admin
	env["BROKER_OIDC_ISSUER"] = "http://127.0.0.1:9/no-provider"
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"broker", "serve"}, envFunc(env), strings.NewReader(""), logs, logs) }()
	get := func(base, path string) (int, string) {
		resp, err := http.Get("http://" + base + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor(t, "admin /healthz", 20*time.Second, func() bool { code, _ := get(admin, "/healthz"); return code == 200 })

	if code, body := get(admin, "/healthz"); !strings.Contains(body, `"version":"broker `) {
		t.Errorf("admin /healthz %d %s; want the build's version", code, body)
	}
	if code, body := get(addr, "/healthz"); code != 200 || strings.Contains(body, "version") {
		t.Errorf("public /healthz %d %s; want 200 without the version", code, body)
	}
	if code, body := get(admin, "/metrics"); code != 200 || !strings.Contains(body, "broker_build_info{") || !strings.Contains(body, "broker_audit_commit_seconds") {
		t.Errorf("admin /metrics %d; want the build info and the broker's metrics", code)
	}
	if code, _ := get(addr, "/metrics"); code != http.StatusNotFound {
		t.Errorf("public /metrics %d with an admin listener, want 404", code)
	}
	if code, _ := get(addr, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("public /debug/pprof/ %d, want 404", code)
	}
	if code, body := get(admin, "/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Errorf("admin /debug/pprof/goroutine %d, want the profile", code)
	}

	if code, out, _ := runBroker(t, nil, "healthcheck", "http://"+admin+"/healthz"); code != 0 || !strings.Contains(out, "healthy") {
		t.Errorf("healthcheck of a serving broker: exit %d %q, want 0", code, out)
	}
	if code, _, stderr := runBroker(t, nil, "healthcheck", "http://"+admin+"/readyz"); code != 1 || !strings.Contains(stderr, "503") {
		t.Errorf("healthcheck of an unready broker's /readyz: exit %d %q, want 1 naming the 503", code, stderr)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}
	if code, _, stderr := runBroker(t, nil, "healthcheck", "http://user:hunter2@"+admin+"/healthz"); code != 1 || strings.Contains(stderr, "hunter2") {
		t.Errorf("healthcheck of a stopped broker: exit %d %q, want 1 and no credentials echoed", code, stderr)
	}
	if code, _, _ := runBroker(t, nil, "healthcheck", "ftp://x"); code != 2 {
		t.Errorf("healthcheck of a non-http URL: exit %d, want 2", code)
	}
}
