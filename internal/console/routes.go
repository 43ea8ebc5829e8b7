package console

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"slices"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/problem"
)

// maxFormBytes bounds a form post, a policy CSV import included.
const maxFormBytes = 2 << 20

// contentSecurityPolicy allows nothing but the console's own files: no script
// at all, no framing, forms only to the console's origin.
const contentSecurityPolicy = "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// routes lists every console page. Paths include the base path.
func (c *Console) routes() (http.Handler, error) {
	r := chi.NewRouter()
	b := c.base
	// Behind the session, so that the page keeps the navigation (a visitor
	// without one signs in first, then sees it).
	r.NotFound(c.requireSession(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.renderMessage(w, r, http.StatusNotFound, message{Title: "Not found", Text: "There is no console page at this address.", Link: c.base + "/", LinkText: "Console home"})
	})).ServeHTTP)
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		c.renderMessage(w, r, http.StatusMethodNotAllowed, message{Title: "Method not allowed", Text: "This page does not accept that kind of request.", Link: c.base + "/", LinkText: "Console home"})
	})

	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, fmt.Errorf("console: embedded assets: %w", err)
	}
	r.Handle(b+"/static/*", http.StripPrefix(b+"/static/", cacheable(http.FileServerFS(static))))
	r.Get(b+"/login", c.login)
	r.Get(b+"/callback", c.callback)

	r.Group(func(r chi.Router) {
		r.Use(c.requireSession)
		r.Post(b+"/logout", c.logout)
		// Signing someone out reaches every project's users: a global right.
		r.With(c.needGlobal(policy.ObjectRights, policy.Write)).Post(b+"/sessions/sign-out", c.signOut)

		r.Get(b+"/", c.overview)
		r.Get(b+"/project", c.switchProject)

		polRead := c.need(policy.ObjectPolicies, policy.Read)
		// Writing rules takes write on api:policies (channel rules) or on
		// api:rights (admin rights); the engine checks each change.
		polWrite := c.need(policy.ObjectPolicies, policy.Write, policy.ObjectRights)
		r.With(polRead).Get(b+"/policies", c.listPolicies)
		r.With(polWrite).Post(b+"/policies", c.addPolicy)
		r.With(polWrite).Get(b+"/policies/delete-matching", c.confirmRemoveMatching)
		r.With(polWrite).Post(b+"/policies/delete-matching", c.removeMatching)
		r.With(polWrite).Get(b+"/policies/{id}/delete", c.confirmRemovePolicy)
		r.With(polWrite).Post(b+"/policies/{id}/delete", c.removePolicy)
		r.With(polRead).Get(b+"/policies/export", c.exportPolicies)
		r.With(polWrite).Get(b+"/policies/import", c.importForm)
		r.With(polWrite).Post(b+"/policies/import", c.importPolicies)
		r.With(polRead).Get(b+"/policies/history", c.policyHistory)
		r.With(polRead).Get(b+"/try", c.try)

		auditRead := c.need(policy.ObjectAudit, policy.Read)
		r.With(auditRead).Get(b+"/audit", c.searchAudit)
		r.With(auditRead).Get(b+"/audit/export", c.exportAudit)
		r.With(auditRead).Get(b+"/audit/record", c.auditRecord)
		r.With(auditRead).Get(b+"/audit/verify", c.verifyAudit)
		r.With(auditRead).Get(b+"/audit/access", c.accessReview)
		r.With(auditRead).Get(b+"/audit/lookup", c.lookupForm)
		r.With(auditRead).Post(b+"/audit/lookup", c.lookupToken)

		if c.revocations != nil {
			revRead, revWrite := c.need(policy.ObjectRevocations, policy.Read), c.need(policy.ObjectRevocations, policy.Write)
			r.With(revRead).Get(b+"/revocations", c.listRevocations)
			r.With(revWrite).Post(b+"/revocations", c.revoke)
			r.With(revWrite).Post(b+"/revocations/{id}/lift", c.liftRevocation)
		}
	})
	return problem.WithLogger(c.log)(c.securityHeaders(normalize(b, r))), nil
}

// normalize routes on the full request path whatever router the console is
// mounted in: it drops an outer chi route context (whose path has the mount
// prefix stripped) and a trailing slash, and serves the bare base path as home.
func normalize(base string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case p == base:
			p = base + "/"
		case p != base+"/" && strings.HasSuffix(p, "/"):
			p = strings.TrimRight(p, "/")
		}
		if p != r.URL.Path {
			u := *r.URL
			u.Path, u.RawPath = p, ""
			r2 := *r
			r2.URL = &u
			r = &r2
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), chi.RouteCtxKey, (*chi.Context)(nil))))
	})
}

// securityHeaders sets the headers every console response carries.
func (c *Console) securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// cacheable lets browsers keep the static assets for a few minutes.
func cacheable(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		next.ServeHTTP(w, r)
	})
}

// requireSession lets a request through only with a valid session, and a
// form post only with its CSRF token. A page request without a session goes
// to the provider to log in; a form post without one gets a page that says so
// (following a form with a redirect off-site is what form-action forbids).
func (c *Console) requireSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok, err := c.readSession(r)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		if !ok {
			if _, err := r.Cookie(sessionCookie); err == nil {
				http.SetCookie(w, c.cookie(r, sessionCookie, "", -1))
			}
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				c.startLogin(w, r, r.URL.RequestURI())
				return
			}
			c.renderMessage(w, r, http.StatusUnauthorized, message{Title: "Session ended",
				Text: "Your console session has ended, so this form was not sent. Log in again and repeat it.",
				Link: c.base + "/login", LinkText: "Log in again"})
			return
		}
		v := &visit{session: s, csrf: c.csrfToken(s)}
		v.projects = c.projectsOf(s)
		v.project = c.currentProject(r, v.projects)
		v.rights = c.rightsOf(s, v.project)
		r = r.WithContext(withVisit(r.Context(), v))
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
			if err := parseForm(r); err != nil {
				var tooBig *http.MaxBytesError
				if errors.As(err, &tooBig) {
					c.renderMessage(w, r, http.StatusRequestEntityTooLarge, message{Title: "Form too large",
						Text: "The form is larger than 2 MiB; split the import into smaller files."})
					return
				}
				c.renderMessage(w, r, http.StatusBadRequest, message{Title: "Form not readable", Text: "The form could not be read."})
				return
			}
			if !c.validCSRF(r, s) {
				c.log.WarnContext(r.Context(), "console form rejected: missing or wrong CSRF token", "subject", s.Subject, "path", r.URL.Path)
				c.renderMessage(w, r, http.StatusForbidden, message{Title: "Form not accepted",
					Text: "This form lacks a valid security token (CSRF), so nothing was changed. Reload the page and submit the form again.",
					Link: c.base + "/", LinkText: "Console home"})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// parseForm reads a urlencoded or multipart form body.
func parseForm(r *http.Request) error {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		return r.ParseMultipartForm(maxFormBytes)
	}
	return r.ParseForm()
}

// need lets a request through only if the session holds action on object
// or on one of the other objects in the current project; anyone else sees
// the "no access" page.
func (c *Console) need(object string, action policy.Role, or ...string) func(http.Handler) http.Handler {
	objects := append([]string{object}, or...)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			v := visitFrom(r.Context())
			for _, o := range objects {
				if c.policies.Can(v.session.caller(), v.project, o, action) {
					next.ServeHTTP(w, r)
					return
				}
			}
			c.noAccess(w, r, string(action)+" on "+strings.Join(objects, " or ")+" in project "+v.project)
		})
	}
}

// needGlobal lets a request through only if the session holds action on
// object in every project ("*").
func (c *Console) needGlobal(object string, action policy.Role) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c.policies.Can(visitFrom(r.Context()).session.caller(), policy.AllProjects, object, action) {
				next.ServeHTTP(w, r)
				return
			}
			c.noAccess(w, r, string(action)+" on "+object+" in every project (\"*\")")
		})
	}
}

// projectCookie remembers the project the console is working in.
const projectCookie = "broker_console_project"

// projectsOf returns the configured projects in which the session holds
// some admin right (every one for a global right), sorted.
func (c *Console) projectsOf(s *session) []string {
	cl := s.caller()
	var out []string
	for _, p := range c.cfg.Projects {
		for _, o := range []string{policy.ObjectPolicies, policy.ObjectAudit, policy.ObjectRights} {
			if c.policies.Can(cl, p, o, policy.Read) || c.policies.Can(cl, p, o, policy.Write) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// currentProject is the project the console works in for r: the cookie's,
// when the user still holds a right there, else the default project or the
// first of theirs.
func (c *Console) currentProject(r *http.Request, projects []string) string {
	if ck, err := r.Cookie(projectCookie); err == nil && slices.Contains(projects, ck.Value) {
		return ck.Value
	}
	if len(projects) == 0 || slices.Contains(projects, policy.DefaultProject) {
		return policy.DefaultProject
	}
	return projects[0]
}

// switchProject serves GET /project?name=: the console works in that
// project from now on (it must be one of the user's), then goes back to the
// console page the switcher was on. Switching changes nothing on the server,
// so it needs no CSRF token.
func (c *Console) switchProject(w http.ResponseWriter, r *http.Request) {
	v := visitFrom(r.Context())
	name := r.URL.Query().Get("name")
	if !slices.Contains(v.projects, name) {
		c.renderMessage(w, r, http.StatusNotFound, message{Title: "No such project",
			Text: "You hold no right in a project of that name.", Link: c.base + "/", LinkText: "Console home"})
		return
	}
	http.SetCookie(w, c.cookie(r, projectCookie, name, 0))
	back := r.URL.Query().Get("back")
	if !strings.HasPrefix(back, c.base+"/") || strings.HasPrefix(back, "//") || strings.ContainsAny(back, "\\\r\n") {
		back = c.base + "/"
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// rights are the admin rights of a session, as the policy engine says now:
// a channel admin writes api:policies, an auditor reads api:audit, a rights
// admin writes api:rights (see the policy package's separation of duties).
type rights struct {
	PoliciesRead, PoliciesWrite, AuditRead, RightsWrite bool
	// RevocationsRead and RevocationsWrite are the rights on
	// api:revocations (and the broker has revocations to show).
	RevocationsRead, RevocationsWrite bool
	// Global is read on api:audit in every project: the overview's chart
	// and the chain verification span every project's records.
	Global bool
	// PoliciesWriteAll and RightsWriteAll are the write rights in every
	// project, which changing a rule of "*" takes.
	PoliciesWriteAll, RightsWriteAll bool
}

// Any reports whether the session holds any console right.
func (r rights) Any() bool {
	return r.PoliciesRead || r.PoliciesWrite || r.AuditRead || r.RightsWrite || r.RevocationsRead
}

// AnyWrite reports whether the session may change some rule.
func (r rights) AnyWrite() bool { return r.PoliciesWrite || r.RightsWrite }

// CanChange reports whether the session may add or remove rule (of the
// current project or of "*"): channel rules take write on api:policies,
// admin rights write on api:rights, in every project for a rule of "*".
func (r rights) CanChange(rule policy.Rule) bool {
	all := rule.Project == policy.AllProjects
	if rule.IsAdmin() {
		return r.RightsWrite && (!all || r.RightsWriteAll)
	}
	return r.PoliciesWrite && (!all || r.PoliciesWriteAll)
}

func (c *Console) rightsOf(s *session, project string) rights {
	cl := s.caller()
	return rights{
		PoliciesRead:     c.policies.Can(cl, project, policy.ObjectPolicies, policy.Read),
		PoliciesWrite:    c.policies.Can(cl, project, policy.ObjectPolicies, policy.Write),
		AuditRead:        c.policies.Can(cl, project, policy.ObjectAudit, policy.Read),
		RightsWrite:      c.policies.Can(cl, project, policy.ObjectRights, policy.Write),
		RevocationsRead:  c.revocations != nil && c.policies.Can(cl, project, policy.ObjectRevocations, policy.Read),
		RevocationsWrite: c.revocations != nil && c.policies.Can(cl, project, policy.ObjectRevocations, policy.Write),
		Global:           c.policies.Can(cl, policy.AllProjects, policy.ObjectAudit, policy.Read),

		PoliciesWriteAll: c.policies.Can(cl, policy.AllProjects, policy.ObjectPolicies, policy.Write),
		RightsWriteAll:   c.policies.Can(cl, policy.AllProjects, policy.ObjectRights, policy.Write),
	}
}

// visit is a request with a valid session.
type visit struct {
	session  *session
	csrf     string
	rights   rights // in project
	project  string // the project the console works in
	projects []string
}

type visitKey struct{}

func withVisit(ctx context.Context, v *visit) context.Context {
	return context.WithValue(ctx, visitKey{}, v)
}

// visitFrom returns the visit requireSession stored, or nil outside a session.
func visitFrom(ctx context.Context) *visit {
	v, _ := ctx.Value(visitKey{}).(*visit)
	return v
}
