package agora_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/agora"
	"github.com/broker-dev/broker/internal/agora/agoratest"
	"github.com/broker-dev/broker/internal/apperr"
)

const (
	testApp    = "5f1c0a3e9b7d4c2a8e6f0b1d3c5a7e9f"
	testSecret = "test-only-customer-secret-7f2c91"
)

// setup starts a contract server for an account of the test's own (so that
// no other test shares its rate limiter) and a client for it.
func setup(t *testing.T) (*agoratest.Server, *agora.Client, string) {
	t.Helper()
	customer := "customer-" + t.Name()
	s := agoratest.New(t, customer, testSecret)
	return s, newClient(t, s, customer, testSecret, nil), customer
}

func newClient(t *testing.T, s *agoratest.Server, customer, secret string, hc *http.Client) *agora.Client {
	t.Helper()
	if hc == nil {
		hc = s.Client()
	}
	c, err := agora.NewClient(agora.Config{BaseURL: s.URL, CustomerID: customer, CustomerSecret: secret, HTTP: hc})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

// shortTimeout is an HTTP client for s that gives up on an answer quickly.
func shortTimeout(s *agoratest.Server) *http.Client {
	hc := *s.Client()
	hc.Timeout = 300 * time.Millisecond
	return &hc
}

// mentionsSecret reports whether text shows a secret, plainly or inside a
// Basic credential. Tests say that it does, never what it is.
func mentionsSecret(text string, secrets ...string) bool {
	for _, s := range secrets {
		if strings.Contains(text, s) || strings.Contains(text, base64.StdEncoding.EncodeToString([]byte(s))) {
			return true
		}
		if b64 := base64.StdEncoding.EncodeToString([]byte(":" + s)); strings.Contains(text, b64[4:]) {
			return true
		}
	}
	return false
}

func TestClient_CreateListUpdateDelete(t *testing.T) {
	t.Parallel()
	s, c, _ := setup(t)
	ctx := context.Background()

	before := time.Now()
	id, err := c.CreateRule(ctx, agora.Rule{
		AppID: testApp, Channel: "lobby-7", UID: 4242, Duration: 90 * time.Second,
		Privileges: []agora.Privilege{agora.PublishAudio, agora.JoinChannel},
	})
	after := time.Now()
	if err != nil {
		t.Fatalf("CreateRule: %v", err)
	}
	channelOnly, err := c.CreateRule(ctx, agora.Rule{AppID: testApp, Channel: "stage", Duration: time.Hour})
	if err != nil {
		t.Fatalf("CreateRule (channel only): %v", err)
	}

	rules, err := c.ListRules(ctx, testApp)
	if err != nil {
		t.Fatalf("ListRules: %v", err)
	}
	if len(rules) != 2 {
		t.Fatalf("ListRules = %d rules, want 2: %+v", len(rules), rules)
	}
	got := rules[slices.IndexFunc(rules, func(r agora.Rule) bool { return r.ID == id })]
	if got.AppID != testApp || got.Channel != "lobby-7" || got.UID != 4242 || got.IP != "" {
		t.Errorf("listed rule = %+v, want app %s, channel lobby-7, uid 4242, no ip", got, testApp)
	}
	if want := []agora.Privilege{agora.PublishAudio, agora.JoinChannel}; !slices.Equal(got.Privileges, want) {
		t.Errorf("privileges = %v, want %v", got.Privileges, want)
	}
	// The expiry is 90 s after Agora made the rule, which was during the call
	// (listed with millisecond precision).
	if lo, hi := before.Add(90*time.Second-time.Millisecond), after.Add(90*time.Second); got.Expires.Before(lo) || got.Expires.After(hi) {
		t.Errorf("expires %v, want within [%v, %v]", got.Expires, lo, hi)
	}
	other := rules[slices.IndexFunc(rules, func(r agora.Rule) bool { return r.ID == channelOnly })]
	if other.Channel != "stage" || other.UID != 0 || other.IP != "" || !slices.Equal(other.Privileges, []agora.Privilege{agora.JoinChannel}) {
		t.Errorf("channel-only rule = %+v, want channel stage, any uid, join_channel (the default)", other)
	}

	before = time.Now()
	if err := c.UpdateRule(ctx, testApp, id, 2*time.Hour); err != nil {
		t.Fatalf("UpdateRule: %v", err)
	}
	held := s.Rules(testApp)
	if held[0].ID != id || held[0].Seconds != 7200 || held[0].Expires.Before(before.Add(2*time.Hour)) {
		t.Errorf("after update the server holds %+v, want rule %d for 7200 s from the update", held[0], id)
	}

	if err := c.DeleteRule(ctx, testApp, id); err != nil {
		t.Fatalf("DeleteRule: %v", err)
	}
	rules, err = c.ListRules(ctx, testApp)
	if err != nil {
		t.Fatalf("ListRules after delete: %v", err)
	}
	if len(rules) != 1 || rules[0].ID != channelOnly {
		t.Errorf("after delete ListRules = %+v, want only rule %d", rules, channelOnly)
	}
	if err := c.DeleteRule(ctx, testApp, id); apperr.KindOf(err) != apperr.NotFound {
		t.Errorf("deleting rule %d again: %v, want a NotFound error", id, err)
	}
}

func TestClient_RoundsDurationUpToWholeSeconds(t *testing.T) {
	t.Parallel()
	s, c, _ := setup(t)
	for _, tc := range []struct {
		d    time.Duration
		want int64
	}{
		{9*time.Second + time.Millisecond, 10},
		{10*time.Second + 200*time.Millisecond, 11},
		{agora.MaxBan, 86430},
	} {
		id, err := c.CreateRule(context.Background(), agora.Rule{AppID: testApp, UID: 7, Duration: tc.d})
		if err != nil {
			t.Fatalf("CreateRule(%v): %v", tc.d, err)
		}
		held := s.Rules(testApp)
		if r := held[len(held)-1]; r.ID != id || r.Seconds != tc.want {
			t.Errorf("CreateRule(%v) sent %d s, want %d s", tc.d, r.Seconds, tc.want)
		}
	}
}

func TestClient_RefusesInvalidRequestsBeforeSending(t *testing.T) {
	t.Parallel()
	s, c, _ := setup(t)
	ctx := context.Background()
	valid := agora.Rule{AppID: testApp, Channel: "lobby", Duration: time.Minute}
	with := func(change func(*agora.Rule)) agora.Rule {
		r := valid
		change(&r)
		return r
	}
	for _, tc := range []struct {
		name  string
		rule  agora.Rule
		field string
	}{
		{"no channel, uid or ip", with(func(r *agora.Rule) { r.Channel = "" }), "rule"},
		{"app id too short", with(func(r *agora.Rule) { r.AppID = testApp[:31] }), "appid"},
		{"app id not hex", with(func(r *agora.Rule) { r.AppID = "g" + testApp[1:] }), "appid"},
		{"no duration", with(func(r *agora.Rule) { r.Duration = 0 }), "duration"},
		{"shorter than Agora's minimum", with(func(r *agora.Rule) { r.Duration = 9 * time.Second }), "duration"},
		{"longer than Agora's maximum", with(func(r *agora.Rule) { r.Duration = agora.MaxBan + time.Second }), "duration"},
		{"longer than the maximum once rounded up", with(func(r *agora.Rule) { r.Duration = agora.MaxBan + time.Millisecond }), "duration"},
		{"a week", with(func(r *agora.Rule) { r.Duration = 7 * 24 * time.Hour }), "duration"},
		{"unknown privilege", with(func(r *agora.Rule) { r.Privileges = []agora.Privilege{"publish_screen"} }), "privileges"},
		{"ip 0", with(func(r *agora.Rule) { r.IP = "0" }), "ip"},
		{"unspecified ip", with(func(r *agora.Rule) { r.IP = "0.0.0.0" }), "ip"},
		{"ip with a port", with(func(r *agora.Rule) { r.IP = "192.0.2.7:443" }), "ip"},
		{"channel with a forbidden character", with(func(r *agora.Rule) { r.Channel = "lobby/7" }), "channel"},
		{"channel too long", with(func(r *agora.Rule) { r.Channel = strings.Repeat("a", 64) }), "channel"},
	} {
		id, err := c.CreateRule(ctx, tc.rule)
		e, ok := apperr.As(err)
		if !ok || e.Kind != apperr.Invalid || e.Field != tc.field || id != 0 {
			t.Errorf("%s: CreateRule = %d, %v; want an Invalid error about %q", tc.name, id, err, tc.field)
		}
	}
	for name, err := range map[string]error{
		"update too long":   c.UpdateRule(ctx, testApp, 1001, agora.MaxBan+time.Second),
		"update too short":  c.UpdateRule(ctx, testApp, 1001, time.Second),
		"update no id":      c.UpdateRule(ctx, testApp, 0, time.Minute),
		"delete bad app id": c.DeleteRule(ctx, "not-an-app-id", 1001),
		"list bad app id":   func() error { _, err := c.ListRules(ctx, testApp+"0"); return err }(),
	} {
		if apperr.KindOf(err) != apperr.Invalid {
			t.Errorf("%s: %v, want an Invalid error", name, err)
		}
	}
	if n := s.Requests(); n != 0 {
		t.Errorf("the server received %d requests, want none", n)
	}
}

func TestClient_StaysUnderAccountRateLimit(t *testing.T) {
	t.Parallel()
	s, a, customer := setup(t)
	// A second client of the same account shares the account's limit.
	b := newClient(t, s, customer, testSecret, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i, c := range []*agora.Client{a, b} {
		wg.Go(func() {
			for j := range 10 {
				_, err := c.CreateRule(context.Background(), agora.Rule{AppID: testApp, UID: uint32(100*(i+1) + j), Duration: time.Minute})
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("CreateRule: %v", err)
		}
	}
	// The server answers 429 (and records a violation) for an 11th request
	// within a second; no request needed a retry.
	if n, rules := s.Requests(), len(s.Rules(testApp)); n != 20 || rules != 20 {
		t.Errorf("server saw %d requests and holds %d rules, want 20 and 20", n, rules)
	}
}

func TestClient_RetriesUnavailableAndMakesOneRule(t *testing.T) {
	t.Parallel()
	s, c, _ := setup(t)
	s.InjectStatus(http.StatusServiceUnavailable, 2)
	id, err := c.CreateRule(context.Background(), agora.Rule{AppID: testApp, UID: 9, Duration: time.Minute})
	if err != nil {
		t.Fatalf("CreateRule: %v", err)
	}
	if held := s.Rules(testApp); len(held) != 1 || held[0].ID != id {
		t.Errorf("server holds %+v, want exactly rule %d", held, id)
	}
	if n := s.Requests(); n != 3 {
		t.Errorf("server saw %d requests, want 3 (two refused, one create)", n)
	}
}

func TestClient_FindsRuleAfterGatewayTimeoutInsteadOfCreatingTwice(t *testing.T) {
	t.Parallel()
	s, c, _ := setup(t)
	s.InjectCreate504()
	id, err := c.CreateRule(context.Background(), agora.Rule{AppID: testApp, Channel: "lobby", UID: 9, Duration: time.Hour,
		Privileges: []agora.Privilege{agora.PublishVideo}})
	if err != nil {
		t.Fatalf("CreateRule: %v", err)
	}
	if held := s.Rules(testApp); len(held) != 1 || held[0].ID != id {
		t.Errorf("server holds %+v, want exactly rule %d", held, id)
	}
	if n := s.Requests(); n != 2 {
		t.Errorf("server saw %d requests, want 2 (the create, then a list)", n)
	}
}

func TestClient_FindsRuleAfterTimeoutInsteadOfCreatingTwice(t *testing.T) {
	t.Parallel()
	s, _, customer := setup(t)
	c := newClient(t, s, customer, testSecret, shortTimeout(s))
	s.InjectDelay(1, time.Minute) // the create is made, its answer never comes
	id, err := c.CreateRule(context.Background(), agora.Rule{AppID: testApp, IP: "192.0.2.7", Duration: time.Hour})
	if err != nil {
		t.Fatalf("CreateRule: %v", err)
	}
	if held := s.Rules(testApp); len(held) != 1 || held[0].ID != id {
		t.Errorf("server holds %+v, want exactly rule %d", held, id)
	}
}

func TestClient_ExtendsAnOlderMatchingRuleRatherThanMakeASecond(t *testing.T) {
	t.Parallel()
	s, c, _ := setup(t)
	ctx := context.Background()
	rule := agora.Rule{AppID: testApp, UID: 31, Duration: time.Minute}
	old, err := c.CreateRule(ctx, rule)
	if err != nil {
		t.Fatalf("CreateRule: %v", err)
	}
	// A 504 from a gateway that never reached Agora: the list shows only the
	// older, shorter ban of the same scope.
	s.InjectStatus(http.StatusGatewayTimeout, 1)
	rule.Duration = time.Hour
	before := time.Now()
	id, err := c.CreateRule(ctx, rule)
	if err != nil {
		t.Fatalf("CreateRule: %v", err)
	}
	held := s.Rules(testApp)
	if id != old || len(held) != 1 || held[0].Seconds != 3600 || held[0].Expires.Before(before.Add(time.Hour)) {
		t.Errorf("CreateRule = %d and the server holds %+v; want rule %d alone, extended to an hour", id, held, old)
	}
}

func TestClient_GivesUpAfterThreeRetries(t *testing.T) {
	t.Parallel()
	s, c, _ := setup(t)
	s.InjectStatus(http.StatusServiceUnavailable, 10)
	_, err := c.ListRules(context.Background(), testApp)
	if apperr.KindOf(err) != apperr.Unavailable {
		t.Errorf("ListRules: %v, want an Unavailable error", err)
	}
	if n := s.Requests(); n != 4 {
		t.Errorf("server saw %d requests, want 4 (one try, three retries)", n)
	}
}

func TestClient_DoesNotRetryARefusedRequest(t *testing.T) {
	t.Parallel()
	s, c, _ := setup(t)
	s.InjectStatus(http.StatusBadRequest, 1)
	_, err := c.CreateRule(context.Background(), agora.Rule{AppID: testApp, UID: 9, Duration: time.Minute})
	if apperr.KindOf(err) != apperr.Invalid {
		t.Errorf("CreateRule: %v, want an Invalid error", err)
	}
	var re *agora.RemoteError
	if !errors.As(err, &re) || re.Status != http.StatusBadRequest || re.Message != "injected failure" {
		t.Errorf("cause = %#v, want Agora's 400 and its message", re)
	}
	if n := s.Requests(); n != 1 {
		t.Errorf("server saw %d requests, want 1", n)
	}
}

func TestClient_DeleteWhoseAnswerWasLostIsDone(t *testing.T) {
	t.Parallel()
	s, c, customer := setup(t)
	id, err := c.CreateRule(context.Background(), agora.Rule{AppID: testApp, UID: 5, Duration: time.Minute})
	if err != nil {
		t.Fatalf("CreateRule: %v", err)
	}
	impatient := newClient(t, s, customer, testSecret, shortTimeout(s))
	s.InjectDelay(1, time.Minute) // the delete is done, its answer never comes; the retry finds no rule
	if err := impatient.DeleteRule(context.Background(), testApp, id); err != nil {
		t.Errorf("DeleteRule: %v, want success", err)
	}
	if held := s.Rules(testApp); len(held) != 0 {
		t.Errorf("server holds %+v, want none", held)
	}
}

func TestClient_RefusedCredentialsAreUnavailableAndSecretFree(t *testing.T) {
	t.Parallel()
	s, _, customer := setup(t)
	const wrong = "wrong-secret-for-tests-4d1e"
	c := newClient(t, s, customer, wrong, nil)
	_, err := c.CreateRule(context.Background(), agora.Rule{AppID: testApp, UID: 9, Duration: time.Minute})
	if apperr.KindOf(err) != apperr.Unavailable {
		t.Errorf("CreateRule with a wrong secret: kind %s, want %s (the broker's caller did nothing wrong)", apperr.KindOf(err), apperr.Unavailable)
	}
	if err == nil || mentionsSecret(err.Error(), wrong, testSecret) || !strings.Contains(err.Error(), "customer ID and secret") {
		t.Errorf("the error must say the credentials were refused and must not show a secret (it shows one: %v)",
			err != nil && mentionsSecret(err.Error(), wrong, testSecret))
	}
	if n := s.Requests(); n != 1 {
		t.Errorf("server saw %d requests, want 1 (no retry)", n)
	}
	if v := s.TakeViolations(); len(v) != 1 || !strings.Contains(v[0], "Basic authorization") {
		t.Errorf("violations = %q, want the refused credentials", v)
	}
}

func TestClient_CancelledWhileWaitingForTheRateLimit(t *testing.T) {
	t.Parallel()
	s, c, _ := setup(t)
	// Ten lists held unanswered hold the account's ten tokens.
	hold, release := context.WithCancel(context.Background())
	s.InjectDelay(10, time.Minute)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { _, _ = c.ListRules(hold, testApp) })
	}
	for s.Requests() < 10 {
		time.Sleep(5 * time.Millisecond)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.ListRules(ctx, testApp)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // let it wait; the test holds either way
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("ListRules with a cancelled context: %v, want context.Canceled", err)
	}
	if n := s.Requests(); n != 10 {
		t.Errorf("server saw %d requests, want 10: the cancelled one must not be sent", n)
	}
	release()
	wg.Wait()
}

func TestNewClient_RefusesUnsafeConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]agora.Config{
		"plain http":         {BaseURL: "http://api.agora.io", CustomerID: "c", CustomerSecret: testSecret},
		"http, not loopback": {BaseURL: "http://10.0.0.1:8080", CustomerID: "c", CustomerSecret: testSecret},
		"credentials in url": {BaseURL: "https://c:" + testSecret + "@api.agora.io", CustomerID: "c", CustomerSecret: testSecret},
		"no secret":          {CustomerID: "c"},
		"no customer id":     {CustomerSecret: testSecret},
		"colon in id":        {CustomerID: "a:b", CustomerSecret: testSecret},
	} {
		_, err := agora.NewClient(cfg)
		if apperr.KindOf(err) != apperr.Invalid {
			t.Errorf("%s: %v, want an Invalid error", name, err)
		}
		if err != nil && mentionsSecret(err.Error(), testSecret) {
			t.Errorf("%s: the error shows the secret", name)
		}
	}
	if _, err := agora.NewClient(agora.Config{CustomerID: "c", CustomerSecret: testSecret}); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for _, base := range []string{"http://127.0.0.1:8080", "http://[::1]:8080", "http://localhost:8080"} {
		if _, err := agora.NewClient(agora.Config{BaseURL: base, CustomerID: "c", CustomerSecret: testSecret}); err != nil {
			t.Errorf("a contract server on loopback, %s: %v", base, err)
		}
	}
}

func TestConfigAndClient_NeverPrintTheSecret(t *testing.T) {
	t.Parallel()
	cfg := agora.Config{CustomerID: "c", CustomerSecret: testSecret}
	c, err := agora.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "agora", cfg, "client", c)
	for name, text := range map[string]string{
		"%v config":   fmt.Sprintf("%v", cfg),
		"%+v config":  fmt.Sprintf("%+v", cfg),
		"%#v config":  fmt.Sprintf("%#v", cfg),
		"%+v client":  fmt.Sprintf("%+v", c),
		"%#v client":  fmt.Sprintf("%#v", c),
		"%+v *config": fmt.Sprintf("%+v", &cfg),
		"slog":        logged.String(),
	} {
		if mentionsSecret(text, testSecret) {
			t.Errorf("%s shows the secret", name)
		}
	}
}
