package console

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5/middleware"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/problem"
)

// assets holds the page templates and the stylesheet; there is no build step.
//
//go:embed templates/*.html static/*
var assets embed.FS

// pages holds one template set per page, each with the shared layout.
type pages struct {
	byName map[string]*template.Template
}

var templateFuncs = template.FuncMap{
	"utc": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"seconds": func(d time.Duration) string {
		if d == 0 {
			return "—"
		}
		return strconv.FormatInt(int64(d/time.Second), 10) + " s"
	},
	"list": func(s ...string) []string { return s },
	"add":  func(a, b int) int { return a + b },
}

func parsePages() (*pages, error) {
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("console: list templates: %w", err)
	}
	p := &pages{byName: map[string]*template.Template{}}
	for _, n := range names {
		name := strings.TrimSuffix(path.Base(n), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New(name).Funcs(templateFuncs).ParseFS(assets, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: parse template %s: %w", n, err)
		}
		p.byName[name] = t
	}
	return p, nil
}

// view is what every page template receives; Data is the page's own.
type view struct {
	Title  string
	Nav    string // which menu entry is current
	Base   string
	User   *session // nil outside a session
	CSRF   string
	Rights rights
	// Project is the project the console works in, Projects those the
	// switcher offers, Here the page's address (where switching returns).
	Project, Here string
	Projects      []string
	Data          any
}

// view returns the common part of a page for r.
func (c *Console) view(r *http.Request, title, nav string, data any) view {
	v := view{Title: title, Nav: nav, Base: c.base, Data: data}
	if vs := visitFrom(r.Context()); vs != nil {
		v.User, v.CSRF, v.Rights = vs.session, vs.csrf, vs.rights
		v.Project, v.Projects, v.Here = vs.project, vs.projects, r.URL.Path
	}
	return v
}

// render writes page name with status; the page is rendered in full before
// anything is sent, so a template error never leaves half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, v view) {
	t, ok := c.pages.byName[name]
	var buf bytes.Buffer
	if !ok {
		c.log.ErrorContext(r.Context(), "console page missing", "page", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		c.log.ErrorContext(r.Context(), "console page failed to render", "page", name, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// message is a page that only says something, with an optional link onward.
type message struct {
	Title, Text    string
	Link, LinkText string
}

func (c *Console) renderMessage(w http.ResponseWriter, r *http.Request, status int, m message) {
	c.render(w, r, status, "message", c.view(r, m.Title, "", m))
}

// noAccess tells a logged-in user which right a page needs.
func (c *Console) noAccess(w http.ResponseWriter, r *http.Request, need string) {
	c.render(w, r, http.StatusForbidden, "noaccess", c.view(r, "No access", "", need))
}

// fail renders err as a page: its client-safe message for expected kinds, a
// generic one (with the request id) otherwise. The cause of a server-side
// failure goes to the log through problem.LogCause, the API's own boundary.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	problem.LogCause(r, err)
	kind := apperr.KindOf(err)
	status := problem.Status(kind)
	m := message{Title: http.StatusText(status), Link: c.base + "/", LinkText: "Console home"}
	e, ok := apperr.As(err)
	if ok && kind != apperr.Internal {
		m.Text = e.Message
		if e.Field != "" {
			m.Text = e.Field + ": " + e.Message
		}
		if kind == apperr.Unavailable {
			m.Link, m.LinkText = r.URL.RequestURI(), "Retry"
		}
	} else {
		m.Text = "Something went wrong on our side; it has been logged."
		if id := middleware.GetReqID(r.Context()); id != "" {
			m.Text += " Request id: " + id + "."
		}
	}
	c.renderMessage(w, r, status, m)
}

// fieldErrors splits err into messages for the named form fields and one for
// the form as a whole (when no field it names is on the form).
func fieldErrors(err error, fields ...string) (map[string]string, string) {
	e, ok := apperr.As(err)
	if !ok {
		return nil, ""
	}
	for _, f := range fields {
		if e.Field == f {
			return map[string]string{f: e.Message}, ""
		}
	}
	if e.Field != "" {
		return nil, e.Field + ": " + e.Message
	}
	return nil, e.Message
}
