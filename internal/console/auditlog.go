package console

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/problem"
)

// recordsPerPage is the issuance log page size.
const recordsPerPage = 50

// auditFilterFields are the filter inputs, in form order; they are also the
// query parameter names and the Field names the log reports.
var auditFilterFields = []string{"issuer", "subject", "account", "uid", "requestId", "channel", "project", "decision", "from", "to"}

// auditForm is the filter form as typed, with its validation messages.
type auditForm struct {
	Issuer, Subject, Account, UID, RequestID, Channel, Project, Decision, From, To string
	Errors                                                                         map[string]string
	Error                                                                          string
}

// auditRow is one record in the list, with the address of its detail page.
type auditRow struct {
	audit.Record
	Detail string
}

// auditPage is the data of the issuance log page.
type auditPage struct {
	Form        auditForm
	Filtered    bool // some filter is set
	Rows        []auditRow
	First, Next string // page links; empty when there is no such page
	Export      string // CSV export of everything the filters select
}

// auditFilter reads the filter form through audit.ParseQuery, the one
// reader of filters (times: RFC 3339, or the "2006-01-02T15:04" of an HTML
// datetime-local input, read as UTC).
func auditFilter(q url.Values) (auditForm, audit.Filter, error) {
	form := auditForm{
		Issuer:  strings.TrimSpace(q.Get("issuer")),
		Subject: strings.TrimSpace(q.Get("subject")), Account: strings.TrimSpace(q.Get("account")),
		UID: strings.TrimSpace(q.Get("uid")), RequestID: strings.TrimSpace(q.Get("requestId")),
		Channel: strings.TrimSpace(q.Get("channel")), Project: strings.TrimSpace(q.Get("project")), Decision: q.Get("decision"),
		From: strings.TrimSpace(q.Get("from")), To: strings.TrimSpace(q.Get("to")),
	}
	f, err := audit.ParseQuery(audit.Query{Issuer: form.Issuer, Subject: form.Subject, Account: form.Account, UID: form.UID,
		RequestID: form.RequestID, Channel: form.Channel, Project: form.Project, Decision: form.Decision, From: form.From, To: form.To})
	return form, f, err
}

// query encodes the non-empty filters.
func (f auditForm) query() url.Values {
	v := url.Values{}
	for i, s := range []string{f.Issuer, f.Subject, f.Account, f.UID, f.RequestID, f.Channel, f.Project, f.Decision, f.From, f.To} {
		if s != "" {
			v.Set(auditFilterFields[i], s)
		}
	}
	return v
}

// auditProjects are the projects whose records the console shows: every
// project's to a holder of read on api:audit in every project (the project
// filter then narrows them), else the current project's.
func auditProjects(r *http.Request) []string {
	v := visitFrom(r.Context())
	if v.rights.Global {
		return nil
	}
	return []string{v.project}
}

// searchAudit serves GET /audit: filtered records, newest first, a page at a time.
func (c *Console) searchAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	form, f, err := auditFilter(q)
	f.Projects = auditProjects(r)
	p := auditPage{Form: form}
	if err == nil {
		f.Limit, f.Cursor = recordsPerPage, q.Get("cursor")
		var page audit.Page
		if page, err = c.audit.Search(r.Context(), f); err == nil {
			filters := form.query()
			back := form.query()
			if f.Cursor != "" {
				back.Set("cursor", f.Cursor)
			}
			for _, rec := range page.Records {
				p.Rows = append(p.Rows, auditRow{Record: rec, Detail: c.recordURL(rec, back)})
			}
			p.Filtered = len(filters) > 0
			p.Export = c.base + "/audit/export?" + filters.Encode()
			if f.Cursor != "" {
				p.First = c.base + "/audit?" + filters.Encode()
			}
			if page.NextCursor != "" {
				filters.Set("cursor", page.NextCursor)
				p.Next = c.base + "/audit?" + filters.Encode()
			}
		}
	}
	status := http.StatusOK
	if err != nil {
		if apperr.KindOf(err) != apperr.Invalid {
			c.fail(w, r, err)
			return
		}
		p.Form.Errors, p.Form.Error = fieldErrors(err, auditFilterFields...)
		status = http.StatusBadRequest
	}
	c.render(w, r, status, "audit", c.view(r, "Issuance log", "audit", p))
}

// recordURL is the detail page of rec. The log is searched by time, so the
// address carries the record's time (kept to the microsecond) next to its
// seq, and the list's filters and page (back), for the way back to it.
func (c *Console) recordURL(rec audit.Record, back url.Values) string {
	v := url.Values{
		"seq": {strconv.FormatInt(rec.Seq, 10)},
		"at":  {rec.Time.UTC().Format(time.RFC3339Nano)},
	}
	if len(back) > 0 {
		v.Set("back", back.Encode())
	}
	return c.base + "/audit/record?" + v.Encode()
}

// recordPage is the data of one record's page.
type recordPage struct {
	audit.Record
	Back string // the issuance log as the list was (its filters and page)
}

// backToList is the list's address from a record page's back parameter:
// only the filters and cursor it may hold, so that the link goes nowhere
// else.
func (c *Console) backToList(back string) string {
	in, err := url.ParseQuery(back)
	out := url.Values{}
	if err == nil {
		for _, k := range append(slices.Clone(auditFilterFields), "cursor") {
			if v := in.Get(k); v != "" {
				out.Set(k, v)
			}
		}
	}
	if len(out) == 0 {
		return c.base + "/audit"
	}
	return c.base + "/audit?" + out.Encode()
}

// auditRecord serves GET /audit/record?seq=&at=: one record in full.
func (c *Console) auditRecord(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	seq, err := strconv.ParseInt(q.Get("seq"), 10, 64)
	at, terr := time.Parse(time.RFC3339Nano, q.Get("at"))
	if err != nil || terr != nil || seq <= 0 {
		c.fail(w, r, apperr.New(apperr.NotFound, "no such record: the address needs a seq and its time"))
		return
	}
	f := audit.Filter{From: at, To: at.Add(time.Microsecond), Limit: audit.MaxLimit, Projects: auditProjects(r)}
	for {
		page, err := c.audit.Search(r.Context(), f)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		for _, rec := range page.Records {
			if rec.Seq == seq {
				c.render(w, r, http.StatusOK, "record", c.view(r, "Record #"+strconv.FormatInt(seq, 10), "audit",
					recordPage{Record: rec, Back: c.backToList(q.Get("back"))}))
				return
			}
		}
		if page.NextCursor == "" {
			c.fail(w, r, apperr.New(apperr.NotFound, "record #%d at %s is not in the log", seq, at.UTC().Format(time.RFC3339Nano)))
			return
		}
		f.Cursor = page.NextCursor
	}
}

// lookupPage is the data of "whose token is this?".
type lookupPage struct {
	Searched bool
	Rows     []auditRow
	Error    string
}

// lookupForm serves GET /audit/lookup.
func (c *Console) lookupForm(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "lookup", c.view(r, "Whose token is this?", "audit", lookupPage{}))
}

// lookupToken serves POST /audit/lookup: the records that issued the token
// posted (found by its keyed fingerprint), of the projects the auditor may
// read. The token is a secret: it is neither logged nor shown again.
func (c *Console) lookupToken(w http.ResponseWriter, r *http.Request) {
	recs, err := c.audit.Lookup(r.Context(), strings.TrimSpace(r.PostFormValue("token")))
	if err != nil {
		if apperr.KindOf(err) != apperr.Invalid {
			c.fail(w, r, err)
			return
		}
		_, msg := fieldErrors(err)
		c.render(w, r, http.StatusBadRequest, "lookup", c.view(r, "Whose token is this?", "audit", lookupPage{Error: msg}))
		return
	}
	p := lookupPage{Searched: true}
	projects := auditProjects(r)
	for _, rec := range recs {
		if projects == nil || slices.Contains(projects, rec.Project) {
			p.Rows = append(p.Rows, auditRow{Record: rec, Detail: c.recordURL(rec, nil)})
		}
	}
	c.render(w, r, http.StatusOK, "lookup", c.view(r, "Whose token is this?", "audit", p))
}

// exportAudit serves GET /audit/export: every record the filters select, as CSV.
func (c *Console) exportAudit(w http.ResponseWriter, r *http.Request) {
	_, f, err := auditFilter(r.URL.Query())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	f.Projects = auditProjects(r)
	// Streamed: once the first byte is out, an error can only cut the file short.
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="issuance-log.csv"`)
	sw := &problem.StartedWriter{W: w}
	if err := c.audit.Export(r.Context(), f, "csv", sw); err != nil {
		if sw.Started {
			problem.LogCause(r, err)
			return
		}
		w.Header().Del("Content-Disposition")
		c.fail(w, r, err)
	}
}

// verifyAudit serves GET /audit/verify: the log verified as the API does,
// incrementally from the verified point when the broker signs checkpoints
// (?full=true reads every record).
func (c *Console) verifyAudit(w http.ResponseWriter, r *http.Request) {
	if !visitFrom(r.Context()).rights.Global {
		c.noAccess(w, r, "read on api:audit in every project (the chain runs through every project's records)")
		return
	}
	full := r.URL.Query().Get("full")
	if full != "" && full != "true" {
		c.fail(w, r, apperr.Field("full", "must be true when given"))
		return
	}
	rep, err := audit.VerifyConfigured(r.Context(), c.audit, c.cfg.LogVerifierKey, full == "true")
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "verify", c.view(r, "Chain verification", "audit", rep))
}
