package policy

// Plans: what a proposed policy changes, in rules and in who may do what.

import (
	"context"
	"slices"
)

// RuleChange is a rule whose subject, channel, role and project stay while
// its effect or lifetime cap changes.
type RuleChange struct {
	From Rule `json:"from"`
	To   Rule `json:"to"`
}

// Diff is what replacing the current rules with the proposed ones does.
type Diff struct {
	Added   []Rule       `json:"added"`
	Removed []Rule       `json:"removed"`
	Changed []RuleChange `json:"changed"`
}

// ruleKey is what identifies a rule across a change.
type ruleKey struct {
	subject, channel string
	role             Role
	project          string
}

func keyOf(r Rule) ruleKey {
	r = r.Normalized()
	return ruleKey{r.Subject, r.Channel, r.Role, r.Project}
}

// DiffRules compares current and proposed rules (ids ignored); a key held by
// several rules on one side (an allow and a deny) is compared as a set.
func DiffRules(current, proposed []Rule) Diff {
	d := Diff{Added: []Rule{}, Removed: []Rule{}, Changed: []RuleChange{}}
	group := func(rs []Rule) (map[ruleKey][]Rule, []ruleKey) {
		m := map[ruleKey][]Rule{}
		var order []ruleKey
		for _, r := range rs {
			r = r.Normalized()
			k := keyOf(r)
			if _, ok := m[k]; !ok {
				order = append(order, k)
			}
			m[k] = append(m[k], r)
		}
		return m, order
	}
	cur, curOrder := group(current)
	next, nextOrder := group(proposed)
	same := func(a, b Rule) bool { a.ID, b.ID = 0, 0; return a == b }
	for _, k := range curOrder {
		from, to := cur[k], next[k]
		if len(from) == 1 && len(to) == 1 {
			if !same(from[0], to[0]) {
				d.Changed = append(d.Changed, RuleChange{From: from[0], To: to[0]})
			}
			continue
		}
		for _, r := range from {
			if !slices.ContainsFunc(to, func(x Rule) bool { return same(x, r) }) {
				d.Removed = append(d.Removed, r)
			}
		}
	}
	for _, k := range nextOrder {
		from, to := cur[k], next[k]
		if len(from) == 1 && len(to) == 1 {
			continue
		}
		for _, r := range to {
			if !slices.ContainsFunc(from, func(x Rule) bool { return same(x, r) }) {
				d.Added = append(d.Added, r)
			}
		}
	}
	return d
}

// Replayer decides requests on proposed rules, offline.
type Replayer struct{ e *Engine }

// NewReplayer builds the engine the broker decides with on rules alone.
// Close releases it.
func NewReplayer(ctx context.Context, rules []Rule) (*Replayer, error) {
	e, err := Open(ctx, NewMemStore(), nil)
	if err != nil {
		return nil, err
	}
	add := make([]Line, len(rules))
	for i, r := range rules {
		add[i] = lineFromRule(r)
	}
	if len(add) > 0 {
		if _, err := e.apply(ctx, Actor{Subject: "system:policy-replay", Operator: true}, Mutation{Action: "replay", Add: add}); err != nil {
			e.Close()
			return nil, err
		}
	}
	return &Replayer{e: e}, nil
}

// Decide is Engine.Decide on the replayer's rules.
func (r *Replayer) Decide(caller Caller, project, channel string, role Role) (Decision, error) {
	return r.e.Decide(caller, project, channel, role)
}

// DecideLogin is Engine.DecideLogin on the replayer's rules.
func (r *Replayer) DecideLogin(caller Caller, project, service string) (Decision, error) {
	return r.e.DecideLogin(caller, project, service)
}

// Close releases the replayer's engine.
func (r *Replayer) Close() { r.e.Close() }
