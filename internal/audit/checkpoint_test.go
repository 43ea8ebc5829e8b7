package audit

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	xtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/tlog"
)

// testLogKey is a checkpoint key pair for tests.
func testLogKey(t testing.TB) (CheckpointOptions, string) {
	t.Helper()
	skey, vkey, err := tlog.GenerateKey("broker.test/issuance-log")
	if err != nil {
		t.Fatal(err)
	}
	s, err := tlog.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tlog.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return CheckpointOptions{Signer: s, Verifier: v}, vkey
}

func step(t *testing.T, c *Checkpointer) {
	t.Helper()
	if err := c.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// openCheckpoint returns the log's latest checkpoint, verified.
func openCheckpoint(t *testing.T, l Log, v note.Verifier) tlog.Checkpoint {
	t.Helper()
	msg, err := l.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cp, _, err := tlog.OpenCheckpoint(msg, v.Name(), note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// Every record is provable against a signed checkpoint, offline, with only
// the verifier key; the proof carries the record.
func TestCheckpoints_SignAndProve(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) Log{
		"memory": func(t *testing.T) Log {
			m, err := NewMemory(testKey)
			if err != nil {
				t.Fatal(err)
			}
			return m
		},
		"postgres": func(t *testing.T) Log { return newPostgres(t, pgtest.New(t), PostgresOptions{}) },
	} {
		t.Run(name, func(t *testing.T) {
			l := open(t)
			opts, _ := testLogKey(t)
			c, err := NewCheckpointer(l, opts)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Prove(context.Background(), l, 1); apperr.KindOf(err) != apperr.NotFound {
				t.Errorf("a proof before any checkpoint: %v; want NotFound", err)
			}
			var stored []Record
			for i := range 11 {
				stored = append(stored, mustAppend(t, l, rec("alice", "room", i))...)
			}
			step(t, c)
			if cp := openCheckpoint(t, l, opts.Verifier); cp.Size != 11 {
				t.Fatalf("checkpoint of %d records, want 11", cp.Size)
			}
			for _, seq := range []int64{1, 6, 11} {
				p, err := Prove(context.Background(), l, seq)
				if err != nil {
					t.Fatal(err)
				}
				parsed, err := tlog.ParseProof(p.Marshal())
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tlog.VerifyProof(parsed, parsed.Extra, opts.Verifier.Name(), note.VerifierList(opts.Verifier)); err != nil {
					t.Errorf("proof of record %d: %v", seq, err)
				}
				got, err := ParseLeaf(parsed.Extra)
				if err != nil || got.Seq != seq || got.Subject != stored[seq-1].Subject || got.TokenFingerprint != stored[seq-1].TokenFingerprint {
					t.Errorf("the proof of %d carries %+v, %v", seq, got, err)
				}
			}
			if _, err := Prove(context.Background(), l, 12); apperr.KindOf(err) != apperr.NotFound {
				t.Errorf("a proof past the checkpoint: %v; want NotFound", err)
			}
		})
	}
}

// Two replicas append at once, each signing checkpoints: one tree, and
// every stored checkpoint extends the one before.
func TestCheckpoints_TwoReplicasOneConsistentTree(t *testing.T) {
	db := pgtest.New(t)
	opts, _ := testLogKey(t)
	a, b := newPostgres(t, db, PostgresOptions{}), newPostgres(t, db, PostgresOptions{})
	ca, err := NewCheckpointer(a, opts)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := NewCheckpointer(b, opts)
	if err != nil {
		t.Fatal(err)
	}
	var seen []tlog.Checkpoint
	var mu sync.Mutex
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range []*Checkpointer{ca, cb} {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if err := c.Step(context.Background()); err != nil {
					t.Error(err)
					return
				}
				if msg, err := a.Checkpoint(context.Background()); err == nil {
					cp, _, err := tlog.OpenCheckpoint(msg, opts.Signer.Name(), note.VerifierList(opts.Verifier))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					seen = append(seen, cp)
					mu.Unlock()
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	var writers sync.WaitGroup
	for i := range 8 {
		l := []Log{a, b}[i%2]
		writers.Go(func() {
			for j := range 40 {
				if _, err := l.Append(context.Background(), rec("w", "room", j)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	writers.Wait()
	close(done)
	wg.Wait()
	step(t, ca)
	if ca.Blocked() != nil || cb.Blocked() != nil {
		t.Fatalf("a replica blocked: %v / %v", ca.Blocked(), cb.Blocked())
	}
	final := openCheckpoint(t, a, opts.Verifier)
	if final.Size != 320 {
		t.Fatalf("final checkpoint of %d records, want 320", final.Size)
	}
	// Every checkpoint seen is a prefix of the final tree.
	_, hashes, err := a.treeNow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range append(seen, final) {
		root, err := xtlog.TreeHash(cp.Size, hashes)
		if err != nil || root != cp.Root {
			t.Fatalf("checkpoint of %d records is not a prefix of the tree (%v)", cp.Size, err)
		}
	}
	if rep, err := a.Verify(context.Background()); err != nil || !rep.OK || rep.Records != 320 || rep.TreeSize != 320 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

// A database restored from an older pg_dump (records and checkpoint
// together, self-consistent) is refused: no checkpoint is signed and no
// record written, until an operator acknowledges it; a replica restarted on
// it refuses it from its state file.
func TestCheckpoints_RestoredDatabaseFailsClosedUntilAcknowledged(t *testing.T) {
	pgDump, pgRestore := pgTool(t, "pg_dump"), pgTool(t, "pg_restore")
	db := pgtest.New(t)
	ctx := context.Background()
	opts, _ := testLogKey(t)
	opts.StateFile = filepath.Join(t.TempDir(), "checkpoint")
	l := newPostgres(t, db, PostgresOptions{})
	c, err := NewCheckpointer(l, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		mustAppend(t, l, rec("alice", "room", i))
	}
	step(t, c)
	dump := filepath.Join(t.TempDir(), "old.dump")
	if out, err := exec.Command(pgDump, "-Fc", "-f", dump, "-d", db.URL).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
	for i := range 5 {
		mustAppend(t, l, rec("bob", "room", i))
	}
	step(t, c)
	if cp := openCheckpoint(t, l, opts.Verifier); cp.Size != 10 {
		t.Fatalf("checkpoint of %d records, want 10", cp.Size)
	}
	if out, err := exec.Command(pgRestore, "--clean", "--if-exists", "--single-transaction", "-d", db.URL, dump).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}
	// The restored database is self-consistent: only what was signed before
	// shows that it went back.
	for range 3 {
		if err := c.Step(ctx); err == nil {
			break
		}
	}
	if !errors.Is(c.Blocked(), ErrRolledBack) {
		t.Fatalf("after the restore: blocked = %v; want ErrRolledBack", c.Blocked())
	}
	if _, err := l.Append(ctx, rec("carol", "room", 0)); apperr.KindOf(err) != apperr.Unavailable || !errors.Is(err, ErrRolledBack) {
		t.Fatalf("Append on the restored log: %v; want Unavailable (rolled back)", err)
	}
	// A replica started afterwards knows better from its state file.
	other := newPostgres(t, db, PostgresOptions{})
	restarted, err := NewCheckpointer(other, opts)
	if err != nil {
		t.Fatal(err)
	}
	step(t, restarted)
	if !errors.Is(restarted.Blocked(), ErrRolledBack) {
		t.Fatalf("a replica restarted on the restored database: blocked = %v", restarted.Blocked())
	}
	// The operator acknowledges; the replicas sign and record again.
	ack, err := l.AcknowledgeRollback(ctx, "cli:test", "restored from the 02:00 backup")
	if err != nil || ack.Size != 5 {
		t.Fatalf("acknowledge: %+v, %v", ack, err)
	}
	for _, cp := range []*Checkpointer{c, restarted} {
		step(t, cp)
		if cp.Blocked() != nil {
			t.Fatalf("still blocked after the acknowledgement: %v", cp.Blocked())
		}
	}
	if _, err := l.Append(ctx, rec("carol", "room", 1)); err != nil {
		t.Fatalf("Append after the acknowledgement: %v", err)
	}
	step(t, c)
	if cp := openCheckpoint(t, l, opts.Verifier); cp.Size != 6 {
		t.Fatalf("checkpoint of %d records after the acknowledgement, want 6", cp.Size)
	}
	b, err := os.ReadFile(opts.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	if cp, _, err := tlog.OpenCheckpoint(b, opts.Signer.Name(), note.VerifierList(opts.Verifier)); err != nil || cp.Size != 6 {
		t.Fatalf("state file: %+v, %v", cp, err)
	}
	// A second restore, of a dump that holds the first acknowledgement: that
	// acknowledgement says nothing of this rollback.
	dump2 := filepath.Join(t.TempDir(), "second.dump")
	if out, err := exec.Command(pgDump, "-Fc", "-f", dump2, "-d", db.URL).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
	for i := range 4 {
		mustAppend(t, l, rec("dave", "room", i))
	}
	step(t, c)
	if out, err := exec.Command(pgRestore, "--clean", "--if-exists", "--single-transaction", "-d", db.URL, dump2).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}
	for range 3 {
		_ = c.Step(ctx)
	}
	if !errors.Is(c.Blocked(), ErrRolledBack) {
		t.Fatalf("after a second restore (holding the first acknowledgement): blocked = %v; want ErrRolledBack", c.Blocked())
	}
}

// pgTool finds a PostgreSQL client program beside the server the tests use.
func pgTool(t *testing.T, name string) string {
	t.Helper()
	bin, err := pgtest.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{bin, resolvedDir(filepath.Join(bin, "pg_ctl"))} {
		if p := filepath.Join(dir, name); dir != "" && isExecutable(p) {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s is needed to dump and restore a database: apt-get install postgresql-client", name)
	return ""
}

func resolvedDir(path string) string {
	p, err := filepath.EvalSymlinks(path)
	if err != nil {
		return ""
	}
	return filepath.Dir(p)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// A log whose tree was cut back (its tail's stored hashes removed, the
// records with them) is refused by the replica that signed the longer one.
func TestCheckpoints_TruncatedTreeIsRefused(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	opts, _ := testLogKey(t)
	l := newPostgres(t, db, PostgresOptions{})
	c, err := NewCheckpointer(l, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		mustAppend(t, l, rec("alice", "room", i))
	}
	step(t, c)
	// The last statement's hashes go (a row holds one statement's).
	if _, err := db.Pool().Exec(ctx, "DELETE FROM issuance_log_tree WHERE first_idx = (SELECT max(first_idx) FROM issuance_log_tree)"); err != nil {
		t.Fatal(err)
	}
	step(t, c)
	if !errors.Is(c.Blocked(), ErrRolledBack) {
		t.Fatalf("after the tree was cut back: blocked = %v", c.Blocked())
	}
}

// BuildTree covers a log written without the tree, in chunks it reports,
// and is a no-op once done.
func TestBuildTree_CoversAnOlderLogResumably(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	old := newPostgres(t, db, PostgresOptions{})
	old.withoutTree = true // as the release before the tree wrote
	var batch []Record
	for i := range 2*treeChunk + 10 {
		batch = append(batch, rec("alice", "room", i%60))
	}
	mustAppend(t, old, batch...)
	l := newPostgres(t, db, PostgresOptions{})
	var calls []int64
	if err := l.BuildTree(ctx, func(covered, total int64) { calls = append(calls, covered) }); err != nil {
		t.Fatal(err)
	}
	if len(calls) < 3 || calls[len(calls)-1] != int64(len(batch)) {
		t.Errorf("progress reported %v; want several chunks ending at %d", calls, len(batch))
	}
	wantTree(t, db.Pool(), int64(len(batch)))
	calls = nil
	if err := l.BuildTree(ctx, func(covered, total int64) { calls = append(calls, covered) }); err != nil || len(calls) != 1 {
		t.Errorf("a second BuildTree: %v, progress %v; want nothing to do", err, calls)
	}
}

// Verification is incremental from the verified point: only what is new is
// read, while a change to the tree under the point is still caught.
func TestVerifyIncremental(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) (Log, func()){
		"memory": func(t *testing.T) (Log, func()) {
			m, err := NewMemory(testKey)
			if err != nil {
				t.Fatal(err)
			}
			return m, func() { m.mu.Lock(); m.hashes[xtlog.StoredHashIndex(3, 0)][0] ^= 1; m.mu.Unlock() }
		},
		"postgres": func(t *testing.T) (Log, func()) {
			db := pgtest.New(t)
			return newPostgres(t, db, PostgresOptions{}), func() {
				// The root of records 1-8, on the tree's right edge at 10.
				idx := xtlog.StoredHashIndex(3, 0)
				if _, err := db.Pool().Exec(context.Background(), `UPDATE issuance_log_tree
					SET hashes = set_byte(hashes, (($1 - first_idx) * 32)::integer, get_byte(hashes, (($1 - first_idx) * 32)::integer) # 1)
					WHERE first_idx = (SELECT max(first_idx) FROM issuance_log_tree WHERE first_idx <= $1)`, idx); err != nil {
					t.Fatal(err)
				}
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			l, tamper := open(t)
			opts, _ := testLogKey(t)
			vs := note.VerifierList(opts.Verifier)
			c, err := NewCheckpointer(l, opts)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 10 {
				mustAppend(t, l, rec("alice", "room", i))
			}
			step(t, c)
			rep, err := VerifyIncremental(ctx, l, opts.Signer.Name(), vs, false)
			if err != nil || !rep.OK || rep.From != 0 || rep.Records != 10 {
				t.Fatalf("first verification = %+v, %v; want a full run of 10 records", rep, err)
			}
			for i := range 5 {
				mustAppend(t, l, rec("bob", "room", i))
			}
			step(t, c)
			rep, err = VerifyIncremental(ctx, l, opts.Signer.Name(), vs, false)
			if err != nil || !rep.OK || rep.From != 10 || rep.Records != 5 {
				t.Fatalf("second verification = %+v, %v; want the 5 records after 10", rep, err)
			}
			tamper() // a stored hash at the top of the tree under the verified point
			rep, err = VerifyIncremental(ctx, l, opts.Signer.Name(), vs, false)
			if err != nil || rep.OK || rep.From != 0 || len(rep.Problems) == 0 || rep.Problems[0].Kind != ProblemTree {
				t.Fatalf("after a stored hash under the point changed = %+v, %v; want a tree problem and a full run", rep, err)
			}
		})
	}
}
