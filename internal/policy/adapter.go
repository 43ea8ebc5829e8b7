package policy

import (
	"context"
	"fmt"

	"github.com/casbin/casbin/v2/model"
	"github.com/casbin/casbin/v2/persist"
)

// Adapter lets a Casbin enforcer keep its policy in a Store (for the broker,
// the casbin_rule table through pgx), with every change recorded in the
// store's history as made by one actor. It implements persist.Adapter,
// persist.ContextAdapter, persist.BatchAdapter, persist.ContextBatchAdapter,
// persist.FilteredAdapter and persist.ContextFilteredAdapter. A filter for
// LoadFilteredPolicy is a Filter (or *Filter).
type Adapter struct {
	store    Store
	actor    Actor
	filtered bool
}

// NewAdapter returns an adapter over store that records changes as made by actor.
func NewAdapter(store Store, actor Actor) *Adapter { return &Adapter{store: store, actor: actor} }

var (
	_ persist.ContextBatchAdapter    = (*Adapter)(nil)
	_ persist.BatchAdapter           = (*Adapter)(nil)
	_ persist.ContextFilteredAdapter = (*Adapter)(nil)
	_ persist.FilteredAdapter        = (*Adapter)(nil)
)

// LoadPolicy implements persist.Adapter.
func (a *Adapter) LoadPolicy(m model.Model) error { return a.LoadPolicyCtx(context.Background(), m) }

// LoadPolicyCtx implements persist.ContextAdapter.
func (a *Adapter) LoadPolicyCtx(ctx context.Context, m model.Model) error {
	return a.load(ctx, m, Filter{}, false)
}

// LoadFilteredPolicy implements persist.FilteredAdapter.
func (a *Adapter) LoadFilteredPolicy(m model.Model, filter any) error {
	return a.LoadFilteredPolicyCtx(context.Background(), m, filter)
}

// LoadFilteredPolicyCtx implements persist.ContextFilteredAdapter.
func (a *Adapter) LoadFilteredPolicyCtx(ctx context.Context, m model.Model, filter any) error {
	var f Filter
	switch v := filter.(type) {
	case nil:
	case Filter:
		f = v
	case *Filter:
		if v != nil {
			f = *v
		}
	default:
		return fmt.Errorf("policy adapter: filter must be a policy.Filter, not %T", filter)
	}
	return a.load(ctx, m, f, f != Filter{})
}

func (a *Adapter) load(ctx context.Context, m model.Model, f Filter, filtered bool) error {
	lines, _, err := a.store.Load(ctx, f)
	if err != nil {
		return err
	}
	for _, l := range lines {
		if l.PType == "" {
			return fmt.Errorf("policy adapter: rule #%d has no policy type", l.ID)
		}
		ast, err := m.GetAssertion(l.PType[:1], l.PType)
		if err != nil {
			return fmt.Errorf("policy adapter: rule #%d: %w", l.ID, err)
		}
		if err := persist.LoadPolicyArray(append([]string{l.PType}, l.values(len(ast.Tokens))...), m); err != nil {
			return fmt.Errorf("policy adapter: rule #%d: %w", l.ID, err)
		}
	}
	a.filtered = filtered
	return nil
}

// IsFiltered implements persist.FilteredAdapter.
func (a *Adapter) IsFiltered() bool { return a.filtered }

// IsFilteredCtx implements persist.ContextFilteredAdapter.
func (a *Adapter) IsFilteredCtx(context.Context) bool { return a.filtered }

// SavePolicy implements persist.Adapter: it replaces every stored line with
// the model's policy, in one change.
func (a *Adapter) SavePolicy(m model.Model) error { return a.SavePolicyCtx(context.Background(), m) }

// SavePolicyCtx implements persist.ContextAdapter.
func (a *Adapter) SavePolicyCtx(ctx context.Context, m model.Model) error {
	if a.filtered {
		return fmt.Errorf("policy adapter: cannot save a filtered policy")
	}
	old, _, err := a.store.Load(ctx, Filter{})
	if err != nil {
		return err
	}
	mut := Mutation{Action: "casbin.save"}
	for _, l := range old {
		mut.Remove = append(mut.Remove, l.ID)
	}
	for _, sec := range []string{"p", "g"} {
		for ptype, ast := range m[sec] {
			for _, rule := range ast.Policy {
				l, err := newLine(ptype, rule)
				if err != nil {
					return err
				}
				mut.Add = append(mut.Add, l)
			}
		}
	}
	_, err = a.store.Apply(ctx, a.actor, mut)
	return err
}

// newLine returns the line of a Casbin rule.
func newLine(ptype string, rule []string) (Line, error) {
	l := Line{PType: ptype}
	if len(rule) > len(l.V) {
		return Line{}, fmt.Errorf("policy adapter: a rule has %d values, at most %d fit", len(rule), len(l.V))
	}
	copy(l.V[:], rule)
	return l, nil
}

// AddPolicy implements persist.Adapter.
func (a *Adapter) AddPolicy(sec, ptype string, rule []string) error {
	return a.AddPoliciesCtx(context.Background(), sec, ptype, [][]string{rule})
}

// AddPolicyCtx implements persist.ContextAdapter.
func (a *Adapter) AddPolicyCtx(ctx context.Context, sec, ptype string, rule []string) error {
	return a.AddPoliciesCtx(ctx, sec, ptype, [][]string{rule})
}

// AddPolicies implements persist.BatchAdapter.
func (a *Adapter) AddPolicies(sec, ptype string, rules [][]string) error {
	return a.AddPoliciesCtx(context.Background(), sec, ptype, rules)
}

// AddPoliciesCtx implements persist.ContextBatchAdapter: all rules or none.
func (a *Adapter) AddPoliciesCtx(ctx context.Context, _, ptype string, rules [][]string) error {
	mut := Mutation{Action: "casbin.add"}
	for _, r := range rules {
		l, err := newLine(ptype, r)
		if err != nil {
			return err
		}
		mut.Add = append(mut.Add, l)
	}
	_, err := a.store.Apply(ctx, a.actor, mut)
	return err
}

// RemovePolicy implements persist.Adapter.
func (a *Adapter) RemovePolicy(sec, ptype string, rule []string) error {
	return a.RemovePoliciesCtx(context.Background(), sec, ptype, [][]string{rule})
}

// RemovePolicyCtx implements persist.ContextAdapter.
func (a *Adapter) RemovePolicyCtx(ctx context.Context, sec, ptype string, rule []string) error {
	return a.RemovePoliciesCtx(ctx, sec, ptype, [][]string{rule})
}

// RemovePolicies implements persist.BatchAdapter.
func (a *Adapter) RemovePolicies(sec, ptype string, rules [][]string) error {
	return a.RemovePoliciesCtx(context.Background(), sec, ptype, rules)
}

// RemovePoliciesCtx implements persist.ContextBatchAdapter: rules that are
// not stored are ignored, as Casbin expects.
func (a *Adapter) RemovePoliciesCtx(ctx context.Context, _, ptype string, rules [][]string) error {
	want := make(map[Line]bool, len(rules))
	for _, r := range rules {
		l, err := newLine(ptype, r)
		if err != nil {
			return err
		}
		want[l] = true
	}
	return a.removeWhere(ctx, "casbin.remove", func(l Line) bool {
		l.ID = 0
		return want[l]
	})
}

// RemoveFilteredPolicy implements persist.Adapter.
func (a *Adapter) RemoveFilteredPolicy(sec, ptype string, fieldIndex int, fieldValues ...string) error {
	return a.RemoveFilteredPolicyCtx(context.Background(), sec, ptype, fieldIndex, fieldValues...)
}

// RemoveFilteredPolicyCtx implements persist.ContextAdapter: it removes the
// lines of ptype whose values from fieldIndex on equal fieldValues, an empty
// value matching anything.
func (a *Adapter) RemoveFilteredPolicyCtx(ctx context.Context, _, ptype string, fieldIndex int, fieldValues ...string) error {
	if fieldIndex < 0 || fieldIndex+len(fieldValues) > len(Line{}.V) {
		return fmt.Errorf("policy adapter: filter on fields %d..%d is out of range", fieldIndex, fieldIndex+len(fieldValues)-1)
	}
	return a.removeWhere(ctx, "casbin.remove", func(l Line) bool {
		if l.PType != ptype {
			return false
		}
		for i, v := range fieldValues {
			if v != "" && l.V[fieldIndex+i] != v {
				return false
			}
		}
		return true
	})
}

func (a *Adapter) removeWhere(ctx context.Context, action string, match func(Line) bool) error {
	lines, _, err := a.store.Load(ctx, Filter{})
	if err != nil {
		return err
	}
	mut := Mutation{Action: action}
	for _, l := range lines {
		if match(l) {
			mut.Remove = append(mut.Remove, l.ID)
		}
	}
	if len(mut.Remove) == 0 {
		return nil
	}
	_, err = a.store.Apply(ctx, a.actor, mut)
	return err
}
