package review

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/agora"
	"github.com/broker-dev/broker/internal/audit"
)

// TestExplain: a join is explained by a token granted to its uid on its
// channel (or a pattern covering it) in its project, issued before it and
// not expired at it; by nothing else.
func TestExplain(t *testing.T) {
	ctx := context.Background()
	log, err := audit.NewMemory(bytes.Repeat([]byte{3}, audit.MinKeyLen))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	for _, r := range []audit.Record{
		{UID: 7, Channel: "room-1", Decision: audit.DecisionGranted, GrantedTTL: time.Hour},
		{UID: 8, Channel: "team-*", Decision: audit.DecisionGranted, GrantedTTL: 3 * time.Hour},
		{UID: 9, Channel: "room-1", Decision: audit.DecisionDenied},
		{UID: 10, Channel: "room-1", Decision: audit.DecisionGranted, GrantedTTL: time.Hour, Project: "acme"},
	} {
		r.Time, r.Issuer, r.Subject, r.Account, r.Service, r.Role = t0, "https://idp", "s", "s", audit.ServiceRTC, "publisher"
		if r.Project == "" {
			r.Project = "default"
		}
		if r.Decision == audit.DecisionGranted {
			r.RequestedTTL = r.GrantedTTL
		}
		if _, err := log.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	join := func(uid uint32, channel string, after time.Duration) Event {
		return Event{Project: "default", Kind: agora.Joined, Channel: channel, UID: uid, At: t0.Add(after)}
	}
	for name, tc := range map[string]struct {
		e    Event
		want bool
	}{
		"its token":               {join(7, "room-1", 10*time.Minute), true},
		"after it expired":        {join(7, "room-1", 2*time.Hour), false},
		"before it was issued":    {join(7, "room-1", -time.Hour), false},
		"another channel":         {join(7, "room-2", 10*time.Minute), false},
		"a pattern's channel":     {join(8, "team-blue", time.Hour), true},
		"a denied request":        {join(9, "room-1", time.Minute), false},
		"another project's grant": {join(10, "room-1", time.Minute), false},
		"nobody's uid":            {join(99, "room-1", time.Minute), false},
	} {
		if got, err := Explain(ctx, log, tc.e, 24*time.Hour); err != nil || got != tc.want {
			t.Errorf("%s: %v, %v; want %v", name, got, err, tc.want)
		}
	}
}
