package httpapi

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/agora"
	"github.com/broker-dev/broker/internal/agora/agoratest"
	"github.com/broker-dev/broker/internal/review"
	"github.com/broker-dev/broker/internal/revoke"
)

// TestAgoraEvents_KeepsSignedChannelEventsOnce: a join signed with the
// project's NCS secret is kept, its resend is not kept twice; a forged,
// unsigned or oversized notification is refused; an event of another
// product is acknowledged and dropped.
func TestAgoraEvents_KeepsSignedChannelEventsOnce(t *testing.T) {
	secret := []byte("ncs-secret-for-tests")
	store := review.NewMemory()
	f := newAPI(t, func(d *Deps) {
		d.AgoraEvents = AgoraEvents{Secrets: map[string][]byte{"default": secret, "acme": []byte("acme's own secret")}, Store: store, Log: d.Audit, MaxTTL: 24 * time.Hour}
	}, false)
	at := time.Now().Truncate(time.Second)
	join := fmt.Sprintf(`{"noticeId":"2000001428:4330:107","productId":1,"eventType":103,"notifyMs":%d,"sid":"s1",`+
		`"payload":{"channelName":"demo","uid":4321,"platform":1,"clientSeq":1625051030746,"ts":%d}}`, at.UnixMilli(), at.Unix())
	post := func(body, sig string) (*http.Response, map[string]any) {
		t.Helper()
		return f.do(t, "POST", "/v1/agora/events", "", body, "Content-Type", "application/json", "Agora-Signature-V2", sig)
	}
	for i, want := range []string{"kept", "duplicate"} {
		if resp, m := post(join, agoratest.SignV2(secret, []byte(join))); resp.StatusCode != 200 || m["result"] != want {
			t.Fatalf("notification #%d: %d %v, want %s", i+1, resp.StatusCode, m, want)
		}
	}
	events, err := store.Events(t.Context(), "default", "demo", at.Add(-time.Minute), at.Add(time.Minute), 0)
	if err != nil || len(events) != 1 || events[0].UID != 4321 || !events[0].At.Equal(at) || events[0].Explained == nil || *events[0].Explained {
		t.Fatalf("kept events: %+v, %v; want 4321's join, which no grant explains", events, err)
	}
	// alice's join with the token the broker granted her is explained.
	uid := f.uid(t, "alice")
	if resp, _ := f.do(t, "GET", "/rtc/demo/publisher/uid/"+uid, "alice", ""); resp.StatusCode != 200 {
		t.Fatalf("alice's token: %d", resp.StatusCode)
	}
	aliceJoin := fmt.Sprintf(`{"noticeId":"alice-1","productId":1,"eventType":103,"notifyMs":1,"payload":{"channelName":"demo","uid":%s,"platform":1,"clientSeq":2,"ts":%d}}`,
		uid, time.Now().Unix())
	if resp, m := post(aliceJoin, agoratest.SignV2(secret, []byte(aliceJoin))); resp.StatusCode != 200 || m["result"] != "kept" {
		t.Fatalf("alice's join: %d %v", resp.StatusCode, m)
	}
	resp, m := f.do(t, "GET", "/v1/audit/unexplained", "root;admins", "")
	joins, _ := m["joins"].([]any)
	if resp.StatusCode != 200 || len(joins) != 1 || joins[0].(map[string]any)["uid"].(float64) != 4321 {
		t.Fatalf("unexplained joins: %d %v; want 4321's only", resp.StatusCode, m)
	}
	if resp, _ := f.do(t, "GET", "/v1/audit/unexplained", "alice", ""); resp.StatusCode != 403 {
		t.Errorf("unexplained joins without the auditor's right: %d", resp.StatusCode)
	}
	for name, tc := range map[string]struct {
		body, sig string
		status    int
	}{
		"forged":     {join, agoratest.SignV2([]byte("another secret"), []byte(join)), 401},
		"unsigned":   {join, "", 401},
		"oversized":  {join + strings.Repeat(" ", 64<<10), agoratest.SignV2(secret, []byte(join+strings.Repeat(" ", 64<<10))), 413},
		"not JSON":   {"{nope", agoratest.SignV2(secret, []byte("{nope")), 400},
		"other kind": {`{"noticeId":"x-1","productId":3,"eventType":40,"notifyMs":1,"payload":{}}`, "", 200},
	} {
		if tc.status == 200 {
			tc.sig = agoratest.SignV2(secret, []byte(tc.body))
		}
		if resp, m := post(tc.body, tc.sig); resp.StatusCode != tc.status {
			t.Errorf("%s: %d %v, want %d", name, resp.StatusCode, m, tc.status)
		}
	}
	// Each project's notifications come to its own path, signed with its
	// own secret: the default project's secret does not sign acme's.
	for path, tc := range map[string]struct {
		secret string
		status int
	}{
		"/v1/agora/events/acme":    {"acme's own secret", 200},
		"/v1/agora/events/default": {string(secret), 200},
		"/v1/agora/events/other":   {string(secret), 404},
	} {
		if resp, _ := f.do(t, "POST", path, "", join, "Agora-Signature-V2", agoratest.SignV2([]byte(tc.secret), []byte(join))); resp.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, tc.status)
		}
	}
	if resp, _ := f.do(t, "POST", "/v1/agora/events/acme", "", join, "Agora-Signature-V2", agoratest.SignV2(secret, []byte(join))); resp.StatusCode != 401 {
		t.Errorf("acme's notification signed with the default project's secret: %d, want 401", resp.StatusCode)
	}
	if events, _ := store.Events(t.Context(), "acme", "demo", at.Add(-time.Minute), at.Add(time.Minute), 0); len(events) != 1 {
		t.Errorf("acme's events %+v, want its join once", events)
	}
}

// TestAccessReview_WhoCouldWhoGotWhoDid: over a period with a policy change
// in the middle, the review shows both policies, the grants and the joins,
// and where they part.
func TestAccessReview_WhoCouldWhoGotWhoDid(t *testing.T) {
	secret := []byte("ncs-secret-for-tests")
	store := review.NewMemory()
	f := newAPI(t, func(d *Deps) {
		d.AgoraEvents = AgoraEvents{Secrets: map[string][]byte{"default": secret}, Store: store, Log: d.Audit, MaxTTL: 24 * time.Hour}
	}, false)
	admin := "root;admins"
	// Agora's times are whole seconds: the period starts before this one.
	start := time.Now().Add(-2 * time.Second).UTC()
	uid := f.uid(t, "alice")
	if resp, _ := f.do(t, "GET", "/rtc/demo/publisher/uid/"+uid, "alice", ""); resp.StatusCode != 200 {
		t.Fatalf("alice's token: %d", resp.StatusCode)
	}
	time.Sleep(5 * time.Millisecond)
	// The policy changes in the middle: the demo rule goes.
	_, m := f.do(t, "GET", "/v1/policies?channel=demo", admin, "")
	id := strconv.FormatFloat(m["rules"].([]any)[0].(map[string]any)["id"].(float64), 'f', 0, 64)
	if resp, _ := f.do(t, "DELETE", "/v1/policies/"+id, admin, ""); resp.StatusCode != 204 {
		t.Fatalf("remove the demo rule: %d", resp.StatusCode)
	}
	for i, u := range []string{uid, "999"} {
		join := fmt.Sprintf(`{"noticeId":"j-%d","productId":1,"eventType":103,"notifyMs":1,"payload":{"channelName":"demo","uid":%s,"platform":1,"clientSeq":%d,"ts":%d}}`,
			i, u, i, time.Now().Unix())
		if resp, m := f.do(t, "POST", "/v1/agora/events", "", join, "Agora-Signature-V2", agoratest.SignV2(secret, []byte(join))); resp.StatusCode != 200 {
			t.Fatalf("join %d: %d %v", i, resp.StatusCode, m)
		}
	}
	q := "/v1/audit/access?channel=demo&role=publisher&from=" + url.QueryEscape(start.Format(time.RFC3339Nano)) +
		"&to=" + url.QueryEscape(time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano))
	resp, m := f.do(t, "GET", q, admin, "")
	if resp.StatusCode != 200 {
		t.Fatalf("access review: %d %v", resp.StatusCode, m)
	}
	could := m["could"].([]any)
	allows := func(c any) bool {
		for _, rc := range c.(map[string]any)["allowed"].([]any) {
			if rc.(map[string]any)["rule"].(map[string]any)["channel"] == "demo" {
				return true
			}
		}
		return false
	}
	if len(could) < 2 || !allows(could[len(could)-2]) || allows(could[len(could)-1]) {
		t.Fatalf("could: %v; want the policy with the demo rule, then the one without", could)
	}
	if got := m["got"].([]any); len(got) != 1 || got[0].(map[string]any)["subject"] != "alice" {
		t.Fatalf("got: %v; want alice", got)
	}
	if did := m["did"].([]any); len(did) != 2 || m["joinedNotGranted"].([]any)[0].(float64) != 999 || len(m["grantedNotJoined"].([]any)) != 0 {
		t.Fatalf("did: %v, joined without a grant %v, granted never joined %v", did, m["joinedNotGranted"], m["grantedNotJoined"])
	}
	// The same for a user: the rules that applied to alice, her grants per
	// channel, her joins.
	uq := "/v1/audit/access?subject=alice&role=publisher&from=" + url.QueryEscape(start.Format(time.RFC3339Nano)) +
		"&to=" + url.QueryEscape(time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano))
	resp, m = f.do(t, "GET", uq, admin, "")
	if resp.StatusCode != 200 || m["subject"] != "alice" {
		t.Fatalf("alice's access review: %d %v", resp.StatusCode, m)
	}
	if could := m["could"].([]any); len(could) < 2 || !allows(could[len(could)-2]) || allows(could[len(could)-1]) {
		t.Fatalf("alice could: %v; want the demo rule, then not", could)
	}
	if got := m["got"].([]any); len(got) != 1 || got[0].(map[string]any)["channel"] != "demo" {
		t.Fatalf("alice got: %v", got)
	}
	if did, never := m["did"].([]any), m["channelsGrantedNotJoined"]; len(did) != 1 || did[0].(map[string]any)["channel"] != "demo" || never != nil {
		t.Fatalf("alice did: %v, granted never joined %v", did, m["channelsGrantedNotJoined"])
	}
	if resp, _ := f.do(t, "GET", uq+"&channel=demo", admin, ""); resp.StatusCode != 400 {
		t.Errorf("a review of a channel and a subject at once: %d, want 400", resp.StatusCode)
	}
	if resp, _ := f.do(t, "GET", q+"&format=csv", admin, ""); resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/csv; charset=utf-8" {
		t.Fatalf("access review as CSV: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp, _ := f.do(t, "GET", q, "alice", ""); resp.StatusCode != 403 {
		t.Errorf("access review without the auditor's right: %d", resp.StatusCode)
	}
	if resp, _ := f.do(t, "GET", "/v1/audit/access?channel=demo", admin, ""); resp.StatusCode != 400 {
		t.Errorf("access review without a period: %d", resp.StatusCode)
	}
	if resp, m := f.do(t, "GET", strings.Replace(q, "role=publisher", "role=owner", 1), admin, ""); resp.StatusCode != 400 || m["field"] != "role" {
		t.Errorf("access review of role owner: %d %v, want 400 naming the role", resp.StatusCode, m)
	}
}

// TestRevocations_API: revoke alice's tokens (bans in Agora's contract
// server, new tokens refused, bob untouched), list, lift.
func TestRevocations_API(t *testing.T) {
	server := agoratest.New(t, "customer-revocations", "customer-secret")
	client, err := agora.NewClient(agora.Config{BaseURL: server.URL, CustomerID: "customer-revocations", CustomerSecret: "customer-secret", HTTP: server.Client()})
	if err != nil {
		t.Fatal(err)
	}
	const appID = "0123456789abcdef0123456789abcdef"
	f := newAPI(t, func(d *Deps) {
		d.Revocations = &revoke.Service{Store: revoke.NewMemory(), Policies: d.Policies, Log: d.Audit,
			Agora: func(string) (string, revoke.Banner) { return appID, client }, MaxTTL: 24 * time.Hour, Qualify: func(string) (string, bool) { return "", true }, Now: time.Now}
	}, false)
	admin := "root;admins"
	uid := f.uid(t, "alice")
	if resp, _ := f.do(t, "GET", "/rtc/demo/publisher/uid/"+uid, "alice", ""); resp.StatusCode != 200 {
		t.Fatalf("alice's token: %d", resp.StatusCode)
	}
	bobUID := f.uid(t, "bob")
	resp, m := f.do(t, "POST", "/v1/revocations", admin, `{"subject":"user:alice","reason":"left the company"}`)
	if resp.StatusCode != 201 || len(m["bans"].([]any)) != 1 || m["bansError"] != nil {
		t.Fatalf("revoke alice: %d %v", resp.StatusCode, m)
	}
	if rules := server.Rules(appID); len(rules) != 1 || strconv.FormatUint(uint64(rules[0].UID), 10) != uid || rules[0].Channel != "demo" {
		t.Fatalf("Agora's bans: %+v; want alice's uid on demo", rules)
	}
	if resp, _ := f.do(t, "GET", "/rtc/demo/publisher/uid/"+uid, "alice", ""); resp.StatusCode != 403 {
		t.Fatalf("alice's new token after the revocation: %d, want 403", resp.StatusCode)
	}
	if resp, _ := f.do(t, "GET", "/rtc/demo/publisher/uid/"+bobUID, "bob", ""); resp.StatusCode != 200 {
		t.Fatalf("bob's token: %d, want 200", resp.StatusCode)
	}
	id := strconv.FormatFloat(m["id"].(float64), 'f', 0, 64)
	if _, l := f.do(t, "GET", "/v1/revocations?active=true", admin, ""); len(l["revocations"].([]any)) != 1 {
		t.Fatalf("active revocations: %v", l)
	}
	if resp, _ := f.do(t, "POST", "/v1/revocations", "alice", `{"subject":"user:bob","reason":"x"}`); resp.StatusCode != 403 {
		t.Fatalf("a revocation without the right: %d", resp.StatusCode)
	}
	if resp, m := f.do(t, "DELETE", "/v1/revocations/"+id, admin, ""); resp.StatusCode != 200 || m["lifted"] == nil {
		t.Fatalf("lift: %d %v", resp.StatusCode, m)
	}
	if len(server.Rules(appID)) != 0 {
		t.Fatal("the ban outlived the lift")
	}
	if resp, _ := f.do(t, "GET", "/rtc/demo/publisher/uid/"+uid, "alice", ""); resp.StatusCode != 200 {
		t.Fatalf("alice after the lift: %d, want 200", resp.StatusCode)
	}
	// A rule that takes publishing on demo from bob orphans his live token:
	// listed, revoked in one request from what the list says, then gone.
	if resp, m := f.do(t, "POST", "/v1/policies", admin, `{"subject":"user:bob","channel":"demo","role":"publisher","effect":"deny"}`); resp.StatusCode != 201 {
		t.Fatalf("deny bob: %d %v", resp.StatusCode, m)
	}
	resp, m = f.do(t, "GET", "/v1/revocations/orphans", admin, "")
	orphans, _ := m["orphans"].([]any)
	if resp.StatusCode != 200 || len(orphans) != 1 {
		t.Fatalf("orphans: %d %v; want bob's token on demo", resp.StatusCode, m)
	}
	o := orphans[0].(map[string]any)
	if o["subject"] != "user:bob" || o["channel"] != "demo" || o["role"] != "publisher" || o["tokens"].(float64) != 1 {
		t.Fatalf("orphan %v", o)
	}
	body := fmt.Sprintf(`{"subject":%q,"channel":%q,"publishOnly":%v,"reason":"publishing taken away"}`, o["subject"], o["channel"], o["publishOnly"])
	if resp, m := f.do(t, "POST", "/v1/revocations", admin, body); resp.StatusCode != 201 || m["ruleId"].(float64) != 0 && o["publishOnly"] == true {
		t.Fatalf("revoke the orphan: %d %v", resp.StatusCode, m)
	}
	if _, m := f.do(t, "GET", "/v1/revocations/orphans", admin, ""); len(m["orphans"].([]any)) != 0 {
		t.Fatalf("orphans after revoking: %v", m)
	}
	if resp, _ := f.do(t, "GET", "/v1/revocations/orphans", "alice", ""); resp.StatusCode != 403 {
		t.Fatalf("orphans without the right: %d", resp.StatusCode)
	}
}
