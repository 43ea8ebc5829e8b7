// Package revoke owns revocations: a user's tokens ended before they expire,
// by a deny rule that blocks new tokens for the scope and Agora ban rules
// that end the live sessions, until the last of the tokens would have
// expired; Postgres and memory stores, one conformance suite.
package revoke

import (
	"context"
	"time"
)

// Ban is one Agora ban rule a revocation made.
type Ban struct {
	ID      int64     `json:"id"`
	UID     uint32    `json:"uid"`
	Channel string    `json:"channel,omitempty"` // "": every channel of the app
	Until   time.Time `json:"until"`
}

// Revocation is one revocation.
type Revocation struct {
	ID          int64      `json:"id"`
	Project     string     `json:"project"`
	Subject     string     `json:"subject"` // the rule subject, user:<sub>
	Channel     string     `json:"channel"` // a name, a pattern, or "*"
	PublishOnly bool       `json:"publishOnly"`
	Reason      string     `json:"reason"`
	Actor       string     `json:"actor"`
	Created     time.Time  `json:"created"`
	Until       time.Time  `json:"until"`
	RuleID      int64      `json:"ruleId"` // the deny rule; 0 when the policy refused already
	Bans        []Ban      `json:"bans"`
	BansError   string     `json:"bansError,omitempty"` // why some bans could not be made or lifted
	Lifted      *time.Time `json:"lifted,omitempty"`
	LiftedBy    string     `json:"liftedBy,omitempty"`
}

// Store keeps revocations.
type Store interface {
	// Create keeps r (its ID and Created are assigned) and returns it: a
	// claim, which Complete completes or Delete drops. A revocation in
	// force (not lifted) of the same project, subject, channel and
	// PublishOnly is a Conflict.
	Create(ctx context.Context, r Revocation) (Revocation, error)
	// Complete stores r's deny rule, bans, their error and its end (the
	// tokens found once the deny rule was in force may end later).
	Complete(ctx context.Context, r Revocation) (Revocation, error)
	// Delete drops the claim id that could not be completed.
	Delete(ctx context.Context, id int64) error
	// List returns project's revocations, newest first, at most limit; only
	// those not lifted when active.
	List(ctx context.Context, project string, active bool, limit int) ([]Revocation, error)
	// Get returns the revocation id (NotFound when there is none).
	Get(ctx context.Context, id int64) (Revocation, error)
	// Lift marks id lifted by actor at, with the bans' error if any; a
	// revocation lifted already is a Conflict.
	Lift(ctx context.Context, id int64, actor string, at time.Time, bansError string) (Revocation, error)
	// Expired returns the revocations not lifted whose end is before t.
	Expired(ctx context.Context, t time.Time) ([]Revocation, error)
}
