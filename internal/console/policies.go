package console

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/policy"
)

// Page sizes of the rule list and the change history.
const (
	rulesPerPage   = 100
	changesPerPage = 50
)

// actor is the logged-in admin making a change: named in the policy history,
// and the one whose rights the engine checks against the change.
func actor(r *http.Request) policy.Actor {
	s := visitFrom(r.Context()).session
	return policy.Actor{Subject: "user:" + s.Subject, RequestID: middleware.GetReqID(r.Context()), Caller: s.caller()}
}

// visibleRules selects the rules the console shows in the current project:
// its own and those of every project ("*").
func visibleRules(r *http.Request) []string {
	return []string{visitFrom(r.Context()).project, policy.AllProjects}
}

// ruleForm is the "add a rule" form as typed, with its validation messages.
type ruleForm struct {
	// Project is the current project, or "*" for a rule of every project.
	Subject, Channel, Role, Effect, MaxTTL, Project string
	Errors                                          map[string]string // by field name
	Error                                           string            // about the form as a whole
}

// policiesPage is the data of the rule list.
type policiesPage struct {
	ruleFilters
	Rules          []policy.Rule // channel and login rules, a page
	AdminRights    []policy.Rule // admin rights matching the filters, in a section of their own
	MoreRights     int           // admin rights matching beyond those shown
	Matching       int           // rules the filters select, on all pages
	Sort           string        // the order (policy.SortKeys, "-" descending)
	RemoveMatching string        // the bulk removal of the rules the filters select; "" without filters
	SortLinks      map[string]string
	Pages          []pageLink // numbered pages, with gaps (N 0) where some are left out
	Prev, Next     string     // the neighbouring pages; empty when there is none
	Flash          string
	Form           ruleForm
}

// ruleFilters are the rule list's filters as typed (policy.Filter's search
// fields): the list, its links and a bulk removal read them the same way.
type ruleFilters struct {
	Subject, Channel, Role, Effect, AppliesTo, User, Groups string
}

// readRuleFilters reads the filters of a rule list from q.
func readRuleFilters(q url.Values) ruleFilters {
	get := func(k string) string { return strings.TrimSpace(q.Get(k)) }
	return ruleFilters{Subject: get("subject"), Channel: get("channel"), Role: get("role"), Effect: get("effect"),
		AppliesTo: get("appliesTo"), User: get("user"), Groups: get("groups")}
}

// FormValues are the filters that are set, by name, for hidden inputs.
func (f ruleFilters) FormValues() map[string]string {
	out := map[string]string{}
	for k, v := range f.values() {
		out[k] = v[0]
	}
	return out
}

// Any reports whether some filter is set.
func (f ruleFilters) Any() bool { return f != ruleFilters{} }

// values encodes the filters that are set.
func (f ruleFilters) values() url.Values {
	v := url.Values{}
	for k, val := range map[string]string{"subject": f.Subject, "channel": f.Channel, "role": f.Role, "effect": f.Effect,
		"appliesTo": f.AppliesTo, "user": f.User, "groups": f.Groups} {
		if val != "" {
			v.Set(k, val)
		}
	}
	return v
}

// filter is the policy.Filter of f for rules of kind in projects.
func (f ruleFilters) filter(kind string, projects []string) policy.Filter {
	pf := policy.Filter{SubjectLike: f.Subject, ChannelLike: f.Channel, Role: policy.Role(f.Role), Effect: policy.Effect(f.Effect),
		AppliesToChannel: f.AppliesTo, Projects: projects, Kind: kind}
	if f.User != "" || f.Groups != "" {
		pf.AppliesTo = &policy.Caller{Subject: strings.TrimPrefix(f.User, "user:"), Groups: splitGroups(f.Groups)}
	}
	return pf
}

// pageLink is one numbered page of a list; N 0 stands for pages left out.
type pageLink struct {
	N       int
	URL     string
	Current bool
}

// pageLinks numbers the pages of a list of total items, per to a page,
// around current (1-based): the first, the last and two on each side of
// current, the others left out.
func pageLinks(total, per, current int, url func(page int) string) []pageLink {
	last := max(1, (total+per-1)/per)
	var out []pageLink
	for n := 1; n <= last; n++ {
		if n == 1 || n == last || (n >= current-2 && n <= current+2) {
			out = append(out, pageLink{N: n, URL: url(n), Current: n == current})
		} else if len(out) > 0 && out[len(out)-1].N != 0 {
			out = append(out, pageLink{})
		}
	}
	return out
}

// listPolicies serves GET /policies: the filtered rule list and the add form.
func (c *Console) listPolicies(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var flash string
	if id, err := strconv.ParseInt(q.Get("added"), 10, 64); err == nil {
		flash = "Rule #" + strconv.FormatInt(id, 10) + " was added."
	} else if id, err := strconv.ParseInt(q.Get("removed"), 10, 64); err == nil {
		flash = "Rule #" + strconv.FormatInt(id, 10) + " was deleted."
	} else if n, err := strconv.Atoi(q.Get("deleted")); err == nil {
		flash = strconv.Itoa(n) + " rules were deleted."
	} else if n, err := strconv.Atoi(q.Get("imported")); err == nil {
		flash = strconv.Itoa(n) + " rules were imported."
		if removed, unchanged := atoi(q.Get("removed_n")), atoi(q.Get("unchanged")); removed+unchanged > 0 {
			flash = fmt.Sprintf("Import: %d rules added, %d removed, %d already in force.", n, removed, unchanged)
		}
	}
	c.showPolicies(w, r, http.StatusOK, flash, ruleForm{Role: string(policy.Publisher), Effect: string(policy.Allow)})
}

func (c *Console) showPolicies(w http.ResponseWriter, r *http.Request, status int, flash string, form ruleForm) {
	q := r.URL.Query()
	p := policiesPage{ruleFilters: readRuleFilters(q), Flash: flash, Form: form}
	p.Sort = q.Get("sort")
	if key := strings.TrimPrefix(p.Sort, "-"); !slices.Contains(policy.SortKeys, key) {
		p.Sort = ""
	}
	page := max(1, atoi(q.Get("page")))
	f := p.filter(policy.KindAccess, visibleRules(r))
	f.Sort, f.Offset, f.Limit = p.Sort, (page-1)*rulesPerPage, rulesPerPage
	rules, total, err := c.policies.Query(r.Context(), f)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	rf := p.filter(policy.KindRights, visibleRules(r))
	rf.Limit = rulesPerPage
	rights, totalRights, err := c.policies.Query(r.Context(), rf)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	p.AdminRights, p.MoreRights = rights, totalRights-len(rights)
	p.Matching, p.Rules = total, rules
	if p.Any() && total+totalRights > 0 {
		p.RemoveMatching = c.base + "/policies/delete-matching?" + p.values().Encode()
	}
	link := func(sort string, page int) string {
		v := p.values()
		if sort != "" {
			v.Set("sort", sort)
		}
		if page > 1 {
			v.Set("page", strconv.Itoa(page))
		}
		return c.base + "/policies?" + v.Encode()
	}
	// A column's link sorts by it, ascending, or descending when it is
	// already the ascending order; back to the first page either way.
	p.SortLinks = map[string]string{}
	for _, key := range policy.SortKeys {
		next := key
		if p.Sort == key || (key == "id" && p.Sort == "") {
			next = "-" + key
		}
		p.SortLinks[key] = link(next, 1)
	}
	if total > rulesPerPage {
		p.Pages = pageLinks(total, rulesPerPage, page, func(n int) string { return link(p.Sort, n) })
	}
	if page > 1 {
		p.Prev = link(p.Sort, page-1)
	}
	if page*rulesPerPage < total {
		p.Next = link(p.Sort, page+1)
	}
	c.render(w, r, status, "policies", c.view(r, "Policies", "policies", p))
}

// addPolicy serves POST /policies: it adds one rule, or shows the form again
// with the engine's message next to the field at fault.
func (c *Console) addPolicy(w http.ResponseWriter, r *http.Request) {
	f := ruleForm{
		Subject: strings.TrimSpace(r.PostFormValue("subject")),
		Channel: strings.TrimSpace(r.PostFormValue("channel")),
		Role:    r.PostFormValue("role"),
		Effect:  r.PostFormValue("effect"),
		MaxTTL:  strings.TrimSpace(r.PostFormValue("maxTtlSeconds")),
		Project: visitFrom(r.Context()).project,
	}
	if r.PostFormValue("project") == policy.AllProjects {
		f.Project = policy.AllProjects
	}
	rule := policy.Rule{Subject: f.Subject, Channel: f.Channel, Role: policy.Role(f.Role), Effect: policy.Effect(f.Effect), Project: f.Project}
	// Every mistake at once, each next to its field.
	problems := map[string]string{}
	ttl, ttlErr := ttlSeconds(f.MaxTTL)
	if ttlErr != "" {
		problems["maxTtlSeconds"] = ttlErr
	}
	rule.MaxTTLSeconds = ttl
	for _, err := range rule.Problems() {
		if e, ok := apperr.As(err); ok {
			if _, seen := problems[e.Field]; !seen {
				problems[e.Field] = e.Message
			}
		}
	}
	if s := f.Subject; s != "" && s != "*" && !strings.Contains(s, ":") {
		problems["subject"] = fmt.Sprintf("say whom %q names: group:%s for a group, user:%s for a user (or * for everyone)", s, s, s)
	}
	if len(problems) > 0 {
		f.Errors = problems
		c.showPolicies(w, r, http.StatusBadRequest, "", f)
		return
	}
	rule, err := c.policies.Add(r.Context(), actor(r), rule)
	if err != nil {
		kind := apperr.KindOf(err)
		if kind != apperr.Invalid && kind != apperr.Conflict && kind != apperr.Forbidden {
			c.fail(w, r, err)
			return
		}
		f.Errors, f.Error = fieldErrors(err, "subject", "channel", "role", "effect", "maxTtlSeconds", "project")
		c.showPolicies(w, r, statusOf(kind), "", f)
		return
	}
	http.Redirect(w, r, c.base+"/policies?added="+strconv.FormatInt(rule.ID, 10), http.StatusSeeOther)
}

// ttlSeconds reads a rule's token lifetime as typed: whole seconds ("3600"),
// or a duration such as "1h" or "30m"; empty or 0 is no limit. The second
// result says what is wrong, with the seconds a duration comes to.
func ttlSeconds(s string) (int, string) {
	if s == "" {
		return 0, ""
	}
	if n, err := strconv.Atoi(s); err == nil {
		return n, ""
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, "must be seconds (3600) or a duration such as 1h or 30m (empty: no limit)"
	case d%time.Second != 0:
		return 0, fmt.Sprintf("%s is not a whole number of seconds", s)
	case d > time.Duration(policy.MaxTTLSecondsLimit)*time.Second:
		return 0, fmt.Sprintf("%s is %d s, over the limit of %d s", s, int64(d/time.Second), policy.MaxTTLSecondsLimit)
	}
	return int(d / time.Second), ""
}

// statusOf is the HTTP status of a form shown again after an error.
func statusOf(k apperr.Kind) int {
	switch k {
	case apperr.Conflict:
		return http.StatusConflict
	case apperr.Forbidden:
		return http.StatusForbidden
	case apperr.NotFound:
		return http.StatusNotFound
	}
	return http.StatusBadRequest
}

// ruleByID finds the rule with the id in the URL, rendering a page and
// returning false when there is none.
func (c *Console) ruleByID(w http.ResponseWriter, r *http.Request) (policy.Rule, bool) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		c.renderMessage(w, r, http.StatusNotFound, message{Title: "No such rule", Text: "Rule ids are positive whole numbers.", Link: c.base + "/policies", LinkText: "Back to the policies"})
		return policy.Rule{}, false
	}
	rules, err := c.policies.List(r.Context(), policy.Filter{Projects: visibleRules(r)})
	if err != nil {
		c.fail(w, r, err)
		return policy.Rule{}, false
	}
	for _, rule := range rules {
		if rule.ID == id {
			return rule, true
		}
	}
	c.renderMessage(w, r, http.StatusNotFound, message{Title: "No such rule", Text: "Rule #" + strconv.FormatInt(id, 10) + " does not exist (any more).", Link: c.base + "/policies", LinkText: "Back to the policies"})
	return policy.Rule{}, false
}

// removeMatchingPage is the confirmation of a bulk removal.
type removeMatchingPage struct {
	ruleFilters
	Count  int           // the rules the filters select now
	Sample []policy.Rule // the first of them
	Back   string        // the filtered list
}

// confirmRemoveMatching serves GET /policies/delete-matching?<filters>: how
// many rules the filters select (channel rules and admin rights alike), the
// first of them, and a form that removes exactly that many.
func (c *Console) confirmRemoveMatching(w http.ResponseWriter, r *http.Request) {
	p := removeMatchingPage{ruleFilters: readRuleFilters(r.URL.Query())}
	if !p.Any() {
		c.fail(w, r, apperr.Field("filter", "name the rules to delete with a filter"))
		return
	}
	f := p.filter("", visibleRules(r))
	f.Limit = 20
	sample, total, err := c.policies.Query(r.Context(), f)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	p.Count, p.Sample, p.Back = total, sample, c.base+"/policies?"+p.values().Encode()
	c.render(w, r, http.StatusOK, "deletematching", c.view(r, "Delete matching rules", "policies", p))
}

// removeMatching serves POST /policies/delete-matching: the rules the
// filters select, removed only if they are still as many as confirmed.
func (c *Console) removeMatching(w http.ResponseWriter, r *http.Request) {
	filters := readRuleFilters(r.PostForm)
	count, err := strconv.Atoi(r.PostFormValue("count"))
	if err != nil || !filters.Any() {
		c.fail(w, r, apperr.Field("count", "the confirmation names no filter or count"))
		return
	}
	n, err := c.policies.RemoveWhere(r.Context(), actor(r), filters.filter("", visibleRules(r)), &count)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, c.base+"/policies?deleted="+strconv.Itoa(n), http.StatusSeeOther)
}

// confirmRemovePolicy serves GET /policies/{id}/delete: the confirmation.
func (c *Console) confirmRemovePolicy(w http.ResponseWriter, r *http.Request) {
	rule, ok := c.ruleByID(w, r)
	if !ok {
		return
	}
	c.render(w, r, http.StatusOK, "delete", c.view(r, "Delete rule #"+strconv.FormatInt(rule.ID, 10), "policies", rule))
}

// removePolicy serves POST /policies/{id}/delete.
func (c *Console) removePolicy(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		c.fail(w, r, apperr.New(apperr.NotFound, "rule ids are positive whole numbers"))
		return
	}
	if err := c.policies.Remove(r.Context(), actor(r), id); err != nil {
		c.fail(w, r, err)
		return
	}
	http.Redirect(w, r, c.base+"/policies?removed="+strconv.FormatInt(id, 10), http.StatusSeeOther)
}

// exportPolicies serves GET /policies/export: the rules of the current
// project and of "*" as CSV.
func (c *Console) exportPolicies(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	if err := c.policies.Export(r.Context(), &b, policy.Filter{Projects: visibleRules(r)}); err != nil {
		c.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="policies.csv"`)
	w.Write(b.Bytes())
}

// importPage is the data of the import form.
type importPage struct {
	CSV     string
	Mode    string // policy.ImportAdd or ImportReplace
	Project string // the project a replace is for
	Error   string
	Preview *policy.Imported // a dry run's result, its lists cut to importShown
	More    int              // rules of the preview's lists not shown
}

// importShown is how many rules of each change an import's preview lists.
const importShown = 100

// importForm serves GET /policies/import.
func (c *Console) importForm(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "import", c.view(r, "Import policies", "policies",
		importPage{Mode: string(policy.ImportAdd), Project: visitFrom(r.Context()).project}))
}

// importPolicies serves POST /policies/import: a CSV file upload or pasted
// text, imported all or nothing, adding its rules (mode add) or making the
// current project's rules and the "*" rules its own (replace); with
// preview, only what it would change is shown, the document kept in the
// form to import it for real.
func (c *Console) importPolicies(w http.ResponseWriter, r *http.Request) {
	p := importPage{CSV: r.PostFormValue("csv"), Mode: r.PostFormValue("mode"), Project: visitFrom(r.Context()).project}
	if p.Mode != string(policy.ImportReplace) {
		p.Mode = string(policy.ImportAdd)
	}
	if r.MultipartForm != nil {
		if fh := r.MultipartForm.File["file"]; len(fh) > 0 && fh[0].Size > 0 {
			f, err := fh[0].Open()
			if err != nil {
				c.fail(w, r, apperr.Wrap(apperr.Invalid, err, "the uploaded file cannot be read"))
				return
			}
			b, err := io.ReadAll(io.LimitReader(f, maxFormBytes))
			f.Close()
			if err != nil {
				c.fail(w, r, apperr.Wrap(apperr.Invalid, err, "the uploaded file cannot be read"))
				return
			}
			p.CSV = string(b)
		}
	}
	preview := r.PostFormValue("preview") != ""
	res, err := c.policies.Import(r.Context(), actor(r), strings.NewReader(p.CSV),
		policy.ImportOptions{Mode: policy.ImportMode(p.Mode), Project: p.Project, DryRun: preview})
	if err != nil {
		kind := apperr.KindOf(err)
		if kind != apperr.Invalid && kind != apperr.Conflict && kind != apperr.Forbidden {
			c.fail(w, r, err)
			return
		}
		_, p.Error = fieldErrors(err)
		c.render(w, r, statusOf(kind), "import", c.view(r, "Import policies", "policies", p))
		return
	}
	if preview {
		p.More = max(0, len(res.Added)-importShown) + max(0, len(res.Removed)-importShown)
		res.Added, res.Removed = res.Added[:min(len(res.Added), importShown)], res.Removed[:min(len(res.Removed), importShown)]
		p.Preview = &res
		c.render(w, r, http.StatusOK, "import", c.view(r, "Import policies", "policies", p))
		return
	}
	http.Redirect(w, r, c.base+"/policies?"+url.Values{"imported": {strconv.Itoa(len(res.Added))},
		"removed_n": {strconv.Itoa(len(res.Removed))}, "unchanged": {strconv.Itoa(res.Unchanged)}}.Encode(), http.StatusSeeOther)
}

// historyPage is the data of the change history.
type historyPage struct {
	Actor, Channel, Action, Rule, From, To string // the filters, as typed
	Errors                                 map[string]string
	Changes                                []policy.Change
	First, Next                            string
}

// policyHistory serves GET /policies/history?actor=&channel=&action=&rule=
// &from=&to=&before=ID, newest first.
func (c *Console) policyHistory(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	get := func(k string) string { return strings.TrimSpace(q.Get(k)) }
	p := historyPage{Actor: get("actor"), Channel: get("channel"), Action: get("action"), Rule: get("rule"), From: get("from"), To: get("to")}
	f := policy.HistoryFilter{Limit: changesPerPage, Projects: visibleRules(r), Actor: p.Actor, Channel: p.Channel, Action: p.Action}
	p.Errors = map[string]string{}
	if p.Rule != "" {
		id, err := strconv.ParseInt(strings.TrimPrefix(p.Rule, "#"), 10, 64)
		if err != nil || id <= 0 {
			p.Errors["rule"] = "a rule id, such as 42"
		}
		f.RuleID = id
	}
	for _, t := range []struct {
		name, value string
		dst         *time.Time
	}{{"from", p.From, &f.From}, {"to", p.To, &f.To}} {
		if t.value == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339, t.value)
		if err != nil {
			p.Errors[t.name] = "a time such as 2026-11-01T00:00:00Z (ISO 8601, UTC)"
		}
		*t.dst = v
	}
	if len(p.Errors) > 0 {
		c.render(w, r, http.StatusBadRequest, "history", c.view(r, "Policy history", "policies", p))
		return
	}
	filters := url.Values{}
	for k, v := range map[string]string{"actor": p.Actor, "channel": p.Channel, "action": p.Action, "rule": p.Rule, "from": p.From, "to": p.To} {
		if v != "" {
			filters.Set(k, v)
		}
	}
	if v := q.Get("before"); v != "" {
		before, err := strconv.ParseInt(v, 10, 64)
		if err != nil || before <= 0 {
			c.fail(w, r, apperr.Field("before", "must be a change id"))
			return
		}
		f.Before = before
		p.First = c.base + "/policies/history?" + filters.Encode()
	}
	changes, next, err := c.policies.History(r.Context(), f)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	p.Changes = changes
	if next != 0 {
		filters.Set("before", strconv.FormatInt(next, 10))
		p.Next = c.base + "/policies/history?" + filters.Encode()
	}
	c.render(w, r, http.StatusOK, "history", c.view(r, "Policy history", "policies", p))
}
