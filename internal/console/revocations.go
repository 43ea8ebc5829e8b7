package console

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/revoke"
)

// revocationsPage is the data of the revocations page: the form as typed,
// the project's revocations, and the live tokens policy changes orphaned.
type revocationsPage struct {
	Subject, UID, Channel, Reason string
	PublishOnly                   bool
	Errors                        map[string]string
	Error                         string
	Done                          *revoke.Revocation // the revocation just made or lifted
	Revocations                   []revoke.Revocation
	ShowOrphans                   bool
	Orphans                       []revoke.Orphan
	OrphansTruncated              bool
}

// listRevocations serves GET /revocations: revoke a user, the revocations
// of the project (lift one), and the orphaned tokens, each one click from
// its revocation.
func (c *Console) listRevocations(w http.ResponseWriter, r *http.Request) {
	c.showRevocations(w, r, http.StatusOK, revocationsPage{Channel: "*"})
}

// showRevocations renders the page with p's form, message and status.
func (c *Console) showRevocations(w http.ResponseWriter, r *http.Request, status int, p revocationsPage) {
	project := visitFrom(r.Context()).project
	revs, err := c.revocations.Store.List(r.Context(), project, false, 100)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	p.Revocations = revs
	if p.ShowOrphans = c.orphans; c.orphans {
		if p.Orphans, p.OrphansTruncated, err = c.revocations.Orphans(r.Context(), project); err != nil {
			c.fail(w, r, err)
			return
		}
	}
	c.render(w, r, status, "revocations", c.view(r, "Revocations", "revocations", p))
}

// revoke serves POST /revocations: the form's user's tokens ended now
// (revoke.Service.Revoke), in the console's project, under the admin's
// name; a mistake shows the form again, each next to its field.
func (c *Console) revoke(w http.ResponseWriter, r *http.Request) {
	p := revocationsPage{
		Subject:     strings.TrimSpace(r.PostFormValue("subject")),
		UID:         strings.TrimSpace(r.PostFormValue("uid")),
		Channel:     strings.TrimSpace(r.PostFormValue("channel")),
		Reason:      strings.TrimSpace(r.PostFormValue("reason")),
		PublishOnly: r.PostFormValue("publishOnly") == "on",
		Errors:      map[string]string{},
	}
	req := revoke.Request{Project: visitFrom(r.Context()).project, Subject: p.Subject, Channel: p.Channel, PublishOnly: p.PublishOnly, Reason: p.Reason}
	if p.UID != "" {
		uid, err := strconv.ParseUint(p.UID, 10, 32)
		if err != nil || uid == 0 {
			p.Errors["uid"] = "an Agora uid is a whole number from 1 to 4294967295"
			c.showRevocations(w, r, http.StatusBadRequest, p)
			return
		}
		req.UID = uint32(uid)
	}
	a := actor(r)
	a.Operator = true // the right checked is write on api:revocations (the route's)
	rev, err := c.revocations.Revoke(r.Context(), a, req)
	if err != nil {
		kind := apperr.KindOf(err)
		if kind != apperr.Invalid && kind != apperr.Conflict && kind != apperr.NotFound {
			c.fail(w, r, err)
			return
		}
		p.Errors, p.Error = fieldErrors(err, "subject", "uid", "channel", "reason")
		c.showRevocations(w, r, statusOf(kind), p)
		return
	}
	c.showRevocations(w, r, http.StatusCreated, revocationsPage{Channel: "*", Done: &rev})
}

// liftRevocation serves POST /revocations/{id}/lift: the revocation ends
// now, its deny rule removed and its bans deleted. A revocation of another
// project is not this page's: 404.
func (c *Console) liftRevocation(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		c.fail(w, r, apperr.New(apperr.NotFound, "revocation ids are positive whole numbers"))
		return
	}
	rev, err := c.revocations.Store.Get(r.Context(), id)
	if err == nil && rev.Project != visitFrom(r.Context()).project {
		err = apperr.New(apperr.NotFound, "no revocation %d in this project", id)
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	a := actor(r)
	a.Operator = true
	if rev, err = c.revocations.Lift(r.Context(), a, id); err != nil {
		if apperr.KindOf(err) != apperr.Conflict {
			c.fail(w, r, err)
			return
		}
		c.showRevocations(w, r, http.StatusConflict, revocationsPage{Channel: "*", Error: err.Error()})
		return
	}
	c.showRevocations(w, r, http.StatusOK, revocationsPage{Channel: "*", Done: &rev})
}
