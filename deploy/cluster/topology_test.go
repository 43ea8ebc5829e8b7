package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/loadtest"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/tooltest"
)

// Host names; the compose service names "postgres" and "dex" resolve to db
// and idp in every host's /etc/hosts.
const (
	hostDB, hostIdP, hostA, hostB, hostLB, hostClient = "db", "idp", "broker-a", "broker-b", "lb", "client"
	// hostC is a third replica, for the scale-out run only.
	hostC = "broker-c"
)

// dbDelay is the database link's latency each way, as a managed database in
// the same region.
const dbDelay = time.Millisecond

// harnessEnv is what the harness adds to the brokers' compose environment:
// one test client sends hundreds of requests a second as two users, which
// is not what the per-subject rate limit is for.
var harnessEnv = map[string]string{"BROKER_RATE_LIMIT": "0"}

// Dex's demo users (deploy/dex/config.yaml; passwords in deploy/README.md).
const (
	adminUser, adminPassword = "alice@example.com", "alice-demo-password"
	devUser, devPassword     = "bob@example.com", "bob-demo-password"
)

// topology is the running deployment.
type topology struct {
	root, dir                 string
	net                       *network
	db, idp, a, b, lb, client *host

	vars     map[string]string  // the operator's .env: made-up secrets, new each run
	services map[string]service // docker-compose.yml of the tree
	previous map[string]service // docker-compose.yml of the previous release
	newBin   string             // the broker from the tree
	prevBin  string             // the previous release's broker
	prevRev  string
	scale    bool // BROKER_CLUSTER_SCALE=1: the scale-out run follows (statement statistics on)

	postgres, dex, haproxy *proc
	seedfloor              *proc            // the scale-out run's
	brokers                map[string]*proc // by host name
	pool                   *pgxpool.Pool    // the database, from the db host itself (past the link)
	http                   *http.Client     // requests from the client host
}

// bringUp starts the topology as compose would, the brokers on the previous
// release: postgres (healthy) → migrate → dex (healthy) → broker-a,
// broker-b → lb.
func bringUp(t *testing.T) *topology {
	t.Helper()
	preflight(t)
	t.Cleanup(func() {
		if err := runTeardown(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	if err := sweepStale(); err != nil {
		t.Fatalf("remove a dead run's namespaces: %v", err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "broker-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // the postgres user must reach its data folder
		t.Fatal(err)
	}
	onTeardown(func() error { return os.RemoveAll(dir) })
	tp := &topology{root: root, dir: dir, brokers: map[string]*proc{}, scale: os.Getenv("BROKER_CLUSTER_SCALE") == "1", vars: map[string]string{
		"POSTGRES_PASSWORD":            randomHex(16),
		"BROKER_APP_ID":                randomHex(16),
		"BROKER_APP_CERTIFICATE":       randomHex(16),
		"BROKER_AUDIT_KEY":             randomHex(32),
		"BROKER_CONSOLE_CLIENT_SECRET": randomHex(16),
	}}

	tp.newBin = goBuild(t, root, filepath.Join(dir, "bin", "broker"))
	tp.prevRev = previousRelease(t, root)
	prevRoot := filepath.Join(dir, "previous")
	extract(t, root, tp.prevRev, prevRoot)
	tp.prevBin = goBuild(t, prevRoot, filepath.Join(dir, "bin", "broker-previous"))
	dexBin, err := tooltest.Build("dex", "github.com/dexidp/dex/cmd/dex")
	if err != nil {
		t.Fatal(err)
	}
	if tp.services, err = loadServices(root, "docker-compose.yml", tp.vars, filepath.Join(dir, "compose")); err != nil {
		t.Fatal(err)
	}
	if tp.previous, err = loadServices(prevRoot, "docker-compose.yml", tp.vars, filepath.Join(dir, "compose-previous")); err != nil {
		t.Fatal(err)
	}

	hosts := []string{hostDB, hostIdP, hostA, hostB, hostLB, hostClient}
	if tp.scale {
		hosts = append(hosts, hostC)
	}
	tp.net, err = newNetwork(hosts, map[string]string{"postgres": hostDB, "dex": hostIdP})
	if err != nil {
		t.Fatalf("network: %v", err)
	}
	tp.db, tp.idp, tp.a, tp.b, tp.lb, tp.client = tp.net.host(hostDB), tp.net.host(hostIdP), tp.net.host(hostA),
		tp.net.host(hostB), tp.net.host(hostLB), tp.net.host(hostClient)
	tp.http = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		DialContext: tp.client.dial, MaxIdleConnsPerHost: 64, DisableCompression: true,
	}}

	tp.startPostgres(t)
	tp.startDex(t, dexBin)
	// Compose runs the broker in Dex's network namespace, where
	// http://localhost:5556/dex (the issuer everybody must see) is Dex. On
	// hosts of their own, a loopback relay on each host that talks to Dex
	// gives the same URL.
	relayed := []*host{tp.a, tp.b, tp.client}
	if tp.scale {
		relayed = append(relayed, tp.net.host(hostC))
	}
	for _, h := range relayed {
		f, err := h.forward("127.0.0.1:5556", tp.idp.addr+":5556", 0)
		if err != nil {
			t.Fatalf("relay to Dex on %s: %v", h.name, err)
		}
		onTeardown(f.Close)
	}
	// A release and its deployment files go together, as a pod template's
	// image and environment do: the previous release runs with its own.
	tp.migrate(t, tp.prevBin, tp.previous)
	for _, h := range []*host{tp.a, tp.b} {
		tp.startBroker(t, h, tp.prevBin, tp.previous)
	}
	tp.startHAProxy(t)
	return tp
}

// preflight fails with how to get what the test needs.
func preflight(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the cluster test makes network namespaces and must run as root (CI does); run ./scripts/test as root")
	}
	for prog, pkg := range map[string]string{"ip": "iproute2", "haproxy": "haproxy", "setpriv": "util-linux", "git": "git"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Fatalf("%s is not installed: apt-get install %s (./scripts/test installs it when run as root)", prog, pkg)
		}
	}
	if _, err := user.Lookup("postgres"); err != nil {
		t.Fatal("there is no user postgres to run PostgreSQL as: apt-get install postgresql")
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// goBuild builds the broker of the tree at dir.
func goBuild(t *testing.T, dir, out string) string {
	t.Helper()
	if err := loadtest.GoBuild(dir, out, "./cmd/broker", "GOWORK=off", "GOFLAGS=-mod=readonly"); err != nil {
		t.Fatal(err)
	}
	return out
}

// clusterTest is this file's scenario list: the releases that carry it had
// their deployment files run.
const clusterTest = "deploy/cluster/cluster_test.go"

// previousRelease is the revision the rolling upgrade starts from:
// BROKER_CLUSTER_PREVIOUS, else the parent of the newest commit that added
// a migration, which is the last release whose schema the newest migration
// must keep working. Only releases that carry this test count: the compose
// file was never run before it, and could not start a broker. Until a
// migration is added after the test, the upgrade starts from the commit
// that added the test.
func previousRelease(t *testing.T, root string) string {
	t.Helper()
	git := func(args ...string) string {
		out, err := exec.Command("git", append([]string{"-C", root}, args...)...).Output()
		if err != nil {
			t.Fatalf("git %s: %v (a shallow clone? git fetch --unshallow, or set BROKER_CLUSTER_PREVIOUS=<revision>)", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	rev := os.Getenv("BROKER_CLUSTER_PREVIOUS")
	if rev == "" {
		// The release this change upgrades from, when recorded: the commit
		// that last landed. Between landings, builds that never ran in
		// production are no upgrade path.
		if b, err := os.ReadFile(filepath.Join(root, "deploy", "cluster", "previous-release")); err == nil {
			rev = strings.TrimSpace(string(b))
		}
	}
	if rev == "" {
		first := git("log", "--diff-filter=A", "--format=%H", "--", clusterTest)
		if i := strings.LastIndexByte(first, '\n'); i >= 0 {
			first = first[i+1:]
		}
		switch added := git("log", "-1", "--diff-filter=A", "--format=%H", first+"..HEAD", "--", "migrations/"); {
		case first == "": // the test is not committed yet
			rev = "HEAD"
		case added != "":
			rev = added + "^"
		default:
			rev = first
		}
	}
	return git("rev-parse", "--verify", "--quiet", rev+"^{commit}")
}

// extract writes the tree of rev to dir (git archive: no worktree, no
// change to the repository).
func extract(t *testing.T, root, rev, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	archive := exec.Command("git", "-C", root, "archive", "--format=tar", rev)
	untar := exec.Command("tar", "-x", "-C", dir)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	untar.Stdin = pipe
	if err := untar.Start(); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	archive.Stderr = &stderr
	if err := archive.Run(); err != nil {
		t.Fatalf("git archive %s: %v %s", rev, err, stderr.String())
	}
	if err := untar.Wait(); err != nil {
		t.Fatalf("untar %s: %v", rev, err)
	}
}

func (tp *topology) logPath(name string) string { return filepath.Join(tp.dir, name+".log") }

// startPostgres runs PostgreSQL on db as the postgres image would with the
// compose service's POSTGRES_USER, POSTGRES_DB and POSTGRES_PASSWORD(_FILE):
// fsync on, password (SCRAM) authentication over TCP. It listens on db's
// loopback; a relay on db's address adds the link's latency.
func (tp *topology) startPostgres(t *testing.T) {
	t.Helper()
	svc := tp.services["postgres"]
	pgUser, dbName := svc.env["POSTGRES_USER"], svc.env["POSTGRES_DB"]
	password := svc.env["POSTGRES_PASSWORD"]
	if f := svc.env["POSTGRES_PASSWORD_FILE"]; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("postgres: POSTGRES_PASSWORD_FILE: %v", err)
		}
		password = string(b)
	}
	if pgUser == "" || dbName == "" || password == "" {
		t.Fatalf("docker-compose.yml: service postgres must set POSTGRES_USER, POSTGRES_DB and a password")
	}
	bin, err := pgtest.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tp.dir, "postgres")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(password), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", "-R", "postgres:postgres", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown %s: %v %s", dir, err, out)
	}
	// setpriv's change of user clears the parent-death signal: set it again,
	// so that Postgres dies with a killed test binary like everything else.
	asPostgres := []string{"/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--pdeathsig=KILL"}
	if _, err := tp.db.runOnce(nil, append(asPostgres, filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"),
		"-U", pgUser, "--pwfile="+pwfile, "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale")...); err != nil {
		t.Fatalf("initdb: %v", err)
	}
	args := append(asPostgres, filepath.Join(bin, "postgres"),
		"-D", filepath.Join(dir, "data"), "-k", dir, "-c", "listen_addresses=127.0.0.1", "-c", "port=5432",
		"-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "max_connections=200")
	if tp.scale { // how long the append statement holds the chain lock
		args = append(args, "-c", "shared_preload_libraries=pg_stat_statements")
	}
	tp.postgres, err = tp.db.start("postgres", tp.logPath("postgres"), nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	dsn := func(db string) string {
		u := url.URL{Scheme: "postgres", User: url.UserPassword(pgUser, password), Host: "127.0.0.1:5432", Path: "/" + db,
			RawQuery: "sslmode=disable&connect_timeout=3"}
		return u.String()
	}
	admin := dsn("postgres")
	conn := tp.waitPostgres(t, admin)
	if _, err := conn.Exec(context.Background(), "CREATE DATABASE "+pgx.Identifier{dbName}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", dbName, err)
	}
	conn.Close(context.Background())
	link, err := tp.db.forward(tp.db.addr+":5432", "127.0.0.1:5432", dbDelay)
	if err != nil {
		t.Fatalf("database link: %v", err)
	}
	onTeardown(link.Close)
	cfg, err := pgxpool.ParseConfig(dsn(dbName))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.DialFunc = tp.db.dial
	cfg.MaxConns = 4
	if tp.pool, err = pgxpool.NewWithConfig(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if tp.scale {
		if _, err := tp.pool.Exec(context.Background(), "CREATE EXTENSION pg_stat_statements"); err != nil {
			t.Fatal(err)
		}
	}
	onTeardown(func() error { tp.pool.Close(); return nil })
}

// waitPostgres connects to url from the db host until Postgres answers.
func (tp *topology) waitPostgres(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DialFunc = tp.db.dial
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := pgx.ConnectConfig(context.Background(), cfg)
		if err == nil {
			return conn
		}
		if time.Now().After(deadline) || !tp.postgres.running() {
			t.Fatalf("postgres not answering: %v\n%s", err, tp.postgres.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startDex runs Dex on idp as the compose service does (its config file
// mounted, its environment).
func (tp *topology) startDex(t *testing.T, bin string) {
	t.Helper()
	svc := tp.services["dex"]
	if len(svc.command) < 1 || svc.command[0] != "dex" {
		t.Fatalf("docker-compose.yml: service dex: command %q does not run dex", svc.command)
	}
	var err error
	tp.dex, err = tp.idp.start("dex", tp.logPath("dex"), svc.envList(nil), append([]string{bin}, svc.command[1:]...)...)
	if err != nil {
		t.Fatal(err)
	}
	tp.waitDex(t)
}

// waitDex polls Dex's readiness endpoint (the compose healthcheck's).
func (tp *topology) waitDex(t *testing.T) {
	t.Helper()
	tp.waitOK(t, "dex", "http://"+tp.idp.addr+":5558/healthz/ready", 60*time.Second, tp.dex)
}

// migrate runs the compose one-shot migrate service with bin, on broker-a.
func (tp *topology) migrate(t *testing.T, bin string, services map[string]service) {
	t.Helper()
	svc := services["migrate"]
	if out, err := tp.a.runOnce(svc.envList(nil), append([]string{bin}, svc.command...)...); err != nil {
		t.Fatalf("migrate (%s): %v\n%s", filepath.Base(bin), err, out)
	}
}

// startBroker runs bin on h with the compose broker service's environment
// and command, and waits for /readyz.
func (tp *topology) startBroker(t *testing.T, h *host, bin string, services map[string]service) {
	t.Helper()
	svc := services["broker"]
	p, err := h.start(h.name, tp.logPath(h.name), svc.envList(harnessEnv), append([]string{bin}, svc.command...)...)
	if err != nil {
		t.Fatal(err)
	}
	tp.brokers[h.name] = p
	tp.waitOK(t, h.name, tp.brokerURL(h, "/readyz"), 60*time.Second, p)
}

// brokerURL addresses a replica directly (the port is BROKER_ADDR's).
func (tp *topology) brokerURL(h *host, path string) string {
	_, port, err := net.SplitHostPort(tp.services["broker"].env["BROKER_ADDR"])
	if err != nil || port == "" {
		port = "8080"
	}
	return "http://" + h.addr + ":" + port + path
}

// lbURL addresses the load balancer.
func (tp *topology) lbURL(path string) string { return "http://" + tp.lb.addr + ":8080" + path }

// startHAProxy runs HAProxy on lb in front of both replicas: health checks
// on /readyz every 500 ms (two failures take a replica out, two successes
// bring it back), connection failures retried on the other replica, and
// the serving replica named in X-Served-By.
func (tp *topology) startHAProxy(t *testing.T) {
	t.Helper()
	_, port, _ := net.SplitHostPort(tp.brokerURL(tp.a, "")[len("http://"):])
	cfg := fmt.Sprintf(`global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 2
    option redispatch
    retry-on conn-failure

frontend broker
    bind %[1]s:8080
    default_backend brokers

# The seed floor on broker-a:8090 (started only by the scale-out run), behind
# the same load balancer for a like-for-like comparison.
frontend seedfloor
    bind %[1]s:8081
    default_backend seedfloor

backend seedfloor
    server seedfloor %[3]s:8090

backend brokers
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
    http-response set-header X-Served-By %%s
    server %[2]s %[3]s:%[5]s check
    server %[4]s %[6]s:%[5]s check
`, tp.lb.addr, hostA, tp.a.addr, hostB, port, tp.b.addr)
	if tp.scale { // the scale-out run's third replica, started only then
		c := tp.net.host(hostC)
		cfg += fmt.Sprintf("    server %s %s:%s check\n", c.name, c.addr, port)
	}
	path := filepath.Join(tp.dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal(err)
	}
	if tp.haproxy, err = tp.lb.start("haproxy", tp.logPath("haproxy"), nil, bin, "-db", "-f", path); err != nil {
		t.Fatal(err)
	}
	tp.waitOK(t, "haproxy", tp.lbURL("/healthz"), 30*time.Second, tp.haproxy)
}

// waitOK polls u from the client until it answers 200, failing early when p
// (if any) exits.
func (tp *topology) waitOK(t *testing.T, name, u string, limit time.Duration, p *proc) {
	t.Helper()
	if err := tp.pollOK(u, limit, p); err != nil {
		tail := ""
		if p != nil {
			tail = p.logTail()
		}
		t.Fatalf("%s: %v\n%s", name, err, tail)
	}
}

func (tp *topology) pollOK(u string, limit time.Duration, p *proc) error {
	deadline := time.Now().Add(limit)
	var last string
	for {
		resp, err := tp.get(u, "", "")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if p != nil && !p.running() {
			return fmt.Errorf("exited while waiting for %s", u)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not answering 200 after %v (last: %s)", u, limit, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// get sends a GET from the client host with an optional bearer token and
// request id.
func (tp *topology) get(u, bearer, requestID string) (*http.Response, error) {
	return tp.send(http.MethodGet, u, bearer, requestID, "")
}

func (tp *topology) send(method, u, bearer, requestID, body string) (*http.Response, error) {
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if requestID != "" {
		req.Header.Set("X-Request-Id", requestID)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return tp.http.Do(req)
}

// call sends a request and decodes a JSON answer into out (when non-nil).
func (tp *topology) call(t *testing.T, method, u, bearer, body string, out any) int {
	t.Helper()
	resp, err := tp.send(method, u, bearer, "", body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode < 300 {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, u, err)
		}
	}
	return resp.StatusCode
}

// idToken logs a demo user in with the password grant, from the client
// host, through the issuer URL everybody uses (deploy/README.md's curl).
func (tp *topology) idToken(t *testing.T, username, password string) string {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "client_id": {"broker"}, "username": {username},
		"password": {password}, "scope": {"openid email groups"}}
	issuer := tp.services["broker"].env["BROKER_OIDC_ISSUER"]
	resp, err := tp.http.PostForm(issuer+"/token", form)
	if err != nil {
		t.Fatalf("password grant for %s: %v", username, err)
	}
	defer resp.Body.Close()
	var body struct {
		IDToken string `json:"id_token"`
		Error   string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.IDToken == "" {
		t.Fatalf("password grant for %s: %s %s %v", username, resp.Status, body.Error, err)
	}
	return body.IDToken
}

// uidOf asks a replica for the caller's uid.
func (tp *topology) uidOf(t *testing.T, bearer string) uint32 {
	t.Helper()
	var me struct {
		UID uint32 `json:"uid"`
	}
	if code := tp.call(t, http.MethodGet, tp.lbURL("/v1/me"), bearer, "", &me); code != http.StatusOK || me.UID == 0 {
		t.Fatalf("/v1/me: status %d uid %d", code, me.UID)
	}
	return me.UID
}

// tokenPath is the seed-compatible RTC token request for uid on channel.
func tokenPath(channel string, uid uint32) string {
	return "/rtc/" + channel + "/publisher/uid/" + strconv.FormatUint(uint64(uid), 10) + "/?expiry=600"
}
