package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"
	xtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/tlog"
)

// Checkpoints. A replica signs a checkpoint of the tree (c2sp.org/
// tlog-checkpoint, an Ed25519 signed note) at most Interval after records
// are committed, but only one that is consistent with the latest checkpoint
// it signed or saw: kept in memory, in the database (the newest any replica
// signed) and, if configured, in a state file outside the database. A tree
// that went back (a database restored to an older state) or forked makes
// it refuse to sign and the log refuse every Append (fail closed) until an
// operator acknowledges it (AcknowledgeRollback). Each new checkpoint goes
// to the witnesses, whose cosignatures are stored with it.

// CheckpointOptions configure a Checkpointer.
type CheckpointOptions struct {
	// Signer is the log's key (BROKER_LOG_SIGNING_KEY); its name is the log's
	// origin. Verifier is the same key's verifier.
	Signer   note.Signer
	Verifier note.Verifier
	// Interval is the longest a committed record waits for a checkpoint
	// (default 1s).
	Interval time.Duration
	// StateFile keeps the latest checkpoint outside the database; "" for
	// none.
	StateFile string
	// Witnesses cosign each new checkpoint.
	Witnesses  []tlog.Witness
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// transparent is what a Checkpointer needs of a log: its tree (read without
// the auditors' read slots), the stored checkpoint and acknowledgements, and
// the switch that makes Append refuse.
type transparent interface {
	treeNow(ctx context.Context) (int64, xtlog.HashReader, error)
	storedCheckpoint(ctx context.Context) ([]byte, error)
	// saveCheckpoint stores note (of a tree of size) if no checkpoint as
	// large is stored, or with sameSize also in place of one of the same
	// size (the same checkpoint with more cosignatures).
	saveCheckpoint(ctx context.Context, size int64, note []byte, sameSize bool) error
	rollbackAcks(ctx context.Context, after int64) ([]RollbackAck, error)
	block(err error)
}

// RollbackAck is an operator's acknowledgement that the log went back: the
// tree they accept from now on.
type RollbackAck struct {
	ID     int64
	At     time.Time
	Actor  string
	Reason string
	Size   int64
	Root   xtlog.Hash
}

// ErrRolledBack is the error Append returns while the log is blocked
// because its tree went back or forked.
var ErrRolledBack = errors.New("the issuance log's tree is not consistent with a checkpoint already signed (the database was restored to an older state, or altered): no record is written and no token issued until an operator runs `broker audit acknowledge-rollback`")

// Checkpointer signs, stores and witnesses the log's checkpoints. Create it
// with NewCheckpointer and run it with Run.
type Checkpointer struct {
	log    transparent
	opts   CheckpointOptions
	origin string
	vs     note.Verifiers

	mu       sync.Mutex
	latest   *tlog.Checkpoint // the latest signed or seen; nil: none yet
	blocked  error
	lastAck  int64 // acknowledgements up to this id were made before the block
	resign   bool  // sign the tree even at latest's size (after an acknowledgement)
	cosignMu sync.Mutex
	witness  []*witnessState
	rollback prometheus.Gauge
	signed   prometheus.Counter
	wfail    *prometheus.CounterVec
}

type witnessState struct {
	w    tlog.Witness
	size int64 // the latest size it cosigned, as far as we know
	next chan tlog.Checkpoint
}

// NewCheckpointer returns a Checkpointer for log (a *Postgres or *Memory).
// It reads the state file, if any, so that a replica restarted on a
// restored database refuses it at once.
func NewCheckpointer(log Log, opts CheckpointOptions) (*Checkpointer, error) {
	t, ok := log.(transparent)
	if !ok {
		return nil, fmt.Errorf("audit: %T cannot sign checkpoints", log)
	}
	if opts.Signer == nil || opts.Verifier == nil || opts.Signer.Name() != opts.Verifier.Name() || opts.Signer.KeyHash() != opts.Verifier.KeyHash() {
		return nil, errors.New("audit: checkpoints need the log's signer and its own verifier")
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Checkpointer{log: t, opts: opts, origin: opts.Signer.Name(), vs: note.VerifierList(opts.Verifier),
		rollback: prometheus.NewGauge(prometheus.GaugeOpts{Name: "broker_log_rollback",
			Help: "1 while this replica refuses to sign and to record because the issuance log's tree is not consistent with a checkpoint already signed."}),
		signed: prometheus.NewCounter(prometheus.CounterOpts{Name: "broker_log_checkpoints_signed_total",
			Help: "Checkpoints of the issuance log's tree this replica signed."}),
		wfail: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "broker_log_witness_failures_total",
			Help: "Checkpoint submissions to a witness that failed (retried with the next checkpoint)."}, []string{"witness"}),
	}
	if opts.Registerer != nil {
		for _, m := range []prometheus.Collector{c.rollback, c.signed, c.wfail} {
			if err := opts.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("audit: register checkpoint metrics: %w", err)
			}
		}
	}
	for _, w := range opts.Witnesses {
		c.witness = append(c.witness, &witnessState{w: w, next: make(chan tlog.Checkpoint, 1)})
	}
	if opts.StateFile != "" {
		b, err := os.ReadFile(opts.StateFile)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("audit: reading the checkpoint state file: %w", err)
		default:
			cp, _, err := tlog.OpenCheckpoint(b, c.origin, c.vs)
			if err != nil {
				return nil, fmt.Errorf("audit: the checkpoint state file %s holds no checkpoint of this log: %w", opts.StateFile, err)
			}
			c.latest = &cp
		}
	}
	return c, nil
}

// Origin is the log's origin (its key's name).
func (c *Checkpointer) Origin() string { return c.origin }

// Blocked returns why the log refuses records, nil when it does not.
func (c *Checkpointer) Blocked() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.blocked
}

// Run signs checkpoints until ctx ends.
func (c *Checkpointer) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, w := range c.witness {
		wg.Go(func() { c.runWitness(ctx, w) })
	}
	defer wg.Wait()
	tick := time.NewTicker(c.opts.Interval)
	defer tick.Stop()
	for {
		if err := c.Step(ctx); err != nil && ctx.Err() == nil {
			c.opts.Logger.Warn("issuance log: no checkpoint signed this time", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Step checks the tree against the latest checkpoint and signs a new one if
// it grew. It returns an error only when it could not look (the database);
// a tree that went back blocks the log instead.
func (c *Checkpointer) Step(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	// The stored checkpoint is read before the tree: the tree only grows, so
	// one that another replica signed since is no larger than what is read.
	stored, err := c.log.storedCheckpoint(ctx)
	if err != nil {
		return err
	}
	size, hashes, err := c.log.treeNow(ctx)
	if err != nil {
		return err
	}
	if c.blocked != nil {
		return c.acknowledged(ctx, size, hashes)
	}
	// What another replica signed counts as seen.
	if stored != nil {
		cp, _, err := tlog.OpenCheckpoint(stored, c.origin, c.vs)
		if err != nil {
			c.fail(ctx, fmt.Errorf("the stored checkpoint does not verify with the log key: %w", err))
			return nil
		}
		if c.latest == nil || cp.Size > c.latest.Size {
			if cp.Size > size {
				c.fail(ctx, fmt.Errorf("a checkpoint of %d records is stored but the tree has %d", cp.Size, size))
				return nil
			}
			if err := c.consistent(cp, size, hashes); err != nil {
				c.fail(ctx, err)
				return nil
			}
			c.latest = &cp
			if err := c.writeState(stored); err != nil { // seen counts as signed
				return err
			}
		}
	}
	root, err := xtlog.TreeHash(size, hashes)
	if err != nil {
		return fmt.Errorf("audit: the tree's root: %w", err)
	}
	now := tlog.Checkpoint{Origin: c.origin, Size: size, Root: root}
	if c.latest != nil {
		if err := c.consistent(*c.latest, size, hashes); err != nil {
			c.fail(ctx, err)
			return nil
		}
		if size == c.latest.Size && !c.resign {
			return nil
		}
	} else if size == 0 {
		return nil
	}
	msg, err := tlog.SignCheckpoint(now, c.opts.Signer)
	if err != nil {
		return err
	}
	if err := c.log.saveCheckpoint(ctx, size, msg, c.resign); err != nil {
		return err
	}
	if err := c.writeState(msg); err != nil {
		return err
	}
	c.latest, c.resign = &now, false
	c.signed.Inc()
	for _, w := range c.witness {
		select {
		case <-w.next: // replace an older one not yet sent
		default:
		}
		w.next <- now
	}
	return nil
}

// consistent checks that the tree of size (hashes) extends cp.
func (c *Checkpointer) consistent(cp tlog.Checkpoint, size int64, hashes xtlog.HashReader) error {
	if size < cp.Size {
		return fmt.Errorf("the tree has %d records, fewer than the %d of a checkpoint already signed", size, cp.Size)
	}
	if cp.Size == 0 {
		return nil
	}
	root, err := xtlog.TreeHash(cp.Size, hashes)
	if err != nil {
		return fmt.Errorf("the tree's root at %d: %w", cp.Size, err)
	}
	if root != cp.Root {
		return fmt.Errorf("the tree's first %d records are not those of the checkpoint already signed at that size", cp.Size)
	}
	return nil
}

// fail blocks the log (the caller holds c.mu). Only an acknowledgement
// recorded after this moment can unblock it: one from an earlier incident
// says nothing of this one.
func (c *Checkpointer) fail(ctx context.Context, err error) {
	if acks, aerr := c.log.rollbackAcks(ctx, c.lastAck); aerr == nil && len(acks) > 0 {
		c.lastAck = acks[len(acks)-1].ID
	}
	c.blocked = fmt.Errorf("%w: %v", ErrRolledBack, err)
	c.log.block(apperr.Wrap(apperr.Unavailable, c.blocked, "the issuance log cannot record"))
	c.rollback.Set(1)
	c.opts.Logger.Error("ISSUANCE LOG ROLLED BACK OR FORKED: refusing to sign checkpoints and to issue tokens until an operator runs `broker audit acknowledge-rollback`", "error", err)
}

// acknowledged unblocks the log when an operator acknowledged a tree that
// the current one extends (the caller holds c.mu).
func (c *Checkpointer) acknowledged(ctx context.Context, size int64, hashes xtlog.HashReader) error {
	acks, err := c.log.rollbackAcks(ctx, c.lastAck)
	if err != nil {
		return err
	}
	for _, a := range acks {
		c.lastAck = a.ID
		base := tlog.Checkpoint{Origin: c.origin, Size: a.Size, Root: a.Root}
		if err := c.consistent(base, size, hashes); err != nil {
			c.opts.Logger.Warn("issuance log: a rollback acknowledgement does not match the tree; still blocked", "ack", a.ID, "error", err)
			continue
		}
		c.opts.Logger.Warn("issuance log: rollback acknowledged; signing and recording again", "ack", a.ID, "actor", a.Actor, "size", a.Size)
		c.latest, c.blocked, c.resign = &base, nil, true // sign (and keep) the accepted tree at once
		c.log.block(nil)
		c.rollback.Set(0)
	}
	return nil
}

// writeState replaces the state file with msg (atomically).
func (c *Checkpointer) writeState(msg []byte) error {
	if c.opts.StateFile == "" {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.opts.StateFile), ".checkpoint-*")
	if err != nil {
		return fmt.Errorf("audit: writing the checkpoint state file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(msg); err != nil {
		tmp.Close()
		return fmt.Errorf("audit: writing the checkpoint state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("audit: writing the checkpoint state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("audit: writing the checkpoint state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), c.opts.StateFile); err != nil {
		return fmt.Errorf("audit: writing the checkpoint state file: %w", err)
	}
	return nil
}

// runWitness submits each new checkpoint to one witness, with a consistency
// proof from the size it last cosigned, and stores its cosignature with the
// checkpoint. Failures are counted and logged, and the next checkpoint is
// tried; they never hold up the log.
func (c *Checkpointer) runWitness(ctx context.Context, w *witnessState) {
	for {
		var cp tlog.Checkpoint
		select {
		case <-ctx.Done():
			return
		case cp = <-w.next:
		}
		if err := c.witnessOne(ctx, w, cp); err != nil && ctx.Err() == nil {
			c.wfail.WithLabelValues(w.w.URL).Inc()
			c.opts.Logger.Warn("issuance log: witness did not cosign", "witness", w.w.URL, "size", cp.Size, "error", err)
		}
	}
}

func (c *Checkpointer) witnessOne(ctx context.Context, w *witnessState, cp tlog.Checkpoint) error {
	msg, err := tlog.SignCheckpoint(cp, c.opts.Signer)
	if err != nil {
		return err
	}
	for range 2 { // once more after a conflict names the witness's size
		if w.size > cp.Size {
			return nil // it has cosigned a larger checkpoint already
		}
		proof, err := c.proveSince(ctx, w.size, cp.Size)
		if err != nil {
			return err
		}
		sigs, err := w.w.AddCheckpoint(ctx, w.size, proof, msg)
		var conflict *tlog.ConflictError
		if errors.As(err, &conflict) {
			w.size = conflict.Size
			continue
		}
		if err != nil {
			return err
		}
		w.size = cp.Size
		cosigned := msg
		for _, s := range sigs {
			cosigned = append(bytes.Clone(cosigned), s...)
		}
		return c.addCosignatures(ctx, cp.Size, cosigned)
	}
	return errors.New("the witness's size kept changing")
}

// proveSince is the consistency proof of the tree of size from old.
func (c *Checkpointer) proveSince(ctx context.Context, old, size int64) (xtlog.TreeProof, error) {
	if old == 0 || old == size {
		return nil, nil
	}
	_, hashes, err := c.log.treeNow(ctx)
	if err != nil {
		return nil, err
	}
	return xtlog.ProveTree(size, old, hashes)
}

// addCosignatures stores cosigned (the checkpoint of size with one more
// witness's cosignature) merged with the cosignatures already stored for
// that size.
func (c *Checkpointer) addCosignatures(ctx context.Context, size int64, cosigned []byte) error {
	c.cosignMu.Lock() // the witnesses answer at once: merge one at a time
	defer c.cosignMu.Unlock()
	stored, err := c.log.storedCheckpoint(ctx)
	if err != nil {
		return err
	}
	merged := cosigned
	if stored != nil {
		if cp, _, err := tlog.OpenCheckpoint(stored, c.origin, c.vs); err == nil && cp.Size == size {
			merged = mergeSignatures(stored, cosigned)
		}
	}
	return c.log.saveCheckpoint(ctx, size, merged, true)
}

// mergeSignatures returns note a with the signature lines of b it lacks
// (both notes of the same text).
func mergeSignatures(a, b []byte) []byte {
	_, sigsB, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		return a
	}
	out := bytes.Clone(a)
	for _, line := range bytes.SplitAfter(sigsB, []byte("\n")) {
		if len(line) > 0 && !bytes.Contains(a, line) {
			out = append(out, line...)
		}
	}
	return out
}

// blockSwitch is the part of a log that makes Append refuse while the tree
// is not to be trusted.
type blockSwitch struct{ err atomic.Pointer[error] }

func (b *blockSwitch) block(err error) {
	if err == nil {
		b.err.Store(nil)
		return
	}
	b.err.Store(&err)
}

func (b *blockSwitch) blocked() error {
	if p := b.err.Load(); p != nil {
		return *p
	}
	return nil
}

// treeNow implements transparent.
func (l *Postgres) treeNow(ctx context.Context) (int64, xtlog.HashReader, error) {
	size, err := storedTreeSize(ctx, l.pool)
	if err != nil {
		return 0, nil, fmt.Errorf("audit: reading the tree's size: %w", err)
	}
	return size, pgHashes{ctx, l.pool}, nil
}

// storedCheckpoint implements transparent.
func (l *Postgres) storedCheckpoint(ctx context.Context) ([]byte, error) {
	var note string
	err := l.pool.QueryRow(ctx, "SELECT note FROM issuance_log_checkpoint").Scan(&note)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: reading the stored checkpoint: %w", err)
	}
	return []byte(note), nil
}

// saveCheckpoint implements transparent.
func (l *Postgres) saveCheckpoint(ctx context.Context, size int64, note []byte, sameSize bool) error {
	_, err := l.pool.Exec(ctx, `INSERT INTO issuance_log_checkpoint (id, size, note) VALUES (true, $1, $2)
		ON CONFLICT (id) DO UPDATE SET size = EXCLUDED.size, note = EXCLUDED.note, signed_at = now()
		WHERE issuance_log_checkpoint.size < EXCLUDED.size OR ($3 AND issuance_log_checkpoint.size = EXCLUDED.size)`, size, string(note), sameSize)
	if err != nil {
		return fmt.Errorf("audit: storing the checkpoint: %w", err)
	}
	return nil
}

// Checkpoint returns the latest stored checkpoint, a signed note with any
// witness cosignatures; NotFound before the first.
func (l *Postgres) Checkpoint(ctx context.Context) ([]byte, error) {
	var note string
	err := l.reads.QueryRow(ctx, "SELECT note FROM issuance_log_checkpoint").Scan(&note)
	var b []byte
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		err = nil
	case err == nil:
		b = []byte(note)
	}
	if err != nil {
		return nil, apperr.Wrap(apperr.Unavailable, err, "the checkpoint cannot be read")
	}
	if b == nil {
		return nil, apperr.New(apperr.NotFound, "no checkpoint has been signed yet")
	}
	return b, nil
}

// rollbackAcks implements transparent.
func (l *Postgres) rollbackAcks(ctx context.Context, after int64) ([]RollbackAck, error) {
	rows, err := l.pool.Query(ctx, "SELECT id, at, actor, reason, to_size, to_root FROM issuance_log_rollback_ack WHERE id > $1 ORDER BY id", after)
	if err != nil {
		return nil, fmt.Errorf("audit: reading rollback acknowledgements: %w", err)
	}
	defer rows.Close()
	var out []RollbackAck
	for rows.Next() {
		var a RollbackAck
		var root []byte
		if err := rows.Scan(&a.ID, &a.At, &a.Actor, &a.Reason, &a.Size, &root); err != nil {
			return nil, err
		}
		if len(root) != len(a.Root) {
			continue
		}
		a.Root = xtlog.Hash(root)
		out = append(out, a)
	}
	return out, rows.Err()
}

// AcknowledgeRollback records that an operator accepts the log's tree as it
// is now, after it went back (a restored database): the checkpoint stored
// then is kept in the record and removed, so that replicas sign again from
// this tree; each blocked replica unblocks once it sees the
// acknowledgement (within a checkpoint interval). actor and reason say who
// and why.
func (l *Postgres) AcknowledgeRollback(ctx context.Context, actor, reason string) (RollbackAck, error) {
	if actor == "" || reason == "" {
		return RollbackAck{}, apperr.Field("reason", "an acknowledgement needs who makes it and why")
	}
	var a RollbackAck
	err := pgx.BeginTxFunc(ctx, l.pool, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", chainLock); err != nil {
			return err
		}
		size, err := storedTreeSize(ctx, tx)
		if err != nil {
			return err
		}
		root, err := xtlog.TreeHash(size, pgHashes{ctx, tx})
		if err != nil {
			return err
		}
		var seen string
		if err := tx.QueryRow(ctx, "SELECT coalesce((SELECT note FROM issuance_log_checkpoint), '')").Scan(&seen); err != nil {
			return err
		}
		a = RollbackAck{Actor: actor, Reason: reason, Size: size, Root: root}
		if err := tx.QueryRow(ctx, `INSERT INTO issuance_log_rollback_ack (actor, reason, seen_note, to_size, to_root)
			VALUES ($1, $2, $3, $4, $5) RETURNING id, at`, actor, reason, seen, size, root[:]).Scan(&a.ID, &a.At); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "DELETE FROM issuance_log_checkpoint")
		return err
	})
	if err != nil {
		return RollbackAck{}, apperr.Wrap(apperr.Unavailable, err, "the acknowledgement could not be recorded")
	}
	return a, nil
}

// chainLock is the advisory lock every append and tree change holds
// (migrations 007, 013).
const chainLock int64 = 3173581853742769109

// treeNow implements transparent.
func (m *Memory) treeNow(ctx context.Context) (int64, xtlog.HashReader, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	size, err := treeSizeOf(int64(len(m.hashes)))
	if err != nil {
		return 0, nil, err
	}
	return size, mapReaderOf(m.hashes), nil
}

// mapReaderOf is a HashReader over a copy of hashes.
func mapReaderOf(hashes []xtlog.Hash) xtlog.HashReader {
	cp := append([]xtlog.Hash(nil), hashes...)
	return xtlog.HashReaderFunc(func(indexes []int64) ([]xtlog.Hash, error) {
		out := make([]xtlog.Hash, len(indexes))
		for i, idx := range indexes {
			if idx < 0 || idx >= int64(len(cp)) {
				return nil, fmt.Errorf("audit: no tree hash %d", idx)
			}
			out[i] = cp[idx]
		}
		return out, nil
	})
}

// storedCheckpoint implements transparent.
func (m *Memory) storedCheckpoint(context.Context) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return bytes.Clone(m.checkpoint), nil
}

// saveCheckpoint implements transparent.
func (m *Memory) saveCheckpoint(_ context.Context, size int64, note []byte, sameSize bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.checkpoint == nil || size > m.checkpointSize || sameSize && size == m.checkpointSize {
		m.checkpoint, m.checkpointSize = bytes.Clone(note), size
	}
	return nil
}

// Checkpoint returns the latest stored checkpoint; NotFound before the
// first.
func (m *Memory) Checkpoint(ctx context.Context) ([]byte, error) {
	b, _ := m.storedCheckpoint(ctx)
	if b == nil {
		return nil, apperr.New(apperr.NotFound, "no checkpoint has been signed yet")
	}
	return b, nil
}

// rollbackAcks implements transparent: a log in memory is never restored.
func (m *Memory) rollbackAcks(context.Context, int64) ([]RollbackAck, error) { return nil, nil }
