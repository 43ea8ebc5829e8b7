package httpapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/problem"
)

// Policies is the policy engine as the admin API uses it (*policy.Engine).
type Policies interface {
	Can(c policy.Caller, object string, action policy.Role) bool
	List(ctx context.Context, f policy.Filter) ([]policy.Rule, error)
	Add(ctx context.Context, a policy.Actor, r policy.Rule) (policy.Rule, error)
	Remove(ctx context.Context, a policy.Actor, id int64) error
	Explain(c policy.Caller, channel string, role policy.Role) (policy.Explanation, error)
	Import(ctx context.Context, a policy.Actor, r io.Reader) (int, error)
	Export(ctx context.Context, w io.Writer) error
	History(ctx context.Context, f policy.HistoryFilter) ([]policy.Change, error)
}

// AuditLog is the issuance log as the auditor API uses it.
type AuditLog interface {
	Search(ctx context.Context, f audit.Filter) (audit.Page, error)
	Export(ctx context.Context, f audit.Filter, format string, w io.Writer) error
	Lookup(ctx context.Context, token string) ([]audit.Record, error)
	Verify(ctx context.Context) (audit.Report, error)
}

// caller returns the policy caller for the authenticated identity.
func caller(r *http.Request) (policy.Caller, auth.Identity, bool) {
	id, ok := auth.FromContext(r.Context())
	return policy.Caller{Subject: id.Subject, Groups: id.Groups}, id, ok
}

// actor is the signed-in caller making a change: named in the policy
// history, and the one whose rights the engine checks against the change.
func actor(r *http.Request) policy.Actor {
	c, id, _ := caller(r)
	return policy.Actor{Subject: "user:" + id.Subject, RequestID: middleware.GetReqID(r.Context()), Caller: c}
}

// require lets a request through only if the caller holds action on object
// or on one of the other objects.
func require(p Policies, object string, action policy.Role, or ...string) func(http.Handler) http.Handler {
	objects := append([]string{object}, or...)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, _, ok := caller(r)
			for _, o := range objects {
				if ok && p.Can(c, o, action) {
					next.ServeHTTP(w, r)
					return
				}
			}
			problem.Write(w, r, apperr.New(apperr.Forbidden, "you need the %s right on %s", action, strings.Join(objects, " or ")))
		})
	}
}

// policyRoutes mounts /v1/policies. Changing rules takes write on
// api:policies (channel rules) or api:rights (admin rights); the engine
// checks each change against the rule it touches.
func policyRoutes(r chi.Router, p Policies) {
	read, write := require(p, policy.ObjectPolicies, policy.Read), require(p, policy.ObjectPolicies, policy.Write, policy.ObjectRights)
	r.With(read).Get("/v1/policies", listPolicies(p))
	r.With(write).Post("/v1/policies", addPolicy(p))
	r.With(write).Delete("/v1/policies/{id}", removePolicy(p))
	r.With(read).Post("/v1/policies/explain", explainPolicy(p))
	r.With(read).Get("/v1/policies/export", exportPolicies(p))
	r.With(write).Post("/v1/policies/import", importPolicies(p))
	r.With(read).Get("/v1/policies/history", policyHistory(p))
}

func listPolicies(p Policies) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		rules, err := p.List(r.Context(), policy.Filter{Subject: q.Get("subject"), Channel: q.Get("channel")})
		if err != nil {
			writeError(w, r, err)
			return
		}
		if rules == nil {
			rules = []policy.Rule{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"rules": rules})
	}
}

// ruleRequest is the body of POST /v1/policies.
type ruleRequest struct {
	Subject       string `json:"subject"`
	Channel       string `json:"channel"`
	Role          string `json:"role"`
	Effect        string `json:"effect"`
	MaxTTLSeconds int    `json:"maxTtlSeconds"`
}

func addPolicy(p Policies) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body ruleRequest
		if err := decodeJSON(r, &body); err != nil {
			writeError(w, r, err)
			return
		}
		rule, err := p.Add(r.Context(), actor(r), policy.Rule{Subject: body.Subject, Channel: body.Channel,
			Role: policy.Role(body.Role), Effect: policy.Effect(body.Effect), MaxTTLSeconds: body.MaxTTLSeconds})
		if err != nil {
			writeError(w, r, err)
			return
		}
		w.Header().Set("Location", "/v1/policies/"+strconv.FormatInt(rule.ID, 10))
		writeJSON(w, http.StatusCreated, rule)
	}
}

func removePolicy(p Policies) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
		if err != nil || id <= 0 {
			writeError(w, r, apperr.Field("id", "must be a positive whole number"))
			return
		}
		if err := p.Remove(r.Context(), actor(r), id); err != nil {
			writeError(w, r, err)
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
}

// explainResponse answers an explain request.
type explainResponse struct {
	Allowed       bool               `json:"allowed"`
	Rule          *policy.Rule       `json:"rule"`
	MaxTTLSeconds int64              `json:"maxTtlSeconds"`
	Reason        string             `json:"reason"`
	Matches       []policy.RuleCheck `json:"matches"`
}

func explainPolicy(p Policies) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body explainRequest
		if err := decodeJSON(r, &body); err != nil {
			writeError(w, r, err)
			return
		}
		sub := strings.TrimPrefix(body.Subject, "user:")
		x, err := p.Explain(policy.Caller{Subject: sub, Groups: body.Groups}, body.Channel, policy.Role(body.Role))
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, explainResponse{Allowed: x.Decision.Allowed, Rule: x.Decision.Rule,
			MaxTTLSeconds: int64(x.Decision.MaxTTL / time.Second), Reason: x.Decision.Reason, Matches: x.Rules})
	}
}

func exportPolicies(p Policies) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		if err := p.Export(r.Context(), &b); err != nil {
			writeError(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="policies.csv"`)
		io.WriteString(w, b.String())
	}
}

func importPolicies(p Policies) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		n, err := p.Import(r.Context(), actor(r), r.Body)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"imported": n})
	}
}

func policyHistory(p Policies) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var f policy.HistoryFilter
		var err error
		if f.Limit, err = intParam(q.Get("limit"), "limit"); err != nil {
			writeError(w, r, err)
			return
		}
		if v := q.Get("before"); v != "" {
			if f.Before, err = strconv.ParseInt(v, 10, 64); err != nil || f.Before <= 0 {
				writeError(w, r, apperr.Field("before", "must be a change id"))
				return
			}
		}
		changes, err := p.History(r.Context(), f)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if changes == nil {
			changes = []policy.Change{}
		}
		resp := map[string]any{"changes": changes}
		if n := len(changes); n > 0 && (f.Limit == 0 || n == f.Limit) {
			resp["nextCursor"] = strconv.FormatInt(changes[n-1].ID, 10)
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

// auditRoutes mounts /v1/audit; every route needs the read right on api:audit.
func auditRoutes(r chi.Router, p Policies, l AuditLog) {
	r.Group(func(r chi.Router) {
		r.Use(require(p, policy.ObjectAudit, policy.Read))
		r.Get("/v1/audit", searchAudit(l))
		r.Get("/v1/audit/export", exportAudit(l))
		r.Post("/v1/audit/lookup", lookupAudit(l))
		r.Get("/v1/audit/verify", verifyAudit(l))
	})
}

// AuditFilter reads the auditor's query parameters: subject, account, uid,
// channel (exact or pattern), decision, from and to (RFC 3339), limit, cursor.
func AuditFilter(q map[string][]string) (audit.Filter, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	f := audit.Filter{Subject: get("subject"), Account: get("account"), Channel: get("channel"), Cursor: get("cursor")}
	if v := get("uid"); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return f, apperr.Field("uid", "must be a whole number from 0 to 4294967295")
		}
		u := uint32(n)
		f.UID = &u
	}
	switch d := audit.Decision(get("decision")); d {
	case "", audit.DecisionGranted, audit.DecisionDenied, audit.DecisionInvalid:
		f.Decision = d
	default:
		return f, apperr.Field("decision", "must be granted, denied or invalid")
	}
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		if v := get(t.name); v != "" {
			ts, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return f, apperr.Field(t.name, "must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
			}
			*t.dst = ts
		}
	}
	var err error
	f.Limit, err = intParam(get("limit"), "limit")
	return f, err
}

func searchAudit(l AuditLog) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f, err := AuditFilter(r.URL.Query())
		if err != nil {
			writeError(w, r, err)
			return
		}
		page, err := l.Search(r.Context(), f)
		if err != nil {
			writeError(w, r, err)
			return
		}
		recs := page.Records
		if recs == nil {
			recs = []audit.Record{}
		}
		resp := map[string]any{"records": recs, "nextCursor": nil}
		if page.NextCursor != "" {
			resp["nextCursor"] = page.NextCursor
		}
		writeJSON(w, http.StatusOK, resp)
	}
}

func exportAudit(l AuditLog) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f, err := AuditFilter(r.URL.Query())
		if err != nil {
			writeError(w, r, err)
			return
		}
		f.Cursor = ""
		format := r.URL.Query().Get("format")
		if format == "" {
			format = "csv"
		}
		var ctype string
		switch format {
		case "csv":
			ctype = "text/csv; charset=utf-8"
		case "jsonl":
			ctype = "application/jsonl"
		default:
			writeError(w, r, apperr.Field("format", "must be csv or jsonl"))
			return
		}
		// Stream straight to the client; once the first byte is out, an error
		// can only cut the stream, which the client sees as a short body.
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="issuance-log.%s"`, format))
		sw := &startedWriter{w: w}
		if err := l.Export(r.Context(), f, format, sw); err != nil && !sw.started {
			w.Header().Del("Content-Disposition")
			writeError(w, r, err)
		}
	}
}

// startedWriter remembers whether anything was written.
type startedWriter struct {
	w       io.Writer
	started bool
}

func (s *startedWriter) Write(p []byte) (int, error) {
	s.started = true
	return s.w.Write(p)
}

func lookupAudit(l AuditLog) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Token string `json:"token"`
		}
		if err := decodeJSON(r, &body); err != nil {
			writeError(w, r, err)
			return
		}
		recs, err := l.Lookup(r.Context(), body.Token)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if recs == nil {
			recs = []audit.Record{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"records": recs})
	}
}

func verifyAudit(l AuditLog) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rep, err := l.Verify(r.Context())
		if err != nil {
			writeError(w, r, err)
			return
		}
		if rep.Problems == nil {
			rep.Problems = []audit.Problem{}
		}
		writeJSON(w, http.StatusOK, rep)
	}
}
