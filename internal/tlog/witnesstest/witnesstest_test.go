package witnesstest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// TestStart runs litewitness, checks what Start exposes, and has it cosign
// the empty tree of its log with a raw add-checkpoint request.
func TestStart(t *testing.T) {
	origin := "example.com/witnesstest-log-" + randomHex(t, 6)
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	w := Start(t, origin, vkey)

	if !strings.HasPrefix(w.URL(), "http://127.0.0.1:") {
		t.Errorf("URL() = %q, want a loopback URL", w.URL())
	}
	if !strings.HasPrefix(w.Name(), "example.com/witness-") {
		t.Errorf("Name() = %q", w.Name())
	}
	// <name>+<key ID>+base64(0x04 || 32-byte key), the key ID
	// SHA-256(name || "\n" || 0x04 || key)[:4] (c2sp.org/tlog-cosignature).
	name, rest, _ := strings.Cut(w.VerifierKey(), "+")
	id, key64, _ := strings.Cut(rest, "+")
	key, err := base64.StdEncoding.DecodeString(key64)
	if name != w.Name() || err != nil || len(key) != 33 || key[0] != 0x04 {
		t.Fatalf("VerifierKey() is not <name>+<id>+base64(0x04 || 32-byte key) for %s", w.Name())
	}
	sum := sha256.Sum256(append([]byte(name+"\n"), key...))
	if want := fmt.Sprintf("%08x", binary.BigEndian.Uint32(sum[:])); id != want {
		t.Errorf("VerifierKey() key ID %s, want %s", id, want)
	}

	// Size 0 with the empty tree's root (SHA-256 of nothing), from old size 0.
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	empty := sha256.Sum256(nil)
	cp, err := note.Sign(&note.Note{Text: fmt.Sprintf("%s\n0\n%s\n", origin, base64.StdEncoding.EncodeToString(empty[:]))}, signer)
	if err != nil {
		t.Fatal(err)
	}
	status, body := post(t, w.URL()+"/add-checkpoint", "old 0\n\n"+string(cp))
	if status != http.StatusOK || !strings.HasPrefix(body, "— "+w.Name()+" ") || !strings.HasSuffix(body, "\n") {
		t.Fatalf("add-checkpoint: %d, want 200 and a signature line by %s", status, w.Name())
	}

	// A log the witness does not know: 404 per c2sp.org/tlog-witness,
	// 403 from litewitness v0.6.1.
	other := strings.Replace(string(cp), origin, origin+"-unknown", 1)
	if status, _ := post(t, w.URL()+"/add-checkpoint", "old 0\n\n"+other); status != http.StatusForbidden && status != http.StatusNotFound {
		t.Errorf("add-checkpoint for an unknown log: %d, want 403 or 404", status)
	}
}

// TestStopsWithTest checks that the witness is gone once its test ends.
func TestStopsWithTest(t *testing.T) {
	var url string
	t.Run("run", func(t *testing.T) {
		_, vkey, err := note.GenerateKey(rand.Reader, "example.com/witnesstest-stop")
		if err != nil {
			t.Fatal(err)
		}
		url = Start(t, "example.com/witnesstest-stop", vkey).URL()
	})
	client := &http.Client{Timeout: 2 * time.Second}
	if resp, err := client.Get(url + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("litewitness still answers at %s after its test ended", url)
	}
}

// TestMissingSSH checks the message when OpenSSH's programs are missing.
func TestMissingSSH(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := lookSSH()
	if err == nil || !strings.Contains(err.Error(), "apt-get install openssh-client") {
		t.Fatalf("lookSSH() with an empty PATH = %v, want an error saying how to install openssh-client", err)
	}
}

func TestLoggedVerifierKey(t *testing.T) {
	for _, tc := range []struct{ out, want string }{
		{"time=x level=INFO msg=\"verifier key\" vkey=\"a.example/w+01234567+BAAA=\"\n", "a.example/w+01234567+BAAA="},
		{"time=x level=INFO msg=\"connected\"\ntime=x level=INFO msg=\"verifier key\" vkey=a.example/w+01234567+BAAA\n", "a.example/w+01234567+BAAA"},
	} {
		if got, ok := loggedVerifierKey(tc.out); !ok || got != tc.want {
			t.Errorf("loggedVerifierKey(%q) = %q, %v; want %q", tc.out, got, ok, tc.want)
		}
	}
	if _, ok := loggedVerifierKey("time=x level=INFO msg=listening\n"); ok {
		t.Error("loggedVerifierKey found a key in output without one")
	}
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
