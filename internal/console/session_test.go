package console

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/sessions"
)

// testConsole is a console whose sessions can be forged and whose clock can be set.
func testConsole(t *testing.T) *Console {
	t.Helper()
	key := bytes.Repeat([]byte{3}, MinSessionKeyLen)
	s, err := newSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	return &Console{base: DefaultBasePath, cookies: s, csrfKey: key, now: time.Now, log: slog.New(slog.DiscardHandler), sessions: sessions.NewMemory()}
}

func requestWith(name, value string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/console/", nil)
	r.AddCookie(&http.Cookie{Name: name, Value: value})
	return r
}

func TestReadSession_RefusesExpiredForeignIncompleteAndEndedSessions(t *testing.T) {
	c := testConsole(t)
	now := time.Unix(1_800_000_000, 0)
	c.now = func() time.Time { return now }
	for _, id := range []string{"id", "ended"} {
		if err := c.sessions.Create(context.Background(), id, sessions.Session{Issuer: "https://idp", Subject: "alice",
			Created: now, Expires: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.sessions.Revoke(context.Background(), "ended"); err != nil {
		t.Fatal(err)
	}
	valid := sessionCookieValue{ID: "id", Expires: now.Add(time.Hour).Unix()}
	seal := func(name string, v any) string {
		s, err := c.cookies.seal(name, v)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	expired := valid
	expired.Expires = now.Unix()
	noID := valid
	noID.ID = ""
	ended := valid
	ended.ID = "ended"
	other, err := newSealer(bytes.Repeat([]byte{4}, 32))
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := other.seal(sessionCookie, valid)
	tests := []struct {
		name  string
		value string
		ok    bool
	}{
		{"valid", seal(sessionCookie, valid), true},
		{"expired", seal(sessionCookie, expired), false},
		{"without id", seal(sessionCookie, noID), false},
		{"ended on the server (a copied cookie after logout)", seal(sessionCookie, ended), false},
		{"a login cookie passed off as a session", seal(loginCookie, valid), false},
		{"sealed under another key", otherKey, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ok, err := c.readSession(requestWith(sessionCookie, tt.value))
			if err != nil || ok != tt.ok {
				t.Fatalf("readSession ok = %v, %v; want %v", ok, err, tt.ok)
			}
			if ok && s.Subject != "alice" {
				t.Errorf("session = %+v", s)
			}
		})
	}
	t.Run("store down fails closed", func(t *testing.T) {
		c.sessions = downStore{}
		if _, ok, err := c.readSession(requestWith(sessionCookie, seal(sessionCookie, valid))); ok || apperr.KindOf(err) != apperr.Unavailable {
			t.Fatalf("readSession with the store down: ok %v, %v; want an Unavailable error", ok, err)
		}
	})
}

// downStore is a session store that cannot answer.
type downStore struct{ sessions.Store }

func (downStore) Get(context.Context, string, time.Time) (sessions.Session, error) {
	return sessions.Session{}, apperr.New(apperr.Unavailable, "console sessions are unavailable")
}

func TestSeal_RefusesValuesTooLargeForACookie(t *testing.T) {
	c := testConsole(t)
	groups := make([]string, 300)
	for i := range groups {
		groups[i] = "a-rather-long-group-name"
	}
	if _, err := c.cookies.seal(sessionCookie, session{ID: "id", Subject: "s", Groups: groups}); err == nil {
		t.Fatal("a session of 300 groups was sealed into one cookie")
	}
}

func TestSafeNext_KeepsRedirectsInsideTheConsole(t *testing.T) {
	c := testConsole(t)
	tests := map[string]string{
		"/console/policies?subject=x": "/console/policies?subject=x",
		"/console":                    "/console",
		"/console/":                   "/console/",
		"":                            "/console/",
		"/consolex":                   "/console/",
		"/other":                      "/console/",
		"https://evil.example/":       "/console/",
		"//evil.example/console/":     "/console/",
		`/console\..\evil`:            "/console/",
		"http:/console/":              "/console/",
		"/console/../admin":           "/console/",
	}
	for next, want := range tests {
		if got := c.safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}
}

func TestCSRFToken_IsPerSession(t *testing.T) {
	c := testConsole(t)
	a, b := c.csrfToken(&session{ID: "a"}), c.csrfToken(&session{ID: "b"})
	if a == b || a != c.csrfToken(&session{ID: "a"}) {
		t.Errorf("tokens a=%s b=%s: want stable per session and distinct across sessions", a, b)
	}
}
