package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/problem"
	"github.com/broker-dev/broker/internal/tokenurl"
)

// Token URLs: {public URL}/k/{secret}/ stands in for a bearer token on the
// seed routes, for clients that cannot send a header (Agora's UI Kits).

// tokenURLPrefix is where a token URL's secret sits in a path.
const tokenURLPrefix = "/k/"

type tokenURLSecretKey struct{}

// splitTokenURL takes a token URL's secret out of the path before anything
// else sees the request: the router, the access log, metrics and problem
// documents see the rest of the path only ("/rtc/…"), and the secret travels
// in the context. The access log writes such a path as "/k/…/rtc/…".
func splitTokenURL(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, tokenURLPrefix)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		secret, path, _ := strings.Cut(rest, "/")
		r2 := r.WithContext(context.WithValue(r.Context(), tokenURLSecretKey{}, secret))
		u := *r.URL
		u.Path, u.RawPath = "/"+path, ""
		if raw, ok := strings.CutPrefix(r.URL.EscapedPath(), tokenURLPrefix); ok {
			if _, rawPath, ok := strings.Cut(raw, "/"); ok && "/"+rawPath != u.EscapedPath() {
				u.RawPath = "/" + rawPath
			}
		}
		r2.URL = &u
		r2.RequestURI = u.RequestURI()
		next.ServeHTTP(w, r2)
	})
}

// viaTokenURL returns the token URL secret of a request that came through
// one.
func viaTokenURL(r *http.Request) (string, bool) {
	s, ok := r.Context().Value(tokenURLSecretKey{}).(string)
	return s, ok
}

// loggedPath is the path as the access log writes it: a token URL's secret
// is never written.
func loggedPath(r *http.Request) string {
	if _, ok := viaTokenURL(r); ok {
		return "/k/…" + r.URL.Path
	}
	return r.URL.Path
}

type tokenURLKey struct{}

// seedAuth authenticates the seed routes: through the token URL the request
// came by, or else its bearer token.
func seedAuth(urls TokenURLs, bearer func(http.Handler) http.Handler) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		viaBearer := bearer(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			secret, ok := viaTokenURL(r)
			if !ok {
				viaBearer.ServeHTTP(w, r)
				return
			}
			if urls.Service == nil {
				problem.Write(w, r, apperr.New(apperr.NotFound, "this broker serves no token URLs"))
				return
			}
			u, err := urls.Service.Resolve(r.Context(), secret)
			if err != nil {
				problem.Write(w, r, err)
				return
			}
			var qualifier string
			if urls.Qualifier != nil {
				var ok bool
				if qualifier, ok = urls.Qualifier(u.Issuer); !ok {
					problem.Write(w, r, apperr.New(apperr.Unauthorized, "the identity provider of this token URL's creator is no longer accepted"))
					return
				}
			}
			id := auth.Identity{Issuer: u.Issuer, Subject: u.Subject, Qualifier: qualifier, Account: u.Account, AccountError: u.AccountError,
				Groups: u.Groups, UID: u.UID, HasUID: u.UID != 0}
			ctx := context.WithValue(auth.NewContext(r.Context(), id), tokenURLKey{}, u)
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// bearerOnly authenticates every route but the seed routes: a bearer token
// only; a token URL reaches nothing else.
func bearerOnly(bearer func(http.Handler) http.Handler) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		viaBearer := bearer(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, ok := viaTokenURL(r); ok {
				problem.Write(w, r, apperr.New(apperr.NotFound, "a token URL serves the seed routes only (/rtc, /rtm, /rte, /getToken, /chat)"))
				return
			}
			viaBearer.ServeHTTP(w, r)
		})
	}
}

// tokenURLFrom returns the token URL a request was authenticated by.
func tokenURLFrom(ctx context.Context) (tokenurl.URL, bool) {
	u, ok := ctx.Value(tokenURLKey{}).(tokenurl.URL)
	return u, ok
}

// tokenURLProject is the project of the token URL a request came through,
// "" when it came otherwise.
func tokenURLProject(r *http.Request) string {
	u, _ := tokenURLFrom(r.Context())
	return u.Project
}

// TokenURLs configures the token URL routes.
type TokenURLs struct {
	Service *tokenurl.Service
	// PublicURL is the broker's address as clients reach it
	// (BROKER_PUBLIC_URL); empty: the scheme and Host of the request.
	PublicURL string
	// DefaultTTL and MaxTTL bound a token URL's lifetime.
	DefaultTTL, MaxTTL time.Duration
	// Qualifier names the configured issuer a URL's creator came from ("" for
	// the default issuer; auth.Issuers.QualifierFor); false when that issuer
	// is no longer configured, and the URL then serves nothing. Nil: one
	// issuer, the default.
	Qualifier func(issuer string) (string, bool)
}

// tokenURLRequest is the body of POST /v1/token-urls.
type tokenURLRequest struct {
	TTLSeconds            *int64 `json:"ttlSeconds"`
	DowngradeToSubscriber bool   `json:"downgradeToSubscriber"`
	// Project is the Agora project the URL's tokens are for; empty: the
	// default one (broker.Broker.Resolve).
	Project string `json:"project"`
}

// tokenURLResponse answers POST /v1/token-urls: the URL (the only time it is
// shown) and what it is bound to.
type tokenURLResponse struct {
	ID                    string `json:"id"`
	TokenURL              string `json:"tokenUrl"`
	UID                   uint32 `json:"uid"`
	ScreenShareUID        uint32 `json:"screenShareUid"`
	Account               string `json:"account"`
	ExpiresAt             string `json:"expiresAt"`
	DowngradeToSubscriber bool   `json:"downgradeToSubscriber"`
	Project               string `json:"project"`
}

func createTokenURL(b Issuer, t TokenURLs) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, _ := auth.FromContext(r.Context())
		var body tokenURLRequest
		if r.ContentLength != 0 {
			if err := decodeJSON(r, &body); err != nil {
				problem.Write(w, r, err)
				return
			}
		}
		ttl := t.DefaultTTL
		if body.TTLSeconds != nil {
			if *body.TTLSeconds < 60 || time.Duration(*body.TTLSeconds)*time.Second > t.MaxTTL {
				problem.Write(w, r, apperr.Field("ttlSeconds", "must be from 60 to %d (BROKER_TOKEN_URL_MAX_TTL)", int64(t.MaxTTL/time.Second)))
				return
			}
			ttl = time.Duration(*body.TTLSeconds) * time.Second
		}
		project, err := b.Resolve(id, body.Project)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		uid, err := b.BoundUID(r.Context(), id)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		ss, err := b.ScreenShareUID(r.Context(), id)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		u := tokenurl.URL{Issuer: id.Issuer, Subject: id.Subject, Account: id.Account, AccountError: id.AccountError,
			Groups: id.Groups, Downgrade: body.DowngradeToSubscriber, Project: project.Name}
		if id.HasUID {
			u.UID = id.UID
		}
		u, secret, err := t.Service.Create(r.Context(), u, ttl)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		w.Header().Set("Location", "/v1/token-urls/"+u.ID)
		writeJSON(w, http.StatusCreated, tokenURLResponse{ID: u.ID, TokenURL: publicBase(r, t.PublicURL) + tokenURLPrefix + secret,
			UID: uid, ScreenShareUID: ss, Account: id.Account, ExpiresAt: u.ExpiresAt.Format(time.RFC3339),
			DowngradeToSubscriber: u.Downgrade, Project: u.Project})
	}
}

// publicBase is the broker's address for the URLs it hands out.
func publicBase(r *http.Request, configured string) string {
	if configured != "" {
		return strings.TrimSuffix(configured, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return (&url.URL{Scheme: scheme, Host: r.Host}).String()
}

// listTokenURLs lists the caller's own token URLs, or with ?subject= (a
// subject, or "*" for everyone) those of the projects where the caller holds
// write on api:token-urls.
func listTokenURLs(p *policy.Engine, t TokenURLs) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, id, _ := caller(r)
		issuer, subject := id.Issuer, id.Subject
		var projects []string
		q := r.URL.Query()
		if q.Has("subject") {
			var err error
			if p == nil {
				err = apperr.New(apperr.Forbidden, "you need the %s right on %s", policy.Write, policy.ObjectTokenURL)
			} else {
				projects, err = scope(p, r, policy.ObjectTokenURL, policy.Write, q.Get("project"))
			}
			if err != nil {
				problem.Write(w, r, err)
				return
			}
			subject = q.Get("subject")
			if subject == "*" {
				subject = ""
			}
		}
		urls, err := t.Service.List(r.Context(), issuer, subject)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		shown := []tokenurl.URL{}
		for _, u := range urls {
			if projects == nil || slices.Contains(projects, u.Project) {
				shown = append(shown, u)
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"tokenUrls": shown})
	}
}

func revokeTokenURL(p *policy.Engine, t TokenURLs) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, id, _ := caller(r)
		target := chi.URLParam(r, "id")
		// One's own, or one of a project where the caller holds write on
		// api:token-urls; any other id is not found.
		mine, err := t.Service.List(r.Context(), id.Issuer, id.Subject)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		allowed := slices.ContainsFunc(mine, func(u tokenurl.URL) bool { return u.ID == target })
		if !allowed && p != nil && len(p.ProjectsWith(c, policy.ObjectTokenURL, policy.Write)) > 0 {
			all, err := t.Service.List(r.Context(), "", "")
			if err != nil {
				problem.Write(w, r, err)
				return
			}
			i := slices.IndexFunc(all, func(u tokenurl.URL) bool { return u.ID == target })
			allowed = i >= 0 && p.Can(c, all[i].Project, policy.ObjectTokenURL, policy.Write)
		}
		if !allowed {
			problem.Write(w, r, apperr.New(apperr.NotFound, "you have no token URL with id %q", clip(target)))
			return
		}
		if _, err := t.Service.Revoke(r.Context(), target); err != nil {
			problem.Write(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// clip bounds a client-supplied value quoted in a message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
