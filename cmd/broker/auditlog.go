package main

// The transparency log's commands under `broker audit`: keygen and
// check-proof work offline; verify's checkpoint checks, prove and
// acknowledge-rollback read the database.

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
	xtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/tlog"
)

// auditKeygen prints a new checkpoint key pair for origin: the signer key
// (BROKER_LOG_SIGNING_KEY, secret) and the verifier key auditors get.
func auditKeygen(origin string, stdout io.Writer) error {
	if origin == "" {
		return usageError("audit keygen: --origin is required, e.g. --origin broker.example.com/issuance-log")
	}
	skey, vkey, err := tlog.GenerateKey(origin)
	if err != nil {
		return usageError(fmt.Sprintf("audit keygen: --origin: %v", err))
	}
	_, err = fmt.Fprintf(stdout, "# signer key: set BROKER_LOG_SIGNING_KEY to it (a secret: keep it out of files others read)\n%s\n"+
		"# verifier key: give it to auditors and witnesses (GET /log/key serves it)\n%s\n", skey, vkey)
	return err
}

// verifierFor returns the checkpoint verifiers of vkey, and the origin.
func verifierFor(vkey string) (note.Verifiers, string, error) {
	v, err := tlog.NewVerifier(strings.TrimSpace(vkey))
	if err != nil {
		return nil, "", usageError(fmt.Sprintf("--key: %v", err))
	}
	return note.VerifierList(v), v.Name(), nil
}

// auditCheckProof verifies a tlog-proof file offline with only the log's
// verifier key, and prints the record its leaf holds.
func auditCheckProof(vkey, file string, stdout io.Writer) error {
	if vkey == "" || file == "" {
		return usageError("audit check-proof: give --key <verifier key> and the proof file")
	}
	vs, origin, err := verifierFor(vkey)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("audit check-proof: %w", err)
	}
	p, err := tlog.ParseProof(b)
	if err != nil {
		return fmt.Errorf("audit check-proof: %s is not a tlog-proof: %w", file, err)
	}
	cp, err := tlog.VerifyProof(p, p.Extra, origin, vs)
	if err != nil {
		fmt.Fprintf(stdout, "INVALID: %v\n", err)
		return exitStatus(1)
	}
	rec, err := audit.ParseLeaf(p.Extra)
	if err != nil || rec.Seq != p.Index+1 {
		fmt.Fprintf(stdout, "INVALID: the proof's extra data is not record %d of the issuance log\n", p.Index+1)
		return exitStatus(1)
	}
	fmt.Fprintf(stdout, "ok: record %d is in %s's checkpoint of %d records\n", rec.Seq, origin, cp.Size)
	return writeJSON(stdout, rec)
}

// auditProve writes the tlog-proof of record seq.
func auditProve(ctx context.Context, l audit.Log, seq int64, stdout io.Writer) error {
	if seq < 1 {
		return usageError("audit prove: --seq must be a record's sequence number (1 or more)")
	}
	p, err := audit.Prove(ctx, l, seq)
	if err != nil {
		return err
	}
	_, err = stdout.Write(p.Marshal())
	return err
}

// auditVerifyCheckpoints checks the latest stored checkpoint against the
// tree (already checked against the records) and, given an older one,
// that the log extends it. It prints what holds and returns exit status 1
// when something does not.
func auditVerifyCheckpoints(ctx context.Context, l audit.Log, vkey, older string, w io.Writer) error {
	vs, origin, err := verifierFor(vkey)
	if err != nil {
		return err
	}
	hashes := logHashes{ctx, l}
	msg, err := l.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("the latest checkpoint: %w", err)
	}
	latest, n, err := tlog.OpenCheckpoint(msg, origin, vs)
	if err != nil {
		fmt.Fprintf(w, "FAILED: the latest checkpoint: %v\n", err)
		return exitStatus(1)
	}
	size, err := l.TreeSize(ctx)
	if err != nil {
		return err
	}
	if latest.Size > size {
		fmt.Fprintf(w, "FAILED: the latest checkpoint has %d records, the tree only %d (records were removed)\n", latest.Size, size)
		return exitStatus(1)
	}
	if root, err := xtlog.TreeHash(latest.Size, hashes); err != nil || root != latest.Root {
		fmt.Fprintf(w, "FAILED: the tree's first %d records are not those of the latest checkpoint\n", latest.Size)
		return exitStatus(1)
	}
	fmt.Fprintf(w, "ok, the latest checkpoint (%d records, signed by %s, %d other signature(s)) matches the tree\n",
		latest.Size, origin, len(n.Sigs)+len(n.UnverifiedSigs)-1)
	if older == "" {
		return nil
	}
	b, err := os.ReadFile(older)
	if err != nil {
		return fmt.Errorf("--checkpoint: %w", err)
	}
	old, _, err := tlog.OpenCheckpoint(b, origin, vs)
	if err != nil {
		fmt.Fprintf(w, "FAILED: %s: %v\n", older, err)
		return exitStatus(1)
	}
	if old.Size > latest.Size {
		fmt.Fprintf(w, "FAILED: %s has %d records, more than the latest checkpoint's %d: the log went back\n", older, old.Size, latest.Size)
		return exitStatus(1)
	}
	var proof xtlog.TreeProof
	if old.Size > 0 && old.Size < latest.Size {
		if proof, err = xtlog.ProveTree(latest.Size, old.Size, hashes); err != nil {
			return fmt.Errorf("the consistency proof: %w", err)
		}
	}
	if err := tlog.VerifyConsistency(old, latest, proof); err != nil {
		fmt.Fprintf(w, "FAILED: the log does not extend %s: %v\n", older, err)
		return exitStatus(1)
	}
	_, err = fmt.Fprintf(w, "ok, the log extends %s (%d records) consistently\n", older, old.Size)
	return err
}

// logHashes reads a log's stored hashes.
type logHashes struct {
	ctx context.Context
	l   audit.Log
}

func (h logHashes) ReadHashes(indexes []int64) ([]xtlog.Hash, error) {
	return h.l.TreeHashes(h.ctx, indexes)
}

// auditAcknowledge records that the operator accepts the tree as it is now
// after the log went back, which unblocks the replicas.
func auditAcknowledge(ctx context.Context, l *audit.Postgres, actor, reason string, stdout io.Writer) error {
	if strings.TrimSpace(reason) == "" {
		return usageError("audit acknowledge-rollback: --reason is required (what happened: e.g. \"restored from the 02:00 backup after disk loss\")")
	}
	a, err := l.AcknowledgeRollback(ctx, actor, reason)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "acknowledged (#%d by %s): the log restarts from its tree of %d records; replicas sign and record again within a checkpoint interval\n", a.ID, a.Actor, a.Size)
	return err
}
