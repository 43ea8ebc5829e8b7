package console

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/policy"
)

// Cookie names. The name is also the sealed value's associated data, so a
// login cookie can never pass for a session.
const (
	sessionCookie = "broker_console"
	loginCookie   = "broker_console_login"
)

// loginLifetime bounds the time between leaving for the provider and
// coming back to the callback.
const loginLifetime = 10 * time.Minute

// maxCookieBytes keeps a sealed cookie within what every browser stores.
const maxCookieBytes = 4000

// errTooLarge says a value does not fit in a cookie.
var errTooLarge = errors.New("sealed value is too large for a cookie")

// session is who is logged in: the server-side session (package session)
// and the id its cookie names.
type session struct {
	ID      string // random; the CSRF token is derived from it
	Issuer  string
	Subject string
	Email   string
	Groups  []string
}

// sessionCookieValue is what the session cookie holds: only the id, sealed,
// and the expiry, so an expired cookie is refused without a lookup. Who the
// session belongs to is kept on the server, where logout ends it.
type sessionCookieValue struct {
	ID      string `json:"id"`
	Expires int64  `json:"exp"` // unix seconds
}

// caller is the session's policy caller.
func (s *session) caller() policy.Caller {
	return policy.Caller{Subject: s.Subject, Groups: s.Groups}
}

// loginState is what the console remembers between sending the browser to the
// provider and its return to the callback.
type loginState struct {
	State    string `json:"state"`
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"` // PKCE code verifier
	Next     string `json:"next"`     // console path to return to
	Expires  int64  `json:"exp"`
}

// sealer encrypts and authenticates cookie values with AES-256-GCM.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("console: cookie cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("console: cookie cipher: %w", err)
	}
	return &sealer{aead: aead}, nil
}

// seal encodes v as JSON and seals it for the cookie called name.
func (s *sealer) seal(name string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %s cookie: %w", name, err)
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	rand.Read(nonce)
	out := base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(name)))
	if len(out) > maxCookieBytes {
		return "", fmt.Errorf("%s cookie: %w", name, errTooLarge)
	}
	return out, nil
}

// open authenticates and decrypts a value sealed for the cookie called name.
func (s *sealer) open(name, value string, v any) error {
	if len(value) > maxCookieBytes {
		return errTooLarge
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(value)
	if err != nil || len(b) < s.aead.NonceSize() {
		return errors.New("malformed cookie")
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, b[:n], b[n:], []byte(name))
	if err != nil {
		return errors.New("cookie failed authentication")
	}
	if err := json.Unmarshal(plain, v); err != nil {
		return fmt.Errorf("decode %s cookie: %w", name, err)
	}
	return nil
}

// randomString returns n random bytes as unpadded base64url.
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// cookie returns a console cookie: HttpOnly, SameSite=Lax, scoped to the
// console, Secure behind TLS. maxAge < 0 deletes it.
func (c *Console) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     c.base,
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   c.secure || r.TLS != nil,
		SameSite: http.SameSiteLaxMode,
	}
}

// readSession returns the request's session: its cookie must open and not
// have expired, and the session store must still hold it (logout or an
// admin ends it there). ok is false without a session; err is set when the
// store cannot answer, and the caller fails closed.
func (c *Console) readSession(r *http.Request) (s *session, ok bool, err error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, false, nil
	}
	var v sessionCookieValue
	if err := c.cookies.open(sessionCookie, ck.Value, &v); err != nil {
		c.log.DebugContext(r.Context(), "session cookie rejected", "error", err)
		return nil, false, nil
	}
	now := c.now()
	if v.ID == "" || now.Unix() >= v.Expires {
		return nil, false, nil
	}
	stored, err := c.sessions.Get(r.Context(), v.ID, now)
	if apperr.KindOf(err) == apperr.NotFound {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return &session{ID: v.ID, Issuer: stored.Issuer, Subject: stored.Subject, Email: stored.Email, Groups: stored.Groups}, true, nil
}

// csrfToken is the session's CSRF token: a MAC of its id, so it needs no
// storage and changes with every login.
func (c *Console) csrfToken(s *session) string {
	m := hmac.New(sha256.New, c.csrfKey)
	m.Write([]byte("csrf\x00" + s.ID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// validCSRF reports whether the form's csrf_token belongs to s.
func (c *Console) validCSRF(r *http.Request, s *session) bool {
	got := r.PostFormValue("csrf_token")
	return got != "" && hmac.Equal([]byte(got), []byte(c.csrfToken(s)))
}
