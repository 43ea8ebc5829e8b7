package identity

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// runConformance checks the behaviour every Store must have. newStore returns
// a fresh, empty store and a way to force the next allocated uids.
func runConformance(t *testing.T, newStore func(t *testing.T) (Store, func(next func() uint32))) {
	ctx := context.Background()

	t.Run("StableAcrossCalls", func(t *testing.T) {
		s, _ := newStore(t)
		a, err := s.UID(ctx, "https://idp", "alice", "alice")
		if err != nil {
			t.Fatal(err)
		}
		if a == 0 {
			t.Fatal("uid 0 allocated; uids must be in 1…2³²−1")
		}
		again, err := s.UID(ctx, "https://idp", "alice", "alice")
		if err != nil || again != a {
			t.Fatalf("second call: %d, %v; want %d", again, err, a)
		}
	})

	t.Run("DistinctPerIssuerAndSubject", func(t *testing.T) {
		s, _ := newStore(t)
		seen := map[uint32]string{}
		for _, c := range [][2]string{{"https://a", "x"}, {"https://a", "y"}, {"https://b", "x"}} {
			u, err := s.UID(ctx, c[0], c[1], c[1])
			if err != nil {
				t.Fatal(err)
			}
			if prev, dup := seen[u]; dup {
				t.Fatalf("uid %d given to %v and %s", u, c, prev)
			}
			seen[u] = c[0] + " " + c[1]
		}
	})

	t.Run("ConcurrentFirstRequestsGetOneUID", func(t *testing.T) {
		s, _ := newStore(t)
		const n = 16
		got := make([]uint32, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				u, err := s.UID(ctx, "https://idp", "bob", "bob")
				if err != nil {
					t.Error(err)
				}
				got[i] = u
			}()
		}
		wg.Wait()
		for _, u := range got {
			if u != got[0] {
				t.Fatalf("concurrent first requests got different uids: %v", got)
			}
		}
	})

	t.Run("RetriesOnCollision", func(t *testing.T) {
		s, force := newStore(t)
		seq := []uint32{7, 7, 0, 9}
		force(func() uint32 { u := seq[0]; seq = seq[1:]; return u })
		a, err := s.UID(ctx, "https://idp", "first", "first")
		if err != nil || a != 7 {
			t.Fatalf("first: %d, %v; want 7", a, err)
		}
		b, err := s.UID(ctx, "https://idp", "second", "second")
		if err != nil || b != 9 {
			t.Fatalf("second: %d, %v; want 9 after colliding with 7 and skipping 0", b, err)
		}
	})
}

func TestMemory_Conformance(t *testing.T) {
	runConformance(t, func(t *testing.T) (Store, func(func() uint32)) {
		m := NewMemory()
		return m, func(next func() uint32) { m.next = next }
	})
}

func TestDerivedMemory_SameUIDsAfterARestart(t *testing.T) {
	ctx := context.Background()
	first, again := NewDerivedMemory(), NewDerivedMemory()
	for _, sub := range []string{"alice", "bob", "carol"} {
		a, err := first.UID(ctx, "http://127.0.0.1:8080/dev/oidc", sub, sub)
		if err != nil {
			t.Fatal(err)
		}
		b, err := again.UID(ctx, "http://127.0.0.1:8080/dev/oidc", sub, sub)
		if err != nil || a != b || a == 0 {
			t.Fatalf("%s: uid %d, then %d after a restart (%v)", sub, a, b, err)
		}
	}
}

func TestNewUIDsFitASigned32BitInteger(t *testing.T) {
	for range 10000 {
		if u := randomUID(); u == 0 || u > 1<<31-1 {
			t.Fatalf("randomUID() = %d, outside 1…2^31-1", u)
		}
	}
	m := NewDerivedMemory()
	for i := range 1000 {
		u, err := m.UID(context.Background(), "https://idp", fmt.Sprint("user-", i), "")
		if err != nil || u == 0 || u > 1<<31-1 {
			t.Fatalf("derived uid %d, %v", u, err)
		}
	}
}

func TestScreenShareUID_SecondStableUIDFromTheSameSpace(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	main, err := m.UID(ctx, "https://idp", "alice", "alice")
	if err != nil {
		t.Fatal(err)
	}
	ss, err := ScreenShareUID(ctx, m, "https://idp", "alice")
	if err != nil || ss == main || ss == 0 {
		t.Fatalf("screen-share uid %d (main %d), %v", ss, main, err)
	}
	again, _ := ScreenShareUID(ctx, m, "https://idp", "alice")
	if again != ss {
		t.Fatalf("screen-share uid changed: %d then %d", ss, again)
	}
}
