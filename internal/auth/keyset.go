package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	// unknownKeyRefetchInterval is the least time between two key set fetches
	// triggered by tokens naming an unknown kid, so random kids cannot make
	// the broker hammer the provider.
	unknownKeyRefetchInterval = 10 * time.Second
	// minKeyRefresh and maxKeyRefresh bound how far a provider's Cache-Control
	// max-age may move the refresh interval.
	minKeyRefresh = 30 * time.Second
	maxKeyRefresh = 15 * time.Minute
	// fetchTimeout bounds one discovery or key set request.
	fetchTimeout = 10 * time.Second
	// maxDocumentBytes bounds a discovery document or key set.
	maxDocumentBytes = 1 << 20
	// minRSABits is the smallest RSA key accepted from a key set.
	minRSABits = 2048
)

var (
	errUnknownKey   = errors.New("no key in the provider's key set matches the token's kid")
	errBadSignature = errors.New("signature does not verify with the provider's key")
	errRateLimited  = errors.New("key set was fetched less than 10s ago")
)

// keySet is an oidc.KeySet that keeps the provider's signing keys fresh: it
// refetches them on a schedule (so removed keys stop verifying), refetches at
// most once per unknownKeyRefetchInterval for unknown kids, shares one fetch
// among concurrent callers, and keeps the last good keys while the provider is
// unreachable. It remembers whether its latest fetch failed, so an unknown kid
// can be told apart from a key it could not fetch (see lookup).
type keySet struct {
	url     string
	client  *http.Client
	algs    []jose.SignatureAlgorithm
	log     *slog.Logger
	metrics *metrics
	// baseCtx scopes fetches to the verifier's lifetime rather than to the
	// request that happened to trigger them.
	baseCtx context.Context
	// onChange runs after a fetch that changed the keys.
	onChange func()

	mu          sync.RWMutex
	keys        []jose.JSONWebKey
	fingerprint string
	// fetchErr is why the latest completed fetch failed, nil once one
	// succeeds; for logs only (it names the key set URL, never a token).
	fetchErr error
	gen      atomic.Uint64 // bumped whenever keys change

	fetchMu     sync.Mutex
	inflight    *fetchCall
	lastAttempt time.Time
}

type fetchCall struct {
	done   chan struct{}
	maxAge time.Duration
	err    error
}

// generation identifies the current keys; it changes whenever they change.
func (k *keySet) generation() uint64 { return k.gen.Load() }

// lookup reports whether a key with this kid is in the set and, read together
// with it, why the latest fetch failed (nil if it succeeded). An unknown kid
// with a nil fetchErr is one the provider does not publish; with a non-nil
// fetchErr the provider may have rotated it in while it could not be reached.
func (k *keySet) lookup(kid string) (known bool, fetchErr error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	known = slices.ContainsFunc(k.keys, func(key jose.JSONWebKey) bool { return kid == "" || key.KeyID == kid })
	return known, k.fetchErr
}

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(jwt, k.algs)
	if err != nil {
		return nil, fmt.Errorf("parse jws: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("jws has %d signatures, want 1", len(jws.Signatures))
	}
	hdr := jws.Signatures[0].Header
	payload, err := k.verify(jws, hdr.KeyID, hdr.Algorithm)
	if !errors.Is(err, errUnknownKey) {
		return payload, err
	}
	// The provider may have rotated in a new key since the last fetch. When
	// the refetch fails (or is rate-limited after a failed one), fetchErr
	// records it and the verifier answers "unavailable", not "unknown key".
	if ferr := k.refresh(ctx, true); ferr != nil {
		return nil, fmt.Errorf("%w (refetch: %v)", err, ferr)
	}
	return k.verify(jws, hdr.KeyID, hdr.Algorithm)
}

func (k *keySet) verify(jws *jose.JSONWebSignature, kid, alg string) ([]byte, error) {
	k.mu.RLock()
	keys := k.keys
	k.mu.RUnlock()
	found := false
	for _, key := range keys {
		if kid != "" && key.KeyID != kid {
			continue
		}
		found = true
		if key.Algorithm != "" && key.Algorithm != alg {
			continue
		}
		if payload, err := jws.Verify(key.Key); err == nil {
			return payload, nil
		}
	}
	if !found {
		return nil, errUnknownKey
	}
	return nil, errBadSignature
}

// refresh fetches the key set, joining a fetch already in flight. With
// limited set, it does nothing (errRateLimited) if the last attempt was
// less than unknownKeyRefetchInterval ago.
func (k *keySet) refresh(ctx context.Context, limited bool) error {
	_, err := k.refreshMaxAge(ctx, limited)
	return err
}

func (k *keySet) refreshMaxAge(ctx context.Context, limited bool) (time.Duration, error) {
	k.fetchMu.Lock()
	if c := k.inflight; c != nil {
		k.fetchMu.Unlock()
		select {
		case <-c.done:
			return c.maxAge, c.err
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if limited && time.Since(k.lastAttempt) < unknownKeyRefetchInterval {
		k.fetchMu.Unlock()
		return 0, errRateLimited
	}
	c := &fetchCall{done: make(chan struct{})}
	k.inflight = c
	k.lastAttempt = time.Now()
	k.fetchMu.Unlock()

	c.maxAge, c.err = k.fetch()

	k.fetchMu.Lock()
	k.inflight = nil
	k.fetchMu.Unlock()
	close(c.done)
	return c.maxAge, c.err
}

// fetch downloads and installs the key set; on any failure the current keys
// stay in place and fetchErr records the failure until a fetch succeeds.
func (k *keySet) fetch() (time.Duration, error) {
	ctx, cancel := context.WithTimeout(k.baseCtx, fetchTimeout)
	defer cancel()
	keys, maxAge, err := k.download(ctx)
	if err != nil {
		k.metrics.refreshes.WithLabelValues("error").Inc()
		err = fmt.Errorf("fetch key set %s: %w", k.url, err)
		k.mu.Lock()
		k.fetchErr = err
		k.mu.Unlock()
		return 0, err
	}
	k.metrics.refreshes.WithLabelValues("ok").Inc()
	fp := fingerprint(keys)
	k.mu.Lock()
	k.fetchErr = nil
	changed := fp != k.fingerprint
	if changed {
		k.keys, k.fingerprint = keys, fp
		k.gen.Add(1)
	}
	k.mu.Unlock()
	if changed {
		k.log.Info("OIDC signing keys updated", "jwks_uri", k.url, "keys", len(keys))
		if k.onChange != nil {
			k.onChange()
		}
	}
	return maxAge, nil
}

func (k *keySet) download(ctx context.Context) ([]jose.JSONWebKey, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("unexpected status %s", resp.Status)
	}
	if len(body) > maxDocumentBytes {
		return nil, 0, fmt.Errorf("key set is larger than %d bytes", maxDocumentBytes)
	}
	keys, err := k.parseKeys(body)
	if err != nil {
		return nil, 0, err
	}
	return keys, maxAge(resp.Header.Get("Cache-Control")), nil
}

// parseKeys keeps the usable public signing keys and skips the rest, so one
// key of an unknown type does not make the whole set unusable.
func (k *keySet) parseKeys(body []byte) ([]jose.JSONWebKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decode key set: %w", err)
	}
	var keys []jose.JSONWebKey
	for i, raw := range doc.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(raw); err != nil {
			k.log.Debug("skipping unparseable key", "jwks_uri", k.url, "index", i, "error", err)
			continue
		}
		if reason := unusable(key); reason != "" {
			k.log.Debug("skipping key", "jwks_uri", k.url, "kid", key.KeyID, "reason", reason)
			continue
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, errors.New("key set has no usable signing keys")
	}
	return keys, nil
}

func unusable(key jose.JSONWebKey) string {
	if key.Use != "" && key.Use != "sig" {
		return "use is " + key.Use
	}
	switch pub := key.Key.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return "RSA key shorter than 2048 bits"
		}
	case *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		// Symmetric and private keys never belong in a public key set.
		return fmt.Sprintf("not a public signing key (%T)", key.Key)
	}
	return ""
}

// fingerprint identifies a key set independent of order.
func fingerprint(keys []jose.JSONWebKey) string {
	parts := make([]string, 0, len(keys))
	for _, key := range keys {
		tp, err := key.Thumbprint(crypto.SHA256)
		if err != nil {
			tp = nil
		}
		parts = append(parts, key.KeyID+"/"+key.Algorithm+"/"+hex.EncodeToString(tp))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// maxAge returns the max-age directive of a Cache-Control header, or 0.
func maxAge(cacheControl string) time.Duration {
	for _, d := range strings.Split(cacheControl, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(d), "=")
		if !ok || !strings.EqualFold(name, "max-age") {
			continue
		}
		if n, err := strconv.ParseInt(strings.Trim(value, `"`), 10, 64); err == nil && n > 0 {
			return time.Duration(min(n, int64(24*time.Hour/time.Second))) * time.Second
		}
	}
	return 0
}

// nextRefresh is the wait before the next scheduled fetch: the configured
// interval, or the provider's max-age bounded to [minKeyRefresh, maxKeyRefresh].
func nextRefresh(interval, maxAge time.Duration) time.Duration {
	if maxAge <= 0 {
		return interval
	}
	return min(max(maxAge, min(minKeyRefresh, interval)), max(maxKeyRefresh, interval))
}

// run refreshes the keys until ctx ends; failures are retried with backoff
// while the cached keys keep verifying.
func (k *keySet) run(ctx context.Context, interval, firstMaxAge time.Duration) {
	wait := nextRefresh(interval, firstMaxAge)
	retry := min(time.Second, interval)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		age, err := k.refreshMaxAge(ctx, false)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			k.log.Warn("OIDC key refresh failed; still verifying with cached keys", "error", err, "retry_in", retry)
			timer.Reset(retry)
			retry = min(retry*2, interval)
			continue
		}
		retry = min(time.Second, interval)
		timer.Reset(nextRefresh(interval, age))
	}
}
