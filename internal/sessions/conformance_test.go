package sessions

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/pg/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var ctx = context.Background()

// runConformance is the suite both stores pass.
func runConformance(t *testing.T, newStore func(t *testing.T) Store) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	alice := Session{Issuer: "https://idp", Subject: "alice", Email: "a@example.com", Groups: []string{"admins"}, Created: t0, Expires: t0.Add(time.Hour)}

	t.Run("CreateGetRevoke", func(t *testing.T) {
		s := newStore(t)
		if err := s.Create(ctx, "id-1", alice); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "id-1", t0.Add(time.Minute))
		if err != nil || got.Subject != "alice" || got.Email != "a@example.com" || len(got.Groups) != 1 || got.Groups[0] != "admins" ||
			!got.Created.Equal(t0) || !got.Expires.Equal(t0.Add(time.Hour)) {
			t.Fatalf("Get = %+v, %v", got, err)
		}
		if _, err := s.Get(ctx, "id-2", t0); apperr.KindOf(err) != apperr.NotFound {
			t.Fatalf("unknown id: %v, want NotFound", err)
		}
		if err := s.Revoke(ctx, "id-1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "id-1", t0.Add(time.Minute)); apperr.KindOf(err) != apperr.NotFound {
			t.Fatalf("revoked session: %v, want NotFound", err)
		}
		if err := s.Revoke(ctx, "id-1"); err != nil {
			t.Fatalf("revoking twice: %v", err)
		}
	})

	t.Run("ExpiredIsNotFound", func(t *testing.T) {
		s := newStore(t)
		if err := s.Create(ctx, "id-1", alice); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "id-1", alice.Expires); apperr.KindOf(err) != apperr.NotFound {
			t.Fatalf("at its expiry: %v, want NotFound", err)
		}
	})

	t.Run("RevokeSubjectEndsOnlyThatSubjectsSessions", func(t *testing.T) {
		s := newStore(t)
		bob := alice
		bob.Subject = "bob"
		otherIdP := alice
		otherIdP.Issuer = "https://other"
		for id, v := range map[string]Session{"a1": alice, "a2": alice, "b": bob, "o": otherIdP} {
			if err := s.Create(ctx, id, v); err != nil {
				t.Fatal(err)
			}
		}
		n, err := s.RevokeSubject(ctx, "https://idp", "alice")
		if err != nil || n != 2 {
			t.Fatalf("RevokeSubject = %d, %v; want 2", n, err)
		}
		for _, id := range []string{"a1", "a2"} {
			if _, err := s.Get(ctx, id, t0); apperr.KindOf(err) != apperr.NotFound {
				t.Fatalf("%s survived: %v", id, err)
			}
		}
		for _, id := range []string{"b", "o"} {
			if _, err := s.Get(ctx, id, t0); err != nil {
				t.Fatalf("%s was ended too: %v", id, err)
			}
		}
	})

	t.Run("CreateRefusesUnboundedFields", func(t *testing.T) {
		s := newStore(t)
		for field, mutate := range map[string]func(*Session){
			"issuer":  func(x *Session) { x.Issuer = strings.Repeat("i", 2049) },
			"subject": func(x *Session) { x.Subject = strings.Repeat("s", 513) },
			"email":   func(x *Session) { x.Email = strings.Repeat("e", 321) },
			"groups":  func(x *Session) { x.Groups = []string{strings.Repeat("g", 513)} },
		} {
			big := alice
			mutate(&big)
			if err := s.Create(ctx, "big-"+field, big); apperr.KindOf(err) != apperr.Invalid {
				t.Errorf("%s too long: Create = %v, want Invalid", field, err)
			}
		}
	})
	t.Run("CreateDropsExpiredSessions", func(t *testing.T) {
		s := newStore(t)
		if err := s.Create(ctx, "old", alice); err != nil {
			t.Fatal(err)
		}
		later := alice
		later.Created, later.Expires = alice.Expires.Add(time.Minute), alice.Expires.Add(time.Hour)
		if err := s.Create(ctx, "new", later); err != nil {
			t.Fatal(err)
		}
		// An expired session is gone, not just hidden: it does not count.
		if n, err := s.RevokeSubject(ctx, "https://idp", "alice"); err != nil || n != 1 {
			t.Fatalf("RevokeSubject after expiry = %d, %v; want 1 (the expired one dropped)", n, err)
		}
	})
}

func TestMemory_Conformance(t *testing.T) {
	runConformance(t, func(*testing.T) Store { return NewMemory() })
}

func TestPostgres_Conformance(t *testing.T) {
	runConformance(t, func(t *testing.T) Store { return NewPostgres(pgtest.New(t).Pool()) })
}

func TestPostgres_StoresNoUsableSessionID(t *testing.T) {
	db := pgtest.New(t)
	s := NewPostgres(db.Pool())
	id := "a-session-id-that-must-not-be-stored"
	if err := s.Create(ctx, id, Session{Issuer: "i", Subject: "s", Created: time.Now(), Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.Pool().QueryRow(ctx, `SELECT count(*) FROM console_sessions WHERE position($1::bytea in id_hash) > 0`, []byte(id)).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the id is stored in the clear (%d rows, %v)", n, err)
	}
}

func TestPostgres_DownIsUnavailable(t *testing.T) {
	db := pgtest.New(t)
	s := NewPostgres(db.Pool())
	db.Pool().Close()
	if _, err := s.Get(ctx, "x", time.Now()); apperr.KindOf(err) != apperr.Unavailable {
		t.Fatalf("Get on a closed pool: %v, want Unavailable", err)
	}
}
