// Package tokenurl owns token URLs: capability URLs that stand in for a
// bearer token for clients that cannot send one (Agora's UI Kits), with the
// identity each was made for, its expiry and its revocation. Only a keyed
// hash of a secret is ever stored; Postgres and memory stores pass one suite.
package tokenurl

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"sync"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
)

// URL is one token URL, without its secret.
type URL struct {
	ID string `json:"id"` // "tu_" and 16 hex digits; public, names the URL in records
	// The identity the URL was made for, as it was at creation.
	Issuer       string   `json:"issuer"`
	Subject      string   `json:"subject"`
	Account      string   `json:"account"`
	AccountError string   `json:"accountError,omitempty"`
	Groups       []string `json:"groups"`
	UID          uint32   `json:"uidClaim,omitempty"` // the provider's uid claim, 0 when none
	// Downgrade answers a refused publisher request with a subscriber token
	// when the policy allows that.
	Downgrade bool `json:"downgradeToSubscriber"`
	// Project is the Agora project every request through the URL is for.
	Project   string     `json:"project"`
	CreatedAt time.Time  `json:"createdAt"`
	ExpiresAt time.Time  `json:"expiresAt"`
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
}

// Store keeps token URLs by their secret's keyed hash. Errors are
// *apperr.Error: NotFound for an unknown hash or id, Conflict for a
// duplicate, Unavailable when the store cannot answer.
type Store interface {
	// Create stores u under hash.
	Create(ctx context.Context, u URL, hash []byte) error
	// ByHash returns the URL stored under hash.
	ByHash(ctx context.Context, hash []byte) (URL, error)
	// List returns the URLs of (issuer, subject), or every URL when subject
	// is "", newest first.
	List(ctx context.Context, issuer, subject string) ([]URL, error)
	// Revoke marks the URL id revoked at at (once; a second revocation keeps
	// the first time) and returns it.
	Revoke(ctx context.Context, id string, at time.Time) (URL, error)
}

// SecretBytes is the size of a secret: 256 random bits.
const SecretBytes = 32

// cacheTTL bounds how long a replica answers from a URL it looked up: a
// revocation on another replica takes effect there within it (at once on the
// replica that revoked).
const cacheTTL = 2 * time.Second

// Service makes, resolves, lists and revokes token URLs over a Store.
type Service struct {
	store Store
	key   []byte
	now   func() time.Time

	mu    sync.Mutex
	cache map[string]cached // by hex hash
}

type cached struct {
	u  URL
	at time.Time
}

// New returns a Service over store whose secrets are hashed under a key
// derived from secret (the audit key: rotating it ends every token URL). A
// nil now means time.Now.
func New(store Store, secret []byte, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("broker/token-url/v1"))
	return &Service{store: store, key: m.Sum(nil), now: now, cache: map[string]cached{}}
}

func (s *Service) hash(secret string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(secret))
	return m.Sum(nil)
}

// Create makes a token URL for u's identity (ID and times are set here) that
// lives ttl, and returns it with its secret, the only time the secret exists
// outside the client.
func (s *Service) Create(ctx context.Context, u URL, ttl time.Duration) (URL, string, error) {
	var b [SecretBytes + 8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return URL{}, "", apperr.Wrap(apperr.Internal, err, "no randomness for a token URL")
	}
	secret := base64.RawURLEncoding.EncodeToString(b[:SecretBytes])
	now := s.now().UTC().Truncate(time.Microsecond)
	u.ID = "tu_" + hex.EncodeToString(b[SecretBytes:])
	u.CreatedAt, u.ExpiresAt, u.RevokedAt = now, now.Add(ttl), nil
	if u.Groups == nil {
		u.Groups = []string{}
	}
	if err := s.store.Create(ctx, u, s.hash(secret)); err != nil {
		return URL{}, "", err
	}
	return u, secret, nil
}

// Resolve returns the live token URL of secret. An unknown, expired or
// revoked one is Unauthorized with a message that says which (never the
// secret).
func (s *Service) Resolve(ctx context.Context, secret string) (URL, error) {
	if len(secret) != base64.RawURLEncoding.EncodedLen(SecretBytes) {
		return URL{}, apperr.New(apperr.Unauthorized, "this is not a token URL of this broker")
	}
	h := s.hash(secret)
	key := hex.EncodeToString(h)
	now := s.now()
	s.mu.Lock()
	c, ok := s.cache[key]
	s.mu.Unlock()
	if !ok || now.Sub(c.at) > cacheTTL {
		u, err := s.store.ByHash(ctx, h)
		if apperr.KindOf(err) == apperr.NotFound {
			return URL{}, apperr.New(apperr.Unauthorized, "this is not a token URL of this broker")
		}
		if err != nil {
			return URL{}, err
		}
		c = cached{u: u, at: now}
		s.mu.Lock()
		if len(s.cache) > 100_000 {
			clear(s.cache) // bounded: a flood of distinct URLs only costs lookups
		}
		s.cache[key] = c
		s.mu.Unlock()
	}
	switch u := c.u; {
	case u.RevokedAt != nil:
		return URL{}, apperr.New(apperr.Unauthorized, "token URL %s was revoked at %s; ask its owner for a new one", u.ID, u.RevokedAt.UTC().Format(time.RFC3339))
	case !now.Before(u.ExpiresAt):
		return URL{}, apperr.New(apperr.Unauthorized, "token URL %s expired at %s; ask its owner for a new one", u.ID, u.ExpiresAt.UTC().Format(time.RFC3339))
	default:
		return u, nil
	}
}

// List returns the token URLs of (issuer, subject), or every one when
// subject is "", newest first.
func (s *Service) List(ctx context.Context, issuer, subject string) ([]URL, error) {
	return s.store.List(ctx, issuer, subject)
}

// Revoke revokes the token URL id and forgets every cached lookup, so that
// it stops working on this replica at once.
func (s *Service) Revoke(ctx context.Context, id string) (URL, error) {
	u, err := s.store.Revoke(ctx, id, s.now().UTC().Truncate(time.Microsecond))
	if err != nil {
		return URL{}, err
	}
	s.mu.Lock()
	clear(s.cache)
	s.mu.Unlock()
	return u, nil
}

// Memory is an in-memory Store for `broker dev` and tests.
type Memory struct {
	mu     sync.Mutex
	byHash map[string]string // hex hash → id
	urls   map[string]URL    // by id
	order  []string          // ids in creation order
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{byHash: map[string]string{}, urls: map[string]URL{}}
}

// Create implements Store.
func (m *Memory) Create(_ context.Context, u URL, hash []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := hex.EncodeToString(hash)
	if _, dup := m.byHash[h]; dup {
		return apperr.New(apperr.Conflict, "a token URL with that secret exists")
	}
	if _, dup := m.urls[u.ID]; dup {
		return apperr.New(apperr.Conflict, "token URL %s exists", u.ID)
	}
	u.Groups = append([]string{}, u.Groups...)
	m.byHash[h], m.urls[u.ID] = u.ID, u
	m.order = append(m.order, u.ID)
	return nil
}

// ByHash implements Store.
func (m *Memory) ByHash(_ context.Context, hash []byte) (URL, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, ok := m.byHash[hex.EncodeToString(hash)]
	if !ok {
		return URL{}, apperr.New(apperr.NotFound, "no such token URL")
	}
	return m.urls[id], nil
}

// List implements Store.
func (m *Memory) List(_ context.Context, issuer, subject string) ([]URL, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []URL{}
	for i := len(m.order) - 1; i >= 0; i-- {
		u := m.urls[m.order[i]]
		if subject == "" || (u.Issuer == issuer && u.Subject == subject) {
			out = append(out, u)
		}
	}
	return out, nil
}

// Revoke implements Store.
func (m *Memory) Revoke(_ context.Context, id string, at time.Time) (URL, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.urls[id]
	if !ok {
		return URL{}, apperr.New(apperr.NotFound, "no token URL has id %q", id)
	}
	if u.RevokedAt == nil {
		u.RevokedAt = &at
		m.urls[id] = u
	}
	return u, nil
}
