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

// AccessQuery is one access review: a channel of a project, or a user of
// it (Subject, as the issuance log names callers, and its Issuer when
// several have records), a role, a period.
type AccessQuery struct {
	Project, Channel string
	Subject, Issuer  string
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

// Got is one caller's tokens for the channel in the period (in a user's
// review, the user's tokens for one channel).
type Got struct {
	Issuer  string    `json:"issuer"`
	Subject string    `json:"subject"`
	Channel string    `json:"channel,omitempty"`
	UID     uint32    `json:"uid,omitempty"`
	Grants  int       `json:"grants"`
	First   time.Time `json:"first"`
	Last    time.Time `json:"last"`
}

// Did is one uid's joins of the channel in the period (in a user's review,
// of one channel).
type Did struct {
	UID         uint32    `json:"uid"`
	Channel     string    `json:"channel,omitempty"`
	Joins       int       `json:"joins"`
	Unexplained int       `json:"unexplained"`
	First       time.Time `json:"first"`
	Last        time.Time `json:"last"`
}

// Access is an access review: who could (the policy, version by version),
// who got (granted tokens), who did (joins Agora reported), and where they
// part.
type Access struct {
	Project string `json:"project"`
	Channel string `json:"channel,omitempty"`
	// Subject, Issuer and Groups are the user of a user's review (the
	// groups of their latest record in the period, which the policy was
	// asked about).
	Subject          string    `json:"subject,omitempty"`
	Issuer           string    `json:"issuer,omitempty"`
	Groups           []string  `json:"groups,omitempty"`
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
	// In a user's review: the channels (or patterns) of their tokens they
	// never joined, and the channels they joined with no token of the
	// period that covers them.
	ChannelsGrantedNotJoined []string `json:"channelsGrantedNotJoined,omitempty"`
	ChannelsJoinedNotGranted []string `json:"channelsJoinedNotGranted,omitempty"`
}

// AccessDeps are what an access review reads.
type AccessDeps struct {
	Policies *policy.Engine
	Log      Searcher
	Events   Store // nil: joins are not observed
	// Qualify names an issuer as rule subjects do ("" for the default
	// issuer; false for one no longer configured); nil: names are bare.
	Qualify func(issuer string) (string, bool)
}

// Review answers q from d: the policies that stood in the period (from the
// policy history), the grants of the issuance log, Agora's joins.
func Review(ctx context.Context, d AccessDeps, q AccessQuery) (Access, error) {
	switch {
	case (q.Channel == "") == (q.Subject == ""):
		return Access{}, apperr.Field("channel", "give a channel or a subject (a user), one of them")
	case q.From.IsZero() || q.To.IsZero() || !q.To.After(q.From):
		return Access{}, apperr.Field("to", "from and to are required, to after from")
	case q.To.Sub(q.From) > maxAccessPeriod:
		return Access{}, apperr.Field("to", "a review covers at most %s", maxAccessPeriod)
	}
	switch q.Role {
	case "":
		q.Role = policy.Subscriber
	case policy.Publisher, policy.Subscriber:
	default:
		return Access{}, apperr.Field("role", "must be publisher or subscriber")
	}
	if q.Subject != "" {
		return reviewUser(ctx, d, q)
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
	err = eachRecord(ctx, d.Log, f, func(r audit.Record) {
		if grants(r, q.Role) {
			tally(got, [2]string{r.Issuer, r.Subject}, r, "", granted)
		}
	})
	if err != nil {
		return Access{}, err
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
			if e.Kind == agora.Joined && e.UID != 0 {
				joined(did, e.UID, e, "")
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

// reviewUser is the review of one user: the channel rules that applied to
// them version by version (who could), their grants per channel (who got),
// the joins of their uids on those channels (who did), and where they part.
func reviewUser(ctx context.Context, d AccessDeps, q AccessQuery) (Access, error) {
	a := Access{Project: q.Project, Subject: q.Subject, Issuer: q.Issuer, Role: string(q.Role), From: q.From.UTC(), To: q.To.UTC(),
		Could: []Could{}, Got: []Got{}, Did: []Did{}, GrantedNotJoined: []uint32{}, JoinedNotGranted: []uint32{}}
	got := map[string]*Got{}
	granted := map[uint32]bool{}
	issuers := map[string]bool{}
	seen := false
	f := audit.Filter{Subject: q.Subject, Issuer: q.Issuer, Projects: []string{q.Project}, From: q.From, To: q.To, Limit: audit.MaxLimit}
	err := eachRecord(ctx, d.Log, f, func(r audit.Record) {
		issuers[r.Issuer] = true
		if !seen { // newest first: the user as they were last
			seen, a.Issuer, a.Groups = true, r.Issuer, r.Groups
		}
		if r.Decision == audit.DecisionGranted && r.Channel != "" && grants(r, q.Role) {
			tally(got, r.Channel, r, r.Channel, granted)
		}
	})
	if err != nil {
		return Access{}, err
	}
	if len(issuers) > 1 {
		return Access{}, apperr.Field("issuer", "subject %q has records from %d issuers in the period: name one (issuer=)", q.Subject, len(issuers))
	}
	for _, g := range got {
		a.Got = append(a.Got, *g)
	}
	slices.SortFunc(a.Got, func(x, y Got) int { return cmp.Compare(x.Channel, y.Channel) })

	// Who could: the rules that applied to the user as the policy stood.
	name := q.Subject
	if d.Qualify != nil && a.Issuer != "" {
		qual, ok := d.Qualify(a.Issuer)
		if !ok {
			return Access{}, apperr.Field("issuer", "%s is no longer a configured issuer: its users' rules cannot be named", a.Issuer)
		}
		if qual != "" {
			name = qual + "/" + name
		}
	}
	caller := policy.Caller{Subject: name, Groups: a.Groups}
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
		x, err := replay.Explain(caller, q.Project, "*", q.Role)
		replay.Close()
		if err != nil {
			return Access{}, err
		}
		c := Could{Version: set.Version, From: set.From.UTC(), Allowed: []policy.RuleCheck{}, Denied: []policy.RuleCheck{}}
		for _, rc := range x.Rules {
			rc.Matches, rc.Reason = true, "applies to the user"
			if rc.Rule.Effect == policy.Deny {
				c.Denied = append(c.Denied, rc)
			} else {
				c.Allowed = append(c.Allowed, rc)
			}
		}
		a.Could = append(a.Could, c)
	}

	// Who did: the joins of the user's uids, per channel.
	if d.Events != nil {
		a.JoinsObserved = true
		a.ChannelsGrantedNotJoined, a.ChannelsJoinedNotGranted = []string{}, []string{}
		type key struct {
			uid     uint32
			channel string
		}
		did := map[key]*Did{}
		for _, uid := range slices.Sorted(maps.Keys(granted)) {
			events, err := d.Events.EventsOf(ctx, q.Project, uid, q.From, q.To, 0)
			if err != nil {
				return Access{}, err
			}
			for _, e := range events {
				if e.Kind == agora.Joined {
					joined(did, key{e.UID, e.Channel}, e, e.Channel)
				}
			}
		}
		joined := map[string]bool{}
		for _, x := range did {
			a.Did = append(a.Did, *x)
			joined[x.Channel] = true
		}
		slices.SortFunc(a.Did, func(x, y Did) int { return cmp.Or(cmp.Compare(x.Channel, y.Channel), cmp.Compare(x.UID, y.UID)) })
		channels := slices.Sorted(maps.Keys(joined))
		for _, g := range a.Got {
			if !slices.ContainsFunc(channels, func(c string) bool { return audit.MatchChannel(g.Channel, c) }) {
				a.ChannelsGrantedNotJoined = append(a.ChannelsGrantedNotJoined, g.Channel)
			}
		}
		for _, c := range channels {
			if !slices.ContainsFunc(a.Got, func(g Got) bool { return audit.MatchChannel(g.Channel, c) }) {
				a.ChannelsJoinedNotGranted = append(a.ChannelsJoinedNotGranted, c)
			}
		}
	}
	return a, nil
}

// eachRecord hands fn every record of the log f selects, page by page.
func eachRecord(ctx context.Context, log Searcher, f audit.Filter, fn func(audit.Record)) error {
	for {
		page, err := log.Search(ctx, f)
		if err != nil {
			return err
		}
		for _, r := range page.Records {
			fn(r)
		}
		if page.NextCursor == "" {
			return nil
		}
		f.Cursor = page.NextCursor
	}
}

// grants reports whether the granted record r lets its holder hold role: a
// publisher's token lets one subscribe too.
func grants(r audit.Record, role policy.Role) bool {
	return r.Role == string(role) || (role == policy.Subscriber && r.Role == string(policy.Publisher))
}

// tally counts the grant r in got under k (channel: the Got's, in a user's
// review), and its uid in granted.
func tally[K comparable](got map[K]*Got, k K, r audit.Record, channel string, granted map[uint32]bool) {
	g := got[k]
	if g == nil {
		g = &Got{Issuer: r.Issuer, Subject: r.Subject, Channel: channel, UID: r.UID, First: r.Time, Last: r.Time}
		got[k] = g
	}
	g.Grants++
	g.First, g.Last = minTime(g.First, r.Time), maxTime(g.Last, r.Time)
	if r.UID != 0 {
		granted[r.UID] = true
	}
}

// joined counts the join e in did under k (channel: the Did's, in a user's
// review).
func joined[K comparable](did map[K]*Did, k K, e Event, channel string) {
	x := did[k]
	if x == nil {
		x = &Did{UID: e.UID, Channel: channel, First: e.At, Last: e.At}
		did[k] = x
	}
	x.Joins++
	x.First, x.Last = minTime(x.First, e.At), maxTime(x.Last, e.At)
	if e.Explained != nil && !*e.Explained {
		x.Unexplained++
	}
}
