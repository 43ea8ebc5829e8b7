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
	revs []Revocation
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return &Memory{} }

// Create implements Store.
func (m *Memory) Create(_ context.Context, r Revocation) (Revocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r.ID, r.Created = int64(len(m.revs)+1), time.Now().UTC()
	r.Bans = slices.Clone(nonNil(r.Bans))
	m.revs = append(m.revs, r)
	return r, nil
}

// List implements Store.
func (m *Memory) List(_ context.Context, project string, active bool, limit int) ([]Revocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Revocation
	for i := len(m.revs) - 1; i >= 0 && (limit <= 0 || len(out) < limit); i-- {
		if r := m.revs[i]; r.Project == project && (!active || r.Lifted == nil) {
			out = append(out, r)
		}
	}
	return out, nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, id int64) (Revocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id < 1 || id > int64(len(m.revs)) {
		return Revocation{}, apperr.New(apperr.NotFound, "no revocation %d", id)
	}
	return m.revs[id-1], nil
}

// Lift implements Store.
func (m *Memory) Lift(_ context.Context, id int64, actor string, at time.Time, bansError string) (Revocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id < 1 || id > int64(len(m.revs)) {
		return Revocation{}, apperr.New(apperr.NotFound, "no revocation %d", id)
	}
	r := &m.revs[id-1]
	if r.Lifted != nil {
		return Revocation{}, apperr.New(apperr.Conflict, "revocation %d was lifted already", id)
	}
	at = at.UTC()
	r.Lifted, r.LiftedBy = &at, actor
	if bansError != "" {
		r.BansError = bansError
	}
	return *r, nil
}

// Expired implements Store.
func (m *Memory) Expired(_ context.Context, t time.Time) ([]Revocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Revocation
	for _, r := range m.revs {
		if r.Lifted == nil && r.Until.Before(t) {
			out = append(out, r)
		}
	}
	return out, nil
}
