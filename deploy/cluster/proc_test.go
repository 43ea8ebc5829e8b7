package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// teardown holds what the run must undo, last first. It runs when the test
// ends, and from the signal handler when the run is interrupted.
var teardown struct {
	mu  sync.Mutex
	fns []func() error
}

func onTeardown(fn func() error) {
	teardown.mu.Lock()
	teardown.fns = append(teardown.fns, fn)
	teardown.mu.Unlock()
}

// runTeardown undoes everything registered so far, once.
func runTeardown() error {
	teardown.mu.Lock()
	fns := teardown.fns
	teardown.fns = nil
	teardown.mu.Unlock()
	var errs []error
	for i := len(fns) - 1; i >= 0; i-- {
		if err := fns[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func TestMain(m *testing.M) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "cluster: %v: tearing the topology down\n", s)
		if err := runTeardown(); err != nil {
			fmt.Fprintf(os.Stderr, "cluster: teardown: %v\n", err)
		}
		os.Exit(2)
	}()
	code := m.Run()
	if err := runTeardown(); err != nil {
		fmt.Fprintf(os.Stderr, "cluster: teardown: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

// proc is one program running on a host. The kernel kills it if the test
// binary dies first (Pdeathsig), and teardown stops it otherwise.
type proc struct {
	name    string
	host    *host
	argv    []string
	env     []string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// start runs argv (an absolute path first) on h with exactly env, its output
// appended to logPath.
func (h *host) start(name, logPath string, env []string, argv ...string) (*proc, error) {
	p := &proc{name: name, host: h, argv: argv, env: env, logPath: logPath}
	if err := p.launch(); err != nil {
		return nil, err
	}
	onTeardown(func() error { return p.stop(30 * time.Second) })
	return p, nil
}

func (p *proc) launch() error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	// ip netns exec replaces itself with argv, so the pid is the program's.
	cmd := exec.Command("ip", append([]string{"netns", "exec", p.host.ns}, p.argv...)...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s on %s: %w", p.name, p.host.name, err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func(c *exec.Cmd, exited chan struct{}) {
		_ = c.Wait()
		close(exited)
	}(cmd, p.exited)
	return nil
}

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// signal sends sig and waits up to grace for the exit; then SIGKILL.
func (p *proc) signal(sig syscall.Signal, grace time.Duration) error {
	if p.cmd == nil || !p.running() {
		return nil
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		return nil
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not exit within %v of %v; killed", p.name, grace, sig)
	}
}

// stop is a graceful stop (SIGTERM: the broker drains, Dex and HAProxy exit).
func (p *proc) stop(grace time.Duration) error { return p.signal(syscall.SIGTERM, grace) }

// kill is kill -9.
func (p *proc) kill() { _ = p.signal(syscall.SIGKILL, 10*time.Second) }

// restart starts the same program again after it stopped.
func (p *proc) restart() error {
	if p.running() {
		return fmt.Errorf("%s is still running", p.name)
	}
	return p.launch()
}

// logTail is the end of the program's output, for failure messages.
func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// runOnce runs argv on h to completion and returns its output.
func (h *host) runOnce(env []string, argv ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns}, argv...)...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		// The program only, not its arguments: they may carry a bearer token (wrk -H).
		return out.String(), fmt.Errorf("%s on %s: %w: %s", argv[0], h.name, err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }
