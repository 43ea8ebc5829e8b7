package policy

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/broker-dev/broker/internal/apperr"
)

const docExample = `version: 1
rules:
  - subject: group:developers
    channel: demo-*
    role: publisher
    effect: allow
    maxTTL: 3600
    description: developers present in the demo rooms
  - subject: user:mallory
    channel: "*"
    role: publisher
    effect: deny
  - subject: "*"
    channel: rtm
    role: login
    effect: allow
    project: "*"
`

func TestDocument_ReadsWritesAndReadsBack(t *testing.T) {
	got, err := ReadDocument(strings.NewReader(docExample))
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{
		{Subject: "group:developers", Channel: "demo-*", Role: Publisher, Effect: Allow, MaxTTLSeconds: 3600, Project: DefaultProject},
		{Subject: "user:mallory", Channel: "*", Role: Publisher, Effect: Deny, Project: DefaultProject},
		{Subject: "*", Channel: LoginRTM, Role: Login, Effect: Allow, Project: AllProjects},
	}
	if len(got) != len(want) {
		t.Fatalf("read %d rules, want %d", len(got), len(want))
	}
	var rules []Rule
	for i, lr := range got {
		if lr.Rule != want[i] || lr.Line != []int{3, 9, 13}[i] {
			t.Errorf("rule %d = %+v at line %d; want %+v", i, lr.Rule, lr.Line, want[i])
		}
		rules = append(rules, lr.Rule)
	}
	var b bytes.Buffer
	if err := WriteDocument(&b, rules); err != nil {
		t.Fatal(err)
	}
	again, err := ReadDocument(&b)
	if err != nil || len(again) != 3 || again[0].Rule != want[0] || again[2].Rule != want[2] {
		t.Errorf("written and read back: %+v, %v", again, err)
	}
}

func TestDocument_RefusesNamingTheLine(t *testing.T) {
	for _, c := range []struct{ name, doc, want string }{
		{"unknown field", "version: 1\nrules:\n  - subject: '*'\n    chanel: x\n", "line 4"},
		{"bad role", "version: 1\nrules:\n  - subject: '*'\n    channel: x\n    role: owner\n    effect: allow\n", "line 3"},
		{"repeat", "version: 1\nrules:\n  - {subject: '*', channel: x, role: publisher, effect: allow}\n  - {subject: '*', channel: x, role: publisher, effect: allow}\n", "line 4: the rule of line 3 again"},
		{"version", "version: 2\nrules: []\n", "must be 1"},
		{"empty", "", "empty"},
		{"not yaml", "version: [1\n", "line"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadDocument(strings.NewReader(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ReadDocument = %v; want an error naming %q", err, c.want)
			}
			if k := apperr.KindOf(err); k != apperr.Invalid && k != apperr.Conflict {
				t.Errorf("kind %s; want invalid or conflict", k)
			}
		})
	}
}

func TestRunTests_DecidesAsTheBrokerDoes(t *testing.T) {
	lrs, err := ReadDocument(strings.NewReader(docExample))
	if err != nil {
		t.Fatal(err)
	}
	var rules []Rule
	for _, lr := range lrs {
		rules = append(rules, lr.Rule)
	}
	tests, err := ReadTests(strings.NewReader(`version: 1
tests:
  - {name: a developer presents, subject: alice, groups: [developers], channel: demo-1, role: publisher, expect: allow,
     rule: 'allow group:developers publisher "demo-*" maxTtl=3600s'}
  - {name: mallory never publishes, subject: mallory, groups: [developers], channel: demo-1, role: publisher, expect: deny}
  - {name: anyone logs in to rtm, subject: bob, service: rtm, expect: allow}
  - {name: wrong expectation, subject: bob, channel: demo-1, role: publisher, expect: allow}
  - {name: wrong rule, subject: mallory, channel: demo-1, role: publisher, expect: deny, rule: 'allow * publisher "*"'}
`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := RunTests(context.Background(), rules, tests)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"", "", "", "expected allow, got deny", `expected the rule "allow * publisher \"*\"" to decide`} {
		if got := res[i].Failure; (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("%s: failure %q; want %q", res[i].Test.Name, got, want)
		}
	}
	if res[3].Test.Line() != 7 {
		t.Errorf("the failing test's line = %d; want 7", res[3].Test.Line())
	}
}

func TestReadTests_RefusesIncompleteTests(t *testing.T) {
	for _, doc := range []string{
		"version: 1\ntests:\n  - {subject: a, channel: c, role: publisher, expect: allow}\n",
		"version: 1\ntests:\n  - {name: n, subject: a, channel: c, role: publisher, expect: maybe}\n",
		"version: 1\ntests:\n  - {name: n, subject: a, expect: allow}\n",
		"version: 1\ntests:\n  - {name: n, subject: a, service: rtm, channel: c, expect: allow}\n",
	} {
		if _, err := ReadTests(strings.NewReader(doc)); apperr.KindOf(err) != apperr.Invalid || !strings.Contains(err.Error(), "line 3") {
			t.Errorf("ReadTests(%q) = %v; want an Invalid error naming line 3", doc, err)
		}
	}
}
