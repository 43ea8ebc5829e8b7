package agora

import (
	"context"
	"sync"
	"time"
)

// Agora's call frequency limit for the ban rule API: requests per account (not
// per App ID) in any window.
const (
	accountRate   = 10
	accountWindow = time.Second
)

// accounts holds one limiter per customer ID: Agora counts requests per
// account, so every Client of an account in this process must share one.
// (Replicas of the broker on one account share nothing; Agora's 429 and the
// client's retries cover that.)
var accounts = struct {
	sync.Mutex
	limiters map[string]*limiter
}{limiters: map[string]*limiter{}}

func limiterFor(customerID string) *limiter {
	accounts.Lock()
	defer accounts.Unlock()
	l, ok := accounts.limiters[customerID]
	if !ok {
		l = newLimiter(accountRate, accountWindow)
		accounts.limiters[customerID] = l
	}
	return l
}

// limiter keeps requests under n in any window, however long they take to
// reach Agora. Each request holds one of n tokens from before it is sent until
// its answer is in, and the token is usable again a window after that; so a
// request that reuses a token reaches Agora at least a window after the one
// before it with that token did.
type limiter struct {
	window time.Duration
	tokens chan time.Time // free tokens: when each may be used
}

func newLimiter(n int, window time.Duration) *limiter {
	l := &limiter{window: window, tokens: make(chan time.Time, n)}
	for range n {
		l.tokens <- time.Time{}
	}
	return l
}

// wait takes a token, waiting until it may be used or ctx ends; release gives
// it back once the answer is in.
func (l *limiter) wait(ctx context.Context) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var at time.Time
	select {
	case at = <-l.tokens:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if d := time.Until(at); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			l.tokens <- at // unused: as good as before
			return nil, ctx.Err()
		}
	}
	var once sync.Once
	return func() { once.Do(func() { l.tokens <- time.Now().Add(l.window) }) }, nil
}
