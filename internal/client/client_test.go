package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNormalizeServer(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{"https://broker.example.com/", "https://broker.example.com", ""},
		{"https://broker.example.com/base/", "https://broker.example.com/base", ""},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080", ""},
		{"http://localhost:8080/", "http://localhost:8080", ""},
		{"http://broker.example.com", "", "clear text"},
		{"ftp://broker.example.com", "", "not an http(s) URL"},
		{"https://user:pw@broker.example.com", "", "without credentials"},
		{"https://broker.example.com/?x=1", "", "without credentials, query"},
		{"broker.example.com", "", "not an http(s) URL"},
		{"", "", "no server given"},
	} {
		got, err := NormalizeServer(tc.in)
		if tc.err == "" && (err != nil || got != tc.want) {
			t.Errorf("NormalizeServer(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("NormalizeServer(%q) = %q, %v; want an error saying %q", tc.in, got, err, tc.err)
		}
	}
}

// TestStore_KeepsSessionsPrivate: the credentials file is 0600 in a 0700
// directory, one session per server, and a file others may read is refused.
func TestStore_KeepsSessionsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "broker")
	s := Store{Dir: dir}
	if _, ok, err := s.Load("https://a.example.com"); ok || err != nil {
		t.Fatalf("Load before any login = %v, %v", ok, err)
	}
	for _, server := range []string{"https://a.example.com", "https://b.example.com"} {
		if err := s.Save(Session{Server: server, IDToken: "tok-" + server, Expiry: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	info, err := os.Stat(filepath.Join(dir, credentialsFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v, mode %v", err, info.Mode().Perm())
	}
	if d, err := os.Stat(dir); err != nil || d.Mode().Perm() != 0o700 {
		t.Fatalf("credentials directory: %v, mode %v", err, d.Mode().Perm())
	}
	if got, ok, err := s.Load("https://b.example.com"); !ok || err != nil || got.IDToken != "tok-https://b.example.com" {
		t.Fatalf("Load b = %+v, %v, %v", got, ok, err)
	}
	if had, err := s.Delete("https://a.example.com"); !had || err != nil {
		t.Fatalf("Delete a = %v, %v", had, err)
	}
	if _, ok, _ := s.Load("https://a.example.com"); ok {
		t.Fatal("a's session survived its logout")
	}
	if err := os.Chmod(filepath.Join(dir, credentialsFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Load("https://b.example.com"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Load of a file others may read = %v, want a refusal", err)
	}
}

// TestClient_ProblemsAndExpiredLoginsAreErrorsThatSayWhatToDo: a problem
// document comes back as a *Problem; a 401 and an expired login without a
// refresh token point to broker login.
func TestClient_ProblemsAndExpiredLoginsAreErrorsThatSayWhatToDo(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		status := http.StatusConflict
		if r.URL.Path == "/v1/me" {
			status = http.StatusUnauthorized
		}
		w.WriteHeader(status)
		// No status in the document: the answer's own is taken.
		w.Write([]byte(`{"type":"https://broker.dev/problems/conflict","title":"Conflict","detail":"moved","requestId":"r1"}`))
	}))
	defer srv.Close()
	store := Store{Dir: t.TempDir()}
	if err := store.Save(Session{Server: srv.URL, IDToken: "t", Expiry: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	c, err := New(srv.URL, store, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	err = c.JSON(context.Background(), Request{Path: "/v1/policies/apply"}, nil, nil)
	var p *Problem
	if !errors.As(err, &p) || p.Status != http.StatusConflict || p.Detail != "moved" || !strings.Contains(err.Error(), "[request r1]") {
		t.Fatalf("a 409 = %v, want the problem", err)
	}
	if err := c.JSON(context.Background(), Request{Path: "/v1/me"}, nil, nil); err == nil || !strings.Contains(err.Error(), "broker login --server "+srv.URL) {
		t.Fatalf("a 401 = %v, want a pointer to broker login", err)
	}
	if err := store.Save(Session{Server: srv.URL, IDToken: "t", Expiry: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	c, _ = New(srv.URL, store, srv.Client())
	if err := c.JSON(context.Background(), Request{Path: "/v1/policies"}, nil, nil); err == nil || !strings.Contains(err.Error(), "has expired") {
		t.Fatalf("an expired login without a refresh token = %v", err)
	}
}
