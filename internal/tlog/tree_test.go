package tlog

import (
	"crypto/sha256"
	"fmt"
	"testing"

	"golang.org/x/mod/sumdb/note"
	xtlog "golang.org/x/mod/sumdb/tlog"
)

// memTree is an in-memory log: the stored hashes of xtlog, in a slice.
type memTree struct {
	hashes []xtlog.Hash
	size   int64
}

func (m *memTree) ReadHashes(indexes []int64) ([]xtlog.Hash, error) {
	out := make([]xtlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(m.hashes)) {
			return nil, fmt.Errorf("no stored hash %d in a tree of %d entries", x, m.size)
		}
		out[i] = m.hashes[x]
	}
	return out, nil
}

func (m *memTree) add(tb testing.TB, entry []byte) {
	hs, err := xtlog.StoredHashes(m.size, entry, m)
	if err != nil {
		tb.Fatal(err)
	}
	m.hashes = append(m.hashes, hs...)
	m.size++
}

func (m *memTree) root(tb testing.TB, size int64) xtlog.Hash {
	h, err := xtlog.TreeHash(size, m)
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

func entry(i int64) []byte { return fmt.Appendf(nil, "entry %d", i) }

func newMemTree(tb testing.TB, size int64) *memTree {
	m := &memTree{hashes: make([]xtlog.Hash, 0, 2*size)}
	for i := range size {
		m.add(tb, entry(i))
	}
	return m
}

// mth is the RFC 6962 Merkle tree hash of the leaf hashes, computed
// directly, independently of xtlog's stored hashes.
func mth(leaves []xtlog.Hash) xtlog.Hash {
	switch len(leaves) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	l, r := mth(leaves[:k]), mth(leaves[k:])
	return sha256.Sum256(append(append([]byte{1}, l[:]...), r[:]...))
}

// tilesForSize lists the tiles of a tree of the given size as
// c2sp.org/tlog-tiles defines them: at level l, floor(s/256^(l+1)) full
// tiles and, when floor(s/256^l) mod 256 is not 0, one partial tile of that
// width; levels up to the first without tiles.
func tilesForSize(size int64) []xtlog.Tile {
	var tiles []xtlog.Tile
	for l, span := 0, int64(1); size/span > 0; l, span = l+1, span*TileWidth {
		full := size / span / TileWidth
		for n := range full {
			tiles = append(tiles, xtlog.Tile{H: TileHeight, L: l, N: n, W: TileWidth})
		}
		if w := size / span % TileWidth; w > 0 {
			tiles = append(tiles, xtlog.Tile{H: TileHeight, L: l, N: full, W: int(w)})
		}
	}
	return tiles
}

// testLog is a log key pair with its signer and verifiers.
type testLog struct {
	origin     string
	skey, vkey string
	signer     note.Signer
	verifier   note.Verifier
}

func newTestLog(tb testing.TB, origin string) testLog {
	tb.Helper()
	skey, vkey, err := GenerateKey(origin)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := NewSigner(skey)
	if err != nil {
		tb.Fatal(err)
	}
	v, err := NewVerifier(vkey)
	if err != nil {
		tb.Fatal(err)
	}
	return testLog{origin: origin, skey: skey, vkey: vkey, signer: s, verifier: v}
}

func (l testLog) verifiers() note.Verifiers { return note.VerifierList(l.verifier) }

func (l testLog) sign(tb testing.TB, c Checkpoint) []byte {
	tb.Helper()
	msg, err := SignCheckpoint(c, l.signer)
	if err != nil {
		tb.Fatal(err)
	}
	return msg
}

// checkpoint signs the checkpoint of m at size.
func (l testLog) checkpoint(tb testing.TB, m *memTree, size int64) (Checkpoint, []byte) {
	tb.Helper()
	c := Checkpoint{Origin: l.origin, Size: size, Root: m.root(tb, size)}
	return c, l.sign(tb, c)
}
