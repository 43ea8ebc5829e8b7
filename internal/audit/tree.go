package audit

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sort"

	"github.com/jackc/pgx/v5"
	xtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/broker-dev/broker/internal/apperr"
)

// The transparency log's Merkle tree (RFC 6962, golang.org/x/mod/sumdb/tlog's
// stored-hash layout): record seq s is leaf s−1, its leaf data Leaf(record).
// The writer keeps the tree's right edge in memory, so that a batch's stored
// hashes cost no read; they are written in the batch's own statement
// (issuance_log_append, migration 013).

// tree is a tree of size records and the stored hashes on its right edge
// (the roots of the complete subtrees that size's binary digits decompose
// it into, largest first, as edgeIndexes lists them): all that the stored
// hashes of the next records are computed from.
type tree struct {
	valid bool // false: to be loaded from the database before use
	size  int64
	edge  []xtlog.Hash
}

// edgeIndexes are the stored-hash indexes of the right edge of a tree of
// size n: the roots of the complete subtrees that n's binary digits
// decompose it into, from the largest.
func edgeIndexes(n int64) []int64 {
	var out []int64
	for level := 62; level >= 0; level-- {
		if n&(1<<level) != 0 {
			out = append(out, xtlog.StoredHashIndex(level, (n>>level)-1))
		}
	}
	return out
}

// mapReader is a HashReader over hashes held in memory, by index.
type mapReader map[int64]xtlog.Hash

func (m mapReader) ReadHashes(indexes []int64) ([]xtlog.Hash, error) {
	out := make([]xtlog.Hash, len(indexes))
	for i, idx := range indexes {
		h, ok := m[idx]
		if !ok {
			return nil, fmt.Errorf("audit: tree hash %d is not on the right edge", idx)
		}
		out[i] = h
	}
	return out, nil
}

// extend returns the stored hashes of leaves appended to t (the first at
// stored-hash index StoredHashCount(t.size)) and the tree they make.
func (t tree) extend(leaves [][]byte) ([]xtlog.Hash, tree, error) {
	return t.extendWith(len(leaves), func(i int, buf []byte) []byte { return append(buf, leaves[i]...) })
}

// extendRecords is extend for the leaves of recs, encoded into one buffer
// (the writer's path: no allocation per record).
func (t tree) extendRecords(recs []Record) ([]xtlog.Hash, tree, error) {
	return t.extendWith(len(recs), func(i int, buf []byte) []byte { return appendLeaf(buf, &recs[i]) })
}

// extendWith extends t with n leaves, leaf i appended to a buffer by leaf.
// As xtlog.StoredHashes computes them: a leaf's hash, then, for each
// complete subtree the leaf completes (each trailing one bit of its index),
// the hash of that subtree, from the right edge; but without reading them
// back.
func (t tree) extendWith(n int, leaf func(i int, buf []byte) []byte) ([]xtlog.Hash, tree, error) {
	if len(t.edge) != bits.OnesCount64(uint64(t.size)) {
		return nil, tree{}, fmt.Errorf("audit: the tree's right edge has %d hashes for %d records", len(t.edge), t.size)
	}
	next := tree{valid: true, size: t.size, edge: slices.Clone(t.edge)}
	out := make([]xtlog.Hash, 0, 2*n)
	buf := make([]byte, 0, 512)
	for i := range n {
		// RFC 6962: a leaf's hash is SHA-256(0x00 ‖ leaf) (as
		// xtlog.RecordHash, without its allocations: this runs in the
		// writer for every record).
		buf = leaf(i, append(buf[:0], 0))
		out = next.push(sha256.Sum256(buf), out)
	}
	return out, next, nil
}

// push adds the leaf whose hash is h to t, in place, and appends the stored
// hashes it makes to out: the leaf's, then, for each complete subtree the
// leaf completes (each trailing one bit of its index), the hash of that
// subtree, SHA-256(0x01 ‖ left ‖ right), from the right edge (as
// xtlog.StoredHashes computes them, without reading them back).
func (t *tree) push(h xtlog.Hash, out []xtlog.Hash) []xtlog.Hash {
	out = append(out, h)
	for range bits.TrailingZeros64(^uint64(t.size)) {
		var node [1 + 2*len(xtlog.Hash{})]byte
		node[0] = 1
		copy(node[1:], t.edge[len(t.edge)-1][:])
		copy(node[1+len(xtlog.Hash{}):], h[:])
		h = sha256.Sum256(node[:])
		t.edge = t.edge[:len(t.edge)-1]
		out = append(out, h)
	}
	t.edge = append(t.edge, h)
	t.size++
	return out
}

// queryer is what the tree's reads need: a pool or a transaction.
type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// pgHashes reads stored hashes from issuance_log_tree, whose rows hold the
// hashes from first_idx on, concatenated: each index is found in the row
// that starts at or before it, in one query for all of them.
type pgHashes struct {
	ctx context.Context
	q   queryer
}

// readHashesSQL returns, for each index asked, the 32 bytes at its place in
// the row that holds it (no row when none does).
const readHashesSQL = `SELECT i, substring(t.hashes FROM ((i - t.first_idx) * 32 + 1)::integer FOR 32)
	FROM unnest($1::bigint[]) i
	CROSS JOIN LATERAL (SELECT first_idx, hashes FROM issuance_log_tree WHERE first_idx <= i
		ORDER BY first_idx DESC LIMIT 1) t
	WHERE i < t.first_idx + length(t.hashes) / 32`

func (r pgHashes) ReadHashes(indexes []int64) ([]xtlog.Hash, error) {
	rows, err := r.q.Query(r.ctx, readHashesSQL, indexes)
	if err != nil {
		return nil, err
	}
	got := map[int64]xtlog.Hash{}
	for rows.Next() {
		var idx int64
		var b []byte
		if err := rows.Scan(&idx, &b); err != nil {
			rows.Close()
			return nil, err
		}
		if len(b) != len(xtlog.Hash{}) {
			rows.Close()
			return nil, fmt.Errorf("audit: tree hash %d is malformed", idx)
		}
		got[idx] = xtlog.Hash(b)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return mapReader(got).ReadHashes(indexes)
}

// concat joins hashes into one value, as issuance_log_tree stores them.
func concat(hashes []xtlog.Hash) []byte {
	b := make([]byte, 0, len(hashes)*len(xtlog.Hash{}))
	for i := range hashes {
		b = append(b, hashes[i][:]...)
	}
	return b
}

// storedTreeSize is how many records the stored hashes cover.
func storedTreeSize(ctx context.Context, q queryer) (int64, error) {
	var next int64
	if err := q.QueryRow(ctx, "SELECT issuance_log_tree_next()").Scan(&next); err != nil {
		return 0, err
	}
	return treeSizeOf(next)
}

// treeSizeOf is the number of records whose stored hashes number count.
func treeSizeOf(count int64) (int64, error) {
	n := sort.Search(int(min(count, 1<<62)), func(n int) bool { return xtlog.StoredHashCount(int64(n)) >= count })
	if xtlog.StoredHashCount(int64(n)) != count {
		return 0, fmt.Errorf("audit: the tree's stored hashes end in the middle of a record (%d hashes); run `broker audit verify`", count)
	}
	return int64(n), nil
}

// loadTree reads the right edge of the tree of size n from the database.
func loadTree(ctx context.Context, q queryer, n int64) (tree, error) {
	idx := edgeIndexes(n)
	if len(idx) == 0 {
		return tree{valid: true}, nil
	}
	hs, err := pgHashes{ctx, q}.ReadHashes(idx)
	if err != nil {
		return tree{}, fmt.Errorf("reading the tree's right edge: %w", err)
	}
	return tree{valid: true, size: n, edge: hs}, nil
}

// treeChunk is how many records one catch-up statement covers.
const treeChunk = 2000

// BuildTree makes the stored hashes cover every record up to the chain's
// head (authenticated with the audit keys, so that a row added behind the
// chain's back is never taken into the tree): it reads the records the tree
// does not cover yet (all of them in a log from before the tree, those the
// previous release appended during a rolling upgrade), in seq order and in
// chunks, and stores their hashes, each chunk under the chain lock and only
// if it continues the stored hashes (issuance_log_tree_extend), so that it
// is resumable and safe beside writers. progress, when not nil, is called
// after each chunk with the records covered and the number to cover.
func (l *Postgres) BuildTree(ctx context.Context, progress func(covered, total int64)) error {
	var (
		seq       *int64
		hash, mac []byte
		keyID     *string
	)
	err := l.pool.QueryRow(ctx, `SELECT h.seq, h.hash, h.mac, h.key_id FROM (SELECT 1) one
		LEFT JOIN issuance_log_head h ON true`).Scan(&seq, &hash, &mac, &keyID)
	if err != nil {
		return fmt.Errorf("audit: reading the chain head: %w", err)
	}
	var hasRecords bool
	if err := l.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM issuance_log_record)").Scan(&hasRecords); err != nil {
		return fmt.Errorf("audit: reading the log: %w", err)
	}
	h, err := l.authenticate(seq, hash, mac, keyID, hasRecords)
	if err != nil {
		return err
	}
	total := h.seq
	for {
		size, err := storedTreeSize(ctx, l.pool)
		if err != nil {
			return err
		}
		if size >= total {
			if progress != nil {
				progress(min(size, total), total)
			}
			return nil
		}
		if err := l.buildChunk(ctx, size, total); err != nil {
			return err
		}
		if progress != nil {
			progress(min(size+treeChunk, total), total)
		}
	}
}

// buildChunk stores the hashes of up to treeChunk records after the first
// size, and none after record upTo. Each record must match its hash-chain
// link under the audit keys: the tree never vouches for a row edited behind
// the chain's back.
func (l *Postgres) buildChunk(ctx context.Context, size, upTo int64) error {
	pool := l.pool
	t, err := loadTree(ctx, pool, size)
	if err != nil {
		return err
	}
	recs, err := l.readRecords(ctx, pool, "SELECT "+recordColumns+" FROM issuance_log_record r WHERE r.seq > $1 AND r.seq <= $3 ORDER BY r.seq LIMIT $2", size, treeChunk, upTo)
	if err != nil {
		return fmt.Errorf("audit: reading records for the tree: %w", err)
	}
	var leaves [][]byte
	want := size + 1
	v := newVerifier(l.keys, head{})
	for _, s := range recs {
		if s.Seq != want {
			return fmt.Errorf("audit: record %d is missing, so the tree cannot cover it; run `broker audit verify`", want)
		}
		if authentic, known := v.check(&s); !authentic || !known {
			return fmt.Errorf("audit: record %d does not match its hash-chain link, so the tree will not cover it; run `broker audit verify`", s.Seq)
		}
		want++
		leaves = append(leaves, Leaf(&s.Record))
	}
	if len(leaves) == 0 {
		return fmt.Errorf("audit: record %d is missing, so the tree cannot cover it; run `broker audit verify`", want)
	}
	hashes, _, err := t.extend(leaves)
	if err != nil {
		return err
	}
	var next int64
	if err := pool.QueryRow(ctx, "SELECT next_idx FROM issuance_log_tree_extend($1, $2)", xtlog.StoredHashCount(size), concat(hashes)).Scan(&next); err != nil {
		return fmt.Errorf("audit: storing tree hashes: %w", err)
	}
	if next < xtlog.StoredHashCount(size) {
		return errors.New("audit: the tree shrank while it was being built; run `broker audit verify`")
	}
	return nil
}

// MaxLeaves bounds how many leaves one Leaves call returns (a tile's worth).
const MaxLeaves = 256

// TreeSize implements Log: how many records the stored tree hashes cover.
func (l *Postgres) TreeSize(ctx context.Context) (int64, error) {
	n, err := storedTreeSize(ctx, l.reads)
	if err != nil {
		return 0, readFailed(err, "tree size")
	}
	return n, nil
}

// TreeHashes implements Log.
func (l *Postgres) TreeHashes(ctx context.Context, indexes []int64) ([]xtlog.Hash, error) {
	release, err := l.readSlot()
	if err != nil {
		return nil, err
	}
	defer release()
	hs, err := pgHashes{ctx, l.reads}.ReadHashes(indexes)
	if err != nil {
		return nil, readFailed(err, "tree hashes")
	}
	return hs, nil
}

// Leaves implements Log.
func (l *Postgres) Leaves(ctx context.Context, start, end int64) ([][]byte, error) {
	if start < 0 || end < start || end-start > MaxLeaves {
		return nil, apperr.Field("leaves", "want 0 to %d leaves from a non-negative index", MaxLeaves)
	}
	if end == start {
		return [][]byte{}, nil
	}
	release, err := l.readSlot()
	if err != nil {
		return nil, err
	}
	defer release()
	d, err := l.redactionFor(ctx)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	err = l.walk(ctx, "leaves", "r.seq > $1", []any{start}, int(end-start), end, nil, func(s storedRecord) error {
		if d != nil && d.covers(&s.Record) {
			return errRedacted(s.Seq)
		}
		if s.Seq != start+int64(len(out))+1 {
			return apperr.New(apperr.Internal, "record %d is missing; run `broker audit verify`", start+int64(len(out))+1)
		}
		out = append(out, Leaf(&s.Record))
		return nil
	})
	if err != nil {
		return nil, err
	}
	if int64(len(out)) != end-start {
		return nil, apperr.New(apperr.NotFound, "the log has fewer than %d records", end)
	}
	return out, nil
}

// TreeSize implements Log.
func (m *Memory) TreeSize(ctx context.Context) (int64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	n, err := treeSizeOf(int64(len(m.hashes)))
	if err != nil {
		return 0, apperr.Wrap(apperr.Internal, err, "the tree is broken")
	}
	return n, nil
}

// TreeHashes implements Log.
func (m *Memory) TreeHashes(ctx context.Context, indexes []int64) ([]xtlog.Hash, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	hs, err := memoryHashes{m}.ReadHashes(indexes)
	if err != nil {
		return nil, apperr.Wrap(apperr.NotFound, err, "no such tree hash")
	}
	return hs, nil
}

// Leaves implements Log.
func (m *Memory) Leaves(ctx context.Context, start, end int64) ([][]byte, error) {
	if start < 0 || end < start || end-start > MaxLeaves {
		return nil, apperr.Field("leaves", "want 0 to %d leaves from a non-negative index", MaxLeaves)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if end > int64(len(m.records)) {
		return nil, apperr.New(apperr.NotFound, "the log has fewer than %d records", end)
	}
	out := make([][]byte, 0, end-start)
	for i := start; i < end; i++ {
		if m.redaction.keyID != "" && m.redaction.covers(&m.records[i]) {
			return nil, errRedacted(m.records[i].Seq)
		}
		out = append(out, Leaf(&m.records[i]))
	}
	return out, nil
}

// memoryHashes reads Memory's stored hashes; the caller holds m.mu.
type memoryHashes struct{ m *Memory }

func (r memoryHashes) ReadHashes(indexes []int64) ([]xtlog.Hash, error) {
	out := make([]xtlog.Hash, len(indexes))
	for i, idx := range indexes {
		if idx < 0 || idx >= int64(len(r.m.hashes)) {
			return nil, fmt.Errorf("audit: no tree hash %d", idx)
		}
		out[i] = r.m.hashes[idx]
	}
	return out, nil
}
