package policy

// CasbinEnforce asks the engine's Casbin enforcer directly, bypassing the
// index, for benchmarks in package policy_test.
func CasbinEnforce(e *Engine, c Caller, channel string, role Role) (bool, error) {
	return e.snap.Load().enforcer.Enforce(c, channel, string(role))
}
