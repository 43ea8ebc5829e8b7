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
	for mid := p[star+1 : last+1]; mid != ""; {
		seg := mid
		if i := strings.IndexByte(mid, '*'); i >= 0 {
			seg, mid = mid[:i], mid[i+1:]
		} else {
			mid = ""
		}
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
// When one is a plain name this is matching. When both contain a "*", they
// share a string exactly when their literal prefixes (before the first "*")
// agree, one being a prefix of the other, and their literal suffixes (after
// the last "*") agree likewise: then the longer prefix L, the middle
// segments of p, those of q and the longer suffix R, in that order, spell a
// string of both, since each pattern's stars absorb everything between its
// own prefix, segments and suffix (L and R are disjoint, so nothing
// overlaps). Without agreeing ends no string can start or end as both need.
// So the test costs the length of the ends, whatever the middles: a deny
// rule never costs a wildcard request more than that.
func overlaps(p, q string) bool {
	if !isPattern(p) {
		return covers(q, p)
	}
	if !isPattern(q) {
		return covers(p, q)
	}
	pPrefix, qPrefix := p[:strings.IndexByte(p, '*')], q[:strings.IndexByte(q, '*')]
	pSuffix, qSuffix := p[strings.LastIndexByte(p, '*')+1:], q[strings.LastIndexByte(q, '*')+1:]
	return (strings.HasPrefix(pPrefix, qPrefix) || strings.HasPrefix(qPrefix, pPrefix)) &&
		(strings.HasSuffix(pSuffix, qSuffix) || strings.HasSuffix(qSuffix, pSuffix))
}
