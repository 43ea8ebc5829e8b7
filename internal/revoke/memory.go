package revoke

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
)

// Memory is a Store in memory, for broker dev and tests.
type Memory struct {
	mu   sync.Mutex
	revs []memoryRevocation // revs[i].ID == i+1
}

// memoryRevocation is a revocation kept, or a claim dropped (Delete).
type memoryRevocation struct {
	Revocation
	deleted bool
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return &Memory{} }

// Create implements Store.
func (m *Memory) Create(_ context.Context, r Revocation) (Revocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.revs {
		if o.Lifted == nil && !o.deleted && o.Project == r.Project && o.Subject == r.Subject && o.Channel == r.Channel && o.PublishOnly == r.PublishOnly {
			return Revocation{}, inForce(o.ID)
		}
	}
	r.ID, r.Created = int64(len(m.revs)+1), time.Now().UTC()
	r.Bans = slices.Clone(nonNil(r.Bans))
	m.revs = append(m.revs, memoryRevocation{Revocation: r})
	return r, nil
}

// Complete implements Store.
func (m *Memory) Complete(_ context.Context, r Revocation) (Revocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, err := m.find(r.ID)
	if err != nil {
		return Revocation{}, err
	}
	o.RuleID, o.Bans, o.BansError, o.Until = r.RuleID, slices.Clone(nonNil(r.Bans)), r.BansError, r.Until
	return o.Revocation, nil
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, id int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, err := m.find(id)
	if err == nil {
		o.deleted = true
	}
	return err
}

// find returns the revocation id; the caller holds mu.
func (m *Memory) find(id int64) (*memoryRevocation, error) {
	if id < 1 || id > int64(len(m.revs)) || m.revs[id-1].deleted {
		return nil, apperr.New(apperr.NotFound, "no revocation %d", id)
	}
	return &m.revs[id-1], nil
}

// List implements Store.
func (m *Memory) List(_ context.Context, project string, active bool, limit int) ([]Revocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Revocation
	for i := len(m.revs) - 1; i >= 0 && (limit <= 0 || len(out) < limit); i-- {
		if r := m.revs[i]; !r.deleted && r.Project == project && (!active || r.Lifted == nil) {
			out = append(out, r.Revocation)
		}
	}
	return out, nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, id int64) (Revocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.find(id)
	if err != nil {
		return Revocation{}, err
	}
	return r.Revocation, nil
}

// Lift implements Store.
func (m *Memory) Lift(_ context.Context, id int64, actor string, at time.Time, bansError string) (Revocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.find(id)
	if err != nil {
		return Revocation{}, err
	}
	if r.Lifted != nil {
		return Revocation{}, apperr.New(apperr.Conflict, "revocation %d was lifted already", id)
	}
	at = at.UTC()
	r.Lifted, r.LiftedBy = &at, actor
	if bansError != "" {
		r.BansError = bansError
	}
	return r.Revocation, nil
}

// Expired implements Store.
func (m *Memory) Expired(_ context.Context, t time.Time) ([]Revocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Revocation
	for _, r := range m.revs {
		if !r.deleted && r.Lifted == nil && r.Until.Before(t) {
			out = append(out, r.Revocation)
		}
	}
	return out, nil
}

// inForce is the Conflict of a second revocation of what revocation id
// revokes already.
func inForce(id int64) error {
	return apperr.New(apperr.Conflict, "revocation %d is in force for this user and scope already: lift it first", id)
}
