package audit

import (
	"bytes"
	"context"
	"math/bits"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"
	xtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/tlog"
)

// BenchmarkAppendParallelTree is BenchmarkAppendParallel twice on one private
// cluster (fsync on), each on a fresh database: without-tree appends as the
// previous release did (no stored hashes), with-tree as this one does (the
// batch's stored hashes computed from the writer's right edge and inserted in
// the same statement). Their ratio is what the tree costs.
//
// Each run starts from a CHECKPOINT, so that the second sub-benchmark does
// not pay for the first one's WAL (a checkpoint requested by WAL volume, and
// the full-page images after it). -count repeats each sub-benchmark back to
// back; to interleave them on a noisy machine, run the test binary several
// times with -count=1 and compare each process's pair.
func BenchmarkAppendParallelTree(b *testing.B) {
	cluster := pgtest.NewCluster(b, pgtest.Options{})
	for _, bc := range []struct {
		name        string
		withoutTree bool
	}{
		{"without-tree", true},
		{"with-tree", false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			db := cluster.New(b)
			// Time issuance_log_append server-side (pg_stat_user_functions).
			if _, err := db.Pool().Exec(context.Background(), "ALTER DATABASE "+pgx.Identifier{db.Name}.Sanitize()+" SET track_functions = 'pl'"); err != nil {
				b.Fatal(err)
			}
			db.Pool().Reset() // new connections, with the setting
			if _, err := db.Pool().Exec(context.Background(), "CHECKPOINT"); err != nil {
				b.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			l := newPostgres(b, db, PostgresOptions{Registerer: reg})
			// Before the first Append: the writer reads it only after
			// receiving an append, which happens after this write.
			l.withoutTree = bc.withoutTree
			benchAppendParallel(b, l, reg)
			if !bc.withoutTree {
				n, err := storedTreeSize(context.Background(), db.Pool())
				if err != nil {
					b.Fatal(err)
				}
				if n != l.head.seq {
					b.Fatalf("the stored hashes cover %d records, the log has %d", n, l.head.seq)
				}
			}
		})
	}
}

// benchAppendParallel is BenchmarkAppendParallel's measurement on l, whose
// metrics go to reg. It also reports the mean commit time (the writer's, from
// link to COMMIT), the part of it issuance_log_append's statement took in
// Postgres (when track_functions is on), the WAL written per record (the
// cluster's, of which the log is the only writer) and, where /proc has them,
// the CPU time per record of this process (go-µs/record) and of the
// Postgres processes it started (pg-µs/record: backends, WAL writer,
// checkpointer and the rest).
func benchAppendParallel(b *testing.B, l *Postgres, reg *prometheus.Registry) {
	r := rec("alice", "room", 0)
	r.TokenFingerprint = l.Fingerprint("token")
	b.ReportAllocs()
	walStart := walBytes(b, l)
	goStart, pgStart, cpuOK := cpuTimes()
	appendInParallel(b, l, r)
	goEnd, pgEnd, cpuEnd := cpuTimes()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric((walBytes(b, l)-walStart)/float64(b.N), "WAL-B/record")
	if cpuOK && cpuEnd {
		b.ReportMetric(float64((goEnd-goStart).Microseconds())/float64(b.N), "go-µs/record")
		b.ReportMetric(float64((pgEnd-pgStart).Microseconds())/float64(b.N), "pg-µs/record")
	}
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "broker_audit_batch_size":
			h := mf.GetMetric()[0].GetHistogram()
			b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount()), "records/batch")
		case "broker_audit_commit_seconds":
			h := mf.GetMetric()[0].GetHistogram()
			b.ReportMetric(1000*h.GetSampleSum()/float64(h.GetSampleCount()), "ms/commit")
		}
	}
	// The statement's own time, without the commit: what the writer's
	// backend has reported so far (it reports about once a second).
	var calls int64
	var ms float64
	err = l.pool.QueryRow(context.Background(), `SELECT coalesce(sum(calls), 0), coalesce(sum(total_time), 0)
		FROM pg_stat_user_functions WHERE funcname = 'issuance_log_append'`).Scan(&calls, &ms)
	if err != nil {
		b.Fatal(err)
	}
	if calls > 0 {
		b.ReportMetric(ms/float64(calls), "stmt-ms/commit")
	}
}

// BenchmarkLinkBatch is the writer's own work on a batch of 32 records
// before it sends them (Postgres.link: chaining and MACs, and with the tree
// the leaves and their stored hashes), on a tree of a million records.
func BenchmarkLinkBatch(b *testing.B) {
	for _, bc := range []struct {
		name        string
		withoutTree bool
	}{
		{"without-tree", true},
		{"with-tree", false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			k, err := newKeyring(testKey, nil)
			if err != nil {
				b.Fatal(err)
			}
			const size = 1_000_000
			l := &Postgres{keys: k, withoutTree: bc.withoutTree}
			l.head = head{present: true, seq: size}
			l.tree = tree{valid: true, size: size, edge: make([]xtlog.Hash, len(edgeIndexes(size)))}
			batch := make([]*pending, 32)
			for i := range batch {
				r, err := normalize(rec("alice", "room", 0), time.Now())
				if err != nil {
					b.Fatal(err)
				}
				batch[i] = &pending{rec: r}
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, _, _, _, err := l.link(batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// walBytes is the cluster's WAL insert position, in bytes.
func walBytes(b *testing.B, l *Postgres) float64 {
	var n float64
	if err := l.pool.QueryRow(context.Background(), "SELECT (pg_current_wal_insert_lsn() - '0/0')::float8").Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// cpuTimes returns the CPU time (user and system) used so far by this
// process and by the Postgres servers it started (each postmaster and its
// children), read from /proc; ok is false where there is no /proc.
func cpuTimes() (self, pg time.Duration, ok bool) {
	const tick = 10 * time.Millisecond // USER_HZ, 100 on Linux
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, false
	}
	type proc struct {
		ppid int
		comm string
		cpu  time.Duration
	}
	procs := map[int]proc{}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid … utime stime (fields 14 and 15).
		open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(string(stat[end+1:]))
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		procs[pid] = proc{ppid: ppid, comm: string(stat[open+1 : end]), cpu: time.Duration(utime+stime) * tick}
	}
	me, ok := procs[os.Getpid()]
	if !ok {
		return 0, 0, false
	}
	for _, p := range procs {
		if p.comm != "postgres" {
			continue
		}
		if p.ppid == os.Getpid() {
			pg += p.cpu
		} else if parent, ok := procs[p.ppid]; ok && parent.ppid == os.Getpid() && parent.comm == "postgres" {
			pg += p.cpu
		}
	}
	return me.cpu, pg, true
}

const (
	// proveTreeSize is the tree BenchmarkProveRecordTenMillion proves in.
	proveTreeSize = 10_000_000
	// proveRecords is how many of its first leaves are real records,
	// appended through the log; the others are synthetic (syntheticLeaf).
	proveRecords = 1000
)

// BenchmarkProveRecordTenMillion measures inclusion proofs in a tree of
// 10,000,000 leaves stored in Postgres (fresh database, private cluster with
// fsync off: the setup writes ~20 million stored hashes). The first
// proveRecords leaves are records appended through the log, the rest are
// synthetic leaves whose stored hashes are computed in Go and copied into
// issuance_log_tree, so the tree is a real RFC 6962 tree: its root is signed
// into a stored checkpoint and the proofs verify.
//
//   - ProveRecord: xtlog.ProveRecord for a random leaf of the 10M, reading the
//     stored hashes the way Prove does (l.TreeHashes: a read slot and one
//     query per ReadHashes call).
//   - Prove: the whole Prove(ctx, l, seq) for a random real record: the
//     checkpoint, ProveRecord and the record's leaf (Leaves).
//   - ProveRecordFirst1000: ProveRecord for those records' leaves.
//   - Checkpoint, Leaves: those two reads alone.
//   - VerifyProof: tlog.VerifyProof of one of these proofs, offline.
//
// It runs only under -bench and not under -short: the setup takes about 20 s
// on two vCPUs, and the database needs ~2 GB of disk.
func BenchmarkProveRecordTenMillion(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 10,000,000-leaf tree in Postgres (~2 GB)")
	}
	ctx := context.Background()
	start := time.Now()
	cluster := pgtest.NewCluster(b, pgtest.Options{NoFsync: true})
	db := cluster.New(b)
	pool := db.Pool()
	l := newPostgres(b, db, PostgresOptions{})

	// The real records, from concurrent appenders so that they batch.
	var wg sync.WaitGroup
	for w := range 10 {
		wg.Go(func() {
			for range proveRecords / 10 {
				r := rec("user-"+strconv.Itoa(w), "room", w)
				r.TokenFingerprint = l.Fingerprint("token")
				if _, err := l.Append(ctx, r); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	if n, err := storedTreeSize(ctx, pool); err != nil || n != proveRecords {
		b.Fatalf("the stored hashes cover %d records (%v), want %d", n, err, proveRecords)
	}
	appended := time.Since(start)

	// The synthetic leaves' stored hashes, from the real tree's right edge.
	t, err := loadTree(ctx, pool, proveRecords)
	if err != nil {
		b.Fatal(err)
	}
	src := &syntheticHashes{n: proveRecords, end: proveTreeSize, next: xtlog.StoredHashCount(proveRecords), edge: t.edge}
	// A connection of its own: the pool's statements time out after 10s.
	cfg, err := pgx.ParseConfig(db.URL)
	if err != nil {
		b.Fatal(err)
	}
	cfg.RuntimeParams["statement_timeout"] = "0"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"issuance_log_tree"}, []string{"first_idx", "hashes"}, src); err != nil {
		conn.Close(ctx)
		b.Fatal(err)
	}
	if src.next != xtlog.StoredHashCount(proveTreeSize) {
		b.Fatalf("generated stored hashes up to %d, want %d", src.next, xtlog.StoredHashCount(proveTreeSize))
	}
	copyTime := time.Since(start) - appended
	_, err = conn.Exec(ctx, "VACUUM (ANALYZE) issuance_log_tree")
	conn.Close(ctx)
	if err != nil {
		b.Fatal(err)
	}
	vacuumTime := time.Since(start) - appended - copyTime

	// The checkpoint: the root read back from Postgres must be the one the
	// generator computed.
	root, err := xtlog.TreeHash(proveTreeSize, pgHashes{ctx, pool})
	if err != nil {
		b.Fatal(err)
	}
	if root != src.root() {
		b.Fatalf("root %v from Postgres, %v from the generator", root, src.root())
	}
	const origin = "bench.example/log"
	skey, vkey, err := tlog.GenerateKey(origin)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := tlog.NewSigner(skey)
	if err != nil {
		b.Fatal(err)
	}
	verifier, err := tlog.NewVerifier(vkey)
	if err != nil {
		b.Fatal(err)
	}
	msg, err := tlog.SignCheckpoint(tlog.Checkpoint{Origin: origin, Size: proveTreeSize, Root: root}, signer)
	if err != nil {
		b.Fatal(err)
	}
	if err := l.saveCheckpoint(ctx, proveTreeSize, msg, false); err != nil {
		b.Fatal(err)
	}

	// The proofs verify: a real record's through Prove, a synthetic leaf's.
	p, err := Prove(ctx, l, proveRecords/2)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := tlog.VerifyProof(p, p.Extra, origin, note.VerifierList(verifier)); err != nil {
		b.Fatal(err)
	}
	const synthetic = proveTreeSize - 12345
	hs, err := xtlog.ProveRecord(proveTreeSize, synthetic, treeReader{ctx, l})
	if err != nil {
		b.Fatal(err)
	}
	if err := xtlog.CheckRecord(hs, proveTreeSize, root, synthetic, xtlog.RecordHash(syntheticLeaf(synthetic))); err != nil {
		b.Fatal(err)
	}
	var heapMB, indexMB float64
	err = pool.QueryRow(ctx, `SELECT pg_table_size('issuance_log_tree') / 1e6, pg_indexes_size('issuance_log_tree') / 1e6`).Scan(&heapMB, &indexMB)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("setup %.1fs: %d records appended in %.1fs, %d stored hashes computed and copied in %.1fs, VACUUM ANALYZE %.1fs; issuance_log_tree %.0f MB + index %.0f MB; proofs of %d hashes",
		time.Since(start).Seconds(), proveRecords, appended.Seconds(), src.next-xtlog.StoredHashCount(proveRecords), copyTime.Seconds(), vacuumTime.Seconds(), heapMB, indexMB, len(p.Hashes))

	rng := rand.New(rand.NewPCG(1, 2))
	b.Run("ProveRecord", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := xtlog.ProveRecord(proveTreeSize, rng.Int64N(proveTreeSize), treeReader{ctx, l}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ProveRecordFirst1000", func(b *testing.B) { // the leaves Prove proves below
		b.ReportAllocs()
		for b.Loop() {
			if _, err := xtlog.ProveRecord(proveTreeSize, rng.Int64N(proveRecords), treeReader{ctx, l}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Prove", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Prove(ctx, l, 1+rng.Int64N(proveRecords)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Checkpoint", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l.Checkpoint(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Leaves", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			seq := 1 + rng.Int64N(proveRecords)
			if _, err := l.Leaves(ctx, seq-1, seq); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("VerifyProof", func(b *testing.B) { // offline, p from above
		verifiers := note.VerifierList(verifier)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tlog.VerifyProof(p, p.Extra, origin, verifiers); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// syntheticLeaf is the data of synthetic leaf i.
func syntheticLeaf(i int64) []byte {
	return strconv.AppendInt([]byte("synthetic leaf "), i, 10)
}

// syntheticHashes is a pgx.CopyFromSource of the stored hashes of synthetic
// leaves n to end-1, rows (idx, hash) numbered from next on, appended to a
// tree whose right edge is edge (its complete subtrees' hashes, the largest
// first).
type syntheticHashes struct {
	n, end int64
	next   int64 // the stored-hash index of the next row's first hash
	edge   []xtlog.Hash
	row    [2]any
}

// syntheticLeavesPerRow is how many leaves one generated row covers, as one
// append statement's batch does.
const syntheticLeavesPerRow = 32

func (s *syntheticHashes) Next() bool {
	if s.n >= s.end {
		return false
	}
	first := s.next
	b := make([]byte, 0, 2*syntheticLeavesPerRow*len(xtlog.Hash{}))
	for i := 0; i < syntheticLeavesPerRow && s.n < s.end; i++ {
		// As xtlog.StoredHashes: the leaf's hash, then one hash for each
		// complete subtree that the leaf completes (n's trailing ones).
		h := xtlog.RecordHash(syntheticLeaf(s.n))
		b = append(b, h[:]...)
		s.next++
		for range bits.TrailingZeros64(uint64(s.n + 1)) {
			h = xtlog.NodeHash(s.edge[len(s.edge)-1], h)
			s.edge = s.edge[:len(s.edge)-1]
			b = append(b, h[:]...)
			s.next++
		}
		s.edge = append(s.edge, h)
		s.n++
	}
	s.row[0], s.row[1] = first, b
	return true
}

func (s *syntheticHashes) Values() ([]any, error) { return s.row[:], nil }

func (s *syntheticHashes) Err() error { return nil }

// root is the tree hash of the leaves generated so far.
func (s *syntheticHashes) root() xtlog.Hash {
	h := s.edge[len(s.edge)-1]
	for i := len(s.edge) - 2; i >= 0; i-- {
		h = xtlog.NodeHash(s.edge[i], h)
	}
	return h
}
