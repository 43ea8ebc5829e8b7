package loadtest

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc (USER_HZ, 100 on Linux).
const userHZ = 100

// ticks converts /proc clock ticks to a duration.
func ticks(n int64) time.Duration { return time.Duration(n) * time.Second / userHZ }

// ProcessCPU returns the CPU time (user + system) process pid has used,
// from /proc/<pid>/stat. It does not include the process's children.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("process %d CPU time: %w", pid, err)
	}
	return ParseProcessCPU(string(b))
}

// ParseProcessCPU reads utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from its last ')'.
func ParseProcessCPU(stat string) (time.Duration, error) {
	s, err := parseStat(stat)
	if err != nil {
		return 0, err
	}
	return ticks(s.self), nil
}

// procStat is what ProcessTreeCPU needs from a /proc/<pid>/stat line.
type procStat struct {
	ppid     int   // field 4
	self     int64 // utime + stime (fields 14, 15), in ticks
	children int64 // cutime + cstime (fields 16, 17): children waited for, in ticks
}

// parseStat reads a /proc/<pid>/stat line. The command name (field 2) may
// hold spaces and parentheses, so fields are counted from its last ')'. The
// children's times (fields 16 and 17) are optional: ParseProcessCPU has
// always accepted a line that ends after stime.
func parseStat(stat string) (procStat, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return procStat{}, errors.New("process stat has no command name")
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3
	if len(f) < 13 {
		return procStat{}, errors.New("process stat is too short")
	}
	var s procStat
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("process stat parent pid %q: %w", f[1], err)
	}
	s.ppid = ppid
	sum := func(fields []string, dst *int64) error {
		for _, v := range fields {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("process stat CPU time %q: %w", v, err)
			}
			*dst += n
		}
		return nil
	}
	if err := sum(f[11:13], &s.self); err != nil {
		return procStat{}, err
	}
	if len(f) >= 15 {
		if err := sum(f[13:15], &s.children); err != nil {
			return procStat{}, err
		}
	}
	return s, nil
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(string(b))
}

// ProcessTreeCPU returns the CPU time (user + system) of process pid and of
// its descendants: its own, that of the children it has waited for (fields
// 16 and 17 of /proc/<pid>/stat, cutime and cstime, which in turn hold the
// children those waited for), and that of its live children, each counted
// the same way. Measured on a PostgreSQL postmaster, that is every backend
// and auxiliary process of the cluster, including backends that exited during
// the run (the postmaster reaps them); take the difference of two readings.
//
// The live children are found by scanning /proc/*/stat for their parent
// pid (that works without the kernel's /proc/<pid>/task/*/children, and is
// reliable while the processes run), and each process is read after its
// parent, so a child that exits and is reaped while the tree is read is
// counted at most once: it may be missing from that one reading, never
// counted twice. Not counted: children the process never waits for (an
// ignored SIGCHLD), and descendants orphaned to another reaper.
func ProcessTreeCPU(pid int) (time.Duration, error) {
	root, err := readStat(pid)
	if err != nil {
		return 0, fmt.Errorf("process %d CPU time: %w", pid, err)
	}
	kids, err := childrenByParent()
	if err != nil {
		return 0, fmt.Errorf("process %d CPU time: %w", pid, err)
	}
	total := root.self + root.children
	queue := kids[pid]
	seen := map[int]bool{pid: true}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] { // a pid reused during the scan could make a cycle
			continue
		}
		seen[p] = true
		s, err := readStat(p)
		if err != nil {
			continue // exited since the scan
		}
		total += s.self + s.children
		queue = append(queue, kids[p]...)
	}
	return ticks(total), nil
}

// childrenByParent lists the processes of /proc by parent pid.
func childrenByParent() (map[int][]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	kids := map[int][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		s, err := readStat(pid)
		if err != nil {
			continue // exited since the listing
		}
		kids[s.ppid] = append(kids[s.ppid], pid)
	}
	return kids, nil
}

// CPUTimes is the machine's aggregate CPU time from /proc/stat, in ticks.
type CPUTimes struct{ Idle, Total int64 }

// MachineCPU reads the machine's aggregate CPU time from /proc/stat.
func MachineCPU() (CPUTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPUTimes{}, fmt.Errorf("machine CPU time: %w", err)
	}
	return ParseMachineCPU(string(b))
}

// ParseMachineCPU reads the "cpu" line of /proc/stat: idle and iowait count
// as idle; guest time is already inside user and nice, so it is not added.
func ParseMachineCPU(stat string) (CPUTimes, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return CPUTimes{}, errors.New(`/proc/stat does not start with an aggregate "cpu" line`)
	}
	var c CPUTimes
	for i, s := range f[1:9] { // user nice system idle iowait irq softirq steal
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return CPUTimes{}, fmt.Errorf("/proc/stat cpu field %d %q: %w", i+1, s, err)
		}
		c.Total += n
		if i == 3 || i == 4 {
			c.Idle += n
		}
	}
	return c, nil
}

// IdleSince is the share of the machine's CPU time left idle since before.
func (c CPUTimes) IdleSince(before CPUTimes) float64 {
	if c.Total == before.Total {
		return 0
	}
	return float64(c.Idle-before.Idle) / float64(c.Total-before.Total)
}

// Memory is a process's resident memory, from /proc/<pid>/status.
type Memory struct {
	RSS  int64 // VmRSS: resident now, in bytes
	Peak int64 // VmHWM: the most it has been resident, in bytes
}

// ProcessMemory reads process pid's resident memory.
func ProcessMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, fmt.Errorf("process %d memory: %w", pid, err)
	}
	return ParseProcessMemory(string(b))
}

// ParseProcessMemory reads VmRSS and VmHWM ("VmRSS:   123456 kB") from a
// /proc/<pid>/status file; both are required.
func ParseProcessMemory(status string) (Memory, error) {
	var m Memory
	found := map[string]*int64{"VmRSS": &m.RSS, "VmHWM": &m.Peak}
	seen := 0
	for line := range strings.Lines(status) {
		name, rest, ok := strings.Cut(line, ":")
		dst, wanted := found[name]
		if !ok || !wanted {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return Memory{}, fmt.Errorf("process status %s: %q is not \"<n> kB\"", name, strings.TrimSpace(rest))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("process status %s: %w", name, err)
		}
		*dst = kb << 10
		seen++
	}
	if seen != len(found) {
		return Memory{}, errors.New("process status has no VmRSS or no VmHWM line (a kernel thread, or not Linux)")
	}
	return m, nil
}
