package audit

import (
	"bytes"
	"context"

	xtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/tlog"
)

// Prove returns the proof that record seq is in l's tree, against the latest
// stored checkpoint: a c2sp.org/tlog-proof whose extra data is the record's
// leaf (Leaf), so that the proof alone shows the record and verifies offline
// with the log's verifier key (tlog.VerifyProof). Errors: NotFound when no
// checkpoint covers seq yet (the next one comes within a checkpoint
// interval); Unavailable.
func Prove(ctx context.Context, l Log, seq int64) (tlog.Proof, error) {
	msg, err := l.Checkpoint(ctx)
	if err != nil {
		return tlog.Proof{}, err
	}
	text, _, ok := bytes.Cut(msg, []byte("\n\n"))
	if !ok {
		return tlog.Proof{}, apperr.New(apperr.Internal, "the stored checkpoint is not a signed note")
	}
	cp, err := tlog.ParseCheckpoint(string(text) + "\n")
	if err != nil {
		return tlog.Proof{}, apperr.Wrap(apperr.Internal, err, "the stored checkpoint cannot be read")
	}
	if seq < 1 || seq > cp.Size {
		return tlog.Proof{}, apperr.New(apperr.NotFound, "record %d is not in the latest checkpoint (%d records); a new one is signed within seconds", seq, cp.Size)
	}
	hashes, err := xtlog.ProveRecord(cp.Size, seq-1, treeReader{ctx, l})
	if err != nil {
		return tlog.Proof{}, apperr.Wrap(apperr.Unavailable, err, "the proof cannot be built")
	}
	leaves, err := l.Leaves(ctx, seq-1, seq)
	if err != nil {
		return tlog.Proof{}, err
	}
	return tlog.Proof{Extra: leaves[0], Index: seq - 1, Hashes: hashes, Checkpoint: msg}, nil
}

// treeReader reads l's stored hashes.
type treeReader struct {
	ctx context.Context
	l   Log
}

func (r treeReader) ReadHashes(indexes []int64) ([]xtlog.Hash, error) {
	return r.l.TreeHashes(r.ctx, indexes)
}
