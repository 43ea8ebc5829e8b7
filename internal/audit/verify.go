package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"math/bits"
	"runtime"
	"sort"
	"sync"

	xtlog "golang.org/x/mod/sumdb/tlog"
)

// MaxProblems caps Report.Problems; Verify still counts every record.
const MaxProblems = 100

// storedRecord is a record as read back for verification. malformed is set
// when a stored hash is not exactly 32 bytes.
type storedRecord struct {
	Record
	malformed bool
	// checked is the outcome of the record's hash check when precheck
	// made it: 1 it matches, -1 it does not, 0 not made.
	checked int8
	// leaf is the hash of the record's leaf, when precheck made it.
	leaf    xtlog.Hash
	hasLeaf bool
}

// precheck makes the checks of rs that need no other record, on every CPU:
// each record's hash under the key its key id names, and its leaf's hash.
// The verifier then only follows the chain.
func precheck(keys keyring, rs []storedRecord) {
	workers := min(runtime.GOMAXPROCS(0), max(1, len(rs)/64))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			buf := make([]byte, 0, 512)
			macs := map[string]hash.Hash{} // recordHash's, one per key, reused
			var want Hash
			for i := w; i < len(rs); i += workers {
				r := &rs[i]
				if k, ok := keys.byID(r.KeyID); ok && r.KeyID != "" && !r.malformed {
					m := macs[r.KeyID]
					if m == nil {
						m = hmac.New(sha256.New, k.chain)
						macs[r.KeyID] = m
					}
					m.Reset()
					m.Write(r.PrevHash[:])
					buf = appendCanonical(buf[:0], &r.Record)
					m.Write(buf)
					m.Sum(want[:0])
					r.checked = -1
					if hmac.Equal(want[:], r.Hash[:]) {
						r.checked = 1
					}
				}
				buf = appendLeaf(append(buf[:0], 0), &r.Record)
				r.leaf, r.hasLeaf = sha256.Sum256(buf), true
			}
		})
	}
	wg.Wait()
}

// verifier checks a chain streamed to it in seq order. It holds back at most
// one record: a record whose hash does not match is classified by how the next
// record links to it (still linked: modified; skipped over: inserted). A
// record whose key id names no configured key cannot be checked: it is
// reported as such and trusted only for how the chain links through it.
type verifier struct {
	keys   keyring
	head   head
	prev   Hash  // hash the next record must link to
	next   int64 // seq the next record must have
	report Report
	held   *storedRecord

	legacy  int            // index in keys.all of the key that last matched a record without key id
	unknown *unknownKeyRun // the run of records under an unknown key that the last record extended

	// redaction, when authenticated (useRedaction), covers the records
	// whose personal fields retention dropped: their hashes cannot match,
	// and the chain links through them.
	redaction *redaction
}

// unknownKeyRun is consecutive records under one unknown key id, reported as one problem.
type unknownKeyRun struct {
	keyID       string
	first, last int64
	problem     int // index in report.Problems; -1 when the list was full
}

func newVerifier(k keyring, h head) *verifier {
	return &verifier{keys: k, head: h, next: 1, report: Report{Problems: []Problem{}}}
}

// startAfter makes v check the records after from, the first of them
// linked to prev (record from's hash): an incremental verification.
func (v *verifier) startAfter(from int64, prev Hash) {
	v.next, v.prev, v.report.From = from+1, prev, from
}

// problem records a problem and returns its index in the report, or -1 when it
// was not listed (a repeat, or the list is full).
func (v *verifier) problem(seq int64, kind, format string, args ...any) int {
	if n := len(v.report.Problems); n > 0 && v.report.Problems[n-1].Seq == seq && v.report.Problems[n-1].Kind == kind {
		return -1 // one report per record and kind
	}
	if len(v.report.Problems) < MaxProblems {
		v.report.Problems = append(v.report.Problems, Problem{Seq: seq, Kind: kind, Detail: fmt.Sprintf(format, args...)})
		return len(v.report.Problems) - 1
	}
	return -1
}

// check reports whether r's hash matches under the key its key id names (for
// a record without key id: under any configured key, the last one that
// matched first), and whether that key is configured at all.
func (v *verifier) check(r *storedRecord) (authentic, known bool) {
	if r.malformed {
		return false, true
	}
	if r.checked != 0 {
		return r.checked > 0, true
	}
	if r.KeyID != "" {
		k, ok := v.keys.byID(r.KeyID)
		if !ok {
			return false, false
		}
		want := k.recordHash(&r.Record)
		return hmac.Equal(want[:], r.Hash[:]), true
	}
	n := len(v.keys.all)
	for i := range n {
		j := (v.legacy + i) % n
		if want := v.keys.all[j].recordHash(&r.Record); hmac.Equal(want[:], r.Hash[:]) {
			v.legacy = j
			return true, true
		}
	}
	return false, true
}

// unknownKey reports r, whose key id names no configured key, extending the
// problem of the run it continues.
func (v *verifier) unknownKey(r *storedRecord) {
	if u := v.unknown; u != nil && u.keyID == r.KeyID && u.last == r.Seq-1 {
		u.last = r.Seq
		if u.problem >= 0 {
			v.report.Problems[u.problem].Detail = fmt.Sprintf("records %d to %d were linked with key id %s, which is not configured", u.first, u.last, u.keyID)
		}
		return
	}
	i := v.problem(r.Seq, ProblemUnknownKey, "record %d was linked with key id %s, which is not configured", r.Seq, r.KeyID)
	v.unknown = &unknownKeyRun{keyID: r.KeyID, first: r.Seq, last: r.Seq, problem: i}
}

// add takes the next record in seq order.
func (v *verifier) add(r storedRecord) {
	v.report.Records++
	if v.held != nil {
		v.resolve(v.held, &r)
		v.held = nil
	}
	authentic, known := v.check(&r)
	if !authentic && known && v.redaction != nil && v.redaction.covers(&r.Record) {
		authentic = true
		v.report.Redacted++
	}
	if !known {
		v.unknownKey(&r)
	} else {
		v.unknown = nil
		if !authentic {
			v.held = &r
			return
		}
	}
	switch {
	case r.Seq < v.next:
		v.problem(r.Seq, ProblemInserted, "record %d is out of sequence (expected %d or later)", r.Seq, v.next)
		return
	case r.Seq > v.next:
		v.problem(v.next, ProblemDeleted, "records %d to %d are missing before record %d", v.next, r.Seq-1, r.Seq)
	case r.PrevHash != v.prev:
		v.problem(r.Seq, ProblemDeleted, "record %d does not link to the record before it (prev_hash mismatch)", r.Seq)
	}
	v.prev, v.next = r.Hash, r.Seq+1
}

// resolve classifies a record whose hash does not match, given the record after it (nil at the end).
func (v *verifier) resolve(r, after *storedRecord) {
	switch {
	case r.Seq < v.next || v.head.present && r.Seq > v.head.seq:
		v.problem(r.Seq, ProblemInserted, "record %d is not part of the chain (outside the committed range)", r.Seq)
		return
	case after != nil && v.linksPast(r, after):
		v.problem(r.Seq, ProblemInserted, "record %d is not part of the chain (record %d links past it)", r.Seq, after.Seq)
		return
	}
	if r.Seq > v.next {
		v.problem(v.next, ProblemDeleted, "records %d to %d are missing before record %d", v.next, r.Seq-1, r.Seq)
		if r.PrevHash == (Hash{}) {
			// Its prev_hash is derived from the missing record: it cannot
			// be checked, only linked through.
			v.prev, v.next = r.Hash, r.Seq+1
			return
		}
	}
	if r.KeyID == "" && !r.malformed && len(v.keys.all) > 1 {
		v.problem(r.Seq, ProblemModified, "record %d does not match its hash under any configured key (it has no key id: written before key ids)", r.Seq)
	} else {
		v.problem(r.Seq, ProblemModified, "record %d does not match its hash", r.Seq)
	}
	v.prev, v.next = r.Hash, r.Seq+1
	if after != nil && after.PrevHash != r.Hash {
		// The stored hash was altered too; judge the next record by its seq only.
		v.prev = after.PrevHash
	}
}

// linksPast reports whether after, the record following r (whose hash does
// not match), links to the record before r: by a stored prev_hash that skips
// r, or by matching its hash as the record in r's place (renumbered to make
// room for r). A log that derives prev_hash from the record before shows
// only the latter.
func (v *verifier) linksPast(r, after *storedRecord) bool {
	if after.PrevHash == v.prev && after.PrevHash != r.Hash {
		return true
	}
	moved := *after
	moved.Seq, moved.PrevHash, moved.checked = r.Seq, v.prev, 0
	authentic, _ := v.check(&moved)
	return authentic
}

// flushHeld classifies the record held back, if any, as the last one.
func (v *verifier) flushHeld() {
	if v.held != nil {
		v.resolve(v.held, nil)
		v.held = nil
	}
}

// finish checks the end of the chain against the head and returns the report.
func (v *verifier) finish() Report {
	v.flushHeld()
	last := v.next - 1
	var err error
	if v.head.present {
		err = v.keys.checkHead(v.head)
	}
	switch {
	case !v.head.present && v.report.Records > 0:
		v.problem(last, ProblemDeleted, "the chain head is missing")
	case !v.head.present:
	case errors.Is(err, errUnknownKey):
		v.problem(v.head.seq, ProblemUnknownKey, "the chain head was MACed with key id %s, which is not configured", v.head.keyID)
	case err != nil:
		v.problem(v.head.seq, ProblemModified, "the chain head does not match its MAC")
	case last < v.head.seq:
		v.problem(last+1, ProblemDeleted, "records %d to %d are missing from the end of the log", last+1, v.head.seq)
	case last > v.head.seq:
		v.problem(v.head.seq, ProblemModified, "the chain head (seq %d) is behind the last record (seq %d)", v.head.seq, last)
	case v.head.hash != v.prev:
		v.problem(last, ProblemModified, "the chain head does not match record %d", last)
	}
	v.report.OK = len(v.report.Problems) == 0
	return v.report
}

// ProblemTree: the tree's stored hashes do not match the records (an edited
// stored hash, or records edited, removed or inserted under them).
const ProblemTree = "tree"

// treeCheck recomputes the tree over the records as they are stored and
// compares it with the stored hashes, a page at a time.
type treeCheck struct {
	stored  xtlog.HashReader
	t       tree
	indexes []int64
	want    []xtlog.Hash
	bad     bool // a mismatch was reported: one is enough
	err     error
}

func newTreeCheck(stored xtlog.HashReader) *treeCheck {
	return &treeCheck{stored: stored, t: tree{valid: true}}
}

// add extends the recomputed tree with r, the next stored record.
func (c *treeCheck) add(v *verifier, r *storedRecord) {
	if c.bad || c.err != nil {
		return
	}
	if len(c.t.edge) != bits.OnesCount64(uint64(c.t.size)) {
		c.err = fmt.Errorf("the tree's right edge has %d hashes for %d records", len(c.t.edge), c.t.size)
		return
	}
	leaf := r.leaf
	if !r.hasLeaf {
		leaf = xtlog.RecordHash(Leaf(&r.Record))
	}
	first, n := xtlog.StoredHashCount(c.t.size), len(c.want)
	c.want = c.t.push(leaf, c.want)
	for i := range len(c.want) - n {
		c.indexes = append(c.indexes, first+int64(i))
	}
	if len(c.indexes) >= 64*MaxLeaves { // one read of the stored hashes per 8,192 records
		c.flush(v, r.Seq)
	}
}

// flush compares the hashes recomputed since the last flush with the stored
// ones.
func (c *treeCheck) flush(v *verifier, seq int64) {
	if len(c.indexes) == 0 || c.bad || c.err != nil {
		return
	}
	got, err := c.stored.ReadHashes(c.indexes)
	if err != nil {
		v.problem(seq, ProblemTree, "the tree's stored hashes do not cover the records up to %d", seq)
		c.bad = true
		return
	}
	for i := range got {
		if got[i] != c.want[i] {
			// Stored hash idx was written with the record whose leaf index
			// is the largest n with StoredHashCount(n) <= idx.
			idx := c.indexes[i]
			n := sort.Search(int(idx)+1, func(n int) bool { return xtlog.StoredHashCount(int64(n)) > idx }) - 1
			v.problem(int64(n)+1, ProblemTree, "the tree's stored hash %d does not match the records as stored (record %d or one before it is not what the tree holds)", idx, n+1)
			c.bad = true
			return
		}
	}
	c.indexes, c.want = c.indexes[:0], c.want[:0]
}

// finish flushes the last page and checks that the stored tree covers no
// more records than there are.
func (c *treeCheck) finish(v *verifier, storedSize int64) {
	c.flush(v, v.next-1)
	if c.err != nil {
		v.problem(v.next-1, ProblemTree, "the tree could not be recomputed: %v", c.err)
	}
	if storedSize > c.t.size && !c.bad {
		v.problem(c.t.size+1, ProblemTree, "the tree covers %d records but the log holds %d", storedSize, c.t.size)
	}
	v.report.TreeSize = storedSize
}
