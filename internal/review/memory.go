package review

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
)

// Memory is a Store in memory, for broker dev and tests.
type Memory struct {
	mu     sync.Mutex
	events []Event
	seen   map[[2]string]bool // project, notice id
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return &Memory{seen: map[[2]string]bool{}} }

// Record implements Store.
func (m *Memory) Record(ctx context.Context, e Event) (bool, error) {
	if err := check(e); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, apperr.Wrap(apperr.Unavailable, err, "recording the channel event was cancelled")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen[[2]string{e.Project, e.NoticeID}] {
		return false, nil
	}
	m.seen[[2]string{e.Project, e.NoticeID}] = true
	m.events = append(m.events, e)
	return true, nil
}

// Unexplained implements Store.
func (m *Memory) Unexplained(ctx context.Context, project string, from, to time.Time, limit int) ([]Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, apperr.Wrap(apperr.Unavailable, err, "reading the channel events was cancelled")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Event
	for _, e := range m.events {
		if e.Project == project && e.Explained != nil && !*e.Explained && !e.At.Before(from) && e.At.Before(to) {
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b Event) int { return b.At.Compare(a.At) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Events implements Store.
func (m *Memory) Events(ctx context.Context, project, channel string, from, to time.Time, limit int) ([]Event, error) {
	return m.matching(ctx, limit, func(e Event) bool {
		return e.Project == project && e.Channel == channel && !e.At.Before(from) && e.At.Before(to)
	})
}

// EventsOf implements Store.
func (m *Memory) EventsOf(ctx context.Context, project string, uid uint32, from, to time.Time, limit int) ([]Event, error) {
	return m.matching(ctx, limit, func(e Event) bool {
		return e.Project == project && uid != 0 && e.UID == uid && !e.At.Before(from) && e.At.Before(to)
	})
}

// matching returns the events keep keeps, oldest first, at most limit.
func (m *Memory) matching(ctx context.Context, limit int, keep func(Event) bool) ([]Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, apperr.Wrap(apperr.Unavailable, err, "reading the channel events was cancelled")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Event
	for _, e := range m.events {
		if keep(e) {
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b Event) int { return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.ClientSeq, b.ClientSeq)) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
