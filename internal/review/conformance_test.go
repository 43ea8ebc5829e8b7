package review

import (
	"context"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/agora"
	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/pg/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestMemory_Conformance(t *testing.T) {
	runConformance(t, func(*testing.T) Store { return NewMemory() })
}

func TestPostgres_Conformance(t *testing.T) {
	runConformance(t, func(t *testing.T) Store { return NewPostgres(pgtest.New(t).Pool()) })
}

// runConformance is what every Store does: events kept once per notice id,
// read back per project, channel and period in time order, bounds refused.
func runConformance(t *testing.T, open func(*testing.T) Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	ev := func(id string, kind agora.EventKind, channel string, uid uint32, min int) Event {
		e := Event{NoticeID: id, Project: "default", EventType: 103, Kind: kind, Role: agora.Broadcaster, Channel: channel,
			UID: uid, Platform: 1, ClientSeq: int64(min), At: t0.Add(time.Duration(min) * time.Minute)}
		if kind == agora.Joined {
			explained := uid != 666
			e.Explained = &explained
		}
		return e
	}
	t.Run("OncePerNotice", func(t *testing.T) {
		s := open(t)
		for i, want := range []bool{true, false} {
			if isNew, err := s.Record(ctx, ev("n-1", agora.Joined, "room", 7, 0)); err != nil || isNew != want {
				t.Fatalf("record #%d: %v, %v; want new %v", i+1, isNew, err, want)
			}
		}
		if got, err := s.Events(ctx, "default", "room", t0, t0.Add(time.Hour), 0); err != nil || len(got) != 1 {
			t.Fatalf("events: %v, %v; want the one", got, err)
		}
	})
	t.Run("PerChannelAndPeriodInOrder", func(t *testing.T) {
		s := open(t)
		for _, e := range []Event{ev("a", agora.Left, "room", 7, 20), ev("b", agora.Joined, "room", 7, 5), ev("c", agora.Joined, "hall", 8, 6),
			ev("d", agora.Joined, "room", 9, 90)} {
			if _, err := s.Record(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		other := ev("e", agora.Joined, "room", 7, 6)
		other.Project = "acme"
		if _, err := s.Record(ctx, other); err != nil {
			t.Fatal(err)
		}
		got, err := s.Events(ctx, "default", "room", t0, t0.Add(time.Hour), 0)
		if err != nil || len(got) != 2 || got[0].NoticeID != "b" || got[1].NoticeID != "a" || got[1].Kind != agora.Left || got[0].UID != 7 || !got[0].At.Equal(t0.Add(5*time.Minute)) {
			t.Fatalf("events of room in the hour: %+v, %v", got, err)
		}
		byUID, err := s.EventsOf(ctx, "default", 7, t0, t0.Add(time.Hour), 0)
		if err != nil || len(byUID) != 2 || byUID[0].NoticeID != "b" || byUID[1].NoticeID != "a" {
			t.Fatalf("events of uid 7 in the hour: %+v, %v", byUID, err)
		}
		if none, err := s.EventsOf(ctx, "default", 0, t0, t0.Add(time.Hour), 0); err != nil || len(none) != 0 {
			t.Fatalf("events of uid 0: %+v, %v; want none", none, err)
		}
		// Another project's notice id may be the same: each is kept.
		again := ev("b", agora.Joined, "room", 7, 5)
		again.Project = "acme"
		if isNew, err := s.Record(ctx, again); err != nil || !isNew {
			t.Fatalf("acme's notice b: %v, %v; want kept", isNew, err)
		}
	})
	t.Run("UnexplainedJoins", func(t *testing.T) {
		s := open(t)
		for _, e := range []Event{ev("j1", agora.Joined, "room", 7, 1), ev("j2", agora.Joined, "room", 666, 2),
			ev("j3", agora.Joined, "hall", 666, 3), ev("l1", agora.Left, "room", 666, 4), ev("j4", agora.Joined, "room", 666, 120)} {
			if _, err := s.Record(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Unexplained(ctx, "default", t0, t0.Add(time.Hour), 0)
		if err != nil || len(got) != 2 || got[0].NoticeID != "j3" || got[1].NoticeID != "j2" || *got[0].Explained {
			t.Fatalf("unexplained joins of the hour: %+v, %v; want j3 then j2", got, err)
		}
	})
	t.Run("RefusesWhatIsNotKept", func(t *testing.T) {
		s := open(t)
		other := ev("x", agora.Other, "room", 7, 0)
		long := ev("y", agora.Joined, string(make([]byte, 65)), 7, 0)
		for _, e := range []Event{other, long, ev("", agora.Joined, "room", 7, 0)} {
			if _, err := s.Record(ctx, e); apperr.KindOf(err) != apperr.Invalid {
				t.Errorf("record %+v: %v, want Invalid", e, err)
			}
		}
	})
}
