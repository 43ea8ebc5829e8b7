package httpapi

import (
	"cmp"
	"encoding/json"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5/middleware"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/problem"
)

// Bounds of POST /v1/policies/plan.
const (
	defaultPlanWindow = 7 * 24 * time.Hour
	maxPlanWindow     = 90 * 24 * time.Hour
	maxImpactListed   = 1000
	// maxImpactKeys bounds the (subject, channel, role) a plan counts per
	// list, so that a change turning millions of callers around costs a
	// bounded memory (about 200 B a key); the decisions beyond are still
	// counted in the totals.
	maxImpactKeys = 100_000
)

// impactEntry is one (subject, channel, role) whose recorded decisions a
// proposed policy turns around.
type impactEntry struct {
	Subject   string `json:"subject"`
	Channel   string `json:"channel"`
	Role      string `json:"role"`
	Decisions int64  `json:"decisions"`
}

// planImpact is who loses and who gains access, from the recorded decisions.
type planImpact struct {
	Lose      []impactEntry `json:"lose"`
	Gain      []impactEntry `json:"gain"`
	Decisions int64         `json:"decisions"` // replayed
	Skipped   int64         `json:"skipped"`   // of an issuer no longer configured, or not decidable
	// LoseDecisions and GainDecisions count every decision turned around,
	// listed or not.
	LoseDecisions int64 `json:"loseDecisions"`
	GainDecisions int64 `json:"gainDecisions"`
	// Truncated: a list holds only the maxImpactListed with the most
	// decisions, or only those among the first maxImpactKeys callers met.
	Truncated bool `json:"truncated"`
}

// planPolicy serves POST /v1/policies/plan?project=P&since=168h: the body a
// whole policy document for project P (its rules and those of "*",
// application/yaml); the answer the policy version planned against, the
// difference with the rules in force, and the impact: every granted and
// denied channel decision of the issuance log of the last since, grouped by
// (subject, channel, role), decided again on the proposed rules, listing who
// would lose access and who would gain it. It takes write on api:policies
// (a plan prepares a change) and read on api:audit (the impact shows the
// log's callers) in P. qualifier names a record's issuer as the policy does.
//
// A plan changes nothing, so it is no entry of the policy history (whose
// entries are its versions: a plan there would move the version every apply
// is checked against); each one is logged, with its admin, project, version
// and how many lose and gain access.
func planPolicy(p *policy.Engine, l audit.Log, qualifier func(string) (string, bool), logger *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		project := cmp.Or(q.Get("project"), policy.DefaultProject)
		if _, err := scope(p, r, policy.ObjectPolicies, policy.Write, project); err != nil {
			problem.Write(w, r, err)
			return
		}
		if _, err := scope(p, r, policy.ObjectAudit, policy.Read, project); err != nil {
			problem.Write(w, r, apperr.New(apperr.Forbidden, "a plan's impact shows the issuance log's callers: you need the %s right on %s in project %q too", policy.Read, policy.ObjectAudit, project))
			return
		}
		window := defaultPlanWindow
		if v := q.Get("since"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Minute || d > maxPlanWindow {
				problem.Write(w, r, apperr.Field("since", "must be a duration from 1m to %s, e.g. 168h", maxPlanWindow))
				return
			}
			window = d
		}
		proposed, err := documentFor(r, project)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		version := p.Version() // before the rules: an apply against it cannot miss a change
		current, err := p.List(r.Context(), policy.Filter{Projects: []string{project, policy.AllProjects}})
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		plan := func(progress *planProgress) (any, error) {
			impact, err := replayImpact(r, l, proposed, project, window, qualifier, progress)
			if err != nil {
				return nil, err
			}
			logger.LogAttrs(r.Context(), slog.LevelInfo, "policy plan", slog.String("actor", actor(r).Subject),
				slog.String("request_id", middleware.GetReqID(r.Context())), slog.String("project", project),
				slog.Int64("version", version), slog.Int64("decisions", impact.Decisions),
				slog.Int("lose", len(impact.Lose)), slog.Int("gain", len(impact.Gain)))
			return map[string]any{"project": project, "expectedVersion": version,
				"since": time.Now().Add(-window).UTC(), "diff": policy.DiffRules(current, proposed), "impact": impact}, nil
		}
		if !acceptsStream(r) {
			res, err := plan(&planProgress{})
			if err != nil {
				problem.Write(w, r, err)
				return
			}
			// The plan may have taken longer than the server's write timeout.
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(WriteTimeout))
			writeJSON(w, http.StatusOK, res)
			return
		}
		streamPlan(w, r, plan)
	}
}

// ndjson is the media type of a streamed plan: one JSON object per line.
const ndjson = "application/x-ndjson"

// progressEvery is how often a streamed plan reports its progress.
const progressEvery = 2 * time.Second

// planProgress counts a plan's work as it goes, for its progress lines.
type planProgress struct {
	start     time.Time
	groups    atomic.Int64 // (subject, groups, channel, role, decision) groups read from the log
	decisions atomic.Int64 // decisions they count
}

// acceptsStream reports whether the client asked for a streamed plan.
func acceptsStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == ndjson {
				return true
			}
		}
	}
	return false
}

// streamPlan answers application/x-ndjson: a {"progress": …} line every
// progressEvery while plan runs, then {"plan": …}, or {"problem": …} when it
// fails (the status is already 200 then). Each line moves the connection's
// write deadline on, so a long plan is not cut by the server's write
// timeout while it progresses.
func streamPlan(w http.ResponseWriter, r *http.Request, plan func(*planProgress) (any, error)) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", ndjson)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	var mu sync.Mutex
	line := func(v any) {
		mu.Lock()
		defer mu.Unlock()
		_ = rc.SetWriteDeadline(time.Now().Add(WriteTimeout))
		_ = json.NewEncoder(w).Encode(v)
		_ = rc.Flush()
	}
	progress := &planProgress{start: time.Now()}
	report := func() {
		stage := "reading the issuance log"
		if progress.groups.Load() > 0 {
			stage = "replaying"
		}
		line(map[string]any{"progress": map[string]any{"stage": stage, "decisions": progress.decisions.Load(),
			"elapsedMillis": time.Since(progress.start).Milliseconds()}})
	}
	report()
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				report()
			}
		}
	}()
	res, err := plan(progress)
	close(done)
	<-stopped
	if err != nil {
		problem.LogCause(r, err)
		line(map[string]any{"problem": problem.From(r, err)})
		return
	}
	line(map[string]any{"plan": res})
}

// replayImpact decides the recorded decisions of project since window ago
// again on proposed.
func replayImpact(r *http.Request, l audit.Log, proposed []policy.Rule, project string, window time.Duration,
	qualifier func(string) (string, bool), progress *planProgress) (planImpact, error) {
	replay, err := policy.NewReplayer(r.Context(), proposed)
	if err != nil {
		return planImpact{}, err
	}
	defer replay.Close()
	type key struct{ subject, channel, role string }
	lose, gain := map[key]int64{}, map[key]int64{}
	var im planImpact
	err = l.Decisions(r.Context(), time.Now().Add(-window), func(d audit.DecisionCount) error {
		progress.groups.Add(1)
		progress.decisions.Add(d.Count)
		if p := cmp.Or(d.Project, policy.DefaultProject); p != project { // "": recorded before projects
			return nil
		}
		subject := d.Subject
		if qualifier != nil {
			name, ok := qualifier(d.Issuer)
			if !ok {
				im.Skipped += d.Count
				return nil
			}
			if name != "" {
				subject = name + "/" + subject
			}
		}
		got, err := replay.Decide(policy.Caller{Subject: subject, Groups: d.Groups}, project, d.Channel, policy.Role(d.Role))
		if err != nil {
			im.Skipped += d.Count
			return nil
		}
		im.Decisions += d.Count
		k := key{"user:" + subject, d.Channel, d.Role}
		count := func(m map[key]int64) {
			if _, ok := m[k]; ok || len(m) < maxImpactKeys {
				m[k] += d.Count
			} else {
				im.Truncated = true
			}
		}
		switch {
		case d.Decision == audit.DecisionGranted && !got.Allowed:
			im.LoseDecisions += d.Count
			count(lose)
		case d.Decision == audit.DecisionDenied && got.Allowed:
			im.GainDecisions += d.Count
			count(gain)
		}
		return r.Context().Err()
	})
	if err != nil {
		return planImpact{}, err
	}
	list := func(m map[key]int64) []impactEntry {
		out := make([]impactEntry, 0, len(m))
		for k, n := range m {
			out = append(out, impactEntry{Subject: k.subject, Channel: k.channel, Role: k.role, Decisions: n})
		}
		slices.SortFunc(out, func(a, b impactEntry) int {
			return cmp.Or(cmp.Compare(b.Decisions, a.Decisions), cmp.Compare(a.Subject, b.Subject), cmp.Compare(a.Channel, b.Channel), cmp.Compare(a.Role, b.Role))
		})
		if len(out) > maxImpactListed {
			out, im.Truncated = out[:maxImpactListed], true
		}
		return out
	}
	im.Lose, im.Gain = list(lose), list(gain)
	return im, nil
}

// applyPolicy serves POST /v1/policies/apply?project=P&expectedVersion=N:
// the body a policy document for P (as for plan); its rules replace those
// of P and "*" in one change, only if the policy is still at version N (the
// plan's expectedVersion): 409 otherwise. The caller's rights are checked on
// every rule removed and added.
func applyPolicy(p *policy.Engine) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		project := cmp.Or(q.Get("project"), policy.DefaultProject)
		expected, err := strconv.ParseInt(q.Get("expectedVersion"), 10, 64)
		if err != nil || expected < 0 {
			problem.Write(w, r, apperr.Field("expectedVersion", "is required: the expectedVersion of the plan this applies"))
			return
		}
		proposed, err := documentFor(r, project)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		res, err := p.Replace(r.Context(), actor(r), project, proposed, expected)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"project": project, "version": res.Version,
			"added": len(res.Added), "removed": len(res.Removed)})
	}
}

// documentFor reads the request's policy document, whose rules must all be
// project's or "*" rules.
func documentFor(r *http.Request, project string) ([]policy.Rule, error) {
	lines, err := policy.ReadDocument(r.Body)
	if err != nil {
		return nil, err
	}
	rules := make([]policy.Rule, len(lines))
	for i, lr := range lines {
		if p := lr.Rule.Project; p != project && p != policy.AllProjects {
			return nil, apperr.Field("project", "line %d: the document is for project %q and its \"*\" rules, not %q", lr.Line, project, p)
		}
		rules[i] = lr.Rule
	}
	return rules, nil
}
