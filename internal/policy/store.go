package policy

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
)

// Casbin policy types of the broker's model.
const (
	ptypeChannel = "p"  // sub, obj (channel), act (role), eft, ttl
	ptypeAdmin   = "p2" // sub, obj (api object), act (read/write)
	ptypeLogin   = "p3" // sub, obj (service), eft, ttl
)

// Line is one row of the Casbin rule table (casbin_rule): an id, the policy
// type and up to six values. The sixth (v5) holds the rule's project, ""
// for the project a rule without one has (see Rule.Normalized), so that the
// previous release, which ignores v5, reads such rows as they are meant.
type Line struct {
	ID    int64
	PType string
	V     [6]string
}

// casbinValues returns l's values as the model's policy definitions order
// them: the subject, the project (the domain), then the rest of the type's.
func (l Line) casbinValues() []string {
	v, dom := l.V, ruleFromLine(l).Project
	switch l.PType {
	case ptypeAdmin:
		return []string{v[0], dom, v[1], v[2]}
	case ptypeLogin:
		return []string{v[0], dom, v[1], v[2], v[3]}
	}
	return []string{v[0], dom, v[1], v[2], v[3], v[4]}
}

// lineFromRule returns the Casbin line that stores r.
func lineFromRule(r Rule) Line {
	project := r.Project
	if project == (Rule{Role: r.Role}).Normalized().Project {
		project = "" // the kind's default is stored as the previous release wrote it
	}
	if r.IsAdmin() {
		return Line{ID: r.ID, PType: ptypeAdmin, V: [6]string{r.Subject, r.Channel, string(r.Role), 5: project}}
	}
	if r.IsLogin() {
		return Line{ID: r.ID, PType: ptypeLogin, V: [6]string{r.Subject, r.Channel, string(r.Effect), strconv.Itoa(r.MaxTTLSeconds), 5: project}}
	}
	return Line{ID: r.ID, PType: ptypeChannel, V: [6]string{
		r.Subject, r.Channel, string(r.Role), string(r.Effect), strconv.Itoa(r.MaxTTLSeconds), project}}
}

// ruleFromLine maps a line's fields onto a Rule without judging them; an
// unparseable lifetime becomes -1, which Validate rejects.
func ruleFromLine(l Line) Rule {
	r := Rule{ID: l.ID, Subject: l.V[0], Channel: l.V[1], Role: Role(l.V[2]), Project: l.V[5]}
	ttlField := l.V[4]
	switch l.PType {
	case ptypeAdmin:
		r.Effect = Allow
		return r.Normalized()
	case ptypeLogin:
		r.Role, r.Effect, ttlField = Login, Effect(l.V[2]), l.V[3]
	default:
		r.Effect = Effect(l.V[3])
	}
	if ttlField != "" {
		ttl, err := strconv.Atoi(ttlField)
		if err != nil {
			ttl = -1
		}
		r.MaxTTLSeconds = ttl
	}
	return r.Normalized()
}

// ruleOf returns the rule a stored line holds, or an error naming the line
// when it is not a valid rule of the broker's model.
func ruleOf(l Line) (Rule, error) {
	r := ruleFromLine(l)
	var err error
	switch {
	case l.PType != ptypeChannel && l.PType != ptypeAdmin && l.PType != ptypeLogin:
		err = apperr.Field("ptype", "unknown policy type %q", l.PType)
	case (l.PType == ptypeAdmin) != r.IsAdmin(), (l.PType == ptypeLogin) != r.IsLogin():
		err = apperr.Field("role", "%q does not belong to policy type %q", r.Role, l.PType)
	default:
		err = r.Validate()
	}
	if err != nil {
		return Rule{}, apperr.Wrap(apperr.Internal, err, "stored policy rule #"+strconv.FormatInt(l.ID, 10)+" is invalid")
	}
	return r, nil
}

// Mutation is one atomic change to a store: lines removed (by id) and lines
// added, recorded as one history entry.
type Mutation struct {
	// Action names the change in the history: "add", "remove", "import",
	// "bootstrap", "revoke" and "lift" (a revocation's deny rule), or a
	// Casbin adapter operation.
	Action string
	Remove []int64
	Add    []Line // IDs are assigned by the store
	// UnlessPType makes the mutation do nothing when the store holds any
	// line of this policy type (decided atomically with the change).
	UnlessPType string
	// ExpectVersion, when set, makes the mutation a Conflict unless the
	// policy is at that version (decided atomically with the change): an
	// apply after a plan.
	ExpectVersion *int64
	// Unchanged, when set, is noted on the change's history entry: how many
	// of an import's rules were in force already.
	Unchanged *int
}

// Applied reports what a mutation did.
type Applied struct {
	Version int64  // the store's version after the change
	Removed []Line // as they were
	Added   []Line // with their new ids
	Skipped bool   // UnlessPType found a line; nothing changed
}

// Change is one entry of the policy history: who changed what, and when.
type Change struct {
	ID        int64     `json:"id"`
	At        time.Time `json:"at"`
	Actor     string    `json:"actor"`
	RequestID string    `json:"requestId,omitempty"`
	Action    string    `json:"action"`
	Before    []Rule    `json:"before,omitempty"` // rules removed
	After     []Rule    `json:"after,omitempty"`  // rules added
	// ApplyID groups the entries of one apply (Engine.Replace): one entry
	// per rule it changed, all with the same ApplyID; 0 for other changes,
	// each one entry.
	ApplyID int64 `json:"applyId,omitempty"`
	// Unchanged counts the rules of an import that were in force already
	// (Mutation.Unchanged; 0 otherwise).
	Unchanged int `json:"unchanged,omitempty"`
	// BeforeTotal and AfterTotal count the rules removed and added when
	// Clip left some out of Before and After (0 otherwise).
	BeforeTotal int `json:"beforeTotal,omitempty"`
	AfterTotal  int `json:"afterTotal,omitempty"`
}

// MaxRulesShown is how many rules a history listing shows of one change's
// before and after (Change.Clip): a bulk change of 100,000 rules is one entry
// that a page of history must not materialise a thousand times.
const MaxRulesShown = 100

// Clip returns c with at most n rules in Before and After, counting the
// rest in BeforeTotal and AfterTotal.
func (c Change) Clip(n int) Change {
	if len(c.Before) > n {
		c.BeforeTotal, c.Before = len(c.Before), c.Before[:n]
	}
	if len(c.After) > n {
		c.AfterTotal, c.After = len(c.After), c.After[:n]
	}
	return c
}

// HistoryFilter pages through the history, newest first.
type HistoryFilter struct {
	// Limit is the most entries to return: 0 means DefaultHistoryLimit, at
	// most MaxHistoryLimit.
	Limit int
	// Before, when not 0, returns only entries with an ID below it (the
	// cursor: the last ID of the previous page).
	Before int64
	// Projects, when not nil, shows only the rules of these projects, and
	// only the changes that have some.
	Projects []string

	// What people look for: changes made by an actor whose name contains
	// Actor, of an Action, at or after From and before To, touching a rule
	// (of Projects) whose channel matches Channel ("*" any run, as
	// Filter.ChannelLike) or the rule RuleID.
	Actor, Action, Channel string
	From, To               time.Time
	RuleID                 int64
}

// historyShown is how many rules of each side a history listing shows.
const historyShown = MaxRulesShown

// listed is c as History lists it under f, and whether f selects it: only
// its rules of f.Projects, at most historyShown a side, BeforeTotal and
// AfterTotal counting those the clip left out.
func (f HistoryFilter) listed(c Change) (Change, bool) {
	c, ok := c.visible(f.Projects)
	if !ok || !f.selects(c) {
		return Change{}, false
	}
	return c.Clip(historyShown), true
}

// selects reports whether f's search keeps c (whose rules are already those
// the caller may see).
func (f HistoryFilter) selects(c Change) bool {
	if (f.Actor != "" && !strings.Contains(c.Actor, f.Actor)) || (f.Action != "" && c.Action != f.Action) ||
		(!f.From.IsZero() && c.At.Before(f.From)) || (!f.To.IsZero() && !c.At.Before(f.To)) {
		return false
	}
	if f.Channel == "" && f.RuleID == 0 {
		return true
	}
	for _, r := range append(slices.Clip(c.Before), c.After...) {
		if (f.Channel == "" || textLike(f.Channel, r.Channel)) && (f.RuleID == 0 || r.ID == f.RuleID) {
			return true
		}
	}
	return false
}

// History page sizes.
const (
	DefaultHistoryLimit = 100
	MaxHistoryLimit     = 1000
)

func (f HistoryFilter) limit() (int, error) {
	switch {
	case f.Limit == 0:
		return DefaultHistoryLimit, nil
	case f.Limit < 0 || f.Limit > MaxHistoryLimit:
		return 0, apperr.Field("limit", "must be 1..%d", MaxHistoryLimit)
	case f.Before < 0:
		return 0, apperr.Field("before", "must not be negative")
	}
	return f.Limit, nil
}

// Store keeps the rules in the Casbin table layout with their history. Every
// method returns *apperr.Error values: Conflict when an added line already
// exists, NotFound when a removed id does not, Unavailable when the backing
// database cannot be reached.
type Store interface {
	// Load returns the lines f keeps, in id order, and the version of the
	// store they were read at. Versions increase with every change.
	Load(ctx context.Context, f Filter) ([]Line, int64, error)
	// Version returns the store's current version, cheaply.
	Version(ctx context.Context) (int64, error)
	// Apply makes m, and records it in the history as done by a, all or
	// nothing.
	Apply(ctx context.Context, a Actor, m Mutation) (Applied, error)
	// History returns a page of the history entries f selects, newest
	// first, each as HistoryFilter.listed shows it (its rules of f.Projects,
	// at most MaxRulesShown a side, with the counts of the rest).
	History(ctx context.Context, f HistoryFilter) ([]Change, error)
	// Since returns the changes after version, oldest first, at most limit:
	// what a replica at version applies to catch up without a full load.
	Since(ctx context.Context, version int64, limit int) ([]Change, error)
	// Watch calls changed with the new version after every change committed
	// by anyone, and with version 0 whenever changes may have been missed
	// (when it starts, and after reconnecting), until ctx is done. It
	// returns ctx's error.
	Watch(ctx context.Context, changed func(version int64)) error
}

// changeRules returns the rules of lines, for the history.
// perRule splits an apply's rules removed and added into its history
// entries, as migration 018's policy_apply does: the n-th removed and the
// n-th added rule of a key (subject, channel, role, project; in id order)
// are one entry (the rule changed), every other rule one entry of its own,
// in the order of each entry's first id. Each entry is (before, after),
// each nil or one rule.
func perRule(removed, added []Rule) [][2][]Rule {
	type entry struct {
		first int64
		rules [2][]Rule
	}
	var entries []*entry
	open := map[ruleKey][]*entry{} // removed rules of a key not yet paired, in id order
	for _, r := range removed {
		e := &entry{first: r.ID, rules: [2][]Rule{{r}, nil}}
		entries = append(entries, e)
		k := keyOf(r)
		open[k] = append(open[k], e)
	}
	for _, r := range added {
		if k := keyOf(r); len(open[k]) > 0 {
			e := open[k][0]
			open[k] = open[k][1:]
			e.rules[1], e.first = []Rule{r}, min(e.first, r.ID)
			continue
		}
		entries = append(entries, &entry{first: r.ID, rules: [2][]Rule{nil, {r}}})
	}
	slices.SortStableFunc(entries, func(a, b *entry) int { return cmp.Compare(a.first, b.first) })
	out := make([][2][]Rule, len(entries))
	for i, e := range entries {
		out[i] = e.rules
	}
	return out
}

func changeRules(lines []Line) []Rule {
	if len(lines) == 0 {
		return nil
	}
	out := make([]Rule, len(lines))
	for i, l := range lines {
		out[i] = ruleFromLine(l)
	}
	return out
}
