package loadtest

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseProcessCPU_AddsUserAndSystemTime(t *testing.T) {
	tests := []struct {
		name, stat string
		want       time.Duration
	}{
		{"plain name", "4242 (broker) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1234 56 0 0 20 0 12 0 100 0 0", 12900 * time.Millisecond},
		{"name with spaces and parentheses", "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 300 100 0 0 20 0 1 0 5 0 0", 4 * time.Second},
		{"children's time not included", "9 (postgres) S 1 9 9 0 -1 0 0 0 0 0 100 100 5000 700 20 0 1 0 5 0 0", 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseProcessCPU(tt.stat)
			if err != nil || got != tt.want {
				t.Errorf("ParseProcessCPU = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 utime 12"} {
		if _, err := ParseProcessCPU(bad); err == nil {
			t.Errorf("ParseProcessCPU(%q) accepted", bad)
		}
	}
}

func TestParseStat_ReadsParentAndChildrenTime(t *testing.T) {
	got, err := parseStat("9 (post master) (x) S 4242 9 9 0 -1 0 0 0 0 0 100 50 5000 700 20 0 1 0 5 0 0")
	if want := (procStat{ppid: 4242, self: 150, children: 5700}); err != nil || got != want {
		t.Errorf("parseStat = %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{
		"1 (x) S one 2 3 4 5 6 7 8 9 10 11 12 13 14", // parent pid
		"1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 cutime 14",
	} {
		if _, err := parseStat(bad); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

func TestParseMachineCPU_CountsIdleAndIOWaitAsIdle(t *testing.T) {
	before, err := ParseMachineCPU("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n")
	if err != nil {
		t.Fatal(err)
	}
	after, err := ParseMachineCPU("cpu  250 0 100 850 50 0 0 0 0 0\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := after.IdleSince(before); got != 0.2 { // 50 idle of 250 ticks
		t.Errorf("idle share = %v, want 0.2", got)
	}
	if _, err := ParseMachineCPU("intr 1 2 3\n"); err == nil {
		t.Error("ParseMachineCPU accepted a file without a cpu line")
	}
}

func TestMachineCPU_ReadsThisMachine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	c, err := MachineCPU()
	if err != nil || c.Total <= 0 || c.Idle < 0 || c.Idle > c.Total {
		t.Errorf("MachineCPU = %+v, %v", c, err)
	}
}

// treeScript burns CPU in a shell, then runs a child shell that burns CPU,
// says its pid and waits for a line on stdin; once the child has exited (and
// the shell has reaped it), the shell says so and waits for a line itself.
const treeScript = `i=0; while [ $i -lt 50000 ]; do i=$((i+1)); done
sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo "child $$"; read x'
echo reaped
read x
`

func TestProcessTreeCPU_CountsLiveAndReapedChildren(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	cmd := exec.Command("sh", "-c", treeScript)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close() // both shells read end of file and exit
		_ = cmd.Wait()
	})
	out := bufio.NewReader(stdout)
	line := func() string {
		t.Helper()
		s, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("read the shell's output: %v (got %q)", err, s)
		}
		return strings.TrimSpace(s)
	}
	pid := cmd.Process.Pid

	// The child is alive: it is found among the processes.
	f := strings.Fields(line())
	if len(f) != 2 || f[0] != "child" {
		t.Fatalf("shell said %q, want \"child <pid>\"", f)
	}
	child, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	childCPU, err := ProcessCPU(child)
	if err != nil {
		t.Fatal(err)
	}
	self, err := ProcessCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := ProcessTreeCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	if tree <= 0 || tree < self+childCPU {
		t.Errorf("child alive: tree CPU %v; want > 0 and ≥ the shell's %v + the child's %v", tree, self, childCPU)
	}

	// The child has exited and been reaped: its time is the shell's children's.
	if _, err := io.WriteString(stdin, "\n"); err != nil {
		t.Fatal(err)
	}
	if s := line(); s != "reaped" {
		t.Fatalf("shell said %q, want \"reaped\"", s)
	}
	self, err = ProcessCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	tree, err = ProcessTreeCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	if tree <= 0 || tree < self+childCPU {
		t.Errorf("child reaped: tree CPU %v; want > 0 and ≥ the shell's %v + the child's %v", tree, self, childCPU)
	}
	t.Logf("shell %v, child %v (when last seen alive), tree %v", self, childCPU, tree)
}

func TestProcessTreeCPU_RefusesAMissingProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	if _, err := ProcessTreeCPU(-1); err == nil {
		t.Error("ProcessTreeCPU(-1) accepted")
	}
	if _, err := ProcessCPU(-1); err == nil {
		t.Error("ProcessCPU(-1) accepted")
	}
}

func TestParseProcessMemory_ReadsRSSAndPeak(t *testing.T) {
	status := "Name:\tbroker\nState:\tS (sleeping)\nVmPeak:\t 1800000 kB\nVmHWM:\t  200704 kB\nVmRSS:\t  150000 kB\nThreads:\t12\n"
	got, err := ParseProcessMemory(status)
	if want := (Memory{RSS: 150000 << 10, Peak: 200704 << 10}); err != nil || got != want {
		t.Errorf("ParseProcessMemory = %+v, %v; want %+v", got, err, want)
	}
	for name, bad := range map[string]string{
		"kernel thread, no VmRSS": "Name:\tkthreadd\nVmHWM:\t0 kB\n",
		"no unit":                 "VmHWM:\t10\nVmRSS:\t10\n",
		"not a number":            "VmHWM:\tten kB\nVmRSS:\t10 kB\n",
	} {
		if _, err := ParseProcessMemory(bad); err == nil {
			t.Errorf("ParseProcessMemory accepted %s: %q", name, bad)
		}
	}
}

func TestProcessMemory_ReadsThisProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	m, err := ProcessMemory(os.Getpid())
	if err != nil || m.RSS <= 0 || m.Peak < m.RSS {
		t.Errorf("ProcessMemory = %+v, %v", m, err)
	}
}
