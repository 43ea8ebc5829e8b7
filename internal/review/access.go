package review

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"time"

	"github.com/broker-dev/broker/internal/agora"
	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/policy"
)

// maxAccessPeriod bounds an access review's period.
const maxAccessPeriod = 31 * 24 * time.Hour

// AccessQuery is one access review: a channel of a project, a role, a
// period.
type AccessQuery struct {
	Project, Channel string
	Role             policy.Role
	From, To         time.Time
}

// Could is who could hold the role by the policy as it stood from a moment.
type Could struct {
	Version int64              `json:"version"`
	From    time.Time          `json:"from"`
	Allowed []policy.RuleCheck `json:"allowed"`
	Denied  []policy.RuleCheck `json:"denied"`
}

// Got is one caller's tokens for the channel in the period.
type Got struct {
	Issuer  string    `json:"issuer"`
	Subject string    `json:"subject"`
	UID     uint32    `json:"uid,omitempty"`
	Grants  int       `json:"grants"`
	First   time.Time `json:"first"`
	Last    time.Time `json:"last"`
}

// Did is one uid's joins of the channel in the period.
type Did struct {
	UID         uint32    `json:"uid"`
	Joins       int       `json:"joins"`
	Unexplained int       `json:"unexplained"`
	First       time.Time `json:"first"`
	Last        time.Time `json:"last"`
}

// Access is an access review: who could (the policy, version by version),
// who got (granted tokens), who did (joins Agora reported), and where they
// part.
type Access struct {
	Project          string    `json:"project"`
	Channel          string    `json:"channel"`
	Role             string    `json:"role"`
	From             time.Time `json:"from"`
	To               time.Time `json:"to"`
	Could            []Could   `json:"could"`
	CouldTruncated   bool      `json:"couldTruncated"`
	Got              []Got     `json:"got"`
	JoinsObserved    bool      `json:"joinsObserved"` // Agora's events are received (BROKER_AGORA_NCS_SECRET)
	Did              []Did     `json:"did"`
	GrantedNotJoined []uint32  `json:"grantedNotJoined"` // uids granted a token that never joined
	JoinedNotGranted []uint32  `json:"joinedNotGranted"` // uids that joined with no token of the period
}

// AccessDeps are what an access review reads.
type AccessDeps struct {
	Policies *policy.Engine
	Log      Searcher
	Events   Store // nil: joins are not observed
}

// Review answers q from d: the policies that stood in the period (from the
// policy history), the grants of the issuance log, Agora's joins.
func Review(ctx context.Context, d AccessDeps, q AccessQuery) (Access, error) {
	switch {
	case q.Channel == "":
		return Access{}, apperr.Field("channel", "is required")
	case q.From.IsZero() || q.To.IsZero() || !q.To.After(q.From):
		return Access{}, apperr.Field("to", "from and to are required, to after from")
	case q.To.Sub(q.From) > maxAccessPeriod:
		return Access{}, apperr.Field("to", "a review covers at most %s", maxAccessPeriod)
	}
	if q.Role == "" {
		q.Role = policy.Subscriber
	}
	a := Access{Project: q.Project, Channel: q.Channel, Role: string(q.Role), From: q.From.UTC(), To: q.To.UTC(),
		Could: []Could{}, Got: []Got{}, Did: []Did{}, GrantedNotJoined: []uint32{}, JoinedNotGranted: []uint32{}}

	sets, truncated, err := d.Policies.Versions(ctx, q.From, q.To)
	if err != nil {
		return Access{}, err
	}
	a.CouldTruncated = truncated
	for _, set := range sets {
		replay, err := policy.NewReplayer(ctx, set.Rules)
		if err != nil {
			return Access{}, err
		}
		h, err := replay.Who(q.Project, q.Channel, q.Role)
		replay.Close()
		if err != nil {
			return Access{}, err
		}
		a.Could = append(a.Could, Could{Version: set.Version, From: set.From.UTC(), Allowed: h.Allowed, Denied: h.Denied})
	}

	got := map[[2]string]*Got{}
	granted := map[uint32]bool{}
	f := audit.Filter{Channel: q.Channel, Decision: audit.DecisionGranted, Projects: []string{q.Project}, From: q.From, To: q.To, Limit: audit.MaxLimit}
	for {
		page, err := d.Log.Search(ctx, f)
		if err != nil {
			return Access{}, err
		}
		for _, r := range page.Records {
			if r.Role != string(q.Role) && !(q.Role == policy.Subscriber && r.Role == string(policy.Publisher)) {
				continue // a publisher's token lets one subscribe too
			}
			k := [2]string{r.Issuer, r.Subject}
			g := got[k]
			if g == nil {
				g = &Got{Issuer: r.Issuer, Subject: r.Subject, UID: r.UID, First: r.Time, Last: r.Time}
				got[k] = g
			}
			g.Grants++
			g.First, g.Last = minTime(g.First, r.Time), maxTime(g.Last, r.Time)
			if r.UID != 0 {
				granted[r.UID] = true
			}
		}
		if page.NextCursor == "" {
			break
		}
		f.Cursor = page.NextCursor
	}
	for _, g := range got {
		a.Got = append(a.Got, *g)
	}
	slices.SortFunc(a.Got, func(x, y Got) int { return cmp.Or(cmp.Compare(x.Subject, y.Subject), cmp.Compare(x.Issuer, y.Issuer)) })

	if d.Events != nil {
		a.JoinsObserved = true
		events, err := d.Events.Events(ctx, q.Project, q.Channel, q.From, q.To, 0)
		if err != nil {
			return Access{}, err
		}
		did := map[uint32]*Did{}
		for _, e := range events {
			if e.Kind != agora.Joined || e.UID == 0 {
				continue
			}
			x := did[e.UID]
			if x == nil {
				x = &Did{UID: e.UID, First: e.At, Last: e.At}
				did[e.UID] = x
			}
			x.Joins++
			x.First, x.Last = minTime(x.First, e.At), maxTime(x.Last, e.At)
			if e.Explained != nil && !*e.Explained {
				x.Unexplained++
			}
		}
		for _, uid := range slices.Sorted(maps.Keys(did)) {
			a.Did = append(a.Did, *did[uid])
			if !granted[uid] {
				a.JoinedNotGranted = append(a.JoinedNotGranted, uid)
			}
		}
		for _, uid := range slices.Sorted(maps.Keys(granted)) {
			if did[uid] == nil {
				a.GrantedNotJoined = append(a.GrantedNotJoined, uid)
			}
		}
	}
	return a, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
