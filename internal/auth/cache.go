package auth

import (
	"crypto/sha256"
	"slices"
	"sync"
	"time"
)

// maxCachedTokens bounds the verified-token cache by count; Config.CacheBytes
// bounds it by size (DefaultCacheBytes).
const maxCachedTokens = 10_000

// DefaultCacheBytes is the verified-token cache's default size bound.
const DefaultCacheBytes = 32 << 20

// evictionSample is how many entries an insert into a full cache looks at for
// an expired one before evicting an arbitrary entry.
const evictionSample = 8

// tokenKey is the SHA-256 of a raw token: the cache never holds token text.
type tokenKey [sha256.Size]byte

type cachedIdentity struct {
	id      Identity
	expires time.Time // the token's exp
	gen     uint64    // key set generation the token was verified under
}

// tokenCache remembers verified tokens until their exp, so a client reusing
// its token skips signature verification. Entries verified under an older key
// set never match, and the cache is emptied whenever the keys change.
type tokenCache struct {
	mu       sync.RWMutex
	entries  map[tokenKey]cachedIdentity
	max      int // entries
	maxBytes int // entrySize summed over the entries
	bytes    int
}

func newTokenCache(max, maxBytes int) *tokenCache {
	return &tokenCache{entries: make(map[tokenKey]cachedIdentity), max: max, maxBytes: maxBytes}
}

// entrySize estimates what an entry holds in memory: the map slot and the
// identity's strings (a token with 2,000 groups is ~40 KB, not ~100 bytes).
func entrySize(id Identity) int {
	n := 160 + len(id.Issuer) + len(id.Subject) + len(id.Qualifier) + len(id.Account) + len(id.AccountError) + len(id.Email) + len(id.GroupsError)
	for _, g := range id.Groups {
		n += 16 + len(g)
	}
	return n
}

func (c *tokenCache) get(k tokenKey, gen uint64, now time.Time) (Identity, bool) {
	c.mu.RLock()
	e, ok := c.entries[k]
	c.mu.RUnlock()
	if !ok || e.gen != gen || !now.Before(e.expires) {
		return Identity{}, false
	}
	id := e.id
	// Callers own their Identity; they must not be able to edit the cache.
	id.Groups = slices.Clone(id.Groups)
	return id, true
}

func (c *tokenCache) put(k tokenKey, id Identity, expires time.Time, gen uint64, now time.Time) {
	if !now.Before(expires) {
		return
	}
	size := entrySize(id)
	if size > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.entries[k]; ok {
		c.bytes -= entrySize(old.id)
		delete(c.entries, k)
	}
	for len(c.entries) > 0 && (len(c.entries) >= c.max || c.bytes+size > c.maxBytes) {
		c.evictLocked(now)
	}
	c.entries[k] = cachedIdentity{id: id, expires: expires, gen: gen}
	c.bytes += size
}

// evictLocked removes one entry: an expired or stale one among a few sampled,
// else the first sampled (map order is random, so this is random eviction).
func (c *tokenCache) evictLocked(now time.Time) {
	var victim tokenKey
	n := 0
	for k, e := range c.entries {
		if n == 0 {
			victim = k
		}
		if !now.Before(e.expires) {
			victim = k
			break
		}
		if n++; n == evictionSample {
			break
		}
	}
	c.bytes -= entrySize(c.entries[victim].id)
	delete(c.entries, victim)
}

// flush empties the cache.
func (c *tokenCache) flush() {
	c.mu.Lock()
	clear(c.entries)
	c.bytes = 0
	c.mu.Unlock()
}
