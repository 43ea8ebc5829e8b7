package tlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	xtlog "golang.org/x/mod/sumdb/tlog"
)

func b64(h xtlog.Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }

// prove returns the proof of entry i in the tree of m at size, with the
// checkpoint signed by l.
func prove(tb testing.TB, l testLog, m *memTree, size, i int64) Proof {
	tb.Helper()
	_, msg := l.checkpoint(tb, m, size)
	hashes, err := xtlog.ProveRecord(size, i, m)
	if err != nil {
		tb.Fatal(err)
	}
	return Proof{Index: i, Hashes: hashes, Checkpoint: msg}
}

func TestProofMarshal(t *testing.T) {
	log := newTestLog(t, "example.com/log")
	m := newMemTree(t, 5)
	p := prove(t, log, m, 5, 2)
	if len(p.Hashes) != 3 {
		t.Fatalf("%d hashes", len(p.Hashes))
	}
	want := "c2sp.org/tlog-proof@v1\nindex 2\n" + b64(p.Hashes[0]) + "\n" + b64(p.Hashes[1]) + "\n" + b64(p.Hashes[2]) + "\n\n" + string(p.Checkpoint)
	if got := string(p.Marshal()); got != want {
		t.Fatalf("Marshal() = %q, want %q", got, want)
	}
	p.Extra = []byte("context")
	want = "c2sp.org/tlog-proof@v1\nextra " + base64.StdEncoding.EncodeToString(p.Extra) + "\nindex 2\n" + want[len("c2sp.org/tlog-proof@v1\nindex 2\n"):]
	if got := string(p.Marshal()); got != want {
		t.Fatalf("Marshal() with extra = %q, want %q", got, want)
	}

	// Round trips, including a proof with no hashes (a tree of one entry).
	one := newMemTree(t, 1)
	for _, p := range []Proof{
		prove(t, log, m, 5, 0),
		prove(t, log, m, 5, 4),
		{Extra: []byte{0}, Index: 3, Hashes: prove(t, log, m, 4, 3).Hashes, Checkpoint: prove(t, log, m, 4, 3).Checkpoint},
		prove(t, log, one, 1, 0),
	} {
		b := p.Marshal()
		got, err := ParseProof(b)
		if err != nil {
			t.Fatalf("ParseProof(%q): %v", b, err)
		}
		if !reflect.DeepEqual(got, p) && !(len(p.Hashes) == 0 && len(got.Hashes) == 0) {
			t.Fatalf("ParseProof(%q) = %+v, want %+v", b, got, p)
		}
		if !bytes.Equal(got.Marshal(), b) {
			t.Fatalf("re-marshalled %q as %q", b, got.Marshal())
		}
	}
	if p := prove(t, log, one, 1, 0); !strings.Contains(string(p.Marshal()), "\nindex 0\n\nexample.com/log\n1\n") {
		t.Fatalf("proof with no hashes: %q", p.Marshal())
	}
}

// The example of c2sp.org/tlog-proof, with a real signature in place of the
// elided ones.
func TestProofSpecExample(t *testing.T) {
	const head = "c2sp.org/tlog-proof@v1\n" +
		"extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\n" +
		"index 73894\n" +
		"gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n" +
		"B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n" +
		"EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\n" +
		"RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\n" +
		"AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n" +
		"\n"
	const text = "example.com/fancylog\n109482\nsFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n"
	log := newTestLog(t, "example.com/fancylog")
	witness := newTestLog(t, "witness1.example")
	c, err := ParseCheckpoint(text)
	if err != nil {
		t.Fatal(err)
	}
	signed := log.sign(t, c)
	n, err := note.Open(signed, log.verifiers())
	if err != nil {
		t.Fatal(err)
	}
	cosigned, err := note.Sign(n, witness.signer)
	if err != nil {
		t.Fatal(err)
	}
	b := append([]byte(head), cosigned...)
	p, err := ParseProof(b)
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Extra) != "age-v1.2.1-darwin-arm64.tar.gz\x91\x85\xc9\xdd\xa5\xb8\xb5\x85\xc9" || p.Index != 73894 || len(p.Hashes) != 5 ||
		b64(p.Hashes[0]) != "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=" || b64(p.Hashes[4]) != "AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=" ||
		!bytes.Equal(p.Checkpoint, cosigned) {
		t.Fatalf("parsed %+v", p)
	}
	if !bytes.Equal(p.Marshal(), b) {
		t.Fatalf("re-marshalled as %q", p.Marshal())
	}
	// The example's hashes are illustrative: they do not prove anything.
	if _, err := VerifyProof(p, []byte("age-v1.2.1-darwin-arm64.tar.gz"), log.origin, log.verifiers()); err == nil {
		t.Fatal("the spec example's made-up proof verified")
	}
}

func TestParseProofStrict(t *testing.T) {
	log := newTestLog(t, "example.com/log")
	m := newMemTree(t, 5)
	p := prove(t, log, m, 5, 2)
	good := string(p.Marshal())
	cp := string(p.Checkpoint)
	h := []string{b64(p.Hashes[0]), b64(p.Hashes[1]), b64(p.Hashes[2])}
	hashes := h[0] + "\n" + h[1] + "\n" + h[2] + "\n"
	if _, err := ParseProof([]byte(good)); err != nil {
		t.Fatal(err)
	}
	big := Checkpoint{Origin: log.origin, Size: 1 << 62, Root: sha256.Sum256(nil)}
	bigCp := string(log.sign(t, big))
	for _, tc := range []struct{ name, proof string }{
		{"empty", ""},
		{"header only", "c2sp.org/tlog-proof@v1\n"},
		{"wrong header", "c2sp.org/tlog-proof@v2\nindex 2\n" + hashes + "\n" + cp},
		{"header without version", "c2sp.org/tlog-proof\nindex 2\n" + hashes + "\n" + cp},
		{"header with CR", "c2sp.org/tlog-proof@v1\r\nindex 2\n" + hashes + "\n" + cp},
		{"leading empty line", "\n" + good},
		{"missing index", "c2sp.org/tlog-proof@v1\n" + hashes + "\n" + cp},
		{"index without space", "c2sp.org/tlog-proof@v1\nindex2\n" + hashes + "\n" + cp},
		{"index with two spaces", "c2sp.org/tlog-proof@v1\nindex  2\n" + hashes + "\n" + cp},
		{"index leading zero", "c2sp.org/tlog-proof@v1\nindex 02\n" + hashes + "\n" + cp},
		{"index sign", "c2sp.org/tlog-proof@v1\nindex +2\n" + hashes + "\n" + cp},
		{"negative index", "c2sp.org/tlog-proof@v1\nindex -2\n" + hashes + "\n" + cp},
		{"empty index", "c2sp.org/tlog-proof@v1\nindex \n" + hashes + "\n" + cp},
		{"index overflow", "c2sp.org/tlog-proof@v1\nindex 9223372036854775808\n" + hashes + "\n" + cp},
		{"index at tree size", "c2sp.org/tlog-proof@v1\nindex 5\n" + hashes + "\n" + cp},
		{"index trailing space", "c2sp.org/tlog-proof@v1\nindex 2 \n" + hashes + "\n" + cp},
		{"extra after index", "c2sp.org/tlog-proof@v1\nindex 2\nextra AAAA\n" + hashes + "\n" + cp},
		{"two extra lines", "c2sp.org/tlog-proof@v1\nextra AAAA\nextra AAAA\nindex 2\n" + hashes + "\n" + cp},
		{"empty extra", "c2sp.org/tlog-proof@v1\nextra \nindex 2\n" + hashes + "\n" + cp},
		{"extra without data", "c2sp.org/tlog-proof@v1\nextra\nindex 2\n" + hashes + "\n" + cp},
		{"extra without space", "c2sp.org/tlog-proof@v1\nextraAAAA\nindex 2\n" + hashes + "\n" + cp},
		{"extra bad base64", "c2sp.org/tlog-proof@v1\nextra AAA\nindex 2\n" + hashes + "\n" + cp},
		{"extra non-canonical base64", "c2sp.org/tlog-proof@v1\nextra AB==\nindex 2\n" + hashes + "\n" + cp},
		{"extra unpadded", "c2sp.org/tlog-proof@v1\nextra AA\nindex 2\n" + hashes + "\n" + cp},
		{"hash bad base64", "c2sp.org/tlog-proof@v1\nindex 2\n" + h[0] + "\n*" + h[1][1:] + "\n" + h[2] + "\n\n" + cp},
		{"hash non-canonical", "c2sp.org/tlog-proof@v1\nindex 2\n" + h[0] + "\n" + h[1][:42] + "B=\n" + h[2] + "\n\n" + cp},
		{"hash unpadded", "c2sp.org/tlog-proof@v1\nindex 2\n" + h[0] + "\n" + strings.TrimSuffix(h[1], "=") + "\n" + h[2] + "\n\n" + cp},
		{"hash too short", "c2sp.org/tlog-proof@v1\nindex 2\n" + h[0] + "\n" + base64.StdEncoding.EncodeToString(make([]byte, 31)) + "\n\n" + cp},
		{"hash too long", "c2sp.org/tlog-proof@v1\nindex 2\n" + h[0] + "\n" + base64.StdEncoding.EncodeToString(make([]byte, 64)) + "\n\n" + cp},
		{"hash trailing space", "c2sp.org/tlog-proof@v1\nindex 2\n" + h[0] + " \n\n" + cp},
		{"hash with CR", "c2sp.org/tlog-proof@v1\nindex 2\n" + h[0] + "\r\n\n" + cp},
		{"64 hashes", "c2sp.org/tlog-proof@v1\nindex 2\n" + strings.Repeat(h[0]+"\n", 64) + "\n" + bigCp},
		{"no empty line", "c2sp.org/tlog-proof@v1\nindex 2\n" + hashes + cp},
		{"two empty lines", "c2sp.org/tlog-proof@v1\nindex 2\n" + hashes + "\n\n" + cp},
		{"missing checkpoint", "c2sp.org/tlog-proof@v1\nindex 2\n" + hashes + "\n"},
		{"unsigned checkpoint", "c2sp.org/tlog-proof@v1\nindex 2\n" + hashes + "\n" + Checkpoint{Origin: log.origin, Size: 5}.Text()},
		{"truncated checkpoint", good[:len(good)-1]},
		{"trailing newline", good + "\n"},
		{"trailing data", good + "x"},
		{"second proof appended", good + good},
		{"malformed checkpoint text", "c2sp.org/tlog-proof@v1\nindex 2\n" + hashes + "\n" + strings.Replace(cp, "\n5\n", "\n05\n", 1)},
		{"not UTF-8", "c2sp.org/tlog-proof@v1\nindex 2\n" + hashes + "\n" + strings.Replace(cp, "example.com/log\n", "example.com/\xfflog\n", 1)},
	} {
		if p, err := ParseProof([]byte(tc.proof)); err == nil {
			t.Errorf("%s: ParseProof(%q) = %+v", tc.name, tc.proof, p)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	// 63 hashes are accepted by the parser (and refused by verification).
	if _, err := ParseProof([]byte("c2sp.org/tlog-proof@v1\nindex 2\n" + strings.Repeat(h[0]+"\n", 63) + "\n" + bigCp)); err != nil {
		t.Fatalf("63 hashes: %v", err)
	}
}

func TestVerifyProof(t *testing.T) {
	log := newTestLog(t, "example.com/log")
	m := newMemTree(t, 1000)
	for _, size := range []int64{1, 2, 3, 7, 8, 9, 256, 257, 1000} {
		for _, i := range []int64{0, 1, size / 2, size - 2, size - 1} {
			if i < 0 || i >= size {
				continue
			}
			p := prove(t, log, m, size, i)
			parsed, err := ParseProof(p.Marshal())
			if err != nil {
				t.Fatal(err)
			}
			c, err := VerifyProof(parsed, entry(i), log.origin, log.verifiers())
			if err != nil {
				t.Fatalf("proof of %d in %d: %v", i, size, err)
			}
			if c.Size != size || c.Root != m.root(t, size) || c.Origin != log.origin {
				t.Fatalf("verified checkpoint %+v", c)
			}
			if !rfc9162VerifyInclusion(i, size, xtlog.RecordHash(entry(i)), p.Hashes, c.Root) {
				t.Fatalf("proof of %d in %d is not in RFC 9162 order", i, size)
			}
		}
	}

	const size, i = 1000, 617
	p := prove(t, log, m, size, i)
	if _, err := VerifyProof(p, entry(i), log.origin, log.verifiers()); err != nil {
		t.Fatal(err)
	}
	other := newTestLog(t, "example.com/other")
	sameName := newTestLog(t, log.origin)
	witness := newTestLog(t, "witness.example.com/w1")
	n, err := note.Open(p.Checkpoint, log.verifiers())
	if err != nil {
		t.Fatal(err)
	}
	cosigned, err := note.Sign(n, witness.signer)
	if err != nil {
		t.Fatal(err)
	}
	withCosig := p
	withCosig.Checkpoint = cosigned
	if _, err := VerifyProof(withCosig, entry(i), log.origin, log.verifiers()); err != nil {
		t.Fatalf("with an unknown witness cosignature: %v", err)
	}

	with := func(f func(*Proof)) Proof {
		q := p
		q.Hashes = append([]xtlog.Hash(nil), p.Hashes...)
		f(&q)
		return q
	}
	for _, tc := range []struct {
		name      string
		p         Proof
		leaf      []byte
		origin    string
		verifiers note.Verifiers
	}{
		{"different leaf", p, entry(i + 1), log.origin, log.verifiers()},
		{"empty leaf", p, nil, log.origin, log.verifiers()},
		{"leaf hash instead of leaf", p, func() []byte { h := xtlog.RecordHash(entry(i)); return h[:] }(), log.origin, log.verifiers()},
		{"different index", with(func(q *Proof) { q.Index++ }), entry(i), log.origin, log.verifiers()},
		{"sibling index", with(func(q *Proof) { q.Index ^= 1 }), entry(i), log.origin, log.verifiers()},
		{"negative index", with(func(q *Proof) { q.Index = -1 }), entry(i), log.origin, log.verifiers()},
		{"index at size", with(func(q *Proof) { q.Index = size }), entry(i), log.origin, log.verifiers()},
		{"tampered first hash", with(func(q *Proof) { q.Hashes[0][0] ^= 1 }), entry(i), log.origin, log.verifiers()},
		{"tampered last hash", with(func(q *Proof) { q.Hashes[len(q.Hashes)-1][31] ^= 0x80 }), entry(i), log.origin, log.verifiers()},
		{"dropped hash", with(func(q *Proof) { q.Hashes = q.Hashes[:len(q.Hashes)-1] }), entry(i), log.origin, log.verifiers()},
		{"extra hash", with(func(q *Proof) { q.Hashes = append(q.Hashes, q.Hashes[0]) }), entry(i), log.origin, log.verifiers()},
		{"swapped hashes", with(func(q *Proof) { q.Hashes[0], q.Hashes[1] = q.Hashes[1], q.Hashes[0] }), entry(i), log.origin, log.verifiers()},
		{"no hashes", with(func(q *Proof) { q.Hashes = nil }), entry(i), log.origin, log.verifiers()},
		{"checkpoint of another size", with(func(q *Proof) { _, q.Checkpoint = log.checkpoint(t, m, size-1) }), entry(i), log.origin, log.verifiers()},
		{"checkpoint with another root", with(func(q *Proof) {
			q.Checkpoint = log.sign(t, Checkpoint{Origin: log.origin, Size: size, Root: sha256.Sum256(nil)})
		}), entry(i), log.origin, log.verifiers()},
		{"another key with the log's name", p, entry(i), log.origin, sameName.verifiers()},
		{"another log's key", p, entry(i), log.origin, other.verifiers()},
		{"another origin", p, entry(i), other.origin, note.VerifierList(log.verifier, other.verifier)},
		{"checkpoint of another log", with(func(q *Proof) {
			q.Checkpoint = other.sign(t, Checkpoint{Origin: other.origin, Size: size, Root: m.root(t, size)})
		}), entry(i), log.origin, note.VerifierList(log.verifier, other.verifier)},
		{"no verifiers", p, entry(i), log.origin, nil},
		{"no checkpoint", with(func(q *Proof) { q.Checkpoint = nil }), entry(i), log.origin, log.verifiers()},
		{"tampered checkpoint", with(func(q *Proof) { q.Checkpoint = bytes.Replace(q.Checkpoint, []byte("\n1000\n"), []byte("\n1001\n"), 1) }), entry(i), log.origin, log.verifiers()},
	} {
		if c, err := VerifyProof(tc.p, tc.leaf, tc.origin, tc.verifiers); err == nil {
			t.Errorf("%s: verified %+v", tc.name, c)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
}

// rfc9162VerifyInclusion is the inclusion proof verification of RFC 9162,
// Section 2.1.3.2, written from the RFC, to check that proofs list hashes
// from the leaf's sibling up, as c2sp.org/tlog-proof requires.
func rfc9162VerifyInclusion(index, size int64, leaf xtlog.Hash, path []xtlog.Hash, root xtlog.Hash) bool {
	if index >= size {
		return false
	}
	fn, sn, r := index, size-1, leaf
	node := func(l, r xtlog.Hash) xtlog.Hash {
		return sha256.Sum256(append(append([]byte{1}, l[:]...), r[:]...))
	}
	for _, p := range path {
		if sn == 0 {
			return false
		}
		if fn&1 == 1 || fn == sn {
			r = node(p, r)
			if fn&1 == 0 {
				for fn&1 == 0 && fn != 0 {
					fn >>= 1
					sn >>= 1
				}
			}
		} else {
			r = node(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	return sn == 0 && r == root
}

func TestVerifyConsistency(t *testing.T) {
	log := newTestLog(t, "example.com/log")
	m := newMemTree(t, 300)
	cp := func(size int64) Checkpoint {
		return Checkpoint{Origin: log.origin, Size: size, Root: m.root(t, size)}
	}
	empty := cp(0)
	if empty.Root != sha256.Sum256(nil) {
		t.Fatalf("empty tree root %x", empty.Root)
	}
	for _, pair := range [][2]int64{{1, 1}, {1, 2}, {1, 300}, {3, 7}, {4, 8}, {7, 8}, {8, 9}, {100, 257}, {256, 257}, {255, 300}, {300, 300}} {
		oldSize, newSize := pair[0], pair[1]
		proof, err := xtlog.ProveTree(newSize, oldSize, m)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyConsistency(cp(oldSize), cp(newSize), proof); err != nil {
			t.Fatalf("%d → %d: %v", oldSize, newSize, err)
		}
		if len(proof) > 0 {
			bad := append(xtlog.TreeProof(nil), proof...)
			bad[len(bad)/2][3] ^= 1
			if err := VerifyConsistency(cp(oldSize), cp(newSize), bad); err == nil {
				t.Errorf("%d → %d: tampered proof verified", oldSize, newSize)
			}
			if err := VerifyConsistency(cp(oldSize), cp(newSize), proof[:len(proof)-1]); err == nil {
				t.Errorf("%d → %d: truncated proof verified", oldSize, newSize)
			}
		}
		if err := VerifyConsistency(cp(oldSize), cp(newSize), append(append(xtlog.TreeProof(nil), proof...), proof...)); err == nil && len(proof) > 0 {
			t.Errorf("%d → %d: doubled proof verified", oldSize, newSize)
		}
		forked := cp(newSize)
		forked.Root[0] ^= 1
		if err := VerifyConsistency(cp(oldSize), forked, proof); err == nil {
			t.Errorf("%d → %d: forked new root verified", oldSize, newSize)
		}
		if oldSize < newSize {
			if err := VerifyConsistency(cp(newSize), cp(oldSize), proof); err == nil {
				t.Errorf("%d → %d: swapped checkpoints verified", oldSize, newSize)
			}
		}
		otherLog := cp(newSize)
		otherLog.Origin = "example.com/other"
		if err := VerifyConsistency(cp(oldSize), otherLog, proof); err == nil {
			t.Errorf("%d → %d: checkpoints of two logs verified", oldSize, newSize)
		}
	}

	// From the empty tree.
	if err := VerifyConsistency(empty, cp(5), nil); err != nil {
		t.Fatal(err)
	}
	if err := VerifyConsistency(empty, empty, nil); err != nil {
		t.Fatal(err)
	}
	notEmpty := empty
	notEmpty.Root = xtlog.Hash{}
	if err := VerifyConsistency(notEmpty, cp(5), nil); err == nil {
		t.Error("empty tree with a zero root verified")
	}
	if err := VerifyConsistency(empty, notEmpty, nil); err == nil {
		t.Error("empty tree to an empty tree with a zero root verified")
	}
	if err := VerifyConsistency(empty, cp(5), xtlog.TreeProof{cp(5).Root}); err == nil {
		t.Error("proof from the empty tree with a hash verified")
	}
	neg := cp(5)
	neg.Size = -1
	if err := VerifyConsistency(neg, cp(5), nil); err == nil {
		t.Error("negative size verified")
	}
}

// BenchmarkVerifyProof measures offline verification of an inclusion proof
// in a tree of 2^20 entries (built once, in memory): opening the signed
// checkpoint (one Ed25519 verification) and checking the 20 proof hashes.
// InclusionOnly is the Merkle part alone; ParseAndVerify starts from the
// proof file's bytes.
func BenchmarkVerifyProof(b *testing.B) {
	const size = 1 << 20
	log := newTestLog(b, "example.com/log")
	m := newMemTree(b, size)
	const i = 777777
	p := prove(b, log, m, size, i)
	leaf := entry(i)
	verifiers := log.verifiers()
	c, err := VerifyProof(p, leaf, log.origin, verifiers)
	if err != nil {
		b.Fatal(err)
	}
	file := p.Marshal()
	b.ResetTimer()

	b.Run("VerifyProof", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := VerifyProof(p, leaf, log.origin, verifiers); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ParseAndVerify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			q, err := ParseProof(file)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := VerifyProof(q, leaf, log.origin, verifiers); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("InclusionOnly", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := xtlog.CheckRecord(p.Hashes, c.Size, c.Root, p.Index, xtlog.RecordHash(leaf)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
