package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/broker-dev/broker/internal/token"
)

// Identity is the verified caller behind a request.
type Identity struct {
	// Issuer and Subject identify the caller globally (the token's iss and
	// sub, unqualified): uid bindings, sessions and audit records key on both.
	Issuer, Subject string
	// Qualifier is the Config.Name of the issuer that verified the token, ""
	// for the default issuer. It qualifies PolicySubject and Groups.
	Qualifier string
	// Account is the value of the configured account claim.
	Account string
	// AccountError, when non-empty, says why Account cannot be used as an Agora
	// user account; account-based tokens are then unavailable for this caller.
	AccountError string
	// UID is the caller's numeric Agora uid when HasUID; it is only set when a
	// uid claim is configured.
	UID    uint32
	HasUID bool
	// Groups are the caller's groups from the configured groups claim; for a
	// non-default issuer each is qualified as Qualifier + "/" + group, so that
	// policies tell the issuers' groups apart.
	Groups []string
	// GroupsError, when non-empty, says why the groups claim is unusable (a
	// name that is not text, or too many or too long names); Groups is then
	// empty and the broker refuses every token request of this caller.
	GroupsError string
	// Email is the token's email claim, if any.
	Email string
}

// PolicySubject is the caller's name in policies ("user:" + PolicySubject):
// Subject for the default issuer, Qualifier + "/" + Subject for the others.
func (id Identity) PolicySubject() string {
	if id.Qualifier == "" {
		return id.Subject
	}
	return qualify(id.Qualifier, id.Subject)
}

// qualify names a subject or group of the issuer called name.
func qualify(name, s string) string { return name + "/" + s }

type identityKey struct{}

// NewContext returns a copy of ctx that carries id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the Identity the middleware stored in ctx.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// accountProblem says why s cannot be an Agora user account, or returns "" if
// it can, by the token engine's rule (one definition of the character set).
func accountProblem(s string) string {
	var ie *token.InputError
	if err := token.ValidateAccount(s); errors.As(err, &ie) {
		return ie.Reason
	}
	return ""
}

// Bounds on the claims that name a caller. OpenID Connect subjects are at most
// 255 ASCII characters; group names get the same bound.
const (
	MaxSubjectLen = 255
	MaxGroupLen   = 255
	MaxGroups     = 100
)

// textProblem says why s cannot name a caller ("" if it can): NUL or other
// control characters, invalid UTF-8, or more than max bytes. Such values never
// reach the identities table or a policy.
func textProblem(s string, max int) string {
	switch {
	case len(s) > max:
		return fmt.Sprintf("is longer than %d bytes", max)
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return "contains a control character"
	}
	return ""
}

// identityFrom builds the Identity from verified claims. It fails only when a
// configured claim is unusable in a way that must reject the token (the uid,
// a groups claim of the wrong type); an unusable account or group name only
// sets AccountError or GroupsError, so that the refusal is recorded.
//
// A non-default issuer's subject and groups are qualified with its name, and
// must stay within MaxSubjectLen and MaxGroupLen once qualified. The default
// issuer's subject and groups must not look qualified by another issuer of
// the set (reserved): "partner/alice" from the default issuer would otherwise
// be the same policy subject as "alice" from the issuer named partner.
func (v *Verifier) identityFrom(std *standardClaims, claims map[string]json.RawMessage) (Identity, error) {
	id := Identity{Issuer: std.Issuer, Subject: std.Subject, Qualifier: v.cfg.Name}
	if id.Qualifier != "" {
		if p := textProblem(id.PolicySubject(), MaxSubjectLen); p != "" {
			return Identity{}, fmt.Errorf("token's sub claim qualified as %q %s", qualify(id.Qualifier, "<sub>"), p)
		}
	} else if other := v.reservedPrefix(id.Subject); other != "" {
		return Identity{}, fmt.Errorf("token's sub claim starts with %q, which names the subjects of issuer %q", qualify(other, ""), other)
	}

	id.Account, id.AccountError = accountFrom(v.cfg.AccountClaim, claims)
	if id.Qualifier != "" && id.AccountError == "" {
		// An Agora user account cannot carry the issuer (Agora's account
		// alphabet has no separator to spare), so the same e-mail from two
		// issuers would be one account: two identities joining as one user.
		id.AccountError = fmt.Sprintf("account-based tokens are only issued to the default issuer's users; users of issuer %q use uid tokens", id.Qualifier)
	}

	groups, err := groupsFrom(v.cfg.GroupsClaim, claims[v.cfg.GroupsClaim])
	if err != nil {
		return Identity{}, err
	}
	id.Groups, id.GroupsError = v.qualifyGroups(groups)
	if id.GroupsError != "" {
		id.GroupsError = fmt.Sprintf("groups claim %q: %s", v.cfg.GroupsClaim, id.GroupsError)
	}

	if v.cfg.UIDClaim != "" {
		uid, err := uidFrom(v.cfg.UIDClaim, claims[v.cfg.UIDClaim])
		if err != nil {
			return Identity{}, err
		}
		id.UID, id.HasUID = uid, true
	}

	if raw, ok := claims["email"]; ok {
		var email string
		if json.Unmarshal(raw, &email) == nil {
			id.Email = email
		}
	}
	return id, nil
}

// qualifyGroups qualifies a non-default issuer's groups and bounds them with
// CheckGroups; a default issuer's group that looks qualified by another
// issuer makes the groups unusable, like any other unusable name.
func (v *Verifier) qualifyGroups(groups []string) ([]string, string) {
	if v.cfg.Name == "" {
		for i, g := range groups {
			if other := v.reservedPrefix(g); other != "" {
				return nil, fmt.Sprintf("group %d starts with %q, which names the groups of issuer %q", i+1, qualify(other, ""), other)
			}
		}
		return CheckGroups(groups)
	}
	qualified := make([]string, len(groups))
	for i, g := range groups {
		qualified[i] = qualify(v.cfg.Name, g)
	}
	out, problem := CheckGroups(qualified)
	if problem != "" {
		problem += fmt.Sprintf(" (once qualified as %q)", qualify(v.cfg.Name, "<group>"))
	}
	return out, problem
}

// reservedPrefix returns the name of the other issuer whose qualified names
// s looks like, or "".
func (v *Verifier) reservedPrefix(s string) string {
	name, _, ok := strings.Cut(s, "/")
	if ok && v.reserved[name] {
		return name
	}
	return ""
}

func accountFrom(name string, claims map[string]json.RawMessage) (account, problem string) {
	raw, ok := claims[name]
	if !ok || string(raw) == "null" {
		return "", fmt.Sprintf("account claim %q is missing from the token", name)
	}
	if err := json.Unmarshal(raw, &account); err != nil {
		return "", fmt.Sprintf("account claim %q is not a string", name)
	}
	if p := accountProblem(account); p != "" {
		// The unusable value goes nowhere: not to a token, not to the
		// identities table, not to the log (the reason says what is wrong).
		return "", fmt.Sprintf("account claim %q %s", name, p)
	}
	return account, ""
}

// CheckGroups returns groups without repeats, or none and why they are
// unusable: more than MaxGroups distinct names, or a name that is not text or
// longer than MaxGroupLen. It is the one bound on groups, for the bearer
// path and for every input that names groups (explain).
func CheckGroups(groups []string) ([]string, string) {
	seen := make(map[string]bool, len(groups))
	var out []string
	for i, g := range groups {
		if p := textProblem(g, MaxGroupLen); p != "" {
			return nil, fmt.Sprintf("group %d %s", i+1, p)
		}
		if !seen[g] {
			if len(out) == MaxGroups {
				return nil, fmt.Sprintf("more than %d distinct groups", MaxGroups)
			}
			seen[g] = true
			out = append(out, g)
		}
	}
	return out, ""
}

// groupsFrom accepts a JSON array of strings or one string of names separated
// by spaces or commas; a missing claim means no groups.
func groupsFrom(name string, raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		out := list[:0]
		for _, g := range list {
			if g != "" {
				out = append(out, g)
			}
		}
		return out, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("groups claim %q must be an array of strings or a space/comma-separated string", name)
	}
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }), nil
}

// uidFrom accepts a JSON integer or a string of decimal digits in 1..2^32-1.
func uidFrom(name string, raw json.RawMessage) (uint32, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, fmt.Errorf("uid claim %q is missing from the token", name)
	}
	text := string(raw)
	var s string
	if json.Unmarshal(raw, &s) == nil {
		text = s
	}
	n, err := strconv.ParseUint(text, 10, 32)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("uid claim %q must be an integer between 1 and 4294967295", name)
	}
	return uint32(n), nil
}
