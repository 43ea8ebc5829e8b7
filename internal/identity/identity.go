// Package identity binds each caller (issuer, subject) to one Agora uid, and
// on request a second one for screen sharing, each allocated at random once
// and kept forever. It owns the identities table and never reuses or changes
// a uid. New uids are in 1…2³¹−1, so that clients holding a uid in a signed
// 32-bit integer (Kotlin Int, Java int, Swift Int32) can hold them; bindings
// made before stay as they are.
package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/broker-dev/broker/internal/apperr"
)

// Store hands out the uid bound to a caller.
type Store interface {
	// UID returns the caller's uid, allocating it on first use. Concurrent first
	// calls for one caller return the same uid.
	UID(ctx context.Context, issuer, subject, account string) (uint32, error)
}

// ScreenShareUID returns the caller's second uid, for screen sharing,
// allocating it on first use, from the same uid space as every first uid. It
// is stored as the binding of a pseudo-issuer, "screen-share:" + issuer,
// which no token can carry (issuers are http(s) URLs), so that the table and
// every release that reads it stay as they are.
func ScreenShareUID(ctx context.Context, s Store, issuer, subject string) (uint32, error) {
	return s.UID(ctx, "screen-share:"+issuer, subject, "")
}

// key identifies a caller.
type key struct{ issuer, subject string }

// maxNewUID is the largest uid allocated: 2³¹−1, the largest a signed 32-bit
// integer holds.
const maxNewUID = 1<<31 - 1

// randomUID returns a uniformly random uid in 1…2³¹−1.
func randomUID() uint32 {
	var b [4]byte
	for {
		_, _ = rand.Read(b[:])
		if u := binary.LittleEndian.Uint32(b[:]) & maxNewUID; u != 0 {
			return u
		}
	}
}

// maxAttempts bounds retries after a uid collision; with 2³¹ uids, even a
// billion bound users collide with probability ½ per attempt.
const maxAttempts = 16

// Memory is an in-memory Store for `broker dev` and tests.
type Memory struct {
	mu     sync.Mutex
	uids   map[key]uint32
	used   map[uint32]bool
	next   func() uint32 // uid source; randomUID unless a test sets it
	derive bool          // derive uids from (issuer, subject) instead (NewDerivedMemory)
}

// NewMemory returns an empty in-memory store that allocates uids at random.
func NewMemory() *Memory {
	return &Memory{uids: map[key]uint32{}, used: map[uint32]bool{}, next: randomUID}
}

// NewDerivedMemory returns an empty in-memory store whose uids are derived
// from (issuer, subject) instead of drawn at random, so that `broker dev`
// gives each demo user the same uid after every restart (on the same
// address). Only for development: a derived uid is guessable.
func NewDerivedMemory() *Memory {
	m := NewMemory()
	m.derive = true
	return m
}

// derivedUID is the attempt-th uid candidate for k: the first 4 bytes of
// SHA-256 over the issuer, the subject and the attempt.
func derivedUID(k key, attempt int) uint32 {
	h := sha256.New()
	fmt.Fprintf(h, "broker/dev-uid\x00%s\x00%s\x00%d", k.issuer, k.subject, attempt)
	return binary.BigEndian.Uint32(h.Sum(nil)) & maxNewUID
}

// UID implements Store.
func (m *Memory) UID(_ context.Context, issuer, subject, _ string) (uint32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := key{issuer, subject}
	if u, ok := m.uids[k]; ok {
		return u, nil
	}
	for attempt := range maxAttempts {
		u := m.next()
		if m.derive {
			u = derivedUID(k, attempt)
		}
		if u == 0 || m.used[u] {
			continue
		}
		m.uids[k], m.used[u] = u, true
		return u, nil
	}
	return 0, apperr.New(apperr.Internal, "could not allocate a free uid")
}

// Postgres is a Store over the identities table. Bound uids never change, so
// it keeps them in memory after the first lookup.
type Postgres struct {
	pool  *pgxpool.Pool
	cache sync.Map // key → uint32
	next  func() uint32
}

// NewPostgres returns a store over pool.
func NewPostgres(pool *pgxpool.Pool) *Postgres {
	return &Postgres{pool: pool, next: randomUID}
}

// UID implements Store. The insert races safely: ON CONFLICT DO NOTHING covers
// both a concurrent first request (same caller) and a uid collision (another
// caller); a re-read tells which.
func (p *Postgres) UID(ctx context.Context, issuer, subject, account string) (uint32, error) {
	k := key{issuer, subject}
	if u, ok := p.cache.Load(k); ok {
		return u.(uint32), nil
	}
	for range maxAttempts {
		u, found, err := p.lookup(ctx, k)
		if err != nil {
			return 0, err
		}
		if found {
			p.cache.Store(k, u)
			return u, nil
		}
		candidate := p.next()
		if candidate == 0 {
			continue
		}
		tag, err := p.pool.Exec(ctx,
			`INSERT INTO identities (issuer, subject, uid, account) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
			issuer, subject, int64(candidate), account)
		if err != nil {
			return 0, unavailable(err)
		}
		if tag.RowsAffected() == 1 {
			p.cache.Store(k, candidate)
			return candidate, nil
		}
		// Either this caller was bound concurrently (the next lookup finds it)
		// or candidate belongs to someone else (try another).
	}
	return 0, apperr.New(apperr.Internal, "could not allocate a free uid")
}

func (p *Postgres) lookup(ctx context.Context, k key) (uint32, bool, error) {
	var u int64
	err := p.pool.QueryRow(ctx, `SELECT uid FROM identities WHERE issuer = $1 AND subject = $2`, k.issuer, k.subject).Scan(&u)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, unavailable(err)
	}
	return uint32(u), true, nil
}

func unavailable(err error) error {
	return apperr.Wrap(apperr.Unavailable, fmt.Errorf("identities: %w", err), "the identity store is unavailable; retry later")
}
