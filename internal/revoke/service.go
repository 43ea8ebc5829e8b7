package revoke

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/broker-dev/broker/internal/agora"
	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/policy"
)

// Log is the issuance log (audit.Log): searched for the live tokens and
// the access policy changes took away, and where each revocation is
// recorded.
type Log interface {
	Search(ctx context.Context, f audit.Filter) (audit.Page, error)
	Decisions(ctx context.Context, since time.Time, fn func(audit.DecisionCount) error) error
	Append(ctx context.Context, r audit.Record) (audit.Record, error)
}

// Banner makes and lifts Agora ban rules (*agora.Client).
type Banner interface {
	CreateRule(ctx context.Context, r agora.Rule) (int64, error)
	DeleteRule(ctx context.Context, appID string, id int64) error
}

// minBlock is the shortest a revocation blocks new tokens, even when the
// user holds no live token: a revocation that ended at once would mean
// nothing.
const minBlock = time.Hour

// ExpiryActor is who lifts revocations that reached their end.
const ExpiryActor = "system:revocation-expiry"

// Service revokes and lifts.
type Service struct {
	Store    Store
	Policies *policy.Engine
	Log      Log
	// Agora is a project's App ID and the maker of its Agora ban rules; nil
	// bans when the broker holds no Agora credentials for the project: then
	// only new tokens are blocked, and each revocation says so in BansError.
	Agora func(project string) (appID string, bans Banner)
	// MaxTTL is the longest token lifetime the broker grants.
	MaxTTL time.Duration
	// Qualify names an issuer as rule subjects do ("" for the default
	// issuer); false for an issuer no longer configured.
	Qualify func(issuer string) (string, bool)
	Now     func() time.Time
}

// Request is what to revoke: the tokens of a user (Subject, as rules name
// it, user:<sub>; or the user of UID) on a channel scope of a project.
type Request struct {
	Project     string
	Subject     string
	UID         uint32
	Channel     string // a name or a pattern; "" or "*": every channel
	PublishOnly bool   // only publishing, not joining
	Reason      string
	// BansOnly makes no deny rule: the policy refuses the user already (the
	// revocation of access a policy change took away, ModeAuto).
	BansOnly bool
}

// Revoke blocks new tokens of the user for the scope (a deny rule, in the
// policy history under a) and bans, in Agora, each live token's uid on its
// channel until the token would have expired (every channel of the app for
// a token of a pattern); the block lasts until the last of them, at least
// minBlock. It fails before changing anything when the request is wrong or
// the user is unknown; a ban Agora refuses is kept in BansError, the block
// stays.
func (s *Service) Revoke(ctx context.Context, a policy.Actor, req Request) (Revocation, error) {
	now := s.Now()
	switch {
	case len(req.Reason) == 0 || len(req.Reason) > 512:
		return Revocation{}, apperr.Field("reason", "is required, at most 512 bytes: it is kept with the revocation")
	case (req.Subject == "") == (req.UID == 0):
		return Revocation{}, apperr.Field("subject", "give the user's subject (user:<sub>) or uid, one of them")
	case req.Subject != "" && !strings.HasPrefix(req.Subject, "user:"):
		return Revocation{}, apperr.Field("subject", "must be a user, user:<sub>: a group's members are revoked one by one")
	case len(a.Subject) > maxActor:
		return Revocation{}, apperr.Field("actor", "at most %d bytes: it is kept with the revocation", maxActor)
	}
	if req.Channel == "" {
		req.Channel = "*"
	}
	records, err := s.granted(ctx, req, now)
	if err != nil {
		return Revocation{}, err
	}
	if req.Subject == "" {
		if len(records) == 0 {
			return Revocation{}, apperr.New(apperr.NotFound, "no token was granted to uid %d in project %q in the last %s", req.UID, req.Project, s.MaxTTL)
		}
		req.Subject = s.ruleSubject(records[0])
	}
	// Who the user is, for the issuance log: the caller of their grants, or
	// the rule subject's issuer when they hold none.
	user := audit.Record{Subject: strings.TrimPrefix(req.Subject, "user:"), UID: req.UID}
	for _, rec := range records {
		if s.ruleSubject(rec) == req.Subject {
			user = audit.Record{Issuer: rec.Issuer, Subject: rec.Subject, Account: rec.Account, UID: rec.UID, Groups: rec.Groups}
			break
		}
	}
	r := Revocation{Project: req.Project, Subject: req.Subject, Channel: req.Channel, PublishOnly: req.PublishOnly, Reason: req.Reason,
		Actor: a.Subject, Bans: []Ban{}}
	_, r.Until = s.liveTargets(records, req, now) // the claim's end; the bans come from a second search
	role := policy.Subscriber                     // denying subscriber denies publisher too
	if req.PublishOnly {
		role = policy.Publisher
	}
	// The revocation is claimed first: a second one of the same user and
	// scope, from another admin or replica, is refused before it acts.
	deny := policy.Rule{Subject: req.Subject, Channel: req.Channel, Role: role, Effect: policy.Deny, Project: req.Project}
	if err := deny.Validate(); err != nil {
		return Revocation{}, err // a subject or channel no rule can name, before anything is kept
	}
	r, err = s.Store.Create(ctx, r)
	if err != nil {
		return Revocation{}, err
	}
	if !req.BansOnly {
		added, err := s.Policies.AddAs(ctx, a, deny, "revoke")
		switch {
		case err == nil:
			r.RuleID, deny = added.ID, added
		case apperr.KindOf(err) == apperr.Conflict: // the policy has this deny rule already
		default:
			s.drop(ctx, r.ID)
			return Revocation{}, err
		}
	}
	// The tokens granted until the deny rule committed count too: the log
	// is searched again now that no grant can commit without it.
	if records, err = s.granted(ctx, req, now); err != nil {
		left := s.undo(ctx, a, r)
		s.drop(ctx, r.ID)
		if left != "" {
			return Revocation{}, apperr.Wrap(apperr.Unavailable, err, "the revocation could not find the user's tokens and was not all taken back: "+left)
		}
		return Revocation{}, err
	}
	live, until := s.liveTargets(records, req, now)
	r.Until = until
	if r.RuleID == 0 {
		// No deny rule of its own: the record names what refuses the user now.
		deny = policy.Rule{Role: role}
		if d, err := s.Policies.Decide(policy.Caller{Subject: strings.TrimPrefix(req.Subject, "user:"), Groups: user.Groups}, req.Project, req.Channel, role); err == nil && d.Rule != nil {
			deny = *d.Rule
		}
	}
	var problems []string
	appID, banner := s.Agora(req.Project)
	switch {
	case len(live) == 0:
	case banner == nil:
		problems = append(problems, "no Agora credentials for the project: live sessions were not ended, only new tokens blocked")
	default:
		privileges := []agora.Privilege{agora.JoinChannel}
		if req.PublishOnly {
			privileges = []agora.Privilege{agora.PublishAudio, agora.PublishVideo}
		}
		for t, until := range live {
			d := min(max(until.Sub(now), agora.MinBan), agora.MaxBan)
			id, err := banner.CreateRule(ctx, agora.Rule{AppID: appID, Channel: t.channel, UID: t.uid, Duration: d, Privileges: privileges})
			if err != nil {
				problems = append(problems, fmt.Sprintf("uid %d on %q: %s", t.uid, t.channel, clientMessage(err)))
				continue
			}
			r.Bans = append(r.Bans, Ban{ID: id, UID: t.uid, Channel: t.channel, Until: now.Add(d)})
		}
	}
	r.BansError = audit.TruncateUTF8(strings.Join(problems, "; "), maxBansError)
	// The issuance log has the revocation before the answer leaves, with its
	// deny rule and ban rules; when it cannot, nothing stays in force.
	user.AppID = appID
	if _, err := s.Log.Append(ctx, record(a, r, deny, user, s.Policies.Version())); err != nil {
		left := s.undo(ctx, a, r)
		s.drop(ctx, r.ID)
		if left != "" {
			return Revocation{}, apperr.Wrap(apperr.Unavailable, err, "the revocation could not be recorded in the issuance log and was not all taken back: "+left)
		}
		return Revocation{}, err
	}
	return s.Store.Complete(ctx, r)
}

// The longest actor a revocation keeps (an admin's subject, or the CLI's
// --actor on the database), and the longest account of the bans Agora
// refused.
const (
	maxActor     = 512
	maxBansError = 4096
)

// banTarget is a uid banned on a channel ("" for every channel).
type banTarget struct {
	uid     uint32
	channel string
}

// liveTargets is what Revoke bans of records: each uid of the user's tokens
// still live in the scope, on its channel (a pattern's token: on the revoked
// channel, or every channel), until the last such token expires; and how long
// the block lasts: until the last of them, at least minBlock.
func (s *Service) liveTargets(records []audit.Record, req Request, now time.Time) (map[banTarget]time.Time, time.Time) {
	live, until := map[banTarget]time.Time{}, now.Add(minBlock)
	for _, rec := range records {
		expires := rec.Time.Add(rec.GrantedTTL)
		if s.ruleSubject(rec) != req.Subject || !expires.After(now) || rec.UID == 0 || !inScope(req.Channel, rec.Channel) {
			continue
		}
		t := banTarget{rec.UID, rec.Channel}
		switch {
		case !strings.Contains(rec.Channel, "*"):
		case !strings.Contains(req.Channel, "*"):
			t.channel = req.Channel // a pattern's token, revoked on one channel: the uid there
		default:
			t.channel = "" // a pattern's token: the uid in every channel
		}
		if expires.After(live[t]) {
			live[t] = expires
		}
		if expires.After(until) {
			until = expires
		}
	}
	return live, until
}

// drop deletes the claim id of a revocation that did not happen; one the
// store cannot delete ends with its time (it holds no rule and no ban).
func (s *Service) drop(ctx context.Context, id int64) {
	_ = s.Store.Delete(context.WithoutCancel(ctx), id)
}

// record is the issuance log's record of r: a refusal of the user on its
// scope by its deny rule (or the rule that refuses already), the reason naming the admin, the revocation's
// reason and the Agora ban rules.
func record(a policy.Actor, r Revocation, rule policy.Rule, user audit.Record, version int64) audit.Record {
	ids := make([]string, len(r.Bans))
	for i, b := range r.Bans {
		ids[i] = strconv.FormatInt(b.ID, 10)
	}
	bans := "none"
	if len(ids) > 0 {
		bans = strings.Join(ids, ", ")
	}
	user.RequestID = a.RequestID
	user.Channel = r.Channel
	user.Role = string(rule.Role)
	user.Decision = audit.DecisionDenied
	user.Reason = fmt.Sprintf("revoked by %s until %s (Agora ban rules: %s): %s", a.Subject, r.Until.UTC().Format(time.RFC3339), bans, r.Reason)
	if rule.Subject != "" {
		user.Rule = rule.String()
	}
	user.PolicyVersion = version
	user.Project = r.Project
	return user
}

// undo takes back what Revoke did when it cannot be recorded: the deny rule
// and the bans. It returns what is left in force, "" when nothing is.
func (s *Service) undo(ctx context.Context, a policy.Actor, r Revocation) string {
	ctx = context.WithoutCancel(ctx)
	var left []string
	if r.RuleID != 0 {
		if err := s.Policies.RemoveAs(ctx, a, r.RuleID, "lift"); err != nil {
			left = append(left, fmt.Sprintf("deny rule %d (remove it)", r.RuleID))
		}
	}
	appID, banner := s.Agora(r.Project)
	for _, b := range r.Bans {
		if err := banner.DeleteRule(ctx, appID, b.ID); err != nil {
			left = append(left, fmt.Sprintf("Agora ban rule %d (it ends at %s)", b.ID, b.Until.UTC().Format(time.RFC3339)))
		}
	}
	return strings.Join(left, ", ")
}

// Lift ends revocation id early (or at its end: ExpiryActor): its deny rule
// is removed and its bans deleted; a ban Agora will not delete is kept in
// BansError.
func (s *Service) Lift(ctx context.Context, a policy.Actor, id int64) (Revocation, error) {
	r, err := s.Store.Get(ctx, id)
	if err != nil {
		return Revocation{}, err
	}
	if r.Lifted != nil {
		return Revocation{}, apperr.New(apperr.Conflict, "revocation %d was lifted already", id)
	}
	if len(a.Subject) > maxActor {
		return Revocation{}, apperr.Field("actor", "at most %d bytes: it is kept with the revocation", maxActor)
	}
	if r.RuleID != 0 {
		if err := s.Policies.RemoveAs(ctx, a, r.RuleID, "lift"); err != nil && apperr.KindOf(err) != apperr.NotFound {
			return Revocation{}, err
		}
	}
	var problems []string
	appID, banner := s.Agora(r.Project)
	for _, b := range r.Bans {
		if banner == nil {
			problems = append(problems, "no Agora credentials: the bans run until their end")
			break
		}
		if !b.Until.After(s.Now()) {
			continue // ended already
		}
		if err := banner.DeleteRule(ctx, appID, b.ID); err != nil {
			problems = append(problems, fmt.Sprintf("ban %d: %s", b.ID, clientMessage(err)))
		}
	}
	return s.Store.Lift(ctx, id, a.Subject, s.Now(), audit.TruncateUTF8(strings.Join(problems, "; "), maxBansError))
}

// LiftExpired lifts the revocations whose end has come; it returns how many.
func (s *Service) LiftExpired(ctx context.Context) (int, error) {
	expired, err := s.Store.Expired(ctx, s.Now())
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range expired {
		_, err := s.Lift(ctx, policy.Actor{Subject: ExpiryActor, Operator: true}, r.ID)
		switch {
		case err == nil:
			n++
		case apperr.KindOf(err) == apperr.Conflict: // another replica lifted it
		default:
			return n, err
		}
	}
	return n, nil
}

// granted returns the grants of the user of req in the last MaxTTL, newest
// first: by subject (its unqualified name, the issuer checked by
// ruleSubject) or by uid.
func (s *Service) granted(ctx context.Context, req Request, now time.Time) ([]audit.Record, error) {
	f := audit.Filter{Decision: audit.DecisionGranted, Projects: []string{req.Project}, From: now.Add(-s.MaxTTL - time.Minute), Limit: audit.MaxLimit}
	if req.UID != 0 {
		uid := req.UID
		f.UID = &uid
	} else {
		name := strings.TrimPrefix(req.Subject, "user:")
		if _, sub, ok := strings.Cut(name, "/"); ok {
			name = sub // an issuer's qualified name: the record holds the bare subject
		}
		f.Subject = name
	}
	var out []audit.Record
	for {
		page, err := s.Log.Search(ctx, f)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Records...)
		if page.NextCursor == "" || len(out) >= 10*audit.MaxLimit {
			return out, nil
		}
		f.Cursor = page.NextCursor
	}
}

// ruleSubject is the rule subject of a record's caller, user:<sub> or
// user:<issuer name>/<sub>; "" for an issuer no longer configured.
func (s *Service) ruleSubject(r audit.Record) string {
	subject, ok := s.callerSubject(r.Issuer, r.Subject)
	if !ok {
		return ""
	}
	return "user:" + subject
}

// inScope reports whether a token of channel (a name or a pattern) is
// within the scope (a name, a pattern or "*").
func inScope(scope, channel string) bool {
	return scope == "*" || audit.MatchChannel(scope, channel) || audit.MatchChannel(channel, scope)
}

// clientMessage is an error for a revocation's record: its message, not
// its cause (which may quote Agora's answer).
func clientMessage(err error) string {
	var e *apperr.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "Agora did not answer"
}
