package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
)

// requiredClaim is one entry of Config.RequiredClaims, validated.
type requiredClaim struct {
	name   string
	values []claimValue
}

// claimValue is an accepted value of a required claim: a JSON string,
// boolean or number. Numbers are kept exactly, so 1, 1.0 and 1e0 are equal
// and large tenant ids do not lose digits.
type claimValue struct {
	kind byte // 's' string, 'b' boolean, 'n' number
	s    string
	b    bool
	n    *big.Rat
}

func (v claimValue) equal(w claimValue) bool {
	if v.kind != w.kind {
		return false
	}
	switch v.kind {
	case 's':
		return v.s == w.s
	case 'b':
		return v.b == w.b
	default:
		return v.n.Cmp(w.n) == 0
	}
}

// compileRequiredClaims validates Config.RequiredClaims and returns them in
// claim name order (so the first failing claim is always the same one).
func compileRequiredClaims(m map[string][]any) ([]requiredClaim, error) {
	var errs []error
	out := make([]requiredClaim, 0, len(m))
	for name, values := range m {
		if strings.TrimSpace(name) == "" {
			errs = append(errs, errors.New("required claims: a claim name is empty"))
			continue
		}
		if len(values) == 0 {
			errs = append(errs, fmt.Errorf("required claim %q lists no accepted values", name))
			continue
		}
		rc := requiredClaim{name: name}
		for i, raw := range values {
			v, err := configValue(raw)
			if err != nil {
				errs = append(errs, fmt.Errorf("required claim %q: value %d: %w", name, i+1, err))
				continue
			}
			rc.values = append(rc.values, v)
		}
		out = append(out, rc)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b requiredClaim) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// configValue converts a configured value: a string, a boolean, a Go number
// or a json.Number.
func configValue(raw any) (claimValue, error) {
	switch x := raw.(type) {
	case string:
		return claimValue{kind: 's', s: x}, nil
	case bool:
		return claimValue{kind: 'b', b: x}, nil
	case int:
		return numberValue(strconv.FormatInt(int64(x), 10))
	case int8:
		return numberValue(strconv.FormatInt(int64(x), 10))
	case int16:
		return numberValue(strconv.FormatInt(int64(x), 10))
	case int32:
		return numberValue(strconv.FormatInt(int64(x), 10))
	case int64:
		return numberValue(strconv.FormatInt(x, 10))
	case uint:
		return numberValue(strconv.FormatUint(uint64(x), 10))
	case uint8:
		return numberValue(strconv.FormatUint(uint64(x), 10))
	case uint16:
		return numberValue(strconv.FormatUint(uint64(x), 10))
	case uint32:
		return numberValue(strconv.FormatUint(uint64(x), 10))
	case uint64:
		return numberValue(strconv.FormatUint(x, 10))
	case float32:
		return floatValue(float64(x), 32)
	case float64:
		return floatValue(x, 64)
	case json.Number:
		return numberValue(string(x))
	}
	return claimValue{}, fmt.Errorf("%T is not supported (use a string, a number or a boolean)", raw)
}

// floatValue takes a float by its shortest decimal form, the one a config
// file or a JSON claim spells it with (0.1 is "0.1", not its binary value).
func floatValue(f float64, bits int) (claimValue, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return claimValue{}, fmt.Errorf("%v is not a JSON number", f)
	}
	return numberValue(strconv.FormatFloat(f, 'g', -1, bits))
}

// maxNumberLen and maxNumberExp bound the numbers compared exactly, so that a
// claim such as 1e999999999 cannot make the broker build a huge integer.
const (
	maxNumberLen = 100
	maxNumberExp = 400
)

// numberValue parses a JSON number exactly.
func numberValue(s string) (claimValue, error) {
	if len(s) == 0 || len(s) > maxNumberLen || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) || !json.Valid([]byte(s)) {
		return claimValue{}, fmt.Errorf("%q is not a JSON number of at most %d characters", s, maxNumberLen)
	}
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		exp, err := strconv.Atoi(strings.TrimPrefix(s[i+1:], "+"))
		if err != nil || exp > maxNumberExp || exp < -maxNumberExp {
			return claimValue{}, fmt.Errorf("%q has an exponent beyond ±%d", s, maxNumberExp)
		}
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return claimValue{}, fmt.Errorf("%q is not a number", s)
	}
	return claimValue{kind: 'n', n: r}, nil
}

// tokenValue converts one JSON value of a verified claim; ok is false for
// null, objects, arrays and numbers too large to compare.
func tokenValue(raw json.RawMessage) (claimValue, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return claimValue{}, false
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return claimValue{}, false
		}
		return claimValue{kind: 's', s: s}, true
	case 't', 'f':
		var b bool
		if json.Unmarshal(raw, &b) != nil {
			return claimValue{}, false
		}
		return claimValue{kind: 'b', b: b}, true
	case 'n', '{', '[':
		return claimValue{}, false
	}
	v, err := numberValue(string(raw))
	return v, err == nil
}

// checkRequiredClaims returns an error naming the first required claim the
// token does not satisfy. The message never carries the claim's value.
func checkRequiredClaims(required []requiredClaim, claims map[string]json.RawMessage) error {
	for _, rc := range required {
		raw, ok := claims[rc.name]
		if !ok || string(bytes.TrimSpace(raw)) == "null" {
			return fmt.Errorf("required claim %q is missing from the token", rc.name)
		}
		if !claimMatches(raw, rc.values) {
			return fmt.Errorf("required claim %q does not have an accepted value", rc.name)
		}
	}
	return nil
}

// claimMatches reports whether raw, or for an array one of its elements,
// equals one of values.
func claimMatches(raw json.RawMessage, values []claimValue) bool {
	candidates := []json.RawMessage{raw}
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '[' {
		candidates = nil
		if json.Unmarshal(t, &candidates) != nil {
			return false
		}
	}
	for _, c := range candidates {
		got, ok := tokenValue(c)
		if !ok {
			continue
		}
		for _, want := range values {
			if got.equal(want) {
				return true
			}
		}
	}
	return false
}

// isAccessTokenType reports whether a JOSE typ header marks an RFC 9068 JWT
// access token: "at+jwt", or with the optional "application/" prefix (RFC
// 7515 §4.1.9), in any case.
func isAccessTokenType(typ string) bool {
	t := strings.ToLower(typ)
	return t == "at+jwt" || t == "application/at+jwt"
}

// checkTokenType applies Config.TokenType to the token's typ header.
func checkTokenType(tokenType, typ string) error {
	access := isAccessTokenType(typ)
	switch {
	case tokenType == TokenTypeAccess && !access:
		if typ == "" {
			return errors.New(`token has no typ header; this issuer accepts JWT access tokens only (typ "at+jwt", RFC 9068)`)
		}
		return fmt.Errorf(`token's typ header is %s; this issuer accepts JWT access tokens only (typ "at+jwt", RFC 9068)`, clip(typ))
	case tokenType == TokenTypeID && access:
		return fmt.Errorf("token is a JWT access token (typ %s); this issuer accepts ID tokens only", clip(typ))
	}
	return nil
}

// checkScopes requires every scope of required in the token's scope claim, a
// space-separated string (RFC 9068 §2.2.3, RFC 8693 §4.2).
func checkScopes(required []string, claims map[string]json.RawMessage) error {
	if len(required) == 0 {
		return nil
	}
	raw, ok := claims["scope"]
	if !ok || string(bytes.TrimSpace(raw)) == "null" {
		return fmt.Errorf("token has no scope claim; required scopes: %s", strings.Join(required, " "))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return errors.New("token's scope claim is not a space-separated string")
	}
	granted := strings.Fields(s)
	for _, want := range required {
		if !slices.Contains(granted, want) {
			return fmt.Errorf("token lacks required scope %q", want)
		}
	}
	return nil
}
