package policy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// randomPolicy returns n valid channel rules with ids 1..n over few subjects
// and a small channel alphabet, so that rules often overlap.
func randomPolicy(rng *rand.Rand, n int) []Rule { return randomRules(rng, n, 5, 4) }

// randomRules is randomPolicy with one rule in denyOneIn a deny and
// channels of up to maxLen bytes.
func randomRules(rng *rand.Rand, n, denyOneIn, maxLen int) []Rule {
	rules := make([]Rule, 0, n)
	seen := map[Line]bool{}
	for len(rules) < n {
		r := Rule{
			Subject: randomSubject(rng),
			Channel: randomChannel(rng, maxLen, true),
			Role:    []Role{Publisher, Subscriber}[rng.IntN(2)],
			Effect:  Allow,
			Project: testProjects[rng.IntN(len(testProjects))],
		}
		if rng.IntN(denyOneIn) == 0 {
			r.Effect = Deny
		}
		if rng.IntN(2) == 0 {
			r.MaxTTLSeconds = []int{60, 600, 3600}[rng.IntN(3)]
		}
		if seen[lineFromRule(r)] {
			continue
		}
		seen[lineFromRule(r)] = true
		r.ID = int64(len(rules) + 1)
		rules = append(rules, r)
	}
	return rules
}

// testProjects are the projects of random rules: two projects and "*".
var testProjects = []string{DefaultProject, "b", AllProjects}

// randomProject is the project of a random request.
func randomProject(rng *rand.Rand) string { return testProjects[rng.IntN(2)] }

func randomSubject(rng *rand.Rand) string {
	switch rng.IntN(10) {
	case 0:
		return "*"
	case 1, 2, 3, 4:
		return fmt.Sprintf("group:g%d", rng.IntN(5))
	}
	return fmt.Sprintf("user:u%d", rng.IntN(6))
}

// randomChannel returns a channel over {a, b, ?} (plus "*" when pattern).
func randomChannel(rng *rand.Rand, maxLen int, pattern bool) string {
	alphabet := "ab?"
	if pattern && rng.IntN(2) == 0 {
		alphabet = "ab?**"
	}
	var b strings.Builder
	for n := 1 + rng.IntN(maxLen); n > 0; n-- {
		b.WriteByte(alphabet[rng.IntN(len(alphabet))])
	}
	return b.String()
}

func randomCaller(rng *rand.Rand) Caller {
	c := Caller{Subject: fmt.Sprintf("u%d", rng.IntN(6))}
	for i := rng.IntN(4); i > 0; i-- {
		c.Groups = append(c.Groups, fmt.Sprintf("g%d", rng.IntN(6)))
	}
	return c
}

// TestIndex_DecidesExactlyLikeCasbin holds the decision index to plain
// Casbin Enforce on the same model and rules: the same answer for every
// request, the same deny rule when denied by one (Casbin reports the first
// matching deny in id order), and, when allowed, an allow rule that Casbin
// also matches and that grants at least as long a lifetime.
func TestIndex_DecidesExactlyLikeCasbin(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	agreeWithCasbin(t, rng, 300, 40, 3, func() []Rule { return randomPolicy(rng, 1+rng.IntN(300)) })
}

// TestIndex_DenyHeavyPoliciesDecideExactlyLikeCasbin does the same for
// deny-heavy rule sets, whose buckets index their exact-name denies for
// pattern requests (denyNameThreshold), with mostly pattern requests.
func TestIndex_DenyHeavyPoliciesDecideExactlyLikeCasbin(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	agreeWithCasbin(t, rng, 40, 80, 2, func() []Rule {
		// Most rules on "*", so that one bucket holds hundreds of denies.
		var out []Rule
		seen := map[Line]bool{}
		for _, r := range randomRules(rng, 600+rng.IntN(600), 2, 6) {
			if rng.IntN(5) != 0 {
				r.Subject = "*"
			}
			if r.Effect == Deny && isPattern(r.Channel) && rng.IntN(20) != 0 {
				r.Effect = Allow // denies mostly on exact names, as a ban list
			}
			if seen[lineFromRule(Rule{Subject: r.Subject, Channel: r.Channel, Role: r.Role, Effect: r.Effect, MaxTTLSeconds: r.MaxTTLSeconds})] {
				continue
			}
			r.ID = int64(len(out) + 1)
			seen[lineFromRule(Rule{Subject: r.Subject, Channel: r.Channel, Role: r.Role, Effect: r.Effect, MaxTTLSeconds: r.MaxTTLSeconds})] = true
			r.Project = DefaultProject
			out = append(out, r)
		}
		if idx := newProjectIndex(out)[DefaultProject]; idx.star == nil || idx.star.denyNames == nil {
			t.Fatal("the deny-heavy policy does not index its exact-name denies")
		}
		return out
	})
}

// agreeWithCasbin decides requests (one in patternOneIn a pattern) under
// policies made by gen with the index and with Casbin, and fails on the first
// difference.
func agreeWithCasbin(t *testing.T, rng *rand.Rand, policies, requests, patternOneIn int, gen func() []Rule) {
	t.Helper()
	if testing.Short() {
		policies = min(policies, 50)
	}
	var allowed, deniedByRule, checked int
	for range policies {
		rules := gen()
		lines := make([]Line, len(rules))
		for i, r := range rules {
			lines[i] = lineFromRule(r)
		}
		enf, err := newEnforcer(lines)
		if err != nil {
			t.Fatal(err)
		}
		idx := newProjectIndex(rules)
		for range requests {
			caller := randomCaller(rng)
			project := randomProject(rng)
			channel := randomChannel(rng, 5, rng.IntN(patternOneIn) == 0)
			role := []Role{Publisher, Subscriber}[rng.IntN(2)]
			want, explain, err := enf.EnforceEx(caller, project, channel, string(role))
			if err != nil {
				t.Fatal(err)
			}
			v := idx.decide(caller, project, channel, role)
			got := v.decision("user:"+caller.Subject, channel)
			checked++
			if got.Allowed != want {
				t.Fatalf("caller %+v, %s on %q: index allowed=%v, Casbin %v (%v)\nrules: %v", caller, role, channel, got.Allowed, want, explain, rules)
			}
			switch {
			case got.Allowed:
				allowed++
				if !slices.Equal(explain, lineFromRule(*got.Rule).casbinValues()) {
					first := ruleMatching(rules, explain)
					if first == nil || longerTTL(first, got.Rule) || !roleApplies(first, role) {
						t.Fatalf("caller %+v, %s on %q: index chose %v, Casbin matched %v first", caller, role, channel, got.Rule, explain)
					}
				}
			case got.Rule != nil:
				deniedByRule++
				if !slices.Equal(explain, lineFromRule(*got.Rule).casbinValues()) {
					t.Fatalf("caller %+v, %s on %q: index denied by %v, Casbin by %v", caller, role, channel, got.Rule, explain)
				}
			}
		}
	}
	t.Logf("%d requests: %d allowed, %d denied by a rule, %d denied by default", checked, allowed, deniedByRule, checked-allowed-deniedByRule)
	if allowed == 0 || deniedByRule == 0 {
		t.Fatal("the random policies never exercise allows and denies")
	}
}

func ruleMatching(rules []Rule, values []string) *Rule {
	for i := range rules {
		if slices.Equal(lineFromRule(rules[i]).casbinValues(), values) {
			return &rules[i]
		}
	}
	return nil
}

func TestIndex_UsesTrieForLargeBuckets(t *testing.T) {
	var rules []Rule
	for i := range 3 * trieThreshold {
		rules = append(rules, Rule{ID: int64(i + 1), Subject: "*", Channel: fmt.Sprintf("room%d-*", i), Role: Subscriber, Effect: Allow, MaxTTLSeconds: 60})
	}
	rules = append(rules,
		Rule{ID: 100, Subject: "*", Channel: "*-live", Role: Publisher, Effect: Allow},
		Rule{ID: 101, Subject: "*", Channel: "*x*", Role: Subscriber, Effect: Deny},
	)
	for i := range rules {
		rules[i].Project = DefaultProject
	}
	idx := newProjectIndex(rules)
	if idx[DefaultProject].star.prefixes == nil {
		t.Fatal("no trie for a bucket of many patterns")
	}
	tests := []struct {
		channel     string
		allow, deny int64
	}{
		{"room17-y", 18, 0},
		{"room17-live", 100, 0},
		{"room17-x-live", 100, 101},
		{"room1", 0, 0},
	}
	for _, tt := range tests {
		v := idx.decide(Caller{Subject: "someone"}, DefaultProject, tt.channel, Subscriber)
		if id(v.allow) != tt.allow || id(v.deny) != tt.deny {
			t.Errorf("decide(%q) chose allow %v, deny %v; want #%d, #%d", tt.channel, v.allow, v.deny, tt.allow, tt.deny)
		}
	}
}

func id(r *Rule) int64 {
	if r == nil {
		return 0
	}
	return r.ID
}

// TestIndex_PatchedDecidesLikeRebuilt: an index patched with a change decides
// every request as one rebuilt from the changed rules.
func TestIndex_PatchedDecidesLikeRebuilt(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 60 {
		rules := randomRules(rng, 50+rng.IntN(400), 3, 5)
		idx := newProjectIndex(rules)
		nextID := int64(len(rules) + 1)
		for range 5 {
			var res Applied
			for _, r := range rules {
				if rng.IntN(8) == 0 {
					res.Removed = append(res.Removed, lineFromRule(r))
				}
			}
			for _, r := range randomRules(rng, rng.IntN(30), 3, 5) {
				r.ID, nextID = nextID, nextID+1
				res.Added = append(res.Added, lineFromRule(r))
			}
			rules = patched(rules, res)
			idx = idx.patched(res)
			full := newProjectIndex(rules)
			for range 40 {
				c, ch, p := randomCaller(rng), randomChannel(rng, 5, rng.IntN(2) == 0), randomProject(rng)
				role := []Role{Publisher, Subscriber}[rng.IntN(2)]
				got, want := idx.decide(c, p, ch, role), full.decide(c, p, ch, role)
				if (got.allow == nil) != (want.allow == nil) || (got.deny == nil) != (want.deny == nil) ||
					(got.deny != nil && got.deny.ID != want.deny.ID) || (got.allow != nil && got.allow.ID != want.allow.ID) {
					t.Fatalf("%+v %s on %q: patched %+v, rebuilt %+v", c, role, ch, got, want)
				}
			}
		}
	}
}

// A change applied twice (installChange while a reload failed, then catchUp
// replaying it from the history) leaves each rule once, in the rules and in
// the index.
func TestPatched_AChangeAppliedTwiceCountsOnce(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	rules := randomRules(rng, 200, 3, 5)
	var res Applied
	res.Removed = append(res.Removed, lineFromRule(rules[3]))
	for i, r := range randomRules(rng, 20, 3, 5) {
		r.ID = int64(len(rules) + 1 + i)
		res.Added = append(res.Added, lineFromRule(r))
	}
	once, idxOnce := patched(rules, res), newProjectIndex(rules).patched(res)
	twice, idxTwice := patched(once, res), idxOnce.patched(res)
	if !slices.EqualFunc(once, twice, func(a, b Rule) bool { return a == b }) {
		t.Fatalf("replaying the change: %d rules, want %d", len(twice), len(once))
	}
	count := func(ps projectIndex) int {
		n := 0
		for _, idx := range ps {
			if idx.star != nil {
				n += len(idx.star.all)
			}
			for _, b := range idx.users {
				n += len(b.all)
			}
			for _, b := range idx.groups {
				n += len(b.all)
			}
		}
		return n
	}
	if count(idxTwice) != count(idxOnce) || count(idxOnce) != count(newProjectIndex(once)) {
		t.Fatalf("index holds %d rules after the replay, %d after one application, %d rebuilt", count(idxTwice), count(idxOnce), count(newProjectIndex(once)))
	}
}
