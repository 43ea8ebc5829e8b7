package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/broker-dev/broker/internal/token"
)

// Identity is the verified caller behind a request.
type Identity struct {
	// Issuer and Subject identify the caller globally (the token's iss and sub).
	Issuer, Subject string
	// Account is the value of the configured account claim.
	Account string
	// AccountError, when non-empty, says why Account cannot be used as an Agora
	// user account; account-based tokens are then unavailable for this caller.
	AccountError string
	// UID is the caller's numeric Agora uid when HasUID; it is only set when a
	// uid claim is configured.
	UID    uint32
	HasUID bool
	// Groups are the caller's groups from the configured groups claim.
	Groups []string
	// Email is the token's email claim, if any.
	Email string
}

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

// identityFrom builds the Identity from verified claims. It fails only when a
// configured claim is unusable in a way that must reject the token (uid,
// groups); a bad account only sets AccountError.
func (v *Verifier) identityFrom(std *standardClaims, claims map[string]json.RawMessage) (Identity, error) {
	id := Identity{Issuer: std.Issuer, Subject: std.Subject}

	id.Account, id.AccountError = accountFrom(v.cfg.AccountClaim, claims)

	groups, err := groupsFrom(v.cfg.GroupsClaim, claims[v.cfg.GroupsClaim])
	if err != nil {
		return Identity{}, err
	}
	id.Groups = groups

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

func accountFrom(name string, claims map[string]json.RawMessage) (account, problem string) {
	raw, ok := claims[name]
	if !ok || string(raw) == "null" {
		return "", fmt.Sprintf("account claim %q is missing from the token", name)
	}
	if err := json.Unmarshal(raw, &account); err != nil {
		return "", fmt.Sprintf("account claim %q is not a string", name)
	}
	if p := accountProblem(account); p != "" {
		return account, fmt.Sprintf("account claim %q %s", name, p)
	}
	return account, ""
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
