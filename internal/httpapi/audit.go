package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/problem"
)

// auditFilter reads the auditor's query parameters (issuer, subject, account, uid,
// channel, project, decision, from, to, requestId, limit, cursor, and the route's own
// extra ones) through audit.ParseQuery, limited to the projects whose
// records the caller may read. Any other parameter is a 400 naming it: a
// misspelt filter must not answer with unrelated records.
func auditFilter(p *policy.Engine, r *http.Request, extra ...string) (audit.Filter, error) {
	q := r.URL.Query()
	if err := knownParams(q, append([]string{"issuer", "subject", "account", "uid", "channel", "project", "decision",
		"from", "to", "requestId", "limit", "cursor"}, extra...)...); err != nil {
		return audit.Filter{}, err
	}
	projects, err := scope(p, r, policy.ObjectAudit, policy.Read, q.Get("project"))
	if err != nil {
		return audit.Filter{}, err
	}
	f, err := audit.ParseQuery(audit.Query{Issuer: q.Get("issuer"), Subject: q.Get("subject"), Account: q.Get("account"), UID: q.Get("uid"),
		Channel: q.Get("channel"), Project: q.Get("project"), Decision: q.Get("decision"), From: q.Get("from"), To: q.Get("to"),
		RequestID: q.Get("requestId"), Limit: q.Get("limit"), Cursor: q.Get("cursor")})
	f.Projects = projects
	return f, err
}

func searchAudit(p *policy.Engine, l audit.Log) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f, err := auditFilter(p, r)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		page, err := l.Search(r.Context(), f)
		if err != nil {
			problem.Write(w, r, err)
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

func exportAudit(p *policy.Engine, l audit.Log) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f, err := auditFilter(p, r, "format")
		if err != nil {
			problem.Write(w, r, err)
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
			problem.Write(w, r, apperr.Field("format", "must be csv or jsonl"))
			return
		}
		// Stream straight to the client; once the first byte is out, an error
		// can only cut the stream, which the client sees as a short body.
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="issuance-log.%s"`, format))
		sw := &problem.StartedWriter{W: newDeadlineWriter(w)}
		if err := l.Export(r.Context(), f, format, sw); err != nil {
			if sw.Started {
				problem.LogCause(r, err)
				return
			}
			w.Header().Del("Content-Disposition")
			problem.Write(w, r, err)
		}
	}
}

// lookupAudit serves POST /v1/audit/lookup: the records of a token, of the
// projects whose records the caller may read.
func lookupAudit(p *policy.Engine, l audit.Log) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Token string `json:"token"`
		}
		if err := decodeJSON(r, &body); err != nil {
			problem.Write(w, r, err)
			return
		}
		projects, err := scope(p, r, policy.ObjectAudit, policy.Read, "")
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		recs, err := l.Lookup(r.Context(), body.Token)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		// Each record comes with its proof (a c2sp.org/tlog-proof against the
		// latest checkpoint), or null when no checkpoint covers it yet.
		shown := []map[string]any{}
		for _, rec := range recs {
			if projects != nil && !slices.Contains(projects, rec.Project) {
				continue
			}
			var m map[string]any
			raw, err := json.Marshal(rec)
			if err == nil {
				err = json.Unmarshal(raw, &m)
			}
			if err != nil {
				problem.Write(w, r, apperr.Wrap(apperr.Internal, err, "the record could not be encoded"))
				return
			}
			m["proof"] = nil
			switch proof, err := audit.Prove(r.Context(), l, rec.Seq); {
			case err == nil:
				m["proof"] = string(proof.Marshal())
			case apperr.KindOf(err) != apperr.NotFound:
				problem.Write(w, r, err)
				return
			}
			shown = append(shown, m)
		}
		writeJSON(w, http.StatusOK, map[string]any{"records": shown})
	}
}

// verifyAudit serves GET /v1/audit/verify: with the log's verifier key,
// incrementally from the last verified checkpoint (?full=true reads every
// record), else in full. The chain runs through every project's records,
// so verifying it takes the global read right.
func verifyAudit(p *policy.Engine, l audit.Log, t Transparency) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if c, _, _ := caller(r); !p.Can(c, policy.AllProjects, policy.ObjectAudit, policy.Read) {
			problem.Write(w, r, apperr.New(apperr.Forbidden, "verifying the issuance log reads every project's records: it needs the %s right on %s in every project (\"*\")", policy.Read, policy.ObjectAudit))
			return
		}
		if err := knownParams(r.URL.Query(), "full"); err != nil {
			problem.Write(w, r, err)
			return
		}
		full := r.URL.Query().Get("full")
		if full != "" && full != "true" && full != "false" {
			problem.Write(w, r, apperr.Field("full", "must be true or false"))
			return
		}
		rep, err := audit.VerifyConfigured(r.Context(), l, t.VerifierKey, full == "true")
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		if rep.Problems == nil {
			rep.Problems = []audit.Problem{}
		}
		writeJSON(w, http.StatusOK, rep)
	}
}
