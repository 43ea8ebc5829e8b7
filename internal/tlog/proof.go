package tlog

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	xtlog "golang.org/x/mod/sumdb/tlog"
)

// ProofHeader is the first line of a c2sp.org/tlog-proof.
const ProofHeader = "c2sp.org/tlog-proof@v1"

// maxProofHashes bounds an inclusion proof: a tree of at most 2^63-1 leaves
// has height 63.
const maxProofHashes = 63

// A Proof is an offline-verifiable proof that an entry is in the log, in the
// c2sp.org/tlog-proof format (file extension .tlog-proof).
type Proof struct {
	// Extra is optional opaque data for the application, carried
	// unauthenticated; nil (or empty) when absent.
	Extra []byte
	// Index is the zero-based index of the entry in the log.
	Index int64
	// Hashes is the RFC 6962 inclusion proof of the entry in the tree of
	// the checkpoint, from the leaf's sibling up to the root's child, as
	// xtlog.ProveRecord returns it.
	Hashes []xtlog.Hash
	// Checkpoint is the log's signed checkpoint note, verbatim, with any
	// witness cosignatures.
	Checkpoint []byte
}

// Marshal encodes p (c2sp.org/tlog-proof, "Format"):
//
//	c2sp.org/tlog-proof@v1
//	extra <base64 of Extra>      (only when Extra is not empty)
//	index <Index in decimal>
//	<base64 hash>                (one line per hash of Hashes)
//	                             (an empty line)
//	<Checkpoint, verbatim>
func (p Proof) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString(ProofHeader)
	b.WriteByte('\n')
	if len(p.Extra) > 0 {
		b.WriteString("extra ")
		b.WriteString(base64.StdEncoding.EncodeToString(p.Extra))
		b.WriteByte('\n')
	}
	b.WriteString("index ")
	b.WriteString(strconv.FormatInt(p.Index, 10))
	b.WriteByte('\n')
	for _, h := range p.Hashes {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.Write(p.Checkpoint)
	return b.Bytes()
}

// ParseProof decodes a proof written by Marshal, strictly: the header line,
// an optional "extra " line with non-empty canonical base64, "index " and
// the index in decimal without leading zeroes, at most 63 canonical base64
// SHA-256 hashes, an empty line, then a well-formed signed checkpoint note
// whose index is below its tree size. It verifies nothing: see VerifyProof.
func ParseProof(b []byte) (Proof, error) {
	p, err := parseProof(b)
	if err != nil {
		return Proof{}, fmt.Errorf("tlog: malformed proof: %w", err)
	}
	return p, nil
}

func parseProof(b []byte) (Proof, error) {
	var p Proof
	rest := b
	line := func() (string, bool) {
		l, r, ok := bytes.Cut(rest, []byte("\n"))
		if !ok {
			return "", false
		}
		rest = r
		return string(l), true
	}

	l, ok := line()
	if !ok || l != ProofHeader {
		return p, fmt.Errorf("first line is not %q", ProofHeader)
	}
	l, ok = line()
	if !ok {
		return p, errors.New("missing index line")
	}
	if e, isExtra := strings.CutPrefix(l, "extra"); isExtra {
		data, hasSpace := strings.CutPrefix(e, " ")
		if !hasSpace || data == "" {
			return p, errors.New(`extra line is not "extra <base64>"`)
		}
		extra, err := decodeBase64(data)
		if err != nil {
			return p, fmt.Errorf("extra data: %w", err)
		}
		p.Extra = extra
		if l, ok = line(); !ok {
			return p, errors.New("missing index line")
		}
	}
	idx, isIndex := strings.CutPrefix(l, "index ")
	if !isIndex {
		return p, errors.New(`missing "index <n>" line`)
	}
	index, err := parseDecimal(idx)
	if err != nil {
		return p, fmt.Errorf("index: %w", err)
	}
	p.Index = index
	for {
		l, ok = line()
		if !ok {
			return p, errors.New("missing the empty line before the checkpoint")
		}
		if l == "" {
			break
		}
		if len(p.Hashes) == maxProofHashes {
			return p, fmt.Errorf("more than %d inclusion proof hashes", maxProofHashes)
		}
		h, err := parseHash(l)
		if err != nil {
			return p, fmt.Errorf("inclusion proof hash %d: %w", len(p.Hashes)+1, err)
		}
		p.Hashes = append(p.Hashes, h)
	}
	if len(rest) == 0 {
		return p, errors.New("missing checkpoint")
	}
	// The checkpoint must be a signed note; with no known keys, note.Open
	// reports a well-formed note as unverified and anything else as malformed.
	_, err = note.Open(rest, nil)
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		return p, errors.New("checkpoint is not a signed note")
	}
	c, err := parseCheckpoint(unverified.Note.Text)
	if err != nil {
		return p, fmt.Errorf("checkpoint: %w", err)
	}
	if p.Index >= c.Size {
		return p, fmt.Errorf("index %d is not below the checkpoint tree size %d", p.Index, c.Size)
	}
	p.Checkpoint = bytes.Clone(rest)
	return p, nil
}

// VerifyProof verifies p offline for the entry leaf (c2sp.org/tlog-proof,
// "Verifying a tlog proof", steps 2 and 4): it opens p's checkpoint with
// OpenCheckpoint (verifiers must hold the log's key, named origin), then
// checks that the inclusion proof binds the RFC 6962 leaf hash of leaf at
// p.Index to the checkpoint's root. It returns the verified checkpoint;
// witness policy (step 3) is the caller's, from the cosignatures in
// p.Checkpoint.
func VerifyProof(p Proof, leaf []byte, origin string, verifiers note.Verifiers) (Checkpoint, error) {
	c, _, err := OpenCheckpoint(p.Checkpoint, origin, verifiers)
	if err != nil {
		return Checkpoint{}, err
	}
	if p.Index < 0 || p.Index >= c.Size {
		return Checkpoint{}, fmt.Errorf("tlog: proof index %d is outside checkpoint %s@%d", p.Index, c.Origin, c.Size)
	}
	if err := xtlog.CheckRecord(xtlog.RecordProof(p.Hashes), c.Size, c.Root, p.Index, xtlog.RecordHash(leaf)); err != nil {
		return Checkpoint{}, fmt.Errorf("tlog: entry %d is not proven in checkpoint %s@%d: %w", p.Index, c.Origin, c.Size, err)
	}
	return c, nil
}

// VerifyConsistency checks that proof, an RFC 6962 consistency proof as
// xtlog.ProveTree returns it, shows the tree of oldCp to be a prefix of the
// tree of newCp. Both checkpoints must be of the same log and already
// verified (OpenCheckpoint). An empty old tree is consistent with any tree
// when its root is the empty tree's hash and the proof is empty; equal sizes
// need equal roots and an empty proof.
func VerifyConsistency(oldCp, newCp Checkpoint, proof xtlog.TreeProof) error {
	if oldCp.Origin != newCp.Origin {
		return fmt.Errorf("tlog: consistency between checkpoints of two logs, %q and %q", oldCp.Origin, newCp.Origin)
	}
	if oldCp.Size < 0 || newCp.Size < 0 {
		return errors.New("tlog: consistency: negative tree size")
	}
	if oldCp.Size > newCp.Size {
		return fmt.Errorf("tlog: consistency: old tree size %d is above new tree size %d", oldCp.Size, newCp.Size)
	}
	if oldCp.Size == 0 {
		empty, _ := xtlog.TreeHash(0, nil) // SHA-256 of the empty string
		switch {
		case oldCp.Root != empty:
			return fmt.Errorf("tlog: checkpoint %s@0 does not have the empty tree's root", oldCp.Origin)
		case newCp.Size == 0 && newCp.Root != empty:
			return fmt.Errorf("tlog: checkpoint %s@0 does not have the empty tree's root", newCp.Origin)
		case len(proof) != 0:
			return fmt.Errorf("tlog: consistency proof from the empty tree has %d hashes, want none", len(proof))
		}
		return nil
	}
	if err := xtlog.CheckTree(proof, newCp.Size, newCp.Root, oldCp.Size, oldCp.Root); err != nil {
		return fmt.Errorf("tlog: checkpoint %s@%d is not proven consistent with %s@%d: %w", oldCp.Origin, oldCp.Size, newCp.Origin, newCp.Size, err)
	}
	return nil
}
