package console

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// testConsole is a console whose sessions can be forged and whose clock can be set.
func testConsole(t *testing.T) *Console {
	t.Helper()
	key := bytes.Repeat([]byte{3}, MinSessionKeyLen)
	s, err := newSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	return &Console{base: DefaultBasePath, cookies: s, csrfKey: key, now: time.Now, log: slog.New(slog.DiscardHandler)}
}

func requestWith(name, value string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/console/", nil)
	r.AddCookie(&http.Cookie{Name: name, Value: value})
	return r
}

func TestReadSession_RefusesExpiredForeignAndIncompleteSessions(t *testing.T) {
	c := testConsole(t)
	now := time.Unix(1_800_000_000, 0)
	c.now = func() time.Time { return now }
	valid := session{ID: "id", Subject: "alice", Expires: now.Add(time.Hour).Unix()}
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
		{"a login cookie passed off as a session", seal(loginCookie, valid), false},
		{"sealed under another key", otherKey, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ok := c.readSession(requestWith(sessionCookie, tt.value))
			if ok != tt.ok {
				t.Fatalf("readSession ok = %v, want %v", ok, tt.ok)
			}
			if ok && s.Subject != "alice" {
				t.Errorf("session = %+v", s)
			}
		})
	}
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
