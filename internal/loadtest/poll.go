package loadtest

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// PollSample is one reading of what may slow the broker's answers down, as
// a poller takes it once a second during a fixed-rate run: Postgres's WAL,
// checkpoints and autovacuum, the issuance log's head, the broker's log
// commits, and the machine's CPU.
type PollSample struct {
	At time.Time
	// WAL: the bytes of the WAL records written (pg_stat_wal.wal_bytes: a
	// backend reports its own at most once a second, and keeps them up to
	// 10 s when it goes idle just after a report, so this is lumpy second by
	// second and exact only once every backend has reported), and the WAL's
	// write position (pg_current_wal_lsn() in bytes: exact at the moment,
	// page headers included).
	WALBytes, WALPosition int64
	Head                  int64 // the issuance log's last seq (issuance_log_head.seq)
	// pg_stat_bgwriter: checkpoints_timed + checkpoints_req, and the buffers
	// written by checkpoints and by backends themselves (shared_buffers full
	// of dirty pages).
	Checkpoints, BuffersCheckpoint, BuffersBackend int64
	Autovacuum                                     []string // pg_stat_activity.query of each autovacuum worker running
	Broker                                         Snapshot // the broker's /metrics
	// The broker's histograms of log commit times (broker_audit_commit_seconds)
	// and of records per commit (broker_audit_batch_size).
	CommitTimes, BatchSizes Histogram
	Machine                 CPUTimes
}

// PollInterval is what happened between two samples.
type PollInterval struct {
	Seconds                                        float64
	WALBytes, WALWritten                           int64 // pg_stat_wal.wal_bytes; the write position's advance
	Records                                        int64 // issuance-log records appended
	Checkpoints, BuffersCheckpoint, BuffersBackend int64
	Autovacuum                                     []string // autovacuum workers running at either end
	Broker                                         Snapshot // what the broker's metrics counted
	CommitTimes, BatchSizes                        Histogram
	Idle                                           float64 // the machine's idle share
}

// Since returns what happened from prev to s.
func (s PollSample) Since(prev PollSample) PollInterval {
	av := slices.Concat(prev.Autovacuum, s.Autovacuum)
	slices.Sort(av)
	return PollInterval{
		Seconds:  s.At.Sub(prev.At).Seconds(),
		WALBytes: s.WALBytes - prev.WALBytes, WALWritten: s.WALPosition - prev.WALPosition,
		Records:     s.Head - prev.Head,
		Checkpoints: s.Checkpoints - prev.Checkpoints, BuffersCheckpoint: s.BuffersCheckpoint - prev.BuffersCheckpoint,
		BuffersBackend: s.BuffersBackend - prev.BuffersBackend,
		Autovacuum:     slices.Compact(av),
		Broker:         s.Broker.Sub(prev.Broker),
		CommitTimes:    s.CommitTimes.Sub(prev.CommitTimes),
		BatchSizes:     s.BatchSizes.Sub(prev.BatchSizes),
		Idle:           s.Machine.IdleSince(prev.Machine),
	}
}

// MeanBatch is the mean number of records per log commit, 0 without one.
func (i PollInterval) MeanBatch() float64 {
	if i.Broker.Batches == 0 {
		return 0
	}
	return i.Broker.BatchRecords / i.Broker.Batches
}

// MeanCommit is the mean time of a log commit, 0 without one.
func (i PollInterval) MeanCommit() time.Duration {
	if i.Broker.Commits == 0 {
		return 0
	}
	return time.Duration(i.Broker.CommitSeconds / i.Broker.Commits * float64(time.Second))
}

// walRate is the WAL written per second, 0 for an empty interval.
func (i PollInterval) walRate() float64 {
	if i.Seconds <= 0 {
		return 0
	}
	return float64(i.WALWritten) / i.Seconds
}

// slowCommit is the commit time past which Explain names a commit.
const slowCommit = 0.005

// Explain names what in interval i, against the whole run's interval, may
// have slowed answers down: a checkpoint (begun, or writing buffers),
// backends writing buffers themselves, autovacuum, a log commit over 5 ms,
// log commits twice as slow or batches twice as big as the run's mean,
// twice the run's WAL rate, or the machine's idle share under half the
// run's. It returns nil when none of them happened.
func (i PollInterval) Explain(run PollInterval) []string {
	var why []string
	if i.Checkpoints > 0 {
		why = append(why, fmt.Sprintf("%d checkpoint(s) begun", i.Checkpoints))
	}
	if i.BuffersCheckpoint > 0 {
		why = append(why, fmt.Sprintf("checkpoint wrote %d buffers", i.BuffersCheckpoint))
	}
	if i.BuffersBackend > 0 {
		why = append(why, fmt.Sprintf("backends wrote %d buffers themselves", i.BuffersBackend))
	}
	if len(i.Autovacuum) > 0 {
		why = append(why, "autovacuum ("+strings.Join(i.Autovacuum, "; ")+")")
	}
	if lo, hi, ok := i.CommitTimes.Largest(); ok && lo >= slowCommit {
		why = append(why, fmt.Sprintf("a log commit of %s", bucketText(lo, hi, time.Second)))
	}
	if c, r := i.MeanCommit(), run.MeanCommit(); r > 0 && c > 2*r {
		why = append(why, fmt.Sprintf("slow log commits (mean %s, run %s)", c.Round(10*time.Microsecond), r.Round(10*time.Microsecond)))
	}
	if b, r := i.MeanBatch(), run.MeanBatch(); r > 0 && b > 2*r {
		why = append(why, fmt.Sprintf("big log batches (mean %.1f records, run %.1f)", b, r))
	}
	if w, r := i.walRate(), run.walRate(); r > 0 && w > 2*r {
		why = append(why, fmt.Sprintf("WAL %.0f kB/s (run %.0f kB/s)", w/1024, r/1024))
	}
	if i.Idle < run.Idle/2 {
		why = append(why, fmt.Sprintf("machine busy (%.0f%% idle, run %.0f%%)", 100*i.Idle, 100*run.Idle))
	}
	return why
}

// bucketText describes a histogram bucket (lo, hi] of durations in unit:
// "2.5ms–5ms", or "over 2.5s" for the last.
func bucketText(lo, hi float64, unit time.Duration) string {
	d := func(v float64) time.Duration { return time.Duration(v * float64(unit)) }
	if math.IsInf(hi, 1) {
		return "over " + d(lo).String()
	}
	return d(lo).String() + "–" + d(hi).String()
}

// SlowestCommit describes the bucket of the interval's slowest log commit,
// "" without a commit.
func (i PollInterval) SlowestCommit() string {
	lo, hi, ok := i.CommitTimes.Largest()
	if !ok {
		return ""
	}
	return bucketText(lo, hi, time.Second)
}

// LargestBatch describes the bucket of the interval's largest log batch
// ("21–50", "1", "over 1000" records), "" without a commit.
func (i PollInterval) LargestBatch() string {
	lo, hi, ok := i.BatchSizes.Largest()
	if !ok {
		return ""
	}
	switch {
	case math.IsInf(hi, 1):
		return fmt.Sprintf("over %g", lo)
	case lo+1 == hi:
		return fmt.Sprintf("%g", hi)
	}
	return fmt.Sprintf("%g–%g", lo+1, hi)
}
