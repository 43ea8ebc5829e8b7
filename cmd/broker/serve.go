package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/httpapi"
	"github.com/broker-dev/broker/internal/identity"
	"github.com/broker-dev/broker/internal/pg"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/review"
	"github.com/broker-dev/broker/internal/revoke"
	"github.com/broker-dev/broker/internal/sessions"
	"github.com/broker-dev/broker/internal/tokenurl"
)

// runServe is `broker serve`: production, with Postgres and a real identity
// provider. All configuration is validated before anything touches the network.
func runServe(ctx context.Context, args []string, getenv func(string) string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", stdout)
	cfg, err := loadConfig(fs, args, getenv, nil)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, cfg.LogLevel, true)
	for _, w := range cfg.Warnings {
		logger.Warn(w)
	}
	stopTracing, err := startTracing(ctx, getenv, logger)
	if err != nil {
		return err
	}
	defer stopTracing()
	if cfg.MemoryLimit > 0 && getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.MemoryLimit / 10 * 9)
		logger.Info("Go memory limit set from BROKER_MEMORY_LIMIT", slog.Int64("bytes", cfg.MemoryLimit/10*9))
	}

	pool, err := pg.Open(ctx, cfg.DatabaseURL, pg.Options{})
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer pool.Close()
	if err := pg.Ping(ctx, pool); err != nil {
		return err
	}
	if cfg.Migrate == "auto" {
		n, err := pg.Migrate(ctx, pool)
		if err != nil {
			return fmt.Errorf("BROKER_MIGRATE=auto: %w", err)
		}
		logger.Info("migrations applied", slog.Int("count", n))
	} else if err := pg.CheckSchema(ctx, pool); err != nil {
		return fmt.Errorf("database schema: %w", err)
	}

	// Auditor reads get their own connections, so that the issuance-log
	// writer and the decision path never wait behind them.
	reads, err := pg.Open(ctx, cfg.DatabaseURL, pg.Options{MaxConns: int32(cfg.ReadConns), ApplicationName: "broker-reads"})
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer reads.Close()

	reg := newRegistry()
	log, err := audit.NewPostgres(pool, cfg.AuditKey, audit.PostgresOptions{PreviousKeys: cfg.AuditPreviousKeys, Registerer: reg,
		Reads: reads, MaxReads: cfg.ReadConns, MaxWaiting: cfg.LogMaxWaiting})
	if err != nil {
		return fmt.Errorf("issuance log: %w", err)
	}
	// Records from before the transparency log's tree (or appended by the
	// previous release) get their stored hashes before anything is served:
	// resumable, and reported as it goes.
	lastReport := time.Now()
	if err := log.BuildTree(ctx, func(covered, total int64) {
		if covered < total && time.Since(lastReport) < 5*time.Second {
			return
		}
		lastReport = time.Now()
		logger.Info("issuance log tree", slog.Int64("covered", covered), slog.Int64("records", total))
	}); err != nil {
		_ = log.Close()
		return fmt.Errorf("issuance log tree: %w", err)
	}
	be := backends{
		policy:    policy.NewPGStore(pool, logger),
		log:       log,
		uids:      identity.NewPostgres(pool),
		tokenURLs: tokenurl.NewPostgres(pool),
		sessions:  sessions.NewPostgres(pool),
		events:    review.NewPostgres(pool),
		revs:      revoke.NewPostgres(pool),
		ready:     []httpapi.Check{{Name: "database", Check: func(ctx context.Context) error { return pg.Health(ctx, pool) }}},
	}
	a, err := newApp(ctx, cfg, be, logger, reg, nil)
	if err != nil {
		_ = log.Close()
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		_ = a.close()
		return fmt.Errorf("BROKER_ADDR: %w", err)
	}
	var admin net.Listener
	if a.admin != nil {
		if admin, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			_ = ln.Close()
			_ = a.close()
			return fmt.Errorf("BROKER_ADMIN_ADDR: %w", err)
		}
	}
	serr := serveBoth(ctx, httpapi.NewHTTPServer(cfg.Addr, a.handler, logger), ln,
		httpapi.NewHTTPServer(cfg.AdminAddr, a.admin, logger.With(slog.String("listener", "admin"))), admin, logger)
	if cerr := a.close(); cerr != nil && serr == nil {
		serr = cerr
	}
	return serr
}

// newRegistry returns a Prometheus registry with the process and Go collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo())
	return reg
}

// buildInfo is the broker_build_info gauge: always 1, labelled with what
// `broker version` prints, so that a dashboard shows which replica runs what.
func buildInfo() prometheus.Collector {
	b := readBuild()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "broker_build_info",
		Help:        "Always 1; labels name the running build.",
		ConstLabels: prometheus.Labels{"version": b.version, "revision": b.revision, "goversion": b.goVersion},
	})
	g.Set(1)
	return g
}

// newLogger returns the broker's slog logger: JSON for serve, text for the
// terminal-facing commands.
func newLogger(w io.Writer, level string, json bool) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
