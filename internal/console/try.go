package console

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/policy"
)

// tryPage is the data of "try it": the question as typed and the engine's
// answer, its rules a page at a time (the deciding rule first).
type tryPage struct {
	Subject, Groups, Channel, Role string
	Errors                         map[string]string
	Error                          string
	Result                         *policy.Explanation
	Applicable                     int    // rules that apply, on every page
	From                           int    // the first shown, 0-based
	Next                           string // the next page's URL, "" on the last
}

// rulesPerTry is how many applicable rules "try it" shows at once.
const rulesPerTry = 20

// try serves GET /try?subject=&groups=&channel=&role=: may this user (subject
// and groups) hold this role on this channel? It shows the decision, the
// deciding rule and every rule that applies to the user (the engine's Explain).
// Asking changes nothing, so the form is a plain GET.
func (c *Console) try(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := tryPage{
		Subject: strings.TrimSpace(q.Get("subject")),
		Groups:  strings.TrimSpace(q.Get("groups")),
		Channel: strings.TrimSpace(q.Get("channel")),
		Role:    q.Get("role"),
	}
	if p.Role == "" {
		p.Role = string(policy.Publisher)
	}
	status := http.StatusOK
	if q.Has("channel") {
		groups, bad := auth.CheckGroups(splitGroups(p.Groups))
		caller := policy.Caller{Subject: strings.TrimPrefix(p.Subject, "user:"), Groups: groups}
		var x policy.Explanation
		var err error
		if bad != "" {
			err = apperr.Field("groups", "%s", bad)
		} else {
			x, err = c.policies.Explain(caller, visitFrom(r.Context()).project, p.Channel, policy.Role(p.Role))
		}
		if err != nil {
			if apperr.KindOf(err) != apperr.Invalid {
				c.fail(w, r, err)
				return
			}
			p.Errors, p.Error = fieldErrors(err, "subject", "groups", "channel", "role")
			status = http.StatusBadRequest
		} else {
			p.Applicable = len(x.Rules)
			p.From = min(max(0, atoi(q.Get("from"))), len(x.Rules))
			x.Rules = x.Rules[p.From:]
			if len(x.Rules) > rulesPerTry {
				x.Rules = x.Rules[:rulesPerTry]
				next := url.Values{"subject": {p.Subject}, "groups": {p.Groups}, "channel": {p.Channel}, "role": {p.Role},
					"from": {strconv.Itoa(p.From + rulesPerTry)}}
				p.Next = c.base + "/try?" + next.Encode()
			}
			p.Result = &x
		}
	}
	c.render(w, r, status, "try", c.view(r, "Try it", "try", p))
}

// atoi is a whole number, 0 when s is not one.
func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// splitGroups reads a list of groups separated by commas or white space; a
// "group:" prefix is accepted and dropped.
func splitGroups(s string) []string {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	for i, f := range fields {
		fields[i] = strings.TrimPrefix(f, "group:")
	}
	return fields
}
