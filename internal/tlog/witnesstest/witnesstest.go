// Package witnesstest runs a real transparency log witness for tests:
// litewitness from filippo.io/torchwood v0.6.1 (c2sp.org/tlog-witness,
// Ed25519 cosignature/v1 cosignatures), built once from the pinned
// tools/witness module together with its witnessctl, with its own SQLite
// database, its own Ed25519 key held by a dedicated ssh-agent, and one log
// it knows, on a free loopback port. It is test-only: it must never be
// imported by production code, and it fails (never skips) a test when the
// witness cannot be built or started or OpenSSH's ssh-keygen, ssh-agent and
// ssh-add are missing. Key material is never written to the test output.
package witnesstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/tooltest"
)

// The programs of the tools/witness module.
const (
	litewitnessPkg = "filippo.io/torchwood/cmd/litewitness"
	witnessctlPkg  = "filippo.io/torchwood/cmd/witnessctl"
)

// Witness is a running litewitness.
type Witness struct {
	url    string
	name   string
	vkey   string
	cmd    *exec.Cmd
	log    *tooltest.Output
	exited chan struct{}
}

// Start builds (or reuses) litewitness and witnessctl, makes the witness
// know the log origin with the note verifier key logVerifierKey (whose name
// must be origin), and runs it until the test ends. The witness's name is
// example.com/witness-<random>; it has cosigned nothing yet (size 0).
func Start(t testing.TB, origin, logVerifierKey string) *Witness {
	t.Helper()
	ssh, err := lookSSH()
	if err != nil {
		t.Fatalf("witnesstest: %v", err)
	}
	lite, ctl, err := binaries()
	if err != nil {
		t.Fatalf("witnesstest: %v", err)
	}

	// A directory of our own with a short path: the agent's socket path
	// must fit in a sockaddr_un (108 bytes), which t.TempDir's may not.
	dir, err := os.MkdirTemp("", "witnesstest-")
	if err != nil {
		t.Fatalf("witnesstest: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })

	name := "example.com/witness-" + randomHex(t, 6)
	red := &redactor{}
	red.add(logVerifierKey)

	// The witness key: an unencrypted Ed25519 SSH key, loaded into the agent
	// and then deleted, so only the agent holds it.
	keyPath := filepath.Join(dir, "witness_ed25519")
	run(t, red, nil, ssh.keygen, "-q", "-t", "ed25519", "-N", "", "-C", "witnesstest", "-f", keyPath)
	pub, err := readSSHEd25519(keyPath + ".pub")
	if err != nil {
		t.Fatalf("witnesstest: %v", err)
	}
	fingerprint := sshFingerprint(pub)
	vkey := verifierKey(name, pub)
	red.add(fingerprint, vkey, base64.StdEncoding.EncodeToString(sshBlob(pub)))

	sock := filepath.Join(dir, "agent.sock")
	startAgent(t, red, ssh.agent, sock)
	agentEnv := append(envWithout("SSH_AUTH_SOCK", "SSH_AGENT_PID", "SSH_ASKPASS", "DISPLAY"),
		"SSH_AUTH_SOCK="+sock, "SSH_ASKPASS_REQUIRE=never")
	run(t, red, agentEnv, ssh.add, "-q", keyPath)
	if err := os.Remove(keyPath); err != nil {
		t.Fatalf("witnesstest: remove the witness's private key file: %v", err)
	}

	db := filepath.Join(dir, "witness.db")
	run(t, red, nil, ctl, "add-log", "-db", db, "-origin", origin)
	run(t, red, nil, ctl, "add-key", "-db", db, "-origin", origin, "-key", logVerifierKey)

	// A free port found by listening and closing can be taken by another
	// test before litewitness binds it; try again with a fresh one then.
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("witnesstest: %v", err)
		}
		w := &Witness{
			url:    fmt.Sprintf("http://127.0.0.1:%d", port),
			name:   name,
			vkey:   vkey,
			log:    &tooltest.Output{},
			exited: make(chan struct{}),
		}
		w.cmd = exec.Command(lite,
			"-db", db,
			"-name", name,
			"-key", fingerprint,
			"-ssh-agent", sock,
			"-listen", fmt.Sprintf("127.0.0.1:%d", port))
		w.cmd.Dir = dir
		w.cmd.Stdout, w.cmd.Stderr = w.log, w.log
		w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := w.cmd.Start(); err != nil {
			t.Fatalf("witnesstest: start %s: %v", lite, err)
		}
		go func() {
			_ = w.cmd.Wait()
			close(w.exited)
		}()
		err = w.waitReady(30 * time.Second)
		if err == nil {
			t.Cleanup(func() {
				w.stop()
				if t.Failed() {
					t.Logf("witnesstest: litewitness output (keys redacted):\n%s", red.redact(w.log.String()))
				}
			})
			return w
		}
		w.stop()
		if attempt < 3 && strings.Contains(w.log.String(), "address already in use") {
			t.Logf("witnesstest: port collision, retrying: %v", err)
			continue
		}
		t.Fatalf("witnesstest: %v\nlitewitness output (keys redacted):\n%s", err, red.redact(w.log.String()))
	}
}

// URL is the witness's submission prefix, http://127.0.0.1:<port>: POST
// add-checkpoint requests to URL() + "/add-checkpoint".
func (w *Witness) URL() string { return w.url }

// Name is the witness's name, the key name of its cosignature lines.
func (w *Witness) Name() string { return w.name }

// VerifierKey is the witness's note verifier key for Ed25519 cosignature/v1
// (c2sp.org/tlog-cosignature): <name>+<key ID>+base64(0x04 || public key).
func (w *Witness) VerifierKey() string { return w.vkey }

// waitReady waits until litewitness serves its index page, then checks that
// the verifier key it logged at start is the one computed from its key.
func (w *Witness) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-w.exited:
			return errors.New("litewitness exited during startup")
		default:
		}
		resp, err := client.Get(w.url + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("litewitness not serving %s after %s", w.url, timeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
	logged, ok := loggedVerifierKey(w.log.String())
	if !ok {
		return errors.New(`litewitness did not log its "verifier key"`)
	}
	if logged != w.vkey {
		return errors.New("the verifier key litewitness logged differs from the one computed from its SSH key (c2sp.org/tlog-cosignature)")
	}
	return nil
}

// loggedVerifierKey finds the vkey of litewitness's `msg="verifier key"`
// line (log/slog text format, the value quoted when it has a '=').
func loggedVerifierKey(out string) (string, bool) {
	for line := range strings.Lines(out) {
		if !strings.Contains(line, `msg="verifier key"`) {
			continue
		}
		_, v, ok := strings.Cut(line, " vkey=")
		if !ok {
			continue
		}
		if strings.HasPrefix(v, `"`) {
			q, err := strconv.QuotedPrefix(v)
			if err != nil {
				return "", false
			}
			s, err := strconv.Unquote(q)
			return s, err == nil
		}
		v, _, _ = strings.Cut(strings.TrimRight(v, "\n"), " ")
		return v, v != ""
	}
	return "", false
}

func (w *Witness) stop() {
	_ = w.cmd.Process.Signal(os.Interrupt)
	select {
	case <-w.exited:
	case <-time.After(5 * time.Second):
		_ = w.cmd.Process.Kill()
		<-w.exited
	}
}

// startAgent runs a dedicated ssh-agent in the foreground on sock until the
// test ends.
func startAgent(t testing.TB, red *redactor, agentBin, sock string) {
	t.Helper()
	out := &tooltest.Output{}
	cmd := exec.Command(agentBin, "-D", "-a", sock)
	cmd.Env = envWithout("SSH_AUTH_SOCK", "SSH_AGENT_PID")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("witnesstest: start %s: %v", agentBin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The socket file exists from bind(); the agent answers from
		// listen(): ready when a connection is accepted.
		if fi, err := os.Stat(sock); err == nil && fi.Mode().Type() == fs.ModeSocket {
			if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
				c.Close()
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("witnesstest: ssh-agent exited during startup:\n%s", red.redact(out.String()))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("witnesstest: ssh-agent did not create %s within 10s:\n%s", sock, red.redact(out.String()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// run runs a short command (env nil: this process's), failing the test with
// its redacted output if it fails.
func run(t testing.TB, red *redactor, env []string, bin string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	out := &tooltest.Output{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		t.Fatalf("witnesstest: %s: %v\n%s", red.redact(filepath.Base(bin)+" "+strings.Join(args, " ")), err, red.redact(out.String()))
	}
}

// sshTools are the paths of OpenSSH's client programs.
type sshTools struct{ keygen, agent, add string }

func lookSSH() (sshTools, error) {
	var s sshTools
	for _, p := range []struct {
		name string
		path *string
	}{{"ssh-keygen", &s.keygen}, {"ssh-agent", &s.agent}, {"ssh-add", &s.add}} {
		path, err := exec.LookPath(p.name)
		if err != nil {
			return s, fmt.Errorf("%s is needed to give litewitness its key and was not found (%v); install OpenSSH's client programs, e.g. apt-get install openssh-client", p.name, err)
		}
		*p.path = path
	}
	return s, nil
}

// envWithout is this process's environment without the named variables.
func envWithout(names ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, n := range names {
			if k == n {
				drop = true
			}
		}
		if !drop {
			env = append(env, kv)
		}
	}
	return env
}

// readSSHEd25519 reads the Ed25519 public key of an OpenSSH .pub file
// ("ssh-ed25519 <base64 wire blob> comment").
func readSSHEd25519(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the witness's public key: %w", err)
	}
	fields := strings.Fields(string(b))
	if len(fields) < 2 || fields[0] != "ssh-ed25519" {
		return nil, errors.New("the witness's public key file is not an ssh-ed25519 key")
	}
	blob, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return nil, errors.New("the witness's public key file is not base64")
	}
	// RFC 8709: string "ssh-ed25519", string key (32 bytes).
	pub, ok := bytes.CutPrefix(blob, sshString([]byte("ssh-ed25519")))
	if !ok || len(pub) != 4+32 || binary.BigEndian.Uint32(pub) != 32 {
		return nil, errors.New("the witness's public key is not a 32-byte Ed25519 key")
	}
	return pub[4:], nil
}

func sshString(b []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

// sshBlob is the SSH wire encoding of an Ed25519 public key.
func sshBlob(pub []byte) []byte {
	return append(sshString([]byte("ssh-ed25519")), sshString(pub)...)
}

// sshFingerprint is OpenSSH's SHA256:<unpadded base64> fingerprint, the
// form litewitness's -key flag takes.
func sshFingerprint(pub []byte) string {
	h := sha256.Sum256(sshBlob(pub))
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(h[:])
}

// verifierKey is the note verifier key of an Ed25519 cosigner
// (c2sp.org/tlog-cosignature): <name>+<hex key ID>+base64(0x04 || key), key
// ID SHA-256(<name> || "\n" || 0x04 || key)[:4].
func verifierKey(name string, pub []byte) string {
	key := append([]byte{0x04}, pub...)
	h := sha256.New()
	h.Write([]byte(name + "\n"))
	h.Write(key)
	id := binary.BigEndian.Uint32(h.Sum(nil))
	return fmt.Sprintf("%s+%08x+%s", name, id, base64.StdEncoding.EncodeToString(key))
}

// redactor removes keys from output before it reaches the test log.
type redactor struct {
	secrets []string
}

func (r *redactor) add(s ...string) { r.secrets = append(r.secrets, s...) }

func (r *redactor) redact(s string) string {
	for _, k := range r.secrets {
		if k != "" {
			s = strings.ReplaceAll(s, k, "[redacted]")
		}
	}
	return s
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("witnesstest: %v", err)
	}
	return hex.EncodeToString(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var (
	buildOnce                     sync.Once
	litewitnessBin, witnessctlBin string
	buildErr                      error
)

// binaries returns the paths of litewitness and witnessctl built from
// tools/witness, building them into the Go build cache on first use.
func binaries() (litewitness, witnessctl string, err error) {
	buildOnce.Do(func() {
		litewitnessBin, buildErr = tooltest.Build("witness", litewitnessPkg)
		if buildErr == nil {
			witnessctlBin, buildErr = tooltest.Build("witness", witnessctlPkg)
		}
	})
	return litewitnessBin, witnessctlBin, buildErr
}
