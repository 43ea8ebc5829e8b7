package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"
	xtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/policy"
)

// BenchmarkLogAtScale measures the issuance log at production scale (10
// million records by default): the storage a record takes, search latency
// for every filter, export throughput and memory, and full and incremental
// verification. It is a measurement run: its body runs once, whatever b.N.
//
// The log is filled through the writer's own path (Postgres.link and
// issuance_log_append, as Postgres.extend calls them, in batches of
// BROKER_SCALE_BATCH records), so that every record, chain link and stored
// tree hash is the one production writes, and the log verifies. The records
// are realistic (scaleGen): 5,000 channels, ~200,000 subjects from three
// issuers, ~85% granted, ~12% denied, ~3% invalid, with the reasons and rules
// the broker writes, spread evenly over the last 10 days.
//
// Environment:
//
//	BROKER_SCALE_RECORDS   records to fill (10000000)
//	BROKER_SCALE_BATCH     records per append statement (500: the writer's MaxBatch)
//	BROKER_SCALE_SEARCHES  calls per search filter (100)
//	BROKER_SCALE_EXPLAIN_MS  EXPLAIN the searches whose p99 is over this (50)
//	BROKER_SCALE_FSYNC     "on" for a cluster with fsync on (default off: fill speed)
//	BROKER_SCALE_REPORT    where to write the results as a markdown table
//
// Run it alone:
//
//	go test -run '^$' -bench BenchmarkLogAtScale -benchtime=1x -timeout 3h ./internal/audit/
func BenchmarkLogAtScale(b *testing.B) {
	if testing.Short() {
		b.Skip("fills a log of millions of records")
	}
	done := false
	for b.Loop() {
		if done {
			continue
		}
		done = true
		s := &scaleRun{b: b, ctx: context.Background()}
		s.run()
	}
}

// scaleRun is one BenchmarkLogAtScale measurement.
type scaleRun struct {
	b     *testing.B
	ctx   context.Context
	n     int64 // records filled
	batch int

	db    *pgtest.DB
	admin *pgx.Conn // no statement timeout: partitions, VACUUM, sizes, EXPLAIN
	l     *Postgres
	gen   *scaleGen

	start, end time.Time // the fill's records' times
	samples    []scaleSample

	rep scaleReport
}

// scaleSample is a record the fill wrote, kept to search for.
type scaleSample struct {
	seq      int64
	at       time.Time
	subject  string
	channel  string
	decision Decision
}

// scaleReport collects the results, in the order they are reported.
type scaleReport struct {
	sections []scaleSection
}

type scaleSection struct {
	title  string
	header []string
	rows   [][]string
	notes  []string
}

func (r *scaleReport) section(title string, header ...string) *scaleSection {
	r.sections = append(r.sections, scaleSection{title: title, header: header})
	return &r.sections[len(r.sections)-1]
}

func (s *scaleSection) row(cells ...string) { s.rows = append(s.rows, cells) }

func (s *scaleSection) note(format string, args ...any) {
	s.notes = append(s.notes, fmt.Sprintf(format, args...))
}

func (r *scaleReport) markdown() string {
	var sb strings.Builder
	sb.WriteString("# BenchmarkLogAtScale\n")
	for _, s := range r.sections {
		fmt.Fprintf(&sb, "\n## %s\n\n", s.title)
		if len(s.header) > 0 {
			sb.WriteString("| " + strings.Join(s.header, " | ") + " |\n")
			sb.WriteString("|" + strings.Repeat(" --- |", len(s.header)) + "\n")
			for _, row := range s.rows {
				sb.WriteString("| " + strings.Join(row, " | ") + " |\n")
			}
		}
		if len(s.notes) > 0 {
			if len(s.header) > 0 {
				sb.WriteString("\n")
			}
			for _, n := range s.notes {
				sb.WriteString(n + "\n")
			}
		}
	}
	return sb.String()
}

func envInt(b *testing.B, name string, def int64) int64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(v, "_", ""), 10, 64)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive whole number", name, v)
	}
	return n
}

// progress prints to stderr at once (b.Log prints only at the end), so that
// a long run can be followed.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s scale: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func (s *scaleRun) run() {
	b := s.b
	s.n = envInt(b, "BROKER_SCALE_RECORDS", 10_000_000)
	s.batch = int(envInt(b, "BROKER_SCALE_BATCH", 500))
	fsync := os.Getenv("BROKER_SCALE_FSYNC") == "on"

	cluster := pgtest.NewCluster(b, pgtest.Options{NoFsync: !fsync})
	s.db = cluster.New(b)
	cfg, err := pgx.ParseConfig(s.db.URL)
	if err != nil {
		b.Fatal(err)
	}
	cfg.RuntimeParams["statement_timeout"] = "0"
	if s.admin, err = pgx.ConnectConfig(s.ctx, cfg); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.admin.Close(context.Background()) })
	s.l = newPostgres(b, s.db, PostgresOptions{})
	s.machine(fsync)

	s.fill()
	s.vacuum()
	s.sizes("Storage after VACUUM (ANALYZE)")
	s.maintain()
	s.sizes("Storage after Maintain (the closed months' indexes rebuilt)")
	s.searches()
	s.export()
	s.plan()
	s.verify()

	md := s.rep.markdown()
	b.Log("\n" + md)
	if path := os.Getenv("BROKER_SCALE_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
			b.Error(err)
		}
	}
}

// maintain runs the broker's hourly upkeep once: the months that closed a
// day ago get their indexes rebuilt full.
func (s *scaleRun) maintain() {
	start := time.Now()
	m, err := s.l.Maintain(s.ctx, 0)
	if err != nil {
		s.b.Fatal(err)
	}
	progress("maintain: %s, %d months compacted", time.Since(start).Round(time.Millisecond), m.Compacted)
	sec := s.rep.section("Maintain", "what", "value")
	sec.row("time", time.Since(start).Round(time.Millisecond).String())
	sec.row("closed months whose indexes were rebuilt (REINDEX CONCURRENTLY)", strconv.Itoa(m.Compacted))
}

// machine reports what the run is on.
func (s *scaleRun) machine(fsync bool) {
	sec := s.rep.section("Machine and setup", "what", "value")
	sec.row("records", fmt.Sprint(s.n))
	sec.row("CPUs (runtime.NumCPU)", fmt.Sprint(runtime.NumCPU()))
	if mi, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(mi), "\n") {
			if strings.HasPrefix(line, "MemTotal:") {
				sec.row("memory", strings.Join(strings.Fields(strings.TrimPrefix(line, "MemTotal:")), " "))
			}
		}
	}
	sec.row("Go", runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH)
	var version string
	if err := s.admin.QueryRow(s.ctx, "SELECT version()").Scan(&version); err != nil {
		s.b.Fatal(err)
	}
	sec.row("Postgres", version)
	for _, name := range []string{"fsync", "shared_buffers", "work_mem", "max_wal_size", "checkpoint_timeout", "full_page_writes", "wal_compression", "synchronous_commit", "random_page_cost", "effective_cache_size", "jit"} {
		var v string
		if err := s.admin.QueryRow(s.ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			s.b.Fatal(err)
		}
		sec.row("pg "+name, v)
	}
	sec.row("fill batch (records per issuance_log_append)", fmt.Sprint(s.batch))
	// Other changes may be under way in the tree: name the code measured.
	for _, f := range []string{"pgquery.go", "compact.go", "postgres.go", "filter.go", "verify.go", "../../migrations/015_issuance_log_compact.sql",
		"../../migrations/017_issuance_log_value_digest.sql"} {
		if src, err := os.ReadFile(f); err == nil {
			sum := sha256.Sum256(src)
			sec.row("sha256 of "+strings.TrimPrefix(f, "../../"), hex.EncodeToString(sum[:8]))
		}
	}
	if !fsync {
		sec.note("The private cluster runs with fsync off (pgtest.Options{NoFsync: true}) for fill speed; set BROKER_SCALE_FSYNC=on for fsync on. WAL volume, sizes and read paths do not depend on it.")
	}
}

// scaleGen makes realistic records. Its tables are fixed; each record draws
// from them with the caller's rng.
type scaleGen struct {
	subjects []scaleSubject
	channels []string
	ips      []string
	agents   []string
	groups   [][]string
	appID    string
	fp       func(token string) string
}

type scaleSubject struct {
	issuer, subject, account string
	uid                      uint32
	groups                   int // index in scaleGen.groups
	ip                       int // usual client IP, index in scaleGen.ips
}

var scaleIssuers = []string{
	"https://sso.example.com/realms/main",     // ~80% of subjects
	"https://accounts.google.com",             // ~19%
	"https://login.partner.example.net/oidc2", // ~1%
}

const (
	scaleSubjects = 200_000
	scaleRooms    = 4000 // room-1 … room-4000
	scaleTeams    = 10   // team-1-N … team-10-N
	scaleTeamSize = 100  // team-X-1 … team-X-100
	scaleIPs      = 2000
	scaleAgents   = 50
)

func newScaleGen(fp func(string) string) *scaleGen {
	rng := rand.New(rand.NewPCG(23, 2026))
	g := &scaleGen{fp: fp, appID: "7d72365eb983485397e3e3f9d460bdda"}
	g.groups = [][]string{nil, {"staff"}, {"staff", "admins"}, {"students"}, {"students", "class-2026"}, {"teachers", "staff"}, {"guests"}}
	for i := range scaleRooms {
		g.channels = append(g.channels, "room-"+strconv.Itoa(i+1))
	}
	for x := range scaleTeams {
		for n := range scaleTeamSize {
			g.channels = append(g.channels, fmt.Sprintf("team-%d-%d", x+1, n+1))
		}
	}
	for i := range scaleIPs {
		switch {
		case i%10 == 9:
			g.ips = append(g.ips, fmt.Sprintf("2001:db8:%x:%x::%x", i/256, i%256, rng.IntN(65536)))
		case i%3 == 0:
			g.ips = append(g.ips, fmt.Sprintf("10.%d.%d.%d", rng.IntN(256), rng.IntN(256), 1+rng.IntN(254)))
		default:
			g.ips = append(g.ips, fmt.Sprintf("%d.%d.%d.%d", 11+rng.IntN(180), rng.IntN(256), rng.IntN(256), 1+rng.IntN(254)))
		}
	}
	for i := range scaleAgents {
		v := 110 + i%20
		switch i % 5 {
		case 0:
			g.agents = append(g.agents, fmt.Sprintf("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/%d.0.%d.%d Safari/537.36", v, 6000+i, i*7))
		case 1:
			g.agents = append(g.agents, fmt.Sprintf("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.%d Safari/605.1.15", i))
		case 2:
			g.agents = append(g.agents, fmt.Sprintf("Mozilla/5.0 (X11; Linux x86_64; rv:%d.0) Gecko/20100101 Firefox/%d.0", v, v))
		case 3:
			g.agents = append(g.agents, fmt.Sprintf("Mozilla/5.0 (iPhone; CPU iPhone OS 17_%d like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148", i))
		default:
			g.agents = append(g.agents, fmt.Sprintf("classroom-app/%d.%d.%d (Android 14; okhttp/4.12.0)", 3, i, i*3))
		}
	}
	for i := range scaleSubjects {
		var s scaleSubject
		switch p := rng.IntN(100); {
		case p < 80:
			s.issuer = scaleIssuers[0]
			s.subject = fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<12), 0x8000|rng.IntN(1<<14), rng.Uint64()&(1<<48-1))
		case p < 99:
			s.issuer = scaleIssuers[1]
			s.subject = fmt.Sprintf("1%020d", rng.Uint64()%100_000_000_000_000_000)
		default:
			s.issuer = scaleIssuers[2]
			s.subject = fmt.Sprintf("partner|%08d", i)
		}
		if rng.IntN(100) < 30 {
			s.account = fmt.Sprintf("user%06d", i)
		}
		if rng.IntN(100) < 70 {
			s.uid = 1 + rng.Uint32N(1<<32-2)
		}
		s.groups = rng.IntN(len(g.groups))
		s.ip = rng.IntN(scaleIPs)
		g.subjects = append(g.subjects, s)
	}
	return g
}

// Rules, as policy.Rule.String writes them.
var (
	scaleAllowRTC = []string{
		`#3 allow group:staff publisher "room-*" maxTtl=3600s`,
		`#4 allow group:students subscriber "room-*"`,
		`#5 allow group:teachers publisher "*" maxTtl=7200s`,
		`#7 allow group:admins publisher "*"`,
		`#9 allow group:students publisher "team-*" maxTtl=3600s`,
		`#12 allow group:staff subscriber "*"`,
		`#15 allow group:guests subscriber "room-1*" maxTtl=900s`,
	}
	scaleAllowLogin = []string{
		`#20 allow group:staff publisher "rtm:login"`,
		`#21 allow group:students publisher "rtm:login"`,
		`#22 allow group:staff publisher "chat:login"`,
	}
	scaleDenyRules = []string{
		`#40 deny group:guests publisher "*"`,
		`#41 deny group:students publisher "room-9*"`,
		`#42 deny group:class-2026 subscriber "team-7-*"`,
	}
	scaleInvalid = []string{
		`expiry: must be a whole number of seconds, got "1h"`,
		`role: must be publisher, subscriber, 1 or 2`,
		`channel: is required`,
		`uid: must be a whole number from 1 to 4294967295`,
		`service: must be rtc, rtm, rtc+rtm, chat or chat-app, got "video"`,
	}
)

// record returns a record at time at; serial makes its token unique.
func (g *scaleGen) record(rng *rand.Rand, at time.Time, serial int64) Record {
	s := &g.subjects[rng.IntN(len(g.subjects))]
	var rid [12]byte
	for i := range rid {
		rid[i] = byte(rng.Uint32())
	}
	r := Record{
		Time: at, RequestID: hex.EncodeToString(rid[:]),
		Issuer: s.issuer, Subject: s.subject, Account: s.account, UID: s.uid,
		Groups: g.groups[s.groups], Project: "default", AppID: g.appID,
		PolicyVersion: 100 + serial/250_000,
		UserAgent:     g.agents[(s.ip+int(serial%3))%len(g.agents)],
	}
	if rng.IntN(10) == 0 {
		r.ClientIP = g.ips[rng.IntN(len(g.ips))]
	} else {
		r.ClientIP = g.ips[s.ip]
	}
	if rng.IntN(2) == 0 {
		var t [16]byte
		for i := range t {
			t[i] = byte(rng.Uint32())
		}
		r.TraceID = hex.EncodeToString(t[:])
	}
	switch p := rng.IntN(100); {
	case p < 75:
		r.Service, r.Channel = ServiceRTC, g.channels[rng.IntN(len(g.channels))]
		r.Role = "subscriber"
		if rng.IntN(5) < 2 {
			r.Role = "publisher"
		}
	case p < 95:
		r.Service = ServiceRTM
	default:
		r.Service = ServiceChat
	}
	switch rng.IntN(3) {
	case 0:
		r.RequestedTTL = time.Hour
	case 1:
		r.RequestedTTL = 24 * time.Hour
	}
	switch p := rng.IntN(100); {
	case p < 85:
		r.Decision = DecisionGranted
		r.GrantedTTL = time.Hour
		if r.Service == ServiceRTC {
			r.Rule = scaleAllowRTC[rng.IntN(len(scaleAllowRTC))]
		} else {
			r.Rule = scaleAllowLogin[rng.IntN(len(scaleAllowLogin))]
		}
		r.Reason = "allowed by rule " + r.Rule
		r.TokenFingerprint = g.fp("007eJxTYPh" + strconv.FormatInt(serial, 36) + r.RequestID)
	case p < 97:
		r.Decision = DecisionDenied
		if r.Service != ServiceRTC { // denials in this model are for channels
			r.Service, r.Channel, r.Role = ServiceRTC, g.channels[rng.IntN(len(g.channels))], "publisher"
		}
		if rng.IntN(10) < 7 {
			// policy's verdict.decision: the subject and channel are in it.
			r.Reason = "no rule allows user:" + s.subject + " to be " + r.Role + " on " + strconv.Quote(r.Channel)
		} else {
			r.Rule = scaleDenyRules[rng.IntN(len(scaleDenyRules))]
			r.Reason = "denied by rule " + r.Rule
		}
	default:
		r.Decision = DecisionInvalid
		r.UID = 0 // refused before the uid is bound
		r.Reason = scaleInvalid[rng.IntN(len(scaleInvalid))]
		if strings.HasPrefix(r.Reason, "channel:") {
			r.Channel = ""
		}
	}
	return r
}

// fill appends s.n records through the writer's link and
// issuance_log_append, pipelined: the next batch is built and linked while
// the previous one commits.
func (s *scaleRun) fill() {
	b, ctx, l := s.b, s.ctx, s.l
	s.gen = newScaleGen(l.Fingerprint)
	s.end = time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	s.start = s.end.Add(-10 * 24 * time.Hour)
	span := s.end.Sub(s.start)

	// The months the records fall in get their partitions, as the broker
	// makes them ahead (records outside every partition would go to
	// issuance_log_record_other).
	var made []string
	for m := time.Date(s.start.Year(), s.start.Month(), 1, 0, 0, 0, 0, time.UTC); !m.After(s.end); m = m.AddDate(0, 1, 0) {
		var ok bool
		if err := s.admin.QueryRow(ctx, "SELECT issuance_log_partition($1)", m).Scan(&ok); err != nil {
			b.Fatal(err)
		}
		if ok {
			made = append(made, m.Format("2006-01"))
		}
	}
	var parts []string
	rows, err := s.admin.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'issuance_log_record'::regclass ORDER BY 1`)
	if err != nil {
		b.Fatal(err)
	}
	if parts, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		b.Fatal(err)
	}

	if err := l.syncTree(ctx); err != nil {
		b.Fatal(err)
	}
	walStart := s.walLSN()
	sampleEvery := max(1, s.n/20_000)

	type linked struct {
		args []any
		n    int
	}
	fillCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make(chan linked, 4)
	var (
		genErr  error
		genTime time.Duration
		wg      sync.WaitGroup
	)
	started := time.Now()
	wg.Go(func() {
		defer close(out)
		rng := rand.New(rand.NewPCG(1, uint64(s.n)))
		batch := make([]*pending, 0, s.batch)
		for first := int64(0); first < s.n; first += int64(s.batch) {
			t0 := time.Now()
			batch = batch[:0]
			for i := first; i < min(first+int64(s.batch), s.n); i++ {
				at := s.start.Add(time.Duration(float64(span) * float64(i) / float64(s.n)))
				r, err := normalize(s.gen.record(rng, at, i), at)
				if err != nil {
					genErr = err
					return
				}
				if i%sampleEvery == 0 {
					s.samples = append(s.samples, scaleSample{seq: i + 1, at: r.Time, subject: r.Subject, channel: r.Channel, decision: r.Decision})
				}
				batch = append(batch, &pending{ctx: ctx, rec: r})
			}
			recs, next, args, nextTree, err := l.link(batch)
			if err != nil {
				genErr = err
				return
			}
			if recs[0].Seq != first+1 {
				genErr = fmt.Errorf("linked seq %d, want %d", recs[0].Seq, first+1)
				return
			}
			// The expected head's hash and MAC are slices of l.head, which
			// the next link changes before this batch is sent.
			args[1], args[2] = bytes.Clone(args[1].([]byte)), bytes.Clone(args[2].([]byte))
			// As extend does once the statement says "appended"; the
			// statements run in this order, and any failure ends the fill.
			l.head, l.tree = next, nextTree
			genTime += time.Since(t0)
			select {
			case out <- linked{args: args, n: len(batch)}:
			case <-fillCtx.Done():
				return
			}
		}
	})
	var (
		dbTime  time.Duration
		written int64
		next    = s.n / 10
		failed  error
	)
	for lk := range out {
		if failed != nil {
			continue // drain
		}
		t0 := time.Now()
		var (
			outcome    string
			seq        *int64
			hash, mac  []byte
			keyID      *string
			hasRecords *bool
			version    *int64
		)
		err := l.pool.QueryRow(ctx, appendSQL, lk.args...).Scan(&outcome, &seq, &hash, &mac, &keyID, &hasRecords, &version)
		dbTime += time.Since(t0)
		if err == nil && outcome != outcomeAppended {
			err = fmt.Errorf("issuance_log_append: outcome %q", outcome)
		}
		if err != nil {
			failed = fmt.Errorf("append at %d: %w", written, err)
			cancel()
			continue
		}
		written += int64(lk.n)
		if written >= next {
			el := time.Since(started)
			progress("filled %d/%d records in %v (%.0f records/s)", written, s.n, el.Round(time.Second), float64(written)/el.Seconds())
			next += s.n / 10
		}
	}
	wg.Wait()
	if failed != nil {
		b.Fatal(failed)
	}
	if genErr != nil {
		b.Fatal(genErr)
	}
	elapsed := time.Since(started)
	wal := s.walLSN() - walStart

	var count, contexts int64
	if err := s.admin.QueryRow(ctx, "SELECT count(*) FROM issuance_log_record").Scan(&count); err != nil {
		b.Fatal(err)
	}
	if count != s.n || l.head.seq != s.n {
		b.Fatalf("the log holds %d records (head %d), want %d", count, l.head.seq, s.n)
	}
	if n, err := storedTreeSize(ctx, l.pool); err != nil || n != s.n {
		b.Fatalf("the stored tree covers %d records (%v), want %d", n, err, s.n)
	}
	if err := s.admin.QueryRow(ctx, "SELECT count(*) FROM issuance_log_value WHERE kind = 15").Scan(&contexts); err != nil {
		b.Fatal(err)
	}

	sec := s.rep.section("Fill", "what", "value")
	sec.row("records", fmt.Sprint(s.n))
	sec.row("time span of the records", s.start.Format(time.RFC3339)+" … "+s.end.Format(time.RFC3339))
	sec.row("partitions made for the fill", strings.Join(made, ", "))
	sec.row("partitions of issuance_log_record", strings.Join(parts, ", "))
	sec.row("fill time", elapsed.Round(time.Millisecond).String())
	sec.row("fill rate", fmt.Sprintf("%.0f records/s", float64(s.n)/elapsed.Seconds()))
	sec.row("  Go: build + normalize + link (overlapped with the DB)", fmt.Sprintf("%v (%.1f µs/record)", genTime.Round(time.Millisecond), float64(genTime.Microseconds())/float64(s.n)))
	sec.row("  DB: issuance_log_append statements", fmt.Sprintf("%v (%.1f µs/record, %.1f ms/statement)", dbTime.Round(time.Millisecond), float64(dbTime.Microseconds())/float64(s.n), float64(dbTime.Milliseconds())/float64((s.n+int64(s.batch)-1)/int64(s.batch))))
	sec.row("WAL written during the fill", fmt.Sprintf("%.0f MB", float64(wal)/1e6))
	sec.row("WAL per record", fmt.Sprintf("%.0f B", float64(wal)/float64(s.n)))
	sec.row("distinct context values (kind 15)", fmt.Sprint(contexts))
	sec.note("The fill calls Postgres.link and runs appendSQL exactly as Postgres.extend does (the writer's path minus its queue), %d records per statement; the records, their chain hashes and the tree's stored hashes are the production ones (the full verification below checks them). The fill rate is not the rate of Append under concurrent requests (see BenchmarkAppendParallel).", s.batch)
	b.ReportMetric(float64(s.n)/elapsed.Seconds(), "fill-records/s")
	b.ReportMetric(float64(wal)/float64(s.n), "WAL-B/record")
	progress("fill done: %d records in %v", s.n, elapsed.Round(time.Second))
}

func (s *scaleRun) walLSN() int64 {
	var n int64
	if err := s.admin.QueryRow(s.ctx, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").Scan(&n); err != nil {
		s.b.Fatal(err)
	}
	return n
}

func (s *scaleRun) vacuum() {
	t0 := time.Now()
	if _, err := s.admin.Exec(s.ctx, "VACUUM (ANALYZE)"); err != nil {
		s.b.Fatal(err)
	}
	vac := time.Since(t0)
	if _, err := s.admin.Exec(s.ctx, "CHECKPOINT"); err != nil {
		s.b.Fatal(err)
	}
	progress("VACUUM ANALYZE %v, CHECKPOINT %v", vac.Round(time.Millisecond), (time.Since(t0) - vac).Round(time.Millisecond))
	s.rep.sections[len(s.rep.sections)-1].row("VACUUM (ANALYZE) of the database after the fill", vac.Round(time.Millisecond).String())
}

// sizes reports the bytes a record takes, and where.
func (s *scaleRun) sizes(title string) {
	b, ctx := s.b, s.ctx
	perRec := func(n int64) string { return fmt.Sprintf("%.1f", float64(n)/float64(s.n)) }
	mb := func(n int64) string { return fmt.Sprintf("%.1f", float64(n)/1e6) }

	sec := s.rep.section(title, "relation", "MB", "bytes/record")
	type part struct {
		name                   string
		rows, main, table, idx int64
		total                  int64
	}
	rows, err := s.admin.Query(ctx, `SELECT c.relname, c.reltuples::bigint, pg_relation_size(c.oid), pg_table_size(c.oid),
			pg_indexes_size(c.oid), pg_total_relation_size(c.oid)
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'issuance_log_record'::regclass ORDER BY 1`)
	if err != nil {
		b.Fatal(err)
	}
	var parts []part
	var p part
	if _, err := pgx.ForEachRow(rows, []any{&p.name, &p.rows, &p.main, &p.table, &p.idx, &p.total}, func() error {
		parts = append(parts, p)
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	var recMain, recTable, recIdx, recTotal int64
	for _, p := range parts {
		recMain += p.main
		recTable += p.table
		recIdx += p.idx
		recTotal += p.total
	}
	var idxNames []string
	idxSizes := map[string]int64{}
	rows, err = s.admin.Query(ctx, `SELECT p.relname, sum(pg_relation_size(i.inhrelid))::bigint
		FROM pg_index x JOIN pg_class p ON p.oid = x.indexrelid JOIN pg_inherits i ON i.inhparent = x.indexrelid
		WHERE x.indrelid = 'issuance_log_record'::regclass GROUP BY p.relname ORDER BY 2 DESC`)
	if err != nil {
		b.Fatal(err)
	}
	var name string
	var size int64
	if _, err := pgx.ForEachRow(rows, []any{&name, &size}, func() error {
		idxNames = append(idxNames, name)
		idxSizes[name] = size
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	rel := func(name string) (total, table, idx int64) {
		if err := s.admin.QueryRow(ctx, "SELECT pg_total_relation_size($1::regclass), pg_table_size($1::regclass), pg_indexes_size($1::regclass)", name).Scan(&total, &table, &idx); err != nil {
			b.Fatal(err)
		}
		return
	}
	valTotal, valTable, valIdx := rel("issuance_log_value")
	minTotal, _, _ := rel("issuance_log_minute")
	treeTotal, treeTable, treeIdx := rel("issuance_log_tree")
	all := recTotal + valTotal + minTotal + treeTotal

	sec.row("**total** (record partitions + value + minute + tree)", mb(all), "**"+perRec(all)+"**")
	sec.row("issuance_log_record, all partitions (table + TOAST + indexes)", mb(recTotal), perRec(recTotal))
	sec.row("  heap (main fork)", mb(recMain), perRec(recMain))
	sec.row("  TOAST + FSM + VM", mb(recTable-recMain), perRec(recTable-recMain))
	for _, n := range idxNames {
		sec.row("  index "+n+" (all partitions)", mb(idxSizes[n]), perRec(idxSizes[n]))
	}
	sec.row("issuance_log_value (dictionary: table + index)", mb(valTotal), perRec(valTotal))
	sec.row("  table", mb(valTable), perRec(valTable))
	sec.row("  indexes (pkey, (kind, issuance_log_value_key(value)), channels, contexts)", mb(valIdx), perRec(valIdx))
	sec.row("issuance_log_minute", mb(minTotal), perRec(minTotal))
	sec.row("issuance_log_tree (table + TOAST + index)", mb(treeTotal), perRec(treeTotal))
	sec.row("  table + TOAST", mb(treeTable), perRec(treeTable))
	sec.row("  index", mb(treeIdx), perRec(treeIdx))
	for _, p := range parts {
		sec.row(fmt.Sprintf("partition %s (%d rows)", p.name, p.rows), mb(p.total), "")
	}
	var avgRow float64
	if err := s.admin.QueryRow(ctx, "SELECT avg(pg_column_size(r.*)) FROM (SELECT * FROM issuance_log_record TABLESAMPLE SYSTEM (1)) r").Scan(&avgRow); err != nil {
		b.Fatal(err)
	}
	sec.note("Average issuance_log_record tuple (pg_column_size of a 1%% sample, without the 24-byte tuple header and 4-byte line pointer): %.1f bytes.", avgRow)
	b.ReportMetric(float64(all)/float64(s.n), "B/record")
	b.ReportMetric(float64(recMain)/float64(s.n), "heap-B/record")

	kinds := s.rep.section("issuance_log_value by kind", "kind", "values", "value bytes (sum of octet_length)")
	rows, err = s.admin.Query(ctx, "SELECT kind, count(*), sum(octet_length(value))::bigint FROM issuance_log_value GROUP BY kind ORDER BY kind")
	if err != nil {
		b.Fatal(err)
	}
	kindNames := map[int16]string{2: "2 subject", 3: "3 account", 4: "4 groups", 6: "6 channel", 10: "10 client IP", 11: "11 user agent", 15: "15 context"}
	var kind int16
	var count, valueBytes int64
	if _, err := pgx.ForEachRow(rows, []any{&kind, &count, &valueBytes}, func() error {
		kinds.row(kindNames[kind], fmt.Sprint(count), fmt.Sprint(valueBytes))
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	progress("storage: %.1f bytes/record", float64(all)/float64(s.n))
}

// searchCase is one filter of the search measurement; filter returns the
// filter of one call.
type searchCase struct {
	name   string
	filter func(rng *rand.Rand) Filter
}

type searchResult struct {
	name          string
	calls, errs   int
	blank         int // records returned with values missing
	p50, p99, max time.Duration
	mean          time.Duration
	avgRecords    float64
	slowest       Filter
	firstErr      error
}

func (s *scaleRun) searchCases() []searchCase {
	g := s.gen
	span := s.end.Sub(s.start)
	lo, hi := s.start.Add(span/4), s.start.Add(3*span/4)
	var middle []scaleSample
	for _, x := range s.samples {
		if !x.at.Before(lo) && x.at.Before(hi) {
			middle = append(middle, x)
		}
	}
	withChannel := slices.DeleteFunc(slices.Clone(middle), func(x scaleSample) bool { return x.channel == "" })
	if len(middle) == 0 || len(withChannel) == 0 {
		s.b.Fatal("no samples in the middle of the data")
	}
	cursor := func(rng *rand.Rand) string { return encodeCursor(1 + rng.Int64N(s.n)) }
	window := func(rng *rand.Rand) (time.Time, time.Time) {
		from := lo.Add(time.Duration(rng.Int64N(int64(hi.Sub(lo) - time.Hour))))
		return from, from.Add(time.Hour)
	}
	around := func(rng *rand.Rand, at time.Time) (time.Time, time.Time) {
		from := at.Add(-time.Duration(rng.Int64N(int64(time.Hour))))
		return from, from.Add(time.Hour)
	}
	subject := func(rng *rand.Rand, ok func(*scaleSubject) bool) *scaleSubject {
		for {
			if x := &g.subjects[rng.IntN(len(g.subjects))]; ok(x) {
				return x
			}
		}
	}
	return []searchCase{
		{"none (first page)", func(*rand.Rand) Filter { return Filter{} }},
		{"none (page at a random cursor)", func(rng *rand.Rand) Filter { return Filter{Cursor: cursor(rng)} }},
		{"subject", func(rng *rand.Rand) Filter {
			return Filter{Subject: subject(rng, func(*scaleSubject) bool { return true }).subject}
		}},
		{"account", func(rng *rand.Rand) Filter {
			return Filter{Account: subject(rng, func(x *scaleSubject) bool { return x.account != "" }).account}
		}},
		{"uid", func(rng *rand.Rand) Filter {
			u := subject(rng, func(x *scaleSubject) bool { return x.uid != 0 }).uid
			return Filter{UID: &u}
		}},
		{"channel exact", func(rng *rand.Rand) Filter { return Filter{Channel: g.channels[rng.IntN(len(g.channels))]} }},
		{"channel prefix team-X-* (100 channels)", func(rng *rand.Rand) Filter {
			return Filter{Channel: fmt.Sprintf("team-%d-*", 1+rng.IntN(scaleTeams))}
		}},
		{"channel prefix room-N* (~1,111 channels)", func(rng *rand.Rand) Filter {
			return Filter{Channel: fmt.Sprintf("room-%d*", 1+rng.IntN(3))}
		}},
		{"decision=denied (random cursor)", func(rng *rand.Rand) Filter {
			return Filter{Decision: DecisionDenied, Cursor: cursor(rng)}
		}},
		{"decision=invalid (random cursor)", func(rng *rand.Rand) Filter {
			return Filter{Decision: DecisionInvalid, Cursor: cursor(rng)}
		}},
		{"issuer, common (80% / 19% of subjects)", func(rng *rand.Rand) Filter {
			return Filter{Issuer: scaleIssuers[rng.IntN(2)], Cursor: cursor(rng)}
		}},
		{"issuer, rare (1% of subjects)", func(rng *rand.Rand) Filter {
			return Filter{Issuer: scaleIssuers[2], Cursor: cursor(rng)}
		}},
		{"project=default (random cursor)", func(rng *rand.Rand) Filter {
			return Filter{Project: "default", Cursor: cursor(rng)}
		}},
		{"projects=[default] (auditor scope, random cursor)", func(rng *rand.Rand) Filter {
			return Filter{Projects: []string{"default"}, Cursor: cursor(rng)}
		}},
		{"time window 1h", func(rng *rand.Rand) Filter {
			from, to := window(rng)
			return Filter{From: from, To: to}
		}},
		{"subject + 1h window", func(rng *rand.Rand) Filter {
			x := middle[rng.IntN(len(middle))]
			from, to := around(rng, x.at)
			return Filter{Subject: x.subject, From: from, To: to}
		}},
		{"channel + 1h window", func(rng *rand.Rand) Filter {
			x := withChannel[rng.IntN(len(withChannel))]
			from, to := around(rng, x.at)
			return Filter{Channel: x.channel, From: from, To: to}
		}},
		{"decision=denied + 1h window", func(rng *rand.Rand) Filter {
			from, to := window(rng)
			return Filter{Decision: DecisionDenied, From: from, To: to}
		}},
	}
}

// searches measures Search for each filter.
func (s *scaleRun) searches() {
	calls := int(envInt(s.b, "BROKER_SCALE_SEARCHES", 100))
	explainOver := time.Duration(envInt(s.b, "BROKER_SCALE_EXPLAIN_MS", 50)) * time.Millisecond
	rng := rand.New(rand.NewPCG(7, 7))
	var results []searchResult
	for _, c := range s.searchCases() {
		r := searchResult{name: c.name, calls: calls}
		times := make([]time.Duration, 0, calls)
		var records int
		for i := 0; i < r.calls; i++ {
			if i == 10 && r.calls > 50 {
				var sum time.Duration
				for _, t := range times {
					sum += t
				}
				if sum/10 > 500*time.Millisecond {
					r.calls = 50 // slow: the 50 the measurement needs
				}
			}
			f := c.filter(rng)
			t0 := time.Now()
			page, err := s.l.Search(s.ctx, f)
			d := time.Since(t0)
			if err != nil {
				r.errs++
				if r.firstErr == nil {
					r.firstErr = err
				}
			}
			if len(times) == 0 || d > slices.Max(times) {
				r.slowest = f
			}
			times = append(times, d)
			records += len(page.Records)
			for _, rec := range page.Records {
				if rec.Issuer == "" || rec.Subject == "" || rec.ClientIP == "" || rec.UserAgent == "" {
					r.blank++ // every record the fill wrote has these
				}
			}
		}
		slices.Sort(times)
		r.p50, r.p99, r.max = quantile(times, 0.50), quantile(times, 0.99), times[len(times)-1]
		var sum time.Duration
		for _, t := range times {
			sum += t
		}
		r.mean = sum / time.Duration(len(times))
		r.avgRecords = float64(records) / float64(r.calls)
		results = append(results, r)
		progress("search %-50s p50 %8.2f ms  p99 %8.2f ms  max %8.2f ms  %.1f records/call  %d errors  %d blank", c.name, ms(r.p50), ms(r.p99), ms(r.max), r.avgRecords, r.errs, r.blank)
	}
	sec := s.rep.section(fmt.Sprintf("Search latency (l.Search, %d calls per filter unless noted, varied values, page size %d)", calls, DefaultLimit),
		"filter", "calls", "p50 ms", "p99 ms", "max ms", "mean ms", "records/call", "records with values missing", "errors")
	var slow []searchResult
	for _, r := range results {
		errs := fmt.Sprint(r.errs)
		if r.firstErr != nil {
			errs += ": " + strings.ReplaceAll(r.firstErr.Error(), "|", "/")
		}
		sec.row(r.name, fmt.Sprint(r.calls), fmt.Sprintf("%.2f", ms(r.p50)), fmt.Sprintf("%.2f", ms(r.p99)), fmt.Sprintf("%.2f", ms(r.max)),
			fmt.Sprintf("%.2f", ms(r.mean)), fmt.Sprintf("%.1f", r.avgRecords), fmt.Sprint(r.blank), errs)
		unit := strings.Map(func(c rune) rune {
			if c == ' ' || c == ',' || c == '(' || c == ')' || c == '%' || c == '/' {
				return '_'
			}
			return c
		}, r.name)
		s.b.ReportMetric(ms(r.p50), "search:"+unit+":p50-ms")
		s.b.ReportMetric(ms(r.p99), "search:"+unit+":p99-ms")
		if r.p99 > explainOver || r.errs > 0 || r.blank > 0 {
			slow = append(slow, r)
		}
	}
	sec.note("Values vary per call: subjects, accounts and uids from the ~200,000 subjects (most have ~%d records), channels at random, windows one hour wide at random in the middle half of the 10 days (subject and channel windows around one of their records). Filters with a single possible value page from a random cursor instead. The reads pool is the writer's (pg.Open defaults: statement_timeout 10s); the value cache starts empty.", s.n/scaleSubjects)
	for _, r := range slow {
		s.explain(r)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// quantile is the q quantile of sorted (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(float64(len(sorted))*q+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// scaleSearchSQL is the statement Search runs for f (query.searchSQL, after
// resolveChannels).
func (s *scaleRun) scaleSearchSQL(f Filter) (string, []any, error) {
	q, err := validate(f, true)
	if err != nil {
		return "", nil, err
	}
	if err := resolveChannels(s.ctx, s.l.reads, &q); err != nil {
		return "", nil, err
	}
	sqlText, args := q.searchSQL()
	return sqlText, args, nil
}

// explain adds the plans of the slowest call of r to the report: the custom
// plan (EXPLAIN ANALYZE with the call's values) and the generic plan a
// prepared statement may switch to after five executions.
func (s *scaleRun) explain(r searchResult) {
	sec := s.rep.section("EXPLAIN: " + r.name + fmt.Sprintf(" (p99 %.1f ms)", ms(r.p99)))
	sqlText, args, err := s.scaleSearchSQL(r.slowest)
	if err != nil {
		sec.note("cannot build the statement: %v", err)
		return
	}
	var argText []string
	for _, a := range args {
		argText = append(argText, fmt.Sprintf("%v", a))
	}
	sec.note("Statement:\n\n```sql\n%s\n```\n\nArguments of the slowest call: %s\n", sqlText, strings.Join(argText, ", "))
	plan := func(sqlText string, args ...any) (string, error) {
		rows, err := s.admin.Query(s.ctx, sqlText, args...)
		if err != nil {
			return "", err
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		return strings.Join(lines, "\n"), err
	}
	custom, err := plan("EXPLAIN (ANALYZE, BUFFERS) "+sqlText, args...)
	if err != nil {
		custom = "error: " + err.Error()
	}
	sec.note("Custom plan (EXPLAIN (ANALYZE, BUFFERS) with the values):\n\n```\n%s\n```\n", custom)
	if _, err := s.admin.Prepare(s.ctx, "scale_explain", sqlText); err != nil {
		sec.note("generic plan: prepare: %v", err)
		return
	}
	defer func() {
		_ = s.admin.Deallocate(s.ctx, "scale_explain")
		_, _ = s.admin.Exec(s.ctx, "RESET plan_cache_mode")
	}()
	if _, err := s.admin.Exec(s.ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		sec.note("generic plan: %v", err)
		return
	}
	params := make([]string, len(args))
	for i := range params {
		params[i] = "$" + strconv.Itoa(i+1)
	}
	// The simple protocol puts the values in as literals, which EXECUTE
	// takes as the prepared statement's parameters.
	generic, err := plan("EXPLAIN (ANALYZE, BUFFERS) EXECUTE scale_explain("+strings.Join(params, ", ")+")",
		append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...)
	if err != nil {
		generic = "error: " + err.Error()
	}
	sec.note("Generic plan (plan_cache_mode = force_generic_plan, EXPLAIN (ANALYZE, BUFFERS) EXECUTE):\n\n```\n%s\n```\n", generic)
}

// rssSampler samples this process's VmRSS until stopped.
type rssSampler struct {
	peak atomic.Int64 // kB
	stop chan struct{}
	done chan struct{}
}

func procStatus(field string) int64 {
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(st), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return -1
}

func startRSS() *rssSampler {
	r := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if v := procStatus("VmRSS"); v > r.peak.Load() {
				r.peak.Store(v)
			}
			select {
			case <-r.stop:
				return
			case <-t.C:
			}
		}
	}()
	return r
}

func (r *rssSampler) end() int64 {
	close(r.stop)
	<-r.done
	return r.peak.Load()
}

// resetHWM resets VmHWM to the current RSS (Linux: clear_refs 5).
func resetHWM() bool { return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil }

// countingWriter counts an export's bytes and lines, and the CSV rows whose
// issuer (the fourth column; the three before it never hold a comma or a
// quote) is empty: a record exported without its values.
type countingWriter struct {
	n, lines, blank int64
	head            []byte // the start of the current line, while need > 0
	need            int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	size := len(p)
	for len(p) > 0 {
		if w.need > 0 {
			k := min(w.need, len(p))
			nl := bytes.IndexByte(p[:k], '\n')
			if nl >= 0 {
				k = nl
			}
			w.head = append(w.head, p[:k]...)
			w.need -= k
			p = p[k:]
			if w.need > 0 && nl < 0 {
				break // the line continues in the next Write
			}
			w.checkHead()
			w.need = 0
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			break
		}
		w.lines++
		p = p[i+1:]
		w.head, w.need = w.head[:0], 96
	}
	return size, nil
}

func (w *countingWriter) checkHead() {
	if len(w.head) == 0 {
		return
	}
	commas := 0
	for i, c := range w.head {
		if c == ',' {
			if commas++; commas == 3 {
				if i+1 < len(w.head) && w.head[i+1] == ',' {
					w.blank++
				}
				return
			}
		}
	}
}

// export measures Export of every record as CSV, and the memory it takes.
// plan measures what a policy plan reads and replays: every granted and
// denied decision of the whole log grouped (Log.Decisions), each group
// decided again on a small proposed policy (policy.NewReplayer), as
// POST /v1/policies/plan does.
func (s *scaleRun) plan() {
	rules := []policy.Rule{
		{Subject: "group:staff", Channel: "room-*", Role: policy.Publisher, Effect: policy.Allow},
		{Subject: "*", Channel: "room-*", Role: policy.Subscriber, Effect: policy.Allow},
		{Subject: "group:teachers", Channel: "team-*", Role: policy.Publisher, Effect: policy.Allow},
	}
	replay, err := policy.NewReplayer(s.ctx, rules)
	if err != nil {
		s.b.Fatal(err)
	}
	defer replay.Close()
	start := time.Now()
	var groups, decisions, turned int64
	err = s.l.Decisions(s.ctx, time.Now().Add(-30*24*time.Hour), func(d DecisionCount) error {
		groups++
		decisions += d.Count
		got, err := replay.Decide(policy.Caller{Subject: d.Subject, Groups: d.Groups}, "default", d.Channel, policy.Role(d.Role))
		if err == nil && got.Allowed != (d.Decision == DecisionGranted) {
			turned += d.Count
		}
		return nil
	})
	if err != nil {
		s.b.Fatal(err)
	}
	took := time.Since(start)
	progress("plan: %s for %d decisions in %d groups (%d turned around)", took.Round(time.Millisecond), decisions, groups, turned)
	sec := s.rep.section("Plan (Log.Decisions + replay on proposed rules)", "what", "value")
	sec.row("time", took.Round(time.Millisecond).String())
	sec.row("decisions replayed", strconv.FormatInt(decisions, 10))
	sec.row("distinct (caller, project, channel, role, decision)", strconv.FormatInt(groups, 10))
	sec.row("decisions the proposed rules turn around", strconv.FormatInt(turned, 10))
	s.b.ReportMetric(took.Seconds(), "plan-s")
}

func (s *scaleRun) export() {
	runtime.GC()
	before := procStatus("VmRSS")
	hwmReset := resetHWM()
	sampler := startRSS()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	w := &countingWriter{}
	t0 := time.Now()
	err := s.l.Export(s.ctx, Filter{}, FormatCSV, w)
	d := time.Since(t0)
	peak := sampler.end()
	runtime.ReadMemStats(&ms1)
	hwm := procStatus("VmHWM")
	if err != nil {
		s.b.Fatalf("export: %v", err)
	}
	sec := s.rep.section("Export (l.Export, Filter{}, csv, to a counting writer)", "what", "value")
	sec.row("time", d.Round(time.Millisecond).String())
	sec.row("rate", fmt.Sprintf("%.0f records/s (%.1f MB/s of CSV)", float64(s.n)/d.Seconds(), float64(w.n)/1e6/d.Seconds()))
	sec.row("CSV written", fmt.Sprintf("%.0f MB, %.0f B/record", float64(w.n)/1e6, float64(w.n)/float64(s.n)))
	sec.row("RSS before", fmt.Sprintf("%.1f MB", float64(before)/1024))
	sec.row("peak RSS during the export (VmRSS sampled every 10 ms)", fmt.Sprintf("%.1f MB", float64(peak)/1024))
	if hwmReset {
		sec.row("VmHWM after (reset before the export)", fmt.Sprintf("%.1f MB", float64(hwm)/1024))
	} else {
		sec.row("VmHWM after (process lifetime: could not reset)", fmt.Sprintf("%.1f MB", float64(hwm)/1024))
	}
	sec.row("Go allocations during the export", fmt.Sprintf("%.1f GB total, %d GCs", float64(ms1.TotalAlloc-ms0.TotalAlloc)/1e9, ms1.NumGC-ms0.NumGC))
	sec.row("CSV rows with an empty issuer (a record exported without its values)", fmt.Sprint(w.blank))
	if w.lines != s.n+1 {
		sec.note("%d lines were written for %d records and the header.", w.lines, s.n)
	}
	s.b.ReportMetric(float64(s.n)/d.Seconds(), "export-records/s")
	s.b.ReportMetric(float64(peak)/1024, "export-peak-RSS-MB")
	progress("export: %v, %.0f records/s, peak RSS %.1f MB (before %.1f MB), %d rows with an empty issuer", d.Round(time.Millisecond), float64(s.n)/d.Seconds(), float64(peak)/1024, float64(before)/1024, w.blank)
}

// verify measures full verification, and incremental verification of
// 10,000 records appended after a verified point.
func (s *scaleRun) verify() {
	b, ctx, l := s.b, s.ctx, s.l
	sec := s.rep.section("Verification", "what", "time", "records read", "records/s", "result")

	runtime.GC()
	sampler := startRSS()
	t0 := time.Now()
	rep, err := l.VerifyFrom(ctx, 0)
	d := time.Since(t0)
	peak := sampler.end()
	if err != nil {
		b.Fatalf("VerifyFrom(0): %v", err)
	}
	sec.row("full: l.VerifyFrom(ctx, 0)", d.Round(time.Millisecond).String(), fmt.Sprint(rep.Records),
		fmt.Sprintf("%.0f", float64(rep.Records)/d.Seconds()), reportResult(rep)+fmt.Sprintf("; peak RSS %.1f MB", float64(peak)/1024))
	b.ReportMetric(d.Seconds(), "verify-full-s")
	b.ReportMetric(float64(rep.Records)/d.Seconds(), "verify-records/s")
	progress("full verify: %v (%.0f records/s): %s", d.Round(time.Millisecond), float64(rep.Records)/d.Seconds(), reportResult(rep))
	if !rep.OK {
		s.recheck(sec, rep)
	}

	// The same records checked without Postgres.values' overflow (see
	// referenceVerify): is the log intact?
	t0 = time.Now()
	refErr := s.referenceVerify()
	d = time.Since(t0)
	result := "intact: every record matches its hash and links to the one before, the recomputed tree root is the stored one"
	if refErr != nil {
		result = "FAILED: " + refErr.Error()
	}
	sec.row("reference check (test-side: chain + tree root; value cache emptied before it can overflow)", d.Round(time.Millisecond).String(), fmt.Sprint(s.n), fmt.Sprintf("%.0f", float64(s.n)/d.Seconds()), result)
	progress("reference check: %v: %s", d.Round(time.Millisecond), result)
	if refErr != nil {
		b.Fatal(refErr)
	}

	// A checkpoint of the tree, signed with a log key, as the broker's
	// Checkpointer does.
	opts, _ := testLogKey(b)
	origin, vs := opts.Signer.Name(), note.VerifierList(opts.Verifier)
	cp, err := NewCheckpointer(l, opts)
	if err != nil {
		b.Fatal(err)
	}
	t0 = time.Now()
	if err := cp.Step(ctx); err != nil {
		b.Fatal(err)
	}
	sec.row(fmt.Sprintf("Checkpointer.Step: sign a checkpoint of %d records", s.n), time.Since(t0).Round(time.Millisecond).String(), "", "", "")

	// The first VerifyIncremental has no verified point: a full run, which
	// stores the checkpoint as the point when the log verifies. Started
	// with an empty value cache, as `broker audit verify` in a new process.
	l.values = newValues()
	t0 = time.Now()
	rep, err = VerifyIncremental(ctx, l, origin, vs, false)
	d = time.Since(t0)
	if err != nil || rep.From != 0 || rep.Records != s.n {
		b.Fatalf("first VerifyIncremental = %+v, %v; want a full run of %d records", rep, err, s.n)
	}
	sec.row("VerifyIncremental, no verified point yet (a full run; stores the point if OK), empty value cache", d.Round(time.Millisecond).String(), fmt.Sprint(rep.Records), fmt.Sprintf("%.0f", float64(rep.Records)/d.Seconds()), reportResult(rep))
	progress("first VerifyIncremental (full): %v: %s", d.Round(time.Millisecond), reportResult(rep))
	if !rep.OK {
		// The reference check found the log intact: store the point
		// VerifyIncremental would have stored, so that the incremental run
		// below can be measured.
		msg, err := l.Checkpoint(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.saveVerifiedPoint(ctx, s.n, msg); err != nil {
			b.Fatal(err)
		}
		sec.note("The first VerifyIncremental did not store a verified point (its full run reported problems, see above); the benchmark stored the latest checkpoint (%d records) as the point itself (Postgres.saveVerifiedPoint), since the reference check found the log intact.", s.n)
	}

	// 10,000 more records through Append (the writer, group commit), from
	// 64 concurrent requests.
	const more, appenders = 10_000, 64
	t0 = time.Now()
	var wg sync.WaitGroup
	var appendErr atomic.Pointer[error]
	for w := range appenders {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(99, uint64(w)))
			for i := w; i < more; i += appenders {
				r := s.gen.record(rng, time.Now(), s.n+int64(i))
				if _, err := l.Append(ctx, r); err != nil {
					appendErr.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if p := appendErr.Load(); p != nil {
		b.Fatalf("Append: %v", *p)
	}
	appendTime := time.Since(t0)
	if err := cp.Step(ctx); err != nil {
		b.Fatal(err)
	}
	sec.row(fmt.Sprintf("append %d more records (l.Append, %d concurrent callers), then Step", more, appenders), appendTime.Round(time.Millisecond).String(), "", fmt.Sprintf("%.0f", more/appendTime.Seconds()), "")

	l.values = newValues() // a new process
	t0 = time.Now()
	rep, err = VerifyIncremental(ctx, l, origin, vs, false)
	d = time.Since(t0)
	if err != nil || rep.From != s.n || rep.Records != more {
		b.Fatalf("incremental VerifyIncremental = %+v, %v; want the %d records after %d", rep, err, more, s.n)
	}
	sec.row(fmt.Sprintf("incremental: VerifyIncremental from the point at %d, empty value cache", s.n), d.Round(time.Millisecond).String(), fmt.Sprint(rep.Records), fmt.Sprintf("%.0f", float64(rep.Records)/d.Seconds()), reportResult(rep))
	b.ReportMetric(ms(d), "verify-incremental-ms")
	progress("incremental VerifyIncremental: %v for %d records: %s", d.Round(time.Millisecond), rep.Records, reportResult(rep))

	t0 = time.Now()
	rep, err = VerifyIncremental(ctx, l, origin, vs, false)
	d = time.Since(t0)
	if err != nil {
		b.Fatalf("VerifyIncremental with nothing new: %v", err)
	}
	sec.row("incremental again, nothing new since the point", d.Round(time.Millisecond).String(), fmt.Sprint(rep.Records), "", reportResult(rep))
}

func reportResult(rep Report) string {
	if rep.OK {
		return "OK"
	}
	var first []string
	for _, p := range rep.Problems[:min(3, len(rep.Problems))] {
		first = append(first, fmt.Sprintf("%d %s", p.Seq, p.Kind))
	}
	return fmt.Sprintf("NOT OK: %d problems listed (at most %d), first: %s", len(rep.Problems), MaxProblems, strings.Join(first, ", "))
}

// recheck reads the records a verification reported with a new log (an
// empty value cache) and checks each against its hash.
func (s *scaleRun) recheck(sec *scaleSection, rep Report) {
	l2, err := NewPostgres(s.db.Pool(), testKey, PostgresOptions{})
	if err != nil {
		s.b.Fatal(err)
	}
	defer l2.Close()
	var seqs []int64
	for _, p := range rep.Problems {
		seqs = append(seqs, p.Seq)
	}
	got, err := l2.readRecords(s.ctx, l2.reads, "SELECT "+recordColumns+" FROM issuance_log_record r WHERE r.seq = ANY($1) ORDER BY r.seq", seqs)
	if err != nil {
		s.b.Fatal(err)
	}
	match := 0
	for _, r := range got {
		if !r.malformed && l2.keys.current.recordHash(&r.Record) == r.Hash {
			match++
		}
	}
	var lo, hi int64
	if len(seqs) > 0 {
		lo, hi = slices.Min(seqs), slices.Max(seqs)
	}
	sec.note("VerifyFrom reported %d problems (records %d … %d, listed up to %d). Read again by a new Postgres log (empty value cache), %d of those %d records match their hash.", len(rep.Problems), lo, hi, MaxProblems, match, len(got))
}

// referenceVerify checks the whole log without VerifyFrom: each record,
// read a page at a time through Postgres.readRecords, matches its hash and
// links to the record before it, the head is the last record, and the tree
// recomputed over the records has the stored tree's root. The value cache
// is emptied before a page could make it overflow (a page needs at most 7
// values a record).
func (s *scaleRun) referenceVerify() error {
	ctx, l := s.ctx, s.l
	k := l.keys.current
	t := tree{valid: true}
	prev := genesis
	var seq int64
	for seq < s.n {
		l.values.mu.Lock()
		full := len(l.values.cache) > maxCachedValues-7*readPage
		l.values.mu.Unlock()
		if full {
			l.values = newValues()
		}
		page, err := l.readRecords(ctx, l.reads, "SELECT "+recordColumns+" FROM issuance_log_record r WHERE r.seq > $1 AND r.seq <= $2 ORDER BY r.seq LIMIT $3", seq, s.n, readPage)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return fmt.Errorf("no records after %d", seq)
		}
		leaves := make([][]byte, len(page))
		for i := range page {
			r := &page[i]
			switch {
			case r.Seq != seq+1:
				return fmt.Errorf("record %d follows record %d", r.Seq, seq)
			case r.malformed:
				return fmt.Errorf("record %d is malformed", r.Seq)
			case r.PrevHash != prev:
				return fmt.Errorf("record %d does not link to record %d", r.Seq, seq)
			case k.recordHash(&r.Record) != r.Hash:
				return fmt.Errorf("record %d does not match its hash", r.Seq)
			}
			prev, seq = r.Hash, r.Seq
			leaves[i] = Leaf(&r.Record)
		}
		if _, t, err = t.extend(leaves); err != nil {
			return err
		}
	}
	var headSeq int64
	var headHash []byte
	if err := l.reads.QueryRow(ctx, "SELECT seq, hash FROM issuance_log_head").Scan(&headSeq, &headHash); err != nil {
		return err
	}
	if headSeq != s.n || Hash(headHash) != prev {
		return fmt.Errorf("the head is at %d, not at the last record %d", headSeq, s.n)
	}
	stored, err := xtlog.TreeHash(s.n, pgHashes{ctx, l.reads})
	if err != nil {
		return err
	}
	if edgeRoot(t) != stored {
		return errors.New("the tree recomputed from the records is not the stored tree")
	}
	return nil
}

// edgeRoot is the root of tree t, from its right edge.
func edgeRoot(t tree) xtlog.Hash {
	if len(t.edge) == 0 {
		return xtlog.Hash{}
	}
	h := t.edge[len(t.edge)-1]
	for i := len(t.edge) - 2; i >= 0; i-- {
		h = xtlog.NodeHash(t.edge[i], h)
	}
	return h
}
