package httpapi

import (
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/problem"
)

// RateLimit is a per-subject token bucket: Rate requests per second with
// bursts of Burst. A zero Rate switches it off.
type RateLimit struct {
	Rate  float64
	Burst int
	// Refused, when not nil, counts the requests refused (the console's
	// overview shows it; no record is written per refusal).
	Refused *atomic.Int64
}

// limiter keeps one bucket per subject. Idle buckets are dropped once full
// again, so memory stays proportional to the recently active callers.
type limiter struct {
	rate, burst float64
	now         func() time.Time
	rejected    prometheus.Counter
	refused     *atomic.Int64
	log         *slog.Logger

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(l RateLimit, reg prometheus.Registerer, log *slog.Logger) *limiter {
	lim := &limiter{rate: l.Rate, burst: float64(l.Burst), now: time.Now, buckets: map[string]*bucket{}, log: log, refused: l.Refused,
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "broker_rate_limited_total",
			Help: "Requests refused because their subject was over its rate limit.",
		})}
	if lim.burst < 1 {
		lim.burst = 1
	}
	if reg != nil {
		reg.MustRegister(lim.rejected)
	}
	return lim
}

// allow takes one token from key's bucket; when empty it reports how long
// until one is available.
func (l *limiter) allow(key string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		l.sweep(now)
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}

// sweep drops buckets that have refilled completely: they behave exactly
// like new ones.
func (l *limiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	l.swept = now
}

// middleware refuses callers over their rate with 429 and Retry-After. It
// runs after authentication, keyed by issuer and subject.
func (l *limiter) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := auth.FromContext(r.Context())
		if ok {
			if allowed, wait := l.allow(id.Issuer + "\x00" + id.Subject); !allowed {
				l.rejected.Inc()
				if l.refused != nil {
					l.refused.Add(1)
				}
				l.log.DebugContext(r.Context(), "token request over the rate limit", slog.String("subject", id.Subject),
					slog.String("client_ip", clientIP(r)), slog.String("request_id", middleware.GetReqID(r.Context())))
				secs := int(math.Ceil(wait.Seconds()))
				if secs < 1 {
					secs = 1
				}
				w.Header().Set("Retry-After", strconv.Itoa(secs))
				problem.Write(w, r, apperr.New(apperr.TooMany, "too many token requests for %s; retry in %d s", id.Subject, secs))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
