package token

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// encode007 encodes content as a 007 token string exactly as the builder
// does, for tests that need tokens with arbitrary content.
func encode007(content []byte) string {
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	e.content = append(e.content[:0], content...)
	return e.finish()
}

// refAdler32 is RFC 1950 §8.2's Adler-32, written out separately from
// hash/adler32.
func refAdler32(p []byte) uint32 {
	const mod = 65521
	s1, s2 := uint32(1), uint32(0)
	for _, b := range p {
		s1 = (s1 + uint32(b)) % mod
		s2 = (s2 + s1) % mod
	}
	return s2<<16 | s1
}

func TestAppendZlib_WritesStoredBlocksThatCompressZlibReads(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{7}))
	prefix := []byte("kept")
	for _, n := range []int{0, 1, 200, maxStored, maxStored + 1, 200000} {
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(rng.Uint32())
		}
		out := appendZlib(bytes.Clone(prefix), src)
		if !bytes.HasPrefix(out, prefix) {
			t.Fatalf("%d bytes: the bytes already in dst were changed", n)
		}
		z := out[len(prefix):]

		cmf, flg := z[0], z[1]
		if cmf != 0x78 || (uint(cmf)<<8|uint(flg))%31 != 0 || flg&0x20 != 0 {
			t.Fatalf("%d bytes: header %02x %02x, want CMF 0x78, FCHECK valid, no FDICT", n, cmf, flg)
		}
		if got, want := binary.BigEndian.Uint32(z[len(z)-4:]), refAdler32(src); got != want {
			t.Fatalf("%d bytes: Adler-32 %08x, want %08x", n, got, want)
		}

		// Walk the stored blocks: each full but the last, only the last final.
		blocks := max(1, (n+maxStored-1)/maxStored)
		if want := 2 + 5*blocks + n + 4; len(z) != want {
			t.Fatalf("%d bytes: stream is %d bytes, want %d (%d blocks)", n, len(z), want, blocks)
		}
		at, stored := 2, 0
		for b := range blocks {
			hdr := z[at]
			size := binary.LittleEndian.Uint16(z[at+1:])
			nsize := binary.LittleEndian.Uint16(z[at+3:])
			var wantHdr byte // BTYPE 00, BFINAL on the last block only
			if b == blocks-1 {
				wantHdr = 1
			}
			wantSize := min(n-stored, maxStored)
			if hdr != wantHdr || int(size) != wantSize || nsize != ^size {
				t.Fatalf("%d bytes: block %d header %02x LEN %d NLEN %04x, want %02x, LEN %d and NLEN its complement", n, b, hdr, size, nsize, wantHdr, wantSize)
			}
			at += 5 + int(size)
			stored += int(size)
		}

		zr, err := zlib.NewReader(bytes.NewReader(z))
		if err != nil {
			t.Fatalf("%d bytes: compress/zlib rejects the header: %v", n, err)
		}
		got, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("%d bytes: compress/zlib: %v", n, err)
		}
		if !bytes.Equal(got, src) {
			t.Fatalf("%d bytes: decompresses to %d different bytes", n, len(got))
		}
	}
}

// TestMintedTokens_InflateWithPythonAndNode hands minted tokens to two other
// zlib implementations (CPython's and Node's bindings of C zlib), as Agora's
// services may decode them with neither Go nor our own code. It also sends a
// stream of several stored blocks.
func TestMintedTokens_InflateWithPythonAndNode(t *testing.T) {
	b := newTestBuilder(t)
	var tokens []string
	for _, req := range []RTCRequest{
		{Channel: "7d72365eb983485397e3e3f9d460bdda", UID: 2882341273, Role: RolePublisher, Expire: 3600},
		{Channel: "lobby", Role: RoleSubscriber, Expire: 60},
		{Channel: "Agora*", AllowWildcard: true, Account: strings.Repeat("a", MaxAccountLen), Role: RolePublisher, Expire: 86400, RTMUser: strings.Repeat("u", MaxRTMUserLen)},
		{Channel: "room-1", Account: "alice@example.com", Role: RoleSubscriber, Expire: 1, IssuedAt: 1111111, Salt: 1},
	} {
		tokens = append(tokens, mustRTC(t, b, req))
	}
	for _, mint := range []func() (string, error){
		func() (string, error) { return b.RTM("alice@example.com", 600, 0, 0) },
		func() (string, error) { return b.ChatUser("2882341273", 600, 0, 0) },
		func() (string, error) { return b.ChatApp(600, 0, 0) },
	} {
		s, err := mint()
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, s)
	}

	var lines, want []string
	for _, s := range tokens {
		content, err := inflate(s)
		if err != nil {
			t.Fatalf("our decoder rejects a minted token: %v", err)
		}
		lines = append(lines, strings.TrimPrefix(s, Version007))
		want = append(want, hex.EncodeToString(content))
	}
	multi := make([]byte, 2*maxStored+10)
	for i := range multi {
		multi[i] = byte(i * 7)
	}
	lines = append(lines, base64.StdEncoding.EncodeToString(appendZlib(nil, multi)))
	want = append(want, hex.EncodeToString(multi))

	file := filepath.Join(t.TempDir(), "payloads")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct {
		program, install string
		args             []string
	}{
		{"python3", "apt-get install python3", []string{"-c", `
import base64, sys, zlib
for line in open(sys.argv[1]):
    print(zlib.decompress(base64.b64decode(line.strip(), validate=True)).hex())
`, file}},
		{"node", "apt-get install nodejs", []string{"-e", `
const fs = require('fs'), zlib = require('zlib');
for (const line of fs.readFileSync(process.argv[1], 'utf8').split('\n')) {
  if (line) console.log(zlib.inflateSync(Buffer.from(line, 'base64')).toString('hex'));
}
`, file}},
	} {
		t.Run(d.program, func(t *testing.T) {
			got := runDecoder(t, d.program, d.install, d.args...)
			if len(got) != len(want) {
				t.Fatalf("%s printed %d lines for %d payloads", d.program, len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("payload %d: %s inflates to\n%s\nwant\n%s", i, d.program, got[i], want[i])
				}
			}
		})
	}
}

// runDecoder runs program with args and returns its output lines. A missing
// program fails the test: skipping would let the check silently vanish.
func runDecoder(t *testing.T, program, install string, args ...string) []string {
	t.Helper()
	path, err := exec.LookPath(program)
	if err != nil {
		t.Fatalf("%s is not on PATH (%v); this test needs it as an independent zlib decoder: install it, e.g. %q", program, err, install)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", program, err, stderr.Bytes())
	}
	return strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
}
