package load

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// userHZ is the unit of the CPU times in /proc (USER_HZ, 100 on Linux).
const userHZ = 100

// processCPU returns the CPU time (user + system) process pid has used.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("process %d CPU time: %w", pid, err)
	}
	return parseProcessCPU(string(b))
}

// parseProcessCPU reads utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from its last ')'.
func parseProcessCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("process stat has no command name")
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3
	if len(f) < 13 {
		return 0, errors.New("process stat is too short")
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("process stat CPU time %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// cpuTimes is the machine's aggregate CPU time from /proc/stat, in ticks.
type cpuTimes struct{ idle, total int64 }

func machineCPU() (cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, fmt.Errorf("machine CPU time: %w", err)
	}
	return parseMachineCPU(string(b))
}

// parseMachineCPU reads the "cpu" line of /proc/stat: idle and iowait count
// as idle; guest time is already inside user and nice, so it is not added.
func parseMachineCPU(stat string) (cpuTimes, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}, errors.New(`/proc/stat does not start with an aggregate "cpu" line`)
	}
	var c cpuTimes
	for i, s := range f[1:9] { // user nice system idle iowait irq softirq steal
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("/proc/stat cpu field %d %q: %w", i+1, s, err)
		}
		c.total += n
		if i == 3 || i == 4 {
			c.idle += n
		}
	}
	return c, nil
}

// idleSince is the share of the machine's CPU time left idle since before.
func (c cpuTimes) idleSince(before cpuTimes) float64 {
	if c.total == before.total {
		return 0
	}
	return float64(c.idle-before.idle) / float64(c.total-before.total)
}

func TestParseProcessCPU_AddsUserAndSystemTime(t *testing.T) {
	tests := []struct {
		name, stat string
		want       time.Duration
	}{
		{"plain name", "4242 (broker) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1234 56 0 0 20 0 12 0 100 0 0", 12900 * time.Millisecond},
		{"name with spaces and parentheses", "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 300 100 0 0 20 0 1 0 5 0 0", 4 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcessCPU(tt.stat)
			if err != nil || got != tt.want {
				t.Errorf("parseProcessCPU = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 utime 12"} {
		if _, err := parseProcessCPU(bad); err == nil {
			t.Errorf("parseProcessCPU(%q) accepted", bad)
		}
	}
}

func TestParseMachineCPU_CountsIdleAndIOWaitAsIdle(t *testing.T) {
	before, err := parseMachineCPU("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n")
	if err != nil {
		t.Fatal(err)
	}
	after, err := parseMachineCPU("cpu  250 0 100 850 50 0 0 0 0 0\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := after.idleSince(before); got != 0.2 { // 50 idle of 250 ticks
		t.Errorf("idle share = %v, want 0.2", got)
	}
	if _, err := parseMachineCPU("intr 1 2 3\n"); err == nil {
		t.Error("parseMachineCPU accepted a file without a cpu line")
	}
}
