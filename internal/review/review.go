// Package review keeps what Agora reports happened in the channels — who
// joined and left, from its signed NCS notifications — for the questions
// that join it to the policy and the issuance log. Postgres and memory
// stores, one conformance suite.
package review

import (
	"context"
	"time"

	"github.com/broker-dev/broker/internal/agora"
	"github.com/broker-dev/broker/internal/audit"
)

// Event is one channel event as the broker keeps it.
type Event struct {
	NoticeID  string          `json:"noticeId"`
	Project   string          `json:"project"`
	EventType int             `json:"eventType"`
	Kind      agora.EventKind `json:"kind"`
	Role      agora.Role      `json:"role,omitempty"`
	Channel   string          `json:"channel"`
	UID       uint32          `json:"uid,omitempty"`
	Platform  int             `json:"platform,omitempty"`
	ClientSeq int64           `json:"clientSeq,omitempty"`
	At        time.Time       `json:"at"`
	// Explained is set on joins: whether a token the broker granted covers
	// the join (Explain).
	Explained *bool `json:"explained,omitempty"`
}

// Kept reports whether the broker keeps events of kind: the RTC channel
// events, not Other.
func Kept(kind agora.EventKind) bool { return kind != agora.Other && kind != "" }

// Store keeps events.
type Store interface {
	// Record keeps e once per project and notice id (Agora resends a notification it
	// thinks was not received): it reports whether e was new.
	Record(ctx context.Context, e Event) (bool, error)
	// Events returns project's events of channel at or after from and
	// before to, oldest first, at most limit.
	Events(ctx context.Context, project, channel string, from, to time.Time, limit int) ([]Event, error)
	// EventsOf returns project's events of uid (on any channel) at or after
	// from and before to, oldest first, at most limit.
	EventsOf(ctx context.Context, project string, uid uint32, from, to time.Time, limit int) ([]Event, error)
	// Unexplained returns project's joins at or after from and before to
	// that no granted token explained, newest first, at most limit.
	Unexplained(ctx context.Context, project string, from, to time.Time, limit int) ([]Event, error)
}

// FromAgora is e, of project, as the broker keeps it.
func FromAgora(project string, e agora.Event) Event {
	return Event{NoticeID: e.NoticeID, Project: project, EventType: e.EventType, Kind: e.Kind, Role: e.Role,
		Channel: e.Channel, UID: e.UID, Platform: e.Platform, ClientSeq: e.ClientSeq, At: e.At.UTC()}
}

// Searcher searches the issuance log (audit.Log).
type Searcher interface {
	Search(ctx context.Context, f audit.Filter) (audit.Page, error)
}

// clockSkew is how far Agora's clock and the broker's may disagree about a
// join's time.
const clockSkew = time.Minute

// Explain reports whether a token the broker granted in e's project covers
// the join e: one for e's uid on e's channel (or a pattern that matches
// it), issued before the join and not expired at it (with clockSkew either
// way). maxTTL is the longest lifetime the broker grants. A join nothing
// explains means a token signed elsewhere: the App certificate leaked, or
// another token server signs for the project.
func Explain(ctx context.Context, log Searcher, e Event, maxTTL time.Duration) (bool, error) {
	if e.UID == 0 {
		return false, nil
	}
	uid := e.UID
	f := audit.Filter{UID: &uid, Decision: audit.DecisionGranted, Projects: []string{e.Project},
		From: e.At.Add(-maxTTL - clockSkew), To: e.At.Add(clockSkew), Limit: audit.MaxLimit}
	for {
		page, err := log.Search(ctx, f)
		if err != nil {
			return false, err
		}
		for _, r := range page.Records {
			if audit.MatchChannel(r.Channel, e.Channel) && !r.Time.Add(r.GrantedTTL+clockSkew).Before(e.At) {
				return true, nil
			}
		}
		if page.NextCursor == "" {
			return false, nil
		}
		f.Cursor = page.NextCursor
	}
}
