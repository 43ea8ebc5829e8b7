package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/devidp"
)

// rotatingIdP is an identity provider that rotates refresh tokens: each is
// good for one refresh, and a second use of one is refused (as providers
// that take reuse for theft do).
type rotatingIdP struct {
	srv *httptest.Server
	iss *devidp.Issuer

	mu        sync.Mutex
	next      int
	valid     map[string]bool
	refreshes int
}

func newRotatingIdP(t *testing.T) *rotatingIdP {
	p := &rotatingIdP{valid: map[string]bool{"r0": true}}
	var idp http.Handler
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/token" && r.FormValue("grant_type") == "refresh_token" {
			p.refresh(w, r.FormValue("refresh_token"))
			return
		}
		idp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	iss, err := devidp.New(devidp.Options{Issuer: p.srv.URL, Audience: "cli"})
	if err != nil {
		t.Fatal(err)
	}
	p.iss, idp = iss, iss.Handler()
	return p
}

func (p *rotatingIdP) refresh(w http.ResponseWriter, token string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !p.valid[token] {
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"error":"invalid_grant"}`))
		return
	}
	delete(p.valid, token)
	p.refreshes++
	p.next++
	rotated := fmt.Sprintf("r%d", p.next)
	p.valid[rotated] = true
	idt, err := p.iss.IDToken("alice")
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 3600,
		"id_token": idt, "refresh_token": rotated})
}

// TestClient_CommandsAtOnceRefreshOnce: commands started together with an
// expired login refresh it once between them, the others taking the
// refreshed session, so a provider that rotates refresh tokens does not see
// one used twice; and sessions saved at once are all kept.
func TestClient_CommandsAtOnceRefreshOnce(t *testing.T) {
	p := newRotatingIdP(t)
	store := Store{Dir: t.TempDir()}
	const server = "https://broker.example"
	expired := Session{Server: server, Issuer: p.srv.URL, ClientID: "cli", Subject: "alice", IDToken: "old",
		RefreshToken: "r0", Expiry: time.Now().Add(-time.Minute)}
	if err := store.Save(expired); err != nil {
		t.Fatal(err)
	}
	const commands = 4
	clients := make([]*Client, commands)
	for i := range clients {
		c, err := New(server, store, p.srv.Client())
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = c
	}
	errs := make(chan error, commands)
	for _, c := range clients {
		go func() {
			_, err := c.token(context.Background())
			errs <- err
		}()
	}
	for range commands {
		if err := <-errs; err != nil {
			t.Errorf("a command refreshing the login: %v", err)
		}
	}
	s, _, err := store.Load(server)
	if err != nil {
		t.Fatal(err)
	}
	if p.refreshes != 1 || s.RefreshToken != "r1" || time.Until(s.Expiry) < time.Minute {
		t.Errorf("%d refreshes, stored refresh token %q, expiry %v; want one refresh, r1 and a fresh token", p.refreshes, s.RefreshToken, s.Expiry)
	}

	// Logins to other servers saved at once are all kept.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if err := store.Save(Session{Server: fmt.Sprintf("https://b%d.example", i), IDToken: "t"}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	c, err := store.read()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Sessions) != 9 {
		t.Errorf("%d sessions kept, want 9", len(c.Sessions))
	}
}
