package load

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/auth/dextest"
	"github.com/broker-dev/broker/internal/loadtest"
	"github.com/broker-dev/broker/internal/pg/pgtest"
)

// rig is what every load benchmark runs against: the broker built from the
// tree and the seed floor, each its own process, the broker on a throwaway
// Postgres cluster and a Dex, with one rule letting the developer publish
// on the benchmark channel, and both servers checked to sign the same token.
type rig struct {
	bin       string // the run's temporary directory: binaries, logs
	cluster   *pgtest.Cluster
	pool      *pgxpool.Pool // the broker's database
	dex       *dextest.Dex
	admin     string // the admin's ID token
	dev       string // the developer's ID token
	uid       uint32 // the developer's uid
	path      string // the token request: /rtc/bench/publisher/uid/<uid>/?expiry=3600
	brokerLog string

	brokerAddr         string
	adminAddr          string // the operators' listener: /metrics, /debug/pprof/
	brokerPID, seedPID int
	brokerURL, seedURL string // path on each server
}

// startRig builds and starts the broker (BROKER_RATE_LIMIT=0, plus
// brokerEnv) and the seed floor from seedfloor (its source directory), on a
// cluster started with pgOpts, which must keep fsync and synchronous_commit
// on. Everything stops when t ends.
func startRig(t *testing.T, root, seedfloor string, pgOpts pgtest.Options, brokerEnv []string) *rig {
	t.Helper()
	r := &rig{bin: t.TempDir()}
	brokerBin := goBuild(t, root, filepath.Join(r.bin, "broker"), "./cmd/broker")
	seedBin := filepath.Join(r.bin, "seedfloor")
	if err := loadtest.BuildSeedfloor(seedfloor, seedBin); err != nil {
		t.Fatal(err)
	}

	r.cluster = pgtest.NewCluster(t, pgOpts)
	db := r.cluster.New(t)
	r.pool = db.Pool()
	requireDurable(t, r.pool)
	r.dex = dextest.Start(t, dextest.Options{})

	var seedAddr string
	r.brokerAddr, r.adminAddr, seedAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	r.brokerLog = filepath.Join(r.bin, "broker.log")
	r.brokerPID = start(t, "broker", brokerBin, []string{"serve"}, append([]string{
		"BROKER_ADDR=" + r.brokerAddr,
		"BROKER_ADMIN_ADDR=" + r.adminAddr,
		"BROKER_DATABASE_URL=" + db.URL,
		"BROKER_OIDC_ISSUER=" + r.dex.Issuer(),
		"BROKER_OIDC_AUDIENCE=" + dextest.ClientID,
		"BROKER_APP_ID=" + appID,
		"BROKER_APP_CERTIFICATE=" + appCert,
		"BROKER_AUDIT_KEY=" + auditKey,
		"BROKER_BOOTSTRAP_ADMINS=group:" + dextest.GroupAdmins,
		"BROKER_RATE_LIMIT=0", // one client, thousands of requests a second: not what the limiter is for
	}, brokerEnv...), r.brokerLog)
	r.seedPID = start(t, "seedfloor", seedBin, []string{"-addr", seedAddr}, nil, filepath.Join(r.bin, "seedfloor.log"))
	waitOK(t, "http://"+r.brokerAddr+"/readyz")
	waitOK(t, "http://"+seedAddr+"/ping")

	r.admin = r.dex.Token(t, dextest.AdminEmail, dextest.AdminPassword)
	r.dev = r.dex.Token(t, dextest.DeveloperEmail, dextest.DeveloperPassword)
	var rule map[string]any
	if code := call(t, "POST", "http://"+r.brokerAddr+"/v1/policies", r.admin,
		`{"subject":"group:`+dextest.GroupDevelopers+`","channel":"`+channel+`","role":"publisher","effect":"allow"}`, &rule); code != http.StatusCreated {
		t.Fatalf("add the benchmark rule: status %d %v", code, rule)
	}
	var me struct {
		UID uint32 `json:"uid"`
	}
	if code := call(t, "GET", "http://"+r.brokerAddr+"/v1/me", r.dev, "", &me); code != http.StatusOK || me.UID == 0 {
		t.Fatalf("/v1/me: status %d uid %d", code, me.UID)
	}
	r.uid = me.UID
	r.path = fmt.Sprintf("/rtc/%s/publisher/uid/%d/?expiry=%s", channel, me.UID, expiry)
	r.brokerURL, r.seedURL = "http://"+r.brokerAddr+r.path, "http://"+seedAddr+r.path
	requireToken(t, "broker", r.brokerURL, r.dev, me.UID)
	requireToken(t, "seedfloor", r.seedURL, "", me.UID)
	return r
}

// bencher returns a bencher of the rig's servers for wrk runs with the
// given number of connections.
func (r *rig) bencher(t *testing.T, wrk string, connections int) bencher {
	return bencher{t: t, wrk: wrk, pool: r.pool, metrics: "http://" + r.adminAddr + "/metrics", token: r.dev,
		connections: connections, brokerPID: r.brokerPID, seedPID: r.seedPID}
}

// cpuProfile fetches the broker's CPU profile of the next d into path
// (BROKER_LOAD_CPUPROFILE), in the background: wait for it with the
// returned function.
func (r *rig) cpuProfile(t *testing.T, d time.Duration, path string) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", r.adminAddr, int(d.Seconds())))
		if err != nil {
			t.Errorf("CPU profile: %v", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		if err != nil {
			t.Errorf("CPU profile: %v", err)
			return
		}
		defer f.Close()
		if _, err := io.Copy(f, resp.Body); err != nil {
			t.Errorf("CPU profile: %v", err)
		}
	}()
	return func() { <-done }
}

// needWrk returns wrk's path, or fails saying how to get it.
func needWrk(t *testing.T) string {
	t.Helper()
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Fatal("wrk is not installed: run bench/load/run.sh as root (it installs it), or apt-get install wrk")
	}
	return wrk
}

// envDuration reads a duration of at least least from the environment
// variable name, def when it is unset.
func envDuration(t *testing.T, name string, def, least time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < least {
		t.Fatalf("%s=%q: want a duration of at least %s", name, v, least)
	}
	return d
}

// envInt reads a whole number from lo to hi from the environment variable
// name, def when it is unset.
func envInt(t *testing.T, name string, def, lo, hi int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		t.Fatalf("%s=%q: want a whole number from %d to %d", name, v, lo, hi)
	}
	return n
}
