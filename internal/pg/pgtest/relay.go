package pgtest

import (
	"net"
	"net/url"
	"sync"
	"testing"
)

// Relay is a TCP relay between clients and a database that a test can cut
// the way a failed switch port or a stuck NAT entry does: Hold stops every
// byte in both directions without resetting anything (connections stay open,
// nothing is read or written) until Heal; Reset closes every connection, as a
// peer that restarted would. It listens on loopback only.
type Relay struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu     sync.Mutex
	held   bool
	resume chan struct{} // closed by Heal
	conns  map[net.Conn]struct{}
}

// NewRelay starts a relay to the database of db's URL and returns it with
// the URL that reaches the same database through it. It stops when t ends.
func NewRelay(t testing.TB, databaseURL string) (*Relay, string) {
	t.Helper()
	u, err := url.Parse(databaseURL)
	if err != nil {
		t.Fatalf("pgtest: relay: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pgtest: relay: %v", err)
	}
	r := &Relay{t: t, ln: ln, target: u.Host, conns: map[net.Conn]struct{}{}, resume: make(chan struct{})}
	close(r.resume)
	go r.accept()
	t.Cleanup(func() {
		ln.Close()
		r.Heal()
		r.Reset()
	})
	via := *u
	via.Host = ln.Addr().String()
	return r, via.String()
}

func (r *Relay) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.gate() // a held link accepts nothing new either
		s, err := net.Dial("tcp", r.target)
		if err != nil {
			c.Close()
			continue
		}
		r.mu.Lock()
		r.conns[c], r.conns[s] = struct{}{}, struct{}{}
		r.mu.Unlock()
		go r.pipe(c, s)
		go r.pipe(s, c)
	}
}

// gate returns once the link is not held.
func (r *Relay) gate() {
	r.mu.Lock()
	ch := r.resume
	r.mu.Unlock()
	<-ch
}

// pipe copies src to dst, waiting at the gate before every read and write.
func (r *Relay) pipe(src, dst net.Conn) {
	defer func() {
		src.Close()
		dst.Close()
		r.mu.Lock()
		delete(r.conns, src)
		delete(r.conns, dst)
		r.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		r.gate()
		n, err := src.Read(buf)
		if n > 0 {
			r.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Hold stops every byte until Heal, resetting nothing.
func (r *Relay) Hold() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.held {
		r.held, r.resume = true, make(chan struct{})
	}
}

// Heal lets bytes flow again.
func (r *Relay) Heal() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.held {
		r.held = false
		close(r.resume)
	}
}

// Reset closes every connection through the relay.
func (r *Relay) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		c.Close()
	}
}
