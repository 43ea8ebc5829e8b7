package tlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

func TestGenerateKey(t *testing.T) {
	l := newTestLog(t, "example.com/log")
	if !strings.HasPrefix(l.skey, "PRIVATE+KEY+example.com/log+") || !strings.HasPrefix(l.vkey, "example.com/log+") {
		t.Fatalf("keys not named by the origin")
	}
	if l.signer.Name() != l.origin || l.verifier.Name() != l.origin || l.signer.KeyHash() != l.verifier.KeyHash() {
		t.Fatalf("signer %s+%08x, verifier %s+%08x", l.signer.Name(), l.signer.KeyHash(), l.verifier.Name(), l.verifier.KeyHash())
	}
	// The vkey is <name>+<8 hex key ID>+base64(0x01 || 32-byte public key),
	// and the key ID is SHA-256(name || 0x0A || 0x01 || key)[:4]
	// (c2sp.org/signed-note, "Ed25519 signatures", "Verifier keys").
	parts := strings.SplitN(l.vkey, "+", 3) // base64 may contain "+"
	key, err := base64.StdEncoding.DecodeString(parts[2])
	if len(parts) != 3 || len(parts[1]) != 8 || err != nil || len(key) != 33 || key[0] != 0x01 {
		t.Fatalf("verifier key not in the signed-note Ed25519 format")
	}
	id := sha256.Sum256(append([]byte(l.origin+"\n"), key...))
	if binary.BigEndian.Uint32(id[:4]) != l.verifier.KeyHash() || parts[1] != hex.EncodeToString(id[:4]) {
		t.Fatalf("key ID is not SHA-256(name || 0x0A || 0x01 || key)[:4]")
	}

	other := newTestLog(t, "example.com/log")
	if other.vkey == l.vkey {
		t.Fatal("two generated keys are equal")
	}
	for _, bad := range []string{"", "example.com/a log", "example.com/a+log", "example.com/log\n", "tab\there", "\xff"} {
		if _, _, err := GenerateKey(bad); err == nil {
			t.Errorf("GenerateKey(%q) succeeded", bad)
		}
	}
}

// The example of c2sp.org/signed-note, "Verifier keys".
func TestSignedNoteSpecExample(t *testing.T) {
	v, err := NewVerifier("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
	if err != nil {
		t.Fatal(err)
	}
	msg := "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
	n, err := note.Open([]byte(msg), note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	if n.Text != "This is an example message.\n" || len(n.Sigs) != 1 {
		t.Fatalf("opened %+v", n)
	}
}

func TestKeyErrorsDoNotContainKeys(t *testing.T) {
	l := newTestLog(t, "example.com/log")
	// Key data is base64, which may contain "+".
	sdata := strings.SplitN(l.skey, "+", 5)[4]
	vdata := strings.SplitN(l.vkey, "+", 3)[2]
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	// withAlg returns key k with the signature type byte of its key data
	// replaced.
	withAlg := func(k, data string, alg byte) string {
		b, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			t.Fatal(err)
		}
		b[0] = alg
		return strings.TrimSuffix(k, data) + base64.StdEncoding.EncodeToString(b)
	}
	badSigners := []string{
		"",
		l.vkey, // a verifier key
		strings.Replace(l.skey, "PRIVATE+KEY+", "PRIVATE+KEYS+", 1),
		flip(l.skey, len(l.skey)-3),                                        // another key: the key ID no longer matches
		l.skey[:len(l.skey)-4],                                             // truncated key data
		withAlg(l.skey, sdata, 0x04),                                       // unknown algorithm
		strings.Replace(l.skey, "example.com/log", "example.com/other", 1), // another name
	}
	for _, k := range badSigners {
		_, err := NewSigner(k)
		if err == nil {
			t.Errorf("NewSigner accepted a bad key")
			continue
		}
		t.Log(err)
		if msg := err.Error(); k != "" && strings.Contains(msg, k) || strings.Contains(msg, sdata) || strings.Contains(msg, sdata[:10]) {
			t.Errorf("NewSigner error contains the key: %v", err)
		}
	}
	badVerifiers := []string{
		"",
		l.skey, // a signer key: must not be echoed
		flip(l.vkey, len(l.vkey)-3),
		l.vkey[:len(l.vkey)-4],
		withAlg(l.vkey, vdata, 0x04),
		strings.Replace(l.vkey, "example.com/log", "example.com/other", 1),
	}
	for _, k := range badVerifiers {
		_, err := NewVerifier(k)
		if err == nil {
			t.Errorf("NewVerifier accepted a bad key")
			continue
		}
		t.Log(err)
		if msg := err.Error(); k != "" && strings.Contains(msg, k) || strings.Contains(msg, sdata[:10]) || strings.Contains(msg, vdata[:10]) {
			t.Errorf("NewVerifier error contains the key: %v", err)
		}
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	root := sha256.Sum256([]byte("root"))
	for _, c := range []Checkpoint{
		{Origin: "example.com/log", Size: 0, Root: sha256.Sum256(nil)},
		{Origin: "example.com/log", Size: 1, Root: root},
		{Origin: "example.com/log", Size: 1<<63 - 1, Root: root},
		{Origin: "a log with spaces+plus", Size: 20852163, Root: root},
		{Origin: "example.com/log", Size: 7, Root: root, Extensions: []string{"ext one", "— two"}},
	} {
		text := c.Text()
		got, err := ParseCheckpoint(text)
		if err != nil {
			t.Fatalf("ParseCheckpoint(%q): %v", text, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("ParseCheckpoint(%q) = %+v, want %+v", text, got, c)
		}
		if got.Text() != text {
			t.Fatalf("text %q re-encoded as %q", text, got.Text())
		}
	}
	c := Checkpoint{Origin: "example.com/log", Size: 42, Root: root, Extensions: []string{"x"}}
	want := "example.com/log\n42\n" + base64.StdEncoding.EncodeToString(root[:]) + "\nx\n"
	if c.Text() != want {
		t.Fatalf("Text() = %q, want %q", c.Text(), want)
	}
}

// The example of c2sp.org/tlog-checkpoint.
const specCheckpoint = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
const specCheckpointNote = specCheckpoint + "\n— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"

// The witness cosignature line of the example of c2sp.org/tlog-cosignature.
const specCosignature = "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"

func TestCheckpointSpecExample(t *testing.T) {
	c, err := ParseCheckpoint(specCheckpoint)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := base64.StdEncoding.DecodeString("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
	if c.Origin != "example.com/behind-the-sofa" || c.Size != 20852163 || !bytes.Equal(c.Root[:], root) || c.Extensions != nil {
		t.Fatalf("parsed %+v", c)
	}
	if c.Text() != specCheckpoint {
		t.Fatalf("re-encoded as %q", c.Text())
	}
	// Well-formed, but the example key is unknown: refused, with any key.
	l := newTestLog(t, "example.com/behind-the-sofa")
	if _, _, err := OpenCheckpoint([]byte(specCheckpointNote), l.origin, l.verifiers()); err == nil {
		t.Fatal("opened the spec's checkpoint with a random key")
	}
	var unverified *note.UnverifiedNoteError
	if _, _, err := OpenCheckpoint([]byte(specCheckpointNote+specCosignature), l.origin, l.verifiers()); !errors.As(err, &unverified) {
		t.Fatalf("spec checkpoint with a cosignature: %v, want an unverified note", err)
	}
}

func TestParseCheckpointStrict(t *testing.T) {
	root := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, tc := range []struct{ name, text string }{
		{"empty", ""},
		{"no final newline", "example.com/log\n1\n" + root},
		{"two lines", "example.com/log\n1\n"},
		{"one line", "example.com/log\n"},
		{"empty origin", "\n1\n" + root + "\n"},
		{"empty size", "example.com/log\n\n" + root + "\n"},
		{"leading zero", "example.com/log\n01\n" + root + "\n"},
		{"double zero", "example.com/log\n00\n" + root + "\n"},
		{"plus sign", "example.com/log\n+1\n" + root + "\n"},
		{"minus sign", "example.com/log\n-1\n" + root + "\n"},
		{"minus zero", "example.com/log\n-0\n" + root + "\n"},
		{"hex size", "example.com/log\n0x10\n" + root + "\n"},
		{"space in size", "example.com/log\n 1\n" + root + "\n"},
		{"size overflow", "example.com/log\n9223372036854775808\n" + root + "\n"},
		{"short root", "example.com/log\n1\n" + base64.StdEncoding.EncodeToString(make([]byte, 31)) + "\n"},
		{"long root", "example.com/log\n1\n" + base64.StdEncoding.EncodeToString(make([]byte, 33)) + "\n"},
		{"unpadded root", "example.com/log\n1\n" + strings.TrimRight(root, "=") + "\n"},
		{"url base64 root", "example.com/log\n1\n" + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)) + "\n"},
		{"non-canonical root", "example.com/log\n1\n" + root[:42] + "B=\n"},
		{"bad base64", "example.com/log\n1\n!!!" + root[3:] + "\n"},
		{"CRLF", "example.com/log\r\n1\r\n" + root + "\r\n"},
		{"carriage return in root", "example.com/log\n1\n" + root[:20] + "\r" + root[20:] + "\n"},
		{"empty extension", "example.com/log\n1\n" + root + "\n\n"},
		{"empty line then extension", "example.com/log\n1\n" + root + "\n\next\n"},
		{"signed note", "example.com/log\n1\n" + root + "\n\n— example.com/log AAAAAAAA\n"},
		{"control character", "example.com/\x01log\n1\n" + root + "\n"},
		{"invalid UTF-8", "example.com/\xfflog\n1\n" + root + "\n"},
	} {
		if c, err := ParseCheckpoint(tc.text); err == nil {
			t.Errorf("%s: ParseCheckpoint(%q) = %+v", tc.name, tc.text, c)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
}

func TestSignOpenCheckpoint(t *testing.T) {
	log := newTestLog(t, "example.com/log")
	c := Checkpoint{Origin: log.origin, Size: 10, Root: sha256.Sum256([]byte("root"))}
	msg := log.sign(t, c)
	if !bytes.HasPrefix(msg, []byte(c.Text()+"\n— example.com/log ")) || !bytes.HasSuffix(msg, []byte("\n")) || bytes.Count(msg, []byte("\n")) != 5 {
		t.Fatalf("signed note %q", msg)
	}

	got, n, err := OpenCheckpoint(msg, log.origin, log.verifiers())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) || len(n.Sigs) != 1 || n.Sigs[0].Name != log.origin || len(n.UnverifiedSigs) != 0 {
		t.Fatalf("opened %+v, note %+v", got, n)
	}

	// Witness cosignatures by keys the caller did not configure are
	// tolerated; configured ones are verified.
	witness := newTestLog(t, "witness.example.com/w1")
	cosigned, err := note.Sign(n, witness.signer)
	if err != nil {
		t.Fatal(err)
	}
	cosigned = append(cosigned, specCosignature...)
	got, n2, err := OpenCheckpoint(cosigned, log.origin, log.verifiers())
	if err != nil || !reflect.DeepEqual(got, c) || len(n2.Sigs) != 1 || len(n2.UnverifiedSigs) != 2 {
		t.Fatalf("cosigned: %+v, %+v, %v", got, n2, err)
	}
	_, n3, err := OpenCheckpoint(cosigned, log.origin, note.VerifierList(log.verifier, witness.verifier))
	if err != nil || len(n3.Sigs) != 2 || len(n3.UnverifiedSigs) != 1 {
		t.Fatalf("cosigned, witness known: %+v, %v", n3, err)
	}

	other := newTestLog(t, "example.com/other")
	sameName := newTestLog(t, "example.com/log")
	evilText := Checkpoint{Origin: "example.com/evil", Size: 10, Root: c.Root}.Text()
	evil, err := note.Sign(&note.Note{Text: evilText}, log.signer)
	if err != nil {
		t.Fatal(err)
	}
	badSize, err := note.Sign(&note.Note{Text: "example.com/log\n010\n" + base64.StdEncoding.EncodeToString(c.Root[:]) + "\n"}, log.signer)
	if err != nil {
		t.Fatal(err)
	}
	witnessOnly, err := note.Sign(&note.Note{Text: c.Text()}, witness.signer)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(msg, []byte("\n10\n"), []byte("\n11\n"), 1)
	for _, tc := range []struct {
		name      string
		msg       []byte
		origin    string
		verifiers note.Verifiers
	}{
		{"another key with the same name", msg, log.origin, sameName.verifiers()},
		{"another log's key", msg, log.origin, other.verifiers()},
		{"no verifiers", msg, log.origin, nil},
		{"another origin", msg, other.origin, note.VerifierList(log.verifier, other.verifier)},
		{"signed by another log only", other.sign(t, Checkpoint{Origin: other.origin, Size: 1, Root: c.Root}), log.origin, note.VerifierList(log.verifier, other.verifier)},
		{"only a witness signature verifies", witnessOnly, log.origin, note.VerifierList(log.verifier, witness.verifier)},
		{"origin line is not the key name", evil, log.origin, log.verifiers()},
		{"tampered size", tampered, log.origin, log.verifiers()},
		{"malformed text, validly signed", badSize, log.origin, log.verifiers()},
		{"not a note", []byte(c.Text()), log.origin, log.verifiers()},
		{"trailing data", append(bytes.Clone(msg), "x"...), log.origin, log.verifiers()},
		{"trailing newline", append(bytes.Clone(msg), '\n'), log.origin, log.verifiers()},
	} {
		if c, _, err := OpenCheckpoint(tc.msg, tc.origin, tc.verifiers); err == nil {
			t.Errorf("%s: opened %+v", tc.name, c)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
}

func TestSignCheckpointRefuses(t *testing.T) {
	log := newTestLog(t, "example.com/log")
	root := sha256.Sum256(nil)
	for _, tc := range []struct {
		name   string
		c      Checkpoint
		signer note.Signer
	}{
		{"no signer", Checkpoint{Origin: log.origin, Root: root}, nil},
		{"signer named differently", Checkpoint{Origin: "example.com/other", Root: root}, log.signer},
		{"empty origin", Checkpoint{Origin: "", Root: root}, log.signer},
		{"newline in origin", Checkpoint{Origin: log.origin + "\n5", Root: root}, log.signer},
		{"negative size", Checkpoint{Origin: log.origin, Size: -1, Root: root}, log.signer},
		{"empty extension", Checkpoint{Origin: log.origin, Root: root, Extensions: []string{""}}, log.signer},
		{"newline in extension", Checkpoint{Origin: log.origin, Root: root, Extensions: []string{"a\n\nb"}}, log.signer},
	} {
		if msg, err := SignCheckpoint(tc.c, tc.signer); err == nil {
			t.Errorf("%s: signed %q", tc.name, msg)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	// Extension lines are signed and round-trip.
	c := Checkpoint{Origin: log.origin, Size: 3, Root: root, Extensions: []string{"ext"}}
	got, _, err := OpenCheckpoint(log.sign(t, c), log.origin, log.verifiers())
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Fatalf("extension checkpoint: %+v, %v", got, err)
	}
}

func TestVerifierKeyOf(t *testing.T) {
	skey, vkey, err := GenerateKey("example.com/log")
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifierKeyOf(skey)
	if err != nil || got != vkey {
		t.Fatalf("VerifierKeyOf = %q, %v; want the generated verifier key", got, err)
	}
	for _, bad := range []string{"", vkey, "PRIVATE+KEY+x+00000000+AQ==", strings.Replace(skey, "+", "+0", 3)} {
		if _, err := VerifierKeyOf(bad); err == nil || strings.Contains(err.Error(), bad[min(len(bad), 12):]) && bad != "" {
			t.Errorf("VerifierKeyOf(bad) = %v", err)
		}
	}
}
