package pgtest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// pgtest's own tests are about the throwaway cluster, so they ignore EnvURL
// (the lifecycle tests' child processes inherit this).
func TestMain(m *testing.M) {
	os.Unsetenv(EnvURL)
	Main(m)
}

func tableExists(t *testing.T, d *DB, table string) bool {
	t.Helper()
	var ok bool
	err := d.Pool().QueryRow(context.Background(), "SELECT to_regclass($1) IS NOT NULL", table).Scan(&ok)
	if err != nil {
		t.Fatalf("query %s: %v", d.Name, err)
	}
	return ok
}

func TestNew_GivesMigratedDatabase(t *testing.T) {
	t.Parallel()
	d := New(t)
	for _, table := range []string{"casbin_rule", "policy_history", "identities", "issuance_log", "schema_version"} {
		if !tableExists(t, d, table) {
			t.Errorf("table %s missing in %s", table, d.Name)
		}
	}
}

func TestNewEmpty_GivesUnmigratedDatabase(t *testing.T) {
	t.Parallel()
	d := NewEmpty(t)
	if tableExists(t, d, "schema_version") {
		t.Errorf("schema_version exists in a database from NewEmpty")
	}
}

func TestNew_DatabasesAreIsolated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := New(t), New(t)
	if a.Name == b.Name {
		t.Fatalf("two databases named %s", a.Name)
	}
	if _, err := a.Pool().Exec(ctx, "INSERT INTO casbin_rule (ptype, v0) VALUES ('p', 'alice')"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.Pool().QueryRow(ctx, "SELECT count(*) FROM casbin_rule").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("row inserted in %s is visible in %s", a.Name, b.Name)
	}
}

func TestNew_DropsDatabaseWhenTestEnds(t *testing.T) {
	t.Parallel()
	var name string
	var c *Cluster
	t.Run("user", func(t *testing.T) {
		d := New(t)
		name, c = d.Name, d.Cluster()
		d.Pool() // an open pool must not keep it alive
	})
	var exists bool
	err := New(t).Pool().QueryRow(context.Background(),
		"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	if err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("database %s still exists on %s after its test ended", name, c.adminURL)
	}
}

func TestOptions_Fsync(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		db   func(t *testing.T) *DB
		want string
	}{
		{"shared cluster runs without fsync", func(t *testing.T) *DB { return New(t) }, "off"},
		{"private cluster keeps fsync by default", func(t *testing.T) *DB { return NewCluster(t, Options{}).NewEmpty(t) }, "on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			if err := tt.db(t).Pool().QueryRow(context.Background(), "SHOW fsync").Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("fsync = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestOptions_SettingsReachTheServer(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, Options{NoFsync: true, WALSegmentMB: 64, Settings: map[string]string{
		"shared_buffers":     "48MB", // overrides a default
		"checkpoint_timeout": "15min",
		"wal_compression":    "pglz",
		"min_wal_size":       "128MB", // at least two segments
	}})
	pool := c.NewEmpty(t).Pool()
	for setting, want := range map[string]string{
		"shared_buffers": "48MB", "checkpoint_timeout": "15min", "wal_compression": "pglz",
		"wal_segment_size": "64MB",                          // initdb's
		"fsync":            "off", "max_connections": "200", // defaults kept
	} {
		var got string
		if err := pool.QueryRow(context.Background(), "SHOW "+setting).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %s, want %s", setting, got, want)
		}
	}
}

func TestOptions_RejectedSettingFailsWithTheServerLog(t *testing.T) {
	t.Parallel()
	_, err := startLocal(Options{NoFsync: true, Settings: map[string]string{"wal_compression": "bogus"}})
	if err == nil || !strings.Contains(err.Error(), `invalid value for parameter "wal_compression"`) {
		t.Errorf("start with wal_compression=bogus: %v, want the server's complaint", err)
	}
}

func TestCluster_StopAndStartKeepsDataAndURLs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := NewCluster(t, Options{NoFsync: true})
	d := c.New(t)
	pool := d.Pool()
	if _, err := pool.Exec(ctx, "INSERT INTO casbin_rule (ptype, v0) VALUES ('p', 'alice')"); err != nil {
		t.Fatal(err)
	}

	c.Stop(t)
	if err := pool.Ping(ctx); err == nil {
		t.Fatal("ping succeeded while the server was stopped")
	}

	c.Start(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := pool.Ping(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool did not recover after Start: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM casbin_rule").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("rows after restart = %d, want 1", n)
	}
}

func BenchmarkNew(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts Options
	}{{"fsync=on", Options{}}, {"fsync=off", Options{NoFsync: true}}} {
		b.Run(bc.name, func(b *testing.B) {
			c := NewCluster(b, bc.opts)
			c.New(b) // make the template outside the timing
			b.ResetTimer()
			for b.Loop() {
				c.New(b)
			}
		})
	}
}
