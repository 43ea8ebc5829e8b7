package tlog

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	xtlog "golang.org/x/mod/sumdb/tlog"
)

func tile(l int, n int64, w int) xtlog.Tile { return xtlog.Tile{H: TileHeight, L: l, N: n, W: w} }

func TestTilePath(t *testing.T) {
	for _, tc := range []struct {
		tile xtlog.Tile
		path string
	}{
		// c2sp.org/tlog-tiles, "Merkle Tree": index 1234067 is x001/x234/067.
		{tile(0, 1234067, 256), "tile/0/x001/x234/067"},
		{tile(1, 1234067, 256), "tile/1/x001/x234/067"},
		{tile(EntryLevel, 1234067, 256), "tile/entries/x001/x234/067"},
		{tile(0, 1234067, 8), "tile/0/x001/x234/067.p/8"},
		{tile(EntryLevel, 1234067, 255), "tile/entries/x001/x234/067.p/255"},
		{tile(0, 0, 256), "tile/0/000"},
		{tile(0, 0, 1), "tile/0/000.p/1"},
		{tile(EntryLevel, 0, 112), "tile/entries/000.p/112"},
		{tile(2, 7, 256), "tile/2/007"},
		{tile(63, 999, 256), "tile/63/999"},
		{tile(10, 1000, 256), "tile/10/x001/000"},
		{tile(0, 1000000, 256), "tile/0/x001/x000/000"},
		{tile(0, 999999, 99), "tile/0/x999/999.p/99"},
		{tile(0, math.MaxInt64, 256), "tile/0/x009/x223/x372/x036/x854/x775/807"},
	} {
		if got := TilePath(tc.tile); got != tc.path {
			t.Errorf("TilePath(%+v) = %q, want %q", tc.tile, got, tc.path)
		}
		got, err := ParseTilePath(tc.path)
		if err != nil || got != tc.tile {
			t.Errorf("ParseTilePath(%q) = %+v, %v, want %+v", tc.path, got, err, tc.tile)
		}
	}
	// Round trips over many indexes and widths.
	for _, n := range []int64{1, 9, 10, 99, 100, 999, 1001, 12345, 999999, 1000001, 1<<40 + 3} {
		for _, l := range []int{EntryLevel, 0, 1, 5} {
			for _, w := range []int{1, 10, 100, 255, 256} {
				tl := tile(l, n, w)
				got, err := ParseTilePath(TilePath(tl))
				if err != nil || got != tl {
					t.Fatalf("round trip of %+v via %q: %+v, %v", tl, TilePath(tl), got, err)
				}
			}
		}
	}
}

func TestTilePathPanics(t *testing.T) {
	for _, tl := range []xtlog.Tile{
		{H: 4, L: 0, N: 0, W: 16},
		tile(-2, 0, 256),
		tile(64, 0, 256),
		tile(0, -1, 256),
		tile(0, 0, 0),
		tile(0, 0, 257),
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("TilePath(%+v) did not panic", tl)
				}
			}()
			TilePath(tl)
		}()
	}
}

func TestParseTilePathStrict(t *testing.T) {
	for _, path := range []string{
		"",
		"tile",
		"tile/",
		"tile/0",
		"tile/0/",
		"/tile/0/000",       // leading slash
		"tiles/0/000",       // wrong first element
		"prefix/tile/0/000", // prefix not stripped
		"tile/0/000/",       // trailing slash
		"tile//000",         // empty level
		"tile/00/000",       // leading zero in level
		"tile/01/000",       // leading zero in level
		"tile/+1/000",       // sign
		"tile/-1/000",       // data tiles are tile/entries
		"tile/64/000",       // level out of range
		"tile/999999999999999999999/000",
		"tile/a/000",
		"tile/entry/000",   // misspelled
		"tile/Entries/000", // case
		"tile/0/0",         // index not three digits
		"tile/0/00",
		"tile/0/0000",
		"tile/0/1234",
		"tile/0/abc",
		"tile/0/-01",
		"tile/0/x000/001", // leading x000 group
		"tile/0/x000/x001/000",
		"tile/0/001/234",   // missing x
		"tile/0/x001/x234", // x on the last group
		"tile/0/x1/234",    // group not three digits
		"tile/0/x0001/234",
		"tile/0/X001/234",       // capital X
		"tile/0/x001/x234/067/", // trailing slash
		"tile/0/x009/x223/x372/x036/x854/x775/808", // beyond int64
		"tile/0/x001/x000/x000/x000/x000/x000/x000/000",
		"tile/0/000.p",     // partial without width
		"tile/0/000.p/",    // empty width
		"tile/0/000.p/0",   // width 0
		"tile/0/000.p/256", // a full tile is written without .p
		"tile/0/000.p/300",
		"tile/0/000.p/08", // leading zero in width
		"tile/0/000.p/+8",
		"tile/0/000.p/8/",  // trailing slash
		"tile/0/000.p/8/9", // extra element
		"tile/0/000.p/8.p/9",
		"tile/0/000.P/8", // case
		"tile/0/000.q/8",
		"tile/0/x000.p/8",
		"tile/0/x001.p/002/8", // .p on an inner group
		"tile/0/000.p.p/8",
		"tile/entries/000.p/256",
		"tile/entries/00",
		"tile/entries",
		"tile/entries/",
		"tile/0/000?x=1",
		"tile/0/000 ",
		"tile\\0\\000",
		"tile/0/０００", // full-width digits
	} {
		if tl, err := ParseTilePath(path); err == nil {
			t.Errorf("ParseTilePath(%q) = %+v", path, tl)
		} else {
			t.Log(err)
		}
	}
}

// c2sp.org/tlog-tiles, "Partial Tiles": a tree of size 70,000 is 273 full
// level 0 tiles, one partial level 0 tile of width 112, one full level 1
// tile, one partial level 1 tile of width 17, and one partial level 2 tile
// of width 1; a tree of size 256 is a full level 0 tile and a partial level
// 1 tile of width 1.
func TestTilesForSizeSpecExamples(t *testing.T) {
	count := func(tiles []xtlog.Tile) string {
		full, partial := map[int]int{}, map[int][]int{}
		for _, tl := range tiles {
			if tl.W == TileWidth {
				full[tl.L]++
			} else {
				partial[tl.L] = append(partial[tl.L], tl.W)
			}
		}
		return fmt.Sprint(full, partial)
	}
	for _, tc := range []struct {
		size int64
		want string
	}{
		{70000, fmt.Sprint(map[int]int{0: 273, 1: 1}, map[int][]int{0: {112}, 1: {17}, 2: {1}})},
		{256, fmt.Sprint(map[int]int{0: 1}, map[int][]int{1: {1}})},
		{1, fmt.Sprint(map[int]int{}, map[int][]int{0: {1}})},
		{0, fmt.Sprint(map[int]int{}, map[int][]int{})},
	} {
		tiles := tilesForSize(tc.size)
		if got := count(tiles); got != tc.want {
			t.Errorf("tiles for size %d: %s, want %s", tc.size, got, tc.want)
		}
		// x/mod computes the same set of tiles.
		x := xtlog.NewTiles(TileHeight, 0, tc.size)
		key := func(a, b xtlog.Tile) int { return strings.Compare(TilePath(a), TilePath(b)) }
		slices.SortFunc(tiles, key)
		slices.SortFunc(x, key)
		if !reflect.DeepEqual(tiles, x) && !(len(tiles) == 0 && len(x) == 0) {
			t.Errorf("tiles for size %d: spec formula %v, xtlog.NewTiles %v", tc.size, tiles, x)
		}
	}
}

func TestHashTile(t *testing.T) {
	const size = 256*256 + 300
	m := newMemTree(t, size)
	leaves := make([]xtlog.Hash, size)
	for i := range leaves {
		leaves[i] = xtlog.RecordHash(entry(int64(i)))
	}

	served := map[string][]byte{}
	tiles := xtlog.NewTiles(TileHeight, 0, size)
	for _, tl := range tiles {
		data, err := HashTile(tl, m)
		if err != nil {
			t.Fatal(err)
		}
		want, err := xtlog.ReadTileData(tl, m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, want) || len(data) != tl.W*32 {
			t.Fatalf("HashTile(%s) differs from xtlog.ReadTileData", TilePath(tl))
		}
		// c2sp.org/tlog-tiles: hash i of tile n at level l is
		// MTH(D[(n*256+i)*256^l : (n*256+i+1)*256^l]).
		span := int64(1) << (TileHeight * tl.L)
		for i := range tl.W {
			lo := (tl.N*TileWidth + int64(i)) * span
			if h := mth(leaves[lo : lo+span]); !bytes.Equal(data[i*32:(i+1)*32], h[:]) {
				t.Fatalf("hash %d of tile %s is not the tree hash of entries [%d, %d)", i, TilePath(tl), lo, lo+span)
			}
		}
		served[TilePath(tl)] = data
	}
	if len(served) != len(tilesForSize(size)) {
		t.Fatalf("served %d tiles, the spec lists %d", len(served), len(tilesForSize(size)))
	}

	// A client holding only the served tiles, fetched by path, proves and
	// checks records and the tree hash.
	root := m.root(t, size)
	tr := tileServer{t: t, tiles: served}
	r := xtlog.TileHashReader(xtlog.Tree{N: size, Hash: root}, tr)
	th, err := xtlog.TreeHash(size, r)
	if err != nil || th != root {
		t.Fatalf("tree hash from tiles: %x, %v, want %x", th, err, root)
	}
	for _, i := range []int64{0, 1, 255, 256, 65535, 65536, size - 1} {
		p, err := xtlog.ProveRecord(size, i, r)
		if err != nil {
			t.Fatal(err)
		}
		if err := xtlog.CheckRecord(p, size, root, i, leaves[i]); err != nil {
			t.Fatalf("record %d from tiles: %v", i, err)
		}
	}

	for _, tc := range []struct {
		name string
		tile xtlog.Tile
	}{
		{"entry bundle", tile(EntryLevel, 0, 256)},
		{"height 4", xtlog.Tile{H: 4, L: 0, N: 0, W: 16}},
		{"width 0", tile(0, 0, 0)},
		{"beyond the tree", tile(0, 300, 256)},
		{"partial beyond the tree", tile(0, 257, 45)},
		{"level beyond the tree", tile(3, 0, 1)},
		{"beyond any tree size", tile(7, 1, 1)},
		{"level 63", tile(63, 0, 1)},
		{"index beyond int64 at level 0", tile(0, math.MaxInt64/256, 256)},
	} {
		if data, err := HashTile(tc.tile, m); err == nil {
			t.Errorf("%s: HashTile returned %d bytes", tc.name, len(data))
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
}

// tileServer serves tiles by their path.
type tileServer struct {
	t     *testing.T
	tiles map[string][]byte
}

func (s tileServer) Height() int { return TileHeight }

func (s tileServer) ReadTiles(tiles []xtlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tl := range tiles {
		path := TilePath(tl)
		parsed, err := ParseTilePath(path)
		if err != nil || parsed != tl {
			s.t.Fatalf("path %q of %+v parses as %+v, %v", path, tl, parsed, err)
		}
		data, ok := s.tiles[path]
		if !ok {
			return nil, fmt.Errorf("no tile %s", path)
		}
		out[i] = data
	}
	return out, nil
}

func (s tileServer) SaveTiles([]xtlog.Tile, [][]byte) {}

func TestEntryBundle(t *testing.T) {
	for _, entries := range [][][]byte{
		{[]byte("one")},
		{{}},
		{[]byte("a"), {}, []byte("ccc"), bytes.Repeat([]byte{0xff}, MaxEntrySize)},
		func() [][]byte {
			var full [][]byte
			for i := range int64(TileWidth) {
				full = append(full, entry(i))
			}
			return full
		}(),
	} {
		b, err := EntryBundle(entries)
		if err != nil {
			t.Fatal(err)
		}
		size := 0
		for _, e := range entries {
			size += 2 + len(e)
		}
		if len(b) != size {
			t.Fatalf("bundle of %d bytes, want %d", len(b), size)
		}
		got, err := ParseEntryBundle(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(entries) {
			t.Fatalf("parsed %d entries, want %d", len(got), len(entries))
		}
		for i := range got {
			if !bytes.Equal(got[i], entries[i]) {
				t.Fatalf("entry %d differs", i)
			}
		}
		// Appending to a parsed entry does not overwrite the next one.
		if len(got) > 1 {
			_ = append(got[0], 'X', 'X', 'X')
			if again, _ := ParseEntryBundle(b); !reflect.DeepEqual(again, got) {
				t.Fatal("appending to an entry changed the bundle")
			}
		}
	}

	// The layout: big-endian uint16 lengths.
	b, err := EntryBundle([][]byte{[]byte("ab"), make([]byte, 0x0102)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte{0, 2, 'a', 'b', 1, 2, 0}) || len(b) != 2+2+2+0x0102 {
		t.Fatalf("bundle starts %x", b[:8])
	}

	for _, tc := range []struct {
		name    string
		entries [][]byte
	}{
		{"no entries", nil},
		{"entry too long", [][]byte{[]byte("ok"), make([]byte, MaxEntrySize+1)}},
		{"too many entries", make([][]byte, TileWidth+1)},
	} {
		if b, err := EntryBundle(tc.entries); err == nil {
			t.Errorf("%s: EntryBundle returned %d bytes", tc.name, len(b))
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}

	for _, tc := range []struct {
		name   string
		bundle []byte
	}{
		{"empty", nil},
		{"half a length", []byte{0}},
		{"truncated entry", []byte{0, 3, 'a', 'b'}},
		{"missing entry", []byte{0, 1}},
		{"trailing byte", []byte{0, 1, 'a', 0}},
		{"truncated second entry", []byte{0, 1, 'a', 0, 2, 'b'}},
		{"257 entries", make([]byte, 2*(TileWidth+1))},
	} {
		if entries, err := ParseEntryBundle(tc.bundle); err == nil {
			t.Errorf("%s: ParseEntryBundle returned %d entries", tc.name, len(entries))
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	if entries, err := ParseEntryBundle(make([]byte, 2*TileWidth)); err != nil || len(entries) != TileWidth {
		t.Fatalf("256 empty entries: %d, %v", len(entries), err)
	}
}

// Each entry of a bundle hashes to the hash at its place in the level 0 tile
// of the same index and width (c2sp.org/tlog-tiles, "Log entries").
func TestEntryBundleMatchesLevel0Tile(t *testing.T) {
	const size = 256 + 77
	m := newMemTree(t, size)
	for _, tl := range []xtlog.Tile{tile(0, 0, 256), tile(0, 1, 77), tile(0, 0, 10)} {
		var entries [][]byte
		for i := range int64(tl.W) {
			entries = append(entries, entry(tl.N*TileWidth+i))
		}
		b, err := EntryBundle(entries)
		if err != nil {
			t.Fatal(err)
		}
		bundleTile := tl
		bundleTile.L = EntryLevel
		if !strings.HasPrefix(TilePath(bundleTile), "tile/entries/") {
			t.Fatalf("bundle path %q", TilePath(bundleTile))
		}
		hashes, err := HashTile(tl, m)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := ParseEntryBundle(b)
		if err != nil || len(parsed) != tl.W {
			t.Fatalf("parsed %d entries, %v", len(parsed), err)
		}
		for i, e := range parsed {
			h, err := xtlog.HashFromTile(tl, hashes, xtlog.StoredHashIndex(0, tl.N*TileWidth+int64(i)))
			if err != nil {
				t.Fatal(err)
			}
			if h != xtlog.RecordHash(e) {
				t.Fatalf("entry %d of bundle %s does not hash to tile %s", i, TilePath(bundleTile), TilePath(tl))
			}
		}
	}
}
