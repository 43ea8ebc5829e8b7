package httpapi

import (
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/problem"
)

// caller returns the policy caller for the authenticated identity.
func caller(r *http.Request) (policy.Caller, auth.Identity, bool) {
	id, ok := auth.FromContext(r.Context())
	return policy.Caller{Subject: id.PolicySubject(), Groups: id.Groups}, id, ok
}

// actor is the signed-in caller making a change: named in the policy
// history, and the one whose rights the engine checks against the change.
func actor(r *http.Request) policy.Actor {
	c, id, _ := caller(r)
	return policy.Actor{Subject: "user:" + id.PolicySubject(), RequestID: middleware.GetReqID(r.Context()), Caller: c}
}

// Pages of GET /v1/policies.
const (
	defaultRulesPage = 100
	maxRulesPage     = 1000
)

// listPolicies serves GET /v1/policies a page at a time, filtered as
// people search (policy.Filter): subject and channel as text with "*" for
// any run (a bare subject name matches user: and group:), role, effect, the
// rules that apply to a channel (appliesTo) or to a caller (user, groups),
// sorted (sort: id, subject, channel, role, effect, project; "-" first for
// descending); limit (default 100, at most 1,000); cursor (the nextCursor of
// the previous page); total counts every rule selected. Only the rules of
// the projects the caller may read (or of ?project=, with the rules of
// "*"). An unknown parameter is a 400 naming it.
func listPolicies(p *policy.Engine) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := knownParams(q, "subject", "channel", "role", "effect", "project", "appliesTo", "user", "groups", "sort", "limit", "cursor"); err != nil {
			problem.Write(w, r, err)
			return
		}
		projects, err := ruleScope(p, r, q.Get("project"))
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		f := policy.Filter{SubjectLike: q.Get("subject"), ChannelLike: q.Get("channel"), Role: policy.Role(q.Get("role")),
			Effect: policy.Effect(q.Get("effect")), AppliesToChannel: q.Get("appliesTo"), Projects: projects,
			Sort: q.Get("sort"), Limit: defaultRulesPage}
		if u, g := q.Get("user"), q.Get("groups"); u != "" || g != "" {
			c := policy.Caller{Subject: strings.TrimPrefix(u, "user:")}
			for _, name := range strings.Split(g, ",") {
				if name = strings.TrimSpace(name); name != "" {
					c.Groups = append(c.Groups, strings.TrimPrefix(name, "group:"))
				}
			}
			f.AppliesTo = &c
		}
		if f.Limit, err = limitParam(q, defaultRulesPage, maxRulesPage); err != nil {
			problem.Write(w, r, err)
			return
		}
		// A cursor is the last id of the previous page in id order (stable
		// while rules are added), else "o" and the offset of the next page.
		byID := f.Sort == "" || f.Sort == "id"
		if v := q.Get("cursor"); v != "" {
			off, isOffset := strings.CutPrefix(v, "o")
			n, err := strconv.ParseInt(off, 10, 64)
			if err != nil || n < 0 || isOffset == byID || n > math.MaxInt32 {
				problem.Write(w, r, apperr.Field("cursor", "is not a cursor this API returned for this sort"))
				return
			}
			if isOffset {
				f.Offset = int(n)
			} else {
				f.After = n
			}
		}
		limit := f.Limit
		f.Limit++ // one more tells whether there is a next page
		rules, total, err := p.Query(r.Context(), f)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		resp := map[string]any{"rules": rules, "nextCursor": nil, "total": total}
		if len(rules) > limit {
			rules = rules[:limit]
			resp["rules"] = rules
			if byID {
				resp["nextCursor"] = strconv.FormatInt(rules[limit-1].ID, 10)
			} else {
				resp["nextCursor"] = "o" + strconv.Itoa(f.Offset+limit)
			}
		}
		if rules == nil {
			resp["rules"] = []policy.Rule{}
		}
		writeJSON(w, http.StatusOK, resp)
	}
}

// limitParam reads ?limit=: def when absent, else 1 to most.
func limitParam(q url.Values, def, most int) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		return 0, apperr.Field("limit", "must be a whole number from 1 to %d", most)
	}
	return n, nil
}

// offsetPage reads ?limit= (limitParam) and ?cursor=, an offset this API
// returned as nextCursor (0 when absent).
func offsetPage(q url.Values, def, most int) (limit, offset int, err error) {
	if limit, err = limitParam(q, def, most); err != nil {
		return 0, 0, err
	}
	if v := q.Get("cursor"); v != "" {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			return 0, 0, apperr.Field("cursor", "is not a cursor this API returned")
		}
	}
	return limit, offset, nil
}

// knownParams is a 400 naming the first query parameter not in names: a
// misspelt filter must not answer as if there were none.
func knownParams(q url.Values, names ...string) error {
	var unknown []string
	for k := range q {
		if !slices.Contains(names, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return apperr.Field(unknown[0], "is not a parameter of this request (unknown: %s; known: %s)",
			strings.Join(unknown, ", "), strings.Join(names, ", "))
	}
	return nil
}

// ruleRequest is the body of POST /v1/policies.
type ruleRequest struct {
	Subject       string `json:"subject"`
	Channel       string `json:"channel"`
	Role          string `json:"role"`
	Effect        string `json:"effect"`
	MaxTTLSeconds int    `json:"maxTtlSeconds"`
	Project       string `json:"project"`
}

func addPolicy(p *policy.Engine) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body ruleRequest
		if err := decodeJSON(r, &body); err != nil {
			problem.Write(w, r, err)
			return
		}
		rule, err := p.Add(r.Context(), actor(r), policy.Rule{Subject: body.Subject, Channel: body.Channel,
			Role: policy.Role(body.Role), Effect: policy.Effect(body.Effect), MaxTTLSeconds: body.MaxTTLSeconds, Project: body.Project})
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		w.Header().Set("Location", "/v1/policies/"+strconv.FormatInt(rule.ID, 10))
		writeJSON(w, http.StatusCreated, rule)
	}
}

// removeFilter selects the rules of a bulk removal as GET /v1/policies
// does.
type removeFilter struct {
	Subject   string `json:"subject"`
	Channel   string `json:"channel"`
	Role      string `json:"role"`
	Effect    string `json:"effect"`
	AppliesTo string `json:"appliesTo"`
	Project   string `json:"project"`
}

// removePolicies serves POST /v1/policies/remove: one change that removes
// every rule named ({"ids": [...]}), or every rule a filter selects
// ({"filter": {...}, "count": N}, the filter as GET /v1/policies reads it):
// the count the admin confirmed must be the number of rules the filter
// selects now (409 otherwise, saying how many), and a filter that selects
// everything is refused. All or none.
func removePolicies(p *policy.Engine) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			IDs    []int64       `json:"ids"`
			Filter *removeFilter `json:"filter"`
			Count  *int          `json:"count"`
		}
		if err := decodeJSON(r, &body); err != nil {
			problem.Write(w, r, err)
			return
		}
		if body.Filter != nil {
			if len(body.IDs) > 0 {
				problem.Write(w, r, apperr.Field("ids", "give ids or a filter, not both"))
				return
			}
			bf := *body.Filter
			projects, err := ruleScope(p, r, bf.Project)
			if err != nil {
				problem.Write(w, r, err)
				return
			}
			f := policy.Filter{SubjectLike: bf.Subject, ChannelLike: bf.Channel, Role: policy.Role(bf.Role),
				Effect: policy.Effect(bf.Effect), AppliesToChannel: bf.AppliesTo, Projects: projects}
			if bf == (removeFilter{}) {
				f.Projects = nil // every rule, which RemoveWhere refuses
			}
			n, err := p.RemoveWhere(r.Context(), actor(r), f, body.Count)
			if err != nil {
				problem.Write(w, r, err)
				return
			}
			writeJSON(w, http.StatusOK, map[string]int{"removed": n})
			return
		}
		n, err := p.RemoveMany(r.Context(), actor(r), body.IDs)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"removed": n})
	}
}

func removePolicy(p *policy.Engine) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
		if err != nil || id <= 0 {
			problem.Write(w, r, apperr.Field("id", "must be a positive whole number"))
			return
		}
		if err := p.Remove(r.Context(), actor(r), id); err != nil {
			problem.Write(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// explainRequest is the body of POST /v1/policies/explain: would this user
// (subject, groups) get this role on this channel?
type explainRequest struct {
	Subject string   `json:"subject"`
	Groups  []string `json:"groups"`
	Channel string   `json:"channel"`
	Role    string   `json:"role"`
	// Project is the project to decide in; empty: the default one.
	Project string `json:"project"`
}

// explainResponse answers an explain request: the decision, and a page of
// the rules that apply (the deciding rule first, then the other matches),
// Applicable counting them all.
type explainResponse struct {
	Project       string             `json:"project"`
	Allowed       bool               `json:"allowed"`
	Rule          *policy.Rule       `json:"rule"`
	MaxTTLSeconds int64              `json:"maxTtlSeconds"`
	Reason        string             `json:"reason"`
	Matches       []policy.RuleCheck `json:"matches"`
	Applicable    int                `json:"applicable"`
	NextCursor    *string            `json:"nextCursor"`
	// Version is the policy version decided on; At the moment asked for
	// (?at=), when the decision is of the past.
	Version int64      `json:"version"`
	At      *time.Time `json:"at,omitempty"`
}

// Pages of the rules explain lists.
const (
	defaultExplainPage = 20
	maxExplainPage     = 1000
)

func explainPolicy(p *policy.Engine) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := knownParams(q, "limit", "cursor", "at"); err != nil {
			problem.Write(w, r, err)
			return
		}
		var at time.Time
		if v := q.Get("at"); v != "" {
			var err error
			if at, err = time.Parse(time.RFC3339, v); err != nil {
				problem.Write(w, r, apperr.Field("at", "must be a time such as 2026-11-01T00:00:00Z (RFC 3339)"))
				return
			}
		}
		limit, offset, err := offsetPage(q, defaultExplainPage, maxExplainPage)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		var body explainRequest
		if err := decodeJSON(r, &body); err != nil {
			problem.Write(w, r, err)
			return
		}
		sub := strings.TrimPrefix(body.Subject, "user:")
		groups, bad := auth.CheckGroups(body.Groups)
		if bad != "" {
			problem.Write(w, r, apperr.Field("groups", "%s (the bound a token's groups claim has)", bad))
			return
		}
		if body.Project == "" {
			body.Project = policy.DefaultProject
		}
		if _, err := scope(p, r, policy.ObjectPolicies, policy.Read, body.Project); err != nil {
			problem.Write(w, r, err)
			return
		}
		// With ?at=, the decision as the policy stood at that moment, its
		// rules rebuilt from the history.
		x, version, err := p.ExplainAt(r.Context(), policy.Caller{Subject: sub, Groups: groups}, body.Project, body.Channel, policy.Role(body.Role), at)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		resp := explainResponse{Project: x.Project, Allowed: x.Decision.Allowed, Rule: x.Decision.Rule,
			MaxTTLSeconds: int64(x.Decision.MaxTTL / time.Second), Reason: x.Decision.Reason,
			Matches: x.Rules[min(offset, len(x.Rules)):], Applicable: len(x.Rules), Version: version}
		if !at.IsZero() {
			resp.At = &at
		}
		if len(resp.Matches) > limit {
			resp.Matches = resp.Matches[:limit]
			next := strconv.Itoa(offset + limit)
			resp.NextCursor = &next
		}
		writeJSON(w, http.StatusOK, resp)
	}
}

// whoPolicy serves GET /v1/policies/who?channel=C&role=R[&project=P]: the
// reverse of explain, the rules that allow and those that deny the role on
// the channel (whose subjects may hold it: those allowed and not denied).
func whoPolicy(p *policy.Engine) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		project := q.Get("project")
		if project == "" {
			project = policy.DefaultProject
		}
		if _, err := scope(p, r, policy.ObjectPolicies, policy.Read, project); err != nil {
			problem.Write(w, r, err)
			return
		}
		h, err := p.Who(project, q.Get("channel"), policy.Role(q.Get("role")))
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, h)
	}
}

func exportPolicies(p *policy.Engine) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		projects, err := ruleScope(p, r, r.URL.Query().Get("project"))
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		var b strings.Builder
		switch format := r.URL.Query().Get("format"); format {
		case "", "csv":
			if err := p.Export(r.Context(), &b, policy.Filter{Projects: projects}); err != nil {
				problem.Write(w, r, err)
				return
			}
			w.Header().Set("Content-Type", "text/csv; charset=utf-8")
			w.Header().Set("Content-Disposition", `attachment; filename="policies.csv"`)
		case "yaml":
			rules, err := p.List(r.Context(), policy.Filter{Projects: projects})
			if err == nil {
				err = policy.WriteDocument(&b, rules)
			}
			if err != nil {
				problem.Write(w, r, err)
				return
			}
			w.Header().Set("Content-Type", "application/yaml; charset=utf-8")
			w.Header().Set("Content-Disposition", `attachment; filename="policy.yaml"`)
		default:
			problem.Write(w, r, apperr.Field("format", "must be csv or yaml"))
			return
		}
		io.WriteString(w, b.String())
	}
}

// importPolicies serves POST /v1/policies/import?mode=add|replace
// &project=P&dryRun=true: a policy CSV applied in one change (all or
// nothing; every bad row named with its line). add (the default) adds the
// rules not in force, so that importing a document twice adds nothing the
// second time; replace makes the rules of P (default: default) and "*"
// those of the document; dryRun reports what would change and changes
// nothing. The answer counts the rules added, removed and unchanged and
// lists the first maxImportListed of each change.
func importPolicies(p *policy.Engine) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := knownParams(q, "mode", "project", "dryRun"); err != nil {
			problem.Write(w, r, err)
			return
		}
		o := policy.ImportOptions{Mode: policy.ImportMode(q.Get("mode")), Project: q.Get("project")}
		switch v := q.Get("dryRun"); v {
		case "", "false":
		case "true":
			o.DryRun = true
		default:
			problem.Write(w, r, apperr.Field("dryRun", "must be true or false"))
			return
		}
		res, err := p.Import(r.Context(), actor(r), r.Body, o)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		clip := func(rules []policy.Rule) []policy.Rule {
			if rules == nil {
				return []policy.Rule{}
			}
			return rules[:min(len(rules), maxImportListed)]
		}
		writeJSON(w, http.StatusOK, map[string]any{"mode": res.Mode, "dryRun": res.DryRun, "version": res.Version,
			"imported": len(res.Added), "added": len(res.Added), "removed": len(res.Removed), "unchanged": res.Unchanged,
			"diff": map[string]any{"added": clip(res.Added), "removed": clip(res.Removed)}})
	}
}

// maxImportListed is how many rules an import's answer lists of each change.
const maxImportListed = 100

// policyHistory serves GET /v1/policies/history: changes newest first,
// each with at most policy.MaxRulesShown of its rules (the whole change:
// GET /v1/policies/history/{id}), searched by actor (a part of the name),
// action, channel (a rule's, "*" any run), ruleId, from and to (RFC 3339),
// a page at a time (limit; before: the nextCursor). An unknown parameter is
// a 400 naming it.
func policyHistory(p *policy.Engine) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := knownParams(q, "project", "limit", "before", "actor", "action", "channel", "ruleId", "from", "to"); err != nil {
			problem.Write(w, r, err)
			return
		}
		f := policy.HistoryFilter{Actor: q.Get("actor"), Action: q.Get("action"), Channel: q.Get("channel")}
		var err error
		if f.Projects, err = ruleScope(p, r, q.Get("project")); err != nil {
			problem.Write(w, r, err)
			return
		}
		if f.Limit, err = intParam(q.Get("limit"), "limit"); err != nil {
			problem.Write(w, r, err)
			return
		}
		for _, id := range []struct {
			name string
			dst  *int64
		}{{"before", &f.Before}, {"ruleId", &f.RuleID}} {
			if v := q.Get(id.name); v != "" {
				if *id.dst, err = strconv.ParseInt(v, 10, 64); err != nil || *id.dst <= 0 {
					problem.Write(w, r, apperr.Field(id.name, "must be an id"))
					return
				}
			}
		}
		for _, t := range []struct {
			name string
			dst  *time.Time
		}{{"from", &f.From}, {"to", &f.To}} {
			if v := q.Get(t.name); v != "" {
				if *t.dst, err = time.Parse(time.RFC3339, v); err != nil {
					problem.Write(w, r, apperr.Field(t.name, "must be a time such as 2026-11-01T00:00:00Z (RFC 3339)"))
					return
				}
			}
		}
		changes, next, err := p.History(r.Context(), f)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		if changes == nil {
			changes = []policy.Change{}
		}
		resp := map[string]any{"changes": changes}
		if next != 0 {
			resp["nextCursor"] = strconv.FormatInt(next, 10)
		}
		writeJSON(w, http.StatusOK, resp)
	}
}

// Pages of one change's rules.
const (
	defaultChangePage = 100
	maxChangePage     = 1000
)

// policyChange serves GET /v1/policies/history/{id}: one change, its rules
// removed then added a page at a time (limit, cursor), with their counts.
func policyChange(p *policy.Engine) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := knownParams(q, "project", "limit", "cursor"); err != nil {
			problem.Write(w, r, err)
			return
		}
		id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
		if err != nil || id <= 0 {
			problem.Write(w, r, apperr.Field("id", "must be a change id"))
			return
		}
		projects, err := ruleScope(p, r, q.Get("project"))
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		limit, offset, err := offsetPage(q, defaultChangePage, maxChangePage)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		c, err := p.Change(r.Context(), id, projects)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		// The removed rules, then the added ones, as one list paged by offset.
		removed, added := len(c.Before), len(c.After)
		window := func(rules []policy.Rule, from int) []policy.Rule {
			clamp := func(i int) int { return min(max(i, 0), len(rules)) }
			return rules[clamp(from):clamp(from+limit)]
		}
		before, after := window(c.Before, offset), window(c.After, offset-removed)
		resp := map[string]any{"id": c.ID, "at": c.At, "actor": c.Actor, "action": c.Action, "requestId": c.RequestID,
			"applyId": c.ApplyID, "removed": removed, "added": added, "before": before, "after": after, "nextCursor": nil}
		if end := offset + len(before) + len(after); end < removed+added {
			resp["nextCursor"] = strconv.Itoa(end)
		}
		writeJSON(w, http.StatusOK, resp)
	}
}

func intParam(v, name string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, apperr.Field(name, "must be a whole number")
	}
	return n, nil
}
