package tlog

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
	xtlog "golang.org/x/mod/sumdb/tlog"
)

// GenerateKey returns a new Ed25519 note key pair named origin, the log's
// checkpoint origin line (c2sp.org/tlog-checkpoint: the log's key name
// SHOULD match the origin line; this package requires it). signerKey is
// "PRIVATE+KEY+<origin>+<hex key ID>+<base64 key>" and must be kept secret;
// verifierKey is "<origin>+<hex key ID>+<base64 key>" (c2sp.org/signed-note,
// "Verifier keys", signature type 0x01).
func GenerateKey(origin string) (signerKey, verifierKey string, err error) {
	if err := checkKeyName(origin); err != nil {
		return "", "", fmt.Errorf("tlog: generating a key: %w", err)
	}
	signerKey, verifierKey, err = note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return "", "", fmt.Errorf("tlog: generating a key for %q: %w", origin, err)
	}
	return signerKey, verifierKey, nil
}

// NewSigner returns the note signer for an encoded signer key as returned by
// GenerateKey. The error never contains the key text.
func NewSigner(skey string) (note.Signer, error) {
	s, err := note.NewSigner(skey)
	if err != nil {
		// x/mod's errors are constant strings (they say "verifier" for
		// signer keys too); name the key kind here and keep the cause.
		return nil, fmt.Errorf("tlog: invalid signer key (want PRIVATE+KEY+<name>+<hash>+<Ed25519 seed>): %w", err)
	}
	return s, nil
}

// VerifierKeyOf returns the verifier key of an Ed25519 signer key (as
// GenerateKey returns both), so that a log configured with its signer key
// can publish its verifier key. The error never contains the key text.
func VerifierKeyOf(skey string) (string, error) {
	bad := errors.New("tlog: invalid signer key (want PRIVATE+KEY+<name>+<hash>+<Ed25519 seed>)")
	rest, ok := strings.CutPrefix(skey, "PRIVATE+KEY+")
	if !ok {
		return "", bad
	}
	parts := strings.SplitN(rest, "+", 3) // the key's base64 may hold '+'
	if len(parts) != 3 {
		return "", bad
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", bad
	}
	vkey, err := note.NewEd25519VerifierKey(parts[0], ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey))
	if err != nil || !strings.HasPrefix(vkey, parts[0]+"+"+parts[1]+"+") {
		return "", bad
	}
	return vkey, nil
}

// NewVerifier returns the note verifier for an encoded verifier key as
// returned by GenerateKey. The error never contains the key text.
func NewVerifier(vkey string) (note.Verifier, error) {
	if strings.HasPrefix(vkey, "PRIVATE+KEY+") {
		return nil, errors.New("tlog: invalid verifier key: got a signer (private) key")
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("tlog: invalid verifier key (want <name>+<hash>+<Ed25519 public key>): %w", err)
	}
	return v, nil
}

// checkKeyName reports whether name is a valid note key name
// (c2sp.org/signed-note: non-empty, no Unicode spaces, no plus) that is also
// a valid checkpoint origin line.
func checkKeyName(name string) error {
	if err := checkLine("origin", name); err != nil {
		return err
	}
	if strings.IndexFunc(name, unicode.IsSpace) >= 0 || strings.Contains(name, "+") {
		return fmt.Errorf("origin %q cannot be a key name: it contains a space or a plus", name)
	}
	return nil
}

// checkLine checks that s can be one line of a note text: non-empty, valid
// UTF-8 and without ASCII control characters (which includes newline).
func checkLine(what, s string) error {
	if s == "" {
		return fmt.Errorf("empty %s", what)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return r < 0x20 }); i >= 0 {
		return fmt.Errorf("%s contains control character %U", what, s[i])
	}
	return nil
}

// A Checkpoint is the note text of a c2sp.org/tlog-checkpoint: the log's
// origin, the tree size and the RFC 6962 root hash at that size, then
// optional extension lines (opaque, non-empty; the spec does not recommend
// them, and this log does not write any).
type Checkpoint struct {
	Origin     string
	Size       int64
	Root       xtlog.Hash
	Extensions []string // nil when there are none
}

// Text returns the checkpoint's note text: the origin line, the size in
// decimal, the base64 root hash, then the extension lines, each line ending
// in a newline.
func (c Checkpoint) Text() string {
	var b strings.Builder
	b.WriteString(c.Origin)
	b.WriteByte('\n')
	b.WriteString(strconv.FormatInt(c.Size, 10))
	b.WriteByte('\n')
	b.WriteString(base64.StdEncoding.EncodeToString(c.Root[:]))
	b.WriteByte('\n')
	for _, e := range c.Extensions {
		b.WriteString(e)
		b.WriteByte('\n')
	}
	return b.String()
}

// check reports whether c has a text that ParseCheckpoint reads back as c.
func (c Checkpoint) check() error {
	if err := checkLine("origin", c.Origin); err != nil {
		return err
	}
	if c.Size < 0 {
		return fmt.Errorf("negative tree size %d", c.Size)
	}
	for i, e := range c.Extensions {
		if err := checkLine(fmt.Sprintf("extension line %d", i+1), e); err != nil {
			return err
		}
	}
	return nil
}

// ParseCheckpoint parses a checkpoint note text (c2sp.org/tlog-checkpoint,
// "Note text"): at least three non-empty lines, each ending in a newline;
// the origin; the tree size in ASCII decimal without leading zeroes; the
// standard base64 of the 32-byte root hash; then non-empty extension lines.
// Only the canonical encoding is accepted, so ParseCheckpoint(c.Text())
// returns c. It does not verify anything: see OpenCheckpoint.
func ParseCheckpoint(text string) (Checkpoint, error) {
	c, err := parseCheckpoint(text)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("tlog: malformed checkpoint: %w", err)
	}
	return c, nil
}

func parseCheckpoint(text string) (Checkpoint, error) {
	if !strings.HasSuffix(text, "\n") {
		return Checkpoint{}, errors.New("text does not end in a newline")
	}
	if !utf8.ValidString(text) {
		return Checkpoint{}, errors.New("text is not valid UTF-8")
	}
	if i := strings.IndexFunc(text, func(r rune) bool { return r < 0x20 && r != '\n' }); i >= 0 {
		return Checkpoint{}, fmt.Errorf("text contains control character %U", text[i])
	}
	lines := strings.Split(text[:len(text)-1], "\n")
	if len(lines) < 3 {
		return Checkpoint{}, fmt.Errorf("%d lines, want at least 3 (origin, tree size, root hash)", len(lines))
	}
	for i, l := range lines {
		if l == "" {
			return Checkpoint{}, fmt.Errorf("line %d is empty", i+1)
		}
	}
	size, err := parseDecimal(lines[1])
	if err != nil {
		return Checkpoint{}, fmt.Errorf("tree size: %w", err)
	}
	root, err := parseHash(lines[2])
	if err != nil {
		return Checkpoint{}, fmt.Errorf("root hash: %w", err)
	}
	c := Checkpoint{Origin: lines[0], Size: size, Root: root}
	if len(lines) > 3 {
		c.Extensions = lines[3:]
	}
	return c, nil
}

// SignCheckpoint signs c's text with signer, the log's key, and returns the
// signed note (c2sp.org/signed-note, "Format"). The signer's key name must
// be c's origin, as OpenCheckpoint requires.
func SignCheckpoint(c Checkpoint, signer note.Signer) ([]byte, error) {
	if signer == nil {
		return nil, errors.New("tlog: cannot sign checkpoint: no signer")
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("tlog: cannot sign checkpoint: %w", err)
	}
	if signer.Name() != c.Origin {
		return nil, fmt.Errorf("tlog: cannot sign checkpoint: signer key name %q is not the origin %q", signer.Name(), c.Origin)
	}
	msg, err := note.Sign(&note.Note{Text: c.Text()}, signer)
	if err != nil {
		return nil, fmt.Errorf("tlog: signing checkpoint %s@%d: %w", c.Origin, c.Size, err)
	}
	return msg, nil
}

// OpenCheckpoint verifies the signed checkpoint note msg and parses its text.
// verifiers must include the log's key, named origin; the note must carry a
// valid signature by a known key with that name, and its origin line must
// be origin. Signatures by unknown keys (for example witness cosignatures
// the caller did not configure) are ignored and listed in the returned
// note's UnverifiedSigs; a signature by a known key that does not verify is
// an error (c2sp.org/signed-note, "Signatures"). Signatures by other known
// keys, such as configured witnesses, are verified and listed in Sigs.
func OpenCheckpoint(msg []byte, origin string, verifiers note.Verifiers) (Checkpoint, *note.Note, error) {
	n, err := note.Open(msg, verifiers)
	if err != nil {
		var unverified *note.UnverifiedNoteError
		if errors.As(err, &unverified) {
			return Checkpoint{}, nil, fmt.Errorf("tlog: checkpoint is not signed by any known key (want the log key %q): %w", origin, err)
		}
		return Checkpoint{}, nil, fmt.Errorf("tlog: opening checkpoint: %w", err)
	}
	byLog := false
	for _, s := range n.Sigs {
		if s.Name == origin {
			byLog = true
			break
		}
	}
	if !byLog {
		return Checkpoint{}, nil, fmt.Errorf("tlog: checkpoint has no verified signature by the log key %q", origin)
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return Checkpoint{}, nil, err
	}
	if c.Origin != origin {
		return Checkpoint{}, nil, fmt.Errorf("tlog: checkpoint origin is %q, want %q", c.Origin, origin)
	}
	return c, n, nil
}

// parseDecimal parses a non-negative int64 written in ASCII decimal with no
// sign and no leading zeroes (unless it is 0).
func parseDecimal(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty number")
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%q has a leading zero", s)
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", s)
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, fmt.Errorf("%q is out of range", s)
		}
		n = n*10 + d
	}
	return n, nil
}

// parseHash decodes the canonical standard base64 encoding of a SHA-256 hash.
func parseHash(s string) (xtlog.Hash, error) {
	var h xtlog.Hash
	b, err := decodeBase64(s)
	if err != nil {
		return h, err
	}
	if len(b) != len(h) {
		return h, fmt.Errorf("hash has %d bytes, want %d", len(b), len(h))
	}
	copy(h[:], b)
	return h, nil
}

// decodeBase64 decodes standard base64 (RFC 4648, Section 4), accepting only
// the canonical encoding: padded, with zero padding bits, and without the
// carriage returns and newlines encoding/base64 otherwise skips.
func decodeBase64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || base64.StdEncoding.EncodeToString(b) != s {
		return nil, errors.New("malformed base64")
	}
	return b, nil
}
