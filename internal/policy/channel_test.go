package policy

import (
	"regexp"
	"strings"
	"testing"

	"github.com/broker-dev/broker/internal/apperr"
)

func TestValidatePattern_AcceptsAgoraCharactersAndStar(t *testing.T) {
	valid := []string{"a", "lobby", "Room 42", "!#$%&()+-:;<=.>?@[]^_{}|~,", strings.Repeat("x", 63), "*", "demo-*", "a*b*c"}
	for _, s := range valid {
		if err := validatePattern(s); err != nil {
			t.Errorf("validatePattern(%q) = %v, want nil", s, err)
		}
	}
}

func TestValidateChannel_RejectsWithChannelField(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"too long", strings.Repeat("x", 64)},
		{"star in a plain channel", "demo-*"},
		{"slash", "a/b"},
		{"quote", `a"b`},
		{"non-ASCII", "café"},
		{"newline", "a\nb"},
		{"backslash", `a\b`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validateChannel(tt.in, false)
			ae, ok := apperr.As(err)
			if !ok || ae.Kind != apperr.Invalid || ae.Field != "channel" {
				t.Fatalf("validateChannel(%q, false) = %v, want Invalid on field channel", tt.in, err)
			}
		})
	}
}

func TestCovers_TreatsOnlyStarAsWildcard(t *testing.T) {
	tests := []struct {
		pattern, channel string
		want             bool
	}{
		{"lobby", "lobby", true},
		{"lobby", "lobby2", false},
		{"demo-*", "demo-", true},
		{"demo-*", "demo-1", true},
		{"demo-*", "demo", false},
		{"*", "anything", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "acb", false},
		{"a?c", "abc", false}, // ? is a literal
		{"a?c", "a?c", true},
		{"[ab]", "a", false}, // brackets are literals
		{"[ab]", "[ab]", true},
		{"{a,b}", "a", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"*ab*", "aab", true},
	}
	for _, tt := range tests {
		if got := covers(tt.pattern, tt.channel); got != tt.want {
			t.Errorf("covers(%q, %q) = %v, want %v", tt.pattern, tt.channel, got, tt.want)
		}
	}
}

// TestCoversAndOverlaps_AgreeWithBruteForce checks every pair of patterns over
// {a, b, *} up to length 4 against enumeration of all strings over {a, b, c}
// up to length 8. "c" appears in no pattern, which is what makes a pattern
// with a star on the right stand for strings the left may miss (over {a, b}
// alone "a*b" would be inside "*ab*"); and 8 bounds the shortest witness of
// both answers (a non-covered string has at most len(q) bytes, a shared one
// at most len(p)+len(q)).
func TestCoversAndOverlaps_AgreeWithBruteForce(t *testing.T) {
	patterns := enumerate("ab*", 4)
	words := enumerate("abc", 8)
	matched := make(map[string][]uint64, len(patterns))
	for _, p := range patterns {
		re := regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(p), `\*`, ".*") + "$")
		set := make([]uint64, (len(words)+63)/64)
		for i, w := range words {
			if re.MatchString(w) {
				set[i/64] |= 1 << (i % 64)
			}
		}
		matched[p] = set
	}
	for _, p := range patterns {
		for _, q := range patterns {
			wantCover, wantOverlap := true, false
			for i, pw := range matched[p] {
				qw := matched[q][i]
				if qw&^pw != 0 {
					wantCover = false
				}
				if qw&pw != 0 {
					wantOverlap = true
				}
			}
			if got := covers(p, q); got != wantCover {
				t.Errorf("covers(%q, %q) = %v, want %v", p, q, got, wantCover)
			}
			if got := overlaps(p, q); got != wantOverlap {
				t.Errorf("overlaps(%q, %q) = %v, want %v", p, q, got, wantOverlap)
			}
		}
	}
}

// enumerate returns every string over alphabet of length 0..n (without the
// empty string when alphabet contains "*", as patterns are never empty).
func enumerate(alphabet string, n int) []string {
	out := []string{""}
	level := []string{""}
	for i := 0; i < n; i++ {
		var next []string
		for _, s := range level {
			for _, c := range alphabet {
				next = append(next, s+string(c))
			}
		}
		out = append(out, next...)
		level = next
	}
	if strings.Contains(alphabet, "*") {
		out = out[1:]
	}
	return out
}

func TestOverlaps_LongPatterns(t *testing.T) {
	long := strings.Repeat("ab", 31) + "*"
	tests := []struct {
		p, q string
		want bool
	}{
		{long, "*" + strings.Repeat("ab", 31), true},
		{long, strings.Repeat("ab", 31) + "c", true},
		{long, "b*", false},
		{"*x*", "*y*", true},
		{"x*", "*y", true},
		{"x*", "y*", false},
		{"*x", "*y", false},
	}
	for _, tt := range tests {
		if got := overlaps(tt.p, tt.q); got != tt.want {
			t.Errorf("overlaps(%q, %q) = %v, want %v", tt.p, tt.q, got, tt.want)
		}
		if got := overlaps(tt.q, tt.p); got != tt.want {
			t.Errorf("overlaps(%q, %q) = %v, want %v (symmetry)", tt.q, tt.p, got, tt.want)
		}
	}
}
