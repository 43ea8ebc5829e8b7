package httpapi

import (
	"cmp"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/problem"
	"github.com/broker-dev/broker/internal/revoke"
)

// revocationRequest is the body of POST /v1/revocations.
type revocationRequest struct {
	Subject     string `json:"subject"`
	UID         uint32 `json:"uid"`
	Channel     string `json:"channel"`
	PublishOnly bool   `json:"publishOnly"`
	Reason      string `json:"reason"`
	Project     string `json:"project"`
}

// createRevocation serves POST /v1/revocations: the user's live tokens are
// banned in Agora until they would have expired and new tokens blocked for
// the scope (revoke.Service.Revoke). It takes write on api:revocations in
// the project.
func createRevocation(p *policy.Engine, s *revoke.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body revocationRequest
		if err := decodeJSON(r, &body); err != nil {
			problem.Write(w, r, err)
			return
		}
		project := cmp.Or(body.Project, policy.DefaultProject)
		if _, err := scope(p, r, policy.ObjectRevocations, policy.Write, project); err != nil {
			problem.Write(w, r, err)
			return
		}
		// The right checked is write on api:revocations, not on the policy:
		// the deny rule is the revocation's own, recorded under the admin.
		a := actor(r)
		a.Operator = true
		rev, err := s.Revoke(r.Context(), a, revoke.Request{Project: project, Subject: body.Subject, UID: body.UID,
			Channel: body.Channel, PublishOnly: body.PublishOnly, Reason: body.Reason})
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		w.Header().Set("Location", "/v1/revocations/"+strconv.FormatInt(rev.ID, 10))
		writeJSON(w, http.StatusCreated, rev)
	}
}

// listRevocations serves GET /v1/revocations?project=&active=true: the
// project's revocations, newest first. It takes read on api:revocations.
func listRevocations(p *policy.Engine, s *revoke.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := knownParams(q, "project", "active", "limit"); err != nil {
			problem.Write(w, r, err)
			return
		}
		project := cmp.Or(q.Get("project"), policy.DefaultProject)
		if _, err := scope(p, r, policy.ObjectRevocations, policy.Read, project); err != nil {
			problem.Write(w, r, err)
			return
		}
		limit, err := limitParam(q, 100, 1000)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		revs, err := s.Store.List(r.Context(), project, q.Get("active") == "true", limit)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		if revs == nil {
			revs = []revoke.Revocation{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"revocations": revs})
	}
}

// liftRevocation serves DELETE /v1/revocations/{id}: the revocation ends
// now, its deny rule removed and its Agora bans deleted. It takes write on
// api:revocations in the revocation's project.
func liftRevocation(p *policy.Engine, s *revoke.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
		if err != nil || id <= 0 {
			problem.Write(w, r, apperr.Field("id", "must be a revocation id"))
			return
		}
		rev, err := s.Store.Get(r.Context(), id)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		if _, err := scope(p, r, policy.ObjectRevocations, policy.Write, rev.Project); err != nil {
			problem.Write(w, r, err)
			return
		}
		a := actor(r)
		a.Operator = true
		if rev, err = s.Lift(r.Context(), a, id); err != nil {
			problem.Write(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, rev)
	}
}

// listOrphans serves GET /v1/revocations/orphans?project=: the live tokens
// whose access a policy change took away (revoke.Service.Orphans), each to
// revoke with POST /v1/revocations (its subject, channel and publishOnly);
// in auto mode the broker revokes them itself, and the list shows what it
// has not yet. It takes read on api:revocations.
func listOrphans(p *policy.Engine, s *revoke.Service, mode revoke.Mode) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := knownParams(q, "project"); err != nil {
			problem.Write(w, r, err)
			return
		}
		project := cmp.Or(q.Get("project"), policy.DefaultProject)
		if _, err := scope(p, r, policy.ObjectRevocations, policy.Read, project); err != nil {
			problem.Write(w, r, err)
			return
		}
		orphans, truncated, err := s.Orphans(r.Context(), project)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		if orphans == nil {
			orphans = []revoke.Orphan{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"project": project, "mode": cmp.Or(mode, revoke.ModeSuggest),
			"policyVersion": p.Version(), "orphans": orphans, "truncated": truncated})
	}
}
