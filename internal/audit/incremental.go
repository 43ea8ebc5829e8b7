package audit

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"
	xtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/tlog"
)

// Incremental verification. A verification that finds the log intact stores
// the latest checkpoint as the verified point; the next one checks that the
// tree's top still gives that checkpoint's root and then verifies only the
// records after it (VerifyFrom). The records it covers, and the stored
// hashes below the top, are not read again: a full run (full) does that,
// and so does every proof a client checks against a checkpoint (a record or
// hash changed under it no longer proves). The point is a checkpoint signed
// with the log's key, so it cannot be forged to skip records.

// verifiedPoints is what incremental verification needs of a log besides
// Log: the stored verified point.
type verifiedPoints interface {
	verifiedPoint(ctx context.Context) ([]byte, error)
	saveVerifiedPoint(ctx context.Context, size int64, note []byte) error
}

// VerifyConfigured verifies l as a broker configured with the log's
// verifier key (tlog.VerifierKeyOf form) does: incrementally from the
// verified point when the key is set (full reads every record), else in
// full. Errors: Invalid (a malformed key); those of VerifyIncremental.
func VerifyConfigured(ctx context.Context, l Log, verifierKey string, full bool) (Report, error) {
	if verifierKey == "" {
		return l.Verify(ctx)
	}
	v, err := tlog.NewVerifier(verifierKey)
	if err != nil {
		return Report{}, err
	}
	return VerifyIncremental(ctx, l, v.Name(), note.VerifierList(v), full)
}

// VerifyIncremental verifies l from its verified point (or fully, when full
// is set, there is none, or it no longer holds), checks the latest
// checkpoint against the tree, and when everything is intact stores that
// checkpoint as the new verified point. vs must hold the log's verifier key
// (named origin). The report names the tree's departure from the verified
// point as a ProblemTree.
func VerifyIncremental(ctx context.Context, l Log, origin string, vs note.Verifiers, full bool) (Report, error) {
	p, ok := l.(verifiedPoints)
	if !ok {
		return Report{}, fmt.Errorf("audit: %T keeps no verified point", l)
	}
	var from int64
	var drift *Problem
	if !full {
		msg, err := p.verifiedPoint(ctx)
		if err != nil {
			return Report{}, apperr.Wrap(apperr.Unavailable, err, "the verified point cannot be read")
		}
		if msg != nil {
			cp, _, err := tlog.OpenCheckpoint(msg, origin, vs)
			switch {
			case err != nil:
				drift = &Problem{Kind: ProblemTree, Detail: "the stored verified point is not a checkpoint of this log's key; verified fully"}
			case cp.Size > 0:
				root, err := xtlog.TreeHash(cp.Size, treeReader{ctx, l})
				if err != nil || root != cp.Root {
					drift = &Problem{Seq: cp.Size, Kind: ProblemTree, Detail: fmt.Sprintf("the tree's first %d records no longer match the verified checkpoint; verified fully", cp.Size)}
				} else {
					from = cp.Size
				}
			}
		}
	}
	rep, err := l.VerifyFrom(ctx, from)
	if err != nil {
		return Report{}, err
	}
	if drift != nil {
		rep.Problems = append([]Problem{*drift}, rep.Problems...)
		rep.OK = false
	}
	if !rep.OK {
		return rep, nil
	}
	// The latest checkpoint becomes the verified point if the tree holds it.
	msg, err := l.Checkpoint(ctx)
	if apperr.KindOf(err) == apperr.NotFound {
		return rep, nil
	}
	if err != nil {
		return Report{}, err
	}
	cp, _, err := tlog.OpenCheckpoint(msg, origin, vs)
	if err != nil {
		rep.OK = false
		rep.Problems = append(rep.Problems, Problem{Kind: ProblemTree, Detail: "the latest checkpoint does not verify with the log's key"})
		return rep, nil
	}
	if cp.Size > rep.TreeSize {
		rep.OK = false
		rep.Problems = append(rep.Problems, Problem{Seq: rep.TreeSize + 1, Kind: ProblemTree, Detail: fmt.Sprintf("the latest checkpoint has %d records, the tree %d", cp.Size, rep.TreeSize)})
		return rep, nil
	}
	if cp.Size > 0 {
		if root, err := xtlog.TreeHash(cp.Size, treeReader{ctx, l}); err != nil || root != cp.Root {
			rep.OK = false
			rep.Problems = append(rep.Problems, Problem{Seq: cp.Size, Kind: ProblemTree, Detail: fmt.Sprintf("the tree's first %d records are not those of the latest checkpoint", cp.Size)})
			return rep, nil
		}
	}
	if err := p.saveVerifiedPoint(ctx, cp.Size, msg); err != nil {
		return Report{}, apperr.Wrap(apperr.Unavailable, err, "the verified point cannot be stored")
	}
	return rep, nil
}

// verifiedPoint implements verifiedPoints.
func (l *Postgres) verifiedPoint(ctx context.Context) ([]byte, error) {
	var note string
	err := l.reads.QueryRow(ctx, "SELECT note FROM issuance_log_verified").Scan(&note)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []byte(note), nil
}

// saveVerifiedPoint implements verifiedPoints: a larger point replaces a
// smaller one (a full run may also store an equal one again).
func (l *Postgres) saveVerifiedPoint(ctx context.Context, size int64, note []byte) error {
	_, err := l.pool.Exec(ctx, `INSERT INTO issuance_log_verified (id, size, note) VALUES (true, $1, $2)
		ON CONFLICT (id) DO UPDATE SET size = EXCLUDED.size, note = EXCLUDED.note, verified_at = now()
		WHERE issuance_log_verified.size <= EXCLUDED.size`, size, string(note))
	return err
}

// verifiedPoint implements verifiedPoints.
func (m *Memory) verifiedPoint(context.Context) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.verified, nil
}

// saveVerifiedPoint implements verifiedPoints.
func (m *Memory) saveVerifiedPoint(_ context.Context, size int64, note []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.verified == nil || size >= m.verifiedSize {
		m.verified, m.verifiedSize = note, size
	}
	return nil
}
