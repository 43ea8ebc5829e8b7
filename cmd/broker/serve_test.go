package main

import (
	"context"
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
