package httpapi

import (
	"cmp"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/broker-dev/broker/internal/agora"
	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/problem"
	"github.com/broker-dev/broker/internal/review"
)

// AgoraEvents receives the projects' Agora NCS notifications (no Secrets:
// not mounted).
type AgoraEvents struct {
	// Secrets are the NCS secrets (the keys of Agora-Signature-V2) of the
	// projects whose events are received: POST /v1/agora/events/{project}
	// (and /v1/agora/events for the project named default).
	Secrets map[string][]byte
	Store   review.Store
	// Log is the issuance log that explains joins, MaxTTL the longest
	// token lifetime the broker grants.
	Log    review.Searcher
	MaxTTL time.Duration
}

// unexplainedJoins serves GET /v1/audit/unexplained?project=&from=&to=&limit=:
// the joins of the project (default the last day, newest first) that no
// token the broker granted covers. It needs read on api:audit in the project.
func unexplainedJoins(p *policy.Engine, a AgoraEvents) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := knownParams(q, "project", "from", "to", "limit"); err != nil {
			problem.Write(w, r, err)
			return
		}
		project := cmp.Or(q.Get("project"), policy.DefaultProject)
		if _, err := scope(p, r, policy.ObjectAudit, policy.Read, project); err != nil {
			problem.Write(w, r, err)
			return
		}
		to, from := time.Now(), time.Now().Add(-24*time.Hour)
		for _, t := range []struct {
			name string
			dst  *time.Time
		}{{"from", &from}, {"to", &to}} {
			if v := q.Get(t.name); v != "" {
				var err error
				if *t.dst, err = time.Parse(time.RFC3339, v); err != nil {
					problem.Write(w, r, apperr.Field(t.name, "must be a time such as 2026-11-01T00:00:00Z (RFC 3339)"))
					return
				}
			}
		}
		limit, err := limitParam(q, 100, 1000)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		events, err := a.Store.Unexplained(r.Context(), project, from, to, limit)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		if events == nil {
			events = []review.Event{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"project": project, "from": from.UTC(), "to": to.UTC(), "joins": events,
			"truncated": len(events) == limit})
	}
}

// agoraEvents serves POST /v1/agora/events/{project} (and /v1/agora/events
// for the project named default), Agora's notifications of what happened in
// the project's channels: an unknown project is 404; the body (at most 64 KiB) must carry
// a valid Agora-Signature-V2 (401 otherwise, counted); the RTC channel
// events are kept once per notice id (Agora resends what it thinks was not
// received), the others acknowledged and dropped. Agora wants a JSON answer
// within 10 s.
func agoraEvents(a AgoraEvents, reg prometheus.Registerer) http.HandlerFunc {
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "broker_agora_events_refused_total",
		Help: "Agora notifications refused: their signature did not verify (signature), their body was too large (too_large) or not Agora's JSON (invalid).",
	}, []string{"reason"})
	received := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "broker_agora_events_total",
		Help: "Agora notifications accepted, by what was done with them: kept, duplicate (a resend), ignored (not an RTC channel event).",
	}, []string{"result"})
	unexplained := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "broker_agora_unexplained_joins_total",
		Help: "Joins that no token the broker granted covers: a token signed elsewhere (a leaked App certificate, or another token server).",
	})
	if reg != nil {
		reg.MustRegister(refused, received, unexplained)
	}
	for _, r := range []string{"signature", "too_large", "invalid"} {
		refused.WithLabelValues(r)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		project := cmp.Or(chi.URLParam(r, "project"), policy.DefaultProject)
		secret, ok := a.Secrets[project]
		if !ok {
			problem.Write(w, r, apperr.New(apperr.NotFound, "no project %q receives Agora's notifications here", project))
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, agora.MaxEventBytes))
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			refused.WithLabelValues("too_large").Inc()
			problem.Write(w, r, apperr.New(apperr.TooLarge, "a notification is at most %d bytes", agora.MaxEventBytes))
			return
		}
		if err != nil {
			problem.Write(w, r, apperr.Wrap(apperr.Invalid, err, "the notification could not be read"))
			return
		}
		if !agora.VerifySignatureV2(secret, body, r.Header.Get(agora.SignatureV2Header)) {
			refused.WithLabelValues("signature").Inc()
			problem.Write(w, r, apperr.New(apperr.Unauthorized, "the notification's %s does not verify with the project's NCS secret", agora.SignatureV2Header))
			return
		}
		e, err := agora.ParseEvent(body)
		if err != nil {
			refused.WithLabelValues("invalid").Inc()
			problem.Write(w, r, err)
			return
		}
		result := "ignored"
		if review.Kept(e.Kind) {
			ev := review.FromAgora(project, e)
			if ev.Kind == agora.Joined {
				explained, err := review.Explain(r.Context(), a.Log, ev, a.MaxTTL)
				if err != nil {
					problem.Write(w, r, err) // Agora resends
					return
				}
				ev.Explained = &explained
			}
			isNew, err := a.Store.Record(r.Context(), ev)
			if isNew && ev.Explained != nil && !*ev.Explained {
				unexplained.Inc()
			}
			if err != nil {
				// Unavailable: Agora resends, and the resend is kept.
				problem.Write(w, r, err)
				return
			}
			result = "duplicate"
			if isNew {
				result = "kept"
			}
		}
		received.WithLabelValues(result).Inc()
		writeJSON(w, http.StatusOK, map[string]string{"result": result})
	}
}
