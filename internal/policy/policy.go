// Package policy owns who may hold which role on which Agora channel, and who
// may administer the broker: the Casbin model and its channel matcher, the
// rule stores (Postgres via our own pgx adapter, and in memory), change
// notifications between replicas, the decision index and explanations.
// It must never grant by default, and never answer from a decision that a
// committed change could have altered.
//
// Semantics. A rule names a subject ("user:<sub>", "group:<name>" or "*"), a
// channel (an exact Agora channel name, or a pattern in which "*" is the only
// wildcard and matches any run of characters), a role (publisher or
// subscriber), an effect (allow or deny) and an optional maximum token
// lifetime. Access is denied unless an allow rule matches, and any matching
// deny beats every allow. Publisher includes subscriber: an allow on publisher
// also allows subscriber, a deny on subscriber also denies publisher.
//
// A request may name a pattern instead of a channel (a wildcard token). An
// allow rule grants it only if the rule's pattern covers every channel the
// requested pattern can match; a deny rule refuses it as soon as the two
// patterns share a channel. For a plain channel name, covering and sharing
// both mean matching. Patterns are compared as languages over all strings:
// the 63-byte limit on channel names is not taken into account, so a deny
// blocks a wildcard request even when every channel the two patterns share is
// longer than Agora allows (no real channel is at stake then). That errs on
// the side of refusing.
//
// The deciding rule reported with a Decision is: when denied by a rule, the
// matching deny rule with the lowest id; when allowed, the matching allow
// rule granting the longest token lifetime (no limit beats any limit), ties
// going to the lowest id; when no rule matches, none.
//
// Login rules govern the logins of services without channels: a rule with
// role "login" names the service ("rtm" or "chat") where a channel rule names
// a channel. Default deny, any matching deny beats every allow, and the
// deciding rule is chosen as for channels. They are stored under their own
// Casbin policy type (p3).
//
// Projects. Every rule names the Agora project it applies in, or "*" for
// every project; a request is decided on the rules of its project and the
// "*" rules together. Admin rights name a project too: a right on project X
// covers X only, a right on "*" (a global right) every project and the "*"
// rules themselves. A rule stored before projects existed (or written by
// the previous release) has no project: channel and login rules then belong
// to DefaultProject, admin rights are global (Rule.Normalized).
//
// Admin rights are rules too, with role read or write on the objects
// api:policies, api:audit and api:rights. They are stored under their own
// Casbin policy type (p2), so a channel that happens to be called
// "api:policies" never grants them.
//
// Separation of duties. Write on api:policies changes channel rules only;
// adding or removing an admin right (any api:* rule, one's own included)
// takes write on api:rights. So a channel admin can neither read the log
// that audits them (unless given api:audit) nor remove an auditor, and an
// auditor cannot change policy. The engine checks this on every change made
// for a signed-in caller (Actor.Caller); operators with database access
// (Actor.Operator: the CLI, bootstrap) could write the tables anyway.
//
// Casbin is the source of truth: every snapshot of the rules is loaded into a
// Casbin enforcer built from policies/model.conf, and admin checks ask it
// directly. Channel decisions go through an index built from the same rules
// (per-subject buckets; exact names in a map, patterns in a prefix trie), so
// that they cost microseconds at 100,000 rules; a property test holds the
// index to Casbin's answers. A snapshot is replaced, never edited, after every
// change, so there is no cache to go stale.
package policy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/broker-dev/broker/internal/apperr"
)

// Role is what a rule grants. Publisher and Subscriber are channel roles;
// Read and Write are admin actions on an API object.
type Role string

// The roles.
const (
	Publisher  Role = "publisher"
	Subscriber Role = "subscriber"
	Read       Role = "read"
	Write      Role = "write"
	Login      Role = "login"
)

// The services whose logins login rules govern (a login rule's Channel).
const (
	LoginRTM  = "rtm"
	LoginChat = "chat"
)

// Effect says whether a rule allows or denies.
type Effect string

// The effects.
const (
	Allow Effect = "allow"
	Deny  Effect = "deny"
)

// The API objects that admin rights (roles Read and Write) apply to.
const (
	ObjectPolicies = "api:policies"   // channel rules: read lists and explains, write changes
	ObjectAudit    = "api:audit"      // the issuance log: read searches, exports and verifies
	ObjectRights   = "api:rights"     // admin rights: write adds and removes any api:* rule
	ObjectChatApp  = "api:chat-app"   // read gets a Chat app token (a Chat REST API credential)
	ObjectTokenURL = "api:token-urls" // write lists and revokes anyone's token URLs
	// ObjectRevocations: write revokes the tokens issued to a user (Agora
	// bans, new tokens blocked) and lifts revocations; read lists them.
	ObjectRevocations = "api:revocations"
)

// objects lists the API objects, and adminActions the rights each has.
var (
	objects      = []string{ObjectPolicies, ObjectAudit, ObjectRights, ObjectChatApp, ObjectTokenURL, ObjectRevocations}
	adminActions = map[string][]Role{
		ObjectPolicies:    {Read, Write},
		ObjectAudit:       {Read, Write},
		ObjectRights:      {Write},
		ObjectChatApp:     {Read},
		ObjectTokenURL:    {Write},
		ObjectRevocations: {Read, Write},
	}
)

// DefaultProject is the project of the single-project settings
// (BROKER_APP_ID) and of every channel and login rule that names none.
const DefaultProject = "default"

// AllProjects, as a rule's project, makes the rule apply in every project;
// as an admin right's, makes the right global.
const AllProjects = "*"

// MaxProjectLen bounds a project name.
const MaxProjectLen = 32

// CheckProjectName returns an error when name is not a valid project name:
// 1 to 32 characters of a-z, 0-9 and '-' ("*" is not a name but a scope).
func CheckProjectName(name string) error {
	if name == "" || len(name) > MaxProjectLen {
		return fmt.Errorf("a project name has 1 to %d characters", MaxProjectLen)
	}
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return errors.New("a project name may only contain a-z, 0-9 and '-'")
		}
	}
	return nil
}

// MaxTTLSecondsLimit is the largest maxTtlSeconds a rule may set (24 hours).
const MaxTTLSecondsLimit = 86400

// maxSubjectLen bounds a subject: OpenID Connect subjects are at most 255
// ASCII characters, plus the "user:" or "group:" prefix.
const maxSubjectLen = 262

// Rule is one policy rule. For admin rights (Role Read or Write), Channel
// names the API object (ObjectPolicies or ObjectAudit), Effect is Allow and
// MaxTTLSeconds is 0.
type Rule struct {
	ID      int64  `json:"id"`
	Subject string `json:"subject"`
	Channel string `json:"channel"`
	Role    Role   `json:"role"`
	Effect  Effect `json:"effect"`
	// MaxTTLSeconds caps the lifetime of tokens the rule grants; 0 sets no
	// cap of its own.
	MaxTTLSeconds int `json:"maxTtlSeconds"`
	// Project is the Agora project the rule applies in, or AllProjects; ""
	// is read as Normalized says.
	Project string `json:"project"`
}

// Normalized returns r with its project filled in when it names none:
// DefaultProject for a channel or login rule, AllProjects for an admin
// right, which is what such a rule meant before projects existed.
func (r Rule) Normalized() Rule {
	if r.Project == "" {
		r.Project = DefaultProject
		if r.IsAdmin() {
			r.Project = AllProjects
		}
	}
	return r
}

// IsAdmin reports whether r is an admin right rather than a channel rule.
func (r Rule) IsAdmin() bool { return r.Role == Read || r.Role == Write }

// IsLogin reports whether r is a login rule (RTM or Chat).
func (r Rule) IsLogin() bool { return r.Role == Login }

// MaxTTL returns MaxTTLSeconds as a duration; 0 means no cap.
func (r Rule) MaxTTL() time.Duration { return time.Duration(r.MaxTTLSeconds) * time.Second }

// String describes r in one line, e.g. for the issuance log:
// `#12 allow group:dev publisher "demo-*" maxTtl=3600s`, with
// ` project=<name>` at the end for a rule outside the default project.
func (r Rule) String() string { return string(r.appendTo(make([]byte, 0, 96))) }

func (r Rule) appendTo(b []byte) []byte {
	b = append(b, '#')
	b = strconv.AppendInt(b, r.ID, 10)
	b = append(b, ' ')
	b = append(b, r.Effect...)
	b = append(b, ' ')
	b = append(b, r.Subject...)
	b = append(b, ' ')
	b = append(b, r.Role...)
	b = append(b, ' ')
	b = strconv.AppendQuote(b, r.Channel)
	if r.MaxTTLSeconds > 0 {
		b = append(b, " maxTtl="...)
		b = strconv.AppendInt(b, int64(r.MaxTTLSeconds), 10)
		b = append(b, 's')
	}
	if p := r.Normalized().Project; p != DefaultProject {
		b = append(b, " project="...)
		b = append(b, p...)
	}
	return b
}

// Validate checks every field of r (not its ID; an empty project is read as
// Normalized says) and returns an *apperr.Error of kind Invalid whose Field
// names the first bad one.
func (r Rule) Validate() error {
	if ps := r.Problems(); len(ps) > 0 {
		return ps[0]
	}
	return nil
}

// Problems lists everything wrong with r (Invalid errors naming their
// field), so that a form can show them all at once; Validate reports the
// first.
func (r Rule) Problems() []error {
	var out []error
	add := func(err error) {
		if err != nil {
			out = append(out, err)
		}
	}
	add(validateSubject(r.Subject))
	if r.Project != "" && r.Project != AllProjects {
		if err := CheckProjectName(r.Project); err != nil {
			add(apperr.Field("project", `must be "*" or a project name: %s`, err))
		}
	}
	allowOrDeny := func() {
		if r.Effect != Allow && r.Effect != Deny {
			add(apperr.Field("effect", "must be allow or deny"))
		}
	}
	switch r.Role {
	case Publisher, Subscriber:
		add(validatePattern(r.Channel))
		allowOrDeny()
	case Login:
		if r.Channel != LoginRTM && r.Channel != LoginChat {
			add(apperr.Field("channel", "a login rule names the service %q or %q", LoginRTM, LoginChat))
		}
		allowOrDeny()
	case Read, Write:
		if !containsString(objects, r.Channel) {
			add(apperr.Field("channel", "an admin right (role %s) applies to %s", r.Role, strings.Join(objects, ", ")))
		} else if acts := adminActions[r.Channel]; !slices.Contains(acts, r.Role) {
			add(apperr.Field("role", "%s has only the %s right", r.Channel, acts[0]))
		}
		if r.Effect != Allow {
			add(apperr.Field("effect", "an admin right can only allow"))
		}
		if r.MaxTTLSeconds != 0 {
			add(apperr.Field("maxTtlSeconds", "an admin right has no token lifetime"))
		}
	default:
		add(apperr.Field("role", "must be publisher, subscriber, login, read or write"))
	}
	if r.MaxTTLSeconds < 0 || r.MaxTTLSeconds > MaxTTLSecondsLimit {
		add(apperr.Field("maxTtlSeconds", "must be 0 (no limit) or 1..%d", MaxTTLSecondsLimit))
	}
	return out
}

// validateSubject checks a rule subject: "user:<sub>", "group:<name>" or "*".
func validateSubject(s string) error {
	if s == "*" {
		return nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || (kind != "user" && kind != "group") {
		return apperr.Field("subject", `must be "user:<sub>", "group:<name>" or "*"`)
	}
	if name == "" {
		return apperr.Field("subject", "the %s name is empty", kind)
	}
	if len(s) > maxSubjectLen {
		return apperr.Field("subject", "longer than %d bytes", maxSubjectLen)
	}
	if !utf8.ValidString(name) {
		return apperr.Field("subject", "not valid UTF-8")
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f {
			return apperr.Field("subject", "contains a control character")
		}
	}
	return nil
}

// Caller is who asks for a decision: the subject and groups of a verified
// token. Groups come from the token at request time.
type Caller struct {
	Subject string
	Groups  []string
}

// appliesTo reports whether a rule subject applies to c.
func (c Caller) appliesTo(subject string) bool {
	if subject == "*" {
		return true
	}
	if name, ok := strings.CutPrefix(subject, "user:"); ok {
		return c.Subject != "" && name == c.Subject
	}
	if name, ok := strings.CutPrefix(subject, "group:"); ok {
		return name != "" && containsString(c.Groups, name)
	}
	return false
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Actor is who makes a change: for the history, the subject of the admin (or
// "cli:<os user>") and the request id; for the rights check, either the
// signed-in Caller, whose rights the engine checks against the change, or
// Operator for someone with direct database access. The zero Actor may
// change nothing.
type Actor struct {
	Subject   string
	RequestID string
	// Caller is the signed-in admin making the change: channel rules need
	// write on ObjectPolicies, admin rights write on ObjectRights.
	Caller Caller
	// Operator marks a change made with direct database access (the CLI,
	// bootstrap, broker dev's example policies): no right is checked, since
	// the operator could write the tables anyway.
	Operator bool
}

// Filter selects rules. Empty fields select everything; Channel is compared
// with the rule's channel as written (a pattern is not expanded); Projects
// keeps the rules whose (normalized) project is one of them. After and
// Limit page Engine.List (stores ignore them and Projects): rules with ids
// above After, at most Limit of them (0: all).
type Filter struct {
	Subject  string
	Channel  string
	Projects []string
	After    int64
	Limit    int

	// The filters people search with (Engine.List, Count and Query; stores
	// ignore them). SubjectLike and ChannelLike match the rule's subject
	// and channel as text, "*" matching any run of characters: "team-*"
	// finds team-1 and the pattern team-* alike, "*dev*" every one that
	// contains dev; a subject without "user:" or "group:" (and not "*")
	// matches the name after either.
	SubjectLike, ChannelLike string
	Role                     Role
	Effect                   Effect
	// (ChannelLike "*", which as a pattern would select everything, as no
	// filter does, keeps the rules of the channel pattern "*".)
	// AppliesToChannel keeps the rules whose channel (a name or a pattern)
	// matches that channel name, or shares a channel with that pattern.
	AppliesToChannel string
	// AppliesTo keeps the rules that name the caller: "*", user:<subject>,
	// or group:<g> for one of its groups.
	AppliesTo *Caller
	// Kind keeps the rules of one kind: KindRights (admin rights) or
	// KindAccess (channel and login rules); "" both.
	Kind string
	// Sort orders Engine.Query's rules by one of SortKeys ("" is "id"), a
	// leading "-" descending; ties in id order (reversed when descending).
	Sort string
	// Offset skips that many of Engine.Query's sorted rules.
	Offset int
}

// Rule kinds of Filter.Kind.
const (
	KindAccess = "access" // channel and login rules: who gets tokens
	KindRights = "rights" // admin rights: who manages rules and reads the log
)

// SortKeys are the orders of Engine.Query.
var SortKeys = []string{"id", "subject", "channel", "role", "effect", "project"}

// keeps reports whether f selects r (already normalized).
func (f Filter) keeps(r Rule) bool {
	if (f.Subject != "" && r.Subject != f.Subject) || (f.Channel != "" && r.Channel != f.Channel) ||
		(f.Projects != nil && !slices.Contains(f.Projects, r.Project)) ||
		(f.Role != "" && r.Role != f.Role) || (f.Effect != "" && r.Effect != f.Effect) ||
		(f.Kind == KindRights && !r.IsAdmin()) || (f.Kind == KindAccess && r.IsAdmin()) {
		return false
	}
	if f.SubjectLike != "" && !subjectLike(f.SubjectLike, r.Subject) {
		return false
	}
	if f.ChannelLike != "" && !(f.ChannelLike == "*" && r.Channel == "*" || f.ChannelLike != "*" && textLike(f.ChannelLike, r.Channel)) {
		return false
	}
	if f.AppliesToChannel != "" && !overlaps(r.Channel, f.AppliesToChannel) {
		return false
	}
	if c := f.AppliesTo; c != nil {
		name, isGroup := strings.CutPrefix(r.Subject, "group:")
		if r.Subject != "*" && r.Subject != "user:"+c.Subject && !(isGroup && slices.Contains(c.Groups, name)) {
			return false
		}
	}
	return true
}

// subjectLike is textLike on a subject, where a pattern that names no kind
// (user:, group:) is matched against the name after it, and "*" (which as a
// pattern would select everything, as no filter does) the subject "*".
func subjectLike(pattern, subject string) bool {
	if pattern == "*" {
		return subject == "*"
	}
	if strings.HasPrefix(pattern, "user:") || strings.HasPrefix(pattern, "group:") {
		return textLike(pattern, subject)
	}
	for _, kind := range []string{"user:", "group:"} {
		if name, ok := strings.CutPrefix(subject, kind); ok {
			return textLike(pattern, name)
		}
	}
	return textLike(pattern, subject)
}

// textLike reports whether s matches pattern, where "*" matches any run of
// characters (a "*" of s among them) and every other byte itself.
func textLike(pattern, s string) bool {
	star, from := -1, 0 // the last "*" of pattern seen, and where in s its run ends
	p, i := 0, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, from = p, i
			p++
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case star >= 0:
			from++
			p, i = star+1, from
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// keepsLine reports whether a store's filter (subject and channel) keeps l.
func (f Filter) keepsLine(l Line) bool {
	return (f.Subject == "" || l.V[0] == f.Subject) && (f.Channel == "" || l.V[1] == f.Channel)
}

// Decision is the answer to "may this caller hold this role on this channel".
type Decision struct {
	Allowed bool `json:"allowed"`
	// Rule is the deciding rule (see the package documentation), nil when no
	// rule matched.
	Rule *Rule `json:"rule,omitempty"`
	// MaxTTL caps the token lifetime when allowed; 0 means the policy sets no
	// cap (the broker's own maximum still applies).
	MaxTTL time.Duration `json:"-"`
	// Reason explains the decision in one sentence, safe to show the caller.
	Reason string `json:"reason"`
}
