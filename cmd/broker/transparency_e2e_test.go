package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/note"
	xtlog "golang.org/x/mod/sumdb/tlog"

	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/auth/dextest"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/tlog"
	"github.com/broker-dev/broker/internal/tlog/witnesstest"
)

// transparencyOrigin is the issuance log's origin (its checkpoint key's
// name) in these tests.
const transparencyOrigin = "broker.test/issuance-log"

// TestServe_TransparencyLog runs the real broker on Postgres and Dex with a
// checkpoint key and a real witness (litewitness), and checks the issuance
// log as a transparency log from the outside: the verifier key and a
// witnessed checkpoint; a grant's Broker-Record and its tlog-proof, checked
// offline by `broker audit check-proof` with no database (and refused once a
// byte of it changes); a client built only from x/mod's sumdb/tlog and note
// that reads hash tiles and entry bundles over HTTP, proves sampled records
// and the consistency of two checkpoints taken under a load of concurrent
// grants; `broker audit verify` with the key and an older checkpoint; and
// edits in Postgres (a record, then a stored tree hash) that verify names.
func TestServe_TransparencyLog(t *testing.T) {
	checkC2SPTilePaths(t)

	skey, vkey, err := tlog.GenerateKey(transparencyOrigin)
	if err != nil {
		t.Fatal(err)
	}
	witness := witnesstest.Start(t, transparencyOrigin, vkey)
	dex := dextest.Start(t, dextest.Options{})
	db := pgtest.NewCluster(t, pgtest.Options{}).New(t)
	addr := freeAddr(t)
	stateFile := filepath.Join(t.TempDir(), "checkpoint")
	env := map[string]string{
		"BROKER_ADDR":                    addr,
		"BROKER_DATABASE_URL":            db.URL,
		"BROKER_OIDC_ISSUER":             dex.Issuer(),
		"BROKER_OIDC_AUDIENCE":           dextest.ClientID,
		"BROKER_APP_ID":                  e2eAppID,
		"BROKER_APP_CERTIFICATE":         e2eAppCert,
		"BROKER_AUDIT_KEY":               e2eAuditKey,
		"BROKER_BOOTSTRAP_ADMINS":        "group:" + dextest.GroupAdmins,
		"BROKER_RATE_LIMIT":              "0",
		"BROKER_LOG_SIGNING_KEY":         skey,
		"BROKER_LOG_CHECKPOINT_INTERVAL": "200ms",
		"BROKER_LOG_STATE_FILE":          stateFile,
		"BROKER_LOG_WITNESSES":           witness.URL() + " " + witness.VerifierKey(),
	}
	// What `broker audit verify` and `prove` need: the serve env's database
	// and audit key, nothing else.
	dbEnv := map[string]string{"BROKER_DATABASE_URL": db.URL, "BROKER_AUDIT_KEY": e2eAuditKey}
	logs, stop := serveBroker(t, env)
	c := brokerClient{t: t, base: "http://" + addr}
	admin := dex.Token(t, dextest.AdminEmail, dextest.AdminPassword)
	dev := dex.Token(t, dextest.DeveloperEmail, dextest.DeveloperPassword)

	// Keys and tokens never reach the test output: every message that shows
	// what the broker or a command printed goes through redact, and
	// noSecrets fails a test whose outputs hold the signing key or a token.
	redact := strings.NewReplacer(skey, "[log signing key]", vkey, "[log verifier key]",
		witness.VerifierKey(), "[witness key]", admin, "[admin ID token]", dev, "[developer ID token]")
	_, seed, _ := strings.Cut(strings.TrimPrefix(skey, "PRIVATE+KEY+"+transparencyOrigin+"+"), "+")
	secrets := map[string]string{"log signing key": skey, "log signing key's seed": seed, "admin ID token": admin,
		"developer ID token": dev, "audit key": e2eAuditKey}
	noSecrets := func(what string, outs ...string) {
		t.Helper()
		for name, s := range secrets {
			for _, o := range outs {
				if strings.Contains(o, s) {
					t.Fatalf("%s contains the %s", what, name)
				}
			}
		}
	}
	cli := func(env map[string]string, args ...string) (int, string) {
		t.Helper()
		code, out, errOut := runBroker(t, env, args...)
		noSecrets("broker "+args[0]+" "+args[1], out, errOut)
		return code, redact.Replace(out + errOut)
	}

	// 1. The verifier key, and no checkpoint before the first record.
	code, body, _ := tlGet(t, c.base+"/log/key", "")
	if code != 200 || strings.TrimSpace(body) != vkey {
		t.Fatalf("GET /log/key: %d, want 200 and the verifier key of BROKER_LOG_SIGNING_KEY", code)
	}
	logVerifier, err := note.NewVerifier(strings.TrimSpace(body))
	if err != nil {
		t.Fatalf("GET /log/key is not a note verifier key: %v", err)
	}
	witnessVerifier, err := tlog.NewCosignatureVerifier(witness.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _ := tlGet(t, c.base+"/log/checkpoint", ""); code != 404 {
		t.Errorf("GET /log/checkpoint of an empty log: %d, want 404", code)
	}

	// A rule for the developers, then grants: each answer names its record.
	if code, _, m := c.call("POST", "/v1/policies", admin,
		`{"subject":"group:`+dextest.GroupDevelopers+`","channel":"tlog-*","role":"publisher","effect":"allow"}`); code != 201 {
		t.Fatalf("admin adds a rule: %d %v", code, m)
	}
	code, _, me := c.call("GET", "/v1/me", dev, "")
	if code != 200 || me["uid"] == nil {
		t.Fatalf("/v1/me: %d %v", code, me)
	}
	uid := strconv.FormatFloat(me["uid"].(float64), 'f', 0, 64)
	grant := func(channel string) int64 {
		t.Helper()
		code, hdr, m := c.call("POST", "/v1/tokens", dev, `{"channel":"`+channel+`","role":"publisher","uid":`+uid+`}`)
		if code != 200 || m["rtcToken"] == nil {
			t.Fatalf("grant on %s: %d %v", channel, code, m["detail"])
		}
		seq, err := strconv.ParseInt(hdr.Get("Broker-Record"), 10, 64)
		if err != nil || seq < 1 {
			t.Fatalf("grant on %s: Broker-Record %q, want the record's seq", channel, hdr.Get("Broker-Record"))
		}
		return seq
	}
	firstSeq := grant("tlog-first")
	if next := grant("tlog-second"); next <= firstSeq {
		t.Fatalf("Broker-Record of the second grant %d, not after the first's %d", next, firstSeq)
	}
	if code, hdr, _ := c.call("POST", "/v1/tokens", dev, `{"channel":"secret","role":"publisher","uid":`+uid+`}`); code != 403 || hdr.Get("Broker-Record") != "" {
		t.Errorf("a denial: %d with Broker-Record %q; want 403 and no receipt", code, hdr.Get("Broker-Record"))
	}

	// The checkpoint opens with the key (x/mod's note, our parser), and
	// within seconds carries the witness's cosignature.
	openCheckpoint := func(msg []byte) tlog.Checkpoint {
		t.Helper()
		n, err := note.Open(msg, note.VerifierList(logVerifier))
		if err != nil {
			t.Fatalf("the checkpoint does not open with the log's verifier key: %v", err)
		}
		cp, err := tlog.ParseCheckpoint(n.Text)
		if err != nil {
			t.Fatal(err)
		}
		if cp.Origin != transparencyOrigin {
			t.Fatalf("checkpoint origin %q, want %q", cp.Origin, transparencyOrigin)
		}
		return cp
	}
	checkpoint := func() ([]byte, tlog.Checkpoint) {
		t.Helper()
		code, body, hdr := tlGet(t, c.base+"/log/checkpoint", "")
		if code != 200 {
			t.Fatalf("GET /log/checkpoint: %d %s", code, redact.Replace(body))
		}
		if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("GET /log/checkpoint: Content-Type %q, want text/plain", ct)
		}
		return []byte(body), openCheckpoint([]byte(body))
	}
	witnessed := func(msg []byte) bool {
		n, err := note.Open(msg, note.VerifierList(logVerifier, witnessVerifier))
		if err != nil {
			t.Fatalf("the checkpoint with the witness's key: %v", err)
		}
		return slices.ContainsFunc(n.Sigs, func(s note.Signature) bool { return s.Name == witness.Name() })
	}
	var firstNote []byte
	var firstCp tlog.Checkpoint
	waitFor(t, "a checkpoint of both grants cosigned by the witness", 10*time.Second, func() bool {
		code, _, _ := tlGet(t, c.base+"/log/checkpoint", "")
		if code == 404 {
			return false
		}
		firstNote, firstCp = checkpoint()
		return firstCp.Size >= firstSeq+1 && witnessed(firstNote)
	})

	// 2. The grant's proof, as an auditor; offline check-proof (no
	// database: an empty environment) prints the record; a flipped byte in
	// the leaf or in a hash is refused.
	if code, _, _ := tlGet(t, fmt.Sprintf("%s/v1/audit/records/%d/proof", c.base, firstSeq), dev); code != 403 {
		t.Errorf("a developer asks for a proof: %d, want 403", code)
	}
	code, proofText, hdr := tlGet(t, fmt.Sprintf("%s/v1/audit/records/%d/proof", c.base, firstSeq), admin)
	if code != 200 || !strings.HasPrefix(proofText, "c2sp.org/tlog-proof@v1\n") {
		t.Fatalf("GET /v1/audit/records/%d/proof: %d %s", firstSeq, code, redact.Replace(proofText))
	}
	if cd := hdr.Get("Content-Disposition"); !strings.Contains(cd, fmt.Sprintf("record-%d.tlog-proof", firstSeq)) {
		t.Errorf("proof Content-Disposition %q", cd)
	}
	proof, err := tlog.ParseProof([]byte(proofText))
	if err != nil {
		t.Fatal(err)
	}
	if proof.Index != firstSeq-1 || len(proof.Hashes) == 0 {
		t.Fatalf("proof of record %d: index %d with %d hashes; want index %d and a path", firstSeq, proof.Index, len(proof.Hashes), firstSeq-1)
	}
	dir := t.TempDir()
	proofFile := filepath.Join(dir, "record.tlog-proof")
	writeTestFile(t, proofFile, []byte(proofText))
	code, out := cli(map[string]string{}, "audit", "check-proof", "--key", vkey, proofFile)
	header, recJSON, _ := strings.Cut(out, "\n")
	var printed map[string]any
	if code != 0 || !strings.HasPrefix(header, fmt.Sprintf("ok: record %d is in %s's checkpoint of ", firstSeq, transparencyOrigin)) ||
		json.Unmarshal([]byte(recJSON), &printed) != nil {
		t.Fatalf("check-proof of the served proof: exit %d\n%s", code, out)
	}
	if printed["seq"] != float64(firstSeq) || printed["channel"] != "tlog-first" || printed["decision"] != "granted" || printed["subject"] != dex.Subject(dextest.DeveloperUserID) {
		t.Errorf("check-proof printed the record %v; want seq %d, tlog-first, granted, the developer", printed, firstSeq)
	}
	for name, tamper := range map[string]func(p *tlog.Proof){
		"a byte of the leaf (extra data)": func(p *tlog.Proof) { p.Extra[len(p.Extra)/2] ^= 0x01 },
		"a byte of a hash":                func(p *tlog.Proof) { p.Hashes[len(p.Hashes)-1][7] ^= 0x80 },
	} {
		p, _ := tlog.ParseProof([]byte(proofText))
		tamper(&p)
		file := filepath.Join(dir, "tampered.tlog-proof")
		writeTestFile(t, file, p.Marshal())
		if code, out := cli(map[string]string{}, "audit", "check-proof", "--key", vkey, file); code != 1 || !strings.HasPrefix(out, "INVALID: ") {
			t.Errorf("check-proof with %s flipped: exit %d\n%s\nwant exit 1 and INVALID", name, code, out)
		}
	}

	// 3. A client of x/mod's tlog and note only: it opens the checkpoint
	// with the verifier key and reads the tree from its text itself.
	clientTree := func(msg []byte) xtlog.Tree {
		t.Helper()
		tree, err := openTree(msg, logVerifier)
		if err != nil {
			t.Fatalf("the client cannot read the checkpoint: %v", err)
		}
		return tree
	}
	clientCheckpoint := func() xtlog.Tree {
		t.Helper()
		code, body, _ := tlGet(t, c.base+"/log/checkpoint", "")
		if code != 200 {
			t.Fatalf("GET /log/checkpoint: %d %s", code, redact.Replace(body))
		}
		return clientTree([]byte(body))
	}
	first := clientTree(firstNote)
	if first.N != firstCp.Size || first.Hash != firstCp.Root {
		t.Fatalf("the client reads the first checkpoint as %d records, tlog.ParseCheckpoint as %d", first.N, firstCp.Size)
	}
	tiles := &httpTileReader{base: c.base + "/log/"}
	// Entry bundles are for auditors: 401 without a bearer token, 403 for
	// a developer.
	firstBundle := c.base + "/log/" + c2spTilePath("entries", 0, int(min(first.N, c2spTileWidth)))
	if code, _, hdr := tlGet(t, firstBundle, ""); code != 401 || hdr.Get("WWW-Authenticate") == "" {
		t.Errorf("entry bundle without a bearer token: %d (WWW-Authenticate %q), want 401", code, hdr.Get("WWW-Authenticate"))
	}
	if code, _, _ := tlGet(t, firstBundle, dev); code != 403 {
		t.Errorf("entry bundle for a developer: %d, want 403", code)
	}

	// Concurrent grants for a few seconds; two checkpoints taken apart
	// while they run.
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var granted, failed atomic.Int64
	var failure atomic.Value
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			body := fmt.Sprintf(`{"channel":"tlog-load-%d","role":"publisher","uid":%s}`, w, uid)
			for loadCtx.Err() == nil {
				req, err := http.NewRequestWithContext(loadCtx, "POST", c.base+"/v1/tokens", strings.NewReader(body))
				if err != nil {
					failure.Store(err.Error())
					failed.Add(1)
					return
				}
				req.Header.Set("Authorization", "Bearer "+dev)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					if loadCtx.Err() == nil {
						failure.Store(redact.Replace(err.Error()))
						failed.Add(1)
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 && resp.Header.Get("Broker-Record") != "" {
					granted.Add(1)
				} else {
					failure.Store(fmt.Sprintf("status %d, Broker-Record %q", resp.StatusCode, resp.Header.Get("Broker-Record")))
					failed.Add(1)
				}
			}
		})
	}
	loadStart := time.Now()
	time.Sleep(time.Second)
	cpA := clientCheckpoint()
	time.Sleep(2 * time.Second)
	// Until the tree spans more than two full tiles (so that level-1 tiles
	// are read), for at most a few more seconds.
	cpB := clientCheckpoint()
	for cpB.N <= 2*c2spTileWidth && time.Since(loadStart) < 6*time.Second {
		time.Sleep(250 * time.Millisecond)
		cpB = clientCheckpoint()
	}
	stopLoad()
	wg.Wait()
	loadEnd := time.Now()
	loadTime := loadEnd.Sub(loadStart)
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of the load's requests failed, the last: %v", n, failure.Load())
	}
	t.Logf("load: %d grants in %s; checkpoints of %d, then %d records", granted.Load(), loadTime.Round(time.Millisecond), cpA.N, cpB.N)
	if cpB.N <= cpA.N || cpA.N <= first.N {
		t.Fatalf("checkpoints of %d, %d then %d records: the load did not grow the tree between them", first.N, cpA.N, cpB.N)
	}

	// Consistency, through hash tiles authenticated against the later root.
	hashesB := xtlog.TileHashReader(cpB, tiles)
	for _, old := range []xtlog.Tree{first, cpA} {
		tp, err := xtlog.ProveTree(cpB.N, old.N, hashesB)
		if err != nil {
			t.Fatalf("ProveTree(%d, %d) over the served tiles: %v", cpB.N, old.N, err)
		}
		if err := xtlog.CheckTree(tp, cpB.N, cpB.Hash, old.N, old.Hash); err != nil {
			t.Fatalf("the checkpoint of %d records does not extend the one of %d: %v", cpB.N, old.N, err)
		}
		forged := old.Hash
		forged[0] ^= 1
		if xtlog.CheckTree(tp, cpB.N, cpB.Hash, old.N, forged) == nil {
			t.Fatalf("a consistency proof from %d records also proves a forged root", old.N)
		}
	}

	// Inclusion of sampled records: each leaf from its entry bundle (as the
	// admin) hashes to the record hash proven in the later checkpoint, and
	// holds the record of that seq.
	bundles := map[string][][]byte{}
	leafAt := func(i int64) []byte {
		t.Helper()
		n := i / c2spTileWidth
		width := min(cpB.N-n*c2spTileWidth, c2spTileWidth)
		path := c2spTilePath("entries", n, int(width))
		if bundles[path] == nil {
			code, body, _ := tlGet(t, c.base+"/log/"+path, admin)
			if code != 200 {
				t.Fatalf("GET /log/%s as the admin: %d %s", path, code, redact.Replace(body))
			}
			entries, err := parseBundle([]byte(body))
			if err != nil {
				t.Fatalf("/log/%s: %v", path, err)
			}
			bundles[path] = entries
		}
		entries := bundles[path]
		if int64(len(entries)) != width {
			t.Fatalf("/log/%s holds %d entries, want %d", path, len(entries), width)
		}
		return entries[i%c2spTileWidth]
	}
	samples := []int64{0, firstSeq - 1, cpA.N - 1, cpA.N, cpB.N / 2, cpB.N - 1}
	for range 4 {
		samples = append(samples, rand.Int64N(cpB.N))
	}
	for _, i := range samples {
		rp, err := xtlog.ProveRecord(cpB.N, i, hashesB)
		if err != nil {
			t.Fatalf("ProveRecord(%d, %d) over the served tiles: %v", cpB.N, i, err)
		}
		leaf := leafAt(i)
		if err := xtlog.CheckRecord(rp, cpB.N, cpB.Hash, i, xtlog.RecordHash(leaf)); err != nil {
			t.Fatalf("record %d's leaf from its entry bundle is not the one proven in the checkpoint of %d: %v", i+1, cpB.N, err)
		}
		if other := leafAt((i + 1) % cpB.N); xtlog.CheckRecord(rp, cpB.N, cpB.Hash, i, xtlog.RecordHash(other)) == nil {
			t.Fatalf("record %d's proof also proves another record's leaf", i+1)
		}
		rec, err := audit.ParseLeaf(leaf)
		if err != nil || rec.Seq != i+1 {
			t.Fatalf("leaf %d is record %d (%v), want %d", i, rec.Seq, err, i+1)
		}
		if i == firstSeq-1 && (rec.Channel != "tlog-first" || rec.Decision != audit.DecisionGranted) {
			t.Errorf("record %d: %s on %s, want granted on tlog-first", rec.Seq, rec.Decision, rec.Channel)
		}
	}
	// The first full hash tile is served as immutable.
	if cpB.N >= c2spTileWidth {
		if code, _, hdr := tlGet(t, c.base+"/log/"+c2spTilePath("0", 0, c2spTileWidth), ""); code != 200 || !strings.Contains(hdr.Get("Cache-Control"), "immutable") {
			t.Errorf("full tile 0/000: %d, Cache-Control %q; want 200 and immutable", code, hdr.Get("Cache-Control"))
		}
	}
	t.Logf("tiles fetched: %d (%d entry bundles)", tiles.fetched.Load(), len(bundles))

	// The witness follows the log to its last checkpoint (once requests
	// the load cancelled have settled on the server).
	var lastNote []byte
	var lastCp tlog.Checkpoint
	waitFor(t, "the last checkpoint, cosigned by the witness", 10*time.Second, func() bool {
		size := lastSeq(t, db.Pool())
		lastNote, lastCp = checkpoint()
		return lastCp.Size == size && witnessed(lastNote) && time.Since(loadEnd) > 500*time.Millisecond
	})

	// 4. verify against the database, with the key; with the first
	// checkpoint, that the log extends it.
	code, out = cli(dbEnv, "audit", "verify", "--key", vkey)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("ok, the latest checkpoint (%d records, signed by %s", lastCp.Size, transparencyOrigin)) ||
		!strings.Contains(out, "matches the tree") {
		t.Fatalf("audit verify --key: exit %d\n%s", code, out)
	}
	firstFile := filepath.Join(dir, "first.checkpoint")
	writeTestFile(t, firstFile, firstNote)
	code, out = cli(dbEnv, "audit", "verify", "--key", vkey, "--checkpoint", firstFile)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("ok, the log extends %s (%d records) consistently", firstFile, firstCp.Size)) {
		t.Fatalf("audit verify --checkpoint (the first checkpoint): exit %d\n%s", code, out)
	}
	// The first verification stored the verified point: the next reads
	// only what is new (nothing), and --full reads everything again.
	if code, out := cli(dbEnv, "audit", "verify", "--key", vkey); code != 0 || !strings.Contains(out, "new records after the verified checkpoint") {
		t.Fatalf("an incremental audit verify: exit %d\n%s", code, out)
	}

	stop()
	all := logs.String()
	noSecrets("the broker's logs", all)
	if strings.Contains(all, "witness did not cosign") {
		t.Errorf("the broker logged a witness failure:\n%s", redact.Replace(grepLines(all, "witness")))
	}
	// The state file holds the last checkpoint signed (without
	// cosignatures).
	state, err := os.ReadFile(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if sc := openCheckpoint(state); sc.Size != lastCp.Size || sc.Root != lastCp.Root {
		t.Errorf("the state file's checkpoint is of %d records, want the last one's %d", sc.Size, lastCp.Size)
	}

	// 5. An edited record: verify names a tree problem at it (and the
	// chain's); its earlier proof still verifies offline, but the proof of
	// the record as now stored does not, nor its leaf against the old
	// checkpoint.
	pool := db.Pool()
	ctx := context.Background()
	var channel string
	if err := pool.QueryRow(ctx, "SELECT channel FROM issuance_log WHERE seq = $1", firstSeq).Scan(&channel); err != nil {
		t.Fatal(err)
	}
	mustExec(t, pool, "WITH v AS (INSERT INTO issuance_log_value (kind, value) VALUES (6, 'x') ON CONFLICT (kind, issuance_log_value_key(value)) DO UPDATE SET kind = EXCLUDED.kind RETURNING id) UPDATE issuance_log_record SET channel = (SELECT id FROM v) WHERE seq = $1", firstSeq)
	code, out = cli(dbEnv, "audit", "verify", "--full", "--key", vkey)
	if code != 1 || !strings.Contains(out, fmt.Sprintf("seq %d: %s: ", firstSeq, audit.ProblemTree)) ||
		!strings.Contains(out, fmt.Sprintf("seq %d: %s: ", firstSeq, audit.ProblemModified)) {
		t.Fatalf("audit verify after record %d was edited: exit %d\n%s\nwant exit 1 naming a tree and a chain problem at it", firstSeq, code, out)
	}
	if code, out := cli(map[string]string{}, "audit", "check-proof", "--key", vkey, proofFile); code != 0 {
		t.Errorf("the earlier proof of record %d after the edit: exit %d\n%s\nwant 0 (it carries the leaf as it was)", firstSeq, code, out)
	}
	code, reproved, errOut := runBroker(t, dbEnv, "audit", "prove", "--seq", strconv.FormatInt(firstSeq, 10))
	noSecrets("broker audit prove", reproved, errOut)
	if code != 0 {
		t.Fatalf("audit prove --seq %d: exit %d\n%s", firstSeq, code, redact.Replace(errOut))
	}
	now, err := tlog.ParseProof([]byte(reproved))
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := audit.ParseLeaf(now.Extra); err != nil || rec.Channel != "x" {
		t.Fatalf("audit prove after the edit carries the channel %q (%v), want the edited x", rec.Channel, err)
	}
	reprovedFile := filepath.Join(dir, "reproved.tlog-proof")
	writeTestFile(t, reprovedFile, []byte(reproved))
	if code, out := cli(map[string]string{}, "audit", "check-proof", "--key", vkey, reprovedFile); code != 1 || !strings.HasPrefix(out, "INVALID: ") {
		t.Errorf("check-proof of record %d as edited: exit %d\n%s\nwant exit 1 and INVALID", firstSeq, code, out)
	}
	oldCp := openCheckpoint(proof.Checkpoint)
	if xtlog.CheckRecord(proof.Hashes, oldCp.Size, oldCp.Root, proof.Index, xtlog.RecordHash(now.Extra)) == nil {
		t.Errorf("record %d as edited verifies against the checkpoint of %d records its proof had", firstSeq, oldCp.Size)
	}

	// Put the record back: the log verifies again. Then an edited stored
	// tree hash (a leaf hash of a load record, records untouched).
	mustExec(t, pool, "WITH v AS (INSERT INTO issuance_log_value (kind, value) VALUES (6, $2) ON CONFLICT (kind, issuance_log_value_key(value)) DO UPDATE SET kind = EXCLUDED.kind RETURNING id) UPDATE issuance_log_record SET channel = (SELECT id FROM v) WHERE seq = $1", firstSeq, channel)
	if code, out := cli(dbEnv, "audit", "verify", "--full", "--key", vkey); code != 0 {
		t.Fatalf("audit verify after the record was put back: exit %d\n%s", code, out)
	}
	tampered := cpA.N + 1
	// A row holds one statement's hashes from first_idx on, concatenated.
	idx := xtlog.StoredHashIndex(0, tampered-1)
	mustExec(t, pool, `UPDATE issuance_log_tree SET hashes = set_byte(hashes, (($1 - first_idx) * 32)::integer, get_byte(hashes, (($1 - first_idx) * 32)::integer) # 1)
		WHERE first_idx = (SELECT max(first_idx) FROM issuance_log_tree WHERE first_idx <= $1)`, idx)
	code, out = cli(dbEnv, "audit", "verify", "--full", "--key", vkey)
	if code != 1 || !strings.Contains(out, fmt.Sprintf("seq %d: %s: ", tampered, audit.ProblemTree)) || strings.Contains(out, audit.ProblemModified) {
		t.Fatalf("audit verify after record %d's stored leaf hash was edited: exit %d\n%s\nwant exit 1 naming only a tree problem at it", tampered, code, out)
	}
}

// c2sp.org/tlog-tiles: every tile has height 8, 256 hashes or entries when
// full.
const (
	c2spTileHeight = 8
	c2spTileWidth  = 1 << c2spTileHeight
)

// c2spTilePath is the path of a tile below the log's prefix per
// c2sp.org/tlog-tiles: tile/<L>/<N>[.p/<W>], L a level or "entries", N in
// groups of three digits with all but the last prefixed by x, W the width
// of a partial tile. (x/mod's Tile.Path is the Go checksum database's
// layout, with the height in the path: not this.)
func c2spTilePath(level string, n int64, w int) string {
	groups := []string{fmt.Sprintf("%03d", n%1000)}
	for n /= 1000; n > 0; n /= 1000 {
		groups = append([]string{fmt.Sprintf("x%03d", n%1000)}, groups...)
	}
	p := "tile/" + level + "/" + strings.Join(groups, "/")
	if w < c2spTileWidth {
		p += ".p/" + strconv.Itoa(w)
	}
	return p
}

// checkC2SPTilePaths checks c2spTilePath against the spec's examples.
func checkC2SPTilePaths(t *testing.T) {
	t.Helper()
	for _, tc := range []struct {
		level string
		n     int64
		w     int
		want  string
	}{
		{"0", 0, 256, "tile/0/000"},
		{"0", 5, 17, "tile/0/005.p/17"},
		{"1", 1000, 256, "tile/1/x001/000"},
		{"0", 1234067, 256, "tile/0/x001/x234/067"},
		{"entries", 1234067, 8, "tile/entries/x001/x234/067.p/8"},
	} {
		if got := c2spTilePath(tc.level, tc.n, tc.w); got != tc.want {
			t.Fatalf("c2spTilePath(%s, %d, %d) = %q, want %q", tc.level, tc.n, tc.w, got, tc.want)
		}
	}
}

// openTree opens a checkpoint note with the log's verifier (x/mod's note
// alone) and reads its tree from the text: the origin line (the key's
// name), the size in decimal, the root hash in base64
// (c2sp.org/tlog-checkpoint).
func openTree(msg []byte, v note.Verifier) (xtlog.Tree, error) {
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return xtlog.Tree{}, err
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] != v.Name() {
		return xtlog.Tree{}, errors.New("not a checkpoint of this log")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 {
		return xtlog.Tree{}, errors.New("the tree size is not a number")
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != xtlog.HashSize {
		return xtlog.Tree{}, errors.New("the root is not a base64 SHA-256 hash")
	}
	return xtlog.Tree{N: size, Hash: xtlog.Hash(root)}, nil
}

// httpTileReader is an x/mod tlog.TileReader over the broker's hash tiles
// (public: no bearer token).
type httpTileReader struct {
	base    string // ends in /log/
	fetched atomic.Int64
}

func (r *httpTileReader) Height() int { return c2spTileHeight }

func (r *httpTileReader) ReadTiles(tiles []xtlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tile := range tiles {
		if tile.H != c2spTileHeight || tile.L < 0 {
			return nil, fmt.Errorf("unexpected tile %+v", tile)
		}
		path := c2spTilePath(strconv.Itoa(tile.L), tile.N, tile.W)
		resp, err := http.Get(r.base + path)
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("GET %s: %d", path, resp.StatusCode)
		}
		r.fetched.Add(1)
		out[i] = b
	}
	return out, nil
}

func (r *httpTileReader) SaveTiles([]xtlog.Tile, [][]byte) {}

// parseBundle splits an entry bundle (c2sp.org/tlog-tiles): entries each
// prefixed with their length, two bytes big-endian.
func parseBundle(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errors.New("entry bundle ends inside a length")
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return nil, errors.New("entry bundle ends inside an entry")
		}
		out = append(out, b[2:2+n])
		b = b[2+n:]
	}
	return out, nil
}

// tlGet GETs url with an optional bearer token.
func tlGet(t *testing.T, url, bearer string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func writeTestFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// mustExec runs one statement that must change exactly one row.
func mustExec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	tag, err := pool.Exec(context.Background(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	if tag.RowsAffected() != 1 {
		t.Fatalf("%s changed %d rows, want 1", sql, tag.RowsAffected())
	}
}

// lastSeq is the seq of the latest record (0: none).
func lastSeq(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), "SELECT coalesce(max(seq), 0) FROM issuance_log").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func grepLines(s, word string) string {
	var b bytes.Buffer
	for line := range strings.Lines(s) {
		if strings.Contains(line, word) {
			b.WriteString(line)
		}
	}
	return b.String()
}
