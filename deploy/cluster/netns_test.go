package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// nsPrefix starts the name of every namespace a run makes, followed by the
// run's process id, so that a later run can tell a dead run's leftovers
// (sweepStale) from a live one's.
const nsPrefix = "brkc"

// subnet holds the hosts' addresses, .2 upwards; it exists only inside the
// run's namespaces.
const subnet = "10.99.0."

// network is a run's switch (a bridge in a namespace of its own) and hosts.
type network struct {
	prefix string // "brkc<pid>-"
	hosts  []*host
}

// host is one network namespace with one address on the bridge. Work that
// must happen inside it (creating sockets) runs on a thread of its own that
// joined the namespace and never leaves it.
type host struct {
	name string // "broker-a"
	ns   string // "brkc<pid>-broker-a"
	addr string // "10.99.0.4"
	work chan func()
	quit chan struct{}
}

// newNetwork makes the switch and one host per name, in order (.2, .3, …),
// and writes each host's /etc/hosts (aliases maps a name such as "postgres"
// to the host that answers it). It registers its own teardown.
func newNetwork(names []string, aliases map[string]string) (*network, error) {
	n := &network{prefix: fmt.Sprintf("%s%d-", nsPrefix, os.Getpid())}
	onTeardown(n.destroy)
	sw := n.prefix + "sw"
	if err := run("ip", "netns", "add", sw); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"-n", sw, "link", "set", "lo", "up"},
		{"-n", sw, "link", "add", "br0", "type", "bridge"},
		{"-n", sw, "link", "set", "br0", "up"},
	} {
		if err := run("ip", args...); err != nil {
			return nil, err
		}
	}
	byName := map[string]*host{}
	for i, name := range names {
		h := &host{name: name, ns: n.prefix + name, addr: subnet + strconv.Itoa(i+2), work: make(chan func()), quit: make(chan struct{})}
		n.hosts = append(n.hosts, h)
		byName[name] = h
		if err := run("ip", "netns", "add", h.ns); err != nil {
			return nil, err
		}
		// Both ends are created inside their namespaces: the machine's own
		// namespace never sees them.
		for _, args := range [][]string{
			{"link", "add", "eth0", "netns", h.ns, "type", "veth", "peer", "name", name, "netns", sw},
			{"-n", h.ns, "addr", "add", h.addr + "/24", "dev", "eth0"},
			{"-n", h.ns, "link", "set", "lo", "up"},
			{"-n", h.ns, "link", "set", "eth0", "up"},
			{"-n", sw, "link", "set", name, "master", "br0", "up"},
		} {
			if err := run("ip", args...); err != nil {
				return nil, err
			}
		}
		if err := h.startWorker(); err != nil {
			return nil, err
		}
	}
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost\n")
	for _, h := range n.hosts {
		fmt.Fprintf(&hosts, "%s\t%s\n", h.addr, h.name)
	}
	for alias, name := range aliases {
		h := byName[name]
		if h == nil {
			return nil, fmt.Errorf("alias %s names no host %s", alias, name)
		}
		fmt.Fprintf(&hosts, "%s\t%s\n", h.addr, alias)
	}
	// ip netns exec mounts /etc/netns/<ns>/hosts over /etc/hosts for the
	// programs it starts: how "postgres" in a compose URL resolves here.
	for _, h := range n.hosts {
		dir := filepath.Join("/etc/netns", h.ns)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts.String()), 0o644); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func (n *network) host(name string) *host {
	for _, h := range n.hosts {
		if h.name == name {
			return h
		}
	}
	panic("no host " + name)
}

// destroy stops the hosts' threads and deletes the namespaces (which takes
// their links with them) and the hosts files. It keeps going past errors.
func (n *network) destroy() error {
	for _, h := range n.hosts {
		close(h.quit)
	}
	return removeNamespaces(n.prefix)
}

// removeNamespaces deletes every namespace and /etc/netns entry whose name
// starts with prefix.
func removeNamespaces(prefix string) error {
	var errs []error
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			if err := run("ip", "netns", "del", e.Name()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	etc, _ := os.ReadDir("/etc/netns")
	for _, e := range etc {
		if strings.HasPrefix(e.Name(), prefix) {
			if err := os.RemoveAll(filepath.Join("/etc/netns", e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// sweepStale removes what runs that died without cleaning up left behind:
// namespaces named for a process that no longer exists.
func sweepStale() error {
	seen := map[string]bool{}
	for _, dir := range []string{"/var/run/netns", "/etc/netns"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
			pid, _, found := strings.Cut(rest, "-")
			if !ok || !found || seen[pid] {
				continue
			}
			seen[pid] = true
			n, err := strconv.Atoi(pid)
			if err != nil || n == os.Getpid() || unix.Kill(n, 0) == nil {
				continue
			}
			if err := removeNamespaces(nsPrefix + pid + "-"); err != nil {
				return err
			}
		}
	}
	return nil
}

// startWorker starts the host's thread: locked to its goroutine and never
// unlocked, so the runtime ends the thread with it instead of reusing a
// thread that sits in another namespace.
func (h *host) startWorker() error {
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/var/run/netns", h.ns))
		if err == nil {
			err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
			f.Close()
		}
		ready <- err
		if err != nil {
			return
		}
		for {
			select {
			case fn := <-h.work:
				fn()
			case <-h.quit:
				return
			}
		}
	}()
	return <-ready
}

// do runs fn on the host's thread: sockets fn creates belong to the host.
func (h *host) do(fn func()) error {
	done := make(chan struct{})
	select {
	case h.work <- func() { fn(); close(done) }:
	case <-h.quit:
		return fmt.Errorf("host %s is gone", h.name)
	}
	<-done
	return nil
}

// dial opens a TCP connection from the host. Only IP literals (and
// "localhost", the host's own 127.0.0.1) are dialled, on the host's thread:
// a name with several addresses would make the dialer race connections from
// other threads, which are in the machine's namespace.
func (h *host) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	hostname, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if hostname == "localhost" {
		hostname = "127.0.0.1"
	}
	if net.ParseIP(hostname) == nil {
		return nil, fmt.Errorf("host %s dials IP addresses only, not %q", h.name, hostname)
	}
	var c net.Conn
	d := net.Dialer{Timeout: 3 * time.Second, FallbackDelay: -1}
	if werr := h.do(func() { c, err = d.DialContext(ctx, "tcp", net.JoinHostPort(hostname, port)) }); werr != nil {
		return nil, werr
	}
	return c, err
}

// listen opens a TCP listener on the host.
func (h *host) listen(addr string) (net.Listener, error) {
	var ln net.Listener
	var err error
	if werr := h.do(func() { ln, err = net.Listen("tcp", addr) }); werr != nil {
		return nil, werr
	}
	return ln, err
}

// cut drops every packet from the host to dst (a blackhole route): the
// connections hang as across a failed link, nothing is refused.
func (h *host) cut(dst *host) error {
	return run("ip", "-n", h.ns, "route", "add", "blackhole", dst.addr+"/32")
}

// heal undoes cut.
func (h *host) heal(dst *host) error {
	return run("ip", "-n", h.ns, "route", "del", "blackhole", dst.addr+"/32")
}

// forward accepts TCP connections on listenAddr inside h and relays each to
// target, dialled from h, delaying every chunk by delay in each direction. It
// stands in for a sidecar proxy (the brokers' loopback path to Dex) and for
// the database link's latency: this kernel has no sch_netem for tc.
func (h *host) forward(listenAddr, target string, delay time.Duration) (io.Closer, error) {
	ln, err := h.listen(listenAddr)
	if err != nil {
		return nil, err
	}
	f := &forwarder{ln: ln, conns: map[net.Conn]bool{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !f.admit(c) {
				return
			}
			go func() {
				defer f.wg.Done()
				defer f.track(c, false)
				up, err := h.dial(context.Background(), "tcp", target)
				if err != nil {
					return
				}
				if !f.track(up, true) {
					return
				}
				defer f.track(up, false)
				done := make(chan struct{}, 2)
				go func() { pipe(up, c, delay); done <- struct{}{} }()
				go func() { pipe(c, up, delay); done <- struct{}{} }()
				<-done
				<-done
			}()
		}
	}()
	return f, nil
}

type forwarder struct {
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]bool
}

// admit starts a relay for an accepted connection: false (and c closed)
// once the forwarder is closed. Under the same lock as Close, so wg.Add
// never races wg.Wait.
func (f *forwarder) admit(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		_ = c.Close()
		return false
	}
	f.conns[c] = true
	f.wg.Add(1)
	return true
}

// track adds a relayed connection (false, and c closed, once the forwarder
// is closed) or removes and closes one.
func (f *forwarder) track(c net.Conn, open bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !open {
		delete(f.conns, c)
		_ = c.Close()
		return true
	}
	if f.closed {
		_ = c.Close()
		return false
	}
	f.conns[c] = true
	return true
}

// Close stops accepting, cuts every relayed connection and waits for the
// relays to end.
func (f *forwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	err := f.ln.Close()
	f.wg.Wait()
	return err
}

// pipe copies src to dst, each chunk written delay after it was read (in
// order: a one-way latency, not a throttle), then half-closes dst.
func pipe(dst, src net.Conn, delay time.Duration) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	q := make(chan chunk, 256)
	go func() {
		defer close(q)
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{bytes.Clone(buf[:n]), time.Now().Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	failed := false
	for c := range q {
		if failed {
			continue // drain, so the reader ends
		}
		if d := time.Until(c.at); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.b); err != nil {
			failed = true
			_ = src.Close()
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok && !failed {
		_ = tc.CloseWrite()
	}
}

// run runs a command to completion and returns its output in the error.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
