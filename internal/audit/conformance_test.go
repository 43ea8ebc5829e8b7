package audit

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
)

// testKey is the audit key every conformance log is opened with;
// rotatedKey is the key the rotation tests move to.
var (
	testKey    = []byte("0123456789abcdef0123456789abcdef")
	rotatedKey = []byte("fedcba9876543210fedcba9876543210")
)

// tamperer reaches a log's storage behind its back: to change it as someone
// with only database access could, or to open another log on it as a
// restarted replica with other keys would.
type tamperer interface {
	modify(t *testing.T, seq int64)                          // change record seq's channel, keep its hash
	modifyHash(t *testing.T, seq int64)                      // change record seq's channel and its stored hash
	remove(t *testing.T, seq int64)                          // delete record seq
	shift(t *testing.T, from int64)                          // renumber records from seq on to seq+1, opening a slot
	insert(t *testing.T, r Record)                           // store r exactly as given
	setKeyID(t *testing.T, seq int64, id string)             // change record seq's key id
	setHead(t *testing.T, h head)                            // store h as the chain head
	reopen(t *testing.T, key []byte, previous ...[]byte) Log // a log on the same storage with these keys
	changePolicy(t *testing.T) int64                         // commit a policy change; its version
	makeMonth(t *testing.T, month time.Time)                 // make the storage of the month starting at month
	forgeRedaction(t *testing.T, through int64)              // claim records up to through redacted, without the key
}

// opener returns a fresh, empty log keyed with testKey, and a tamperer for it.
type opener func(t *testing.T) (Log, tamperer)

// runConformance checks the behaviour every Log must have.
func runConformance(t *testing.T, open opener) {
	t.Run("Append", func(t *testing.T) { testAppend(t, open) })
	t.Run("AppendRejectsBadRecords", func(t *testing.T) { testAppendRejects(t, open) })
	t.Run("AppendIsSafeConcurrently", func(t *testing.T) { testAppendConcurrent(t, open) })
	t.Run("AppendReportsCallerGone", func(t *testing.T) { testAppendCallerGone(t, open) })
	t.Run("Search", func(t *testing.T) { testSearch(t, open) })
	t.Run("SearchPagesWithCursor", func(t *testing.T) { testSearchPages(t, open) })
	t.Run("SearchRejectsBadFilters", func(t *testing.T) { testSearchRejects(t, open) })
	t.Run("Export", func(t *testing.T) { testExport(t, open) })
	t.Run("Lookup", func(t *testing.T) { testLookup(t, open) })
	t.Run("Stats", func(t *testing.T) { testStats(t, open) })
	t.Run("VerifyDetectsTampering", func(t *testing.T) { testVerifyTampering(t, open) })
	t.Run("RotationKeepsOneChain", func(t *testing.T) { testRotation(t, open) })
	t.Run("RotationWithoutThePreviousKey", func(t *testing.T) { testRotationWithoutPreviousKey(t, open) })
	t.Run("VerifyDetectsKeyIDTampering", func(t *testing.T) { testKeyIDTampering(t, open) })
	t.Run("RecordsWrittenBeforeKeyIDs", func(t *testing.T) { testLegacyRecords(t, open) })
	t.Run("ClosedLogRefusesAppend", func(t *testing.T) { testClosed(t, open) })
	t.Run("GrantsOnAStalePolicyAreRefused", func(t *testing.T) { testStalePolicy(t, open) })
	t.Run("RetentionKeepsTheLogVerifiable", func(t *testing.T) { testRetention(t, open) })
	t.Run("DecisionsGroupedForAPlan", func(t *testing.T) { testDecisions(t, open) })
}

// testDecisions: the granted and denied channel decisions of a window,
// one group per caller, project, channel, role and decision, with counts.
func testDecisions(t *testing.T, open opener) {
	l, _ := open(t)
	denied := rec("alice", "secret", 3)
	denied.Decision, denied.GrantedTTL, denied.Reason = DecisionDenied, 0, "no rule"
	invalid := rec("alice", "room", 4)
	invalid.Decision, invalid.GrantedTTL = DecisionInvalid, 0
	login := rec("alice", "", 5)
	login.Service, login.Role = ServiceRTM, ""
	old := rec("carol", "room", -600)
	mustAppend(t, l, rec("alice", "room", 0), rec("alice", "room", 1), rec("bob", "room", 2), denied, invalid, login, old)
	got := map[string]int64{}
	err := l.Decisions(context.Background(), t0.Add(-time.Minute), func(d DecisionCount) error {
		got[d.Subject+" "+d.Channel+" "+d.Role+" "+string(d.Decision)+" "+strings.Join(d.Groups, ",")+" "+d.Project+" "+d.Issuer] += d.Count
		return nil
	})
	want := map[string]int64{
		"alice room publisher granted staff  https://idp.example":  2,
		"bob room publisher granted staff  https://idp.example":    1,
		"alice secret publisher denied staff  https://idp.example": 1,
	}
	if err != nil || !maps.Equal(got, want) {
		t.Errorf("Decisions = %v, %v; want %v", got, err, want)
	}
}

// testRetention: a month past retention loses its records' personal fields,
// and the log still verifies, reporting them as redacted; the newer
// records, the chain and the tree are checked as before, and a redaction
// claimed without the audit key is refused.
func testRetention(t *testing.T, open opener) {
	ctx := context.Background()
	l, tm := open(t)
	tm.makeMonth(t, time.Date(t0.Year(), t0.Month(), 1, 0, 0, 0, 0, time.UTC))
	old := []Record{rec("alice", "room", 0), rec("bob", "room", 1), rec("carol", "lobby", 2)}
	old[0].TokenFingerprint = l.Fingerprint("old token")
	recent := []Record{rec("dave", "room", 0), rec("erin", "room", 1)}
	for i := range recent {
		recent[i].Time = time.Now().Add(-time.Duration(i+1) * time.Minute)
	}
	mustAppend(t, l, old...)
	stored := mustAppend(t, l, recent...)

	// Off: nothing changes.
	if m, err := l.Maintain(ctx, 0); err != nil || m.Redacted != 0 {
		t.Fatalf("Maintain without retention = %+v, %v; want nothing redacted", m, err)
	}
	// March has ended more than 30 days ago; this month has not.
	m, err := l.Maintain(ctx, 30*24*time.Hour)
	if err != nil || m.Redacted != 3 || m.Before.IsZero() || m.Before.After(time.Now()) {
		t.Fatalf("Maintain(30d) = %+v, %v; want the 3 records of March redacted", m, err)
	}
	if again, err := l.Maintain(ctx, 30*24*time.Hour); err != nil || again.Redacted != 0 {
		t.Errorf("Maintain again = %+v, %v; want nothing more", again, err)
	}
	page, err := l.Search(ctx, Filter{})
	if err != nil || len(page.Records) != 5 {
		t.Fatalf("Search = %d records, %v; want 5", len(page.Records), err)
	}
	for _, r := range page.Records {
		personal := r.Subject != "" || r.Account != "" || r.UID != 0 || r.Groups != nil || r.ClientIP != "" || r.UserAgent != "" || r.Reason != ""
		switch {
		case r.Seq <= 3 && personal:
			t.Errorf("record %d kept personal fields past retention: %+v", r.Seq, r)
		case r.Seq <= 3 && (r.Channel == "" || r.Decision != DecisionGranted || r.Rule == ""):
			t.Errorf("record %d lost what is not personal: %+v", r.Seq, r)
		case r.Seq > 3:
			assertSame(t, r, stored[r.Seq-4])
		}
	}
	if got, err := l.Lookup(ctx, "old token"); err != nil || len(got) != 1 || got[0].Seq != 1 {
		t.Errorf("Lookup of a redacted record's token = %+v, %v; want record 1", got, err)
	}
	rep, err := l.Verify(ctx)
	if err != nil || !rep.OK || rep.Records != 5 || rep.Redacted != 3 || rep.RedactedBefore.IsZero() {
		t.Errorf("Verify after retention = %+v, %v; want ok, 5 records, 3 redacted", rep, err)
	}
	if _, err := l.Leaves(ctx, 0, 1); apperr.KindOf(err) != apperr.NotFound {
		t.Errorf("Leaves of a redacted record: %v; want NotFound", err)
	}
	if leaves, err := l.Leaves(ctx, 3, 5); err != nil || len(leaves) != 2 {
		t.Errorf("Leaves of kept records = %d, %v", len(leaves), err)
	}
	// A newer record modified is still caught.
	tm.modify(t, 5)
	if rep, err := l.Verify(ctx); err != nil || rep.OK || rep.Redacted != 3 {
		t.Errorf("Verify with record 5 modified = %+v, %v; want it caught", rep, err)
	}
	// Calling more records redacted without the key hides nothing.
	tm.forgeRedaction(t, 5)
	rep, err = l.Verify(ctx)
	if err != nil || rep.OK || rep.Redacted != 0 || len(rep.Problems) == 0 || rep.Problems[0].Kind != ProblemRetention {
		t.Errorf("Verify with a forged retention record = %+v, %v; want a retention problem first", rep, err)
	}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// rec returns a granted record for subject on channel at t0+minutes.
func rec(subject, channel string, minutes int) Record {
	return Record{
		Time: t0.Add(time.Duration(minutes) * time.Minute), RequestID: "req-" + subject,
		Issuer: "https://idp.example", Subject: subject, Account: subject, UID: 1000,
		Groups: []string{"staff"}, Service: ServiceRTC, Channel: channel, Role: "publisher",
		RequestedTTL: time.Hour, GrantedTTL: time.Hour, Decision: DecisionGranted,
		Reason: "allowed", Rule: "p, group:staff, *, publisher, allow", PolicyVersion: 7,
		ClientIP: "192.0.2.1", UserAgent: "test/1.0",
	}
}

func mustAppend(t *testing.T, l Log, rs ...Record) []Record {
	t.Helper()
	out := make([]Record, len(rs))
	for i, r := range rs {
		got, err := l.Append(context.Background(), r)
		if err != nil {
			t.Fatalf("Append(%s): %v", r.Subject, err)
		}
		out[i] = got
	}
	return out
}

func wantField(t *testing.T, err error, field string) {
	t.Helper()
	e, ok := apperr.As(err)
	if !ok || e.Kind != apperr.Invalid || e.Field != field {
		t.Fatalf("error = %v; want apperr.Invalid on field %q", err, field)
	}
}

func testAppend(t *testing.T, open opener) {
	l, _ := open(t)
	ctx := context.Background()
	in := rec("alice", "room", 0)
	in.Time = time.Date(2026, 3, 1, 13, 0, 0, 123456789, time.FixedZone("X", 3600))
	in.RequestedTTL = 90*time.Minute + 500*time.Millisecond
	in.UserAgent = strings.Repeat("é", MaxUserAgent) // two bytes each
	in.Reason = "bad\xffbyte and a \x00 nul"
	in.Seq, in.Hash = 99, Hash{1}

	first, err := l.Append(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if first.Seq != 1 || first.PrevHash != genesis {
		t.Errorf("first record: seq %d prev %s; want seq 1 after the zero hash", first.Seq, first.PrevHash)
	}
	if want := time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC); !first.Time.Equal(want) || first.Time.Location() != time.UTC {
		t.Errorf("time = %v; want %v (UTC, microseconds)", first.Time, want)
	}
	if first.RequestedTTL != 90*time.Minute {
		t.Errorf("requested ttl = %v; want whole seconds 1h30m0s", first.RequestedTTL)
	}
	if kept, ok := strings.CutSuffix(first.UserAgent, "…[1024 bytes]"); !ok || len(first.UserAgent) > MaxUserAgent || !strings.HasPrefix(in.UserAgent, kept) {
		t.Errorf("user agent kept as %d bytes %q…; want a marked prefix of at most %d", len(first.UserAgent), first.UserAgent[:20], MaxUserAgent)
	}
	if first.Reason != "bad\uFFFDbyte and a \uFFFD nul" {
		t.Errorf("reason = %q; want invalid UTF-8 and NUL replaced", first.Reason)
	}

	noTime := rec("bob", "room", 0)
	noTime.Time = time.Time{}
	before := time.Now().Add(-time.Second)
	second, err := l.Append(ctx, noTime)
	if err != nil {
		t.Fatal(err)
	}
	if second.Seq != 2 || second.PrevHash != first.Hash {
		t.Errorf("second record: seq %d prev %s; want seq 2 linked to %s", second.Seq, second.PrevHash, first.Hash)
	}
	if second.Time.Before(before) {
		t.Errorf("time = %v; want it set to now", second.Time)
	}

	page, err := l.Search(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 2 {
		t.Fatalf("search found %d records; want 2", len(page.Records))
	}
	assertSame(t, page.Records[1], first)
	assertSame(t, page.Records[0], second)
}

func assertSame(t *testing.T, got, want Record) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) {
		t.Errorf("stored record differs from the one Append returned:\n got %s\nwant %s", g, w)
	}
}

func testAppendRejects(t *testing.T, open opener) {
	l, _ := open(t)
	for _, c := range []struct {
		name  string
		edit  func(*Record)
		field string
	}{
		{"UnknownDecision", func(r *Record) { r.Decision = "maybe" }, "decision"},
		{"EmptyDecision", func(r *Record) { r.Decision = "" }, "decision"},
		{"UnknownService", func(r *Record) { r.Service = "rtx" }, "service"},
		{"NegativeRequestedTTL", func(r *Record) { r.RequestedTTL = -time.Second }, "requested_ttl"},
		{"HugeGrantedTTL", func(r *Record) { r.GrantedTTL = 1 << 62 }, "granted_ttl"},
		{"NegativePolicyVersion", func(r *Record) { r.PolicyVersion = -1 }, "policy_version"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := rec("alice", "room", 0)
			c.edit(&r)
			_, err := l.Append(context.Background(), r)
			wantField(t, err, c.field)
		})
	}
	rep, err := l.Verify(context.Background())
	if err != nil || !rep.OK || rep.Records != 0 {
		t.Errorf("after rejected appends: %+v, %v; want an empty, intact log", rep, err)
	}
}

func testAppendConcurrent(t *testing.T, open opener) {
	l, _ := open(t)
	const writers, each = 8, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := l.Append(context.Background(), rec("w", "room", w*each+i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rep, err := l.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Records != writers*each {
		t.Errorf("Verify = %+v; want ok with %d records", rep, writers*each)
	}
}

func testAppendCallerGone(t *testing.T, open opener) {
	l, _ := open(t)
	for _, c := range []struct {
		name string
		ctx  func() context.Context
		want error
	}{
		{"Cancelled", func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, context.Canceled},
		{"PastDeadline", func() context.Context {
			ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			t.Cleanup(cancel)
			return ctx
		}, context.DeadlineExceeded},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := l.Append(c.ctx(), rec("alice", "room", 0))
			if apperr.KindOf(err) != apperr.Unavailable || !errors.Is(err, c.want) {
				t.Errorf("Append = %v; want apperr.Unavailable wrapping %v", err, c.want)
			}
		})
	}
	if got := mustAppend(t, l, rec("bob", "room", 1))[0]; got.Seq != 1 {
		t.Errorf("next append got seq %d; want 1, nothing recorded for the callers that had gone", got.Seq)
	}
}

func testSearch(t *testing.T, open opener) {
	l, _ := open(t)
	denied := rec("bob", "team_a", 2)
	denied.Decision, denied.GrantedTTL, denied.UID = DecisionDenied, 0, 2000
	invalid := rec("carol", "100%", 3)
	invalid.Decision, invalid.Account = DecisionInvalid, "carol@example.com"
	staging := rec("dave", "teamXa", 4)
	staging.Project, staging.AppID, staging.Issuer = "staging", strings.Repeat("5a", 16), "https://other.example"
	staging.RequestID = "0a1b2c3d4e5f60718293a4b5" // the broker's own ids are hex
	mustAppend(t, l,
		rec("alice", "room-1", 0),    // seq 1
		rec("alice", "room-2", 1),    // seq 2
		denied,                       // seq 3
		invalid,                      // seq 4
		staging,                      // seq 5
		rec("erin", `back\slash`, 5), // seq 6
	)
	uid2000 := uint32(2000)
	for _, c := range []struct {
		name string
		f    Filter
		want []int64
	}{
		{"All", Filter{}, []int64{6, 5, 4, 3, 2, 1}},
		{"Subject", Filter{Subject: "alice"}, []int64{2, 1}},
		{"Account", Filter{Account: "carol@example.com"}, []int64{4}},
		{"UID", Filter{UID: &uid2000}, []int64{3}},
		{"ChannelExact", Filter{Channel: "room-1"}, []int64{1}},
		{"ChannelPattern", Filter{Channel: "room-*"}, []int64{2, 1}},
		{"ChannelPatternInside", Filter{Channel: "r*-*2"}, []int64{2}},
		{"UnderscoreIsLiteral", Filter{Channel: "team_*"}, []int64{3}},
		{"PercentIsLiteral", Filter{Channel: "1*%"}, []int64{4}},
		{"PercentAloneMatchesOnlyItself", Filter{Channel: "%"}, nil},
		{"BackslashIsLiteral", Filter{Channel: `back\*`}, []int64{6}},
		{"StarMatchesAll", Filter{Channel: "*"}, []int64{6, 5, 4, 3, 2, 1}},
		{"Decision", Filter{Decision: DecisionDenied}, []int64{3}},
		{"Project", Filter{Project: "staging"}, []int64{5}},
		{"Issuer", Filter{Issuer: "https://other.example"}, []int64{5}},
		{"IssuerAndSubject", Filter{Issuer: "https://idp.example", Subject: "dave"}, nil},
		{"ProjectIsExact", Filter{Project: "stag"}, nil},
		{"FromInclusive", Filter{From: t0.Add(4 * time.Minute)}, []int64{6, 5}},
		{"ToExclusive", Filter{To: t0.Add(1 * time.Minute)}, []int64{1}},
		{"Combined", Filter{Subject: "alice", Channel: "room*", From: t0.Add(time.Minute)}, []int64{2}},
		{"RequestIDHex", Filter{RequestID: "0a1b2c3d4e5f60718293a4b5", From: t0, To: t0.Add(time.Hour)}, []int64{5}},
		{"RequestIDText", Filter{RequestID: "req-bob", From: t0, To: t0.Add(time.Hour)}, []int64{3}},
		{"NoMatch", Filter{Subject: "mallory"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			page, err := l.Search(context.Background(), c.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, r := range page.Records {
				got = append(got, r.Seq)
			}
			if !equalSeqs(got, c.want) || page.NextCursor != "" {
				t.Errorf("seqs = %v, cursor %q; want %v and no cursor", got, page.NextCursor, c.want)
			}
		})
	}
}

func equalSeqs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func testSearchPages(t *testing.T, open opener) {
	l, _ := open(t)
	for i := range 7 {
		mustAppend(t, l, rec("alice", "room", i))
		mustAppend(t, l, rec("bob", "room", i))
	}
	var got []int64
	f := Filter{Subject: "alice", Limit: 3}
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatal("more pages than records")
		}
		page, err := l.Search(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Records {
			got = append(got, r.Seq)
		}
		if page.NextCursor == "" {
			break
		}
		f.Cursor = page.NextCursor
	}
	if want := []int64{13, 11, 9, 7, 5, 3, 1}; !equalSeqs(got, want) {
		t.Errorf("paged seqs = %v; want %v", got, want)
	}
}

func testSearchRejects(t *testing.T, open opener) {
	l, _ := open(t)
	zero := uint32(0)
	for _, c := range []struct {
		name  string
		f     Filter
		field string
	}{
		{"GarbageCursor", Filter{Cursor: "not a cursor!"}, "cursor"},
		{"ShortCursor", Filter{Cursor: "AAAA"}, "cursor"},
		{"ZeroCursor", Filter{Cursor: encodeCursor(0)}, "cursor"},
		{"NegativeCursor", Filter{Cursor: encodeCursor(-5)}, "cursor"},
		{"UnknownDecision", Filter{Decision: "granted "}, "decision"},
		{"ToBeforeFrom", Filter{From: t0, To: t0.Add(-time.Second)}, "to"},
		{"ToEqualsFrom", Filter{From: t0, To: t0}, "to"},
		{"UIDZero", Filter{UID: &zero}, "uid"},
		{"NegativeLimit", Filter{Limit: -1}, "limit"},
		{"LimitTooLarge", Filter{Limit: MaxLimit + 1}, "limit"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := l.Search(context.Background(), c.f)
			wantField(t, err, c.field)
		})
	}
}

func testExport(t *testing.T, open opener) {
	l, _ := open(t)
	evil := rec("=cmd|' /C calc'!A0", "+room", 1)
	evil.UserAgent, evil.Reason, evil.Rule, evil.Groups = "@SUM(1)", "-2+3", "\tx", []string{"\rg"}
	stored := mustAppend(t, l, rec("alice", "room", 0), evil, rec("bob", "room", 2))
	ctx := context.Background()

	t.Run("CSVNeutralisesFormulas", func(t *testing.T) {
		var buf bytes.Buffer
		if err := l.Export(ctx, Filter{}, FormatCSV, &buf); err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(&buf).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 4 || strings.Join(rows[0], ",") != strings.Join(csvHeader, ",") {
			t.Fatalf("got %d rows, header %v; want header and 3 records", len(rows), rows[0])
		}
		col := func(name string) int {
			for i, h := range csvHeader {
				if h == name {
					return i
				}
			}
			t.Fatalf("no column %s", name)
			return 0
		}
		row := rows[2]
		for name, want := range map[string]string{
			"seq": "2", "subject": "'=cmd|' /C calc'!A0", "channel": "'+room", "user_agent": "'@SUM(1)",
			"reason": "'-2+3", "rule": "'\tx", "groups": "'\rg", "hash": stored[1].Hash.String(),
			"requested_ttl_seconds": "3600", "time": stored[1].Time.Format(time.RFC3339Nano),
		} {
			if got := row[col(name)]; got != want {
				t.Errorf("%s = %q; want %q", name, got, want)
			}
		}
		if rows[1][col("subject")] != "alice" {
			t.Errorf("plain cell altered: %q", rows[1][col("subject")])
		}
	})

	t.Run("JSONLOldestFirstWithFilter", func(t *testing.T) {
		var buf bytes.Buffer
		if err := l.Export(ctx, Filter{Channel: "room"}, FormatJSONL, &buf); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
		if len(lines) != 2 {
			t.Fatalf("got %d lines; want 2", len(lines))
		}
		var first struct {
			Seq          int64  `json:"seq"`
			Subject      string `json:"subject"`
			RequestedTTL int64  `json:"requested_ttl_seconds"`
			Hash         string `json:"hash"`
		}
		if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
			t.Fatal(err)
		}
		if first.Seq != 1 || first.Subject != "alice" || first.RequestedTTL != 3600 || first.Hash != stored[0].Hash.String() {
			t.Errorf("first line = %+v; want record 1 of alice, ttl 3600, hex hash", first)
		}
	})

	t.Run("Limit", func(t *testing.T) {
		var buf bytes.Buffer
		if err := l.Export(ctx, Filter{Limit: 1}, FormatJSONL, &buf); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(buf.String(), "\n"); n != 1 {
			t.Errorf("exported %d records; want 1", n)
		}
	})

	t.Run("RejectsUnknownFormat", func(t *testing.T) {
		wantField(t, l.Export(ctx, Filter{}, "xlsx", &bytes.Buffer{}), "format")
	})
	t.Run("RejectsCursor", func(t *testing.T) {
		wantField(t, l.Export(ctx, Filter{Cursor: encodeCursor(2)}, FormatCSV, &bytes.Buffer{}), "cursor")
	})
}

func testLookup(t *testing.T, open opener) {
	l, _ := open(t)
	const token = "007eJxTYBBZ-secret-token"
	a := rec("alice", "room", 0)
	a.TokenFingerprint = l.Fingerprint(token)
	b := rec("bob", "room", 1)
	b.TokenFingerprint = l.Fingerprint("another token")
	stored := mustAppend(t, l, a, b)
	ctx := context.Background()

	got, err := l.Lookup(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Seq != stored[0].Seq {
		t.Errorf("Lookup found %d records; want alice's record only", len(got))
	}
	if got, err := l.Lookup(ctx, "never issued"); err != nil || len(got) != 0 {
		t.Errorf("Lookup(unknown) = %d records, %v; want none", len(got), err)
	}
	_, err = l.Lookup(ctx, "")
	wantField(t, err, "token")
}

func testStats(t *testing.T, open opener) {
	l, _ := open(t)
	now := time.Now().UTC()
	since := now.Add(-45 * time.Minute) // five buckets, the last one partial
	at := func(min int, d Decision) Record {
		r := rec("alice", "room", 0)
		r.Time, r.Decision = since.Add(time.Duration(min)*time.Minute), d
		return r
	}
	mustAppend(t, l,
		at(-5, DecisionGranted), // before since: not counted
		at(1, DecisionGranted), at(2, DecisionDenied),
		at(25, DecisionInvalid), at(29, DecisionGranted), at(29, DecisionGranted),
	)
	got, err := l.Stats(context.Background(), since, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	want := []Bucket{{Granted: 1, Denied: 1}, {}, {Granted: 2, Invalid: 1}, {}, {}}
	if len(got) != len(want) {
		t.Fatalf("got %d buckets; want %d", len(got), len(want))
	}
	for i := range want {
		want[i].Start = since.Truncate(time.Microsecond).Add(time.Duration(i) * 10 * time.Minute)
		if !got[i].Start.Equal(want[i].Start) || got[i].Granted != want[i].Granted ||
			got[i].Denied != want[i].Denied || got[i].Invalid != want[i].Invalid {
			t.Errorf("bucket %d = %+v; want %+v", i, got[i], want[i])
		}
	}
	for _, c := range []struct {
		name   string
		since  time.Time
		bucket time.Duration
		field  string
	}{
		{"NoSince", time.Time{}, time.Minute, "since"},
		{"SubSecondBucket", since, time.Millisecond, "bucket"},
		{"TooManyBuckets", now.Add(-365 * 24 * time.Hour), time.Second, "bucket"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := l.Stats(context.Background(), c.since, c.bucket)
			wantField(t, err, c.field)
		})
	}
}

func testVerifyTampering(t *testing.T, open opener) {
	forged := func(seq int64) Record {
		r := rec("mallory", "vip", 0)
		r.Seq, r.Time = seq, t0
		return r
	}
	for _, c := range []struct {
		name   string
		tamper func(t *testing.T, tm tamperer, stored []Record)
		seq    int64
		kind   string
	}{
		{"Intact", func(*testing.T, tamperer, []Record) {}, 0, ""},
		{"ModifiedMiddle", func(t *testing.T, tm tamperer, _ []Record) { tm.modify(t, 3) }, 3, ProblemModified},
		{"ModifiedFirst", func(t *testing.T, tm tamperer, _ []Record) { tm.modify(t, 1) }, 1, ProblemModified},
		{"ModifiedLast", func(t *testing.T, tm tamperer, _ []Record) { tm.modify(t, 5) }, 5, ProblemModified},
		{"ModifiedWithHash", func(t *testing.T, tm tamperer, _ []Record) { tm.modifyHash(t, 2) }, 2, ProblemModified},
		{"DeletedMiddle", func(t *testing.T, tm tamperer, _ []Record) { tm.remove(t, 3) }, 3, ProblemDeleted},
		{"DeletedFirst", func(t *testing.T, tm tamperer, _ []Record) { tm.remove(t, 1) }, 1, ProblemDeleted},
		{"DeletedLast", func(t *testing.T, tm tamperer, _ []Record) { tm.remove(t, 5) }, 5, ProblemDeleted},
		{"InsertedAtEnd", func(t *testing.T, tm tamperer, s []Record) {
			r := forged(6)
			r.PrevHash, r.Hash = s[4].Hash, s[4].Hash
			tm.insert(t, r)
		}, 6, ProblemInserted},
		{"InsertedBeforeFirst", func(t *testing.T, tm tamperer, _ []Record) { tm.insert(t, forged(0)) }, 0, ProblemInserted},
		{"InsertedInPlaceOfDeleted", func(t *testing.T, tm tamperer, s []Record) {
			tm.remove(t, 3)
			r := forged(3)
			r.PrevHash, r.Hash = s[1].Hash, s[2].Hash
			tm.insert(t, r)
		}, 3, ProblemModified},
		{"InsertedMiddleByRenumbering", func(t *testing.T, tm tamperer, s []Record) {
			tm.shift(t, 3)
			r := forged(3)
			r.PrevHash, r.Hash = s[1].Hash, s[2].Hash
			tm.insert(t, r)
		}, 3, ProblemInserted},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, tm := open(t)
			var rs []Record
			for i := range 5 {
				rs = append(rs, rec("alice", "room", i))
			}
			stored := mustAppend(t, l, rs...)
			c.tamper(t, tm, stored)
			rep, err := l.Verify(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if c.kind == "" {
				if !rep.OK || rep.Records != 5 || len(rep.Problems) != 0 {
					t.Errorf("Verify = %+v; want ok with 5 records", rep)
				}
				return
			}
			if rep.OK || len(rep.Problems) == 0 {
				t.Fatalf("Verify = %+v; want a %s problem at seq %d", rep, c.kind, c.seq)
			}
			chain, tree := splitProblems(rep.Problems)
			if len(chain) == 0 || chain[0].Seq != c.seq || chain[0].Kind != c.kind {
				t.Errorf("first chain problem = %+v; want %s at seq %d (all: %+v)", chain, c.kind, c.seq, rep.Problems)
			}
			// A record added after the last one is outside the tree (and the
			// chain's head): only the chain sees it.
			if len(tree) == 0 && c.kind != ProblemDeleted && c.name != "InsertedAtEnd" {
				t.Errorf("the tree did not catch the tampering: %+v", rep.Problems)
			}
		})
	}
}

func testClosed(t *testing.T, open opener) {
	l, _ := open(t)
	mustAppend(t, l, rec("alice", "room", 0))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := l.Append(context.Background(), rec("alice", "room", 1))
	if apperr.KindOf(err) != apperr.Unavailable {
		t.Errorf("Append after Close: %v; want apperr.Unavailable", err)
	}
}

// rotated writes records 1 to 3 under testKey (record 1 for token "era A"),
// rotates to rotatedKey keeping testKey as a previous key, and writes records
// 4 and 5 (record 4 for token "era B"). It returns the rotated log, the
// tamperer and the records.
func rotated(t *testing.T, open opener) (Log, tamperer, []Record) {
	t.Helper()
	a, tm := open(t)
	first := rec("alice", "room", 0)
	first.TokenFingerprint = a.Fingerprint("era A")
	stored := mustAppend(t, a, first, rec("bob", "room", 1), rec("carol", "room", 2))
	b := tm.reopen(t, rotatedKey, testKey)
	fourth := rec("dave", "room", 3)
	fourth.TokenFingerprint = b.Fingerprint("era B")
	return b, tm, append(stored, mustAppend(t, b, fourth, rec("erin", "room", 4))...)
}

func testRotation(t *testing.T, open opener) {
	l, tm, stored := rotated(t, open)
	ctx := context.Background()
	for i, r := range stored {
		want := KeyID(testKey)
		if i >= 3 {
			want = KeyID(rotatedKey)
		}
		if r.KeyID != want {
			t.Errorf("record %d has key id %q; want %q", r.Seq, r.KeyID, want)
		}
	}
	if stored[3].Seq != 4 || stored[3].PrevHash != stored[2].Hash {
		t.Errorf("first record under the new key: seq %d prev %s; want seq 4 linked to %s", stored[3].Seq, stored[3].PrevHash, stored[2].Hash)
	}
	page, err := l.Search(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range page.Records {
		assertSame(t, r, stored[r.Seq-1])
	}

	rep, err := l.Verify(ctx)
	if err != nil || !rep.OK || rep.Records != 5 {
		t.Errorf("Verify across the rotation = %+v, %v; want ok with 5 records", rep, err)
	}
	for token, seq := range map[string]int64{"era A": 1, "era B": 4} {
		got, err := l.Lookup(ctx, token)
		if err != nil || len(got) != 1 || got[0].Seq != seq {
			t.Errorf("Lookup(%s) = %d records, %v; want record %d", token, len(got), err, seq)
		}
	}

	// A replica with only the new key still writes and verifies its own era.
	only := tm.reopen(t, rotatedKey)
	mustAppend(t, only, rec("frank", "room", 5))
	rep, err = only.Verify(ctx)
	want := Problem{Seq: 1, Kind: ProblemUnknownKey,
		Detail: "records 1 to 3 were linked with key id " + KeyID(testKey) + ", which is not configured"}
	if err != nil || rep.OK || rep.Records != 6 || len(rep.Problems) != 1 || rep.Problems[0] != want {
		t.Errorf("Verify without the old key = %+v, %v; want only %+v", rep, err, want)
	}
}

func testRotationWithoutPreviousKey(t *testing.T, open opener) {
	a, tm := open(t)
	mustAppend(t, a, rec("alice", "room", 0), rec("bob", "room", 1), rec("carol", "room", 2))
	b := tm.reopen(t, rotatedKey) // the operator forgot BROKER_AUDIT_PREVIOUS_KEYS
	ctx := context.Background()
	if _, err := b.Append(ctx, rec("dave", "room", 3)); apperr.KindOf(err) != apperr.Unavailable {
		t.Errorf("Append on a head MACed with an unconfigured key: %v; want apperr.Unavailable", err)
	}
	rep, err := b.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := KeyID(testKey)
	want := []Problem{
		{Seq: 1, Kind: ProblemUnknownKey, Detail: "records 1 to 3 were linked with key id " + id + ", which is not configured"},
		{Seq: 3, Kind: ProblemUnknownKey, Detail: "the chain head was MACed with key id " + id + ", which is not configured"},
	}
	if rep.OK || rep.Records != 3 || len(rep.Problems) != 2 || rep.Problems[0] != want[0] || rep.Problems[1] != want[1] {
		t.Errorf("Verify = %+v; want nothing appended and only %+v", rep, want)
	}
}

func testKeyIDTampering(t *testing.T, open opener) {
	b, _ := deriveKeys(rotatedKey, "audit_key")
	for _, c := range []struct {
		name   string
		tamper func(t *testing.T, tm tamperer, stored []Record)
		seq    int64
		kind   string
	}{
		{"OldRecordClaimsNewKey", func(t *testing.T, tm tamperer, _ []Record) { tm.setKeyID(t, 2, KeyID(rotatedKey)) }, 2, ProblemModified},
		{"NewRecordClaimsOldKey", func(t *testing.T, tm tamperer, _ []Record) { tm.setKeyID(t, 4, KeyID(testKey)) }, 4, ProblemModified},
		{"RecordClaimsNoKeyID", func(t *testing.T, tm tamperer, _ []Record) { tm.setKeyID(t, 5, "") }, 5, ProblemModified},
		{"RecordClaimsUnknownKey", func(t *testing.T, tm tamperer, _ []Record) { tm.setKeyID(t, 3, "00000000000000ff") }, 3, ProblemUnknownKey},
		{"HeadClaimsOldKey", func(t *testing.T, tm tamperer, s []Record) {
			tm.setHead(t, head{present: true, seq: 5, hash: s[4].Hash, mac: b.headMAC(5, s[4].Hash, b.id), keyID: KeyID(testKey)})
		}, 5, ProblemModified},
		{"HeadClaimsNoKeyID", func(t *testing.T, tm tamperer, s []Record) {
			tm.setHead(t, head{present: true, seq: 5, hash: s[4].Hash, mac: b.headMAC(5, s[4].Hash, b.id)})
		}, 5, ProblemModified},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, tm, stored := rotated(t, open)
			c.tamper(t, tm, stored)
			rep, err := l.Verify(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if chain, _ := splitProblems(rep.Problems); rep.OK || len(chain) != 1 || chain[0].Seq != c.seq || chain[0].Kind != c.kind {
				t.Errorf("Verify = %+v; want one %s chain problem at seq %d", rep, c.kind, c.seq)
			}
		})
	}
}

// legacyChain stores records 1 to 3 and their head as a writer from before
// key ids did (no key id, version 1 encodings), under key.
func legacyChain(t *testing.T, tm tamperer, key []byte) []Record {
	t.Helper()
	k, _ := deriveKeys(key, "audit_key")
	prev := genesis
	var out []Record
	for i, s := range []string{"alice", "bob", "carol"} {
		r, err := normalize(rec(s, "room", i), t0)
		if err != nil {
			t.Fatal(err)
		}
		r.TokenFingerprint = k.fingerprintOf("legacy " + s)
		r.Seq, r.PrevHash = int64(i+1), prev
		r.Hash = k.recordHash(&r)
		tm.insert(t, r)
		out = append(out, r)
		prev = r.Hash
	}
	tm.setHead(t, head{present: true, seq: 3, hash: prev, mac: k.headMAC(3, prev, "")})
	return out
}

func testLegacyRecords(t *testing.T, open opener) {
	ctx := context.Background()
	t.Run("VerifyAndExtendUnderTheSameKey", func(t *testing.T) {
		l, tm := open(t)
		legacyChain(t, tm, testKey)
		if rep, err := l.Verify(ctx); err != nil || !rep.OK || rep.Records != 3 {
			t.Errorf("Verify of a log from before key ids = %+v, %v; want ok with 3 records", rep, err)
		}
		got := mustAppend(t, l, rec("dave", "room", 3))[0]
		if got.Seq != 4 || got.KeyID != KeyID(testKey) {
			t.Errorf("appended seq %d key id %q; want 4 under %q", got.Seq, got.KeyID, KeyID(testKey))
		}
		if rep, err := l.Verify(ctx); err != nil || !rep.OK || rep.Records != 4 {
			t.Errorf("Verify = %+v, %v; want ok with 4 records", rep, err)
		}
	})
	t.Run("VerifyAndLookUpAfterRotation", func(t *testing.T) {
		_, tm := open(t)
		legacyChain(t, tm, testKey)
		l := tm.reopen(t, rotatedKey, testKey)
		mustAppend(t, l, rec("dave", "room", 3))
		if rep, err := l.Verify(ctx); err != nil || !rep.OK || rep.Records != 4 {
			t.Errorf("Verify = %+v, %v; want ok with 4 records", rep, err)
		}
		if got, err := l.Lookup(ctx, "legacy bob"); err != nil || len(got) != 1 || got[0].Seq != 2 {
			t.Errorf("Lookup of a token from before key ids = %d records, %v; want record 2", len(got), err)
		}
		tm.modify(t, 2)
		if rep, _ := l.Verify(ctx); rep.OK || len(chainOnly(rep.Problems)) != 1 || chainOnly(rep.Problems)[0].Seq != 2 || chainOnly(rep.Problems)[0].Kind != ProblemModified {
			t.Errorf("Verify after modifying record 2 = %+v; want modified at 2", rep)
		}
	})
}

// testStalePolicy: a grant decided on a policy older than the newest
// committed change is not written (ErrStalePolicy), in a batch or alone;
// denials and invalid requests are recorded on the version they were made on.
func testStalePolicy(t *testing.T, open opener) {
	l, tm := open(t)
	ctx := context.Background()
	v := tm.changePolicy(t)
	current := rec("alice", "room", 0)
	current.PolicyVersion = v
	mustAppend(t, l, current)
	v2 := tm.changePolicy(t)
	stale := rec("bob", "room", 1)
	stale.PolicyVersion = v
	if _, err := l.Append(ctx, stale); !errors.Is(err, ErrStalePolicy) {
		t.Fatalf("a grant on version %d after version %d committed: %v; want ErrStalePolicy", v, v2, err)
	}
	denied := rec("carol", "room", 2)
	denied.Decision, denied.GrantedTTL, denied.PolicyVersion = DecisionDenied, 0, v
	mustAppend(t, l, denied)
	again := rec("bob", "room", 3)
	again.PolicyVersion = v2
	got := mustAppend(t, l, again)[0]
	if got.Seq != 3 {
		t.Fatalf("the grant decided again got seq %d; want 3 (nothing written for the stale one)", got.Seq)
	}
	if rep, err := l.Verify(ctx); err != nil || !rep.OK || rep.Records != 3 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

// splitProblems separates the hash chain's problems from the tree's.
func splitProblems(ps []Problem) (chain, tree []Problem) {
	for _, p := range ps {
		if p.Kind == ProblemTree {
			tree = append(tree, p)
		} else {
			chain = append(chain, p)
		}
	}
	return chain, tree
}

func chainOnly(ps []Problem) []Problem {
	chain, _ := splitProblems(ps)
	return chain
}
