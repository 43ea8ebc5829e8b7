package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/broker"
	"github.com/broker-dev/broker/internal/problem"
)

// tokenResponse is the JSON answer of every token route: the seed's field
// names (rtcToken, rtmToken, token) plus what the tokens are bound to.
type tokenResponse struct {
	RTCToken   string `json:"rtcToken,omitempty"`
	RTMToken   string `json:"rtmToken,omitempty"`
	ChatToken  string `json:"chatToken,omitempty"`
	Token      string `json:"token,omitempty"`
	UID        uint32 `json:"uid,omitempty"`
	Account    string `json:"account,omitempty"`
	RTMUser    string `json:"rtmUser,omitempty"`
	ChatUser   string `json:"chatUser,omitempty"`
	Channel    string `json:"channel,omitempty"`
	Role       string `json:"role,omitempty"`
	TTLSeconds int64  `json:"ttlSeconds"`
	ExpiresAt  string `json:"expiresAt"`
	// Project and AppID: the Agora project the tokens are for, and the App
	// ID to join with.
	Project string `json:"project"`
	AppID   string `json:"appId"`
}

func newTokenResponse(g broker.Grant) tokenResponse {
	return tokenResponse{
		RTCToken: g.RTCToken, RTMToken: g.RTMToken, ChatToken: g.ChatToken, UID: g.UID, Account: g.Account,
		RTMUser: g.RTMUser, ChatUser: g.ChatUser,
		Channel: g.Channel, Role: string(g.Role), TTLSeconds: int64(g.TTL / time.Second),
		ExpiresAt: g.ExpiresAt.UTC().Format(time.RFC3339), Project: g.Project, AppID: g.AppID,
	}
}

// RecordHeader names the issuance log records of a grant (their seq, one
// per token, comma-separated): a receipt whose inclusion proof the log
// serves (GET /v1/audit/records/{seq}/proof).
const RecordHeader = "Broker-Record"

// projectPrefix starts the path of every token route for a named project:
// /p/{project}/rtc/…, /p/{project}/v1/tokens.
const projectPrefix = "/p/"

// issue runs req through the broker for the authenticated caller and writes
// either the grant (shaped by respond) or a problem. A request the handler
// could not read goes through the broker too (req.Malformed), so that it is
// recorded like every other invalid request.
func issue(b Issuer, w http.ResponseWriter, r *http.Request, req broker.Request, respond func(broker.Grant) any) {
	id, ok := auth.FromContext(r.Context())
	if !ok {
		problem.Write(w, r, apperr.New(apperr.Unauthorized, "no authenticated caller"))
		return
	}
	// The project: the path's (/p/{project}/…), the body's ("project") or
	// the token URL's, which must agree.
	for _, named := range []string{chi.URLParam(r, "project"), tokenURLProject(r)} {
		switch {
		case named == "" || req.Malformed != nil:
		case req.Project == "":
			req.Project = named
		case req.Project != named:
			req.Malformed = apperr.Field("project", "the request names project %q and %q; name one", clip(req.Project), clip(named))
		}
	}
	if u, ok := tokenURLFrom(r.Context()); ok {
		req.Via, req.DowngradeToSubscriber = "token URL "+u.ID, u.Downgrade
	}
	req.RequestID = middleware.GetReqID(r.Context())
	req.ClientIP = clientIP(r)
	req.UserAgent = r.UserAgent()
	if rctx := chi.RouteContext(r.Context()); rctx != nil {
		req.Route = rctx.RoutePattern()
	}
	g, err := b.Issue(r.Context(), id, req)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	if len(g.Records) > 0 {
		seqs := make([]string, len(g.Records))
		for i, n := range g.Records {
			seqs[i] = strconv.FormatInt(n, 10)
		}
		w.Header().Set(RecordHeader, strings.Join(seqs, ", "))
	}
	writeJSON(w, http.StatusOK, respond(g))
}

// pathParam returns a path parameter, percent-decoded exactly once: the
// router matches the escaped path (routeOnEscapedPath), so every parameter
// arrives escaped, and "%252A" is the literal "%2A", never "*".
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v // unreachable: net/http only accepts validly escaped paths
}

// seedUID reads a uid as the seed's clients send it: besides 0…2³²−1, a
// value from −2³¹ to −1 is the same 32 bits held in a signed integer (Kotlin
// Int, Java int), i.e. the uid 2³² plus it. Anything else passes unchanged,
// for the broker to judge.
func seedUID(s string) string {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n < 0 && n >= math.MinInt32 {
		return strconv.FormatUint(uint64(uint32(int32(n))), 10)
	}
	return s
}

// rtcUser is the uid or account of a seed route: a uid in seedUID's form.
func rtcUser(tokenType, user string) string {
	if tokenType == broker.TokenTypeUID {
		return seedUID(user)
	}
	return user
}

// seedRTC serves GET /rtc/{channel}/{role}/{tokentype}/{uid}.
func seedRTC(b Issuer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tt := pathParam(r, "tokentype")
		req := broker.Request{Service: broker.RTC, Channel: pathParam(r, "channel"), Role: pathParam(r, "role"),
			TokenType: tt, User: rtcUser(tt, pathParam(r, "uid")), Expiry: r.URL.Query().Get("expiry")}
		issue(b, w, r, req, func(g broker.Grant) any { return newTokenResponse(g) })
	}
}

// seedRTM serves GET /rtm/{uid}.
func seedRTM(b Issuer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req := broker.Request{Service: broker.RTM, User: pathParam(r, "uid"), Expiry: r.URL.Query().Get("expiry")}
		issue(b, w, r, req, func(g broker.Grant) any { return newTokenResponse(g) })
	}
}

// seedRTE serves GET /rte/{channel}/{role}/{tokentype}/{uid} (an RTC token
// and an RTM token for the same user) and .../{uid}/{rtmuid} (the RTM token
// for a separate RTM id).
func seedRTE(b Issuer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tt := pathParam(r, "tokentype")
		req := broker.Request{Service: broker.RTCAndRTM, Channel: pathParam(r, "channel"), Role: pathParam(r, "role"),
			TokenType: tt, User: rtcUser(tt, pathParam(r, "uid")), RTMUser: pathParam(r, "rtmuid"), Expiry: r.URL.Query().Get("expiry")}
		issue(b, w, r, req, func(g broker.Grant) any { return newTokenResponse(g) })
	}
}

// seedChatUser serves GET /chat/account/{chatid}: a Chat user token for the
// caller's own account or uid.
func seedChatUser(b Issuer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req := broker.Request{Service: broker.Chat, User: pathParam(r, "chatid"), Expiry: r.URL.Query().Get("expiry")}
		issue(b, w, r, req, func(g broker.Grant) any { return newTokenResponse(g) })
	}
}

// seedChatApp serves GET /chat/app: a Chat app token, for holders of read on
// api:chat-app only.
func seedChatApp(b Issuer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req := broker.Request{Service: broker.ChatApp, Expiry: r.URL.Query().Get("expiry")}
		issue(b, w, r, req, func(g broker.Grant) any { return newTokenResponse(g) })
	}
}

// flexString accepts a JSON string or number, as the seed's clients send uid
// and expire either way.
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return errors.New("must be a string or a number")
	}
	*f = flexString(n.String())
	return nil
}

// getTokenRequest is the seed's POST /getToken body.
type getTokenRequest struct {
	TokenType string     `json:"tokenType"`
	Channel   string     `json:"channel"`
	Role      flexString `json:"role"`
	UID       flexString `json:"uid"`
	Expire    flexString `json:"expire"`
}

// seedGetToken serves POST /getToken: tokenType rtc (uid when numeric, else
// account) or rtm; the answer's token is in "token".
func seedGetToken(b Issuer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body getTokenRequest
		if err := decodeJSON(r, &body); err != nil {
			issue(b, w, r, broker.Request{Malformed: err}, nil)
			return
		}
		req := broker.Request{Channel: body.Channel, Role: string(body.Role), User: string(body.UID), Expiry: string(body.Expire)}
		switch body.TokenType {
		case "rtc":
			req.Service, req.TokenType = broker.RTC, broker.TokenTypeAccount
			if u := seedUID(req.User); u != req.User || isDecimal(u) {
				req.TokenType, req.User = broker.TokenTypeUID, u
			}
		case "rtm":
			req.Service = broker.RTM
		case "chat":
			// The seed's chat tokenType: a user token for uid, an app token
			// when no uid is given.
			req.Service = broker.Chat
			if req.User == "" {
				req.Service = broker.ChatApp
			}
		default:
			req.Malformed = apperr.Field("tokenType", "must be rtc, rtm or chat")
		}
		issue(b, w, r, req, func(g broker.Grant) any {
			resp := newTokenResponse(g)
			resp.Token, resp.RTCToken, resp.RTMToken, resp.ChatToken = g.RTCToken+g.RTMToken+g.ChatToken, "", "", ""
			return resp
		})
	}
}

// v1TokenRequest is the body of POST /v1/tokens.
type v1TokenRequest struct {
	Service       string     `json:"service"`
	Channel       string     `json:"channel"`
	Role          string     `json:"role"`
	UID           *uint64    `json:"uid"`
	Account       string     `json:"account"`
	RTMUser       string     `json:"rtmUser"`
	ExpirySeconds flexString `json:"expirySeconds"`
	Project       string     `json:"project"`
}

// v1Tokens serves POST /v1/tokens. Exactly one of uid and account names the
// RTC user.
func v1Tokens(b Issuer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body v1TokenRequest
		if err := decodeJSON(r, &body); err != nil {
			issue(b, w, r, broker.Request{Malformed: err}, nil)
			return
		}
		req := broker.Request{Service: broker.Service(body.Service), Channel: body.Channel, Role: body.Role,
			RTMUser: body.RTMUser, Expiry: string(body.ExpirySeconds), Project: body.Project}
		if req.Service == "" {
			req.Service = broker.RTC
		}
		switch {
		case body.UID != nil && body.Account != "":
			req.Malformed = apperr.Field("uid", "give either uid or account, not both")
		case body.UID != nil:
			req.TokenType, req.User = broker.TokenTypeUID, strconv.FormatUint(*body.UID, 10)
		case body.Account != "":
			req.TokenType, req.User = broker.TokenTypeAccount, body.Account
		case req.Service != broker.RTM:
			req.Malformed = apperr.Field("uid", "uid or account is required")
		}
		issue(b, w, r, req, func(g broker.Grant) any { return newTokenResponse(g) })
	}
}

// isDecimal reports whether s is a non-negative whole number.
func isDecimal(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

// meResponse is GET /v1/me: who the caller is and what they are bound to.
type meResponse struct {
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
	// RuleSubject is how policy rules name the caller: user:<sub> for the
	// default issuer's users, user:<issuer name>/<sub> for the others'.
	RuleSubject    string   `json:"ruleSubject"`
	Account        string   `json:"account"`
	AccountError   string   `json:"accountError,omitempty"`
	UID            uint32   `json:"uid"`
	ScreenShareUID uint32   `json:"screenShareUid"`
	Groups         []string `json:"groups"`
	GroupsError    string   `json:"groupsError,omitempty"`
	Email          string   `json:"email,omitempty"`
	// Projects are the Agora projects the caller's identity provider may
	// use.
	Projects []string `json:"projects"`
}

// me serves GET /v1/me, with the caller's bound uid.
func me(b Issuer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := auth.FromContext(r.Context())
		if !ok {
			problem.Write(w, r, apperr.New(apperr.Unauthorized, "no authenticated caller"))
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
		groups := id.Groups
		if groups == nil {
			groups = []string{}
		}
		writeJSON(w, http.StatusOK, meResponse{Issuer: id.Issuer, Subject: id.Subject, RuleSubject: "user:" + id.PolicySubject(), Account: id.Account,
			AccountError: broker.AccountProblem(id, uid), UID: uid, ScreenShareUID: ss, Groups: groups, GroupsError: id.GroupsError, Email: id.Email,
			Projects: nonNil(b.Projects(id.Qualifier))})
	}
}

// nonNil returns s, or an empty slice for nil (a JSON [] rather than null).
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// decodeJSON decodes one JSON object from the body into v, strictly: unknown
// fields, trailing data and oversized bodies are errors the client can act on.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return apperr.New(apperr.TooLarge, "request body larger than %d bytes", mbe.Limit)
		case errors.As(err, &se):
			return apperr.New(apperr.Invalid, "body is not valid JSON (at byte %d)", se.Offset)
		case errors.As(err, &te):
			return apperr.Field(te.Field, "has the wrong type: want %s", te.Type)
		case err.Error() == "EOF":
			return apperr.New(apperr.Invalid, "body is empty; a JSON object is required")
		default:
			return apperr.New(apperr.Invalid, "body: %s", err.Error())
		}
	}
	if dec.More() {
		return apperr.New(apperr.Invalid, "body has data after the JSON object")
	}
	return nil
}
