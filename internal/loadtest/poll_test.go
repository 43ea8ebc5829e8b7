package loadtest

import (
	"math"
	"reflect"
	"testing"
	"time"
)

func TestPollSampleSince_TakesDifferences(t *testing.T) {
	t0 := time.Unix(3000, 0)
	prev := PollSample{At: t0, WALBytes: 1000, WALPosition: 5000, Head: 10, Checkpoints: 1, BuffersCheckpoint: 7, BuffersBackend: 2,
		Autovacuum:  []string{"autovacuum: VACUUM public.issuance_log_head"},
		Broker:      Snapshot{Decisions: map[string]int{"granted": 10}, Commits: 2, CommitSeconds: 0.004, Batches: 2, BatchRecords: 10},
		CommitTimes: Histogram{Bounds: []float64{0.001, 0.005, math.Inf(1)}, Counts: []float64{1, 2, 2}},
		Machine:     CPUTimes{Idle: 100, Total: 200}}
	s := PollSample{At: t0.Add(1500 * time.Millisecond), WALBytes: 51000, WALPosition: 60000, Head: 110, Checkpoints: 1, BuffersCheckpoint: 9, BuffersBackend: 2,
		Autovacuum:  []string{"autovacuum: VACUUM ANALYZE public.policy_history", "autovacuum: VACUUM public.issuance_log_head"},
		Broker:      Snapshot{Decisions: map[string]int{"granted": 110}, Commits: 6, CommitSeconds: 0.012, Batches: 6, BatchRecords: 110},
		CommitTimes: Histogram{Bounds: []float64{0.001, 0.005, math.Inf(1)}, Counts: []float64{4, 6, 6}},
		Machine:     CPUTimes{Idle: 150, Total: 400}}
	got := s.Since(prev)
	want := PollInterval{Seconds: 1.5, WALBytes: 50000, WALWritten: 55000, Records: 100, BuffersCheckpoint: 2,
		Autovacuum:  []string{"autovacuum: VACUUM ANALYZE public.policy_history", "autovacuum: VACUUM public.issuance_log_head"},
		Broker:      Snapshot{Decisions: map[string]int{"granted": 100}, Commits: 4, CommitSeconds: 0.008, Batches: 4, BatchRecords: 100},
		CommitTimes: Histogram{Bounds: []float64{0.001, 0.005, math.Inf(1)}, Counts: []float64{3, 4, 4}},
		Idle:        0.25}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Since =\n%+v\nwant\n%+v", got, want)
	}
	if got.MeanBatch() != 25 || got.MeanCommit() != 2*time.Millisecond {
		t.Errorf("mean batch %v, mean commit %s; want 25, 2ms", got.MeanBatch(), got.MeanCommit())
	}
	if (PollInterval{}).MeanBatch() != 0 || (PollInterval{}).MeanCommit() != 0 {
		t.Error("means of an interval without commits are not 0")
	}
}

func TestPollIntervalExplain_NamesWhatStoodOut(t *testing.T) {
	// A 60 s run: 2 ms commits of 20 records, 1 MB/s of WAL, 40% idle.
	run := PollInterval{Seconds: 60, WALWritten: 60 << 20, Idle: 0.4,
		Broker: Snapshot{Commits: 3000, CommitSeconds: 6, Batches: 3000, BatchRecords: 60000}}
	second := func(f func(*PollInterval)) PollInterval {
		i := PollInterval{Seconds: 1, WALWritten: 1 << 20, Idle: 0.4,
			Broker: Snapshot{Commits: 50, CommitSeconds: 0.1, Batches: 50, BatchRecords: 1000}}
		f(&i)
		return i
	}
	tests := []struct {
		name string
		i    PollInterval
		want []string
	}{
		{"an ordinary second", second(func(*PollInterval) {}), nil},
		{"a checkpoint", second(func(i *PollInterval) { i.Checkpoints, i.BuffersCheckpoint = 1, 300 }),
			[]string{"1 checkpoint(s) begun", "checkpoint wrote 300 buffers"}},
		{"backends writing, autovacuum", second(func(i *PollInterval) {
			i.BuffersBackend, i.Autovacuum = 12, []string{"autovacuum: VACUUM public.issuance_log_head"}
		}), []string{"backends wrote 12 buffers themselves", "autovacuum (autovacuum: VACUUM public.issuance_log_head)"}},
		{"slow, big commits", second(func(i *PollInterval) {
			i.Broker = Snapshot{Commits: 10, CommitSeconds: 0.08, Batches: 10, BatchRecords: 1000}
		}), []string{"slow log commits (mean 8ms, run 2ms)", "big log batches (mean 100.0 records, run 20.0)"}},
		{"one slow commit", second(func(i *PollInterval) {
			i.CommitTimes = Histogram{Bounds: []float64{0.0025, 0.005, 0.01, math.Inf(1)}, Counts: []float64{48, 49, 50, 50}}
		}), []string{"a log commit of 5ms–10ms"}},
		{"WAL burst, busy machine", second(func(i *PollInterval) { i.WALWritten, i.Idle = 3<<20, 0.1 }),
			[]string{"WAL 3072 kB/s (run 1024 kB/s)", "machine busy (10% idle, run 40%)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.i.Explain(run); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Explain = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPollInterval_DescribesSlowestCommitAndLargestBatch(t *testing.T) {
	commits := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, math.Inf(1)}
	batches := []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, math.Inf(1)}
	tests := []struct {
		name                 string
		commitsTo, batchesTo int // the last bucket with an observation
		slowest, largest     string
	}{
		{"first buckets", 0, 0, "0s–1ms", "1"},
		{"middle buckets", 3, 5, "5ms–10ms", "21–50"},
		{"last buckets", 11, 10, "over 2.5s", "over 1000"},
	}
	cumulative := func(bounds []float64, to int) Histogram {
		h := Histogram{Bounds: bounds, Counts: make([]float64, len(bounds))}
		for i := range h.Counts {
			h.Counts[i] = float64(min(i, to) + 1)
		}
		return h
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := PollInterval{CommitTimes: cumulative(commits, tt.commitsTo), BatchSizes: cumulative(batches, tt.batchesTo)}
			if got := i.SlowestCommit(); got != tt.slowest {
				t.Errorf("SlowestCommit = %q, want %q", got, tt.slowest)
			}
			if got := i.LargestBatch(); got != tt.largest {
				t.Errorf("LargestBatch = %q, want %q", got, tt.largest)
			}
		})
	}
	if (PollInterval{}).SlowestCommit() != "" || (PollInterval{}).LargestBatch() != "" {
		t.Error("an interval without commits describes one")
	}
}
