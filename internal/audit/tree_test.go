package audit

import (
	"fmt"
	"slices"
	"testing"

	xtlog "golang.org/x/mod/sumdb/tlog"
)

// The writer's stored hashes are xtlog.StoredHashes', batch after batch.
func TestTreeExtend_MatchesXtlog(t *testing.T) {
	var want []xtlog.Hash
	reader := xtlog.HashReaderFunc(func(idx []int64) ([]xtlog.Hash, error) {
		out := make([]xtlog.Hash, len(idx))
		for i, j := range idx {
			out[i] = want[j]
		}
		return out, nil
	})
	tr := tree{valid: true}
	n := int64(0)
	for batch := range 60 {
		var leaves [][]byte
		for i := range batch%7 + 1 {
			leaves = append(leaves, fmt.Appendf(nil, "leaf %d %d", batch, i))
		}
		got, next, err := tr.extend(leaves)
		if err != nil {
			t.Fatal(err)
		}
		for _, leaf := range leaves {
			hs, err := xtlog.StoredHashes(n, leaf, reader)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, hs...)
			n++
		}
		if !slices.Equal(got, want[len(want)-len(got):]) {
			t.Fatalf("batch %d: stored hashes differ from xtlog's", batch)
		}
		edge, err := reader.ReadHashes(edgeIndexes(n))
		if err != nil || !slices.Equal(next.edge, edge) || next.size != n {
			t.Fatalf("batch %d: right edge differs from the stored hashes' (%v)", batch, err)
		}
		tr = next
	}
}
