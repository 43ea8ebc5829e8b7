package broker

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/identity"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/token"
)

const (
	testAppID   = "0123456789abcdef0123456789abcdef"
	testAppCert = "fedcba9876543210fedcba9876543210"
)

// failingLog refuses every record, as a log whose database is down.
type failingLog struct{}

func (failingLog) Fingerprint(string) string { return "fp" }

func (failingLog) Append(context.Context, audit.Record) (audit.Record, error) {
	return audit.Record{}, apperr.Wrap(apperr.Unavailable, errors.New("connection refused"), "issuance log cannot record")
}

type fixture struct {
	b    *Broker
	log  *audit.Memory
	uids *identity.Memory
	id   auth.Identity
	uid  uint32
}

func newFixture(t *testing.T, rec Recorder) *fixture {
	t.Helper()
	tb, err := token.NewBuilder(testAppID, testAppCert)
	if err != nil {
		t.Fatal(err)
	}
	log, err := audit.NewMemory([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	if rec == nil {
		rec = log
	}
	uids := identity.NewMemory()
	rules, err := policy.Open(context.Background(), policy.NewMemStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rules.Close)
	if _, err := rules.Add(context.Background(), policy.Actor{Subject: "test", Operator: true},
		policy.Rule{Subject: "group:dev", Channel: "demo", Role: policy.Publisher, Effect: policy.Allow, MaxTTLSeconds: 600}); err != nil {
		t.Fatal(err)
	}
	if _, err := rules.Add(context.Background(), policy.Actor{Subject: "test", Operator: true},
		policy.Rule{Subject: "*", Channel: policy.LoginRTM, Role: policy.Login, Effect: policy.Allow}); err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour}, Deps{Tokens: tb, Policy: rules, Log: rec, UIDs: uids,
		Now: func() time.Time { return time.Unix(1_800_000_000, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	id := auth.Identity{Issuer: "https://idp", Subject: "alice", Account: "alice", Groups: []string{"dev"}}
	uid, err := b.BoundUID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{b: b, log: log, uids: uids, id: id, uid: uid}
}

func (f *fixture) records(t *testing.T) []audit.Record {
	t.Helper()
	p, err := f.log.Search(context.Background(), audit.Filter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return p.Records
}

func itoa(u uint32) string { return strconv.FormatUint(uint64(u), 10) }

func TestIssue_GrantsOwnUIDAndRecordsItFirst(t *testing.T) {
	f := newFixture(t, nil)
	g, err := f.b.Issue(context.Background(), f.id, Request{Service: RTC, Channel: "demo", Role: "publisher", TokenType: TokenTypeUID, User: itoa(f.uid), Expiry: "3600", RequestID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if g.TTL != 600*time.Second {
		t.Fatalf("TTL %s, want the rule's 600s cap", g.TTL)
	}
	tok, err := token.Parse(g.RTCToken)
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Verify(testAppCert) {
		t.Fatal("token signature invalid")
	}
	if svc := tok.Services[0]; svc.Channel != "demo" || svc.UID != itoa(f.uid) {
		t.Fatalf("token bound to %q/%q, want demo/%d", svc.Channel, svc.UID, f.uid)
	}
	recs := f.records(t)
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	r := recs[0]
	if r.Decision != audit.DecisionGranted || r.UID != f.uid || r.GrantedTTL != 600*time.Second || r.RequestedTTL != time.Hour ||
		r.PolicyVersion != f.b.policy.Version() || r.PolicyVersion == 0 || r.Rule == "" || r.TokenFingerprint != f.log.Fingerprint(g.RTCToken) || r.RequestID != "r1" {
		t.Fatalf("record %+v", r)
	}
	if strings.Contains(r.TokenFingerprint, g.RTCToken[3:20]) {
		t.Fatal("record carries the token")
	}
}

func TestIssue_Refusals(t *testing.T) {
	cases := []struct {
		name     string
		req      func(f *fixture) Request
		kind     apperr.Kind
		decision audit.Decision
		msg      string
	}{
		{"other users uid", func(f *fixture) Request {
			return Request{Service: RTC, Channel: "demo", Role: "publisher", TokenType: TokenTypeUID, User: itoa(f.uid + 1)}
		}, apperr.Forbidden, audit.DecisionDenied, "is not yours"},
		{"uid zero names own uid", func(f *fixture) Request {
			return Request{Service: RTC, Channel: "demo", Role: "publisher", TokenType: TokenTypeUID, User: "0"}
		}, apperr.Forbidden, audit.DecisionDenied, "ask for your own uid"},
		{"other account", func(f *fixture) Request {
			return Request{Service: RTC, Channel: "demo", Role: "publisher", TokenType: TokenTypeAccount, User: "mallory"}
		}, apperr.Forbidden, audit.DecisionDenied, `account "mallory" is not yours`},
		{"no rule", func(f *fixture) Request {
			return Request{Service: RTC, Channel: "secret", Role: "publisher", TokenType: TokenTypeUID, User: itoa(f.uid)}
		}, apperr.Forbidden, audit.DecisionDenied, "no rule allows"},
		{"bad role", func(f *fixture) Request {
			return Request{Service: RTC, Channel: "demo", Role: "admin", TokenType: TokenTypeUID, User: itoa(f.uid)}
		}, apperr.Invalid, audit.DecisionInvalid, "role"},
		{"zero expiry", func(f *fixture) Request {
			return Request{Service: RTC, Channel: "demo", Role: "1", TokenType: TokenTypeUID, User: itoa(f.uid), Expiry: "0"}
		}, apperr.Invalid, audit.DecisionInvalid, "expiry"},
		{"negative expiry", func(f *fixture) Request {
			return Request{Service: RTC, Channel: "demo", Role: "1", TokenType: TokenTypeUID, User: itoa(f.uid), Expiry: "-5"}
		}, apperr.Invalid, audit.DecisionInvalid, "expiry"},
		{"text expiry", func(f *fixture) Request {
			return Request{Service: RTC, Channel: "demo", Role: "1", TokenType: TokenTypeUID, User: itoa(f.uid), Expiry: "soon"}
		}, apperr.Invalid, audit.DecisionInvalid, "expiry"},
		{"bad channel", func(f *fixture) Request {
			return Request{Service: RTC, Channel: "a/b", Role: "1", TokenType: TokenTypeUID, User: itoa(f.uid)}
		}, apperr.Invalid, audit.DecisionInvalid, "channel"},
		{"bad token type", func(f *fixture) Request {
			return Request{Service: RTC, Channel: "demo", Role: "1", TokenType: "email", User: itoa(f.uid)}
		}, apperr.Invalid, audit.DecisionInvalid, "tokentype"},
		{"rtm for someone else", func(f *fixture) Request {
			return Request{Service: RTM, User: "bob"}
		}, apperr.Forbidden, audit.DecisionDenied, "is not yours"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			g, err := f.b.Issue(context.Background(), f.id, tc.req(f))
			if g.RTCToken != "" || g.RTMToken != "" {
				t.Fatal("a refused request carries a token")
			}
			if apperr.KindOf(err) != tc.kind || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err %v (kind %s), want kind %s containing %q", err, apperr.KindOf(err), tc.kind, tc.msg)
			}
			if tc.name == "uid zero names own uid" && !strings.Contains(err.Error(), itoa(f.uid)) {
				t.Fatalf("uid 0 refusal %q does not name the caller's uid %d", err, f.uid)
			}
			recs := f.records(t)
			if len(recs) != 1 || recs[0].Decision != tc.decision || recs[0].Reason == "" || recs[0].TokenFingerprint != "" {
				t.Fatalf("records %+v, want one %s record with a reason", recs, tc.decision)
			}
		})
	}
}

func TestIssue_ClampsToMaxTTLAndDefaults(t *testing.T) {
	f := newFixture(t, nil)
	g, err := f.b.Issue(context.Background(), f.id, Request{Service: RTM, User: "alice", Expiry: "999999"})
	if err != nil {
		t.Fatal(err)
	}
	if g.TTL != 24*time.Hour {
		t.Fatalf("TTL %s, want clamped to 24h", g.TTL)
	}
	g, err = f.b.Issue(context.Background(), f.id, Request{Service: RTM, User: itoa(f.uid)})
	if err != nil {
		t.Fatal(err)
	}
	if g.TTL != time.Hour || !g.ExpiresAt.Equal(time.Unix(1_800_000_000+3600, 0)) {
		t.Fatalf("TTL %s expires %s, want the 1h default", g.TTL, g.ExpiresAt)
	}
}

func TestIssue_RTCAndRTMRecordsEachToken(t *testing.T) {
	f := newFixture(t, nil)
	g, err := f.b.Issue(context.Background(), f.id, Request{Service: RTCAndRTM, Channel: "demo", Role: "2", TokenType: TokenTypeUID, User: itoa(f.uid)})
	if err != nil {
		t.Fatal(err)
	}
	if g.RTCToken == "" || g.RTMToken == "" || g.RTMUser != itoa(f.uid) {
		t.Fatalf("grant %+v", g)
	}
	recs := f.records(t)
	if len(recs) != 2 {
		t.Fatalf("%d records, want one per token", len(recs))
	}
}

func TestIssue_LogDownMeansNoTokenAndUnavailable(t *testing.T) {
	f := newFixture(t, failingLog{})
	g, err := f.b.Issue(context.Background(), f.id, Request{Service: RTC, Channel: "demo", Role: "publisher", TokenType: TokenTypeUID, User: itoa(f.uid)})
	if apperr.KindOf(err) != apperr.Unavailable {
		t.Fatalf("err %v, want Unavailable", err)
	}
	if !reflect.DeepEqual(g, Grant{}) {
		t.Fatalf("grant %+v returned although the log could not record", g)
	}
	_, err = f.b.Issue(context.Background(), f.id, Request{Service: RTC, Channel: "nope", Role: "publisher", TokenType: TokenTypeUID, User: itoa(f.uid)})
	if apperr.KindOf(err) != apperr.Unavailable {
		t.Fatalf("denial with log down: err %v, want Unavailable (no decision leaves unrecorded)", err)
	}
}

func TestIssue_AccountTokensNeedAUsableAccount(t *testing.T) {
	f := newFixture(t, nil)
	id := f.id
	id.Account, id.AccountError = "alice/with/slashes", "contains '/', which Agora accounts do not allow"
	_, err := f.b.Issue(context.Background(), id, Request{Service: RTC, Channel: "demo", Role: "1", TokenType: TokenTypeAccount, User: id.Account})
	if apperr.KindOf(err) != apperr.Forbidden || !strings.Contains(err.Error(), "account tokens are unavailable") {
		t.Fatalf("err %v", err)
	}
	// uid tokens still work for that caller.
	if _, err := f.b.Issue(context.Background(), id, Request{Service: RTC, Channel: "demo", Role: "1", TokenType: TokenTypeUID, User: itoa(f.uid)}); err != nil {
		t.Fatal(err)
	}
}

func TestIssue_ClientGoneIsNotALogFailure(t *testing.T) {
	f := newFixture(t, failingLog{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := f.b.Issue(ctx, f.id, Request{Service: RTC, Channel: "demo", Role: "publisher", TokenType: TokenTypeUID, User: itoa(f.uid)})
	if apperr.KindOf(err) != apperr.Unavailable || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("err %v, want an Unavailable cancellation", err)
	}
}

// TestIssue_NumericAccountsAreUIDs: a token for account "N" is a token for uid
// N, so an account claim that reads as someone else's uid names no one.
func TestIssue_NumericAccountsAreUIDs(t *testing.T) {
	f := newFixture(t, nil)
	victim := f.uid + 1
	for _, account := range []string{itoa(victim), "0" + itoa(victim), "+" + itoa(victim), " " + itoa(victim), itoa(victim) + " ",
		"0", "4294967295"} {
		id := f.id
		id.Account = account
		uid, err := f.b.BoundUID(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := token.AccountAsUID(account); n == uid {
			continue
		}
		_, err = f.b.Issue(context.Background(), id, Request{Service: RTC, Channel: "demo", Role: "publisher", TokenType: TokenTypeAccount, User: account})
		if apperr.KindOf(err) != apperr.Forbidden || !strings.Contains(err.Error(), "reads as uid") {
			t.Errorf("account %q: RTC account token: %v; want forbidden (reads as uid)", account, err)
		}
		_, err = f.b.Issue(context.Background(), id, Request{Service: RTM, User: account})
		if apperr.KindOf(err) != apperr.Forbidden {
			t.Errorf("account %q: RTM token: %v; want forbidden", account, err)
		}
		if p := AccountProblem(id, uid); p == "" {
			t.Errorf("account %q: AccountProblem is empty", account)
		}
	}
	// Past 2^32-1 a number is no uid: an ordinary account.
	id := f.id
	id.Account = "4294967296"
	if _, err := f.b.Issue(context.Background(), id, Request{Service: RTC, Channel: "demo", Role: "publisher", TokenType: TokenTypeAccount, User: id.Account}); err != nil {
		t.Errorf("account 4294967296: %v; want granted", err)
	}
	// The caller's own uid as account is the caller.
	id.Account = "00" + itoa(f.uid)
	if _, err := f.b.Issue(context.Background(), id, Request{Service: RTC, Channel: "demo", Role: "publisher", TokenType: TokenTypeAccount, User: id.Account}); err != nil {
		t.Errorf("own uid as account: %v; want granted", err)
	}
	if p := AccountProblem(id, f.uid); p != "" {
		t.Errorf("own uid as account: AccountProblem %q", p)
	}
}

func TestIssue_UnusableGroupsAreARecordedRefusal(t *testing.T) {
	f := newFixture(t, nil)
	id := f.id
	id.Groups, id.GroupsError = nil, `groups claim "groups": group 2 contains a control character`
	_, err := f.b.Issue(context.Background(), id, Request{Service: RTC, Channel: "demo", Role: "publisher", TokenType: TokenTypeUID, User: itoa(f.uid)})
	if apperr.KindOf(err) != apperr.Forbidden || !strings.Contains(err.Error(), "control character") {
		t.Fatalf("err %v; want Forbidden naming the groups claim", err)
	}
	recs := f.records(t)
	if len(recs) != 1 || recs[0].Decision != audit.DecisionDenied || !strings.Contains(recs[0].Reason, "groups claim") {
		t.Fatalf("records %+v; want one denied record naming the groups claim", recs)
	}
}

// deafStore is a policy store whose change notifications never arrive, as a
// replica whose LISTEN connection missed them.
type deafStore struct{ policy.Store }

func (deafStore) Watch(ctx context.Context, _ func(int64)) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestIssue_NoGrantUnderARuleAlreadyRemoved: a rule removed through another
// replica (this one heard nothing) is not granted: the log refuses the grant
// decided on the old rules, the broker refreshes them and decides again.
func TestIssue_NoGrantUnderARuleAlreadyRemoved(t *testing.T) {
	ctx := context.Background()
	store := policy.NewMemStore()
	here, err := policy.Open(ctx, deafStore{store}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(here.Close)
	there, err := policy.Open(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(there.Close)
	op := policy.Actor{Subject: "test", Operator: true}
	r, err := there.Add(ctx, op, policy.Rule{Subject: "group:dev", Channel: "demo", Role: policy.Publisher, Effect: policy.Allow})
	if err != nil {
		t.Fatal(err)
	}
	if err := here.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	log, err := audit.NewMemory([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	log.FollowPolicy(func() int64 { v, _ := store.Version(ctx); return v })
	tb, _ := token.NewBuilder(testAppID, testAppCert)
	b, err := New(Config{DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour}, Deps{Tokens: tb, Policy: here, Log: log, UIDs: identity.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	id := auth.Identity{Issuer: "https://idp", Subject: "alice", Account: "alice", Groups: []string{"dev"}}
	req := Request{Service: RTC, Channel: "demo", Role: "publisher", TokenType: TokenTypeAccount, User: "alice"}
	if _, err := b.Issue(ctx, id, req); err != nil {
		t.Fatalf("before the removal: %v", err)
	}
	if err := there.Remove(ctx, op, r.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Issue(ctx, id, req); apperr.KindOf(err) != apperr.Forbidden {
		t.Fatalf("after the removal elsewhere: %v; want Forbidden", err)
	}
	page, _ := log.Search(ctx, audit.Filter{Limit: 10})
	if len(page.Records) != 2 || page.Records[0].Decision != audit.DecisionDenied || page.Records[1].Decision != audit.DecisionGranted {
		t.Fatalf("records %+v; want the grant, then the denial (nothing for the stale grant)", page.Records)
	}
}
