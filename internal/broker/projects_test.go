package broker

import (
	"context"
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

// TestIssue_Projects: a request is decided on its project's rules, minted
// with its project's App ID and recorded with both; a project the caller's
// provider may not use, an unknown one, or none when several could be meant,
// is a recorded refusal naming only the caller's projects.
func TestIssue_Projects(t *testing.T) {
	ctx := context.Background()
	builder := func(appID string) *token.Builder {
		b, err := token.NewBuilder(appID, testAppCert)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	const appA, appB = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	log, err := audit.NewMemory([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := policy.Open(ctx, policy.NewMemStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rules.Close)
	if _, err := rules.Add(ctx, policy.Actor{Subject: "test", Operator: true},
		policy.Rule{Subject: "*", Channel: "room", Role: policy.Publisher, Effect: policy.Allow, Project: "b"}); err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Projects: []Project{
		{Name: "a", Tokens: builder(appA), DefaultTTL: time.Hour, MaxTTL: time.Hour},
		{Name: "b", Tokens: builder(appB), DefaultTTL: time.Minute, MaxTTL: 2 * time.Minute, Issuers: []string{"partner"}},
	}}, Deps{Policy: rules, Log: log, UIDs: identity.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	home := auth.Identity{Issuer: "https://home", Subject: "alice"}
	partner := auth.Identity{Issuer: "https://partner", Subject: "bob", Qualifier: "partner"}
	req := func(id auth.Identity, project string) (Grant, error) {
		uid, err := b.BoundUID(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return b.Issue(ctx, id, Request{Project: project, Service: RTC, Channel: "room", Role: "publisher", TokenType: TokenTypeUID, User: itoa(uid)})
	}

	g, err := req(partner, "b")
	if err != nil || g.Project != "b" || g.AppID != appB || g.TTL != time.Minute {
		t.Fatalf("partner in b: %+v, %v", g, err)
	}
	if tk, err := token.Parse(g.RTCToken); err != nil || tk.AppID != appB {
		t.Errorf("the token carries App ID %q, %v; want b's", tk.AppID, err)
	}
	if _, err := req(partner, "a"); apperr.KindOf(err) != apperr.Forbidden {
		t.Errorf("partner in a, where no rule allows: %v; want Forbidden", err)
	}
	if _, err := req(partner, ""); apperr.KindOf(err) != apperr.Invalid || !strings.Contains(err.Error(), "a, b") {
		t.Errorf("partner without a project: %v; want Invalid naming a, b", err)
	}
	if g, err := req(home, ""); apperr.KindOf(err) != apperr.Forbidden || g.RTCToken != "" {
		t.Errorf("home user without a project (only a is theirs, and no rule allows): %v", err)
	}
	if _, err := req(home, "b"); apperr.KindOf(err) != apperr.Invalid || strings.Contains(err.Error(), "b,") || !strings.Contains(err.Error(), "yours are a") {
		t.Errorf("home user in b: %v; want Invalid naming only a", err)
	}
	if _, err := req(home, strings.Repeat("x", 500)); apperr.KindOf(err) != apperr.Invalid {
		t.Errorf("an unknown, long project: %v; want Invalid", err)
	}
	page, err := log.Search(ctx, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 6 {
		t.Fatalf("%d records, want 6 (every decision)", len(page.Records))
	}
	got := map[string]int{}
	for _, r := range page.Records {
		got[r.Project+"/"+r.AppID+"/"+string(r.Decision)]++
	}
	// A refused request for a project the broker serves is recorded under
	// it (its auditors see it), with no App ID: nothing was signed.
	want := map[string]int{"b/" + appB + "/granted": 1, "a/" + appA + "/denied": 2, "b//invalid": 1, "//invalid": 2}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("records %v, want %v", got, want)
			break
		}
	}
}
