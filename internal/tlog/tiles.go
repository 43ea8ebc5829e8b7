package tlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	xtlog "golang.org/x/mod/sumdb/tlog"
)

// c2sp.org/tlog-tiles parameters.
const (
	// TileHeight is the height of every tile: a full tile holds
	// 2^TileHeight hashes or entries.
	TileHeight = 8
	// TileWidth is the number of hashes in a full tile (8,192 bytes) and of
	// entries in a full entry bundle.
	TileWidth = 1 << TileHeight
	// EntryLevel is the level of an entry bundle ("tile/entries/..."),
	// x/mod's level for data tiles.
	EntryLevel = -1
	// MaxLevel is the highest hash tile level a path may name.
	MaxLevel = 63
	// MaxEntrySize is the largest entry an entry bundle can hold (its
	// length is a big-endian uint16).
	MaxEntrySize = math.MaxUint16
)

// checkTile reports whether t is a tile of this log: height 8, level -1
// (entry bundle) to 63, non-negative index, width 1 to 256.
func checkTile(t xtlog.Tile) error {
	switch {
	case t.H != TileHeight:
		return fmt.Errorf("tlog: tile height %d, want %d", t.H, TileHeight)
	case t.L < EntryLevel || t.L > MaxLevel:
		return fmt.Errorf("tlog: tile level %d out of range %d..%d", t.L, EntryLevel, MaxLevel)
	case t.N < 0:
		return fmt.Errorf("tlog: negative tile index %d", t.N)
	case t.W < 1 || t.W > TileWidth:
		return fmt.Errorf("tlog: tile width %d out of range 1..%d", t.W, TileWidth)
	}
	return nil
}

// TilePath returns the path of t relative to the log's prefix
// (c2sp.org/tlog-tiles, "Merkle Tree" and "Log entries"):
// "tile/<L>/<N>[.p/<W>]" for a hash tile, "tile/entries/<N>[.p/<W>]" for an
// entry bundle (level -1). <N> is written in zero-padded groups of three
// digits, all but the last prefixed with "x" (1234067 is x001/x234/067); the
// ".p/<W>" suffix marks a partial tile of width W < 256.
//
// t must be valid (height 8, level -1..63, index ≥ 0, width 1..256), as the
// tiles xtlog.NewTiles(TileHeight, ...) and ParseTilePath return: TilePath
// panics otherwise, since no path names such a tile.
func TilePath(t xtlog.Tile) string {
	if err := checkTile(t); err != nil {
		panic(err.Error())
	}
	var b strings.Builder
	b.WriteString("tile/")
	if t.L == EntryLevel {
		b.WriteString("entries")
	} else {
		b.WriteString(strconv.Itoa(t.L))
	}
	b.WriteByte('/')
	writeTileIndex(&b, t.N)
	if t.W < TileWidth {
		b.WriteString(".p/")
		b.WriteString(strconv.Itoa(t.W))
	}
	return b.String()
}

// writeTileIndex writes n ≥ 0 in groups of three digits, most significant
// first, each but the last prefixed with "x".
func writeTileIndex(b *strings.Builder, n int64) {
	var groups [7]int64 // math.MaxInt64 has 19 digits
	k := 0
	for {
		groups[k] = n % 1000
		k++
		n /= 1000
		if n == 0 {
			break
		}
	}
	for i := k - 1; i >= 0; i-- {
		if i > 0 {
			b.WriteByte('x')
		}
		g := groups[i]
		b.WriteByte(byte('0' + g/100))
		b.WriteByte(byte('0' + g/10%10))
		b.WriteByte(byte('0' + g%10))
		if i > 0 {
			b.WriteByte('/')
		}
	}
}

// ParseTilePath parses a tile path relative to the log's prefix, as TilePath
// writes it, and returns the tile with height 8; an entry bundle has level
// -1 and a full tile width 256. Only the canonical path is accepted: no
// leading zeroes in <L> or <W>, <L> in 0..63, <W> in 1..255, each group of
// <N> exactly three digits with "x" on all but the last, no leading group
// x000, <N> within int64, and nothing before "tile/" or after the index or
// width.
func ParseTilePath(path string) (xtlog.Tile, error) {
	t, err := parseTilePath(path)
	if err != nil {
		return xtlog.Tile{}, fmt.Errorf("tlog: tile path %q: %w", path, err)
	}
	return t, nil
}

func parseTilePath(path string) (xtlog.Tile, error) {
	parts := strings.Split(path, "/")
	if len(parts) < 3 || parts[0] != "tile" {
		return xtlog.Tile{}, errors.New(`want tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>]`)
	}
	t := xtlog.Tile{H: TileHeight, W: TileWidth}
	if parts[1] == "entries" {
		t.L = EntryLevel
	} else {
		l, err := parseDecimal(parts[1])
		if err != nil || l > MaxLevel {
			return xtlog.Tile{}, fmt.Errorf("level %q is not a decimal from 0 to %d without leading zeroes", parts[1], MaxLevel)
		}
		t.L = int(l)
	}
	index := parts[2:]
	if k := len(index); k >= 2 && strings.HasSuffix(index[k-2], ".p") {
		w, err := parseDecimal(index[k-1])
		if err != nil || w < 1 || w >= TileWidth {
			return xtlog.Tile{}, fmt.Errorf("partial width %q is not a decimal from 1 to %d without leading zeroes", index[k-1], TileWidth-1)
		}
		t.W = int(w)
		index = index[:k-1]
		index[k-2] = strings.TrimSuffix(index[k-2], ".p")
	}
	if len(index) > 7 {
		return xtlog.Tile{}, errors.New("index out of range")
	}
	var n int64
	for i, g := range index {
		last := i == len(index)-1
		if !last {
			if !strings.HasPrefix(g, "x") {
				return xtlog.Tile{}, fmt.Errorf("index element %q does not start with x", g)
			}
			g = g[1:]
			if i == 0 && g == "000" {
				return xtlog.Tile{}, errors.New("index has a leading x000 element")
			}
		}
		if len(g) != 3 || !isDigits(g) {
			return xtlog.Tile{}, fmt.Errorf("index element %q is not three digits", index[i])
		}
		d := int64(g[0]-'0')*100 + int64(g[1]-'0')*10 + int64(g[2]-'0')
		if n > (math.MaxInt64-d)/1000 {
			return xtlog.Tile{}, errors.New("index out of range")
		}
		n = n*1000 + d
	}
	t.N = n
	return t, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// HashTile returns the contents of hash tile t: the concatenation of its W
// hashes, read from r with xtlog.ReadTileData. At level 0 these are the leaf
// hashes of entries N*256 to N*256+W-1; at level l > 0, each is the Merkle
// tree hash of a full tile at level l-1 (c2sp.org/tlog-tiles, "Merkle
// Tree"). r must hold the hashes of a tree that covers the tile, as t comes
// from xtlog.NewTiles(TileHeight, ...) or a checked request.
func HashTile(t xtlog.Tile, r xtlog.HashReader) ([]byte, error) {
	if err := checkTile(t); err != nil {
		return nil, err
	}
	if t.L == EntryLevel {
		return nil, errors.New("tlog: an entry bundle is not a hash tile")
	}
	// The tile covers the entries up to (N*256+W) * 256^L, which must be a
	// possible tree size.
	shift := TileHeight * t.L
	if shift >= 63 || t.N > (math.MaxInt64>>shift-int64(t.W))/TileWidth {
		return nil, fmt.Errorf("tlog: tile %s lies beyond any tree size", TilePath(t))
	}
	data, err := xtlog.ReadTileData(t, r)
	if err != nil {
		return nil, fmt.Errorf("tlog: reading tile %s: %w", TilePath(t), err)
	}
	if len(data) != t.W*xtlog.HashSize {
		return nil, fmt.Errorf("tlog: tile %s has %d bytes, want %d", TilePath(t), len(data), t.W*xtlog.HashSize)
	}
	return data, nil
}

// EntryBundle encodes entries as an entry bundle (c2sp.org/tlog-tiles, "Log
// entries"): each entry as its length in two big-endian bytes followed by
// its bytes. A bundle holds 1 to 256 entries, each at most 65535 bytes.
func EntryBundle(entries [][]byte) ([]byte, error) {
	if len(entries) < 1 || len(entries) > TileWidth {
		return nil, fmt.Errorf("tlog: an entry bundle holds 1 to %d entries, not %d", TileWidth, len(entries))
	}
	size := 0
	for i, e := range entries {
		if len(e) > MaxEntrySize {
			return nil, fmt.Errorf("tlog: entry %d has %d bytes, more than the %d an entry bundle can hold", i, len(e), MaxEntrySize)
		}
		size += 2 + len(e)
	}
	b := make([]byte, 0, size)
	for _, e := range entries {
		b = binary.BigEndian.AppendUint16(b, uint16(len(e)))
		b = append(b, e...)
	}
	return b, nil
}

// ParseEntryBundle decodes an entry bundle written by EntryBundle: 1 to 256
// length-prefixed entries and nothing after the last one. The entries alias
// b (with their capacity capped, so appending to one copies it). The caller
// checks that their number is the bundle's width.
func ParseEntryBundle(b []byte) ([][]byte, error) {
	if len(b) == 0 {
		return nil, errors.New("tlog: empty entry bundle")
	}
	var entries [][]byte
	for off := 0; off < len(b); {
		if len(entries) == TileWidth {
			return nil, fmt.Errorf("tlog: entry bundle has data after its %d entries", TileWidth)
		}
		if len(b)-off < 2 {
			return nil, fmt.Errorf("tlog: entry bundle ends inside the length of entry %d", len(entries))
		}
		n := int(binary.BigEndian.Uint16(b[off:]))
		off += 2
		if len(b)-off < n {
			return nil, fmt.Errorf("tlog: entry bundle ends inside entry %d (%d of %d bytes)", len(entries), len(b)-off, n)
		}
		entries = append(entries, b[off:off+n:off+n])
		off += n
	}
	return entries, nil
}
