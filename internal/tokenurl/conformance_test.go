package tokenurl

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

// runConformance is the suite both stores pass, through the Service.
func runConformance(t *testing.T, newStore func(t *testing.T) Store) {
	clock := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { clock = clock.Add(time.Millisecond); return clock }
	alice := URL{Issuer: "https://idp", Subject: "alice", Account: "alice", Groups: []string{"dev"}, UID: 42, Downgrade: true}

	t.Run("CreateResolveListRevoke", func(t *testing.T) {
		s := New(newStore(t), []byte(strings.Repeat("k", 32)), now)
		u, secret, err := s.Create(ctx, alice, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(u.ID, "tu_") || len(secret) != 43 || !u.ExpiresAt.Equal(u.CreatedAt.Add(time.Hour)) {
			t.Fatalf("created %+v with a %d-character secret", u, len(secret))
		}
		got, err := s.Resolve(ctx, secret)
		if err != nil || got.ID != u.ID || got.Subject != "alice" || got.UID != 42 || !got.Downgrade || got.Groups[0] != "dev" {
			t.Fatalf("Resolve = %+v, %v", got, err)
		}
		other, _, _ := s.Create(ctx, URL{Issuer: "https://idp", Subject: "bob"}, time.Hour)
		mine, err := s.List(ctx, "https://idp", "alice")
		if err != nil || len(mine) != 1 || mine[0].ID != u.ID {
			t.Fatalf("List(alice) = %+v, %v", mine, err)
		}
		all, _ := s.List(ctx, "", "")
		if len(all) != 2 || all[0].ID != other.ID {
			t.Fatalf("List(all) = %+v, want both, newest first", all)
		}
		if _, err := s.Revoke(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Resolve(ctx, secret); apperr.KindOf(err) != apperr.Unauthorized || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("revoked URL: %v", err)
		}
		if _, err := s.Revoke(ctx, "tu_nope"); apperr.KindOf(err) != apperr.NotFound {
			t.Fatalf("revoke unknown: %v", err)
		}
	})

	t.Run("ExpiredAndUnknownAreUnauthorized", func(t *testing.T) {
		c := clock
		s := New(newStore(t), []byte(strings.Repeat("k", 32)), func() time.Time { return c })
		_, secret, err := s.Create(ctx, alice, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		c = c.Add(time.Minute)
		if _, err := s.Resolve(ctx, secret); apperr.KindOf(err) != apperr.Unauthorized || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("expired URL: %v", err)
		}
		for _, bad := range []string{"", "short", strings.Repeat("A", 43), secret + "x"} {
			if _, err := s.Resolve(ctx, bad); apperr.KindOf(err) != apperr.Unauthorized || strings.Contains(err.Error(), bad+"x") {
				t.Errorf("Resolve(%q): %v", bad, err)
			}
		}
	})

	t.Run("OnlyAKeyedHashIsStored", func(t *testing.T) {
		st := newStore(t)
		s := New(st, []byte(strings.Repeat("k", 32)), now)
		_, secret, err := s.Create(ctx, alice, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.ByHash(ctx, []byte(secret)); apperr.KindOf(err) != apperr.NotFound {
			t.Fatal("the secret itself finds the URL")
		}
		// Another key (another audit key) does not resolve it.
		if _, err := New(st, []byte(strings.Repeat("j", 32)), now).Resolve(ctx, secret); apperr.KindOf(err) != apperr.Unauthorized {
			t.Fatalf("another key resolved the URL: %v", err)
		}
	})
}

func TestMemory_Conformance(t *testing.T) {
	runConformance(t, func(*testing.T) Store { return NewMemory() })
}

func TestPostgres_Conformance(t *testing.T) {
	runConformance(t, func(t *testing.T) Store { return NewPostgres(pgtest.New(t).Pool()) })
}
