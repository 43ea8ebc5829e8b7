// Package sessions owns the console's sessions on the server: created at
// login, found on every request, ended by logout, by expiry or by an admin
// signing a user out everywhere. Memory for `broker dev`, Postgres for serve.
package sessions

import (
	"context"
	"crypto/sha256"
	"slices"
	"sync"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
)

// Session is who logged in, as the verified ID token said at login.
type Session struct {
	Issuer, Subject, Email string
	Groups                 []string
	Created, Expires       time.Time
}

// Store keeps sessions by id. Only a hash of the id is stored, so a copy of
// the store does not hold a usable session. Every method fails with an
// apperr.Unavailable error when the store cannot answer: callers fail closed.
type Store interface {
	// Create stores s under id (a fresh random value) and drops sessions
	// that expired before s.Created.
	Create(ctx context.Context, id string, s Session) error
	// Get returns the session id names if it exists and has not expired at
	// now; otherwise an apperr.NotFound error.
	Get(ctx context.Context, id string, now time.Time) (Session, error)
	// Revoke ends the session id names; an unknown id is not an error.
	Revoke(ctx context.Context, id string) error
	// RevokeSubject ends every session of issuer's subject and says how many
	// it ended.
	RevokeSubject(ctx context.Context, issuer, subject string) (int, error)
}

// hash is what the stores keep instead of the id.
func hash(id string) []byte {
	h := sha256.Sum256([]byte("broker console session\x00" + id))
	return h[:]
}

var errNotFound = apperr.New(apperr.NotFound, "no such session")

// Bounds on what a session keeps (an ID token may carry anything up to the
// verifier's size limit).
const (
	maxIssuer  = 2048
	maxSubject = 512 // a qualified subject: issuer name, "/", sub
	maxEmail   = 320
	maxGroups  = 100
	maxGroup   = 512
)

// check refuses a session whose fields exceed the bounds, before it is stored.
func (s Session) check() error {
	switch {
	case len(s.Issuer) > maxIssuer:
		return apperr.Field("issuer", "must be at most %d bytes", maxIssuer)
	case len(s.Subject) > maxSubject:
		return apperr.Field("subject", "must be at most %d bytes", maxSubject)
	case len(s.Email) > maxEmail:
		return apperr.Field("email", "must be at most %d bytes", maxEmail)
	case len(s.Groups) > maxGroups:
		return apperr.Field("groups", "must be at most %d", maxGroups)
	}
	for _, g := range s.Groups {
		if len(g) > maxGroup {
			return apperr.Field("groups", "each must be at most %d bytes", maxGroup)
		}
	}
	return nil
}

// Memory is the Store for `broker dev`: sessions end with the process.
type Memory struct {
	mu       sync.Mutex
	sessions map[string]Session // by string(hash(id))
}

// NewMemory returns an empty store.
func NewMemory() *Memory { return &Memory{sessions: map[string]Session{}} }

// Create implements Store.
func (m *Memory) Create(_ context.Context, id string, s Session) error {
	if err := s.check(); err != nil {
		return err
	}
	s.Groups = slices.Clone(s.Groups)
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, old := range m.sessions {
		if !old.Expires.After(s.Created) {
			delete(m.sessions, k)
		}
	}
	m.sessions[string(hash(id))] = s
	return nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, id string, now time.Time) (Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[string(hash(id))]
	if !ok || !now.Before(s.Expires) {
		return Session{}, errNotFound
	}
	s.Groups = slices.Clone(s.Groups)
	return s, nil
}

// Revoke implements Store.
func (m *Memory) Revoke(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.sessions, string(hash(id)))
	return nil
}

// RevokeSubject implements Store.
func (m *Memory) RevokeSubject(_ context.Context, issuer, subject string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for k, s := range m.sessions {
		if s.Issuer == issuer && s.Subject == subject {
			delete(m.sessions, k)
			n++
		}
	}
	return n, nil
}
