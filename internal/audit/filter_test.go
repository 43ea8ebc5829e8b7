package audit

import (
	"testing"

	"github.com/broker-dev/broker/internal/apperr"
)

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
		if got := MatchChannel(c.pattern, c.channel); got != c.want {
			t.Errorf("MatchChannel(%q, %q) = %v; want %v", c.pattern, c.channel, got, c.want)
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

func TestParseQuery_OneReaderForEveryTransport(t *testing.T) {
	f, err := ParseQuery(Query{Subject: "alice", UID: "42", Decision: "denied", From: "2026-01-02T15:04:05Z", To: "2026-01-03T00:00", Limit: "7", Cursor: "c"})
	if err != nil || *f.UID != 42 || f.Decision != DecisionDenied || f.Limit != 7 || f.From.Hour() != 15 || f.To.Day() != 3 || f.Cursor != "c" {
		t.Fatalf("ParseQuery = %+v, %v", f, err)
	}
	for field, q := range map[string]Query{
		"uid":      {UID: "0"},
		"decision": {Decision: "maybe"},
		"from":     {From: "yesterday"},
		"to":       {To: "2026-13-01"},
		"limit":    {Limit: "-1"},
	} {
		_, err := ParseQuery(q)
		if e, ok := apperr.As(err); !ok || e.Kind != apperr.Invalid || e.Field != field {
			t.Errorf("ParseQuery(%+v) = %v; want Invalid naming %s", q, err, field)
		}
	}
	if _, err := ParseQuery(Query{UID: "4294967296"}); err == nil {
		t.Error("uid 4294967296 accepted")
	}
}
