package devidp

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/problem"
)

// maxFormBytes bounds a token request body; a password grant is a few dozen bytes.
const maxFormBytes = 4 << 10

// Handler serves the issuer's endpoints relative to the issuer path:
//
//	GET  /.well-known/openid-configuration  discovery
//	GET  /keys                              JWKS (public key only)
//	POST /token                             password grant (form: grant_type=password, username, password, client_id)
//	GET  /token?user=alice                  the user's ID token as plain text, no password
//	GET  /auth, POST /auth                  authorization code + PKCE login: pick a demo user
//	POST /token                             authorization_code grant (code, redirect_uri, code_verifier)
//
// Mount it at the issuer path with chi's Mount or behind http.StripPrefix.
// Requests from non-loopback peers or to non-loopback Host names are refused
// with 403 (LoopbackOnly), whatever the listener.
func (i *Issuer) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(LoopbackOnly)
	r.Get("/.well-known/openid-configuration", serveJSON(i.discovery))
	r.Get("/keys", serveJSON(i.jwks))
	r.Get("/token", i.tokenForUser)
	r.Post("/token", i.tokenGrant)
	r.Get("/auth", i.authorize)
	r.Post("/auth", i.authorize)
	return r
}

// LoopbackOnly refuses every request that does not come from this machine
// to a loopback name: the peer must be a loopback address, and Host must be
// "localhost" or a loopback address. The second check stops DNS rebinding: a
// web page whose name an attacker re-points at 127.0.0.1 reaches the
// developer's broker from a loopback peer, but with its own name in Host.
// `broker dev` wraps its whole handler in it; the issuer's Handler uses it too,
// since its GET token route hands out tokens without a password.
func LoopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(peer); err != nil || ip == nil || !ip.IsLoopback() {
			problem.Write(w, r, apperr.New(apperr.Forbidden, "broker dev answers clients on this machine only"))
			return
		}
		if !loopbackHostHeader(r.Host) {
			problem.Write(w, r, apperr.New(apperr.Forbidden,
				"broker dev answers only requests addressed to localhost or a loopback address (Host %q); this stops DNS rebinding", clipName(r.Host)))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// loopbackHostHeader reports whether a Host header ("name", "name:port",
// "[::1]:port") names localhost or a loopback address.
func loopbackHostHeader(h string) bool {
	host := h
	if hp, _, err := net.SplitHostPort(h); err == nil {
		host = hp
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		host = h[1 : len(h)-1]
	}
	return host != "" && IsLoopbackHost(host)
}

func serveJSON(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}
}

// tokenResponse is the RFC 6749 §5.1 success body; both tokens are the ID token.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	IDToken     string `json:"id_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

// errorResponse is the RFC 6749 §5.2 error body.
type errorResponse struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// tokenGrant answers the token endpoint: the resource owner password
// credentials grant and the authorization code grant.
func (i *Issuer) tokenGrant(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeJSON(w, http.StatusRequestEntityTooLarge, errorResponse{"invalid_request", fmt.Sprintf("request body over %d bytes", maxFormBytes)})
			return
		}
		writeJSON(w, http.StatusBadRequest, errorResponse{"invalid_request", "body is not a valid application/x-www-form-urlencoded form"})
		return
	}
	form := r.PostForm // never the query string: credentials do not belong in URLs
	for _, name := range []string{"grant_type", "username", "password", "client_id", "code", "code_verifier", "redirect_uri"} {
		if len(form[name]) > 1 {
			writeJSON(w, http.StatusBadRequest, errorResponse{"invalid_request", name + " given more than once"})
			return
		}
	}
	if id := form.Get("client_id"); id != "" && id != i.audience {
		writeJSON(w, http.StatusUnauthorized, errorResponse{"invalid_client", "unknown client_id"})
		return
	}
	switch gt := form.Get("grant_type"); gt {
	case "password":
	case "authorization_code":
		i.codeGrant(w, form)
		return
	case "":
		writeJSON(w, http.StatusBadRequest, errorResponse{"invalid_request", "grant_type is required (form body, application/x-www-form-urlencoded)"})
		return
	default:
		writeJSON(w, http.StatusBadRequest, errorResponse{"unsupported_grant_type", "only grant_type=password and authorization_code are supported"})
		return
	}
	username, password := form.Get("username"), form.Get("password")
	if username == "" || password == "" {
		writeJSON(w, http.StatusBadRequest, errorResponse{"invalid_request", "username and password are required"})
		return
	}
	u, ok := i.authenticate(username, password)
	if !ok {
		writeJSON(w, http.StatusUnauthorized, errorResponse{Error: "invalid_grant"})
		return
	}
	tok, err := i.sign(u)
	if err != nil {
		i.log.Error("devidp: password grant", slog.Any("error", err))
		writeJSON(w, http.StatusInternalServerError, errorResponse{Error: "server_error"})
		return
	}
	writeJSON(w, http.StatusOK, tokenResponse{
		AccessToken: tok,
		IDToken:     tok,
		TokenType:   "Bearer",
		ExpiresIn:   int64(i.ttl.Seconds()),
	})
}

// tokenForUser answers a user's ID token as plain text, so a shell can do
// TOKEN=$(curl -s '…/token?user=alice'). Demo passwords are public anyway.
func (i *Issuer) tokenForUser(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("user")
	if name == "" {
		plain(w, http.StatusBadRequest, fmt.Sprintf("devidp: query parameter user is required (known: %s)\n", strings.Join(i.names, ", ")))
		return
	}
	tok, err := i.IDToken(name)
	if apperr.KindOf(err) == apperr.NotFound {
		plain(w, http.StatusNotFound, "devidp: "+err.Error()+"\n")
		return
	}
	if err != nil {
		i.log.Error("devidp: token for user", slog.Any("error", err))
		plain(w, http.StatusInternalServerError, "devidp: could not sign a token\n")
		return
	}
	plain(w, http.StatusOK, tok+"\n")
}

// writeJSON writes v; token endpoint answers must never be cached (RFC 6749 §5.1).
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func plain(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = fmt.Fprint(w, body)
}
