package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	startTimeout = time.Minute      // a loaded 2-core machine can be slow
	stopTimeout  = 30 * time.Second // fast shutdown, then immediate, then kill
	dirPrefix    = "broker-pgtest-"
)

// server is a postmaster in a temporary directory, run by this process.
type server struct {
	bin  string              // directory holding initdb and postgres
	dir  string              // temporary root: data/, postgres.log, owner
	cred *syscall.Credential // the postgres user when we are root; else nil
	port int
	opts Options

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

// startLocal initdbs and starts a throwaway cluster.
func startLocal(opts Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	sweepStale()
	dir, err := makeDir(cred)
	if err != nil {
		return nil, err
	}
	s := &server{bin: bin, dir: dir, cred: cred, opts: opts}
	if err := s.initdb(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := s.startOnFreePort(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c, err := newCluster(fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port))
	if err != nil {
		_ = s.destroy()
		return nil, err
	}
	c.local = s
	register(c)
	return c, nil
}

// errNoBinaries explains how to get a server; tests fail with it, never skip.
var errNoBinaries = errors.New("pgtest: PostgreSQL server binaries (initdb, postgres) not found in PATH, " +
	"`pg_config --bindir` or /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: apt-get install postgresql) " +
	"or set " + EnvURL + " to a server where the tests may create databases")

// debianBinDirs is where Debian and Ubuntu install the server binaries, which
// are not on PATH there.
const debianBinDirs = "/usr/lib/postgresql/*/bin"

// findBinDir looks for a directory with both initdb and postgres: on PATH,
// then `pg_config --bindir`, then the newest version matching versionedDirs.
func findBinDir(versionedDirs string) (string, error) {
	usable := func(dir string) bool {
		for _, b := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if p, err := exec.LookPath("initdb"); err == nil && usable(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); usable(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob(versionedDirs)
	// Newest major version first: "15" > "9.6".
	version := func(dir string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if usable(d) {
			return d, nil
		}
	}
	return "", errNoBinaries
}

// credential returns the postgres user's ids when running as root, because
// initdb and postgres refuse to run as root.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, and initdb refuses root, but there is no user \"postgres\" to run it as "+
			"(apt-get install postgresql creates one), or set %s: %w", EnvURL, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("pgtest: user postgres: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// makeDir creates the cluster's temporary root, owned by cred's user if set.
func makeDir(cred *syscall.Credential) (string, error) {
	base := os.TempDir()
	if cred != nil {
		// The postgres user must be able to reach the directory.
		if fi, err := os.Stat(base); err != nil || fi.Mode().Perm()&0o001 == 0 {
			base = "/tmp"
		}
	}
	dir, err := os.MkdirTemp(base, dirPrefix)
	if err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	// The owner file names the test process, so a later run can delete the
	// directory if that process died without cleaning up.
	if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("pgtest: %w", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("pgtest: %w", err)
		}
	}
	return dir, nil
}

func (s *server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *server) logPath() string { return filepath.Join(s.dir, "postgres.log") }

func (s *server) initdb() error {
	// --no-sync: the cluster dies with the test run, so a crash can lose it.
	// Trust authentication is on loopback only, for a server nobody else uses.
	args := []string{"-D", s.dataDir(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale",
		"--no-sync", "--no-instructions"}
	if n := s.opts.WALSegmentMB; n != 0 {
		args = append(args, "--wal-segsize="+strconv.Itoa(n))
	}
	cmd := exec.Command(filepath.Join(s.bin, "initdb"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	cmd.Dir = s.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: initdb in %s: %w\n%s", s.dir, err, out)
	}
	return nil
}

// startOnFreePort starts the server on a free port, retrying when another
// process takes the port between our probe and the postmaster's bind.
func (s *server) startOnFreePort() error {
	var err error
	for range 5 {
		if s.port, err = freePort(); err != nil {
			return err
		}
		if err = s.start(); err == nil || !errors.Is(err, errPortTaken) {
			return err
		}
	}
	return err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var errPortTaken = errors.New("port taken")

// start runs the postmaster and waits until it accepts connections.
func (s *server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("pgtest: server already running")
	}
	logf, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), s.args()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: s.cred,
		// Own process group: a terminal's ^C reaches only the test binary,
		// which then stops the server in order.
		Setpgid: true,
		// If the test binary dies without cleaning up (kill -9, a crash),
		// the kernel tells the postmaster: SIGQUIT is immediate shutdown,
		// which also ends every backend. (Linux sends it when the forking
		// thread exits; Go only ends threads of goroutines that exit while
		// locked to them, which tests do not do.)
		Pdeathsig: syscall.SIGQUIT,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // its status is in the log
		close(exited)
	}()
	if err := s.waitReady(exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return err
	}
	s.cmd, s.exited = cmd, exited
	return nil
}

// args are the postmaster's arguments: the data directory, the port, and
// every server setting as -c name=value, the defaults overridden by
// Options.Settings, in name order.
func (s *server) args() []string {
	settings := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": "",
		"fsync":                   "on",
		"max_connections":         "200",
		"shared_buffers":          "32MB",
	}
	if s.opts.NoFsync {
		settings["fsync"] = "off"
	}
	maps.Copy(settings, s.opts.Settings)
	args := []string{"-D", s.dataDir(), "-p", strconv.Itoa(s.port)}
	for _, name := range slices.Sorted(maps.Keys(settings)) {
		args = append(args, "-c", name+"="+settings[name])
	}
	return args
}

func (s *server) waitReady(exited <-chan struct{}) error {
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", s.port)
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-exited:
			log := s.logTail()
			if strings.Contains(log, "could not bind") || strings.Contains(log, "already in use") {
				return fmt.Errorf("pgtest: port %d: %w", s.port, errPortTaken)
			}
			return fmt.Errorf("pgtest: postgres exited during startup; %s:\n%s", s.logPath(), log)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, url)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: postgres not ready after %v: %w; %s:\n%s", startTimeout, err, s.logPath(), s.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logTail returns the end of the server log, for error messages.
func (s *server) logTail() string {
	b, _ := os.ReadFile(s.logPath())
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

func (s *server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// pid returns the postmaster's process id, 0 when stopped.
func (s *server) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// stop shuts the postmaster down, escalating from fast shutdown (SIGINT) to
// immediate shutdown (SIGQUIT) to SIGKILL, and waits until it has exited.
func (s *server) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT, syscall.SIGKILL} {
		_ = s.cmd.Process.Signal(sig) // fails only if it already exited
		select {
		case <-s.exited:
			s.cmd, s.exited = nil, nil
			return nil
		case <-time.After(stopTimeout / 3):
		}
	}
	return fmt.Errorf("pgtest: postgres (pid %d) did not exit", s.cmd.Process.Pid)
}

// destroy stops the server and deletes its directory.
func (s *server) destroy() error {
	err := s.stop()
	if rmErr := os.RemoveAll(s.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("pgtest: %w", rmErr))
	}
	return err
}

// sweepStale deletes cluster directories left by test processes that died
// without cleaning up (SIGKILL, a timeout panic). Their postmasters were
// already ended by Pdeathsig; a directory whose server still runs is kept.
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	if os.TempDir() != "/tmp" {
		more, _ := filepath.Glob(filepath.Join("/tmp", dirPrefix+"*"))
		dirs = append(dirs, more...)
	}
	for _, dir := range dirs {
		// No owner yet means another process is still creating it.
		owner := pidFile(filepath.Join(dir, "owner"))
		if owner == 0 || alive(owner) || alive(pidFile(filepath.Join(dir, "data", "postmaster.pid"))) {
			continue
		}
		_ = os.RemoveAll(dir)
	}
}

// pidFile reads the process id on the first line of path, 0 if none.
func pidFile(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// The state follows the parenthesised command name: "pid (comm) S …".
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

// BinDir is the directory of the PostgreSQL server binaries (initdb, postgres,
// pg_ctl) the tests run, for harnesses that start a server of their own.
func BinDir() (string, error) { return findBinDir(debianBinDirs) }
