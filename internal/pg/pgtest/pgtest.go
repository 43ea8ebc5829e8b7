// Package pgtest gives tests a real Postgres: a throwaway cluster started on first
// use (or the server in BROKER_TEST_DATABASE_URL) and a fresh, migrated database
// per test. It must never leave a server or a data directory behind, and never
// skip a test because Postgres is missing: it fails and says how to install it.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		db := pgtest.New(t) // migrated, dropped when t ends
//		_, err := db.Pool().Exec(ctx, "…")
//	}
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/pg"
)

// EnvURL names the variable that points tests at an existing server instead of
// a throwaway cluster. Its user must be allowed to create databases.
const EnvURL = "BROKER_TEST_DATABASE_URL"

// adminTimeout bounds one administrative statement (CREATE/DROP DATABASE).
const adminTimeout = time.Minute

var shared struct {
	mu      sync.Mutex
	main    bool     // Main owns the process, so the cluster will be stopped
	cluster *Cluster // the package-wide cluster, once started
	err     error    // why it could not start; every later test fails with it
}

// live holds every running cluster, so Main and the signal handler can stop them.
var live struct {
	mu       sync.Mutex
	clusters map[*Cluster]bool
}

func register(c *Cluster) {
	live.mu.Lock()
	defer live.mu.Unlock()
	if live.clusters == nil {
		live.clusters = map[*Cluster]bool{}
	}
	live.clusters[c] = true
}

func unregister(c *Cluster) {
	live.mu.Lock()
	defer live.mu.Unlock()
	delete(live.clusters, c)
}

// closeAll stops and removes every cluster still running.
func closeAll() []error {
	live.mu.Lock()
	cs := make([]*Cluster, 0, len(live.clusters))
	for c := range live.clusters {
		cs = append(cs, c)
	}
	live.clusters = nil
	live.mu.Unlock()
	var errs []error
	for _, c := range cs {
		if err := c.close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Main runs the tests (m.Run), then stops and deletes every cluster they
// started, and exits with m.Run's status. On SIGINT or SIGTERM it cleans up
// first and exits at once. Call it from TestMain; New requires it.
func Main(m *testing.M) {
	shared.mu.Lock()
	shared.main = true
	shared.mu.Unlock()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s, ok := <-sigs
		if !ok {
			return
		}
		for _, err := range closeAll() {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
		fmt.Fprintf(os.Stderr, "pgtest: %v: stopped and removed test clusters\n", s)
		os.Exit(128 + int(s.(syscall.Signal)))
	}()

	code := m.Run()
	signal.Stop(sigs)
	close(sigs)
	for _, err := range closeAll() {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// New returns a fresh database with every migration applied, on the package's
// shared cluster. It is dropped when t ends.
func New(t testing.TB) *DB {
	t.Helper()
	return sharedCluster(t).New(t)
}

// NewEmpty returns a fresh database with no migrations applied, for tests of
// the migration runner. It is dropped when t ends.
func NewEmpty(t testing.TB) *DB {
	t.Helper()
	return sharedCluster(t).NewEmpty(t)
}

func sharedCluster(t testing.TB) *Cluster {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.main {
		t.Fatal("pgtest: call pgtest.Main from TestMain so the test cluster is stopped afterwards:\n\tfunc TestMain(m *testing.M) { pgtest.Main(m) }")
	}
	if shared.cluster == nil && shared.err == nil {
		if u := os.Getenv(EnvURL); u != "" {
			shared.cluster, shared.err = external(u)
		} else {
			shared.cluster, shared.err = startLocal(Options{NoFsync: true})
		}
		if shared.cluster != nil {
			shared.cluster.shared = true
		}
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.cluster
}

// NewCluster starts a private throwaway cluster for t, stopped and deleted when
// t ends: for tests that stop and start the server, or need fsync on. It always
// runs a local server, even when BROKER_TEST_DATABASE_URL is set.
func NewCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := startLocal(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unregister(c)
		if err := c.close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// Options configures a throwaway cluster.
type Options struct {
	// NoFsync starts the server with fsync=off. The shared cluster uses it: its
	// data dies with the test binary, and it makes per-test databases cheaper.
	// Leave it false where durability is measured (the issuance-log benchmark).
	NoFsync bool
	// Settings are server settings (name → value), each passed to the
	// postmaster as -c name=value. They override the defaults (fsync from
	// NoFsync, max_connections=200, shared_buffers=32MB, loopback TCP only),
	// e.g. production-like WAL and checkpoint settings for a benchmark. A
	// value the server rejects makes NewCluster fail with the server's log.
	Settings map[string]string
	// WALSegmentMB is the size of the cluster's WAL segment files in MB, a
	// power of two from 1 to 1024 fixed by initdb (0: PostgreSQL's 16). A
	// server that writes much WAL switches segments less often with larger
	// ones.
	WALSegmentMB int
}

// Cluster is a Postgres server that tests create databases on.
type Cluster struct {
	adminURL string   // the maintenance database, as a superuser (or the EnvURL user)
	base     *url.URL // adminURL parsed, to derive database URLs from
	shared   bool     // the package-wide cluster, which tests must not stop
	local    *server

	tmplMu  sync.Mutex
	tmpl    string // migrated template database, once made
	tmplErr error

	seq atomic.Int64
}

// DB is one test's database.
type DB struct {
	Name string // the database's name
	URL  string // connection URL; no password for a local cluster

	cluster *Cluster
	t       testing.TB
	once    sync.Once
	pool    *pgxpool.Pool
}

// Cluster returns the cluster the database lives on.
func (d *DB) Cluster() *Cluster { return d.cluster }

// Pool returns a pool for the database with the broker's production settings
// (pg.Open with zero Options), opened on first call and closed when the test ends.
func (d *DB) Pool() *pgxpool.Pool {
	d.once.Do(func() {
		p, err := pg.Open(context.Background(), d.URL, pg.Options{})
		if err != nil {
			d.t.Fatalf("pgtest: open pool for %s: %v", d.Name, err)
		}
		d.pool = p
	})
	return d.pool
}

// New returns a fresh database on c with every migration applied, dropped when t ends.
func (c *Cluster) New(t testing.TB) *DB {
	t.Helper()
	tmpl, err := c.template()
	if err != nil {
		t.Fatal(err)
	}
	return c.create(t, tmpl)
}

// NewEmpty returns a fresh database on c with no migrations applied, dropped when t ends.
func (c *Cluster) NewEmpty(t testing.TB) *DB {
	t.Helper()
	return c.create(t, "template0")
}

// Stop shuts the server down (fast shutdown: open sessions are ended) and
// waits until it is gone. Databases and their URLs survive until Start.
// Only a cluster from NewCluster may be stopped: the shared one serves other
// tests at the same time.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	c.mustBePrivate(t, "Stop")
	if err := c.local.stop(); err != nil {
		t.Fatal(err)
	}
}

// Start starts a stopped server again on the same port, so earlier URLs and
// pools reconnect, and waits until it accepts connections.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	c.mustBePrivate(t, "Start")
	if err := c.local.start(); err != nil {
		t.Fatal(err)
	}
}

func (c *Cluster) mustBePrivate(t testing.TB, op string) {
	t.Helper()
	if c.shared || c.local == nil {
		t.Fatalf("pgtest: %s needs a private cluster: use pgtest.NewCluster(t, pgtest.Options{}) instead of the shared one", op)
	}
}

var unsafeName = regexp.MustCompile(`[^a-z0-9_]+`)

// create makes a database for t from template and drops it when t ends.
func (c *Cluster) create(t testing.TB, template string) *DB {
	t.Helper()
	// Names are unique per process and per cluster; the pid keeps concurrent
	// test binaries apart on a shared EnvURL server. 63 bytes is Postgres's limit.
	name := fmt.Sprintf("t%d_%d_%s", os.Getpid(), c.seq.Add(1), unsafeName.ReplaceAllString(strings.ToLower(t.Name()), "_"))
	if len(name) > 63 {
		name = name[:63]
	}
	if err := c.exec("CREATE DATABASE " + ident(name) + " TEMPLATE " + ident(template)); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	d := &DB{Name: name, URL: c.url(name), cluster: c, t: t}
	t.Cleanup(func() {
		if d.pool != nil {
			d.pool.Close()
		}
		if c.local != nil && !c.local.running() {
			return // stopped by the test; the cluster's own cleanup deletes it
		}
		if err := c.exec("DROP DATABASE IF EXISTS " + ident(name) + " WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return d
}

// template returns the migrated template database, making it on first use.
func (c *Cluster) template() (string, error) {
	c.tmplMu.Lock()
	defer c.tmplMu.Unlock()
	if c.tmpl != "" || c.tmplErr != nil {
		return c.tmpl, c.tmplErr
	}
	name := fmt.Sprintf("broker_template_%d", os.Getpid())
	c.tmplErr = c.makeTemplate(name)
	if c.tmplErr == nil {
		c.tmpl = name
	}
	return c.tmpl, c.tmplErr
}

func (c *Cluster) makeTemplate(name string) error {
	if err := c.exec("CREATE DATABASE " + ident(name) + " TEMPLATE template0"); err != nil {
		return fmt.Errorf("pgtest: create template database: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	pool, err := pg.Open(ctx, c.url(name), pg.Options{})
	if err != nil {
		return fmt.Errorf("pgtest: template database: %w", err)
	}
	_, err = pg.Migrate(ctx, pool)
	pool.Close()
	if err != nil {
		return fmt.Errorf("pgtest: migrate template database: %w", err)
	}
	// Nobody may connect to it any more: CREATE DATABASE … TEMPLATE fails
	// while the template has sessions.
	if err := c.exec("ALTER DATABASE " + ident(name) + " ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("pgtest: seal template database: %w", err)
	}
	return nil
}

// exec runs one administrative statement on the maintenance database.
func (c *Cluster) exec(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.adminURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", pg.Redact(c.adminURL), err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// newCluster returns a cluster whose maintenance database is at adminURL.
func newCluster(adminURL string) (*Cluster, error) {
	u, err := url.Parse(adminURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("pgtest: want a postgres:// URL, got %s", pg.Redact(adminURL))
	}
	return &Cluster{adminURL: adminURL, base: u}, nil
}

// url returns the connection URL for database name on c.
func (c *Cluster) url(name string) string {
	u := *c.base
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

// close stops the server and deletes its files, or for an EnvURL server
// drops the template database.
func (c *Cluster) close() error {
	if c.local != nil {
		return c.local.destroy()
	}
	c.tmplMu.Lock()
	tmpl := c.tmpl
	c.tmplMu.Unlock()
	if tmpl == "" {
		return nil
	}
	if err := c.exec("DROP DATABASE IF EXISTS " + ident(tmpl) + " WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop template database %s: %w", tmpl, err)
	}
	return nil
}

// external uses the server at rawURL.
func external(rawURL string) (*Cluster, error) {
	c, err := newCluster(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w (from %s)", err, EnvURL)
	}
	if err := c.exec("SELECT 1"); err != nil {
		return nil, fmt.Errorf("pgtest: %s: %w", EnvURL, err)
	}
	register(c)
	return c, nil
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }
