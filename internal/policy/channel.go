package policy

import (
	"errors"
	"strings"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/token"
)

// validatePattern checks a channel name or pattern: a channel name that may
// also contain "*", the only wildcard.
func validatePattern(s string) error { return validateChannel(s, true) }

// validateChannel applies the token engine's rule (one definition of Agora's
// character set) and reports it as an Invalid error naming "channel".
func validateChannel(s string, pattern bool) error {
	err := token.ValidateChannel(s, pattern)
	if err == nil {
		return nil // the hot path: no error value to inspect
	}
	var ie *token.InputError
	if errors.As(err, &ie) {
		return apperr.Field("channel", "%s", ie.Reason)
	}
	return apperr.Field("channel", "%s", err.Error())
}

// isPattern reports whether channel contains the wildcard "*".
func isPattern(channel string) bool { return strings.IndexByte(channel, '*') >= 0 }

// covers reports whether pattern p matches every string that q matches.
//
// When q has no "*" this is plain matching. Otherwise a "*" in q is treated as
// a character that only a "*" of p can absorb: if p matches q that way, it
// matches every expansion of q; if it does not, q expanded with a character
// that p never mentions (one always exists: p has at most 63 bytes, the
// alphabet 89) is a string of q that p misses.
func covers(p, q string) bool {
	star := strings.IndexByte(p, '*')
	if star < 0 {
		return p == q
	}
	// Prefix and suffix are fixed; the middle segments are found leftmost
	// first, which is optimal for "*"-only patterns.
	prefix := p[:star]
	last := strings.LastIndexByte(p, '*')
	suffix := p[last+1:]
	if len(q) < len(prefix)+len(suffix) || !strings.HasPrefix(q, prefix) || !strings.HasSuffix(q, suffix) {
		return false
	}
	rest := q[len(prefix) : len(q)-len(suffix)]
	for _, seg := range strings.Split(p[star+1:last+1], "*") {
		if seg == "" {
			continue
		}
		i := strings.Index(rest, seg)
		if i < 0 {
			return false
		}
		rest = rest[i+len(seg):]
	}
	return true
}

// overlaps reports whether patterns p and q match at least one common string.
//
// reach[i][j] says that p[:i] and q[:j] can spell the same string. A common
// string never needs a character spelled by a "*" on both sides (dropping it
// leaves a shorter common string), so every step is: a "*" stops, a "*"
// absorbs the other side's literal, or two equal literals pair up.
func overlaps(p, q string) bool {
	if !isPattern(p) {
		return covers(q, p)
	}
	if !isPattern(q) {
		return covers(p, q)
	}
	w := len(q) + 1
	var buf [(token.MaxChannelLen + 1) * (token.MaxChannelLen + 1)]bool
	var reach []bool
	if n := (len(p) + 1) * w; n <= len(buf) {
		reach = buf[:n]
	} else {
		reach = make([]bool, n)
	}
	reach[0] = true
	for i := 0; i <= len(p); i++ {
		for j := 0; j <= len(q); j++ {
			if !reach[i*w+j] {
				continue
			}
			pStar := i < len(p) && p[i] == '*'
			qStar := j < len(q) && q[j] == '*'
			if pStar {
				reach[(i+1)*w+j] = true // p's star stops
				if j < len(q) && !qStar {
					reach[i*w+j+1] = true // p's star absorbs q's literal
				}
			}
			if qStar {
				reach[i*w+j+1] = true // q's star stops
				if i < len(p) && !pStar {
					reach[(i+1)*w+j] = true // q's star absorbs p's literal
				}
			}
			if !pStar && !qStar && i < len(p) && j < len(q) && p[i] == q[j] {
				reach[(i+1)*w+j+1] = true
			}
		}
	}
	return reach[len(p)*w+len(q)]
}
