package auth

import (
	"context"
	"net/http"
	"strings"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/problem"
)

// realm names the protection space in WWW-Authenticate challenges.
const realm = "broker"

// maxAuthorizationBytes bounds the Authorization header: "Bearer " plus the
// longest accepted token.
const maxAuthorizationBytes = len("Bearer ") + MaxTokenBytes

// Middleware authenticates every request with its bearer token and puts the
// caller's Identity in the request context (see FromContext). Failures are
// answered with RFC 6750 challenges and problem+json: 401 for missing or bad
// tokens, 400 for a malformed or oversized Authorization header, 503 (with
// Retry-After, no challenge) while the provider has not been reached yet or
// cannot be reached to fetch the signing key a token names.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return authenticate(&v.rejecter, v.Verify, next)
}

// authenticate is the middleware of Verifier and Issuers: verify checks the
// bearer token; rj counts and logs refusals of the Authorization header.
func authenticate(rj *rejecter, verify func(context.Context, string) (Identity, error), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, errCode, err := rj.bearerToken(r)
		if err == nil {
			var id Identity
			if id, err = verify(r.Context(), raw); err == nil {
				next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), id)))
				return
			}
			errCode = "invalid_token"
		}
		writeError(w, r, errCode, err)
	})
}

// bearerToken extracts the token from the Authorization header. errCode is
// the RFC 6750 error code for the challenge ("" when the request simply
// carries no bearer credentials).
func (rj *rejecter) bearerToken(r *http.Request) (raw, errCode string, err error) {
	ctx := r.Context()
	values := r.Header.Values("Authorization")
	switch {
	case len(values) == 0 || values[0] == "":
		return "", "", rj.reject(ctx, reasonMissing, nil, "missing Authorization header; send Authorization: Bearer <ID token>")
	case len(values) > 1:
		return "", "invalid_request", rj.badRequest(ctx, reasonMalformed, "send exactly one Authorization header")
	case len(values[0]) > maxAuthorizationBytes:
		return "", "invalid_request", rj.badRequest(ctx, reasonTooLarge, "Authorization header is longer than 16 KiB; bearer tokens are at most 16384 bytes")
	}
	scheme, token, _ := strings.Cut(values[0], " ")
	if !strings.EqualFold(scheme, "Bearer") {
		// Never echo the scheme: a client that forgot "Bearer " sent its token there.
		return "", "", rj.reject(ctx, reasonScheme, nil, "Authorization header must use the Bearer scheme: Authorization: Bearer <ID token>")
	}
	token = strings.TrimSpace(token)
	if token == "" || strings.ContainsAny(token, " \t") {
		return "", "invalid_token", rj.reject(ctx, reasonMalformed, nil, "bearer token is empty or contains spaces")
	}
	return token, "", nil
}

// badRequest counts and logs a malformed Authorization header (400).
func (rj *rejecter) badRequest(ctx context.Context, reason, msg string) *apperr.Error {
	rj.metrics.rejections.WithLabelValues(reason).Inc()
	e := apperr.Field("Authorization", "%s", msg)
	rj.log.DebugContext(ctx, "bearer token rejected", "reason", reason, "error", e)
	return e
}

// writeError answers a failed authentication. Unauthorized and Invalid errors
// carry a Bearer challenge; errCode "" yields the bare challenge RFC 6750 §3.1
// prescribes for requests without bearer credentials.
func writeError(w http.ResponseWriter, r *http.Request, errCode string, err error) {
	switch apperr.KindOf(err) {
	case apperr.Unauthorized, apperr.Invalid:
		c := `Bearer realm="` + realm + `"`
		if errCode != "" {
			c += `, error="` + errCode + `"`
			if e, ok := apperr.As(err); ok {
				c += `, error_description="` + headerSafe(e.Message) + `"`
			}
		}
		w.Header().Set("WWW-Authenticate", c)
	case apperr.Unavailable:
		w.Header().Set("Retry-After", "5")
	}
	problem.Write(w, r, err)
}

// headerSafe keeps only the characters RFC 6750 allows in error_description.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			if r == '"' {
				return '\''
			}
			return -1
		}
		return r
	}, s)
}
