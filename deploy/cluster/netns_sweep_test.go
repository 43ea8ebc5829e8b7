package cluster

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// A run killed with SIGKILL cannot clean up; the next run removes what it
// left, and nothing of a live run.
func TestSweepStale_RemovesOnlyDeadRunsNamespaces(t *testing.T) {
	preflight(t)
	dead := nsPrefix + "999999999-db" // no process has this id (pid_max is at most 2^22)
	live := nsPrefix + strconv.Itoa(os.Getpid()) + "-sweep"
	for _, ns := range []string{dead, live} {
		if err := run("ip", "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join("/etc/netns", ns), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = removeNamespaces(live) })
	if err := sweepStale(); err != nil {
		t.Fatal(err)
	}
	for ns, want := range map[string]bool{dead: false, live: true} {
		_, errRun := os.Stat(filepath.Join("/var/run/netns", ns))
		_, errEtc := os.Stat(filepath.Join("/etc/netns", ns))
		if got := errRun == nil; got != want {
			t.Errorf("namespace %s exists = %v, want %v", ns, got, want)
		}
		if got := errEtc == nil; got != want {
			t.Errorf("/etc/netns/%s exists = %v, want %v", ns, got, want)
		}
	}
}
