// Package pg owns the broker's connection to Postgres: the connection pool and its
// limits, the schema migration runner and the health check behind /readyz.
// It must never put a database password in an error or a log line.
package pg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/tracing"
)

// Options bounds the pool and every session in it. A zero field takes the
// default listed beside it; Options win over the same settings in the URL.
type Options struct {
	ConnectTimeout    time.Duration // establishing one connection (5s)
	StatementTimeout  time.Duration // any one statement, server side (10s)
	LockTimeout       time.Duration // waiting for any one lock, server side (2s)
	IdleInTxTimeout   time.Duration // a session idle inside a transaction (2s: no transaction waits on the broker)
	MaxConns          int32         // open connections at most (10)
	MinConns          int32         // connections kept open while idle (0)
	MaxConnLifetime   time.Duration // a connection is replaced after this (30m)
	MaxConnIdleTime   time.Duration // an idle connection is closed after this (5m)
	HealthCheckPeriod time.Duration // how often idle connections are checked (30s)
	ApplicationName   string        // shown in pg_stat_activity ("broker")
}

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.ConnectTimeout, 5*time.Second)
	def(&o.StatementTimeout, 10*time.Second)
	def(&o.LockTimeout, 2*time.Second)
	def(&o.IdleInTxTimeout, 2*time.Second)
	def(&o.MaxConnLifetime, 30*time.Minute)
	def(&o.MaxConnIdleTime, 5*time.Minute)
	def(&o.HealthCheckPeriod, 30*time.Second)
	if o.MaxConns == 0 {
		o.MaxConns = 10
	}
	if o.ApplicationName == "" {
		o.ApplicationName = "broker"
	}
	return o
}

func (o Options) validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"ConnectTimeout", o.ConnectTimeout}, {"StatementTimeout", o.StatementTimeout},
		{"LockTimeout", o.LockTimeout}, {"IdleInTxTimeout", o.IdleInTxTimeout},
		{"MaxConnLifetime", o.MaxConnLifetime}, {"MaxConnIdleTime", o.MaxConnIdleTime},
		{"HealthCheckPeriod", o.HealthCheckPeriod},
	} {
		if d.v < 0 {
			return fmt.Errorf("pg: option %s is negative (%v)", d.name, d.v)
		}
	}
	switch {
	case o.MaxConns < 0:
		return fmt.Errorf("pg: option MaxConns is negative (%d)", o.MaxConns)
	case o.MinConns < 0:
		return fmt.Errorf("pg: option MinConns is negative (%d)", o.MinConns)
	case o.MinConns > o.MaxConns:
		return fmt.Errorf("pg: option MinConns (%d) exceeds MaxConns (%d)", o.MinConns, o.MaxConns)
	}
	return nil
}

// Open returns a pool for databaseURL (a postgres:// URL or a keyword/value
// string) bounded by opts. It does not connect: a database that is down at
// start makes Health fail rather than Open, so a replica can start and report
// itself not ready. Call Ping to fail fast instead.
func Open(ctx context.Context, databaseURL string, opts Options) (*pgxpool.Pool, error) {
	if strings.TrimSpace(databaseURL) == "" {
		return nil, errors.New("pg: empty database URL")
	}
	cfg, err := Config(databaseURL, opts)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pg: open pool for %s: %w", Redact(databaseURL), err)
	}
	return pool, nil
}

// Keepalive and unacknowledged-data bounds on every connection to Postgres.
const (
	keepAliveIdle     = 5 * time.Second
	keepAliveInterval = 2 * time.Second
	keepAliveCount    = 3
	tcpUserTimeout    = 6 * time.Second // data unacknowledged this long ends the connection
)

// dialer returns the dialer of every Postgres connection: TCP keepalives
// after 5 s of silence, every 2 s, 3 probes; and TCP_USER_TIMEOUT where the
// platform has it (tcpUserTimeoutControl).
func dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{
		Timeout:         timeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount},
		Control:         tcpUserTimeoutControl,
	}
}

// Config returns the pool configuration Open would use, for callers that need
// to adjust it further (e.g. a dedicated LISTEN connection).
func Config(databaseURL string, opts Options) (*pgxpool.Config, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("pg: invalid database URL %s: %s", Redact(databaseURL), parseReason(err))
	}
	// The URL's pool parameters win over Options (never silently ignored).
	given := func(param string) bool { return hasParam(databaseURL, param) }
	if !given("pool_max_conns") {
		cfg.MaxConns = opts.MaxConns
	}
	if !given("pool_min_conns") {
		cfg.MinConns = opts.MinConns
	}
	if !given("pool_max_conn_lifetime") {
		cfg.MaxConnLifetime = opts.MaxConnLifetime
	}
	if !given("pool_max_conn_lifetime_jitter") {
		cfg.MaxConnLifetimeJitter = cfg.MaxConnLifetime / 10
	}
	if !given("pool_max_conn_idle_time") {
		cfg.MaxConnIdleTime = opts.MaxConnIdleTime
	}
	if !given("pool_health_check_period") {
		cfg.HealthCheckPeriod = opts.HealthCheckPeriod
	}
	if cfg.MinConns > cfg.MaxConns {
		return nil, fmt.Errorf("pg: database URL %s: pool_min_conns exceeds the pool's maximum (%d)", Redact(databaseURL), cfg.MaxConns)
	}
	cfg.ConnConfig.ConnectTimeout = opts.ConnectTimeout
	// A dead or silent peer is noticed in seconds, not at the kernel's
	// defaults (two hours of keepalive idle, fifteen minutes of retransmits).
	cfg.ConnConfig.DialFunc = dialer(opts.ConnectTimeout).DialContext
	cfg.ConnConfig.Tracer = tracing.Queries{}
	// Runtime parameters travel in the startup packet, so they are the session
	// defaults: a RESET ALL (as a migration runner issues) keeps them.
	rp := cfg.ConnConfig.RuntimeParams
	rp["statement_timeout"] = millis(opts.StatementTimeout)
	rp["lock_timeout"] = millis(opts.LockTimeout)
	rp["idle_in_transaction_session_timeout"] = millis(opts.IdleInTxTimeout)
	rp["application_name"] = opts.ApplicationName
	return cfg, nil
}

func millis(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// parseReason extracts why pgx could not parse a connection string without the
// string itself: url.Parse errors quote the raw URL, password included.
func parseReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		if inner := pe.Unwrap(); inner != nil {
			return inner.Error()
		}
		msg := pe.Error()
		if i := strings.LastIndex(msg, "`: "); i >= 0 {
			return msg[i+3:]
		}
	}
	return "malformed connection string"
}

// Ping reports whether the database answers, as an apperr Unavailable error.
func Ping(ctx context.Context, pool *pgxpool.Pool) error {
	if err := pool.Ping(ctx); err != nil {
		cc := pool.Config().ConnConfig
		return unavailable(err, fmt.Sprintf("cannot reach the database %q at %s", cc.Database, net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port)))))
	}
	return nil
}

// Health reports whether the broker can serve: the database answers and its
// schema is the one this binary was built for. /readyz calls it.
func Health(ctx context.Context, pool *pgxpool.Pool) error {
	if err := Ping(ctx, pool); err != nil {
		return err
	}
	return CheckSchema(ctx, pool)
}

const redactedPassword = "xxxxx"

var (
	// password=… in a keyword/value string or a URL query, quoted or not.
	passwordParam = regexp.MustCompile(`(?i)((?:^|[\s?&;])(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&;]*)`)
)

// Redact returns databaseURL with every password replaced by "xxxxx", for
// messages and logs. It accepts postgres:// URLs and keyword/value strings, and
// masks more than needed, never less, when the input is malformed.
func Redact(databaseURL string) string {
	if strings.Contains(databaseURL, "://") {
		if u, err := url.Parse(databaseURL); err == nil && !strandedAt(databaseURL, u) {
			if _, ok := u.User.Password(); ok {
				u.User = url.UserPassword(u.User.Username(), redactedPassword)
			}
			q := u.Query()
			for k := range q {
				if lk := strings.ToLower(k); lk == "password" || lk == "sslpassword" {
					q.Set(k, redactedPassword)
				}
			}
			if u.RawQuery != "" {
				u.RawQuery = q.Encode()
			}
			return u.String()
		}
		databaseURL = redactBrokenUserinfo(databaseURL)
	}
	return passwordParam.ReplaceAllString(databaseURL, "${1}"+redactedPassword)
}

// strandedAt reports an '@' outside the userinfo: an unencoded '/', '?' or '@'
// in a password splits it so that url.Parse takes part of it for host or path.
func strandedAt(s string, u *url.URL) bool {
	want := 0
	if u.User != nil {
		want = 1
	}
	return strings.Count(s, "@") > want
}

// redactBrokenUserinfo masks everything up to the last '@' of an unparseable
// URL: a password may itself contain '/', '?' or '@'.
func redactBrokenUserinfo(s string) string {
	scheme, rest, _ := strings.Cut(s, "://")
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return s
	}
	return scheme + "://" + redactedPassword + rest[at:]
}

// hasParam reports whether the database URL (or keyword=value string) sets
// param: as a query parameter, never as text inside another part (a
// password may contain "pool_max_conns=").
func hasParam(databaseURL, param string) bool {
	if u, err := url.Parse(databaseURL); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		return u.Query().Has(param)
	}
	for _, field := range strings.Fields(databaseURL) {
		if strings.HasPrefix(field, param+"=") {
			return true
		}
	}
	return false
}
