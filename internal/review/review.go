// Package review keeps what Agora reports happened in the channels — who
// joined and left, from its signed NCS notifications — for the questions
// that join it to the policy and the issuance log. Postgres and memory
// stores, one conformance suite.
package review

import (
	"context"
	"time"

	"github.com/broker-dev/broker/internal/agora"
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
}

// Kept reports whether the broker keeps events of kind: the RTC channel
// events, not Other.
func Kept(kind agora.EventKind) bool { return kind != agora.Other && kind != "" }

// Store keeps events.
type Store interface {
	// Record keeps e once per notice id (Agora resends a notification it
	// thinks was not received): it reports whether e was new.
	Record(ctx context.Context, e Event) (bool, error)
	// Events returns project's events of channel at or after from and
	// before to, oldest first, at most limit.
	Events(ctx context.Context, project, channel string, from, to time.Time, limit int) ([]Event, error)
}

// FromAgora is e, of project, as the broker keeps it.
func FromAgora(project string, e agora.Event) Event {
	return Event{NoticeID: e.NoticeID, Project: project, EventType: e.EventType, Kind: e.Kind, Role: e.Role,
		Channel: e.Channel, UID: e.UID, Platform: e.Platform, ClientSeq: e.ClientSeq, At: e.At.UTC()}
}
