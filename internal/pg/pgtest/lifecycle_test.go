package pgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childEnv selects what TestLifecycleChild does when a lifecycle test runs
// this test binary as a child process: "exit" ends normally, "wait" blocks
// until the parent signals or kills it.
const childEnv = "PGTEST_LIFECYCLE_CHILD"

// TestLifecycleChild is the child half of the lifecycle tests; run directly,
// without childEnv, it has nothing to do.
func TestLifecycleChild(t *testing.T) {
	mode := os.Getenv(childEnv)
	if mode == "" {
		return
	}
	d := New(t)
	if err := d.Pool().Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := d.Cluster().local
	fmt.Printf("pgtest-child dir=%s pid=%d\n", s.dir, s.pid())
	if mode == "wait" {
		select {}
	}
}

// child is a running child test process with a started cluster.
type child struct {
	cmd *exec.Cmd
	dir string // the cluster's temporary root
	pid int    // its postmaster
}

func startChild(t *testing.T, mode string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLifecycleChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	c := &child{cmd: cmd}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "pgtest-child dir=%s pid=%d", &c.dir, &c.pid); err == nil {
			go func() {
				for sc.Scan() { // drain, so the child never blocks on a full pipe
				}
			}()
			return c
		}
	}
	t.Fatalf("child exited without reporting its cluster: %v", sc.Err())
	return nil
}

// waitGone polls until process pid has ended.
func waitGone(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) still running", what, pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func assertNoDir(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory %s still exists (stat: %v)", dir, err)
	}
}

func TestMain_StopsServerAndDeletesDirectoryWhenTestsEnd(t *testing.T) {
	t.Parallel()
	c := startChild(t, "exit")
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	waitGone(t, c.pid, "postmaster")
	assertNoDir(t, c.dir)
}

func TestMain_CleansUpOnSignal(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			c := startChild(t, "wait")
			if err := c.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err := c.cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 128+int(sig) {
				t.Errorf("child exit = %v, want status %d", err, 128+int(sig))
			}
			waitGone(t, c.pid, "postmaster")
			assertNoDir(t, c.dir)
		})
	}
}

func TestPdeathsig_KilledTestBinaryLeavesNoServer(t *testing.T) {
	t.Parallel()
	c := startChild(t, "wait")
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
	waitGone(t, c.pid, "postmaster of a killed test binary")

	// The directory outlives a SIGKILL; the next cluster start sweeps it. That
	// may be another package's test binary starting a cluster at the same
	// moment, so the directory may already be gone here: either way, after a
	// sweep it must be.
	sweepStale()
	assertNoDir(t, c.dir)
}

func TestSweepStale_KeepsDirectoriesOfLiveProcesses(t *testing.T) {
	t.Parallel()
	d := New(t)
	sweepStale()
	if _, err := os.Stat(d.Cluster().local.dir); err != nil {
		t.Fatalf("sweep removed a live cluster: %v", err)
	}
	if !strings.HasPrefix(d.URL, "postgres://postgres@127.0.0.1:") {
		t.Errorf("URL = %q, want a loopback URL without password", d.URL)
	}
}
