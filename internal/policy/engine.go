package policy

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/casbin/casbin/v2"

	"github.com/broker-dev/broker/internal/apperr"
)

// Engine decides and administers policy over a Store. It keeps an immutable
// snapshot of all rules (a Casbin enforcer plus the decision index) and swaps
// in a new one after every change it makes and every change another replica
// announces. Its methods are safe for concurrent use.
type Engine struct {
	store  Store
	log    *slog.Logger
	snap   atomic.Pointer[snapshot]
	served atomic.Pointer[[]string] // ServeProjects; nil: any project

	reloadMu sync.Mutex    // one reload or local change at a time
	loaded   atomic.Uint64 // snapshots installed from a full load of the store
	caughtUp atomic.Uint64 // snapshots brought up to date from the history
	failed   atomic.Uint64 // full loads that failed
	kick     chan struct{} // asks the background loop for a full reload
	stop     context.CancelFunc
	done     sync.WaitGroup
}

// snapshot is the rules as of one store version. Never modified.
type snapshot struct {
	version  int64
	rules    []Rule // channel rules and admin rights, in id order
	enforcer *casbin.Enforcer
	index    projectIndex
}

// reloadRetry is how long the engine waits before retrying a failed reload.
const reloadRetry = time.Second

// ServeProjects makes Add and Import refuse a rule whose project is not one
// of names (nor "*"): the projects this broker serves. Until it is called,
// any valid project name is accepted (the CLI, which has no configuration).
func (e *Engine) ServeProjects(names []string) {
	e.served.Store(&names)
}

// checkServed refuses a rule of a project this broker does not serve.
func (e *Engine) checkServed(r Rule) error {
	served := e.served.Load()
	if served == nil || r.Project == AllProjects || slices.Contains(*served, r.Project) {
		return nil
	}
	return apperr.Field("project", "%q is not a project this broker serves", r.Project)
}

// Open loads every rule from store and returns an engine that keeps up with
// changes announced by store.Watch until Close. A nil log discards messages.
func Open(ctx context.Context, store Store, log *slog.Logger) (*Engine, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{store: store, log: log, kick: make(chan struct{}, 1)}
	if err := e.reload(ctx); err != nil {
		return nil, err
	}
	bg, stop := context.WithCancel(context.Background())
	e.stop = stop
	e.done.Add(2)
	go func() {
		defer e.done.Done()
		_ = store.Watch(bg, e.changed)
	}()
	go func() {
		defer e.done.Done()
		e.reloadLoop(bg)
	}()
	return e, nil
}

// Close stops following changes. Decisions keep answering from the last
// snapshot.
func (e *Engine) Close() {
	e.stop()
	e.done.Wait()
}

// Version returns the store version the current rules were read at. It only
// increases; the issuance log records it with every decision.
func (e *Engine) Version() int64 { return e.snap.Load().version }

// changed is the store's notification: reload unless the snapshot already
// has that version.
func (e *Engine) changed(version int64) {
	if version != 0 && version <= e.Version() {
		return
	}
	e.requestReload()
}

func (e *Engine) requestReload() {
	select {
	case e.kick <- struct{}{}:
	default: // a reload is already pending
	}
}

func (e *Engine) reloadLoop(ctx context.Context) {
	retry := time.NewTimer(0)
	if !retry.Stop() {
		<-retry.C
	}
	for {
		select {
		case <-ctx.Done():
			retry.Stop()
			return
		case <-e.kick:
		case <-retry.C:
		}
		if err := e.reload(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			e.log.Warn("policy reload failed; keeping the previous rules", "error", err, "retry", reloadRetry)
			retry.Reset(reloadRetry)
		}
	}
}

// Refresh brings the snapshot up to the store's newest committed version,
// whatever notifications were missed; it is a no-op when nothing changed.
func (e *Engine) Refresh(ctx context.Context) error { return e.reload(ctx) }

// Reloads reports how many reloads loaded every rule, how many caught up from
// the history, and how many failed, for the broker_policy_reloads_total
// metric.
func (e *Engine) Reloads() (full, history, failed uint64) {
	return e.loaded.Load(), e.caughtUp.Load(), e.failed.Load()
}

// reload replaces the snapshot with everything the store holds now.
func (e *Engine) reload(ctx context.Context) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	err := e.reloadLocked(ctx)
	if err != nil {
		e.failed.Add(1)
	}
	return err
}

func (e *Engine) reloadLocked(ctx context.Context) error {
	if cur := e.snap.Load(); cur != nil {
		v, err := e.store.Version(ctx)
		if err != nil {
			return fmt.Errorf("policy: read version: %w", err)
		}
		if v <= cur.version {
			return nil // nothing new: every change raises the version
		}
		if e.catchUp(ctx, cur) {
			return nil
		}
	}
	lines, version, err := e.store.Load(ctx, Filter{})
	if err != nil {
		return fmt.Errorf("policy: load rules: %w", err)
	}
	if cur := e.snap.Load(); cur != nil && version <= cur.version {
		return nil // nothing new (every change raises the version)
	}
	rules := make([]Rule, len(lines))
	for i, l := range lines {
		if rules[i], err = ruleOf(l); err != nil {
			return err
		}
	}
	if err := e.install(version, rules); err != nil {
		return err
	}
	e.loaded.Add(1)
	return nil
}

// maxCatchUp is how many changes a replica applies from the history instead
// of loading every rule again.
const maxCatchUp = 100

// catchUp applies the changes committed after cur from the history, one by
// one, as the replica that made them did (installChange), and reports whether
// it did; when there are too many, or they cannot be read or applied, the
// caller loads every rule instead. Changes commit in history order (they are
// serialised by the policy change lock), so a missing id is one that rolled
// back, never one still to come.
func (e *Engine) catchUp(ctx context.Context, cur *snapshot) bool {
	changes, err := e.store.Since(ctx, cur.version, maxCatchUp+1)
	if err != nil || len(changes) == 0 || len(changes) > maxCatchUp {
		return false
	}
	next := cur
	for _, c := range changes {
		res := Applied{Version: c.ID}
		for _, r := range c.Before {
			res.Removed = append(res.Removed, lineFromRule(r))
		}
		for _, r := range c.After {
			if err := r.Validate(); err != nil {
				return false
			}
			res.Added = append(res.Added, lineFromRule(r))
		}
		next = e.applied(next, res, c.ID)
	}
	e.snap.Store(next)
	e.caughtUp.Add(1)
	return true
}

// install builds and swaps in the snapshot of rules (in id order) at version.
func (e *Engine) install(version int64, rules []Rule) error {
	enf, err := casbinFor(rules)
	if err != nil {
		return err
	}
	e.snap.Store(&snapshot{version: version, rules: rules, enforcer: enf, index: newProjectIndex(rules)})
	return nil
}

// casbinFor builds the Casbin enforcer of the admin rights and login rules
// among rules. Channel decisions go through the index, which a property test
// holds to Casbin's answers on the same rules; keeping channel rules out of
// the enforcer keeps a change to them from rebuilding it.
func casbinFor(rules []Rule) (*casbin.Enforcer, error) {
	var lines []Line
	for _, r := range rules {
		if r.IsAdmin() || r.IsLogin() {
			lines = append(lines, lineFromRule(r))
		}
	}
	enf, err := newEnforcer(lines)
	if err != nil {
		return nil, apperr.Wrap(apperr.Internal, err, "the policy could not be loaded")
	}
	return enf, nil
}

// apply makes m in the store and then brings the snapshot up to date before
// returning, so the caller's next decision sees its own change.
func (e *Engine) apply(ctx context.Context, a Actor, m Mutation) (Applied, error) {
	if err := a.check(); err != nil {
		return Applied{}, err
	}
	if err := e.authorize(ctx, a, m); err != nil {
		return Applied{}, err
	}
	res, err := e.applyKeepingRightsManaged(ctx, a, m)
	if err != nil {
		return res, err
	}
	if res.Skipped {
		// Someone else's lines made this a no-op; make sure we have them.
		return res, e.reload(ctx)
	}
	if e.installChange(res, true) {
		return res, nil
	}
	if err := e.reload(ctx); err != nil {
		// The change is committed: never leave it out of our own decisions.
		// The background loop fetches whatever else we missed.
		e.log.Warn("policy reload after a change failed; applying the change alone", "error", err)
		e.installChange(res, false)
		e.requestReload()
	}
	return res, nil
}

// managesRights reports whether r is a grant that lets its subjects manage
// every admin right: write on ObjectRights in every project.
func managesRights(r Rule) bool {
	return r.Channel == ObjectRights && r.Role == Write && r.Effect == Allow && r.Normalized().Project == AllProjects
}

// applyKeepingRightsManaged makes m in the store unless it removes the last
// grant letting anyone manage admin rights (keepsRightsManaged). A change
// that removes such a grant is made only at the version of the snapshot it
// was checked on (Mutation.ExpectVersion, decided atomically with the
// change), so that two changes racing on one replica or on two cannot each
// remove what the other counted on; when the policy moved meanwhile, the
// snapshot is brought up to date and the change checked again, as it is
// when the snapshot refuses it but is not the policy in force.
func (e *Engine) applyKeepingRightsManaged(ctx context.Context, a Actor, m Mutation) (Applied, error) {
	const attempts = 3
	for attempt := 1; ; attempt++ {
		snap := e.snap.Load()
		removes, err := keepsRightsManaged(snap.rules, m)
		if err != nil {
			// Refused on this snapshot: unless it is the policy in force
			// (another replica may have added such a rule), check again.
			if now, verr := e.store.Version(ctx); verr == nil && now != snap.version && attempt < attempts {
				if err := e.reload(ctx); err != nil {
					return Applied{}, err
				}
				continue
			}
			return Applied{}, err
		}
		if !removes {
			return e.store.Apply(ctx, a, m)
		}
		pinned, version := m, snap.version
		if m.ExpectVersion == nil {
			pinned.ExpectVersion = &version
		} else if *m.ExpectVersion != snap.version && attempt == 1 {
			// The caller's version (a plan's) is not the snapshot's: check
			// on the rules the store holds now. The store refuses the
			// change unless they are at the caller's version.
			if err := e.reload(ctx); err != nil {
				return Applied{}, err
			}
			continue
		}
		res, err := e.store.Apply(ctx, a, pinned)
		if err == nil || m.ExpectVersion != nil || apperr.KindOf(err) != apperr.Conflict {
			return res, err
		}
		if now, verr := e.store.Version(ctx); verr != nil || now == snap.version {
			return res, err // a conflict of another kind
		}
		if attempt == attempts {
			return Applied{}, apperr.New(apperr.Conflict, "the policy kept changing while this change, which removes a rule that lets someone manage admin rights, was checked: try again")
		}
		if err := e.reload(ctx); err != nil {
			return Applied{}, err
		}
	}
}

// keepsRightsManaged refuses a change that removes the last rule letting
// anyone manage admin rights (write on api:rights in "*"), by removing or
// narrowing it, without adding another: nobody could then grant
// any right again, short of writing the database. A policy that never had
// such a grant (upgraded from before api:rights) is not held to it. It
// reports whether m removes any such grant.
func keepsRightsManaged(rules []Rule, m Mutation) (bool, error) {
	gone := make(map[int64]bool, len(m.Remove))
	for _, id := range m.Remove {
		gone[id] = true
	}
	had, left := 0, 0
	for _, r := range rules {
		if managesRights(r) {
			had++
			if !gone[r.ID] {
				left++
			}
		}
	}
	removes := left < had
	for _, l := range m.Add {
		if managesRights(ruleFromLine(l).Normalized()) {
			left++
		}
	}
	if had > 0 && left == 0 {
		return removes, apperr.New(apperr.Conflict, "this change removes the last rule that lets anyone manage admin rights (%s %s in every project, \"*\"): nobody could grant or remove any right afterwards; add such a rule for another admin first", Write, ObjectRights)
	}
	return removes, nil
}

// check refuses an actor that names no one: every change is someone's.
func (a Actor) check() error {
	if a.Subject == "" {
		return apperr.Field("actor", "a change needs the subject of who makes it")
	}
	return nil
}

// authorize checks that a may make m (see Actor): write on ObjectPolicies in
// the rule's project for every channel or login rule added or removed, write
// on ObjectRights in the right's project for every admin right (a rule or
// right of "*" takes the global right). A rule id the snapshot does not know
// is looked up after a reload; ids are never reused and a rule never
// changes, so the answer cannot go stale. A refusal names no rule it does
// not let the caller see.
func (e *Engine) authorize(ctx context.Context, a Actor, m Mutation) error {
	if a.Operator {
		return nil
	}
	need := func(r Rule) error {
		if r.IsAdmin() {
			if !e.Can(a.Caller, r.Project, ObjectRights, Write) {
				return apperr.New(apperr.Forbidden, "adding or removing an admin right (api:*) in project %q needs the write right on %s there, which channel admins and auditors do not hold", r.Project, ObjectRights)
			}
			return nil
		}
		if !e.Can(a.Caller, r.Project, ObjectPolicies, Write) {
			return apperr.New(apperr.Forbidden, "changing the rules of project %q needs the write right on %s there", r.Project, ObjectPolicies)
		}
		return nil
	}
	for _, l := range m.Add {
		if err := need(ruleFromLine(l)); err != nil {
			return err
		}
	}
	for _, id := range m.Remove {
		r, ok := e.ruleByID(id)
		if !ok {
			if err := e.reload(ctx); err != nil {
				return err
			}
			if r, ok = e.ruleByID(id); !ok {
				return apperr.New(apperr.NotFound, "no policy rule has id %d", id)
			}
		}
		if err := need(r); err != nil {
			if !e.administers(a.Caller, r.Project) {
				// Whether a rule of another project has this id is not the
				// caller's to learn.
				return apperr.New(apperr.NotFound, "no policy rule has id %d", id)
			}
			return err
		}
	}
	return nil
}

// administers reports whether caller holds any admin right in project (or a
// global one); for AllProjects, any right anywhere.
func (e *Engine) administers(caller Caller, project string) bool {
	for _, r := range e.snap.Load().rules {
		if r.IsAdmin() && caller.appliesTo(r.Subject) && (project == AllProjects || inScope(r.Project, project)) {
			return true
		}
	}
	return false
}

// ruleByID returns the snapshot's rule with id.
func (e *Engine) ruleByID(id int64) (Rule, bool) {
	rules := e.snap.Load().rules
	i, ok := slices.BinarySearchFunc(rules, id, func(r Rule, id int64) int { return cmp.Compare(r.ID, id) })
	if !ok {
		return Rule{}, false
	}
	return rules[i], true
}

// installChange installs the current snapshot with res applied: the rule
// list merged, only the index buckets of the subjects res touches rebuilt,
// and the Casbin enforcer rebuilt only when an admin right or login rule
// changed. When next is set it does so only if res directly follows the
// snapshot, so the result is exactly the store at res.Version; otherwise the
// snapshot keeps its version, and a later reload still replaces it.
func (e *Engine) installChange(res Applied, next bool) bool {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	cur := e.snap.Load()
	version := cur.version
	if next {
		if res.Version != cur.version+1 {
			return false
		}
		version = res.Version
	}
	e.snap.Store(e.applied(cur, res, version))
	return true
}

// applied returns cur with res applied, at version.
func (e *Engine) applied(cur *snapshot, res Applied, version int64) *snapshot {
	rules := patched(cur.rules, res)
	enf := cur.enforcer
	for _, l := range append(slices.Clip(res.Removed), res.Added...) {
		if l.PType != ptypeChannel {
			var err error
			if enf, err = casbinFor(rules); err != nil {
				e.log.Error("policy change could not be applied to the admin rights", "error", err)
				enf = cur.enforcer
			}
			break
		}
	}
	return &snapshot{version: version, rules: rules, enforcer: enf, index: cur.index.patched(res)}
}

// patched returns rules with res's removals and additions applied, in id
// order: one pass over rules, merging the additions in. An added rule
// replaces one with its id, so a change applied twice (installChange ahead
// of the snapshot's version, then catchUp replaying it) counts once.
func patched(rules []Rule, res Applied) []Rule {
	removed := make(map[int64]bool, len(res.Removed)+len(res.Added))
	for _, l := range slices.Concat(res.Removed, res.Added) {
		removed[l.ID] = true
	}
	added := make([]Rule, len(res.Added))
	for i, l := range res.Added {
		added[i] = ruleFromLine(l)
	}
	slices.SortFunc(added, func(a, b Rule) int { return cmp.Compare(a.ID, b.ID) })
	out := make([]Rule, 0, len(rules)+len(added))
	for _, r := range rules {
		for len(added) > 0 && added[0].ID < r.ID {
			out, added = append(out, added[0]), added[1:]
		}
		if !removed[r.ID] {
			out = append(out, r)
		}
	}
	return append(out, added...)
}

// Decide answers whether caller may hold role on channel, which may be a
// pattern (a wildcard token), in project. It returns an Invalid error for a
// malformed project, channel, role or caller.
func (e *Engine) Decide(caller Caller, project, channel string, role Role) (Decision, error) {
	if err := checkRequest(caller, project, channel, role); err != nil {
		return Decision{}, err
	}
	v := e.snap.Load().index.decide(caller, project, channel, role)
	return v.decision("user:"+caller.Subject, channel), nil
}

func checkRequest(caller Caller, project, channel string, role Role) error {
	if caller.Subject == "" {
		return apperr.Field("subject", "the caller has no subject")
	}
	if err := CheckProjectName(project); err != nil {
		return apperr.Field("project", "%s", err)
	}
	if role != Publisher && role != Subscriber {
		return apperr.Field("role", "must be publisher or subscriber")
	}
	return validatePattern(channel)
}

// Explanation shows how a decision came about: every rule whose subject
// applies to the caller, and whether and why it matched the request.
type Explanation struct {
	Project  string      `json:"project"`
	Channel  string      `json:"channel"`
	Role     Role        `json:"role"`
	Decision Decision    `json:"decision"`
	Rules    []RuleCheck `json:"rules"`
}

// RuleCheck is one applicable rule and what it did for a request.
type RuleCheck struct {
	Rule    Rule   `json:"rule"`
	Matches bool   `json:"matches"`
	Reason  string `json:"reason"`
}

// Explain decides like Decide and also lists every channel rule that applies
// to caller (by user, group or "*") in project (its own and the "*" rules),
// saying whether its channel, role and effect matched the request: the
// deciding rule first, then the others that match, then those that do not,
// each in id order (so that the first few answer the question, however many
// rules apply).
func (e *Engine) Explain(caller Caller, project, channel string, role Role) (Explanation, error) {
	if role == Login {
		return e.explainLogin(caller, project, channel)
	}
	if err := checkRequest(caller, project, channel, role); err != nil {
		return Explanation{}, err
	}
	s := e.snap.Load()
	v := s.index.decide(caller, project, channel, role)
	x := Explanation{Project: project, Channel: channel, Role: role, Decision: v.decision("user:"+caller.Subject, channel), Rules: []RuleCheck{}}
	for _, r := range s.index.applicable(caller, project) {
		ok, why := check(r, channel, role)
		x.Rules = append(x.Rules, RuleCheck{Rule: *r, Matches: ok, Reason: why})
	}
	x.deciderFirst()
	return x, nil
}

// deciderFirst orders x.Rules as Explain documents: the deciding rule, the
// other matches, the rest, each in id order.
func (x *Explanation) deciderFirst() {
	rank := func(rc RuleCheck) int {
		switch {
		case x.Decision.Rule != nil && rc.Rule.ID == x.Decision.Rule.ID:
			return 0
		case rc.Matches:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(x.Rules, func(a, b RuleCheck) int {
		return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(a.Rule.ID, b.Rule.ID))
	})
}

// Holders answers the reverse question of Decide: who may hold role on
// channel in project. Allowed are the allow rules that grant it (their
// subjects: users, groups, "*"), Denied the deny rules that refuse it, which
// beat any allow for the callers they name; both in id order, with why.
type Holders struct {
	Project string      `json:"project"`
	Channel string      `json:"channel"`
	Role    Role        `json:"role"`
	Allowed []RuleCheck `json:"allowed"`
	Denied  []RuleCheck `json:"denied"`
}

// Who lists the rules of project (its own and the "*" rules) that allow or
// deny role on channel: who may hold it is a subject of an allowed rule
// that no denied rule names (user, one of its groups, or "*").
func (e *Engine) Who(project, channel string, role Role) (Holders, error) {
	if err := checkRequest(Caller{Subject: "who"}, project, channel, role); err != nil {
		return Holders{}, err
	}
	h := Holders{Project: project, Channel: channel, Role: role, Allowed: []RuleCheck{}, Denied: []RuleCheck{}}
	rules := e.snap.Load().rules
	for i := range rules {
		r := &rules[i]
		if r.IsAdmin() || r.Role == Login || !inScope(r.Normalized().Project, project) {
			continue
		}
		if ok, why := check(r, channel, role); ok {
			if r.Effect == Allow {
				h.Allowed = append(h.Allowed, RuleCheck{Rule: *r, Matches: true, Reason: why})
			} else {
				h.Denied = append(h.Denied, RuleCheck{Rule: *r, Matches: true, Reason: why})
			}
		}
	}
	return h, nil
}

// check says whether r matches a request and why, in words.
func check(r *Rule, channel string, role Role) (bool, string) {
	switch {
	case r.Effect == Allow && !covers(r.Channel, channel):
		if isPattern(channel) {
			return false, fmt.Sprintf("channel %q does not cover every channel of %q", r.Channel, channel)
		}
		return false, fmt.Sprintf("channel %q does not match %q", r.Channel, channel)
	case r.Effect == Deny && !overlaps(r.Channel, channel):
		return false, fmt.Sprintf("channel %q shares no channel with %q", r.Channel, channel)
	case !roleApplies(r, role) && r.Effect == Allow:
		return false, fmt.Sprintf("allowing %s does not allow %s", r.Role, role)
	case !roleApplies(r, role):
		return false, fmt.Sprintf("denying %s does not deny %s", r.Role, role)
	case r.Effect == Allow:
		return true, fmt.Sprintf("allows %s on %q", role, channel)
	}
	return true, fmt.Sprintf("denies %s on %q", role, channel)
}

// DecideLogin answers whether caller may log in to service (LoginRTM or
// LoginChat) in project under the login rules: default deny, any matching
// deny beats every allow; the deciding rule is chosen as for channels.
// Casbin's login section decides; the rules are scanned only to name the
// deciding one.
func (e *Engine) DecideLogin(caller Caller, project, service string) (Decision, error) {
	if caller.Subject == "" {
		return Decision{}, apperr.Field("subject", "the caller has no subject")
	}
	if err := CheckProjectName(project); err != nil {
		return Decision{}, apperr.Field("project", "%s", err)
	}
	if service != LoginRTM && service != LoginChat {
		return Decision{}, apperr.Field("service", "must be %q or %q", LoginRTM, LoginChat)
	}
	s := e.snap.Load()
	allowed, err := s.enforcer.Enforce(loginContext, caller, project, service)
	if err != nil {
		return Decision{}, apperr.Wrap(apperr.Internal, err, "the login decision failed")
	}
	var deny, allow *Rule
	for i := range s.rules {
		r := &s.rules[i]
		if !r.IsLogin() || r.Channel != service || !inScope(r.Project, project) || !caller.appliesTo(r.Subject) {
			continue
		}
		switch {
		case r.Effect == Deny && deny == nil:
			deny = r
		case r.Effect == Allow && (allow == nil || longerTTL(r, allow)):
			allow = r
		}
	}
	v := verdict{role: Login}
	if deny != nil {
		v.deny = deny
	} else if allowed {
		v.allow = allow
	}
	if (v.allow != nil) != allowed {
		return Decision{}, apperr.New(apperr.Internal, "the login rules and Casbin disagree for %s", service)
	}
	d := v.decision("user:"+caller.Subject, service)
	if d.Rule == nil {
		d.Reason = fmt.Sprintf("no rule allows user:%s to log in to %s", caller.Subject, service)
	}
	return d, nil
}

// inScope reports whether a rule of ruleProject applies in project.
func inScope(ruleProject, project string) bool {
	return ruleProject == AllProjects || ruleProject == project
}

// explainLogin explains a login decision: the decision and every login rule
// of project (or "*") whose subject applies to caller.
func (e *Engine) explainLogin(caller Caller, project, service string) (Explanation, error) {
	d, err := e.DecideLogin(caller, project, service)
	if err != nil {
		return Explanation{}, err
	}
	x := Explanation{Project: project, Channel: service, Role: Login, Decision: d, Rules: []RuleCheck{}}
	for _, r := range e.snap.Load().rules {
		if !r.IsLogin() || !inScope(r.Project, project) || !caller.appliesTo(r.Subject) {
			continue
		}
		rc := RuleCheck{Rule: r, Matches: r.Channel == service}
		switch {
		case !rc.Matches:
			rc.Reason = fmt.Sprintf("governs %s logins, not %s", r.Channel, service)
		case r.Effect == Allow:
			rc.Reason = "allows " + service + " login"
		default:
			rc.Reason = "denies " + service + " login"
		}
		x.Rules = append(x.Rules, rc)
	}
	x.deciderFirst()
	return x, nil
}

// Can reports whether caller holds the admin right action (Read or Write) on
// object (ObjectPolicies, ObjectAudit, …) in project: a right on that
// project or a global one. With project AllProjects only a global right
// counts. Casbin answers from the snapshot.
func (e *Engine) Can(caller Caller, project, object string, action Role) bool {
	if caller.Subject == "" || (project != AllProjects && CheckProjectName(project) != nil) {
		return false
	}
	ok, err := e.snap.Load().enforcer.Enforce(adminContext, caller, project, object, string(action))
	if err != nil {
		e.log.Error("admin check failed; denying", "error", err)
		return false
	}
	return ok
}

// ProjectsWith returns where caller holds action on object: nil when
// nowhere, [AllProjects] for a global right, else the projects named by the
// caller's rights, sorted.
func (e *Engine) ProjectsWith(caller Caller, object string, action Role) []string {
	if caller.Subject == "" {
		return nil
	}
	if e.Can(caller, AllProjects, object, action) {
		return []string{AllProjects}
	}
	var out []string
	for _, r := range e.snap.Load().rules {
		if r.IsAdmin() && r.Channel == object && r.Role == action && caller.appliesTo(r.Subject) && !slices.Contains(out, r.Project) {
			out = append(out, r.Project)
		}
	}
	slices.Sort(out)
	return out
}

// List returns the rules f selects, channel rules, login rules and admin
// rights, in id order, a page at a time (Filter.After, Filter.Limit). It
// answers from the current rules, brought up to the store's newest version
// first, so that listing never materialises the rule table from the database.
func (e *Engine) List(ctx context.Context, f Filter) ([]Rule, error) {
	if err := e.Refresh(ctx); err != nil {
		return nil, err
	}
	rules := e.snap.Load().rules
	i, _ := slices.BinarySearchFunc(rules, f.After+1, func(r Rule, id int64) int { return cmp.Compare(r.ID, id) })
	var out []Rule
	for _, r := range rules[i:] {
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
		if f.keeps(r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// Query returns the rules f selects in f.Sort order, after f.After (an id,
// in id order) and skipping f.Offset of them, at most f.Limit (0: all), and
// how many f selects in all (After, Offset and Limit aside): the search
// behind the API's and the console's rule lists.
func (e *Engine) Query(ctx context.Context, f Filter) ([]Rule, int, error) {
	key, desc := strings.CutPrefix(f.Sort, "-")
	if key == "" {
		key = "id"
	}
	if !slices.Contains(SortKeys, key) {
		return nil, 0, apperr.Field("sort", "must be one of %s, with a leading - for descending", strings.Join(SortKeys, ", "))
	}
	if f.Offset < 0 {
		return nil, 0, apperr.Field("offset", "must not be negative")
	}
	limit, offset, after := f.Limit, f.Offset, f.After
	f.Limit, f.After = 0, 0
	all, err := e.List(ctx, f)
	if err != nil {
		return nil, 0, err
	}
	total := len(all)
	if key != "id" || desc {
		field := map[string]func(Rule) string{
			"subject": func(r Rule) string { return r.Subject }, "channel": func(r Rule) string { return r.Channel },
			"role": func(r Rule) string { return string(r.Role) }, "effect": func(r Rule) string { return string(r.Effect) },
			"project": func(r Rule) string { return r.Project }, "id": func(Rule) string { return "" },
		}[key]
		slices.SortStableFunc(all, func(a, b Rule) int {
			c := cmp.Compare(field(a), field(b))
			if c == 0 {
				c = cmp.Compare(a.ID, b.ID)
			}
			if desc {
				return -c
			}
			return c
		})
	}
	if after > 0 {
		all = slices.DeleteFunc(all, func(r Rule) bool { return r.ID <= after })
	}
	all = all[min(offset, len(all)):]
	if limit > 0 && len(all) > limit {
		all = all[:limit]
	}
	return all, total, nil
}

// Count returns how many of the current rules f selects (After and Limit
// aside), without copying any.
func (e *Engine) Count(f Filter) int {
	n := 0
	for _, r := range e.snap.Load().rules {
		if f.keeps(r) {
			n++
		}
	}
	return n
}

// Add validates r (its ID is ignored), stores it and returns it with its id.
// An identical rule is a Conflict.
func (e *Engine) Add(ctx context.Context, a Actor, r Rule) (Rule, error) {
	return e.AddAs(ctx, a, r, "add")
}

// AddAs is Add recorded in the policy history under action (such as
// "revoke": a revocation's deny rule) instead of "add".
func (e *Engine) AddAs(ctx context.Context, a Actor, r Rule, action string) (Rule, error) {
	r.ID = 0
	r = r.Normalized()
	if err := r.Validate(); err != nil {
		return Rule{}, err
	}
	m := Mutation{Action: action, Add: []Line{lineFromRule(r)}}
	// The rights first: whether a project exists is not for those who hold
	// none there to learn.
	if err := a.check(); err != nil {
		return Rule{}, err
	}
	if err := e.authorize(ctx, a, m); err != nil {
		return Rule{}, err
	}
	if err := e.checkServed(r); err != nil {
		return Rule{}, err
	}
	res, err := e.apply(ctx, a, m)
	if err != nil {
		return Rule{}, err
	}
	return ruleFromLine(res.Added[0]), nil
}

// Remove deletes the rule with id; NotFound if there is none.
func (e *Engine) Remove(ctx context.Context, a Actor, id int64) error {
	return e.RemoveAs(ctx, a, id, "remove")
}

// RemoveAs is Remove recorded in the policy history under action (such as
// "lift": a revocation's end) instead of "remove".
func (e *Engine) RemoveAs(ctx context.Context, a Actor, id int64, action string) error {
	if id <= 0 {
		return apperr.New(apperr.NotFound, "no policy rule has id %d", id)
	}
	_, err := e.apply(ctx, a, Mutation{Action: action, Remove: []int64{id}})
	if ae, ok := apperr.As(err); ok && ae.Kind == apperr.NotFound {
		return apperr.New(apperr.NotFound, "no policy rule has id %d", id)
	}
	return err
}

// MaxBulkRemove bounds how many rules one RemoveMany removes.
const MaxBulkRemove = 100_000

// RemoveWhere removes every rule f selects (its search fields; a filter
// that selects every rule is refused) in one change, only if that is
// confirmed rules: the count the admin saw, stated back. Without one it is
// an Invalid error saying how many f selects; with another, a Conflict.
func (e *Engine) RemoveWhere(ctx context.Context, a Actor, f Filter, confirmed *int) (int, error) {
	if f.SubjectLike == "" && f.ChannelLike == "" && f.Role == "" && f.Effect == "" && f.AppliesToChannel == "" && f.AppliesTo == nil && f.Projects == nil && f.Kind == "" {
		return 0, apperr.Field("filter", "selects every rule: name a subject, channel, role, effect, appliesTo or project")
	}
	f.After, f.Offset, f.Limit = 0, 0, 0
	rules, total, err := e.Query(ctx, f)
	if err != nil {
		return 0, err
	}
	switch {
	case confirmed == nil:
		return 0, apperr.Field("count", "confirm how many rules the filter removes: it selects %d", total)
	case *confirmed != total:
		return 0, apperr.New(apperr.Conflict, "the filter selects %d rules now, not the %d confirmed: nothing was removed", total, *confirmed)
	}
	ids := make([]int64, len(rules))
	for i, r := range rules {
		ids[i] = r.ID
	}
	return e.RemoveMany(ctx, a, ids)
}

// RemoveMany deletes the rules with ids in one change (one history entry, one
// rebuild on every replica): all of them, or, when one does not exist, none
// (NotFound).
func (e *Engine) RemoveMany(ctx context.Context, a Actor, ids []int64) (int, error) {
	if len(ids) == 0 || len(ids) > MaxBulkRemove {
		return 0, apperr.Field("ids", "give from 1 to %d rule ids", MaxBulkRemove)
	}
	for _, id := range ids {
		if id <= 0 {
			return 0, apperr.Field("ids", "rule ids are positive whole numbers")
		}
	}
	res, err := e.apply(ctx, a, Mutation{Action: "remove", Remove: ids})
	if ae, ok := apperr.As(err); ok && ae.Kind == apperr.NotFound {
		return 0, apperr.New(apperr.NotFound, "not every id names a policy rule; nothing was removed")
	}
	return len(res.Removed), err
}

// Bootstrap grants every admin right (each object's actions) to each of
// subjects, unless the store already holds any admin right. Replicas may
// call it at the same time: the store decides atomically, so exactly one
// grants.
func (e *Engine) Bootstrap(ctx context.Context, subjects []string) error {
	var add []Line
	for _, s := range subjects {
		if err := validateSubject(s); err != nil {
			return fmt.Errorf("bootstrap admin %q: %w", s, err)
		}
		for _, obj := range objects {
			for _, act := range adminActions[obj] {
				add = append(add, lineFromRule(Rule{Subject: s, Channel: obj, Role: act, Effect: Allow}))
			}
		}
	}
	if len(add) == 0 {
		return nil
	}
	_, err := e.apply(ctx, Actor{Subject: "system:bootstrap", Operator: true}, Mutation{Action: "bootstrap", Add: add, UnlessPType: ptypeAdmin})
	return err
}

// ImportMode is how an import treats the rules in force.
type ImportMode string

// Import modes.
const (
	// ImportAdd adds the document's rules not in force and keeps the others:
	// importing a document twice adds nothing the second time.
	ImportAdd ImportMode = "add"
	// ImportReplace makes the rules of a project (and the "*" rules) those
	// of the document: re-importing an export changes nothing.
	ImportReplace ImportMode = "replace"
)

// ImportOptions adjust Import.
type ImportOptions struct {
	Mode ImportMode // "" is ImportAdd
	// Project is the project whose rules (and the "*" rules) ImportReplace
	// replaces; every rule of the document must be of it or "*". "" is
	// DefaultProject.
	Project string
	// DryRun reports what the import would do and changes nothing.
	DryRun bool
}

// Imported is what an import did, or with DryRun would do: the rules it
// added and removed, how many of the document's rules were in force
// already, and the policy version after it.
type Imported struct {
	Mode      ImportMode
	DryRun    bool
	Added     []Rule
	Removed   []Rule
	Unchanged int
	Version   int64
}

// Import reads a CSV document (see readCSV; every bad row is reported) and
// applies it as o says in one change recorded as "import": all of it or,
// on any bad row or refused right, nothing.
func (e *Engine) Import(ctx context.Context, a Actor, r io.Reader, o ImportOptions) (Imported, error) {
	if o.Mode == "" {
		o.Mode = ImportAdd
	}
	if o.Mode != ImportAdd && o.Mode != ImportReplace {
		return Imported{}, apperr.Field("mode", "must be %s or %s", ImportAdd, ImportReplace)
	}
	if o.Project == "" {
		o.Project = DefaultProject
	}
	if err := CheckProjectName(o.Project); err != nil {
		return Imported{}, apperr.Field("project", "%s", err)
	}
	rows, err := readCSV(r)
	if err != nil {
		return Imported{}, err
	}
	// The rights first, for every row: which rules and projects exist
	// elsewhere is not for those who hold no right there to learn.
	if err := a.check(); err != nil {
		return Imported{}, err
	}
	doc := make([]Line, len(rows))
	for i, row := range rows {
		doc[i] = lineFromRule(row.Rule)
	}
	if err := e.authorize(ctx, a, Mutation{Add: doc}); err != nil {
		return Imported{}, err
	}
	for _, row := range rows {
		if o.Mode == ImportReplace && row.Rule.Project != o.Project && row.Rule.Project != AllProjects {
			return Imported{}, apperr.Field("project", "line %d: the import replaces the rules of project %q and \"*\", not %q", row.Line, o.Project, row.Rule.Project)
		}
		if err := e.checkServed(row.Rule); err != nil {
			ae, _ := apperr.As(err)
			return Imported{}, apperr.Field(ae.Field, "line %d: %s", row.Line, ae.Message)
		}
	}
	if err := e.Refresh(ctx); err != nil {
		return Imported{}, err
	}
	s := e.snap.Load()
	key := func(r Rule) Line { r.ID = 0; return lineFromRule(r) }
	inForce := make(map[Line]Rule, len(s.rules))
	for _, r := range s.rules {
		if o.Mode == ImportAdd || inScope(r.Project, o.Project) {
			inForce[key(r)] = r
		}
	}
	res := Imported{Mode: o.Mode, DryRun: o.DryRun, Version: s.version}
	var m Mutation
	m.Action = "import"
	inDoc := make(map[Line]bool, len(doc))
	for i, l := range doc {
		inDoc[l] = true
		if _, ok := inForce[l]; ok {
			res.Unchanged++
			continue
		}
		m.Add = append(m.Add, l)
		res.Added = append(res.Added, rows[i].Rule)
	}
	if o.Mode == ImportReplace {
		for _, r := range s.rules {
			if l := key(r); inForce[l].ID == r.ID && !inDoc[l] {
				m.Remove = append(m.Remove, r.ID)
				res.Removed = append(res.Removed, r)
			}
		}
	}
	if len(m.Add)+len(m.Remove) == 0 {
		return res, nil
	}
	if _, err := keepsRightsManaged(s.rules, m); err != nil {
		return Imported{}, err // a dry run says so too
	}
	if o.DryRun {
		return res, nil
	}
	m.Unchanged = &res.Unchanged
	applied, err := e.apply(ctx, a, m)
	if err != nil {
		return Imported{}, err
	}
	res.Version = applied.Version
	res.Added = changeRules(applied.Added)
	return res, nil
}

// Export writes every rule f selects as CSV in the format Import reads, in
// id order.
func (e *Engine) Export(ctx context.Context, w io.Writer, f Filter) error {
	f.After, f.Limit = 0, 0
	rules, err := e.List(ctx, f)
	if err != nil {
		return err
	}
	return WriteCSV(w, rules)
}

// Change returns the change id whole (its rules not clipped), showing only
// its rules of projects when projects is not nil; NotFound when there is no
// such change or it shows none of them.
func (e *Engine) Change(ctx context.Context, id int64, projects []string) (Change, error) {
	changes, err := e.store.Since(ctx, id-1, 1)
	if err != nil {
		return Change{}, err
	}
	if len(changes) == 1 && changes[0].ID == id {
		if c, ok := changes[0].visible(projects); ok {
			return c, nil
		}
	}
	return Change{}, apperr.New(apperr.NotFound, "no policy change %d", id)
}

// History returns a page of policy changes, newest first, as the store
// lists them under f (only the rules of f.Projects, the changes f's search
// selects, at most MaxRulesShown rules a side with the counts of the
// rest), and the cursor of the next page (HistoryFilter.Before; 0 when
// there is none). The store filters and clips, so that a page costs the
// same whatever the size of the changes on it.
func (e *Engine) History(ctx context.Context, f HistoryFilter) ([]Change, int64, error) {
	limit, err := f.limit()
	if err != nil {
		return nil, 0, err
	}
	f.Limit = limit
	changes, err := e.store.History(ctx, f)
	if err != nil {
		return nil, 0, err
	}
	if len(changes) < limit {
		return changes, 0, nil
	}
	return changes, changes[len(changes)-1].ID, nil
}

// visible returns c with only the rules of projects (all when nil), and
// whether any is left; a change that touched no rule (none recorded) is
// shown only when projects is nil.
func (c Change) visible(projects []string) (Change, bool) {
	if projects == nil {
		return c, true
	}
	keep := func(rules []Rule) []Rule {
		var out []Rule
		for _, r := range rules {
			if slices.Contains(projects, r.Normalized().Project) {
				out = append(out, r)
			}
		}
		return out
	}
	c.Before, c.After = keep(c.Before), keep(c.After)
	return c, len(c.Before)+len(c.After) > 0
}
