// Package devidp owns the development OpenID Connect issuer behind `broker dev`:
// demo users, an in-memory signing key, discovery, JWKS and a token endpoint.
// It must never face a network (it refuses non-loopback issuer URLs and peers)
// nor persist its key; demo passwords are public by design.
package devidp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/broker-dev/broker/internal/apperr"
)

// DefaultTTL is the ID token lifetime when Options.TTL is zero.
const DefaultTTL = time.Hour

// MaxTTL bounds Options.TTL: a development token has no reason to outlive a day.
const MaxTTL = 24 * time.Hour

// signingAlg is the only algorithm the issuer signs with; both go-oidc and the
// broker's default allow-list accept it.
const signingAlg = jose.ES256

// User is a demo account. Subject is both the sub claim and the username the
// token endpoint accepts; Password is compared as given (it is public anyway).
type User struct {
	Subject  string
	Name     string
	Email    string
	Groups   []string
	Password string
}

// Options configures an Issuer. Issuer and Audience are required.
type Options struct {
	// Issuer is the issuer URL, e.g. http://127.0.0.1:8080/dev/oidc. Its host
	// must be loopback (127.0.0.0/8, ::1 or localhost). Tokens carry it
	// verbatim as iss; endpoints live under it.
	Issuer string
	// Audience is the client id put in aud, e.g. "broker-dev".
	Audience string
	// Users are the accounts that may get tokens (default DemoUsers()).
	Users []User
	// TTL is the ID token lifetime (default DefaultTTL, at most MaxTTL).
	TTL time.Duration
	// Now returns the time stamped into tokens (default time.Now).
	Now func() time.Time
	// Logger receives signing failures, never a token or password
	// (default slog.Default()).
	Logger *slog.Logger
}

// Issuer is a development OpenID provider with one freshly generated ES256
// key. It is safe for concurrent use.
type Issuer struct {
	issuer   string
	base     string // issuer without a trailing slash; endpoints hang off it
	audience string
	ttl      time.Duration
	now      func() time.Time
	log      *slog.Logger
	users    map[string]User
	names    []string // subjects in Options order, for messages
	signer   jose.Signer

	discovery []byte
	jwks      []byte

	mu    sync.Mutex
	codes map[string]pendingCode // authorization codes not yet redeemed
}

// New validates opts, generates a signing key that lives only in memory and
// returns the issuer. Errors are apperr Invalid errors naming the bad option.
func New(opts Options) (*Issuer, error) {
	if err := checkIssuerURL(opts.Issuer); err != nil {
		return nil, err
	}
	if strings.TrimSpace(opts.Audience) == "" {
		return nil, apperr.Field("Audience", "is required (the client id put in aud)")
	}
	ttl := opts.TTL
	switch {
	case ttl == 0:
		ttl = DefaultTTL
	case ttl < 0 || ttl > MaxTTL:
		return nil, apperr.Field("TTL", "must be between 0 (default %s) and %s, got %s", DefaultTTL, MaxTTL, ttl)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	users := opts.Users
	if len(users) == 0 {
		users = DemoUsers()
	}
	iss := &Issuer{
		issuer:   opts.Issuer,
		base:     strings.TrimSuffix(opts.Issuer, "/"),
		audience: opts.Audience,
		ttl:      ttl,
		now:      now,
		log:      log,
		users:    make(map[string]User, len(users)),
		codes:    map[string]pendingCode{},
	}
	for n, u := range users {
		if err := checkUser(n, u); err != nil {
			return nil, err
		}
		if _, dup := iss.users[u.Subject]; dup {
			return nil, apperr.Field(fmt.Sprintf("Users[%d].Subject", n), "%q appears twice", u.Subject)
		}
		u.Groups = append([]string{}, u.Groups...) // never nil: tokens always carry a groups array
		iss.users[u.Subject] = u
		iss.names = append(iss.names, u.Subject)
	}
	if err := iss.generateKey(); err != nil {
		return nil, err
	}
	return iss, nil
}

// DemoUsers returns the built-in demo accounts; each password is "dev-" plus
// the subject:
//
//	alice  groups broker-admins, developers
//	bob    groups developers
//	carol  no groups
func DemoUsers() []User {
	return []User{
		{Subject: "alice", Name: "Alice (demo)", Email: "alice@example.com", Groups: []string{"broker-admins", "developers"}, Password: "dev-alice"},
		{Subject: "bob", Name: "Bob (demo)", Email: "bob@example.com", Groups: []string{"developers"}, Password: "dev-bob"},
		{Subject: "carol", Name: "Carol (demo)", Email: "carol@example.com", Groups: []string{}, Password: "dev-carol"},
	}
}

// IssuerURL returns the issuer URL exactly as tokens carry it in iss.
func (i *Issuer) IssuerURL() string { return i.issuer }

// TokenEndpoint returns the token endpoint URL. GET TokenEndpoint()+"?user=alice"
// answers alice's ID token as plain text.
func (i *Issuer) TokenEndpoint() string { return i.base + "/token" }

// IDToken signs a fresh ID token for the user whose Subject is subject,
// without a password: for callers in the same process (e.g. `broker dev`
// printing a token). Unknown subjects are a NotFound error.
func (i *Issuer) IDToken(subject string) (string, error) {
	u, ok := i.users[subject]
	if !ok {
		return "", apperr.New(apperr.NotFound, "no demo user %q (known: %s)", clipName(subject), strings.Join(i.names, ", "))
	}
	return i.sign(u)
}

// idClaims is the payload of every token the issuer signs.
type idClaims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  string   `json:"aud"`
	Expiry    int64    `json:"exp"`
	IssuedAt  int64    `json:"iat"`
	NotBefore int64    `json:"nbf"`
	Email     string   `json:"email,omitempty"`
	Name      string   `json:"name,omitempty"`
	Groups    []string `json:"groups"`
	Nonce     string   `json:"nonce,omitempty"`
}

func (i *Issuer) sign(u User) (string, error) { return i.signNonce(u, "") }

// signNonce signs u's ID token; a login (code flow) carries its nonce.
func (i *Issuer) signNonce(u User, nonce string) (string, error) {
	now := i.now()
	payload, err := json.Marshal(idClaims{
		Issuer:    i.issuer,
		Subject:   u.Subject,
		Audience:  i.audience,
		Expiry:    now.Add(i.ttl).Unix(),
		IssuedAt:  now.Unix(),
		NotBefore: now.Unix(),
		Email:     u.Email,
		Name:      u.Name,
		Groups:    u.Groups,
		Nonce:     nonce,
	})
	if err != nil {
		return "", fmt.Errorf("devidp: encode claims for %q: %w", u.Subject, err)
	}
	jws, err := i.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("devidp: sign token for %q: %w", u.Subject, err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("devidp: serialize token for %q: %w", u.Subject, err)
	}
	return tok, nil
}

// authenticate returns the user whose subject and password match. Passwords
// are compared by digest so the comparison time says nothing about length.
func (i *Issuer) authenticate(subject, password string) (User, bool) {
	u, ok := i.users[subject]
	want := sha256.Sum256([]byte(u.Password))
	got := sha256.Sum256([]byte(password))
	return u, ok && subtle.ConstantTimeCompare(want[:], got[:]) == 1
}

// generateKey creates the signing key and the documents that publish it.
func (i *Issuer) generateKey() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("devidp: generate signing key: %w", err)
	}
	kidBytes := make([]byte, 12)
	if _, err := rand.Read(kidBytes); err != nil {
		return fmt.Errorf("devidp: generate key id: %w", err)
	}
	kid := base64.RawURLEncoding.EncodeToString(kidBytes)
	i.signer, err = jose.NewSigner(
		jose.SigningKey{Algorithm: signingAlg, Key: jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: string(signingAlg)}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return fmt.Errorf("devidp: create signer: %w", err)
	}
	i.jwks, err = json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &key.PublicKey, KeyID: kid, Algorithm: string(signingAlg), Use: "sig"},
	}})
	if err != nil {
		return fmt.Errorf("devidp: encode key set: %w", err)
	}
	i.discovery, err = json.Marshal(map[string]any{
		"issuer":                                i.issuer,
		"jwks_uri":                              i.base + "/keys",
		"token_endpoint":                        i.TokenEndpoint(),
		"authorization_endpoint":                i.base + "/auth",
		"id_token_signing_alg_values_supported": []string{string(signingAlg)},
		"response_types_supported":              []string{"code"},
		"code_challenge_methods_supported":      []string{"S256"},
		"subject_types_supported":               []string{"public"},
		"grant_types_supported":                 []string{"password", "authorization_code"},
		"token_endpoint_auth_methods_supported": []string{"none"},
		"claims_supported":                      []string{"iss", "sub", "aud", "exp", "iat", "nbf", "email", "name", "groups"},
	})
	if err != nil {
		return fmt.Errorf("devidp: encode discovery document: %w", err)
	}
	return nil
}

// checkIssuerURL accepts only an absolute http(s) URL on a loopback host with
// no credentials, query or fragment.
func checkIssuerURL(raw string) error {
	if raw == "" {
		return apperr.Field("Issuer", "is required (e.g. http://127.0.0.1:8080/dev/oidc)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return &apperr.Error{Kind: apperr.Invalid, Field: "Issuer", Message: "is not a valid URL", Cause: err}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return apperr.Field("Issuer", "must be an http or https URL, got scheme %q", u.Scheme)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return apperr.Field("Issuer", "must not carry credentials, a query or a fragment")
	}
	if !IsLoopbackHost(u.Hostname()) {
		return apperr.Field("Issuer", "host %q is not loopback (127.0.0.0/8, ::1 or localhost): the development issuer must never face a network", u.Hostname())
	}
	return nil
}

// IsLoopbackHost reports whether host (a name or IP literal, without port or
// brackets) is "localhost" or a loopback address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkUser(n int, u User) error {
	field := func(name string) string { return fmt.Sprintf("Users[%d].%s", n, name) }
	if u.Subject == "" || strings.TrimSpace(u.Subject) != u.Subject {
		return apperr.Field(field("Subject"), "must be non-empty without surrounding spaces")
	}
	if u.Password == "" {
		return apperr.Field(field("Password"), "is required")
	}
	for _, g := range u.Groups {
		if strings.TrimSpace(g) == "" {
			return apperr.Field(field("Groups"), "must not contain an empty group name")
		}
	}
	return nil
}

// clipName bounds a caller-supplied name before it goes into a message.
func clipName(s string) string {
	const limit = 64
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
