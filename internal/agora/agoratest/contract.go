// Package agoratest stands in for Agora in tests: a ban rule ("kicking rule")
// REST server that enforces Agora's documented contract and records every
// request that breaks it, and the signatures of Agora's NCS. It is test-only
// and knows nothing of package agora, so it cannot share that package's
// mistakes.
package agoratest

import (
	"cmp"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Path is the ban rule resource.
const Path = "/dev/v1/kicking-rule"

// RateLimit is Agora's limit on ban rule requests per account in any second.
const RateLimit = 10

// The documented ranges of a ban's duration. Agora clamps values outside
// them; the server counts such a value as a violation, because a client must
// not rely on clamping.
const (
	maxMinutes = 1440
	minSeconds = 10
	maxSeconds = 86430
)

// defaultSeconds is Agora's ban when a create names no duration.
const defaultSeconds = 3600

// privileges are the documented privilege names.
var privileges = []string{"join_channel", "publish_audio", "publish_video"}

// Rule is a ban rule as the server holds it.
type Rule struct {
	ID         int64
	OpID       int64 // Agora's operation id of the last change
	AppID      string
	Channel    string
	UID        uint32
	IP         string
	Seconds    int64 // the duration last set, in seconds
	Privileges []string
	Created    time.Time
	Updated    time.Time
	Expires    time.Time
}

// Server is a running contract server for one Agora account.
type Server struct {
	URL string // the base URL, for a client's BaseURL

	srv        *httptest.Server
	customerID string
	secret     string
	closing    chan struct{}
	closeOnce  sync.Once

	mu         sync.Mutex
	rules      map[int64]*Rule
	lastID     int64
	lastOpID   int64
	arrivals   []time.Time
	requests   int
	violations []string
	statuses   []int           // injected answers, one per coming request
	delays     []time.Duration // injected delays, one per coming request
	create504  int
}

// New starts a server for the account (customerID, secret) that is closed when
// the test ends, and fails the test then if any request broke the contract.
func New(t testing.TB, customerID, secret string) *Server {
	t.Helper()
	return checked(t, Start(customerID, secret))
}

// NewLoopback is New over plain HTTP on loopback, for a broker whose
// client cannot be handed the test certificate (the broker's own process,
// BROKER_AGORA_API_URL=http://127.0.0.1:…).
func NewLoopback(t testing.TB, customerID, secret string) *Server {
	t.Helper()
	return checked(t, start(customerID, secret, httptest.NewServer))
}

func checked(t testing.TB, s *Server) *Server {
	t.Cleanup(func() {
		s.Close()
		if v := s.Violations(); len(v) > 0 {
			t.Errorf("agoratest: %d request(s) broke Agora's documented contract:\n\t%s", len(v), strings.Join(v, "\n\t"))
		}
	})
	return s
}

// Start starts a server for the account (customerID, secret); Close stops it.
func Start(customerID, secret string) *Server {
	return start(customerID, secret, httptest.NewTLSServer)
}

func start(customerID, secret string, listen func(http.Handler) *httptest.Server) *Server {
	s := &Server{
		customerID: customerID,
		secret:     secret,
		closing:    make(chan struct{}),
		rules:      map[int64]*Rule{},
		lastID:     1000,
	}
	s.srv = listen(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Client returns an HTTP client that trusts the server's certificate.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Close stops the server; requests held by InjectDelay are answered at once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.srv.Close()
	})
}

// Violations returns what requests did against the contract, in order.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.violations)
}

// TakeViolations returns the violations so far and forgets them, for a test
// that breaks the contract on purpose.
func (s *Server) TakeViolations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.violations
	s.violations = nil
	return v
}

// Requests returns how many requests the server received.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Rules returns the rules the server holds for appID, expired ones included,
// by id.
func (s *Server) Rules(appID string) []Rule {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Rule
	for _, r := range s.rules {
		if r.AppID == appID {
			c := *r
			c.Privileges = slices.Clone(r.Privileges)
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Rule) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// InjectCreate504 makes the next create make its rule and then answer 504, as
// a gateway that timed out after Agora acted.
func (s *Server) InjectCreate504() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.create504++
}

// InjectStatus makes the next n requests be answered with status and nothing
// else done.
func (s *Server) InjectStatus(status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.statuses = append(s.statuses, status)
	}
}

// InjectDelay makes the next n requests be carried out and then answered only
// after d, or when the client gives up, or when the server closes.
func (s *Server) InjectDelay(n int, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.delays = append(s.delays, d)
	}
}

func (s *Server) violate(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violations = append(s.violations, fmt.Sprintf(format, args...))
}

// arrive counts a request and reports whether it is over the account's rate
// limit: more than RateLimit requests in the second up to now.
func (s *Server) arrive(now time.Time) (over bool) {
	s.requests++
	recent := s.arrivals[:0]
	for _, a := range s.arrivals {
		if a.After(now.Add(-time.Second)) {
			recent = append(recent, a)
		}
	}
	s.arrivals = append(recent, now)
	return len(s.arrivals) > RateLimit
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	s.mu.Lock()
	over := s.arrive(now)
	status, delay := 0, time.Duration(0)
	if len(s.statuses) > 0 {
		status, s.statuses = s.statuses[0], s.statuses[1:]
	} else if len(s.delays) > 0 {
		delay, s.delays = s.delays[0], s.delays[1:]
	}
	s.mu.Unlock()

	if over {
		s.violate("%s: more than %d requests within one second for account %q", r.Method, RateLimit, s.customerID)
	}
	switch {
	case status != 0:
		answerError(w, status, "injected failure")
		return
	case over:
		answerError(w, http.StatusTooManyRequests, "Too Many Requests")
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok || subtle.ConstantTimeCompare([]byte(id), []byte(s.customerID)) != 1 ||
		subtle.ConstantTimeCompare([]byte(secret), []byte(s.secret)) != 1 {
		s.violate("%s: no Basic authorization with the account's customer ID and secret", r.Method)
		answerError(w, http.StatusUnauthorized, "Invalid authentication credentials")
		return
	}
	if r.URL.Path != Path {
		s.violate("%s %s: the API is at %s", r.Method, r.URL.Path, Path)
		answerError(w, http.StatusNotFound, "Not Found")
		return
	}
	q := &check{}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		q.bad("Content-Type %q, want application/json", r.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		q.bad("body unreadable: %v", err)
	}
	var answer any
	switch r.Method {
	case http.MethodGet:
		answer = s.list(q, r, body, now)
	case http.MethodPost:
		answer = s.create(q, body, now)
	case http.MethodPut:
		answer = s.update(q, body, now)
	case http.MethodDelete:
		answer = s.delete(q, body)
	default:
		q.bad("method not in the API")
	}
	if len(q.problems) > 0 {
		for _, p := range q.problems {
			s.violate("%s: %s", r.Method, p)
		}
		answerError(w, http.StatusBadRequest, q.problems[0])
		return
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			// The client gave up: the answer never comes. Returning would
			// send an empty 200, which a client must never read as
			// Agora's answer; the connection is dropped instead.
			panic(http.ErrAbortHandler)
		case <-s.closing:
		}
	}
	if nf, ok := answer.(notFound); ok {
		answerError(w, http.StatusNotFound, string(nf))
		return
	}
	if _, ok := answer.(gatewayTimeout); ok {
		answerError(w, http.StatusGatewayTimeout, "Gateway Timeout")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(answer)
}

type notFound string

// gatewayTimeout is the answer of a create made under InjectCreate504.
type gatewayTimeout struct{}

func answerError(w http.ResponseWriter, status int, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": message})
}

// check collects what is wrong with one request.
type check struct{ problems []string }

func (q *check) bad(format string, args ...any) {
	q.problems = append(q.problems, fmt.Sprintf(format, args...))
}

// listedRule is a rule as the list answer shows it: absent fields are null,
// times are UTC with milliseconds.
type listedRule struct {
	ID         int64    `json:"id"`
	AppID      string   `json:"appid"`
	UID        *uint32  `json:"uid"`
	OpID       int64    `json:"opid"`
	Cname      *string  `json:"cname"`
	IP         *string  `json:"ip"`
	TS         string   `json:"ts"`
	Privileges []string `json:"privileges"`
	CreateAt   string   `json:"createAt"`
	UpdateAt   string   `json:"updateAt"`
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func (s *Server) list(q *check, r *http.Request, body []byte, now time.Time) any {
	if len(body) > 0 {
		q.bad("a list takes no body")
	}
	query := r.URL.Query()
	for k := range query {
		if k != "appid" {
			q.bad("unknown query parameter %q", k)
		}
	}
	appIDs := query["appid"]
	if len(appIDs) != 1 {
		q.bad("want exactly one appid query parameter, got %d", len(appIDs))
		return nil
	}
	checkAppID(q, appIDs[0])
	if len(q.problems) > 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rules := []listedRule{}
	for _, rule := range s.rules {
		if rule.AppID != appIDs[0] || !rule.Expires.After(now) {
			continue
		}
		l := listedRule{
			ID: rule.ID, AppID: rule.AppID, OpID: rule.OpID, TS: stamp(rule.Expires),
			Privileges: slices.Clone(rule.Privileges), CreateAt: stamp(rule.Created), UpdateAt: stamp(rule.Updated),
		}
		if rule.UID != 0 {
			l.UID = &rule.UID
		}
		if rule.Channel != "" {
			l.Cname = &rule.Channel
		}
		if rule.IP != "" {
			l.IP = &rule.IP
		}
		rules = append(rules, l)
	}
	slices.SortFunc(rules, func(a, b listedRule) int { return cmp.Compare(a.ID, b.ID) })
	return map[string]any{"status": "success", "rules": rules}
}

func (s *Server) create(q *check, body []byte, now time.Time) any {
	o := parseObject(q, body, "appid", "cname", "uid", "ip", "time", "time_in_seconds", "privileges")
	if o == nil {
		return nil
	}
	rule := &Rule{Created: now, Updated: now, Privileges: []string{"join_channel"}}
	if appID, ok := o.str(q, "appid", true); ok {
		checkAppID(q, appID)
		rule.AppID = appID
	}
	if c, ok := o.str(q, "cname", false); ok {
		if c == "" || len(c) > 63 {
			q.bad("cname %q: a channel name is 1 to 63 bytes; omit cname for every channel", c)
		}
		rule.Channel = c
	}
	if uid, ok := o.integer(q, "uid"); ok {
		if uid < 1 || uid > 1<<32-1 {
			q.bad("uid %d: must be a 32-bit uid and not 0", uid)
		}
		rule.UID = uint32(uid)
	}
	if ip, ok := o.str(q, "ip", false); ok {
		if _, err := netip.ParseAddr(ip); err != nil || ip == "0" {
			q.bad("ip %q is not an IP address", ip)
		}
		rule.IP = ip
	}
	if _, c := o["cname"]; !c {
		if _, u := o["uid"]; !u {
			if _, i := o["ip"]; !i {
				q.bad("no cname, uid or ip: the rule would ban every user of the app")
			}
		}
	}
	secs, ok := duration(q, o)
	if !ok {
		secs = defaultSeconds
	}
	rule.Seconds, rule.Expires = secs, now.Add(time.Duration(secs)*time.Second)
	if raw, present := o["privileges"]; present {
		var ps []string
		if json.Unmarshal(raw, &ps) != nil || ps == nil {
			q.bad("privileges must be an array of strings")
		} else if len(ps) == 0 {
			q.bad("privileges is empty")
		}
		for i, p := range ps {
			if !slices.Contains(privileges, p) {
				q.bad("privilege %q is not one of %v", p, privileges)
			}
			if slices.Contains(ps[:i], p) {
				q.bad("privilege %q twice", p)
			}
		}
		rule.Privileges = ps
	}
	if len(q.problems) > 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastID++
	s.lastOpID++
	rule.ID, rule.OpID = s.lastID, s.lastOpID
	s.rules[rule.ID] = rule
	if s.create504 > 0 {
		s.create504--
		return gatewayTimeout{}
	}
	return map[string]any{"status": "success", "id": rule.ID}
}

func (s *Server) update(q *check, body []byte, now time.Time) any {
	o := parseObject(q, body, "appid", "id", "time", "time_in_seconds")
	if o == nil {
		return nil
	}
	appID, _ := o.str(q, "appid", true)
	checkAppID(q, appID)
	id, ok := o.integer(q, "id")
	if !ok {
		q.bad("id is required")
	}
	secs, ok := duration(q, o)
	if !ok {
		secs = defaultSeconds
	}
	if len(q.problems) > 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rule := s.rules[id]
	if rule == nil || rule.AppID != appID {
		return notFound(fmt.Sprintf("rule %d not found", id))
	}
	s.lastOpID++
	rule.OpID = s.lastOpID
	rule.Seconds, rule.Updated, rule.Expires = secs, now, now.Add(time.Duration(secs)*time.Second)
	return map[string]any{"status": "success", "result": map[string]any{"id": id, "ts": stamp(rule.Expires)}}
}

func (s *Server) delete(q *check, body []byte) any {
	o := parseObject(q, body, "appid", "id")
	if o == nil {
		return nil
	}
	appID, _ := o.str(q, "appid", true)
	checkAppID(q, appID)
	id, ok := o.integer(q, "id")
	if !ok {
		q.bad("id is required")
	}
	if len(q.problems) > 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rule := s.rules[id]
	if rule == nil || rule.AppID != appID {
		return notFound(fmt.Sprintf("rule %d not found", id))
	}
	s.lastOpID++
	delete(s.rules, id)
	return map[string]any{"status": "success", "id": id}
}

// duration reads time or time_in_seconds, in seconds; ok is false when the
// body has neither.
func duration(q *check, o object) (secs int64, ok bool) {
	minutes, hasTime := o.integer(q, "time")
	seconds, hasSeconds := o.integer(q, "time_in_seconds")
	switch {
	case hasTime && hasSeconds:
		q.bad("both time and time_in_seconds: use one")
		return seconds, true
	case hasTime:
		if minutes < 0 || minutes > maxMinutes {
			q.bad("time %d outside [0, %d] minutes (Agora would clamp it)", minutes, maxMinutes)
		}
		return minutes * 60, true
	case hasSeconds:
		if seconds != 0 && (seconds < minSeconds || seconds > maxSeconds) {
			q.bad("time_in_seconds %d outside {0} ∪ [%d, %d] (Agora would clamp it)", seconds, minSeconds, maxSeconds)
		}
		return seconds, true
	}
	return 0, false
}

func checkAppID(q *check, appID string) {
	if len(appID) != 32 || strings.IndexFunc(appID, func(r rune) bool {
		return !('0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F')
	}) >= 0 {
		q.bad("appid %q is not 32 hexadecimal digits", appID)
	}
}

// object is a JSON request body, field by field.
type object map[string]json.RawMessage

// parseObject reads body as one JSON object of the allowed fields only.
func parseObject(q *check, body []byte, allowed ...string) object {
	var o object
	if err := json.Unmarshal(body, &o); err != nil || o == nil {
		q.bad("body is not one JSON object")
		return nil
	}
	for k := range o {
		if !slices.Contains(allowed, k) {
			q.bad("unknown field %q", k)
		}
	}
	return o
}

// str returns the string field name; a required one must be present.
func (o object) str(q *check, name string, required bool) (string, bool) {
	raw, ok := o[name]
	if !ok {
		if required {
			q.bad("%s is required", name)
		}
		return "", false
	}
	var s string
	if !strings.HasPrefix(string(raw), `"`) || json.Unmarshal(raw, &s) != nil {
		q.bad("%s must be a string, got %s", name, raw)
		return "", false
	}
	return s, true
}

// integer returns the integer field name when present.
func (o object) integer(q *check, name string) (int64, bool) {
	raw, ok := o[name]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		q.bad("%s must be an integer number, got %s", name, raw)
		return 0, false
	}
	return n, true
}
