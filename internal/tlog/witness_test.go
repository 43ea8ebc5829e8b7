package tlog_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	xtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/broker-dev/broker/internal/tlog"
	"github.com/broker-dev/broker/internal/tlog/witnesstest"
)

// witnessTree is an in-memory Merkle tree: x/mod's stored hashes.
type witnessTree struct {
	hashes []xtlog.Hash
	size   int64
}

func (m *witnessTree) ReadHashes(indexes []int64) ([]xtlog.Hash, error) {
	out := make([]xtlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(m.hashes)) {
			return nil, fmt.Errorf("hash %d not stored", x)
		}
		out[i] = m.hashes[x]
	}
	return out, nil
}

// newWitnessTree is a tree of n records "<prefix> <i>".
func newWitnessTree(t *testing.T, prefix string, n int64) *witnessTree {
	t.Helper()
	m := &witnessTree{}
	for ; m.size < n; m.size++ {
		h, err := xtlog.StoredHashes(m.size, fmt.Appendf(nil, "%s %d", prefix, m.size), m)
		if err != nil {
			t.Fatal(err)
		}
		m.hashes = append(m.hashes, h...)
	}
	return m
}

func (m *witnessTree) root(t *testing.T, n int64) xtlog.Hash {
	t.Helper()
	h, err := xtlog.TreeHash(n, m)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (m *witnessTree) proof(t *testing.T, from, to int64) xtlog.TreeProof {
	t.Helper()
	p, err := xtlog.ProveTree(to, from, m)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// witnessCheckpoint signs the checkpoint of m at size n.
func witnessCheckpoint(t *testing.T, signer note.Signer, origin string, m *witnessTree, n int64) []byte {
	t.Helper()
	text := fmt.Sprintf("%s\n%d\n%s\n", origin, n, m.root(t, n))
	cp, err := note.Sign(&note.Note{Text: text}, signer)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func witnessRandomHex(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestWitnessAddCheckpoint runs the client against a real litewitness.
func TestWitnessAddCheckpoint(t *testing.T) {
	ctx := t.Context()
	origin := "example.com/test-log-" + witnessRandomHex(t)
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	logVerifier, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}

	wt := witnesstest.Start(t, origin, vkey)
	wv, err := tlog.NewCosignatureVerifier(wt.VerifierKey())
	if err != nil {
		t.Fatalf("NewCosignatureVerifier(witness key): %v", err)
	}
	if wv.Name() != wt.Name() {
		t.Fatalf("verifier name %q, witness name %q", wv.Name(), wt.Name())
	}
	w := tlog.Witness{URL: wt.URL(), Verifier: wv, Client: &http.Client{Timeout: 10 * time.Second}}
	// Key material that must never appear in an error.
	secrets := []string{skey, vkey, wt.VerifierKey()}
	// keyData is a key's base64 data: what follows its name and hash (the
	// data itself may hold '+').
	keyData := func(key string) string {
		parts := strings.SplitN(strings.TrimPrefix(key, "PRIVATE+KEY+"), "+", 3)
		return parts[len(parts)-1]
	}
	checkErr := func(err error) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(err.Error(), s) || strings.Contains(err.Error(), keyData(s)) {
				t.Errorf("error %q contains key material", err)
			}
		}
	}

	// cosigned checks that cosigs are exactly one line by the witness, and
	// that the checkpoint with it appended verifies for log and witness.
	cosigned := func(cp []byte, cosigs []string) {
		t.Helper()
		if len(cosigs) != 1 || !strings.HasPrefix(cosigs[0], "— "+wt.Name()+" ") || !strings.HasSuffix(cosigs[0], "\n") {
			t.Fatalf("got %d cosignature lines, want one line by %s", len(cosigs), wt.Name())
		}
		signed := append(bytes.Clone(cp), strings.Join(cosigs, "")...)
		n, err := note.Open(signed, note.VerifierList(logVerifier, wv))
		if err != nil {
			t.Fatalf("the cosigned checkpoint does not verify: %v", err)
		}
		if len(n.Sigs) != 2 {
			t.Fatalf("%d verified signatures on the cosigned checkpoint, want 2 (log and witness)", len(n.Sigs))
		}
		sig, _ := base64.StdEncoding.DecodeString(strings.Fields(cosigs[0])[2])
		ts := int64(binary.BigEndian.Uint64(sig[4:12]))
		if d := time.Since(time.Unix(ts, 0)); d < -time.Minute || d > time.Minute {
			t.Errorf("cosignature timestamp %d is %s away from now", ts, d)
		}
	}

	tree := newWitnessTree(t, "record", 12)

	// Size 3 from 0: no proof.
	cp3 := witnessCheckpoint(t, signer, origin, tree, 3)
	cosigs, err := w.AddCheckpoint(ctx, 0, nil, cp3)
	if err != nil {
		t.Fatalf("AddCheckpoint(3 from 0): %v", err)
	}
	cosigned(cp3, cosigs)

	// Size 8 from 3 with the consistency proof.
	cp8 := witnessCheckpoint(t, signer, origin, tree, 8)
	cosigs, err = w.AddCheckpoint(ctx, 3, tree.proof(t, 3, 8), cp8)
	if err != nil {
		t.Fatalf("AddCheckpoint(8 from 3): %v", err)
	}
	cosigned(cp8, cosigs)

	// A different tree of size 10, signed by the log: a split view. Its
	// proof from 8 does not lead from the root the witness holds.
	fork := newWitnessTree(t, "forked", 10)
	_, err = w.AddCheckpoint(ctx, 8, fork.proof(t, 8, 10), witnessCheckpoint(t, signer, origin, fork, 10))
	if err == nil {
		t.Fatal("AddCheckpoint of an inconsistent tree of size 10 from 8 succeeded")
	}
	var se *tlog.WitnessStatusError
	if !errors.Is(err, tlog.ErrWitnessInconsistent) || !errors.As(err, &se) || se.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("AddCheckpoint of an inconsistent tree: %v, want a 422 WitnessStatusError (ErrWitnessInconsistent)", err)
	}
	checkErr(err)

	// A stale old size: the witness is at 8.
	cp10 := witnessCheckpoint(t, signer, origin, tree, 10)
	_, err = w.AddCheckpoint(ctx, 3, tree.proof(t, 3, 10), cp10)
	var conflict *tlog.ConflictError
	if !errors.As(err, &conflict) || conflict.Size != 8 {
		t.Fatalf("AddCheckpoint from stale old size 3: %v, want ConflictError{Size: 8}", err)
	}
	checkErr(err)
	// The retry the ConflictError asks for.
	cosigs, err = w.AddCheckpoint(ctx, conflict.Size, tree.proof(t, conflict.Size, 10), cp10)
	if err != nil {
		t.Fatalf("AddCheckpoint(10 from 8) after the conflict: %v", err)
	}
	cosigned(cp10, cosigs)

	// The same size again with the same root: consistent, cosigned again.
	cosigs, err = w.AddCheckpoint(ctx, 10, nil, cp10)
	if err != nil {
		t.Fatalf("AddCheckpoint(10 from 10): %v", err)
	}
	cosigned(cp10, cosigs)

	// A checkpoint signed by a key the witness does not trust for the origin.
	otherSkey, _, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, otherSkey)
	otherSigner, err := note.NewSigner(otherSkey)
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.AddCheckpoint(ctx, 10, tree.proof(t, 10, 12), witnessCheckpoint(t, otherSigner, origin, tree, 12))
	if !errors.Is(err, tlog.ErrWitnessForbidden) {
		t.Errorf("AddCheckpoint signed by an unknown key: %v, want ErrWitnessForbidden", err)
	}
	if err != nil {
		checkErr(err)
	}

	// A log the witness does not know (litewitness v0.6.1 answers 403,
	// the specification 404).
	unknownOrigin := origin + "-unknown"
	uSkey, _, err := note.GenerateKey(rand.Reader, unknownOrigin)
	if err != nil {
		t.Fatal(err)
	}
	uSigner, err := note.NewSigner(uSkey)
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.AddCheckpoint(ctx, 0, nil, witnessCheckpoint(t, uSigner, unknownOrigin, tree, 3))
	if !errors.Is(err, tlog.ErrWitnessForbidden) && !errors.Is(err, tlog.ErrWitnessUnknownLog) {
		t.Errorf("AddCheckpoint for an unknown log: %v, want ErrWitnessForbidden or ErrWitnessUnknownLog", err)
	}

	// A client holding the wrong key for the witness's name: the witness
	// cosigns (its state moves to 12) but the client accepts nothing.
	wrongPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	wrongVerifier, err := tlog.NewCosignatureVerifier(witnessVerifierKey(wt.Name(), wrongPub))
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, witnessVerifierKey(wt.Name(), wrongPub))
	wrong := w
	wrong.Verifier = wrongVerifier
	_, err = wrong.AddCheckpoint(ctx, 10, tree.proof(t, 10, 12), witnessCheckpoint(t, signer, origin, tree, 12))
	if err == nil || !strings.Contains(err.Error(), "no cosignature by "+wt.Name()) {
		t.Errorf("AddCheckpoint with the wrong witness key: %v, want an error that no cosignature is by the witness's key", err)
	}
	if err != nil {
		checkErr(err)
	}
}

// witnessVerifierKey is the cosignature/v1 verifier key of an Ed25519 key.
func witnessVerifierKey(name string, pub ed25519.PublicKey) string {
	key := append([]byte{0x04}, pub...)
	h := sha256.Sum256(append([]byte(name+"\n"), key...))
	return fmt.Sprintf("%s+%08x+%s", name, binary.BigEndian.Uint32(h[:]), base64.StdEncoding.EncodeToString(key))
}

// witnessCosign is a cosignature/v1 signature line of key over text at ts.
func witnessCosign(name string, priv ed25519.PrivateKey, ts uint64, text string) string {
	pub := priv.Public().(ed25519.PublicKey)
	key := append([]byte{0x04}, pub...)
	h := sha256.Sum256(append([]byte(name+"\n"), key...))
	msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s", ts, text)
	sig := binary.BigEndian.AppendUint64(h[:4:4], ts)
	sig = append(sig, ed25519.Sign(priv, []byte(msg))...)
	return "— " + name + " " + base64.StdEncoding.EncodeToString(sig) + "\n"
}

// TestWitnessProtocol checks the request bytes and the handling of each
// answer against a stand-in witness.
func TestWitnessProtocol(t *testing.T) {
	const origin = "example.com/protocol-log"
	const name = "example.com/protocol-witness"
	skey, _, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	tree := newWitnessTree(t, "record", 8)
	cp := witnessCheckpoint(t, signer, origin, tree, 8)
	text := string(cp[:bytes.LastIndex(cp, []byte("\n\n"))+1])
	proof := tree.proof(t, 3, 8)

	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, otherPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tlog.NewCosignatureVerifier(witnessVerifierKey(name, pub))
	if err != nil {
		t.Fatal(err)
	}
	now := uint64(time.Now().Unix())
	good := witnessCosign(name, priv, now, text)
	// Another cosigner's line, which the client must ignore.
	stranger := witnessCosign("example.com/other-witness", otherPriv, now, text)
	// A line with the witness's name and key ID but another key's signature.
	forged := witnessCosign(name, otherPriv, now, text)
	forged = "— " + name + " " + func() string {
		g, _ := base64.StdEncoding.DecodeString(strings.Fields(good)[2])
		f, _ := base64.StdEncoding.DecodeString(strings.Fields(forged)[2])
		copy(f[:4], g[:4])
		return base64.StdEncoding.EncodeToString(f)
	}() + "\n"

	var wantBody strings.Builder
	wantBody.WriteString("old 3\n")
	for _, h := range proof {
		wantBody.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
	}
	wantBody.WriteString("\n")
	wantBody.Write(cp)

	for _, tc := range []struct {
		name        string
		status      int
		contentType string
		body        string
		wantCosigs  []string
		wantErr     func(error) bool
	}{
		{name: "cosigned", status: 200, body: good, wantCosigs: []string{good}},
		{name: "other cosigner ignored", status: 200, body: stranger + good, wantCosigs: []string{good}},
		{name: "zero timestamp", status: 200, body: witnessCosign(name, priv, 0, text)},
		{name: "only other cosigner", status: 200, body: stranger},
		{name: "forged", status: 200, body: forged},
		{name: "empty", status: 200, body: ""},
		{name: "not signature lines", status: 200, body: "hello\n"},
		{name: "conflict", status: 409, contentType: "text/x.tlog.size", body: "12\n", wantErr: func(err error) bool {
			var c *tlog.ConflictError
			return errors.As(err, &c) && c.Size == 12
		}},
		{name: "conflict without size", status: 409, body: "conflict\n", wantErr: func(err error) bool {
			var c *tlog.ConflictError
			return err != nil && !errors.As(err, &c)
		}},
		{name: "bad request", status: 400, wantErr: func(err error) bool { return errors.Is(err, tlog.ErrWitnessBadRequest) }},
		{name: "forbidden", status: 403, wantErr: func(err error) bool { return errors.Is(err, tlog.ErrWitnessForbidden) }},
		{name: "unknown log", status: 404, wantErr: func(err error) bool { return errors.Is(err, tlog.ErrWitnessUnknownLog) }},
		{name: "inconsistent", status: 422, wantErr: func(err error) bool { return errors.Is(err, tlog.ErrWitnessInconsistent) }},
		{name: "server error", status: 500, body: "key " + base64.StdEncoding.EncodeToString(pub) + "\n", wantErr: func(err error) bool {
			var se *tlog.WitnessStatusError
			return errors.As(err, &se) && se.StatusCode == 500 && !strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(pub))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				if r.Method != http.MethodPost || r.URL.Path != "/prefix/add-checkpoint" || string(b) != wantBody.String() {
					t.Errorf("request %s %s with body\n%s\nwant POST /prefix/add-checkpoint with\n%s", r.Method, r.URL.Path, b, wantBody.String())
				}
				if tc.contentType != "" {
					rw.Header().Set("Content-Type", tc.contentType)
				}
				rw.WriteHeader(tc.status)
				io.WriteString(rw, tc.body)
			}))
			defer srv.Close()
			w := tlog.Witness{URL: srv.URL + "/prefix/", Verifier: v, Client: srv.Client()}
			cosigs, err := w.AddCheckpoint(t.Context(), 3, proof, cp)
			switch {
			case tc.wantCosigs != nil:
				if err != nil || strings.Join(cosigs, "") != strings.Join(tc.wantCosigs, "") {
					t.Fatalf("AddCheckpoint = %q, %v; want %q", cosigs, err, tc.wantCosigs)
				}
			case tc.wantErr != nil:
				if err == nil || !tc.wantErr(err) {
					t.Fatalf("AddCheckpoint error %v, not the one expected", err)
				}
			default:
				if err == nil {
					t.Fatalf("AddCheckpoint = %q, want an error", cosigs)
				}
			}
			if err != nil && strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(pub)) {
				t.Errorf("error %q contains the witness's key", err)
			}
		})
	}
}

// TestWitnessRequestChecks checks the requests AddCheckpoint refuses to send.
func TestWitnessRequestChecks(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tlog.NewCosignatureVerifier(witnessVerifierKey("example.com/w", pub))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		t.Errorf("a request was sent")
	}))
	defer srv.Close()
	w := tlog.Witness{URL: srv.URL, Verifier: v}
	cp := []byte("example.com/log\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— example.com/log AAAAAAAA\n")
	for name, call := range map[string]func() error{
		"proof from 0": func() error { _, err := w.AddCheckpoint(t.Context(), 0, make([]xtlog.Hash, 1), cp); return err },
		"64 hashes":    func() error { _, err := w.AddCheckpoint(t.Context(), 1, make([]xtlog.Hash, 64), cp); return err },
		"negative":     func() error { _, err := w.AddCheckpoint(t.Context(), -1, nil, cp); return err },
		"not a note": func() error {
			_, err := w.AddCheckpoint(t.Context(), 0, nil, []byte("example.com/log\n1\n"))
			return err
		},
		"no verifier": func() error {
			_, err := tlog.Witness{URL: srv.URL}.AddCheckpoint(t.Context(), 0, nil, cp)
			return err
		},
	} {
		if call() == nil {
			t.Errorf("%s: AddCheckpoint succeeded", name)
		}
	}
}

// TestCosignatureVerifier checks the verifier key parsing and the
// cosignature/v1 message (c2sp.org/tlog-cosignature).
func TestCosignatureVerifier(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const name = "example.com/w"
	vkey := witnessVerifierKey(name, pub)
	v, err := tlog.NewCosignatureVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(append([]byte(name+"\n\x04"), pub...))
	if v.Name() != name || v.KeyHash() != binary.BigEndian.Uint32(h[:]) {
		t.Errorf("Name, KeyHash = %q, %08x", v.Name(), v.KeyHash())
	}

	text := "example.com/log\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
	line := witnessCosign(name, priv, 1679315147, text)
	sig, _ := base64.StdEncoding.DecodeString(strings.Fields(line)[2])
	if !v.Verify([]byte(text), sig[4:]) {
		t.Error("a cosignature/v1 does not verify")
	}
	if v.Verify([]byte(text+"x\n"), sig[4:]) {
		t.Error("a cosignature verifies over another text")
	}
	moved := bytes.Clone(sig[4:])
	binary.BigEndian.PutUint64(moved, 1679315148)
	if v.Verify([]byte(text), moved) {
		t.Error("a cosignature verifies with another timestamp")
	}
	// A plain Ed25519 note signature over the text is not a cosignature.
	if v.Verify([]byte(text), append(make([]byte, 8), ed25519.Sign(priv, []byte(text))...)) {
		t.Error("a plain signature verifies as a cosignature")
	}
	big := witnessCosign(name, priv, 1<<63, text)
	bsig, _ := base64.StdEncoding.DecodeString(strings.Fields(big)[2])
	if v.Verify([]byte(text), bsig[4:]) {
		t.Error("a cosignature with a timestamp above 2^63-1 verifies")
	}

	key := base64.StdEncoding.EncodeToString(append([]byte{0x04}, pub...))
	noteKey := base64.StdEncoding.EncodeToString(append([]byte{0x01}, pub...))
	id := vkey[len(name)+1 : len(name)+9]
	for _, bad := range []string{
		"",
		name,
		name + "+" + id,
		name + "+" + strconv.Quote(id) + "+" + key,
		name + "+00000000+" + key,
		"bad name+" + id + "+" + key,
		name + "+" + id + "+" + noteKey,
		name + "+" + id + "+" + key[:20],
		name + "+" + id + "+!!!!",
	} {
		_, err := tlog.NewCosignatureVerifier(bad)
		if err == nil {
			t.Errorf("NewCosignatureVerifier(%q) succeeded", bad)
			continue
		}
		if strings.Contains(err.Error(), key) || strings.Contains(err.Error(), noteKey) {
			t.Errorf("error %q contains the key", err)
		}
	}
}
