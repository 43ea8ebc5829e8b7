package tlog

// The client side of c2sp.org/tlog-witness (add-checkpoint) and the Ed25519
// cosignature/v1 verifier of c2sp.org/tlog-cosignature.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
	xtlog "golang.org/x/mod/sumdb/tlog"
)

// Witness is a client of one witness's add-checkpoint endpoint
// (c2sp.org/tlog-witness).
type Witness struct {
	// URL is the witness's submission prefix, e.g. https://witness.example;
	// requests go to URL + "/add-checkpoint".
	URL string
	// Verifier verifies the witness's cosignatures: NewCosignatureVerifier
	// of the witness's verifier key.
	Verifier note.Verifier
	// Client sends the requests; nil means http.DefaultClient.
	Client *http.Client
}

// witnessMaxProof is the most consistency proof lines a client may send
// (c2sp.org/tlog-witness, add-checkpoint).
const witnessMaxProof = 63

// witnessMaxResponse bounds the response bodies read from a witness: a few
// signature lines, or a size.
const witnessMaxResponse = 64 << 10

// The witness's refusals other than a conflict, matched with errors.Is on
// the *WitnessStatusError AddCheckpoint returns.
var (
	// ErrWitnessBadRequest is 400 Bad Request: a malformed request, or an
	// old size above the checkpoint's size.
	ErrWitnessBadRequest = errors.New("the witness rejected the request as malformed")
	// ErrWitnessForbidden is 403 Forbidden: the checkpoint carries no valid
	// signature from a key the witness trusts for its origin, or a signature
	// by such a key fails to verify. (litewitness v0.6 also answers 403 for
	// an origin it does not know.)
	ErrWitnessForbidden = errors.New("the witness does not trust the checkpoint's signatures")
	// ErrWitnessUnknownLog is 404 Not Found: the witness does not know the
	// checkpoint's origin.
	ErrWitnessUnknownLog = errors.New("the witness does not know the log")
	// ErrWitnessInconsistent is 422 Unprocessable Entity: the consistency
	// proof does not verify against the witness's latest checkpoint (or the
	// root differs at the same size, or a checkpoint of size 0 has a root
	// other than the empty tree's, or a proof came with old size 0).
	ErrWitnessInconsistent = errors.New("the witness found the checkpoint inconsistent with the one it cosigned last")
)

// WitnessStatusError is a witness's answer other than 200 and 409. It
// unwraps to ErrWitnessBadRequest, ErrWitnessForbidden, ErrWitnessUnknownLog
// or ErrWitnessInconsistent for 400, 403, 404 and 422. The response body is
// not kept: it comes from another party and may echo keys.
type WitnessStatusError struct {
	StatusCode int
}

func (e *WitnessStatusError) Error() string {
	msg := fmt.Sprintf("tlog: witness add-checkpoint: %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if err := e.Unwrap(); err != nil {
		msg += ": " + err.Error()
	}
	return msg
}

// Unwrap returns the ErrWitness… error of the status code, or nil.
func (e *WitnessStatusError) Unwrap() error {
	switch e.StatusCode {
	case http.StatusBadRequest:
		return ErrWitnessBadRequest
	case http.StatusForbidden:
		return ErrWitnessForbidden
	case http.StatusNotFound:
		return ErrWitnessUnknownLog
	case http.StatusUnprocessableEntity:
		return ErrWitnessInconsistent
	}
	return nil
}

// ConflictError is the witness's 409 Conflict: the old size did not match
// the size of the latest checkpoint it cosigned for the origin, which is
// Size. Retry with a consistency proof from Size.
type ConflictError struct {
	Size int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("tlog: witness add-checkpoint: 409 Conflict: the witness's latest cosigned checkpoint has size %d", e.Size)
}

// AddCheckpoint submits signedCheckpoint (a checkpoint note with the log's
// signature) to the witness with a consistency proof from oldSize, the size
// of the latest checkpoint the witness cosigned for the log (0, with no
// proof, when it has cosigned none). It returns the witness's cosignatures
// that verify against w.Verifier over the checkpoint, as note signature
// lines ("— <name> <base64>\n", each ending in a newline) ready to be
// appended to signedCheckpoint; it fails if there is none.
//
// A 409 answer is a *ConflictError carrying the witness's size; other
// refusals are *WitnessStatusError (see ErrWitnessInconsistent and its
// siblings).
func (w Witness) AddCheckpoint(ctx context.Context, oldSize int64, consistency []xtlog.Hash, signedCheckpoint []byte) (cosignatures []string, err error) {
	if w.Verifier == nil {
		return nil, errors.New("tlog: witness add-checkpoint: no verifier for the witness's cosignatures")
	}
	if w.URL == "" {
		return nil, errors.New("tlog: witness add-checkpoint: no witness URL")
	}
	if oldSize < 0 {
		return nil, fmt.Errorf("tlog: witness add-checkpoint: negative old size %d", oldSize)
	}
	if oldSize == 0 && len(consistency) > 0 {
		return nil, errors.New("tlog: witness add-checkpoint: a consistency proof from old size 0 must be empty")
	}
	if len(consistency) > witnessMaxProof {
		return nil, fmt.Errorf("tlog: witness add-checkpoint: %d consistency proof hashes, at most %d allowed", len(consistency), witnessMaxProof)
	}
	text, ok := witnessNoteText(signedCheckpoint)
	if !ok {
		return nil, errors.New("tlog: witness add-checkpoint: the checkpoint is not a signed note")
	}

	// c2sp.org/tlog-witness, add-checkpoint: "old <size>", one base64 hash
	// per line, an empty line, then the checkpoint; every line ends in \n.
	var body bytes.Buffer
	body.WriteString("old ")
	body.WriteString(strconv.FormatInt(oldSize, 10))
	body.WriteByte('\n')
	for _, h := range consistency {
		body.WriteString(base64.StdEncoding.EncodeToString(h[:]))
		body.WriteByte('\n')
	}
	body.WriteByte('\n')
	body.Write(signedCheckpoint)

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(w.URL, "/")+"/add-checkpoint", bytes.NewReader(body.Bytes()))
	if err != nil {
		return nil, fmt.Errorf("tlog: witness add-checkpoint: %w", err)
	}
	client := w.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("tlog: witness add-checkpoint: %w", err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, witnessMaxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("tlog: witness add-checkpoint: read the response: %w", err)
	}
	if len(respBody) > witnessMaxResponse {
		return nil, fmt.Errorf("tlog: witness add-checkpoint: response larger than %d bytes", witnessMaxResponse)
	}

	switch resp.StatusCode {
	case http.StatusOK:
		return w.cosignatures(text, respBody)
	case http.StatusConflict:
		size, ok := witnessParseSize(respBody)
		if !ok {
			return nil, errors.New("tlog: witness add-checkpoint: 409 Conflict without a tree size in the body")
		}
		return nil, &ConflictError{Size: size}
	default:
		return nil, &WitnessStatusError{StatusCode: resp.StatusCode}
	}
}

// cosignatures checks a 200 response: one or more note signature lines. It
// keeps those by w.Verifier's key that verify over the checkpoint text,
// ignores lines by other keys, and fails on a line by w.Verifier's key that
// does not verify, on a malformed line, or when no line is by w.Verifier's
// key.
func (w Witness) cosignatures(text, respBody []byte) ([]string, error) {
	if len(respBody) == 0 {
		return nil, errors.New("tlog: witness add-checkpoint: empty response")
	}
	// The response is a signature block for the checkpoint's text
	// (c2sp.org/tlog-witness: the client MAY concatenate it to the
	// checkpoint). Only the witness's lines are verified, against the
	// checkpoint text alone, so that the log's own signatures (or an older
	// cosignature already on the note) play no part.
	msg := make([]byte, 0, len(text)+1+len(respBody))
	msg = append(msg, text...)
	msg = append(msg, '\n')
	msg = append(msg, respBody...)
	n, err := note.Open(msg, note.VerifierList(w.Verifier))
	if err != nil {
		var invalid *note.InvalidSignatureError
		var unverified *note.UnverifiedNoteError
		switch {
		case errors.As(err, &invalid):
			return nil, fmt.Errorf("tlog: witness add-checkpoint: the cosignature by %s does not verify", w.Verifier.Name())
		case errors.As(err, &unverified):
			return nil, fmt.Errorf("tlog: witness add-checkpoint: the response has no cosignature by %s's key", w.Verifier.Name())
		default:
			return nil, errors.New("tlog: witness add-checkpoint: the response is not a list of note signature lines")
		}
	}
	_, timestamped := w.Verifier.(*CosignatureVerifier)
	out := make([]string, 0, len(n.Sigs))
	for _, s := range n.Sigs {
		if timestamped {
			// c2sp.org/tlog-witness: the cosignature MUST NOT omit the
			// timestamp. The signature verified, so it is
			// key ID || timestamp || Ed25519 signature.
			sig, err := base64.StdEncoding.DecodeString(s.Base64)
			if err != nil || len(sig) != 4+cosignatureV1Size || binary.BigEndian.Uint64(sig[4:12]) == 0 {
				return nil, fmt.Errorf("tlog: witness add-checkpoint: the cosignature by %s has no timestamp", s.Name)
			}
		}
		out = append(out, "— "+s.Name+" "+s.Base64+"\n")
	}
	return out, nil
}

// witnessNoteText returns the text of a signed note (up to and including the
// newline before the blank line that starts the signature block), or false
// if msg does not end in a non-empty, newline-terminated signature block.
func witnessNoteText(msg []byte) ([]byte, bool) {
	split := bytes.LastIndex(msg, []byte("\n\n"))
	if split < 0 {
		return nil, false
	}
	sigs := msg[split+2:]
	if len(sigs) == 0 || sigs[len(sigs)-1] != '\n' {
		return nil, false
	}
	return msg[:split+1], true
}

// witnessParseSize parses a 409 body: a decimal tree size and a newline
// (content type text/x.tlog.size).
func witnessParseSize(b []byte) (int64, bool) {
	s, ok := strings.CutSuffix(string(b), "\n")
	if !ok || s == "" || len(s) > 19 {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	size, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false
	}
	return size, true
}

// cosignatureV1Alg is the signature type byte of Ed25519 cosignature/v1 keys
// (c2sp.org/tlog-cosignature, Format).
const cosignatureV1Alg = 0x04

// cosignatureV1Size is the size of a cosignature/v1 timestamped_signature:
// a big-endian u64 timestamp and an Ed25519 signature.
const cosignatureV1Size = 8 + ed25519.SignatureSize

// CosignatureVerifier verifies Ed25519 cosignatures (cosignature/v1,
// c2sp.org/tlog-cosignature) as a note.Verifier: the signature is a
// timestamp and an Ed25519 signature over
// "cosignature/v1\ntime <timestamp>\n" followed by the note text.
type CosignatureVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

// NewCosignatureVerifier parses a witness's verifier key,
// <name>+<key ID in 8 hex digits>+<base64(0x04 || 32-byte Ed25519 public key)>,
// as litewitness prints it. The key ID must be
// SHA-256(<name> || "\n" || 0x04 || public key)[:4].
func NewCosignatureVerifier(vkey string) (*CosignatureVerifier, error) {
	// The errors never repeat the key.
	name, rest, ok1 := strings.Cut(vkey, "+")
	hash16, key64, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 || !cosignatureValidName(name) {
		return nil, errors.New("tlog: malformed cosignature verifier key: want <name>+<key ID>+<key>")
	}
	hash, err := strconv.ParseUint(hash16, 16, 32)
	if len(hash16) != 8 || err != nil {
		return nil, errors.New("tlog: malformed cosignature verifier key: the key ID is not 8 hex digits")
	}
	key, err := base64.StdEncoding.Strict().DecodeString(key64)
	if err != nil || len(key) == 0 {
		return nil, errors.New("tlog: malformed cosignature verifier key: the key is not base64")
	}
	if key[0] != cosignatureV1Alg {
		return nil, fmt.Errorf("tlog: cosignature verifier key of signature type 0x%02x, want 0x%02x (Ed25519 cosignature/v1)", key[0], cosignatureV1Alg)
	}
	if len(key) != 1+ed25519.PublicKeySize {
		return nil, fmt.Errorf("tlog: malformed cosignature verifier key: %d key bytes, want %d", len(key), 1+ed25519.PublicKeySize)
	}
	if uint32(hash) != cosignatureKeyID(name, key) {
		return nil, errors.New("tlog: cosignature verifier key: the key ID does not match the name and key")
	}
	return &CosignatureVerifier{name: name, hash: uint32(hash), key: ed25519.PublicKey(bytes.Clone(key[1:]))}, nil
}

// Name is the witness's name, the key name of its signature lines.
func (v *CosignatureVerifier) Name() string { return v.name }

// KeyHash is the key ID.
func (v *CosignatureVerifier) KeyHash() uint32 { return v.hash }

// Verify reports whether sig (timestamp || Ed25519 signature) is a
// cosignature/v1 over the note text msg.
func (v *CosignatureVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != cosignatureV1Size {
		return false
	}
	ts := binary.BigEndian.Uint64(sig[:8])
	if ts > math.MaxInt64 {
		return false
	}
	m := make([]byte, 0, 40+len(msg))
	m = append(m, "cosignature/v1\ntime "...)
	m = strconv.AppendUint(m, ts, 10)
	m = append(m, '\n')
	m = append(m, msg...)
	return ed25519.Verify(v.key, m, sig[8:])
}

// cosignatureKeyID is SHA-256(name || "\n" || key)[:4], key including its
// signature type byte (c2sp.org/signed-note, c2sp.org/tlog-cosignature).
func cosignatureKeyID(name string, key []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte("\n"))
	h.Write(key)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// cosignatureValidName reports whether name is a valid note key name:
// non-empty UTF-8 without spaces or '+' (c2sp.org/signed-note).
func cosignatureValidName(name string) bool {
	return name != "" && utf8.ValidString(name) && strings.IndexFunc(name, unicode.IsSpace) < 0 && !strings.Contains(name, "+")
}
