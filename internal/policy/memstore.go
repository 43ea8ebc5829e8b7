package policy

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
)

// MemStore is a Store held in memory, for `broker dev` and tests. It behaves
// like the Postgres store, including conflicts, history and notifications to
// every engine watching it. The zero value is empty and ready to use.
type MemStore struct {
	mu       sync.Mutex
	lines    []Line         // in id order
	ids      map[Line]int64 // every line's values (ID zero) → its id: duplicates and removals without a scan
	lastID   int64
	applies  int64 // the last apply id
	history  []Change
	watchers map[chan int64]struct{}
}

// NewMemStore returns an empty in-memory store.
func NewMemStore() *MemStore { return &MemStore{} }

// Load implements Store.
func (s *MemStore) Load(ctx context.Context, f Filter) ([]Line, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, apperr.Wrap(apperr.Unavailable, err, "loading policy rules was cancelled")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Line
	for _, l := range s.lines {
		if f.keepsLine(l) {
			out = append(out, l)
		}
	}
	return out, s.version(), nil
}

// Version implements Store.
func (s *MemStore) Version(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, apperr.Wrap(apperr.Unavailable, err, "reading the policy version was cancelled")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version(), nil
}

func (s *MemStore) version() int64 {
	if len(s.history) == 0 {
		return 0
	}
	return s.history[len(s.history)-1].ID
}

// Apply implements Store.
func (s *MemStore) Apply(ctx context.Context, a Actor, m Mutation) (Applied, error) {
	if err := ctx.Err(); err != nil {
		return Applied{}, apperr.Wrap(apperr.Unavailable, err, "policy change was cancelled")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.ExpectVersion != nil && *m.ExpectVersion != s.version() {
		return Applied{}, versionMoved(s.version(), *m.ExpectVersion)
	}
	if m.UnlessPType != "" && slices.ContainsFunc(s.lines, func(l Line) bool { return l.PType == m.UnlessPType }) {
		return Applied{Version: s.version(), Skipped: true}, nil
	}
	if s.ids == nil {
		s.ids = make(map[Line]int64)
	}
	remove := make(map[int64]struct{}, len(m.Remove))
	for _, id := range m.Remove {
		remove[id] = struct{}{}
	}
	var removed []Line
	if len(remove) > 0 {
		for _, l := range s.lines {
			if _, ok := remove[l.ID]; ok {
				removed = append(removed, l)
			}
		}
		if len(removed) != len(remove) {
			return Applied{}, apperr.New(apperr.NotFound, "no policy rule has that id")
		}
	}
	gone := make(map[Line]bool, len(removed))
	for _, l := range removed {
		l.ID = 0
		gone[l] = true
	}
	added := make([]Line, len(m.Add))
	fresh := make(map[Line]bool, len(m.Add))
	for i, l := range m.Add {
		l.ID = 0
		if _, dup := s.ids[l]; (dup && !gone[l]) || fresh[l] {
			return Applied{}, apperr.New(apperr.Conflict, "an identical policy rule already exists")
		}
		fresh[l] = true
		added[i] = l
	}
	for l := range gone {
		delete(s.ids, l)
	}
	if len(removed) > 0 {
		s.lines = slices.DeleteFunc(s.lines, func(l Line) bool { _, ok := remove[l.ID]; return ok })
	}
	for i := range added {
		s.lastID++
		s.ids[added[i]] = s.lastID
		added[i].ID = s.lastID
	}
	s.lines = append(s.lines, added...)
	entry := Change{At: time.Now().UTC(), Actor: a.Subject, RequestID: a.RequestID, Action: m.Action}
	if m.Action != ActionApply {
		entry.Before, entry.After = changeRules(removed), changeRules(added)
		if m.Unchanged != nil {
			entry.Unchanged = *m.Unchanged
		}
		entry.ID = int64(len(s.history) + 1)
		s.history = append(s.history, entry)
	} else {
		s.applies++
		for _, pair := range perRule(changeRules(removed), changeRules(added)) {
			entry.ID, entry.ApplyID = int64(len(s.history)+1), s.applies
			entry.Before, entry.After = pair[0], pair[1]
			s.history = append(s.history, entry)
		}
	}
	for ch := range s.watchers {
		select {
		case <-ch: // replace a pending, older version
		default:
		}
		ch <- s.version()
	}
	return Applied{Version: s.version(), Removed: removed, Added: added}, nil
}

// History implements Store.
func (s *MemStore) History(ctx context.Context, f HistoryFilter) ([]Change, error) {
	limit, err := f.limit()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, apperr.Wrap(apperr.Unavailable, err, "reading the policy history was cancelled")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Change
	for i := len(s.history) - 1; i >= 0 && len(out) < limit; i-- {
		if c := s.history[i]; f.Before == 0 || c.ID < f.Before {
			c.Before, c.After = normalized(c.Before), normalized(c.After)
			if c, ok := f.listed(c); ok {
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// normalized is rules with their projects filled in, as stores read them.
func normalized(rules []Rule) []Rule {
	if rules == nil {
		return nil
	}
	out := make([]Rule, len(rules))
	for i, r := range rules {
		out[i] = r.Normalized()
	}
	return out
}

// Since implements Store.
func (s *MemStore) Since(ctx context.Context, version int64, limit int) ([]Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, apperr.Wrap(apperr.Unavailable, err, "reading the policy history was cancelled")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Change
	for _, c := range s.history {
		if c.ID > version && len(out) < limit {
			out = append(out, c)
		}
	}
	return out, nil
}

// Watch implements Store. An in-memory store never misses a change, so
// changed is called with 0 once at the start and then with the latest version
// after changes (coalesced while a call is running).
func (s *MemStore) Watch(ctx context.Context, changed func(version int64)) error {
	ch := make(chan int64, 1)
	ch <- 0
	s.mu.Lock()
	if s.watchers == nil {
		s.watchers = make(map[chan int64]struct{})
	}
	s.watchers[ch] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.watchers, ch)
		s.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case v := <-ch:
			changed(v)
		}
	}
}
