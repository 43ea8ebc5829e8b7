package pg_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/pg"
)

const secret = "s3cr3tPW"

func TestRedact_MasksEveryPassword(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"url userinfo", "postgres://broker:" + secret + "@db:5432/broker?sslmode=require",
			"postgres://broker:xxxxx@db:5432/broker?sslmode=require"},
		{"url without password", "postgres://broker@db/broker", "postgres://broker@db/broker"},
		{"url query password", "postgres://db/broker?user=broker&password=" + secret,
			"postgres://db/broker?password=xxxxx&user=broker"},
		{"url sslpassword", "postgresql://u@db/b?sslpassword=" + secret, "postgresql://u@db/b?sslpassword=xxxxx"},
		{"keyword/value", "host=db user=broker password=" + secret + " dbname=broker",
			"host=db user=broker password=xxxxx dbname=broker"},
		{"keyword/value quoted", "host=db password='" + secret + " with space' dbname=broker",
			"host=db password=xxxxx dbname=broker"},
		{"keyword/value spaced", "host=db password = " + secret, "host=db password = xxxxx"},
		{"slash in password", "postgres://u:123/" + secret + "@db/b", "postgres://xxxxx@db/b"},
		{"at sign in password", "postgres://u:p@" + secret + "@db/b", "postgres://xxxxx@db/b"},
		{"unparseable url", "postgres://u:" + secret + "@[db/b", "postgres://xxxxx@[db/b"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := pg.Redact(tt.in)
			if got != tt.want {
				t.Errorf("Redact(…) = %q, want %q", got, tt.want)
			}
			if strings.Contains(got, secret) {
				t.Errorf("Redact(…) leaks the password")
			}
		})
	}
}

func TestOpen_ErrorsNeverContainThePassword(t *testing.T) {
	tests := []struct {
		name, url string
	}{
		{"bad port", "postgres://u:" + secret + "@db:notaport/b"},
		{"bad host", "postgres://u:" + secret + "@[db/b"},
		{"bad option", "postgres://u:" + secret + "@db/b?sslmode=sometimes"},
		{"keyword/value", "host=db password=" + secret + " port=x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pg.Open(context.Background(), tt.url, pg.Options{})
			if err == nil {
				t.Fatal("Open accepted a malformed URL")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestOpen_RejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts pg.Options
		want string
	}{
		{"negative timeout", pg.Options{StatementTimeout: -time.Second}, "StatementTimeout"},
		{"negative max", pg.Options{MaxConns: -1}, "MaxConns"},
		{"min above max", pg.Options{MaxConns: 2, MinConns: 3}, "MinConns"},
		{"min above default max", pg.Options{MinConns: 11}, "MinConns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pg.Open(context.Background(), "postgres://u@db/b", tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open error = %v, want one naming %s", err, tt.want)
			}
		})
	}
}

func TestConfig_AppliesDefaultsAndOptions(t *testing.T) {
	tests := []struct {
		name     string
		opts     pg.Options
		maxConns int32
		stmt     string
		lock     string
		connect  time.Duration
	}{
		{"defaults", pg.Options{}, 10, "10000", "2000", 5 * time.Second},
		{"explicit", pg.Options{MaxConns: 3, StatementTimeout: 1500 * time.Millisecond, LockTimeout: time.Second, ConnectTimeout: time.Second}, 3, "1500", "1000", time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := pg.Config("postgres://u@db/b?statement_timeout=0", tt.opts) // pool_* in the URL win (TestConfig_HonoursTheURLsPoolParameters)
			if err != nil {
				t.Fatal(err)
			}
			rp := cfg.ConnConfig.RuntimeParams
			if cfg.MaxConns != tt.maxConns || rp["statement_timeout"] != tt.stmt || rp["lock_timeout"] != tt.lock || cfg.ConnConfig.ConnectTimeout != tt.connect {
				t.Errorf("MaxConns=%d statement_timeout=%s lock_timeout=%s connect=%v; want %d %s %s %v",
					cfg.MaxConns, rp["statement_timeout"], rp["lock_timeout"], cfg.ConnConfig.ConnectTimeout,
					tt.maxConns, tt.stmt, tt.lock, tt.connect)
			}
			if cfg.MaxConnLifetime == 0 || cfg.MaxConnIdleTime == 0 || cfg.HealthCheckPeriod == 0 {
				t.Errorf("lifetime/idle/health-check left at zero: %v %v %v", cfg.MaxConnLifetime, cfg.MaxConnIdleTime, cfg.HealthCheckPeriod)
			}
		})
	}
}

func TestConfig_HonoursTheURLsPoolParameters(t *testing.T) {
	cfg, err := pg.Config("postgres://u@db/x?pool_max_conns=25&pool_min_conns=2", pg.Options{MaxConns: 3})
	if err != nil || cfg.MaxConns != 25 || cfg.MinConns != 2 {
		t.Fatalf("Config = %d/%d, %v; want the URL's 25 and 2", cfg.MaxConns, cfg.MinConns, err)
	}
	if cfg, _ := pg.Config("postgres://u@db/x", pg.Options{MaxConns: 3}); cfg.MaxConns != 3 {
		t.Fatalf("without pool_max_conns: %d, want the option's 3", cfg.MaxConns)
	}
	if _, err := pg.Config("postgres://u@db/x?pool_max_conns=2&pool_min_conns=5", pg.Options{}); err == nil {
		t.Fatal("pool_min_conns above pool_max_conns was accepted")
	}
	// The parameter's name inside a password is no parameter.
	if cfg, err := pg.Config("postgres://u:pool_max_conns=9@db/x", pg.Options{MaxConns: 3}); err != nil || cfg.MaxConns != 3 {
		t.Fatalf("a password containing pool_max_conns=: err %v; want the option's 3 connections", err)
	}
	if cfg, err := pg.Config("host=db user=u dbname=x pool_max_conns=7", pg.Options{MaxConns: 3}); err != nil || cfg.MaxConns != 7 {
		t.Fatalf("keyword/value pool_max_conns: err %v; want 7 connections", err)
	}
}
