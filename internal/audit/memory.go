package audit

import (
	"context"
	"io"
	"slices"
	"sync"
	"time"

	xtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/broker-dev/broker/internal/apperr"
)

// Memory is an in-memory Log for `broker dev` and tests. It keeps the same
// chain as Postgres, so Verify, Search and Export behave identically; records
// are lost when the process ends.
type Memory struct {
	keys keyring
	now  func() time.Time

	mu      sync.RWMutex
	records []Record     // in seq order
	hashes  []xtlog.Hash // the tree's stored hashes over records
	head    head
	closed  bool
	// checkpoint is the latest signed checkpoint (Checkpointer), of a tree
	// of checkpointSize records.
	checkpoint     []byte
	checkpointSize int64
	// verified is the verified point (VerifyIncremental), of verifiedSize.
	verified     []byte
	verifiedSize int64
	// redaction is the retention state (Maintain).
	redaction redaction
	blockSwitch
	policy func() int64 // the committed policy version (FollowPolicy); nil: not checked
}

var _ Log = (*Memory)(nil)

// NewMemory returns an empty in-memory log keyed by auditKey. previousKeys
// are rotated-out audit keys, accepted like Postgres accepts them. Every key
// must be at least MinKeyLen bytes.
func NewMemory(auditKey []byte, previousKeys ...[]byte) (*Memory, error) {
	k, err := newKeyring(auditKey, previousKeys)
	if err != nil {
		return nil, err
	}
	return &Memory{keys: k, now: time.Now}, nil
}

// FollowPolicy makes Append refuse, with ErrStalePolicy, a granted record
// decided on a policy version older than committed() returns, as Postgres
// does against the policy history. `broker dev` gives it its policy store's
// version.
func (m *Memory) FollowPolicy(committed func() int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.policy = committed
}

// Fingerprint returns the fingerprint under which token is recorded now.
func (m *Memory) Fingerprint(token string) string { return m.keys.current.fingerprintOf(token) }

// Append links r to the chain and keeps it. Like Postgres, it refuses to
// extend a head that fails its MAC under the configured keys.
func (m *Memory) Append(ctx context.Context, r Record) (Record, error) {
	r, err := normalize(r, m.now())
	if err != nil {
		return Record{}, err
	}
	if err := ctx.Err(); err != nil {
		return Record{}, apperr.Wrap(apperr.Unavailable, err, "issuance log cannot record")
	}
	if err := m.blocked(); err != nil {
		return Record{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Record{}, apperr.New(apperr.Unavailable, "issuance log is closed")
	}
	if m.policy != nil && r.Decision == DecisionGranted && r.PolicyVersion < m.policy() {
		return Record{}, ErrStalePolicy
	}
	if m.head.present {
		if err := m.keys.checkHead(m.head); err != nil {
			return Record{}, apperr.Wrap(apperr.Unavailable, err, "issuance log cannot record")
		}
	}
	k := m.keys.current
	k.link(&r, m.head.seq+1, m.head.hash)
	m.records = append(m.records, r)
	if err := m.growTree(); err != nil {
		m.records = m.records[:len(m.records)-1]
		return Record{}, apperr.Wrap(apperr.Unavailable, err, "issuance log cannot record")
	}
	m.head = head{present: true, seq: r.Seq, hash: r.Hash, mac: k.headMAC(r.Seq, r.Hash, k.id), keyID: k.id}
	return r, nil
}

// growTree makes the tree's stored hashes cover every record (those of a
// log from before the tree too, as BuildTree does); the caller holds m.mu.
func (m *Memory) growTree() error {
	size, err := treeSizeOf(int64(len(m.hashes)))
	if err != nil {
		return err
	}
	for ; size < int64(len(m.records)); size++ {
		hs, err := xtlog.StoredHashes(size, Leaf(&m.records[size]), memoryHashes{m})
		if err != nil {
			return err
		}
		m.hashes = append(m.hashes, hs...)
	}
	return nil
}

// Search returns matching records, newest first.
func (m *Memory) Search(ctx context.Context, f Filter) (Page, error) {
	q, err := validate(f, true)
	if err != nil {
		return Page{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	page := Page{Records: []Record{}}
	for i := len(m.records) - 1; i >= 0; i-- {
		r := &m.records[i]
		if q.before != 0 && r.Seq >= q.before || !q.matches(r) {
			continue
		}
		if len(page.Records) == q.Limit {
			page.NextCursor = encodeCursor(page.Records[len(page.Records)-1].Seq)
			break
		}
		page.Records = append(page.Records, clone(r))
	}
	return page, nil
}

// Export writes matching records, oldest first.
func (m *Memory) Export(ctx context.Context, f Filter, format string, w io.Writer) error {
	q, err := validate(f, false)
	if err != nil {
		return err
	}
	e, err := newExporter(format, w)
	if err != nil {
		return err
	}
	// A page at a time, copied under the lock and written without it, so a
	// client that reads slowly never blocks an Append.
	n, next := 0, 0
	for {
		m.mu.RLock()
		var page []Record
		for ; next < len(m.records) && len(page) < readPage; next++ {
			if r := &m.records[next]; q.matches(r) && (q.Limit == 0 || n+len(page) < q.Limit) {
				page = append(page, *r)
			}
		}
		done := next >= len(m.records) || (q.Limit > 0 && n+len(page) >= q.Limit)
		m.mu.RUnlock()
		for i := range page {
			if err := e.write(&page[i]); err != nil {
				return err
			}
		}
		n += len(page)
		if done {
			break
		}
	}
	return e.flush()
}

// Lookup returns the records of token, oldest first.
func (m *Memory) Lookup(ctx context.Context, token string) ([]Record, error) {
	if token == "" {
		return nil, apperr.Field("token", "is required")
	}
	fps := m.keys.fingerprints(token)
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := []Record{}
	for i := range m.records {
		if slices.Contains(fps, m.records[i].TokenFingerprint) {
			out = append(out, clone(&m.records[i]))
		}
	}
	return out, nil
}

// Verify checks the whole chain.
func (m *Memory) Verify(ctx context.Context) (Report, error) { return m.VerifyFrom(ctx, 0) }

// VerifyFrom implements Log.
func (m *Memory) VerifyFrom(ctx context.Context, from int64) (Report, error) {
	if from < 0 {
		return Report{}, apperr.Field("from", "must not be negative")
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	v := newVerifier(m.keys, m.head)
	treeSize, err := treeSizeOf(int64(len(m.hashes)))
	if err != nil {
		return Report{}, apperr.Wrap(apperr.Internal, err, "the tree is broken")
	}
	tc := newTreeCheck(memoryHashes{m})
	if from > 0 {
		i := slices.IndexFunc(m.records, func(r Record) bool { return r.Seq == from })
		if i < 0 || from > treeSize {
			return Report{}, apperr.New(apperr.NotFound, "record %d, where verification was to start, is not in the log or the tree", from)
		}
		edge, err := memoryHashes{m}.ReadHashes(edgeIndexes(from))
		if err != nil {
			return Report{}, apperr.Wrap(apperr.Internal, err, "the tree is broken")
		}
		v.startAfter(from, m.records[i].Hash)
		tc.t = tree{valid: true, size: from, edge: edge}
	}
	v.useRedaction(m.redactionFor())
	treeFrom := from
	if d := v.redaction; d != nil && d.through > from && d.through <= treeSize {
		// The redacted records' leaves cannot be recomputed: the tree is
		// checked from its stored right edge after them.
		edge, err := memoryHashes{m}.ReadHashes(edgeIndexes(d.through))
		if err != nil {
			return Report{}, apperr.Wrap(apperr.Internal, err, "the tree is broken")
		}
		tc.t, treeFrom = tree{valid: true, size: d.through, edge: edge}, d.through
	}
	for i := range m.records {
		if from > 0 && m.records[i].Seq <= from {
			continue
		}
		s := storedRecord{Record: m.records[i]}
		v.add(s)
		if s.Seq <= treeSize && (treeFrom == 0 || s.Seq > treeFrom) {
			tc.add(v, &s)
		}
	}
	v.flushHeld() // the chain's problems first, then the tree's
	tc.finish(v, treeSize)
	return v.finish(), nil
}

// Stats counts decisions per bucket from since until now.
func (m *Memory) Stats(ctx context.Context, since time.Time, bucket time.Duration) ([]Bucket, error) {
	series, err := buckets(since, bucket, m.now())
	if err != nil || len(series) == 0 {
		return series, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	for i := range m.records {
		count(series, series[0].Start, bucket, m.records[i].Time, m.records[i].Decision, 1)
	}
	return series, nil
}

// Close makes further Appends fail with apperr.Unavailable.
func (m *Memory) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

func clone(r *Record) Record {
	c := *r
	c.Groups = slices.Clone(r.Groups)
	return c
}
