package policy

import (
	"fmt"

	"github.com/casbin/casbin/v2"
	"github.com/casbin/casbin/v2/model"

	"github.com/broker-dev/broker/policies"
)

// adminContext points Casbin at the admin section (r2, p2, e2, m2) of the
// model, loginContext at the login section (r3, p3, e3, m3).
var (
	adminContext = casbin.EnforceContext{RType: "r2", PType: "p2", EType: "e2", MType: "m2"}
	loginContext = casbin.EnforceContext{RType: "r3", PType: "p3", EType: "e3", MType: "m3"}
)

// newEnforcer returns a Casbin enforcer for policies/model.conf, with the
// broker's matcher functions registered, holding lines in order.
func newEnforcer(lines []Line) (*casbin.Enforcer, error) {
	m, err := model.NewModelFromString(policies.Model)
	if err != nil {
		return nil, fmt.Errorf("policy: parse the Casbin model: %w", err)
	}
	e, err := casbin.NewEnforcer(m)
	if err != nil {
		return nil, fmt.Errorf("policy: create the Casbin enforcer: %w", err)
	}
	e.AddFunction("appliesTo", casbinAppliesTo)
	e.AddFunction("channelCovers", casbinChannelFunc(covers))
	e.AddFunction("channelOverlaps", casbinChannelFunc(overlaps))
	var channel, admin, login [][]string
	for _, l := range lines {
		switch l.PType {
		case ptypeChannel:
			channel = append(channel, l.casbinValues())
		case ptypeAdmin:
			admin = append(admin, l.casbinValues())
		case ptypeLogin:
			login = append(login, l.casbinValues())
		default:
			return nil, fmt.Errorf("policy: rule #%d has unknown policy type %q", l.ID, l.PType)
		}
	}
	if err := m.AddPolicies("p", ptypeChannel, channel); err != nil {
		return nil, fmt.Errorf("policy: load channel rules into Casbin: %w", err)
	}
	if err := m.AddPolicies("p", ptypeAdmin, admin); err != nil {
		return nil, fmt.Errorf("policy: load admin rights into Casbin: %w", err)
	}
	if err := m.AddPolicies("p", ptypeLogin, login); err != nil {
		return nil, fmt.Errorf("policy: load login rules into Casbin: %w", err)
	}
	return e, nil
}

// casbinAppliesTo is the model's appliesTo(r.sub, p.sub): r.sub is a Caller.
func casbinAppliesTo(args ...any) (any, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("appliesTo: want 2 arguments, got %d", len(args))
	}
	c, ok1 := args[0].(Caller)
	sub, ok2 := args[1].(string)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("appliesTo: want (Caller, string), got (%T, %T)", args[0], args[1])
	}
	return c.appliesTo(sub), nil
}

// casbinChannelFunc adapts covers or overlaps to a Casbin function of
// (rule pattern, requested channel or pattern).
func casbinChannelFunc(f func(p, q string) bool) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		if len(args) != 2 {
			return nil, fmt.Errorf("channel function: want 2 arguments, got %d", len(args))
		}
		p, ok1 := args[0].(string)
		q, ok2 := args[1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("channel function: want (string, string), got (%T, %T)", args[0], args[1])
		}
		return f(p, q), nil
	}
}
