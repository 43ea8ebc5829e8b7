package audit

import (
	"crypto/hmac"
	"fmt"
)

// MaxProblems caps Report.Problems; Verify still counts every record.
const MaxProblems = 100

// head is the stored chain head: the last committed seq, its hash, and a MAC
// over both under the chain key.
type head struct {
	present bool
	seq     int64
	hash    Hash
	mac     Hash
}

// storedRecord is a record as read back for verification. malformed is set
// when a stored hash is not exactly 32 bytes.
type storedRecord struct {
	Record
	malformed bool
}

// verifier checks a chain streamed to it in seq order. It holds back at most
// one record: a record whose hash does not match is classified by how the next
// record links to it (still linked: modified; skipped over: inserted).
type verifier struct {
	keys   keys
	head   head
	prev   Hash  // hash the next record must link to
	next   int64 // seq the next record must have
	report Report
	held   *storedRecord
}

func newVerifier(k keys, h head) *verifier {
	return &verifier{keys: k, head: h, next: 1, report: Report{Problems: []Problem{}}}
}

func (v *verifier) problem(seq int64, kind, format string, args ...any) {
	if n := len(v.report.Problems); n > 0 && v.report.Problems[n-1].Seq == seq && v.report.Problems[n-1].Kind == kind {
		return // one report per record and kind
	}
	if len(v.report.Problems) < MaxProblems {
		v.report.Problems = append(v.report.Problems, Problem{Seq: seq, Kind: kind, Detail: fmt.Sprintf(format, args...)})
	}
}

func (v *verifier) authentic(r *storedRecord) bool {
	if r.malformed {
		return false
	}
	want := v.keys.recordHash(&r.Record)
	return hmac.Equal(want[:], r.Hash[:])
}

// add takes the next record in seq order.
func (v *verifier) add(r storedRecord) {
	v.report.Records++
	if v.held != nil {
		v.resolve(v.held, &r)
		v.held = nil
	}
	if !v.authentic(&r) {
		v.held = &r
		return
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
	case after != nil && after.PrevHash == v.prev && after.PrevHash != r.Hash:
		v.problem(r.Seq, ProblemInserted, "record %d is not part of the chain (record %d links past it)", r.Seq, after.Seq)
		return
	}
	if r.Seq > v.next {
		v.problem(v.next, ProblemDeleted, "records %d to %d are missing before record %d", v.next, r.Seq-1, r.Seq)
	}
	v.problem(r.Seq, ProblemModified, "record %d does not match its hash", r.Seq)
	v.prev, v.next = r.Hash, r.Seq+1
	if after != nil && after.PrevHash != r.Hash {
		// The stored hash was altered too; judge the next record by its seq only.
		v.prev = after.PrevHash
	}
}

// finish checks the end of the chain against the head and returns the report.
func (v *verifier) finish() Report {
	if v.held != nil {
		v.resolve(v.held, nil)
		v.held = nil
	}
	last := v.next - 1
	mac := v.keys.headMAC(v.head.seq, v.head.hash)
	switch {
	case !v.head.present && v.report.Records > 0:
		v.problem(last, ProblemDeleted, "the chain head is missing")
	case !v.head.present:
	case !hmac.Equal(v.head.mac[:], mac[:]):
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
