package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/broker-dev/broker/internal/policy"
)

func TestPolicies_NeedAdminRights(t *testing.T) {
	f := newAPI(t, nil, false)
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/v1/policies", ""},
		{"POST", "/v1/policies", `{"subject":"*","channel":"x","role":"publisher","effect":"allow"}`},
		{"DELETE", "/v1/policies/1", ""},
		{"POST", "/v1/policies/explain", `{"subject":"a","channel":"x","role":"publisher"}`},
		{"GET", "/v1/policies/export", ""},
		{"POST", "/v1/policies/import", "subject,channel,role,effect,maxTtlSeconds\n"},
		{"GET", "/v1/policies/history", ""},
		{"GET", "/v1/audit", ""},
		{"GET", "/v1/audit/export", ""},
		{"POST", "/v1/audit/lookup", `{"token":"007x"}`},
		{"GET", "/v1/audit/verify", ""},
	} {
		resp, m := f.do(t, c.method, c.path, "mallory", c.body)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s %s as a non-admin: %d %v, want 403", c.method, c.path, resp.StatusCode, m)
		}
	}
}

func TestPolicies_AddListExplainRemove(t *testing.T) {
	f := newAPI(t, nil, false)
	admin := "root;admins"
	resp, m := f.do(t, "POST", "/v1/policies", admin, `{"subject":"group:ops","channel":"ops-*","role":"publisher","effect":"allow","maxTtlSeconds":600}`)
	if resp.StatusCode != 201 || m["id"] == nil || resp.Header.Get("Location") == "" {
		t.Fatalf("add: %d %v", resp.StatusCode, m)
	}
	id := int(m["id"].(float64))

	resp, m = f.do(t, "POST", "/v1/policies", admin, `{"subject":"group:ops","channel":"ops-*","role":"publisher","effect":"allow","maxTtlSeconds":600}`)
	if resp.StatusCode != 409 {
		t.Fatalf("duplicate: %d %v, want 409", resp.StatusCode, m)
	}
	resp, m = f.do(t, "POST", "/v1/policies", admin, `{"subject":"group:ops","channel":"ops/*","role":"publisher","effect":"allow"}`)
	if resp.StatusCode != 400 || m["field"] != "channel" {
		t.Fatalf("bad channel: %d %v, want 400 naming channel", resp.StatusCode, m)
	}
	resp, m = f.do(t, "POST", "/v1/policies", admin, `{"subject":"group:ops","channel":"ops","role":"owner","effect":"allow"}`)
	if resp.StatusCode != 400 || m["field"] != "role" {
		t.Fatalf("bad role: %d %v, want 400 naming role", resp.StatusCode, m)
	}

	resp, m = f.do(t, "GET", "/v1/policies?subject=group:ops", admin, "")
	if rules := m["rules"].([]any); resp.StatusCode != 200 || len(rules) != 1 {
		t.Fatalf("list: %d %v", resp.StatusCode, m)
	}

	resp, m = f.do(t, "POST", "/v1/policies/explain", admin, `{"subject":"eve","groups":["ops"],"channel":"ops-1","role":"subscriber"}`)
	if resp.StatusCode != 200 || m["allowed"] != true || m["maxTtlSeconds"].(float64) != 600 || len(m["matches"].([]any)) == 0 {
		t.Fatalf("explain: %d %v", resp.StatusCode, m)
	}

	resp, _ = f.do(t, "DELETE", "/v1/policies/"+strconv.Itoa(id), admin, "")
	if resp.StatusCode != 204 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	resp, m = f.do(t, "DELETE", "/v1/policies/"+strconv.Itoa(id), admin, "")
	if resp.StatusCode != 404 {
		t.Fatalf("delete again: %d %v, want 404", resp.StatusCode, m)
	}
	resp, m = f.do(t, "GET", "/v1/policies/history", admin, "")
	if resp.StatusCode != 200 || len(m["changes"].([]any)) < 2 {
		t.Fatalf("history: %d %v", resp.StatusCode, m)
	}
}

func TestPolicies_ImportIsAllOrNothingAndExportRoundTrips(t *testing.T) {
	f := newAPI(t, nil, false)
	admin := "root;admins"
	bad := "subject,channel,role,effect,maxTtlSeconds\ngroup:a,room1,publisher,allow,0\ngroup:b,room2,king,allow,0\n"
	resp, m := f.do(t, "POST", "/v1/policies/import", admin, bad)
	if resp.StatusCode != 400 || !strings.Contains(m["detail"].(string)+m["field"].(string), "role") {
		t.Fatalf("bad import: %d %v", resp.StatusCode, m)
	}
	if _, m := f.do(t, "GET", "/v1/policies?subject=group:a", admin, ""); len(m["rules"].([]any)) != 0 {
		t.Fatal("a failed import applied some rules")
	}
	good := "subject,channel,role,effect,maxTtlSeconds\ngroup:a,room1,publisher,allow,0\ngroup:b,room2,subscriber,deny,0\n"
	if resp, m := f.do(t, "POST", "/v1/policies/import", admin, good); resp.StatusCode != 200 || m["imported"].(float64) != 2 {
		t.Fatalf("import: %d %v", resp.StatusCode, m)
	}
	req, _ := http.NewRequest("GET", f.srv.URL+"/v1/policies/export", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") || !strings.Contains(string(body), "group:b,room2,subscriber,deny") {
		t.Fatalf("export: %s %q", resp.Header.Get("Content-Type"), body)
	}
	// The same as a policy document, which reads back.
	req, _ = http.NewRequest("GET", f.srv.URL+"/v1/policies/export?format=yaml", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	rules, err := policy.ReadDocument(bytes.NewReader(body))
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/yaml") || err != nil ||
		!slices.ContainsFunc(rules, func(r policy.LineRule) bool { return r.Rule.Subject == "group:b" && r.Rule.Effect == policy.Deny }) {
		t.Fatalf("export as yaml: %d %s %v\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), err, body)
	}
	if resp, m := f.do(t, "GET", "/v1/policies/export?format=xml", admin, ""); resp.StatusCode != 400 || m["field"] != "format" {
		t.Fatalf("export as xml: %d %v", resp.StatusCode, m)
	}
}

func TestAudit_SearchLookupVerifyExport(t *testing.T) {
	f := newAPI(t, nil, false)
	uid := f.uid(t, "alice")
	_, tok := f.do(t, "GET", "/rtc/demo/publisher/uid/"+uid, "alice", "")
	f.do(t, "GET", "/rtc/secret/publisher/uid/"+uid, "alice", "")
	auditor := "audrey;admins"

	resp, m := f.do(t, "GET", "/v1/audit?subject=alice&decision=denied", auditor, "")
	if resp.StatusCode != 200 || len(m["records"].([]any)) != 1 {
		t.Fatalf("search: %d %v", resp.StatusCode, m)
	}
	resp, m = f.do(t, "GET", "/v1/audit?decision=maybe", auditor, "")
	if resp.StatusCode != 400 || m["field"] != "decision" {
		t.Fatalf("bad filter: %d %v", resp.StatusCode, m)
	}
	resp, m = f.do(t, "POST", "/v1/audit/lookup", auditor, `{"token":"`+tok["rtcToken"].(string)+`"}`)
	if recs := m["records"].([]any); resp.StatusCode != 200 || len(recs) != 1 || recs[0].(map[string]any)["channel"] != "demo" {
		t.Fatalf("lookup: %d %v", resp.StatusCode, m)
	}
	resp, m = f.do(t, "GET", "/v1/audit/verify", auditor, "")
	if resp.StatusCode != 200 || m["ok"] != true || m["records"].(float64) != 2 {
		t.Fatalf("verify: %d %v", resp.StatusCode, m)
	}
	req, _ := http.NewRequest("GET", f.srv.URL+"/v1/audit/export?format=jsonl", nil)
	req.Header.Set("Authorization", "Bearer "+auditor)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if lines := strings.Count(string(body), "\n"); lines != 2 || strings.Contains(string(body), tok["rtcToken"].(string)) {
		t.Fatalf("export: %d lines, or it leaks the token: %q", lines, body)
	}
}

// TestPolicies_ChannelAdminsCannotTouchAdminRights: a channel admin (write on
// api:policies) gets 403 for every change to an api:* rule, their own too;
// the rights admin (bootstrap: group admins) makes them.
func TestPolicies_ChannelAdminsCannotTouchAdminRights(t *testing.T) {
	f := newAPI(t, nil, false)
	root := "root;admins"
	id := func(m map[string]any) string { return strconv.FormatFloat(m["id"].(float64), 'f', 0, 64) }
	_, chanRight := f.do(t, "POST", "/v1/policies", root, `{"subject":"group:chan","channel":"api:policies","role":"write","effect":"allow"}`)
	f.do(t, "POST", "/v1/policies", root, `{"subject":"group:chan","channel":"api:policies","role":"read","effect":"allow"}`)
	_, audRight := f.do(t, "POST", "/v1/policies", root, `{"subject":"group:aud","channel":"api:audit","role":"read","effect":"allow"}`)
	chanAdmin := "carl;chan"
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/policies", `{"subject":"group:chan","channel":"api:audit","role":"read","effect":"allow"}`},
		{"POST", "/v1/policies", `{"subject":"user:carl","channel":"api:rights","role":"write","effect":"allow"}`},
		{"POST", "/v1/policies", `{"subject":"*","channel":"api:policies","role":"write","effect":"allow"}`},
		{"DELETE", "/v1/policies/" + id(audRight), ""},
		{"DELETE", "/v1/policies/" + id(chanRight), ""},
		{"POST", "/v1/policies/import", "subject,channel,role,effect,maxTtlSeconds\ngroup:chan,api:audit,read,allow,\n"},
	} {
		resp, m := f.do(t, c.method, c.path, chanAdmin, c.body)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("channel admin %s %s: %d %v, want 403", c.method, c.path, resp.StatusCode, m)
		}
	}
	if resp, m := f.do(t, "GET", "/v1/audit", chanAdmin, ""); resp.StatusCode != http.StatusForbidden {
		t.Errorf("channel admin reads the issuance log: %d %v", resp.StatusCode, m)
	}
	if resp, m := f.do(t, "POST", "/v1/policies", chanAdmin, `{"subject":"group:g","channel":"room","role":"publisher","effect":"allow"}`); resp.StatusCode != http.StatusCreated {
		t.Errorf("channel admin adds a channel rule: %d %v", resp.StatusCode, m)
	}
	if resp, m := f.do(t, "POST", "/v1/policies", "aud-1;aud", `{"subject":"group:g","channel":"room2","role":"publisher","effect":"allow"}`); resp.StatusCode != http.StatusForbidden {
		t.Errorf("auditor adds a channel rule: %d %v", resp.StatusCode, m)
	}
	if resp, m := f.do(t, "DELETE", "/v1/policies/"+id(audRight), root, ""); resp.StatusCode != http.StatusNoContent {
		t.Errorf("rights admin removes the auditor's right: %d %v", resp.StatusCode, m)
	}
}

func TestPolicies_BulkRemoveIsOneChange(t *testing.T) {
	f := newAPI(t, nil, false)
	root := "root;admins"
	var ids []string
	for i := range 5 {
		_, m := f.do(t, "POST", "/v1/policies", root, `{"subject":"group:bulk","channel":"bulk-`+strconv.Itoa(i)+`","role":"publisher","effect":"allow"}`)
		ids = append(ids, strconv.FormatFloat(m["id"].(float64), 'f', 0, 64))
	}
	if resp, m := f.do(t, "POST", "/v1/policies/remove", root, `{"ids":[`+ids[0]+`,999999]}`); resp.StatusCode != 404 {
		t.Fatalf("an unknown id: %d %v", resp.StatusCode, m)
	}
	resp, m := f.do(t, "POST", "/v1/policies/remove", root, `{"ids":[`+strings.Join(ids, ",")+`]}`)
	if resp.StatusCode != 200 || m["removed"] != float64(5) {
		t.Fatalf("bulk remove: %d %v", resp.StatusCode, m)
	}
	_, h := f.do(t, "GET", "/v1/policies/history?limit=1", root, "")
	if c := h["changes"].([]any)[0].(map[string]any); len(c["before"].([]any)) != 5 {
		t.Fatalf("the newest history entry removed %v, want all five in one change", c["before"])
	}
}

// TestPolicies_WhoMayHoldARole: GET /v1/policies/who lists the rules that
// allow the role on the channel and those that deny it (deny beats allow;
// publisher includes subscriber), and needs read on api:policies.
func TestPolicies_WhoMayHoldARole(t *testing.T) {
	f := newAPI(t, nil, false)
	admin := "root;admins"
	for _, body := range []string{
		`{"subject":"group:ops","channel":"ops-*","role":"publisher","effect":"allow"}`,
		`{"subject":"user:eve","channel":"ops-secret","role":"subscriber","effect":"deny"}`,
		`{"subject":"*","channel":"lobby","role":"subscriber","effect":"allow"}`,
	} {
		if resp, m := f.do(t, "POST", "/v1/policies", admin, body); resp.StatusCode != 201 {
			t.Fatalf("add %s: %d %v", body, resp.StatusCode, m)
		}
	}
	subjects := func(v any) []string {
		var out []string
		for _, c := range v.([]any) {
			out = append(out, c.(map[string]any)["rule"].(map[string]any)["subject"].(string))
		}
		return out
	}
	resp, m := f.do(t, "GET", "/v1/policies/who?channel=ops-secret&role=publisher", admin, "")
	if resp.StatusCode != 200 || !slices.Contains(subjects(m["allowed"]), "group:ops") || !slices.Equal(subjects(m["denied"]), []string{"user:eve"}) {
		t.Fatalf("who publishes on ops-secret: %d %v", resp.StatusCode, m)
	}
	if resp, m := f.do(t, "GET", "/v1/policies/who?channel=lobby&role=subscriber", admin, ""); resp.StatusCode != 200 ||
		!slices.Contains(subjects(m["allowed"]), "*") || len(m["denied"].([]any)) != 0 {
		t.Fatalf("who subscribes to the lobby: %d %v", resp.StatusCode, m)
	}
	if resp, m := f.do(t, "GET", "/v1/policies/who?channel=lobby&role=owner", admin, ""); resp.StatusCode != 400 || m["field"] != "role" {
		t.Fatalf("bad role: %d %v", resp.StatusCode, m)
	}
	if resp, _ := f.do(t, "GET", "/v1/policies/who?channel=lobby&role=subscriber", "alice", ""); resp.StatusCode != 403 {
		t.Fatalf("who without a right: %d", resp.StatusCode)
	}
}

// TestPolicies_PlanShowsTheDiffAndWhoLosesAndGainsAccess: a plan compares a
// policy document with the rules in force and replays the issuance log's
// recent decisions on it: removing the demo rule loses alice's grants,
// allowing "secret" gains her denial; it needs write on api:policies and
// read on api:audit, and refuses a document for another project.
func TestPolicies_PlanShowsTheDiffAndWhoLosesAndGainsAccess(t *testing.T) {
	f := newAPI(t, nil, false)
	uid := f.uid(t, "alice")
	for range 3 {
		f.do(t, "GET", "/rtc/demo/publisher/uid/"+uid, "alice", "")
	}
	f.do(t, "GET", "/rtc/secret/publisher/uid/"+uid, "alice", "")
	admin := "root;admins"
	doc := `version: 1
rules:
  - {subject: "group:dev", channel: "a b", role: publisher, effect: allow}
  - {subject: "group:dev", channel: "demo-*", role: publisher, effect: allow, maxTTL: 600}
  - {subject: "user:alice", channel: secret, role: publisher, effect: allow}
  - {subject: "*", channel: rtm, role: login, effect: allow}
  - {subject: "group:admins", channel: "api:rights", role: write, effect: allow, project: "*"}
`
	resp, m := f.do(t, "POST", "/v1/policies/plan?since=1h", admin, doc, "Content-Type", "application/yaml")
	if resp.StatusCode != 200 {
		t.Fatalf("plan: %d %v", resp.StatusCode, m)
	}
	diff := m["diff"].(map[string]any)
	channels := func(v any) []string {
		var out []string
		for _, r := range v.([]any) {
			out = append(out, r.(map[string]any)["channel"].(string))
		}
		return out
	}
	if got := channels(diff["removed"]); !slices.Contains(got, "demo") {
		t.Errorf("removed %v; want the demo rule", got)
	}
	if got := channels(diff["added"]); !slices.Equal(got, []string{"secret"}) {
		t.Errorf("added %v; want the secret rule", got)
	}
	if ch := diff["changed"].([]any); len(ch) != 1 || ch[0].(map[string]any)["to"].(map[string]any)["maxTtlSeconds"].(float64) != 600 {
		t.Errorf("changed %v; want demo-* capped at 600 s", ch)
	}
	impact := m["impact"].(map[string]any)
	want := func(list string, channel string, n float64) {
		t.Helper()
		for _, e := range impact[list].([]any) {
			if e := e.(map[string]any); e["subject"] == "user:alice" && e["channel"] == channel && e["role"] == "publisher" && e["decisions"] == n {
				return
			}
		}
		t.Errorf("impact %s = %v; want alice on %s, %v decisions", list, impact[list], channel, n)
	}
	want("lose", "demo", 3)
	want("gain", "secret", 1)
	if m["expectedVersion"] == nil || impact["decisions"].(float64) != 4 {
		t.Errorf("plan = %v", m)
	}
	// Streamed (application/x-ndjson): progress lines, then the same plan.
	req, err := http.NewRequest("POST", f.srv.URL+"/v1/policies/plan?since=1h", strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Accept", "application/x-ndjson, application/problem+json")
	sresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(sresp.Body)
	sresp.Body.Close()
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	var first, last map[string]map[string]any
	if sresp.StatusCode != 200 || sresp.Header.Get("Content-Type") != "application/x-ndjson" || len(lines) < 2 ||
		json.Unmarshal([]byte(lines[0]), &first) != nil || json.Unmarshal([]byte(lines[len(lines)-1]), &last) != nil {
		t.Fatalf("streamed plan: %d %s\n%s", sresp.StatusCode, sresp.Header.Get("Content-Type"), raw)
	}
	if first["progress"] == nil || last["plan"]["impact"].(map[string]any)["decisions"].(float64) != 4 ||
		last["plan"]["expectedVersion"] != m["expectedVersion"] {
		t.Errorf("streamed plan: first line %v, last %v; want progress, then the plan", first, last)
	}
	if resp, m := f.do(t, "POST", "/v1/policies/plan", admin, "version: 1\nrules:\n  - {subject: '*', channel: x, role: publisher, effect: allow, project: other}\n"); resp.StatusCode != 400 || m["field"] != "project" {
		t.Errorf("a document for another project: %d %v", resp.StatusCode, m)
	}
	if resp, m := f.do(t, "POST", "/v1/policies/plan?since=forever", admin, doc); resp.StatusCode != 400 || m["field"] != "since" {
		t.Errorf("a bad window: %d %v", resp.StatusCode, m)
	}
	if resp, _ := f.do(t, "POST", "/v1/policies/plan", "alice", doc); resp.StatusCode != 403 {
		t.Errorf("a plan without rights: %d", resp.StatusCode)
	}
}

// TestPolicies_ApplyReplacesTheRulesOnlyAtThePlannedVersion: an apply makes
// a project's rules those of the document in one change recorded with the
// admin, only at the plan's version: a change in between is a 409.
func TestPolicies_ApplyReplacesTheRulesOnlyAtThePlannedVersion(t *testing.T) {
	f := newAPI(t, nil, false)
	admin := "root;admins"
	current := func() []string {
		_, m := f.do(t, "GET", "/v1/policies?project=default", admin, "")
		var out []string
		for _, r := range m["rules"].([]any) {
			r := r.(map[string]any)
			if r["project"] == "default" {
				out = append(out, r["channel"].(string))
			}
		}
		slices.Sort(out)
		return out
	}
	// Keep the "*" rules (the admins' rights) as they are, change the rest.
	req, _ := http.NewRequest("GET", f.srv.URL+"/v1/policies/export?format=yaml&project=default", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	lines, err := policy.ReadDocument(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var rules []policy.Rule
	for _, lr := range lines {
		if lr.Rule.Project == policy.AllProjects {
			rules = append(rules, lr.Rule)
		}
	}
	rules = append(rules, policy.Rule{Subject: "group:dev", Channel: "stage-*", Role: policy.Publisher, Effect: policy.Allow})
	var doc bytes.Buffer
	if err := policy.WriteDocument(&doc, rules); err != nil {
		t.Fatal(err)
	}
	resp, m := f.do(t, "POST", "/v1/policies/plan", admin, doc.String())
	if resp.StatusCode != 200 {
		t.Fatalf("plan: %d %v", resp.StatusCode, m)
	}
	version := strconv.FormatInt(int64(m["expectedVersion"].(float64)), 10)

	// Someone changes the policy between the plan and the apply.
	if resp, m := f.do(t, "POST", "/v1/policies", admin, `{"subject":"group:x","channel":"x","role":"publisher","effect":"allow"}`); resp.StatusCode != 201 {
		t.Fatalf("add: %d %v", resp.StatusCode, m)
	}
	if resp, m := f.do(t, "POST", "/v1/policies/apply?expectedVersion="+version, admin, doc.String()); resp.StatusCode != 409 {
		t.Fatalf("apply after a change: %d %v; want 409", resp.StatusCode, m)
	}
	resp, m = f.do(t, "POST", "/v1/policies/plan", admin, doc.String())
	if resp.StatusCode != 200 {
		t.Fatalf("plan again: %d %v", resp.StatusCode, m)
	}
	version = strconv.FormatInt(int64(m["expectedVersion"].(float64)), 10)
	resp, m = f.do(t, "POST", "/v1/policies/apply?expectedVersion="+version, admin, doc.String())
	if resp.StatusCode != 200 || m["added"].(float64) != 1 || m["removed"].(float64) != 5 {
		t.Fatalf("apply: %d %v", resp.StatusCode, m)
	}
	if got := current(); !slices.Equal(got, []string{"stage-*"}) {
		t.Errorf("the project's rules after the apply: %v; want only stage-*", got)
	}
	resp, m = f.do(t, "GET", "/v1/policies/history?limit=1", admin, "")
	if h := m["changes"].([]any); resp.StatusCode != 200 || len(h) != 1 || h[0].(map[string]any)["action"] != "apply" || h[0].(map[string]any)["actor"] != "user:root" {
		t.Errorf("history: %d %v", resp.StatusCode, m)
	}
	if resp, m := f.do(t, "POST", "/v1/policies/apply", admin, doc.String()); resp.StatusCode != 400 || m["field"] != "expectedVersion" {
		t.Errorf("apply without a version: %d %v", resp.StatusCode, m)
	}
	if resp, _ := f.do(t, "POST", "/v1/policies/apply?expectedVersion="+version, "alice", doc.String()); resp.StatusCode != 403 {
		t.Errorf("apply without rights: %d", resp.StatusCode)
	}
}

// TestPolicies_ListFiltersAsPeopleSearchSortsPagesAndCounts: GET
// /v1/policies matches subject and channel as text with "*", a bare group
// name, the rules that apply to a channel or a caller; sorts; pages a sorted
// list by offset cursors; counts the total; and refuses a parameter it does
// not know rather than answer as if there were no filter.
func TestPolicies_ListFiltersAsPeopleSearchSortsPagesAndCounts(t *testing.T) {
	f := newAPI(t, nil, false)
	admin := "root;admins"
	for _, body := range []string{
		`{"subject":"group:developers","channel":"team-*","role":"publisher","effect":"allow"}`,
		`{"subject":"group:developers","channel":"team-secret*","role":"publisher","effect":"deny"}`,
		`{"subject":"user:bob","channel":"team-1","role":"subscriber","effect":"allow"}`,
	} {
		if resp, m := f.do(t, "POST", "/v1/policies", admin, body); resp.StatusCode != 201 {
			t.Fatalf("add %s: %d %v", body, resp.StatusCode, m)
		}
	}
	channels := func(query string) ([]string, map[string]any) {
		t.Helper()
		resp, m := f.do(t, "GET", "/v1/policies?"+query, admin, "")
		if resp.StatusCode != 200 {
			t.Fatalf("?%s: %d %v", query, resp.StatusCode, m)
		}
		var out []string
		for _, r := range m["rules"].([]any) {
			out = append(out, r.(map[string]any)["channel"].(string))
		}
		return out, m
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"channel=team-*", []string{"team-*", "team-secret*", "team-1"}},
		{"channel=*secret*", []string{"team-secret*"}},
		{"subject=developers&role=publisher&effect=allow", []string{"team-*"}},
		{"appliesTo=team-1&project=default", []string{"team-*", "team-1"}},
		{"user=bob&groups=developers&appliesTo=team-secret-9", []string{"team-*", "team-secret*"}},
	} {
		if got, _ := channels(tc.query); !slices.Equal(got, tc.want) {
			t.Errorf("?%s: %q, want %q", tc.query, got, tc.want)
		}
	}
	// Sorted by channel, descending, two at a time, with the total.
	var all []string
	query := "channel=team-*&sort=-channel&limit=2"
	for range 3 {
		page, m := channels(query)
		all = append(all, page...)
		if m["total"].(float64) != 3 {
			t.Fatalf("total %v, want 3", m["total"])
		}
		next, _ := m["nextCursor"].(string)
		if next == "" {
			break
		}
		query = "channel=team-*&sort=-channel&limit=2&cursor=" + next
	}
	if !slices.Equal(all, []string{"team-secret*", "team-1", "team-*"}) {
		t.Errorf("pages sorted by -channel: %q", all)
	}
	for _, bad := range []string{"requestId=x", "channel=team-*&sort=colour", "sort=channel&cursor=12"} {
		if resp, m := f.do(t, "GET", "/v1/policies?"+bad, admin, ""); resp.StatusCode != 400 {
			t.Errorf("?%s: %d %v, want 400", bad, resp.StatusCode, m)
		} else if bad == "requestId=x" && m["field"] != "requestId" {
			t.Errorf("?requestId=x names field %v", m["field"])
		}
	}
}

// TestPolicies_ExplainShowsTheDecidingRuleFirstAndPagesTheRest: however many
// rules apply, the first one listed decides, and the rest come a page at a
// time with their count.
func TestPolicies_ExplainShowsTheDecidingRuleFirstAndPagesTheRest(t *testing.T) {
	f := newAPI(t, nil, false)
	body := `{"subject":"alice","groups":["dev"],"channel":"demo","role":"publisher"}`
	resp, m := f.do(t, "POST", "/v1/policies/explain?limit=1", "root;admins", body)
	if resp.StatusCode != 200 {
		t.Fatalf("explain: %d %v", resp.StatusCode, m)
	}
	matches := m["matches"].([]any)
	first := matches[0].(map[string]any)["rule"].(map[string]any)
	if len(matches) != 1 || m["applicable"].(float64) != 3 || m["nextCursor"] != "1" || first["id"] != m["rule"].(map[string]any)["id"] {
		t.Fatalf("explain ?limit=1: %v; want the deciding rule, 3 applicable, cursor 1", m)
	}
	resp, m = f.do(t, "POST", "/v1/policies/explain?limit=5&cursor=1", "root;admins", body)
	if resp.StatusCode != 200 || len(m["matches"].([]any)) != 2 || m["nextCursor"] != nil {
		t.Fatalf("explain's second page: %d %v", resp.StatusCode, m)
	}
	if resp, _ := f.do(t, "POST", "/v1/policies/explain?verbose=1", "root;admins", body); resp.StatusCode != 400 {
		t.Fatalf("explain with an unknown parameter: %d", resp.StatusCode)
	}
}

// TestAdminAnswersAreCompressedButTokensAreNot: rule lists go gzip to a
// client that accepts it; token answers never do (their size must not leak
// a secret through compression).
func TestAdminAnswersAreCompressedButTokensAreNot(t *testing.T) {
	f := newAPI(t, nil, false)
	uid := f.uid(t, "alice")
	for _, tc := range []struct {
		path, bearer string
		gzip         bool
	}{
		{"/v1/policies", "root;admins", true},
		{"/v1/policies/history", "root;admins", true},
		{"/v1/audit", "root;admins", true},
		{"/rtc/demo/publisher/uid/" + uid, "alice", false},
	} {
		req, err := http.NewRequest("GET", f.srv.URL+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tc.bearer)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Content-Encoding") == "gzip"; resp.StatusCode != 200 || got != tc.gzip {
			t.Errorf("GET %s: %d, gzip %v; want 200, gzip %v", tc.path, resp.StatusCode, got, tc.gzip)
		}
	}
}

// TestAudit_UnknownParametersAreRefused: a filter the log does not know
// (?request_id=, misspelt) is a 400 naming it, not a page of unrelated
// records; a request id is searched within a day's window.
func TestAudit_UnknownParametersAreRefused(t *testing.T) {
	f := newAPI(t, nil, false)
	for _, path := range []string{"/v1/audit?request_id=x", "/v1/audit/export?format=csv&subjekt=alice", "/v1/audit/verify?fast=true",
		"/v1/audit?requestId=x"} {
		resp, m := f.do(t, "GET", path, "root;admins", "")
		if resp.StatusCode != 400 || m["field"] == nil {
			t.Errorf("GET %s: %d %v, want 400 naming the parameter", path, resp.StatusCode, m)
		}
	}
	if resp, _ := f.do(t, "GET", "/v1/audit/export?format=csv&subject=alice", "root;admins", ""); resp.StatusCode != 200 {
		t.Errorf("an export with known parameters: %d", resp.StatusCode)
	}
	// A granted request's id finds its record within a window.
	uid := f.uid(t, "alice")
	resp, _ := f.do(t, "GET", "/rtc/demo/publisher/uid/"+uid, "alice", "")
	reqID := resp.Header.Get("X-Request-Id")
	from, to := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	resp, m := f.do(t, "GET", "/v1/audit?requestId="+reqID+"&from="+from+"&to="+to, "root;admins", "")
	if recs, _ := m["records"].([]any); resp.StatusCode != 200 || len(recs) != 1 || recs[0].(map[string]any)["request_id"] != reqID {
		t.Errorf("search by request id %q: %d %v", reqID, resp.StatusCode, m)
	}
}

// TestPolicies_HistoryIsSearchableAndABulkChangeIsPaged: the history is
// searched by actor, action and channel; an import of 250 rules is one
// entry showing 100 of them with the counts, and its whole diff comes a page
// at a time.
func TestPolicies_HistoryIsSearchableAndABulkChangeIsPaged(t *testing.T) {
	f := newAPI(t, nil, false)
	admin := "root;admins"
	var doc strings.Builder
	doc.WriteString("subject,channel,role,effect,maxTtlSeconds\n")
	for i := range 250 {
		fmt.Fprintf(&doc, "*,room-%d,subscriber,allow,\n", i)
	}
	if resp, m := f.do(t, "POST", "/v1/policies/import", admin, doc.String(), "Content-Type", "text/csv"); resp.StatusCode != 200 || m["added"].(float64) != 250 {
		t.Fatalf("import: %d %v", resp.StatusCode, m)
	}
	if resp, m := f.do(t, "POST", "/v1/policies", admin, `{"subject":"user:zed","channel":"lobby-9","role":"subscriber","effect":"allow"}`); resp.StatusCode != 201 {
		t.Fatalf("add: %d %v", resp.StatusCode, m)
	}
	history := func(query string) []any {
		t.Helper()
		resp, m := f.do(t, "GET", "/v1/policies/history?"+query, admin, "")
		if resp.StatusCode != 200 {
			t.Fatalf("history?%s: %d %v", query, resp.StatusCode, m)
		}
		return m["changes"].([]any)
	}
	imports := history("action=import")
	if len(imports) != 1 {
		t.Fatalf("history?action=import: %d entries, want 1", len(imports))
	}
	entry := imports[0].(map[string]any)
	if len(entry["after"].([]any)) != policy.MaxRulesShown || entry["afterTotal"].(float64) != 250 {
		t.Fatalf("the import's entry shows %d rules of %v, want %d of 250", len(entry["after"].([]any)), entry["afterTotal"], policy.MaxRulesShown)
	}
	if got := history("channel=lobby-*"); len(got) != 1 || got[0].(map[string]any)["action"] != "add" {
		t.Errorf("history?channel=lobby-*: %v", got)
	}
	if got := history("actor=nobody"); len(got) != 0 {
		t.Errorf("history?actor=nobody: %v", got)
	}
	if resp, _ := f.do(t, "GET", "/v1/policies/history?who=root", admin, ""); resp.StatusCode != 400 {
		t.Errorf("history with an unknown parameter: %d", resp.StatusCode)
	}
	id := strconv.FormatFloat(entry["id"].(float64), 'f', 0, 64)
	seen, cursor := 0, ""
	for range 5 {
		resp, m := f.do(t, "GET", "/v1/policies/history/"+id+"?limit=100&cursor="+cursor, admin, "")
		if resp.StatusCode != 200 || m["added"].(float64) != 250 {
			t.Fatalf("change %s: %d %v", id, resp.StatusCode, m)
		}
		seen += len(m["after"].([]any))
		next, _ := m["nextCursor"].(string)
		if next == "" {
			break
		}
		cursor = next
	}
	if seen != 250 {
		t.Errorf("the change's pages held %d rules, want 250", seen)
	}
	if resp, _ := f.do(t, "GET", "/v1/policies/history/999999", admin, ""); resp.StatusCode != 404 {
		t.Errorf("an unknown change: %d", resp.StatusCode)
	}
}

// TestPolicies_BulkRemoveByFilterNeedsTheConfirmedCount: removing by filter
// says how many rules it would remove, removes them only with that count
// confirmed, and refuses a filter that selects everything.
func TestPolicies_BulkRemoveByFilterNeedsTheConfirmedCount(t *testing.T) {
	f := newAPI(t, nil, false)
	admin := "root;admins"
	for i := range 5 {
		if resp, m := f.do(t, "POST", "/v1/policies", admin, fmt.Sprintf(`{"subject":"group:qa","channel":"qa-%d","role":"subscriber","effect":"allow"}`, i)); resp.StatusCode != 201 {
			t.Fatalf("add: %d %v", resp.StatusCode, m)
		}
	}
	if resp, m := f.do(t, "POST", "/v1/policies/remove", admin, `{"filter":{"channel":"qa-*"}}`); resp.StatusCode != 400 || !strings.Contains(m["detail"].(string), "it selects 5") {
		t.Fatalf("without a count: %d %v", resp.StatusCode, m)
	}
	if resp, m := f.do(t, "POST", "/v1/policies/remove", admin, `{"filter":{"channel":"qa-*"},"count":4}`); resp.StatusCode != 409 {
		t.Fatalf("with the wrong count: %d %v", resp.StatusCode, m)
	}
	if resp, m := f.do(t, "POST", "/v1/policies/remove", admin, `{"filter":{}}`); resp.StatusCode != 400 {
		t.Fatalf("an empty filter: %d %v", resp.StatusCode, m)
	}
	if resp, m := f.do(t, "POST", "/v1/policies/remove", admin, `{"filter":{"channel":"qa-*"},"count":5}`); resp.StatusCode != 200 || m["removed"].(float64) != 5 {
		t.Fatalf("with the count: %d %v", resp.StatusCode, m)
	}
	if _, m := f.do(t, "GET", "/v1/policies?channel=qa-*", admin, ""); m["total"].(float64) != 0 {
		t.Fatalf("after the removal: %v", m)
	}
}

// TestPolicies_ExplainAtAMomentDecidesOnThePolicyAsItStood: ?at= rebuilds
// the rules of that moment from the history.
func TestPolicies_ExplainAtAMomentDecidesOnThePolicyAsItStood(t *testing.T) {
	f := newAPI(t, nil, false)
	admin := "root;admins"
	_, m := f.do(t, "GET", "/v1/policies?channel=demo", admin, "")
	id := strconv.FormatFloat(m["rules"].([]any)[0].(map[string]any)["id"].(float64), 'f', 0, 64)
	time.Sleep(5 * time.Millisecond)
	before := time.Now().UTC().Format(time.RFC3339Nano)
	time.Sleep(5 * time.Millisecond)
	if resp, _ := f.do(t, "DELETE", "/v1/policies/"+id, admin, ""); resp.StatusCode != 204 {
		t.Fatalf("remove the demo rule: %d", resp.StatusCode)
	}
	body := `{"subject":"alice","groups":["dev"],"channel":"demo","role":"publisher"}`
	if _, m := f.do(t, "POST", "/v1/policies/explain", admin, body); m["allowed"] != false {
		t.Fatalf("explain now: %v, want denied", m)
	}
	resp, m := f.do(t, "POST", "/v1/policies/explain?at="+url.QueryEscape(before), admin, body)
	if resp.StatusCode != 200 || m["allowed"] != true || m["at"] == nil || m["version"].(float64) == 0 {
		t.Fatalf("explain before the removal: %d %v, want allowed as the policy stood", resp.StatusCode, m)
	}
	if resp, _ := f.do(t, "POST", "/v1/policies/explain?at=yesterday", admin, body); resp.StatusCode != 400 {
		t.Errorf("explain at an unreadable time: %d", resp.StatusCode)
	}
}
