// Package agora talks to Agora's cloud and hears from it: the ban ("kicking rule") REST API of an
// account and the signed notifications of Agora's Notification Center Service (NCS); nothing else.
package agora

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/token"
)

// DefaultBaseURL is where Agora serves its REST APIs.
const DefaultBaseURL = "https://api.agora.io"

// rulePath is the ban rule resource under the base URL.
const rulePath = "/dev/v1/kicking-rule"

// The range of a ban's duration: Agora's time_in_seconds. Agora clamps a value
// outside it; the client refuses one instead, so a ban is never silently
// shorter (or longer) than asked.
const (
	MinBan = 10 * time.Second
	MaxBan = 86430 * time.Second
)

// RequestTimeout bounds one HTTP exchange with Agora. Agora asks for at least
// 20 s on create: a shorter timeout loses answers that carry a rule's id.
const RequestTimeout = 20 * time.Second

// backoff is the pause before each retry; its length is the number of retries.
var backoff = [...]time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second}

// expiryTolerance absorbs the precision of the expiry time in Agora's rule
// list when the client decides whether a rule it adopted lasts long enough.
const expiryTolerance = time.Second

// maxAnswerBytes bounds what the client reads of one answer (a long rule list).
const maxAnswerBytes = 8 << 20

// Privilege is what a ban takes away.
type Privilege string

// The privileges a ban can take away.
const (
	JoinChannel  Privilege = "join_channel"  // joining a channel; users inside are kicked out
	PublishAudio Privilege = "publish_audio" // publishing audio
	PublishVideo Privilege = "publish_video" // publishing video
)

// Rule is one ban: who (a channel, a uid, an IP address, or a combination; at
// least one) loses which privileges, for how long.
type Rule struct {
	ID         int64 // Agora's id; set by ListRules, ignored by CreateRule
	AppID      string
	Channel    string        // "": every channel of the app
	UID        uint32        // 0: every user
	IP         string        // "": every address
	Duration   time.Duration // CreateRule only: rounded up to whole seconds, MinBan … MaxBan
	Privileges []Privilege   // CreateRule defaults to JoinChannel
	Expires    time.Time     // set by ListRules; zero when Agora's answer has no readable time
}

// Config says which Agora account a Client acts for. The customer ID and
// secret are the account's RESTful API credentials (not an App ID or
// certificate). Printing or logging a Config never shows the secret.
type Config struct {
	BaseURL        string       // default DefaultBaseURL; must be https
	CustomerID     string       // required
	CustomerSecret string       // required
	HTTP           *http.Client // default: one that follows no redirects
}

// String describes c without its secret.
func (c Config) String() string {
	return fmt.Sprintf("agora.Config{BaseURL:%q CustomerID:%q CustomerSecret:[redacted]}", c.BaseURL, c.CustomerID)
}

// GoString describes c without its secret, for %#v.
func (c Config) GoString() string { return c.String() }

// LogValue describes c to log/slog without its secret.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("baseURL", c.BaseURL), slog.String("customerID", c.CustomerID))
}

// Client manages ban rules through Agora's REST API. It waits for Agora's rate
// limit (shared by every Client of the same customer ID in the process), bounds
// each exchange by RequestTimeout, and retries 408, 429, 5xx and transport failures
// up to three times with growing pauses. Its errors are *apperr.Error: Invalid
// for input refused before sending or refused by Agora, NotFound for an unknown
// rule, Unavailable when Agora cannot be reached, fails, or refuses the
// account's credentials (never Unauthorized: the broker's caller did nothing
// wrong). No error carries the secret. A Client is safe for concurrent use.
type Client struct {
	endpoint string
	cred     *credentials // behind a pointer, so that printing a Client shows no secret
	http     *http.Client
	limit    *limiter
}

type credentials struct {
	header string // the Authorization header
	secret string
}

// scrub removes the credentials from text that came from elsewhere.
func (c *credentials) scrub(s string) string {
	s = strings.ReplaceAll(s, c.secret, "[redacted]")
	return strings.ReplaceAll(s, strings.TrimPrefix(c.header, "Basic "), "[redacted]")
}

// CheckBaseURL checks the base URL of Agora's RESTful API: https, or plain
// http on loopback only (a contract server in tests): every request
// carries the customer secret.
func CheckBaseURL(base string) error {
	// The parse error would quote the URL; it is left out in case the URL
	// holds a credential.
	u, err := url.Parse(base)
	switch {
	case err != nil:
		return apperr.Field("baseURL", "is not a URL")
	case u.User != nil:
		return apperr.Field("baseURL", "must not carry credentials; set CustomerID and CustomerSecret")
	case u.Host == "" || (u.Scheme != "https" && (u.Scheme != "http" || !loopback(u.Hostname()))):
		return apperr.Field("baseURL", "must be an https URL: Agora serves its API over HTTPS only, and every request carries the customer secret (plain http only on loopback, for a contract server)")
	case u.RawQuery != "" || u.Fragment != "":
		return apperr.Field("baseURL", "must have no query or fragment")
	}
	return nil
}

// loopback reports whether host is localhost or a loopback address.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// NewClient returns a Client for the account in cfg.
func NewClient(cfg Config) (*Client, error) {
	if cfg.CustomerID == "" || strings.ContainsRune(cfg.CustomerID, ':') {
		return nil, apperr.Field("customerID", "must be set and contain no ':'")
	}
	if cfg.CustomerSecret == "" {
		return nil, apperr.Field("customerSecret", "must be set")
	}
	base := cmp.Or(cfg.BaseURL, DefaultBaseURL)
	if err := CheckBaseURL(base); err != nil {
		return nil, err
	}
	hc := cfg.HTTP
	if hc == nil {
		hc = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return &Client{
		endpoint: strings.TrimSuffix(base, "/") + rulePath,
		cred: &credentials{
			header: "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.CustomerID+":"+cfg.CustomerSecret)),
			secret: cfg.CustomerSecret,
		},
		http:  hc,
		limit: limiterFor(cfg.CustomerID),
	}, nil
}

// CreateRule bans r.Privileges for r.Duration and returns the new rule's id.
//
// When a create times out or fails in a way that may hide a success (a 504,
// another 5xx but 503, a broken connection), the client lists the app's rules
// and adopts the newest one with the same app, channel, uid, IP and privileges
// before it creates again, so that one call never makes two rules. A rule it
// adopts that ends too early is extended to r.Duration. If that extension
// fails, CreateRule returns the adopted id with the error: the rule exists but
// may end early. Otherwise the id is 0 whenever the error is not nil.
func (c *Client) CreateRule(ctx context.Context, r Rule) (int64, error) {
	const op = "agora: create ban rule"
	want, body, err := newCreate(r)
	if err != nil {
		return 0, err
	}
	sentAt := time.Now()
	var last result
	uncertain := false // an earlier create may have made the rule
	halt := func(ctxErr error) error {
		if uncertain {
			return apperr.Wrap(apperr.Unavailable, errors.Join(ctxErr, last.err), op+": stopped before Agora confirmed the rule; it may exist")
		}
		return stopped(op, ctxErr, last.err)
	}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := pause(ctx, attempt); err != nil {
				return 0, halt(err)
			}
		}
		if uncertain {
			id, res := c.adopt(ctx, want, sentAt)
			switch {
			case id != 0 || res.err != nil && !res.retry:
				return id, res.err
			case res.err != nil: // the list failed; creating again might make a second rule
				last = res
				if attempt == len(backoff) {
					return 0, maybeMade(op, res.err)
				}
				continue
			}
			uncertain = false
		}
		var ans struct {
			ID int64 `json:"id"`
		}
		status, data, xerr := c.exchange(ctx, http.MethodPost, "", body)
		last = c.judge(ctx, op, status, data, xerr, &ans)
		if last.err == nil {
			if ans.ID > 0 {
				return ans.ID, nil
			}
			last = result{err: apperr.New(apperr.Unavailable, "%s: Agora answered without a rule id", op), uncertain: true}
		}
		uncertain = last.uncertain
		if (!last.retry && !uncertain) || attempt == len(backoff) {
			break
		}
	}
	if !uncertain {
		return 0, last.err
	}
	// Out of retries after a create that may have worked: one last look.
	if err := pause(ctx, len(backoff)); err != nil {
		return 0, halt(err)
	}
	id, res := c.adopt(ctx, want, sentAt)
	if id != 0 || res.err != nil && !res.retry {
		return id, res.err
	}
	return 0, maybeMade(op, last.err)
}

// maybeMade says that a create may have made a rule the client cannot see.
func maybeMade(op string, cause error) error {
	return apperr.Wrap(apperr.Unavailable, cause, op+": Agora did not confirm the rule and it could not be found; it may exist")
}

// adopt looks, in one exchange, for a rule that an earlier attempt to create
// want may have made. It returns the rule's id, or 0 when there is none or the
// list failed (then the result says whether to try again).
func (c *Client) adopt(ctx context.Context, want Rule, sentAt time.Time) (int64, result) {
	rules, res := c.listOnce(ctx, want.AppID)
	if res.err != nil {
		if res.retry {
			return 0, res
		}
		return 0, result{err: maybeMade("agora: create ban rule", res.err)}
	}
	var found *Rule
	for i := range rules {
		if sameScope(rules[i], want) && (found == nil || rules[i].ID > found.ID) {
			found = &rules[i]
		}
	}
	if found == nil {
		return 0, result{}
	}
	// The newest match may be an older ban of the same scope (the one the
	// create made is missing from the list, or the create failed); it must
	// still last as long as asked.
	if !found.Expires.IsZero() && found.Expires.Before(sentAt.Add(want.Duration-expiryTolerance)) {
		if err := c.UpdateRule(ctx, want.AppID, found.ID, want.Duration); err != nil {
			return found.ID, result{err: apperr.Wrap(apperr.Unavailable, err, fmt.Sprintf("agora: create ban rule: found rule %d but could not extend it; it may end early", found.ID))}
		}
	}
	return found.ID, result{}
}

// sameScope reports whether got bans what want bans.
func sameScope(got, want Rule) bool {
	if !strings.EqualFold(got.AppID, want.AppID) || got.Channel != want.Channel || got.UID != want.UID || !sameIP(got.IP, want.IP) {
		return false
	}
	a, b := slices.Clone(got.Privileges), slices.Clone(want.Privileges)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

func sameIP(a, b string) bool {
	x, errX := netip.ParseAddr(a)
	y, errY := netip.ParseAddr(b)
	if errX == nil && errY == nil {
		return x.Unmap() == y.Unmap()
	}
	return a == b
}

// ListRules returns the ban rules of the app appID. Agora answers lists with
// a lower priority than changes and may leave rules out when the network is
// poor; keep the ids CreateRule returns rather than relying on a list.
func (c *Client) ListRules(ctx context.Context, appID string) ([]Rule, error) {
	if err := checkAppID(appID); err != nil {
		return nil, err
	}
	var rules []Rule
	res := c.retry(ctx, "agora: list ban rules", func() result {
		var res result
		rules, res = c.listOnce(ctx, appID)
		return res
	})
	return rules, res.err
}

// listOnce asks for the rules of appID once.
func (c *Client) listOnce(ctx context.Context, appID string) ([]Rule, result) {
	var ans struct {
		Rules []listedRule `json:"rules"`
	}
	status, data, xerr := c.exchange(ctx, http.MethodGet, "appid="+url.QueryEscape(appID), nil)
	res := c.judge(ctx, "agora: list ban rules", status, data, xerr, &ans)
	if res.err != nil {
		return nil, res
	}
	rules := make([]Rule, 0, len(ans.Rules))
	for _, l := range ans.Rules {
		rules = append(rules, Rule{
			ID: l.ID, AppID: l.AppID, Channel: l.Cname, UID: uint32(l.UID), IP: l.IP,
			Privileges: l.Privileges, Expires: time.Time(l.TS),
		})
	}
	return rules, result{}
}

// listedRule is one rule as Agora lists it. Only the id is required; the
// other fields are read leniently (null, absent, a number as a string).
type listedRule struct {
	ID         int64       `json:"id"`
	AppID      string      `json:"appid"`
	UID        lenientUID  `json:"uid"`
	Cname      string      `json:"cname"`
	IP         string      `json:"ip"`
	TS         lenientTime `json:"ts"`
	Privileges []Privilege `json:"privileges"`
}

// lenientUID reads a uid given as a number, a string of digits, or null.
type lenientUID uint32

func (u *lenientUID) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "null" || s == "" {
		return nil
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return fmt.Errorf("uid %.40s is not a 32-bit unsigned integer", b)
	}
	*u = lenientUID(v)
	return nil
}

// lenientTime reads an expiry time that Agora documents only as "the UTC
// time": RFC 3339, "2006-01-02 15:04:05" (taken as UTC), or Unix seconds or
// milliseconds. Anything else reads as the zero time, not as an error: a rule
// with an unreadable time is still a rule.
type lenientTime time.Time

func (t *lenientTime) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n > 1e12 {
			*t = lenientTime(time.UnixMilli(n).UTC())
		} else if n > 0 {
			*t = lenientTime(time.Unix(n, 0).UTC())
		}
		return nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02T15:04:05"} {
		if v, err := time.Parse(layout, s); err == nil {
			*t = lenientTime(v.UTC())
			return nil
		}
	}
	return nil
}

// UpdateRule sets the rule id of appID to end d from now (rounded up to whole
// seconds, MinBan … MaxBan).
func (c *Client) UpdateRule(ctx context.Context, appID string, id int64, d time.Duration) error {
	if err := checkAppID(appID); err != nil {
		return err
	}
	if id <= 0 {
		return apperr.Field("id", "must be a positive rule id")
	}
	secs, err := banSeconds(d)
	if err != nil {
		return err
	}
	body, err := json.Marshal(struct {
		AppID         string `json:"appid"`
		ID            int64  `json:"id"`
		TimeInSeconds int64  `json:"time_in_seconds"`
	}{appID, id, secs})
	if err != nil {
		return apperr.Wrap(apperr.Internal, err, "agora: encode update")
	}
	return c.send(ctx, "agora: update ban rule", http.MethodPut, body).err
}

// DeleteRule deletes the rule id of appID, lifting its ban. It returns a
// NotFound error for a rule Agora does not know, unless an earlier attempt of
// the same call may have deleted it.
func (c *Client) DeleteRule(ctx context.Context, appID string, id int64) error {
	if err := checkAppID(appID); err != nil {
		return err
	}
	if id <= 0 {
		return apperr.Field("id", "must be a positive rule id")
	}
	body, err := json.Marshal(struct {
		AppID string `json:"appid"`
		ID    int64  `json:"id"`
	}{appID, id})
	if err != nil {
		return apperr.Wrap(apperr.Internal, err, "agora: encode delete")
	}
	res := c.send(ctx, "agora: delete ban rule", http.MethodDelete, body)
	if res.err != nil && res.earlierUncertain && apperr.KindOf(res.err) == apperr.NotFound {
		return nil
	}
	return res.err
}

// send sends a change (PUT or DELETE) with retries and checks its answer.
func (c *Client) send(ctx context.Context, op, method string, body []byte) result {
	return c.retry(ctx, op, func() result {
		status, data, xerr := c.exchange(ctx, method, "", body)
		return c.judge(ctx, op, status, data, xerr, nil)
	})
}

// result is how one exchange ended, and what the retry loop needs to know.
type result struct {
	err              error
	retry            bool // the same request may succeed if sent again
	uncertain        bool // Agora may have carried the request out
	earlierUncertain bool // set by retry: an earlier attempt may have been carried out
}

// retry runs try until it succeeds, fails for good or the retries are spent.
func (c *Client) retry(ctx context.Context, op string, try func() result) result {
	var last result
	earlier := false
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := pause(ctx, attempt); err != nil {
				return result{err: stopped(op, err, last.err), earlierUncertain: earlier}
			}
		}
		last = try()
		last.earlierUncertain = earlier
		if last.err == nil || !last.retry || attempt == len(backoff) {
			return last
		}
		earlier = earlier || last.uncertain
	}
}

// pause waits before retry number attempt (1-based), with some jitter so that
// clients that failed together do not retry together.
func pause(ctx context.Context, attempt int) error {
	d := backoff[min(attempt, len(backoff))-1]
	d += rand.N(d / 4)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopped is the error of a call whose context ended between attempts.
func stopped(op string, ctxErr, last error) error {
	return apperr.Wrap(apperr.Unavailable, errors.Join(ctxErr, last), op+": stopped before Agora answered")
}

// exchange sends one request, once, and reads the answer. Its error is a
// transport error, the end of ctx, or RequestTimeout.
func (c *Client) exchange(ctx context.Context, method, query string, body []byte) (int, []byte, error) {
	release, err := c.limit.wait(ctx)
	if err != nil {
		return 0, nil, err
	}
	// Released once the answer is in: Agora has then surely counted the request.
	defer release()
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	target := c.endpoint
	if query != "" {
		target += "?" + query
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", c.cred.header)
	req.Header.Set("Content-Type", "application/json") // Agora asks for it on every request
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return 0, nil, err
	}
	if len(data) > maxAnswerBytes {
		return 0, nil, fmt.Errorf("answer larger than %d bytes", maxAnswerBytes)
	}
	return resp.StatusCode, data, nil
}

// judge turns one exchange into a result; on success it decodes the answer
// into answer (when not nil).
func (c *Client) judge(ctx context.Context, op string, status int, data []byte, xerr error, answer any) result {
	if xerr != nil {
		if ctx.Err() != nil { // the caller gave up; the request may have been sent
			return result{err: apperr.Wrap(apperr.Unavailable, xerr, op+": stopped before Agora answered"), uncertain: true}
		}
		return result{err: apperr.Wrap(apperr.Unavailable, xerr, op+": Agora did not answer"), retry: true, uncertain: true}
	}
	if status == http.StatusOK {
		if err := decodeAnswer(data, answer); err != nil {
			return result{err: apperr.Wrap(apperr.Unavailable, err, op+": Agora's answer is not the documented JSON"), uncertain: true}
		}
		return result{}
	}
	remote := &RemoteError{Status: status, Message: c.cred.scrub(agoraMessage(data))}
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return result{err: apperr.Wrap(apperr.Unavailable, remote, fmt.Sprintf("%s: Agora refused the broker's customer ID and secret (HTTP %d)", op, status))}
	case status == http.StatusNotFound:
		return result{err: apperr.Wrap(apperr.NotFound, remote, op+": Agora has no such rule")}
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
		// Refused before anything was done: safe to send again.
		return result{err: apperr.Wrap(apperr.Unavailable, remote, fmt.Sprintf("%s: Agora is busy (HTTP %d)", op, status)), retry: true}
	case status >= 500:
		// A gateway timeout or failure may follow a change that was made.
		return result{err: apperr.Wrap(apperr.Unavailable, remote, fmt.Sprintf("%s: Agora failed (HTTP %d)", op, status)), retry: true, uncertain: true}
	case status >= 400:
		return result{err: apperr.Wrap(apperr.Invalid, remote, fmt.Sprintf("%s: Agora refused the request (HTTP %d)", op, status))}
	default:
		return result{err: apperr.Wrap(apperr.Unavailable, remote, fmt.Sprintf("%s: unexpected answer (HTTP %d)", op, status)), uncertain: true}
	}
}

// RemoteError is an answer from Agora other than success; it is the cause of
// the *apperr.Error a Client returns, for logs.
type RemoteError struct {
	Status  int    // HTTP status
	Message string // Agora's "message", or the start of its answer
}

func (e *RemoteError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("agora answered HTTP %d", e.Status)
	}
	return fmt.Sprintf("agora answered HTTP %d: %s", e.Status, e.Message)
}

// agoraMessage returns the "message" of an error answer, or failing that the
// start of the answer, as one short printable line.
func agoraMessage(data []byte) string {
	var m struct {
		Message string `json:"message"`
	}
	s := string(data)
	if json.Unmarshal(data, &m) == nil && m.Message != "" {
		s = m.Message
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	return strings.TrimSpace(s)
}

// decodeAnswer checks Agora's status field (when present) and decodes data
// into answer (when not nil).
func decodeAnswer(data []byte, answer any) error {
	var head struct {
		Status *string `json:"status"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return err
	}
	if head.Status != nil && *head.Status != "success" {
		return fmt.Errorf("status %.40q", *head.Status)
	}
	if answer == nil {
		return nil
	}
	return json.Unmarshal(data, answer)
}

// newCreate checks r and returns it as Agora will hold it, with the body of
// the create request.
func newCreate(r Rule) (Rule, []byte, error) {
	if err := checkAppID(r.AppID); err != nil {
		return Rule{}, nil, err
	}
	if r.Channel != "" {
		if err := token.ValidateChannel(r.Channel, false); err != nil {
			var ie *token.InputError
			if errors.As(err, &ie) {
				return Rule{}, nil, apperr.Field("channel", "%s", ie.Reason)
			}
			return Rule{}, nil, apperr.Field("channel", "is not a channel name Agora accepts")
		}
	}
	if r.IP != "" {
		a, err := netip.ParseAddr(r.IP)
		if err != nil || a.Zone() != "" || a.IsUnspecified() {
			return Rule{}, nil, apperr.Field("ip", "%.64q is not a single IP address", r.IP)
		}
		r.IP = a.Unmap().String()
	}
	if r.Channel == "" && r.UID == 0 && r.IP == "" {
		return Rule{}, nil, apperr.Field("rule", "names no channel, uid or ip: it would ban every user of the app")
	}
	secs, err := banSeconds(r.Duration)
	if err != nil {
		return Rule{}, nil, err
	}
	r.Duration = time.Duration(secs) * time.Second
	privs := make([]Privilege, 0, len(r.Privileges))
	for _, p := range r.Privileges {
		if p != JoinChannel && p != PublishAudio && p != PublishVideo {
			return Rule{}, nil, apperr.Field("privileges", "%.40q is not one of %s, %s, %s", string(p), JoinChannel, PublishAudio, PublishVideo)
		}
		if !slices.Contains(privs, p) {
			privs = append(privs, p)
		}
	}
	if len(privs) == 0 {
		privs = append(privs, JoinChannel)
	}
	r.Privileges = privs
	r.ID, r.Expires = 0, time.Time{}
	body, err := json.Marshal(struct {
		AppID         string      `json:"appid"`
		Cname         string      `json:"cname,omitempty"`
		UID           uint32      `json:"uid,omitempty"`
		IP            string      `json:"ip,omitempty"`
		TimeInSeconds int64       `json:"time_in_seconds"`
		Privileges    []Privilege `json:"privileges"`
	}{r.AppID, r.Channel, r.UID, r.IP, secs, r.Privileges})
	if err != nil {
		return Rule{}, nil, apperr.Wrap(apperr.Internal, err, "agora: encode create")
	}
	return r, body, nil
}

// banSeconds rounds d up to whole seconds (a ban is never shorter than asked)
// and checks it against Agora's range rather than letting Agora clamp it.
func banSeconds(d time.Duration) (int64, error) {
	if d <= 0 || d > MaxBan {
		return 0, apperr.Field("duration", "is %v; a ban lasts %v to %v", d, MinBan, MaxBan)
	}
	secs := int64((d + time.Second - 1) / time.Second)
	if secs < int64(MinBan/time.Second) || secs > int64(MaxBan/time.Second) {
		return 0, apperr.Field("duration", "is %v; a ban lasts %v to %v", d, MinBan, MaxBan)
	}
	return secs, nil
}

// checkAppID checks the shape of an App ID: 32 hexadecimal digits.
func checkAppID(appID string) error {
	if len(appID) != 32 || strings.IndexFunc(appID, func(r rune) bool {
		return !('0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F')
	}) >= 0 {
		return apperr.Field("appid", "must be 32 hexadecimal digits")
	}
	return nil
}
