package httpapi

import (
	"cmp"
	"net/http"
	"strconv"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/problem"
	"github.com/broker-dev/broker/internal/review"
	"github.com/broker-dev/broker/internal/safecsv"
)

// accessReview serves GET /v1/audit/access?channel=C&from=T1&to=T2
// [&role=publisher][&project=P][&format=csv]: who could hold the role on
// the channel by the policy as it stood (version by version, from the
// policy history), who was granted tokens (the issuance log), who joined
// (Agora's events, when received) and where they part. It needs read on
// api:audit in the project.
func accessReview(p *policy.Engine, l audit.Log, events review.Store, qualify func(string) (string, bool)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := knownParams(q, "channel", "subject", "issuer", "from", "to", "role", "project", "format"); err != nil {
			problem.Write(w, r, err)
			return
		}
		project := cmp.Or(q.Get("project"), policy.DefaultProject)
		if _, err := scope(p, r, policy.ObjectAudit, policy.Read, project); err != nil {
			problem.Write(w, r, err)
			return
		}
		aq := review.AccessQuery{Project: project, Channel: q.Get("channel"), Subject: q.Get("subject"), Issuer: q.Get("issuer"), Role: policy.Role(q.Get("role"))}
		for _, t := range []struct {
			name string
			dst  *time.Time
		}{{"from", &aq.From}, {"to", &aq.To}} {
			v, err := time.Parse(time.RFC3339, q.Get(t.name))
			if err != nil {
				problem.Write(w, r, apperr.Field(t.name, "is required: a time such as 2026-11-01T00:00:00Z (RFC 3339)"))
				return
			}
			*t.dst = v
		}
		format := cmp.Or(q.Get("format"), "json")
		if format != "json" && format != "csv" {
			problem.Write(w, r, apperr.Field("format", "must be json or csv"))
			return
		}
		a, err := review.Review(r.Context(), review.AccessDeps{Policies: p, Log: l, Events: events, Qualify: qualify}, aq)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		if format == "json" {
			writeJSON(w, http.StatusOK, a)
			return
		}
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="access-review.csv"`)
		cw := safecsv.NewWriter(w)
		_ = cw.Write([]string{"column", "who", "from", "until", "count", "detail"})
		for i, c := range a.Could {
			until := a.To
			if i+1 < len(a.Could) {
				until = a.Could[i+1].From
			}
			for _, list := range []struct {
				name   string
				checks []policy.RuleCheck
			}{{"could", c.Allowed}, {"could not (denied)", c.Denied}} {
				for _, rc := range list.checks {
					_ = cw.Write([]string{list.name, rc.Rule.Subject, c.From.Format(time.RFC3339), until.Format(time.RFC3339), "",
						"policy version " + strconv.FormatInt(c.Version, 10) + ": " + rc.Rule.String()})
				}
			}
		}
		on := func(channel string) string {
			if channel == "" {
				return ""
			}
			return " on " + channel
		}
		for _, g := range a.Got {
			_ = cw.Write([]string{"got", "user:" + g.Subject, g.First.Format(time.RFC3339), g.Last.Format(time.RFC3339), strconv.Itoa(g.Grants),
				"issuer " + g.Issuer + ", uid " + strconv.FormatUint(uint64(g.UID), 10) + on(g.Channel)})
		}
		for _, d := range a.Did {
			_ = cw.Write([]string{"did", "uid " + strconv.FormatUint(uint64(d.UID), 10), d.First.Format(time.RFC3339), d.Last.Format(time.RFC3339),
				strconv.Itoa(d.Joins), strconv.Itoa(d.Unexplained) + " unexplained" + on(d.Channel)})
		}
		for _, l := range []struct {
			name     string
			channels []string
		}{{"granted, never joined", a.ChannelsGrantedNotJoined}, {"joined without a grant", a.ChannelsJoinedNotGranted}} {
			for _, c := range l.channels {
				_ = cw.Write([]string{l.name, "channel " + c, "", "", "", ""})
			}
		}
		for _, l := range []struct {
			name string
			uids []uint32
		}{{"granted, never joined", a.GrantedNotJoined}, {"joined without a grant", a.JoinedNotGranted}} {
			for _, uid := range l.uids {
				_ = cw.Write([]string{l.name, "uid " + strconv.FormatUint(uint64(uid), 10), "", "", "", ""})
			}
		}
		if err := cw.Flush(); err != nil {
			problem.LogCause(r, apperr.Wrap(apperr.Unavailable, err, "the access review could not be written"))
		}
	}
}
