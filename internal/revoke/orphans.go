package revoke

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/policy"
)

// Mode is what the broker does when a policy change takes away access that
// live tokens carry (BROKER_REVOKE_ON_POLICY_CHANGE).
type Mode string

// The modes.
const (
	ModeOff     Mode = "off"     // nothing: the tokens run until they expire
	ModeSuggest Mode = "suggest" // the API and the console list them, to revoke in one click
	ModeAuto    Mode = "auto"    // each is revoked as soon as a replica sees the change
)

// ParseMode reads a Mode.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeOff, ModeSuggest, ModeAuto:
		return m, nil
	}
	return "", fmt.Errorf("must be off, suggest or auto, not %q", s)
}

// AutoActor is who revokes the orphaned tokens in ModeAuto.
const AutoActor = "system:revoke-on-policy-change"

// maxOrphans bounds how many (user, channel, role) one listing holds.
const maxOrphans = 1000

// Orphan is access a policy change took away while tokens carrying it are
// still live: the user's tokens for the role on the channel (a name or a
// pattern), which the policy no longer grants.
type Orphan struct {
	Subject string `json:"subject"` // the rule subject, user:<sub>
	Channel string `json:"channel"`
	Role    string `json:"role"`
	// PublishOnly: the user may still join as a subscriber; only publishing
	// was taken away.
	PublishOnly bool      `json:"publishOnly"`
	UIDs        []uint32  `json:"uids"`
	Tokens      int       `json:"tokens"`
	Expires     time.Time `json:"expires"` // the last of them
	// Decision is why the policy refuses now.
	Decision policy.Decision `json:"decision"`
}

// Orphans returns the project's orphans, most tokens first: the live grants
// (the last MaxTTL) whose caller the policy now refuses the role on the
// channel, but for those an active revocation covers already. Truncated
// says some were left out.
func (s *Service) Orphans(ctx context.Context, project string) (out []Orphan, truncated bool, err error) {
	now := s.Now()
	type key struct{ subject, channel, role string }
	candidates := map[key]*Orphan{}
	err = s.Log.Decisions(ctx, now.Add(-s.MaxTTL-time.Minute), func(d audit.DecisionCount) error {
		role := policy.Role(d.Role)
		if d.Decision != audit.DecisionGranted || cmp.Or(d.Project, policy.DefaultProject) != project || (role != policy.Publisher && role != policy.Subscriber) {
			return nil
		}
		subject, ok := s.callerSubject(d.Issuer, d.Subject)
		if !ok {
			return nil // an issuer no longer configured: its users get no tokens
		}
		k := key{"user:" + subject, d.Channel, d.Role}
		if candidates[k] != nil {
			return nil
		}
		caller := policy.Caller{Subject: subject, Groups: d.Groups}
		now, err := s.Policies.Decide(caller, project, d.Channel, role)
		if err != nil {
			// Not a guess either way: a token left live or revoked for an
			// answer the policy did not give.
			return fmt.Errorf("deciding again %s's %s on %q: %w", k.subject, d.Role, d.Channel, err)
		}
		if now.Allowed {
			return nil
		}
		if len(candidates) == maxOrphans {
			truncated = true
			return nil
		}
		o := &Orphan{Subject: k.subject, Channel: d.Channel, Role: d.Role, Decision: now}
		if role == policy.Publisher {
			sub, err := s.Policies.Decide(caller, project, d.Channel, policy.Subscriber)
			o.PublishOnly = err == nil && sub.Allowed
		}
		candidates[k] = o
		return ctx.Err()
	})
	if err != nil {
		return nil, false, err
	}
	if len(candidates) == 0 {
		return nil, truncated, nil
	}
	active, err := s.Store.List(ctx, project, true, 0)
	if err != nil {
		return nil, false, err
	}
	// The live tokens of each candidate user.
	bySubject := map[string][]*Orphan{}
	for k, o := range candidates {
		if !slices.ContainsFunc(active, func(r Revocation) bool {
			return r.Subject == k.subject && inScope(r.Channel, k.channel) && (!r.PublishOnly || o.PublishOnly)
		}) {
			bySubject[k.subject] = append(bySubject[k.subject], o)
		}
	}
	for subject, orphans := range bySubject {
		records, err := s.granted(ctx, Request{Project: project, Subject: subject}, now)
		if err != nil {
			return nil, false, err
		}
		for _, rec := range records {
			expires := rec.Time.Add(rec.GrantedTTL)
			if !expires.After(now) || s.ruleSubject(rec) != subject {
				continue
			}
			for _, o := range orphans {
				if rec.Channel != o.Channel || rec.Role != o.Role {
					continue
				}
				o.Tokens++
				if rec.UID != 0 && !slices.Contains(o.UIDs, rec.UID) {
					o.UIDs = append(o.UIDs, rec.UID)
				}
				if expires.After(o.Expires) {
					o.Expires = expires
				}
			}
		}
		for _, o := range orphans {
			if o.Tokens > 0 {
				slices.Sort(o.UIDs)
				out = append(out, *o)
			}
		}
	}
	slices.SortFunc(out, func(a, b Orphan) int {
		return cmp.Or(cmp.Compare(b.Tokens, a.Tokens), cmp.Compare(a.Subject, b.Subject), cmp.Compare(a.Channel, b.Channel), cmp.Compare(a.Role, b.Role))
	})
	return out, truncated, nil
}

// RevokeOrphans revokes, as AutoActor, every orphan of the projects
// (ModeAuto): each user's tokens on the channel (publishing only, when they
// may still join) are banned in Agora; no deny rule is made, the policy
// refuses them already. Another replica revoking the same orphan at once is
// not an error: its claim is refused. It returns how many were revoked.
func (s *Service) RevokeOrphans(ctx context.Context, projects []string) (int, error) {
	a := policy.Actor{Subject: AutoActor, Operator: true}
	n := 0
	for _, project := range projects {
		orphans, _, err := s.Orphans(ctx, project)
		if err != nil {
			return n, err
		}
		for _, o := range orphans {
			reason := fmt.Sprintf("policy version %d no longer allows %s on %q: %s", s.Policies.Version(), o.Role, o.Channel, o.Decision.Reason)
			_, err := s.Revoke(ctx, a, Request{Project: project, Subject: o.Subject, Channel: o.Channel, PublishOnly: o.PublishOnly,
				Reason: audit.TruncateUTF8(reason, 512), BansOnly: true})
			switch {
			case err == nil:
				n++
			case apperr.KindOf(err) == apperr.Conflict: // another replica did
			default:
				return n, err
			}
		}
	}
	return n, nil
}

// callerSubject is the policy's name for a record's caller: the subject,
// qualified by its issuer's name ("" for the default issuer); false for an
// issuer no longer configured.
func (s *Service) callerSubject(issuer, subject string) (string, bool) {
	name, ok := s.Qualify(issuer)
	switch {
	case !ok:
		return "", false
	case name == "":
		return subject, true
	}
	return name + "/" + subject, true
}
