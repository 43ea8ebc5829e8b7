package policy

import "github.com/casbin/casbin/v2"

// CasbinEnforcer builds a Casbin enforcer of all the engine's current rules,
// channel rules too, for benchmarks of plain Casbin in package policy_test.
func CasbinEnforcer(e *Engine) (*casbin.Enforcer, error) {
	rules := e.snap.Load().rules
	lines := make([]Line, len(rules))
	for i, r := range rules {
		lines[i] = lineFromRule(r)
	}
	return newEnforcer(lines)
}
