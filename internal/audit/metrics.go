package audit

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics observe the group-commit writer.
type metrics struct {
	batchSize prometheus.Histogram
	commit    prometheus.Histogram
	failures  prometheus.Counter
	splits    prometheus.Counter // batches split to isolate records Postgres refused
	shed      prometheus.Counter // appends refused at once: MaxWaiting were waiting
	// Contention with other writers on the same chain (other replicas).
	headMoved prometheus.Counter // the stored head had moved on: the batch was linked again
	stale     prometheus.Counter // a policy change committed after some grants were decided: they decide again
}

// newMetrics registers the writer's metrics with reg, waiting reporting how
// many appends wait. A nil reg records into unregistered collectors.
// Registering twice with one registry (two logs in a process) shares the
// collectors (and the first log's waiting gauge).
func newMetrics(reg prometheus.Registerer, waiting func() float64) (*metrics, error) {
	m := &metrics{
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "broker_audit_batch_size",
			Help:    "Records committed per issuance-log transaction.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "broker_audit_commit_seconds",
			Help:    "Time to commit one batch of issuance-log records, successful or not.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "broker_audit_commit_failures_total",
			Help: "Issuance-log batches that could not be committed; their requests were refused.",
		}),
		splits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "broker_audit_batch_splits_total",
			Help: "Issuance-log batches Postgres refused for some record's data, split in two so that only the records at fault were refused.",
		}),
		shed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "broker_audit_appends_shed_total",
			Help: "Decisions refused at once (503, Retry-After) because the most requests allowed to wait for the issuance log (BROKER_LOG_MAX_WAITING) were waiting.",
		}),
	}
	waitingGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "broker_audit_appends_waiting",
		Help: "Decisions waiting for the issuance log: queued, or in the batch being committed.",
	}, waiting)
	conflicts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "broker_audit_chain_conflicts_total",
		Help: `Issuance-log batches that met another writer: kind="head_moved" (it had appended first; the batch was linked to its head) or "stale_policy" (a policy change had committed since some of the batch's grants were decided; they decided again).`,
	}, []string{"kind"})
	if reg != nil {
		var err error
		if m.batchSize, err = register(reg, m.batchSize); err != nil {
			return nil, err
		}
		if m.commit, err = register(reg, m.commit); err != nil {
			return nil, err
		}
		if m.failures, err = register(reg, m.failures); err != nil {
			return nil, err
		}
		if m.splits, err = register(reg, m.splits); err != nil {
			return nil, err
		}
		if m.shed, err = register(reg, m.shed); err != nil {
			return nil, err
		}
		if _, err = register(reg, waitingGauge); err != nil {
			return nil, err
		}
		if conflicts, err = register(reg, conflicts); err != nil {
			return nil, err
		}
	}
	m.headMoved = conflicts.WithLabelValues("head_moved")
	m.stale = conflicts.WithLabelValues("stale_policy")
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	switch {
	case err == nil:
		return c, nil
	case errors.As(err, &are):
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("registering audit metrics: %w", err)
}
