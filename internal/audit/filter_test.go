package audit

import "testing"

func TestLikePattern_EscapesEverythingButStar(t *testing.T) {
	for in, want := range map[string]string{
		"room":    "room",
		"room*":   "room%",
		"a_b%c":   `a\_b\%c`,
		`back\*`:  `back\\%`,
		"*":       "%",
		"?[x]*y*": "?[x]%y%",
	} {
		if got := likePattern(in); got != want {
			t.Errorf("likePattern(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestMatchChannel_StarIsTheOnlyWildcard(t *testing.T) {
	for _, c := range []struct {
		pattern, channel string
		want             bool
	}{
		{"room", "room", true},
		{"room", "room2", false},
		{"room*", "room", true},
		{"room*", "room-42", true},
		{"*-42", "room-42", true},
		{"r*m*2", "room-42", true},
		{"r*m*2", "room-43", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"?oom", "room", false},
		{"[r]oom", "room", false},
		{"[r]oom", "[r]oom", true},
		{"*", "", true},
		{"a**b", "ab", true},
	} {
		if got := matchChannel(c.pattern, c.channel); got != c.want {
			t.Errorf("matchChannel(%q, %q) = %v; want %v", c.pattern, c.channel, got, c.want)
		}
	}
}

func TestCursor_RoundTrips(t *testing.T) {
	for _, seq := range []int64{1, 255, 1 << 40} {
		got, ok := decodeCursor(encodeCursor(seq))
		if !ok || got != seq {
			t.Errorf("cursor for %d decodes to %d, %v", seq, got, ok)
		}
	}
}
