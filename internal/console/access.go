package console

import (
	"net/http"
	"strings"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/review"
)

// accessPage is the data of the access review: the question as typed, the
// answer, and the unexplained joins of the last day.
type accessPage struct {
	Channel, Subject, Role, From, To string
	Errors                           map[string]string
	Result                           *review.Access
	JoinsObserved                    bool
	Unexplained                      []review.Event // the project's joins of the last day no grant explains
}

// accessReview serves GET /audit/access?channel=&role=&from=&to= (or
// subject= for a user instead of a channel): who could hold the role on the
// channel by the policy as it stood, who got tokens, who joined; and,
// always, the unexplained joins of the last day.
func (c *Console) accessReview(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	get := func(k string) string { return strings.TrimSpace(q.Get(k)) }
	v := visitFrom(r.Context())
	p := accessPage{Channel: get("channel"), Subject: get("subject"), Role: get("role"), From: get("from"), To: get("to"), Errors: map[string]string{}, JoinsObserved: c.joins != nil}
	if p.Role == "" {
		p.Role = string(policy.Publisher)
	}
	if c.joins != nil {
		now := c.now()
		joins, err := c.joins.Unexplained(r.Context(), v.project, now.Add(-24*time.Hour), now, 50)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		p.Unexplained = joins
	}
	status := http.StatusOK
	if q.Has("channel") || q.Has("subject") {
		aq := review.AccessQuery{Project: v.project, Channel: p.Channel, Subject: p.Subject, Role: policy.Role(p.Role)}
		for _, t := range []struct {
			name, value string
			dst         *time.Time
		}{{"from", p.From, &aq.From}, {"to", p.To, &aq.To}} {
			var err error
			if *t.dst, err = time.Parse(time.RFC3339, t.value); err != nil {
				p.Errors[t.name] = "a time such as 2026-11-01T00:00:00Z (ISO 8601, UTC)"
			}
		}
		if len(p.Errors) == 0 {
			a, err := review.Review(r.Context(), review.AccessDeps{Policies: c.policies, Log: c.audit, Events: c.joins, Qualify: c.qualify}, aq)
			if err != nil {
				if apperr.KindOf(err) != apperr.Invalid {
					c.fail(w, r, err)
					return
				}
				p.Errors, _ = fieldErrors(err, "channel", "issuer", "from", "to", "role")
				if len(p.Errors) == 0 {
					p.Errors = map[string]string{"channel": err.Error()}
				}
			} else {
				p.Result = &a
			}
		}
		if len(p.Errors) > 0 {
			status = http.StatusBadRequest
		}
	}
	c.render(w, r, status, "access", c.view(r, "Access review", "audit", p))
}
