// Package broker is the use case: bind the caller's identity, ask the policy,
// mint the Agora token, and record the decision durably before answering.
// It is the one place that orders these steps; it never answers with a token
// whose record is not committed.
package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/identity"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/token"
	"github.com/broker-dev/broker/internal/tracing"
)

// Service names the tokens a request asks for.
type Service string

// The services: the issuance log's names for them (one definition).
const (
	RTC       Service = audit.ServiceRTC     // an RTC token for a channel
	RTM       Service = audit.ServiceRTM     // an RTM login token
	RTCAndRTM Service = audit.ServiceRTCRTM  // both, as two tokens (the seed's /rte route)
	Chat      Service = audit.ServiceChat    // a Chat user token
	ChatApp   Service = audit.ServiceChatApp // a Chat app token (a credential for Agora's Chat REST API)
)

// Token types: how the RTC user is named in a request.
const (
	TokenTypeUID     = "uid"
	TokenTypeAccount = "userAccount"
)

// Request is a token request as the client sent it. Fields are raw strings:
// Issue validates them all, so that invalid requests are recorded too.
type Request struct {
	// Project names the Agora project; empty means the default one
	// (Broker.Resolve).
	Project string
	Service Service
	// Channel, Role ("publisher", "subscriber", "1", "2") and TokenType ("uid",
	// "userAccount") describe the RTC token; User is the uid or account asked for.
	Channel   string
	Role      string
	TokenType string
	User      string
	// RTMUser is the RTM user id (RTM and RTCAndRTM); empty means User. The
	// Chat user id is User.
	RTMUser string
	// DowngradeToSubscriber answers a publisher request the policy refuses,
	// but whose subscriber role it allows, with a subscriber token (token
	// URLs that ask for it; never silently).
	DowngradeToSubscriber bool
	// Expiry is the lifetime in seconds as given; empty means the default.
	Expiry string
	// Malformed is what the transport found wrong while reading the request
	// (bad JSON, an unknown token type, …); Issue records it as an invalid
	// request and returns it.
	Malformed error

	// Route, RequestID, ClientIP and UserAgent describe the request for the
	// issuance log and metrics; Via names how it was authenticated when not
	// by a bearer token (e.g. "token URL tu_…"), for the record.
	Route, RequestID, ClientIP, UserAgent, Via string
}

// Grant is what the caller receives: the tokens and what they are bound to.
type Grant struct {
	RTCToken string
	RTMToken string
	UID      uint32 // the uid the RTC token is bound to (uid tokens)
	// ScreenShare is set when UID is the caller's screen-share uid.
	ScreenShare bool
	// Downgraded is set when a publisher request got a subscriber token
	// (Request.DowngradeToSubscriber).
	Downgraded bool
	ChatUser   string
	ChatToken  string // the Chat user or app token
	Account    string // the account the RTC token is bound to (account tokens)
	RTMUser    string
	Channel    string
	Role       policy.Role
	TTL        time.Duration
	ExpiresAt  time.Time
	// Project and AppID name the Agora project the tokens are for, and the
	// App ID a client joins with.
	Project, AppID string
	// Records are the issuance log's sequence numbers of the grant's
	// records, one per token: the receipt a client can ask a proof for.
	Records []int64
}

// Decider is the policy engine as the broker uses it.
type Decider interface {
	Decide(c policy.Caller, project, channel string, role policy.Role) (policy.Decision, error)
	DecideLogin(c policy.Caller, project, service string) (policy.Decision, error)
	Can(c policy.Caller, project, object string, action policy.Role) bool
	Version() int64
	// Refresh brings the rules up to the newest committed version.
	Refresh(ctx context.Context) error
}

// Recorder is the issuance log as the broker uses it.
type Recorder interface {
	Append(ctx context.Context, r audit.Record) (audit.Record, error)
	Fingerprint(token string) string
}

// Binder hands out the uid bound to a caller.
type Binder interface {
	UID(ctx context.Context, issuer, subject, account string) (uint32, error)
}

// Config holds the broker's projects. A broker of one project may instead
// give only DefaultTTL and MaxTTL, and Deps.Tokens: the project "default".
type Config struct {
	DefaultTTL time.Duration // lifetime when the request names none
	MaxTTL     time.Duration // longest lifetime ever granted (≤ 24 h)
	Projects   []Project
}

// Project is one Agora project the broker issues tokens for.
type Project struct {
	Name   string         // a policy.CheckProjectName name
	Tokens *token.Builder // signs with the project's App ID and first certificate
	// Issuers names the identity providers whose users may use the project
	// (auth.Identity.Qualifier: "" is the default issuer); nil: every one.
	Issuers    []string
	DefaultTTL time.Duration // lifetime when the request names none
	MaxTTL     time.Duration // longest lifetime granted (≤ 24 h)
}

// allows reports whether the users of the issuer named qualifier may use p.
func (p *Project) allows(qualifier string) bool {
	return p.Issuers == nil || slices.Contains(p.Issuers, qualifier)
}

// Broker issues tokens. Create it with New.
type Broker struct {
	projects  map[string]*Project
	names     []string // the projects' names, sorted
	policy    Decider
	log       Recorder
	uids      Binder
	now       func() time.Time
	decisions *prometheus.CounterVec
}

// Deps are the Broker's collaborators.
type Deps struct {
	Tokens     *token.Builder // the "default" project's, when Config names no projects
	Policy     Decider
	Log        Recorder
	UIDs       Binder
	Registerer prometheus.Registerer // nil: no metrics registered
	Now        func() time.Time
}

// New returns a Broker.
func New(cfg Config, d Deps) (*Broker, error) {
	if d.Policy == nil || d.Log == nil || d.UIDs == nil {
		return nil, errors.New("broker: policy, log and uid binder are all required")
	}
	projects := cfg.Projects
	if len(projects) == 0 {
		projects = []Project{{Name: policy.DefaultProject, Tokens: d.Tokens, DefaultTTL: cfg.DefaultTTL, MaxTTL: cfg.MaxTTL}}
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	b := &Broker{projects: make(map[string]*Project, len(projects)), policy: d.Policy, log: d.Log, uids: d.UIDs, now: d.Now,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "broker_decisions_total",
			Help: "Token decisions by outcome (granted, denied, invalid, unavailable, cancelled), role and route.",
		}, []string{"outcome", "role", "route"}),
	}
	for _, p := range projects {
		if err := p.check(); err != nil {
			return nil, err
		}
		if b.projects[p.Name] != nil {
			return nil, fmt.Errorf("broker: project %q is configured twice", p.Name)
		}
		b.projects[p.Name] = &p
		b.names = append(b.names, p.Name)
	}
	slices.Sort(b.names)
	if d.Registerer != nil {
		if err := d.Registerer.Register(b.decisions); err != nil {
			return nil, fmt.Errorf("broker: register metrics: %w", err)
		}
	}
	return b, nil
}

// check validates a project's configuration.
func (p Project) check() error {
	if err := policy.CheckProjectName(p.Name); err != nil {
		return fmt.Errorf("broker: project %q: %w", p.Name, err)
	}
	if p.Tokens == nil {
		return fmt.Errorf("broker: project %q has no token builder", p.Name)
	}
	if p.MaxTTL <= 0 || p.MaxTTL > 24*time.Hour {
		return fmt.Errorf("broker: project %q: max TTL %s must be within (0, 24h]", p.Name, p.MaxTTL)
	}
	if p.DefaultTTL <= 0 || p.DefaultTTL > p.MaxTTL {
		return fmt.Errorf("broker: project %q: default TTL %s must be within (0, max TTL]", p.Name, p.DefaultTTL)
	}
	return nil
}

// Projects returns the names of the projects the users of the issuer named
// qualifier may use, sorted.
func (b *Broker) Projects(qualifier string) []string {
	var out []string
	for _, n := range b.names {
		if b.projects[n].allows(qualifier) {
			out = append(out, n)
		}
	}
	return out
}

// AllProjects returns the names of every project, sorted.
func (b *Broker) AllProjects() []string { return slices.Clone(b.names) }

// Resolve returns the project a request of id that names project is for:
// the one named, or with none named the "default" project (or the only one
// id may use). It is Invalid to name a project id may not use or that does
// not exist (the message names the ones id may use), or to name none when
// there are several and none is called default.
func (b *Broker) Resolve(id auth.Identity, project string) (*Project, error) {
	usable := b.Projects(id.Qualifier)
	if project == "" {
		switch {
		case b.projects[policy.DefaultProject] != nil && b.projects[policy.DefaultProject].allows(id.Qualifier):
			project = policy.DefaultProject
		case len(usable) == 1:
			project = usable[0]
		case len(usable) == 0:
			return nil, apperr.New(apperr.Forbidden, "no project of this broker accepts your identity provider's users")
		default:
			return nil, apperr.Field("project", "name the project: yours are %s", strings.Join(usable, ", "))
		}
	}
	p := b.projects[project]
	if p == nil || !p.allows(id.Qualifier) {
		if len(usable) == 0 {
			return nil, apperr.New(apperr.Forbidden, "no project of this broker accepts your identity provider's users")
		}
		return nil, apperr.Field("project", "%q is not a project you may use; yours are %s", truncate(project, policy.MaxProjectLen), strings.Join(usable, ", "))
	}
	return p, nil
}

// ScreenShareUID returns the caller's second uid, for screen sharing
// (allocated on first use; see identity.ScreenShareUID).
func (b *Broker) ScreenShareUID(ctx context.Context, id auth.Identity) (uint32, error) {
	return identity.ScreenShareUID(ctx, b.uids, id.Issuer, id.Subject)
}

// BoundUID returns the uid bound to the caller: the uid claim when the
// provider supplies one, else the one allocated for (issuer, subject).
func (b *Broker) BoundUID(ctx context.Context, id auth.Identity) (uint32, error) {
	if id.HasUID {
		return id.UID, nil
	}
	return b.uids.UID(ctx, id.Issuer, id.Subject, id.Account)
}

// Issue decides req for the caller id and, when allowed, mints the tokens.
// Every decision (granted, denied, invalid) is committed to the issuance log
// before Issue returns; if it cannot be, Issue returns an Unavailable error and
// no token.
//
// The steps are those of the design: parse the request into typed values,
// bind the caller's own uid or account, decide, mint each token with its own
// record. Each step adds what it learns to the record, so that a refusal at
// any step is recorded with everything known by then.
func (b *Broker) Issue(ctx context.Context, id auth.Identity, req Request) (Grant, error) {
	for attempt := 1; ; attempt++ {
		g, err := b.issueOnce(ctx, id, req)
		if !errors.Is(err, audit.ErrStalePolicy) {
			return g, err
		}
		// A policy change committed after this grant was decided: bring the
		// rules up to date and decide again, so that no token leaves under a
		// rule already removed.
		if attempt == maxDecisions {
			b.decisions.WithLabelValues("unavailable", roleLabel(req.Role), req.Route).Inc()
			return Grant{}, apperr.Wrap(apperr.Unavailable, err, "the policy is changing too fast to decide; retry")
		}
		if err := b.policy.Refresh(ctx); err != nil {
			b.decisions.WithLabelValues("unavailable", roleLabel(req.Role), req.Route).Inc()
			return Grant{}, apperr.Wrap(apperr.Unavailable, err, "the policy could not be brought up to date, so no token was issued; retry later")
		}
	}
}

// maxDecisions bounds how often one request is decided again because the
// policy changed under it.
const maxDecisions = 3

// issueOnce decides req on the current rules and commits its records. A
// grant decided on rules a committed change has since replaced returns
// audit.ErrStalePolicy, and nothing is recorded for it.
func (b *Broker) issueOnce(ctx context.Context, id auth.Identity, req Request) (Grant, error) {
	now := b.now()
	rec := audit.Record{
		Time: now, RequestID: req.RequestID, Issuer: id.Issuer, Subject: id.Subject, Account: id.Account,
		Groups: id.Groups, Service: serviceLabel(req.Service), Channel: req.Channel, Role: req.Role,
		ClientIP: req.ClientIP, UserAgent: req.UserAgent, PolicyVersion: b.policy.Version(),
		TraceID: tracing.TraceID(ctx),
	}
	g, recs, err := b.steps(ctx, id, req, now, &rec)
	outcome := "granted"
	switch kind := apperr.KindOf(err); {
	case err == nil:
	case kind == apperr.Invalid || kind == apperr.TooLarge:
		outcome = "invalid"
	case kind == apperr.Forbidden:
		outcome = "denied"
	default:
		// Not a decision (a dependency failed): nothing to record.
		b.decisions.WithLabelValues("unavailable", roleLabel(req.Role), req.Route).Inc()
		return Grant{}, err
	}
	if err != nil {
		rec.Decision = audit.Decision(outcome)
		if e, ok := apperr.As(err); ok {
			rec.Reason = e.Error()
		}
		recs = []audit.Record{rec}
	}
	notes := g.notes(req)
	for _, r := range recs {
		if notes != "" {
			r.Reason += " [" + notes + "]"
		}
		actx, span := tracing.Tracer().Start(ctx, "audit.append", trace.WithAttributes(attribute.String("audit.decision", string(r.Decision))))
		stored, lerr := b.log.Append(actx, r)
		endSpan(span, lerr)
		if lerr == nil {
			g.Records = append(g.Records, stored.Seq)
		}
		if lerr != nil {
			switch {
			case errors.Is(lerr, audit.ErrStalePolicy):
				return Grant{}, lerr
			case ctx.Err() != nil:
				// The client went away while its record was being committed: no
				// one is waiting for the answer, and the log is not at fault.
				b.decisions.WithLabelValues("cancelled", roleLabel(req.Role), req.Route).Inc()
				return Grant{}, apperr.Wrap(apperr.Unavailable, lerr, "the request was cancelled")
			}
			b.decisions.WithLabelValues("unavailable", roleLabel(req.Role), req.Route).Inc()
			return Grant{}, apperr.Wrap(apperr.Unavailable, lerr, "the issuance log cannot record right now, so no token was issued; retry later")
		}
	}
	b.decisions.WithLabelValues(outcome, roleLabel(req.Role), req.Route).Inc()
	if err != nil {
		return Grant{}, err
	}
	return g, nil
}

// notes says what a record must add to its decision's reason: the way the
// request came (a token URL) and what the grant differs in (a screen-share
// uid), "" when nothing.
func (g Grant) notes(req Request) string {
	var n []string
	if req.Via != "" {
		n = append(n, "via "+req.Via)
	}
	if g.ScreenShare {
		n = append(n, "screen-share uid")
	}
	if g.Downgraded {
		n = append(n, "publisher refused, downgraded to subscriber as the token URL asks")
	}
	return strings.Join(n, "; ")
}

// parsed is a request as typed values.
type parsed struct {
	ttl                     time.Duration // asked for (not clamped)
	role                    policy.Role   // RTC only
	rtc, rtm, chat, chatApp bool          // which tokens are asked for
}

// decided is what the policy said for each token asked for.
type decided struct {
	rtc, rtm, chat policy.Decision
	maxTTL         time.Duration // the smallest cap of the deciding rules; 0: none
}

// steps runs parse, bind, decide and mint, adding what each learns to rec,
// and returns the grant with one record per token minted.
func (b *Broker) steps(ctx context.Context, id auth.Identity, req Request, now time.Time, rec *audit.Record) (Grant, []audit.Record, error) {
	// The record names the project asked for when this broker serves it
	// (and with none asked, the default one), refused or not: its auditors
	// see the refusal.
	switch {
	case req.Project == "" && b.projects[policy.DefaultProject] != nil:
		rec.Project = policy.DefaultProject
	case b.projects[req.Project] != nil:
		rec.Project = req.Project
	}
	if req.Malformed != nil {
		return Grant{}, nil, req.Malformed
	}
	proj, err := b.Resolve(id, req.Project)
	if err != nil {
		return Grant{}, nil, err
	}
	rec.Project, rec.AppID = proj.Name, proj.Tokens.AppID()
	p, err := b.parse(proj, req, rec)
	if err != nil {
		return Grant{}, nil, err
	}
	if id.GroupsError != "" {
		// Unusable group names could match no rule as the user meant them.
		return Grant{}, nil, apperr.New(apperr.Forbidden, "tokens are unavailable for you: your %s", id.GroupsError)
	}
	uid, err := b.BoundUID(ctx, id)
	if err != nil {
		return Grant{}, nil, err
	}
	rec.UID = uid
	g := Grant{Project: proj.Name, AppID: proj.Tokens.AppID()}
	if err := b.bind(ctx, id, uid, req, p, &g); err != nil {
		return Grant{}, nil, err
	}
	_, span := tracing.Tracer().Start(ctx, "policy.decide")
	d, err := b.decide(id, proj.Name, req, &p, &g, rec)
	span.SetAttributes(attribute.String("broker.role", string(p.role)), attribute.Int64("policy.version", rec.PolicyVersion))
	endSpan(span, err)
	if err != nil {
		return Grant{}, nil, err
	}
	g.Channel, g.Role = req.Channel, p.role
	g.TTL = min(p.ttl, proj.MaxTTL)
	if d.maxTTL > 0 {
		g.TTL = min(g.TTL, d.maxTTL)
	}
	g.ExpiresAt = now.Add(g.TTL).Truncate(time.Second)
	_, span = tracing.Tracer().Start(ctx, "token.mint")
	recs, err := b.mint(proj.Tokens, &g, p, d, now, *rec)
	span.SetAttributes(attribute.Int("token.count", len(recs)))
	endSpan(span, err)
	return g, recs, err
}

// endSpan ends span, marking it failed when err is set. The status names the
// error's kind, never its message (which may quote the request).
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, string(apperr.KindOf(err)))
	}
	span.End()
}

// parse reads req into typed values (recording the requested lifetime and
// role as soon as they are known). Anything malformed is Invalid.
func (b *Broker) parse(proj *Project, req Request, rec *audit.Record) (parsed, error) {
	ttl, err := requestedTTL(proj, req.Expiry)
	if err != nil {
		return parsed{}, err
	}
	rec.RequestedTTL = ttl
	p := parsed{ttl: ttl}
	switch req.Service {
	case RTC:
		p.rtc = true
	case RTM:
		p.rtm = true
	case RTCAndRTM:
		p.rtc, p.rtm = true, true
	case Chat:
		p.chat = true
	case ChatApp:
		p.chatApp = true
	default:
		return parsed{}, apperr.Field("service", "must be rtc, rtm, rtc+rtm, chat or chat-app, got %q", truncate(string(req.Service), 32))
	}
	if !p.rtc {
		return p, nil
	}
	if p.role, err = parseRole(req.Role); err != nil {
		return parsed{}, err
	}
	rec.Role = string(p.role)
	if err := token.ValidateChannel(req.Channel, strings.Contains(req.Channel, "*")); err != nil {
		return parsed{}, fieldError(err, "channel")
	}
	if req.TokenType != TokenTypeUID && req.TokenType != TokenTypeAccount {
		return parsed{}, apperr.Field("tokentype", "must be uid or userAccount")
	}
	return p, nil
}

// bind checks that every user the request names is the caller's own (uid
// bound to them, or their usable account) and puts them in g.
func (b *Broker) bind(ctx context.Context, id auth.Identity, uid uint32, req Request, p parsed, g *Grant) error {
	if p.rtc {
		if err := b.bindRTC(ctx, id, uid, req, g); err != nil {
			return err
		}
	}
	if p.rtm {
		user := req.RTMUser
		if user == "" {
			user = req.User
		}
		if err := bindUser("RTM user", id, uid, user); err != nil {
			return err
		}
		g.RTMUser = user
	}
	if p.chat {
		if err := bindUser("Chat user", id, uid, req.User); err != nil {
			return err
		}
		g.ChatUser = req.User
	}
	return nil
}

// decide asks the policy about each token asked for: the RTC role on the
// channel (downgraded to subscriber when the request allows it and only that
// is allowed), the RTM and Chat logins, the right to a Chat app token. A
// refusal is Forbidden with the policy's reason.
func (b *Broker) decide(id auth.Identity, project string, req Request, p *parsed, g *Grant, rec *audit.Record) (decided, error) {
	c := policy.Caller{Subject: id.PolicySubject(), Groups: id.Groups}
	var d decided
	caps := func(pd policy.Decision) {
		if pd.MaxTTL > 0 && (d.maxTTL == 0 || pd.MaxTTL < d.maxTTL) {
			d.maxTTL = pd.MaxTTL
		}
	}
	refuse := func(pd policy.Decision) error {
		if pd.Rule != nil {
			rec.Rule = pd.Rule.String()
		}
		return apperr.New(apperr.Forbidden, "%s", pd.Reason)
	}
	var err error
	if p.rtc {
		if d.rtc, err = b.policy.Decide(c, project, req.Channel, p.role); err != nil {
			return d, err
		}
		if !d.rtc.Allowed && p.role == policy.Publisher && req.DowngradeToSubscriber {
			sub, err := b.policy.Decide(c, project, req.Channel, policy.Subscriber)
			if err != nil {
				return d, err
			}
			if sub.Allowed {
				d.rtc, p.role, g.Downgraded = sub, policy.Subscriber, true
				rec.Role = string(policy.Subscriber)
			}
		}
		if !d.rtc.Allowed {
			return d, refuse(d.rtc)
		}
		caps(d.rtc)
	}
	if p.rtm {
		if d.rtm, err = b.policy.DecideLogin(c, project, policy.LoginRTM); err != nil {
			return d, err
		}
		if !d.rtm.Allowed {
			return d, refuse(d.rtm)
		}
		caps(d.rtm)
	}
	if p.chat {
		if d.chat, err = b.policy.DecideLogin(c, project, policy.LoginChat); err != nil {
			return d, err
		}
		if !d.chat.Allowed {
			return d, refuse(d.chat)
		}
		caps(d.chat)
	}
	if p.chatApp && !b.policy.Can(c, project, policy.ObjectChatApp, policy.Read) {
		return d, apperr.New(apperr.Forbidden, "a Chat app token is a credential for Agora's Chat REST API: it needs the read right on %s", policy.ObjectChatApp)
	}
	return d, nil
}

// mint builds each token asked for into g and returns one granted record per
// token, made from rec with the decision that allowed it.
func (b *Broker) mint(tokens *token.Builder, g *Grant, p parsed, d decided, now time.Time, rec audit.Record) ([]audit.Record, error) {
	expire, issued := uint32(g.TTL/time.Second), uint32(now.Unix())
	granted := func(service, token string, pd policy.Decision, reason string) audit.Record {
		r := rec
		r.Service, r.Decision, r.GrantedTTL, r.TokenFingerprint = service, audit.DecisionGranted, g.TTL, b.log.Fingerprint(token)
		r.Rule, r.Reason = "", reason
		if pd.Rule != nil {
			r.Rule, r.Reason = pd.Rule.String(), pd.Reason
		}
		if service != string(RTC) {
			r.Channel, r.Role = "", ""
		}
		return r
	}
	var recs []audit.Record
	if p.rtc {
		t, err := tokens.RTC(token.RTCRequest{Channel: g.Channel, AllowWildcard: strings.Contains(g.Channel, "*"),
			Account: g.Account, UID: g.UID, Role: tokenRole(g.Role), Expire: expire, IssuedAt: issued})
		if err != nil {
			return nil, fieldError(err, "")
		}
		g.RTCToken = t
		recs = append(recs, granted(string(RTC), t, d.rtc, ""))
	}
	if p.rtm {
		t, err := tokens.RTM(g.RTMUser, expire, issued, 0)
		if err != nil {
			return nil, fieldError(err, "rtmUser")
		}
		g.RTMToken = t
		recs = append(recs, granted(string(RTM), t, d.rtm, ""))
	}
	if p.chat {
		t, err := tokens.ChatUser(g.ChatUser, expire, issued, 0)
		if err != nil {
			return nil, fieldError(err, "chatUser")
		}
		g.ChatToken = t
		recs = append(recs, granted(string(Chat), t, d.chat, ""))
	}
	if p.chatApp {
		t, err := tokens.ChatApp(expire, issued, 0)
		if err != nil {
			return nil, fieldError(err, "")
		}
		g.ChatToken = t
		recs = append(recs, granted(string(ChatApp), t, policy.Decision{}, "Chat app token for a holder of read on "+policy.ObjectChatApp))
	}
	return recs, nil
}

// serviceLabel is the service a record names: one of the services, or ""
// when the request named another (its error message quotes it, bounded).
func serviceLabel(s Service) string {
	switch s {
	case RTC, RTM, RTCAndRTM, Chat, ChatApp:
		return string(s)
	}
	return ""
}

// roleLabel bounds the role label of the decision metric.
func roleLabel(r string) string {
	if role, err := parseRole(r); err == nil {
		return string(role)
	}
	return "other"
}

// requestedTTL parses the expiry the client asked for; empty means the
// default. It does not clamp: the grant does, and the record keeps the ask.
func requestedTTL(proj *Project, expiry string) (time.Duration, error) {
	if expiry == "" {
		return proj.DefaultTTL, nil
	}
	n, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil {
		return 0, apperr.Field("expiry", "must be a whole number of seconds, got %q", truncate(expiry, 32))
	}
	if n <= 0 {
		return 0, apperr.Field("expiry", "must be at least 1 second")
	}
	if n > 1<<31 {
		n = 1 << 31
	}
	return time.Duration(n) * time.Second, nil
}

// bindRTC checks that the uid or account asked for is the caller's own: their
// uid, their screen-share uid (recorded as such), or their usable account.
func (b *Broker) bindRTC(ctx context.Context, id auth.Identity, uid uint32, req Request, g *Grant) error {
	if req.TokenType == TokenTypeUID {
		n, err := strconv.ParseUint(req.User, 10, 32)
		if err != nil {
			return apperr.Field("uid", "must be a whole number from 1 to 4294967295")
		}
		if n == 0 {
			return apperr.New(apperr.Forbidden, "uid 0 would let anyone join as any uid; ask for your own uid %d", uid)
		}
		if uint32(n) != uid {
			ss, err := b.ScreenShareUID(ctx, id)
			if err != nil {
				return err
			}
			if uint32(n) != ss {
				return apperr.New(apperr.Forbidden, "uid %d is not yours; your uid is %d (and %d for screen sharing)", n, uid, ss)
			}
			g.ScreenShare = true
		}
		g.UID = uint32(n)
		return nil
	}
	if id.AccountError == "" && req.User != id.Account {
		return apperr.New(apperr.Forbidden, "account %q is not yours; your account is %q", truncate(req.User, 64), id.Account)
	}
	if p := AccountProblem(id, uid); p != "" {
		return apperr.New(apperr.Forbidden, "account tokens are unavailable for you: %s; use a uid token (your uid is %d)", p, uid)
	}
	g.Account = id.Account
	return nil
}

// AccountProblem says why the caller's account cannot name them in a token,
// or returns "" when it can. Besides a claim that is missing or outside
// Agora's character set, an account that reads as a uid (token.AccountAsUID)
// is refused unless that uid is the caller's own bound uid: an account token
// for "1805641522" grants exactly what a uid token for uid 1805641522 grants,
// so a user who can edit the account claim could otherwise become anyone.
// The same rule holds for every user id that reaches a token (RTC account,
// RTM user id).
func AccountProblem(id auth.Identity, uid uint32) string {
	if id.AccountError != "" {
		return id.AccountError
	}
	if n, ok := token.AccountAsUID(id.Account); ok && n != uid {
		return fmt.Sprintf("your account %q reads as uid %d, which is not yours (a numeric account is usable only when it is your own uid)", truncate(id.Account, 64), n)
	}
	return ""
}

// bindUser checks that a user id (what names the caller), such as an RTM or
// Chat user id, is the caller's decimal uid or their usable account
// (AccountProblem).
func bindUser(what string, id auth.Identity, uid uint32, user string) error {
	if user == "" {
		return apperr.Field(strings.ReplaceAll(strings.ToLower(what), " ", ""), "is required")
	}
	if user == strconv.FormatUint(uint64(uid), 10) {
		return nil
	}
	if user == id.Account {
		if p := AccountProblem(id, uid); p != "" {
			return apperr.New(apperr.Forbidden, "%s %q is unavailable for you: %s; use your uid %d", what, truncate(user, 64), p, uid)
		}
		return nil
	}
	return apperr.New(apperr.Forbidden, "%s %q is not yours; use your account %q or your uid %d", what, truncate(user, 64), id.Account, uid)
}

// parseRole accepts the role names and Agora's client constants (1
// broadcaster/publisher, 2 audience/subscriber); anything else is invalid,
// never a silent subscriber.
func parseRole(r string) (policy.Role, error) {
	switch r {
	case "publisher", "1":
		return policy.Publisher, nil
	case "subscriber", "2":
		return policy.Subscriber, nil
	}
	return "", apperr.Field("role", "must be publisher, subscriber, 1 or 2")
}

func tokenRole(r policy.Role) token.Role {
	if r == policy.Publisher {
		return token.RolePublisher
	}
	return token.RoleSubscriber
}

// fieldError turns a token input error into an Invalid error naming the field.
func fieldError(err error, field string) error {
	var ie *token.InputError
	if errors.As(err, &ie) {
		if field == "" {
			field = ie.Field
		}
		return apperr.Field(field, "%s", ie.Reason)
	}
	return apperr.Wrap(apperr.Internal, err, "token build failed")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
