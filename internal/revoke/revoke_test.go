package revoke

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/agora"
	"github.com/broker-dev/broker/internal/agora/agoratest"
	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/pg/pgtest"
	"github.com/broker-dev/broker/internal/policy"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const appID = "0123456789abcdef0123456789abcdef"

var admin = policy.Actor{Subject: "user:root", Operator: true}

// fixture is a broker's revocation service over memory stores: developers
// may publish on room-*; alice and bob hold live tokens.
func fixture(t *testing.T, bans bool) (*Service, *agoratest.Server, *time.Time) {
	t.Helper()
	ctx := context.Background()
	engine, err := policy.Open(ctx, policy.NewMemStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	if _, err := engine.Add(ctx, admin, policy.Rule{Subject: "group:dev", Channel: "room-*", Role: policy.Publisher, Effect: policy.Allow}); err != nil {
		t.Fatal(err)
	}
	log, err := audit.NewMemory(bytes.Repeat([]byte{4}, audit.MinKeyLen))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	now := time.Now().UTC().Truncate(time.Second)
	for _, r := range []audit.Record{
		{Subject: "alice", UID: 11, Channel: "room-1", GrantedTTL: time.Hour},
		{Subject: "alice", UID: 11, Channel: "room-*", GrantedTTL: 2 * time.Hour},
		{Subject: "alice", UID: 11, Channel: "room-2", GrantedTTL: time.Hour, Time: now.Add(-3 * time.Hour)}, // expired
		{Subject: "bob", UID: 12, Channel: "room-1", GrantedTTL: time.Hour},
	} {
		if r.Time.IsZero() {
			r.Time = now
		}
		r.Issuer, r.Account, r.Service, r.Role, r.Decision, r.RequestedTTL, r.Project = "https://idp", r.Subject, audit.ServiceRTC, "publisher", audit.DecisionGranted, r.GrantedTTL, policy.DefaultProject
		r.Groups = []string{"dev"}
		if _, err := log.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	clock := now
	s := &Service{Store: NewMemory(), Policies: engine, Log: log, Agora: func(string) (string, Banner) { return appID, nil }, MaxTTL: 24 * time.Hour,
		Qualify: func(string) (string, bool) { return "", true }, Now: func() time.Time { return clock }}
	var server *agoratest.Server
	if bans {
		customer := "customer-" + t.Name()
		server = agoratest.New(t, customer, "customer-secret")
		c, err := agora.NewClient(agora.Config{BaseURL: server.URL, CustomerID: customer, CustomerSecret: "customer-secret", HTTP: server.Client()})
		if err != nil {
			t.Fatal(err)
		}
		s.Agora = func(string) (string, Banner) { return appID, c }
	}
	return s, server, &clock
}

func allowed(t *testing.T, s *Service, sub, channel string) bool {
	t.Helper()
	d, err := s.Policies.Decide(policy.Caller{Subject: sub, Groups: []string{"dev"}}, policy.DefaultProject, channel, policy.Publisher)
	if err != nil {
		t.Fatal(err)
	}
	return d.Allowed
}

// TestRevoke_BansTheLiveTokensAndBlocksNewOnes: alice's live tokens are
// banned in Agora until they would have expired (a pattern's token in every
// channel), new tokens are denied; bob is untouched; lifting undoes both.
func TestRevoke_BansTheLiveTokensAndBlocksNewOnes(t *testing.T) {
	ctx := context.Background()
	s, server, clock := fixture(t, true)
	r, err := s.Revoke(ctx, admin, Request{Project: policy.DefaultProject, Subject: "user:alice", Reason: "left the company"})
	if err != nil {
		t.Fatal(err)
	}
	if r.BansError != "" || len(r.Bans) != 2 || !r.Until.Equal(clock.Add(2*time.Hour)) {
		t.Fatalf("revocation %+v: want two bans (room-1, and every channel for the pattern's token) until the last expiry", r)
	}
	rules := server.Rules(appID)
	if len(rules) != 2 {
		t.Fatalf("Agora holds %+v, want the two bans", rules)
	}
	for _, b := range rules {
		want := map[string]int64{"room-1": 3600, "": 7200}[b.Channel]
		if b.UID != 11 || b.Seconds != want || len(b.Privileges) != 1 || b.Privileges[0] != "join_channel" {
			t.Errorf("ban %+v: want uid 11 banned from joining %q for %d s", b, b.Channel, want)
		}
	}
	if allowed(t, s, "alice", "room-3") || !allowed(t, s, "bob", "room-1") {
		t.Fatal("after the revocation alice should be refused new tokens and bob not")
	}
	page, err := s.Log.Search(ctx, audit.Filter{Subject: "alice", Decision: audit.DecisionDenied})
	if err != nil || len(page.Records) != 1 {
		t.Fatalf("the issuance log's records of alice's refusals: %+v, %v; want the revocation", page.Records, err)
	}
	rec := page.Records[0]
	if rec.Issuer != "https://idp" || rec.UID != 11 || rec.Channel != "*" || !strings.Contains(rec.Reason, "revoked by user:root") ||
		!strings.Contains(rec.Reason, "left the company") || !strings.Contains(rec.Reason, "Agora ban rules: ") || rec.Rule == "" {
		t.Fatalf("the revocation's record %+v", rec)
	}
	for _, b := range r.Bans {
		if !strings.Contains(rec.Reason, strconv.FormatInt(b.ID, 10)) {
			t.Errorf("the record's reason %q does not name ban rule %d", rec.Reason, b.ID)
		}
	}
	if _, err := s.Revoke(ctx, admin, Request{Project: policy.DefaultProject, Subject: "user:alice", Reason: "again"}); apperr.KindOf(err) != apperr.Conflict {
		t.Fatalf("revoking alice twice: %v, want Conflict", err)
	}
	lifted, err := s.Lift(ctx, admin, r.ID)
	if err != nil || lifted.Lifted == nil || lifted.BansError != "" {
		t.Fatalf("lift: %+v, %v", lifted, err)
	}
	if len(server.Rules(appID)) != 0 || !allowed(t, s, "alice", "room-3") {
		t.Fatal("after lifting, the bans should be gone and alice allowed again")
	}
	if _, err := s.Lift(ctx, admin, r.ID); apperr.KindOf(err) != apperr.Conflict {
		t.Fatalf("lifting twice: %v, want Conflict", err)
	}
	history, _, err := s.Policies.History(ctx, policy.HistoryFilter{})
	if err != nil || len(history) < 2 || history[0].Action != "lift" || history[1].Action != "revoke" || history[1].After[0].ID != r.RuleID {
		t.Fatalf("policy history %+v, %v: want the deny rule added as revoke and removed as lift", history, err)
	}
}

// grantInTheGap is an issuance log on which a token is granted to alice
// right after the revocation's first search, before its deny rule commits.
type grantInTheGap struct {
	Log
	searches int
	grant    audit.Record
}

func (g *grantInTheGap) Search(ctx context.Context, f audit.Filter) (audit.Page, error) {
	page, err := g.Log.Search(ctx, f)
	if g.searches++; g.searches == 1 {
		if _, err := g.Log.Append(ctx, g.grant); err != nil {
			return audit.Page{}, err
		}
	}
	return page, err
}

// TestRevoke_BansATokenGrantedWhileItWasMade: a token granted between the
// search for the user's live tokens and the deny rule's commit is banned
// too, and the block lasts until it expires.
func TestRevoke_BansATokenGrantedWhileItWasMade(t *testing.T) {
	ctx := context.Background()
	s, server, clock := fixture(t, true)
	gap := &grantInTheGap{Log: s.Log, grant: audit.Record{Time: *clock, Issuer: "https://idp", Subject: "alice", Account: "alice", UID: 13,
		Channel: "room-9", Service: audit.ServiceRTC, Role: "publisher", Decision: audit.DecisionGranted, RequestedTTL: 3 * time.Hour,
		GrantedTTL: 3 * time.Hour, Project: policy.DefaultProject, Groups: []string{"dev"}}}
	s.Log = gap
	r, err := s.Revoke(ctx, admin, Request{Project: policy.DefaultProject, Subject: "user:alice", Reason: "left the company"})
	if err != nil {
		t.Fatal(err)
	}
	banned := false
	for _, b := range server.Rules(appID) {
		banned = banned || b.UID == 13 && b.Channel == "room-9"
	}
	if !banned || len(r.Bans) != 3 || !r.Until.Equal(clock.Add(3*time.Hour)) {
		t.Fatalf("revocation %+v, Agora holds %+v: want uid 13 banned on room-9 too, the block until its token expires", r, server.Rules(appID))
	}
	if got, err := s.Store.Get(ctx, r.ID); err != nil || !got.Until.Equal(r.Until) {
		t.Fatalf("stored revocation %+v, %v: want it to end at %v", got, err, r.Until)
	}
}

// failingLog is an issuance log that cannot append.
type failingLog struct{ Log }

func (failingLog) Append(context.Context, audit.Record) (audit.Record, error) {
	return audit.Record{}, apperr.New(apperr.Unavailable, "the issuance log is down")
}

// TestRevoke_UnrecordedIsTakenBack: a revocation the issuance log cannot
// record fails, and neither its deny rule nor its bans stay.
func TestRevoke_UnrecordedIsTakenBack(t *testing.T) {
	ctx := context.Background()
	s, server, _ := fixture(t, true)
	s.Log = failingLog{s.Log}
	if _, err := s.Revoke(ctx, admin, Request{Project: policy.DefaultProject, Subject: "user:alice", Reason: "left"}); apperr.KindOf(err) != apperr.Unavailable {
		t.Fatalf("revoke with the log down: %v, want Unavailable", err)
	}
	if !allowed(t, s, "alice", "room-3") || len(server.Rules(appID)) != 0 {
		t.Fatal("the unrecorded revocation left its deny rule or bans in force")
	}
	if list, _ := s.Store.List(ctx, policy.DefaultProject, false, 0); len(list) != 0 {
		t.Fatalf("revocations %+v, want none", list)
	}
}

// TestRevoke_ByUIDWithoutAgoraAndAtItsEnd: a uid names its user; without
// Agora credentials only new tokens are blocked, and the revocation says
// so; at its end the sweep lifts it.
func TestRevoke_ByUIDWithoutAgoraAndAtItsEnd(t *testing.T) {
	ctx := context.Background()
	s, _, clock := fixture(t, false)
	r, err := s.Revoke(ctx, admin, Request{Project: policy.DefaultProject, UID: 12, Channel: "room-1", Reason: "abuse"})
	if err != nil || r.Subject != "user:bob" || !strings.Contains(r.BansError, "no Agora credentials") {
		t.Fatalf("revoke uid 12: %+v, %v", r, err)
	}
	if allowed(t, s, "bob", "room-1") || !allowed(t, s, "bob", "room-2") {
		t.Fatal("bob should be refused room-1 only")
	}
	if _, err := s.Revoke(ctx, admin, Request{Project: policy.DefaultProject, UID: 99, Reason: "x"}); apperr.KindOf(err) != apperr.NotFound {
		t.Fatalf("revoking an unknown uid: %v, want NotFound", err)
	}
	for _, bad := range []Request{{Project: "default", Subject: "user:bob"}, {Project: "default", Subject: "group:dev", Reason: "x"},
		{Project: "default", Subject: "user:bob", UID: 12, Reason: "x"}} {
		if _, err := s.Revoke(ctx, admin, bad); apperr.KindOf(err) != apperr.Invalid {
			t.Errorf("revoke %+v: %v, want Invalid", bad, err)
		}
	}
	if n, err := s.LiftExpired(ctx); err != nil || n != 0 {
		t.Fatalf("sweep before the end: %d, %v", n, err)
	}
	*clock = r.Until.Add(time.Second)
	if n, err := s.LiftExpired(ctx); err != nil || n != 1 || !allowed(t, s, "bob", "room-1") {
		t.Fatalf("sweep after the end: %d, %v; want bob's revocation lifted", n, err)
	}
	list, err := s.Store.List(ctx, policy.DefaultProject, false, 0)
	if err != nil || len(list) != 1 || list[0].LiftedBy != ExpiryActor {
		t.Fatalf("revocations: %+v, %v", list, err)
	}
}

// TestStores_Conformance: both stores keep, list, lift (once) and find the
// expired revocations alike.
func TestStores_Conformance(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) Store{
		"memory":   func(*testing.T) Store { return NewMemory() },
		"postgres": func(t *testing.T) Store { return NewPostgres(pgtest.New(t).Pool()) },
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t)
			now := time.Now().UTC().Truncate(time.Microsecond)
			a, err := s.Create(ctx, Revocation{Project: "default", Subject: "user:a", Channel: "*", Reason: "r", Actor: "user:root", Until: now.Add(time.Hour), RuleID: 5,
				Bans: []Ban{{ID: 9, UID: 11, Channel: "room-1", Until: now.Add(time.Hour)}}})
			if err != nil || a.ID == 0 || a.Created.IsZero() {
				t.Fatalf("create: %+v, %v", a, err)
			}
			b, err := s.Create(ctx, Revocation{Project: "default", Subject: "user:b", Channel: "x", Reason: "r", Actor: "user:root", Until: now.Add(-time.Minute), RuleID: 6})
			if err != nil {
				t.Fatal(err)
			}
			if got, err := s.Get(ctx, a.ID); err != nil || len(got.Bans) != 1 || got.Bans[0].ID != 9 || got.RuleID != 5 {
				t.Fatalf("get: %+v, %v", got, err)
			}
			if _, err := s.Get(ctx, 999); apperr.KindOf(err) != apperr.NotFound {
				t.Fatalf("get unknown: %v", err)
			}
			if exp, err := s.Expired(ctx, now); err != nil || len(exp) != 1 || exp[0].ID != b.ID {
				t.Fatalf("expired: %+v, %v", exp, err)
			}
			if l, err := s.Lift(ctx, b.ID, "user:root", now, "ban 1: gone"); err != nil || l.Lifted == nil || l.BansError != "ban 1: gone" {
				t.Fatalf("lift: %+v, %v", l, err)
			}
			if _, err := s.Lift(ctx, b.ID, "user:root", now, ""); apperr.KindOf(err) != apperr.Conflict {
				t.Fatalf("lift twice: %v", err)
			}
			if _, err := s.Create(ctx, Revocation{Project: "default", Subject: "user:a", Channel: "*", Reason: "again", Actor: "user:root", Until: now.Add(time.Hour)}); apperr.KindOf(err) != apperr.Conflict {
				t.Fatalf("a second revocation of user:a on *: %v, want Conflict", err)
			}
			c, err := s.Create(ctx, Revocation{Project: "default", Subject: "user:a", Channel: "*", PublishOnly: true, Reason: "claim", Actor: "user:root", Until: now.Add(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, c.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(ctx, c.ID); apperr.KindOf(err) != apperr.NotFound {
				t.Fatalf("a dropped claim: %v, want NotFound", err)
			}
			a.RuleID, a.Bans, a.BansError = 7, append(a.Bans, Ban{ID: 10, UID: 11, Until: now.Add(time.Hour)}), "uid 12: refused"
			if done, err := s.Complete(ctx, a); err != nil || done.RuleID != 7 || len(done.Bans) != 2 || done.BansError != "uid 12: refused" {
				t.Fatalf("complete: %+v, %v", done, err)
			}
			if active, err := s.List(ctx, "default", true, 0); err != nil || len(active) != 1 || active[0].ID != a.ID {
				t.Fatalf("active: %+v, %v", active, err)
			}
			if all, err := s.List(ctx, "default", false, 0); err != nil || len(all) != 2 || all[0].ID != b.ID {
				t.Fatalf("all, newest first: %+v, %v", all, err)
			}
		})
	}
}

// TestOrphans_ListedAndRevokedOnce: a rule that takes publishing on room-1
// from bob orphans his live token there (he may still subscribe); alice's
// are untouched. Revoking the orphans, as two replicas would at once, makes
// one revocation that bans his uid from publishing there; then nothing is
// orphaned.
func TestOrphans_ListedAndRevokedOnce(t *testing.T) {
	ctx := context.Background()
	s, server, _ := fixture(t, true)
	if o, _, err := s.Orphans(ctx, policy.DefaultProject); err != nil || len(o) != 0 {
		t.Fatalf("orphans before any change: %+v, %v", o, err)
	}
	if _, err := s.Policies.Add(ctx, admin, policy.Rule{Subject: "user:bob", Channel: "room-1", Role: policy.Publisher, Effect: policy.Deny}); err != nil {
		t.Fatal(err)
	}
	o, truncated, err := s.Orphans(ctx, policy.DefaultProject)
	if err != nil || truncated || len(o) != 1 {
		t.Fatalf("orphans: %+v, %v, %v; want bob's token on room-1", o, truncated, err)
	}
	if got := o[0]; got.Subject != "user:bob" || got.Channel != "room-1" || got.Role != "publisher" || !got.PublishOnly ||
		len(got.UIDs) != 1 || got.UIDs[0] != 12 || got.Tokens != 1 || got.Decision.Allowed || got.Decision.Rule == nil {
		t.Fatalf("orphan %+v", got)
	}
	counts := make(chan int, 2)
	for range 2 {
		go func() {
			n, err := s.RevokeOrphans(ctx, []string{policy.DefaultProject})
			if err != nil {
				t.Error(err)
			}
			counts <- n
		}()
	}
	if n := <-counts + <-counts; n != 1 {
		t.Fatalf("two replicas revoked %d orphans, want 1", n)
	}
	rules := server.Rules(appID)
	if len(rules) != 1 || rules[0].UID != 12 || rules[0].Channel != "room-1" || slices.Contains(rules[0].Privileges, "join_channel") {
		t.Fatalf("Agora holds %+v, want uid 12 banned from publishing on room-1", rules)
	}
	list, err := s.Store.List(ctx, policy.DefaultProject, true, 0)
	if err != nil || len(list) != 1 || list[0].Actor != AutoActor || !list[0].PublishOnly || !strings.Contains(list[0].Reason, "no longer allows publisher") {
		t.Fatalf("revocations %+v, %v", list, err)
	}
	if o, _, err := s.Orphans(ctx, policy.DefaultProject); err != nil || len(o) != 0 {
		t.Fatalf("orphans after revoking them: %+v, %v", o, err)
	}
}

// TestRevoke_RefusesWhatItCannotKeep: values too long to keep are refused
// as the caller's mistake before anything is kept.
func TestRevoke_RefusesWhatItCannotKeep(t *testing.T) {
	ctx := context.Background()
	s, _, _ := fixture(t, false)
	for name, c := range map[string]struct {
		a   policy.Actor
		req Request
	}{
		"an actor of 4 KB":   {policy.Actor{Subject: strings.Repeat("a", 4096), Operator: true}, Request{Project: policy.DefaultProject, Subject: "user:alice", Reason: "r"}},
		"a channel of 4 KB":  {admin, Request{Project: policy.DefaultProject, Subject: "user:alice", Channel: strings.Repeat("c", 4096), Reason: "r"}},
		"a subject of 64 KB": {admin, Request{Project: policy.DefaultProject, Subject: "user:" + strings.Repeat("s", 65536), Reason: "r"}},
	} {
		if _, err := s.Revoke(ctx, c.a, c.req); apperr.KindOf(err) != apperr.Invalid {
			t.Errorf("%s: %v, want Invalid", name, err)
		}
	}
	if list, err := s.Store.List(ctx, policy.DefaultProject, false, 100); err != nil || len(list) != 0 {
		t.Fatalf("revocations kept: %+v, %v; want none", list, err)
	}
}
