package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// configFileEnv names the configuration file (also --config).
const configFileEnv = "BROKER_CONFIG"

// fileKey is a setting's key in the configuration file: its flag in
// camelCase, initialisms upper-cased as Go writes them (database-url →
// databaseURL, app-id → appID, max-ttl → maxTTL).
func (s setting) fileKey() string {
	var b strings.Builder
	for i, w := range strings.Split(s.flag, "-") {
		switch {
		case i > 0 && (w == "url" || w == "id" || w == "ttl"):
			b.WriteString(strings.ToUpper(w))
		case i > 0:
			r := []rune(w)
			r[0] = unicode.ToUpper(r[0])
			b.WriteString(string(r))
		default:
			b.WriteString(w)
		}
	}
	return b.String()
}

// fileValue is one setting read from the file, with where it was.
type fileValue struct {
	value string
	line  int
}

// configFile is what the configuration file holds: settings by their
// environment name, and the identity providers.
type configFile struct {
	path     string
	settings map[string]fileValue
	issuers  []issuerSpec
	projects []projectSpec
	warnings []string // said by serve's log and config check; never a value
}

// issuerSpec is one entry of the file's issuers list, as written.
type issuerSpec struct {
	Line           int
	Name           string
	Issuer         string
	Audiences      []string
	Algorithms     []string
	AccountClaim   string
	GroupsClaim    string
	UIDClaim       string
	RequiredClaims map[string][]any
	TokenType      string
	RequiredScopes []string
}

// issuerKeys are the keys an issuers entry may have.
var issuerKeys = []string{"name", "issuer", "audiences", "algorithms", "accountClaim", "groupsClaim", "uidClaim",
	"requiredClaims", "tokenType", "requiredScopes"}

// readConfigFile reads and checks path strictly: every key must be known
// (errors name the key and its line), and each value must have the shape
// its key takes. Values are validated later, with the environment's, by the
// settings' own rules.
func readConfigFile(path string) (*configFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", configFileEnv, errors.Unwrap(err))
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	f := &configFile{path: path, settings: map[string]fileValue{}}
	if doc.Kind == 0 { // empty file
		return f, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s line %d: the file must be a mapping of settings", path, root.Line)
	}
	byKey := map[string]setting{}
	var known []string
	for _, s := range settings() {
		byKey[s.fileKey()] = s
		known = append(known, s.fileKey())
	}
	known = append(known, "issuers", "projects")
	var errs []error
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if seen[k.Value] {
			errs = append(errs, fmt.Errorf("%s line %d: %q is set twice", path, k.Line, k.Value))
			continue
		}
		seen[k.Value] = true
		if k.Value == "issuers" {
			issuers, err := readIssuers(path, v)
			if err != nil {
				errs = append(errs, err)
			}
			f.issuers = issuers
			continue
		}
		if k.Value == "projects" {
			projects, err := readProjects(path, v)
			if err != nil {
				errs = append(errs, err)
			}
			f.projects = projects
			continue
		}
		s, ok := byKey[k.Value]
		if !ok {
			errs = append(errs, fmt.Errorf("%s line %d: unknown key %q%s", path, k.Line, k.Value, suggest(k.Value, known)))
			continue
		}
		value, err := scalarOrList(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s line %d: %s: %v", path, v.Line, k.Value, err))
			continue
		}
		f.settings[s.env] = fileValue{value: value, line: v.Line}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var secrets []string
	for _, s := range settings() {
		if _, ok := f.settings[s.env]; ok && s.secret {
			secrets = append(secrets, s.fileKey())
		}
	}
	if slices.ContainsFunc(f.projects, func(p projectSpec) bool { return len(p.Certificates) > 0 }) {
		secrets = append(secrets, "projects' certificates")
	}
	if fi, err := os.Stat(path); err == nil && len(secrets) > 0 && fi.Mode().Perm()&0o077 != 0 {
		f.warnings = append(f.warnings, fmt.Sprintf("%s holds secrets (%s) and other users may read it (mode %04o): chmod 600 it, or keep the secrets in the environment or in <NAME>_FILE files",
			path, strings.Join(secrets, ", "), fi.Mode().Perm()))
	}
	return f, nil
}

// scalarOrList reads a setting's value: a scalar, or for list settings a
// sequence of scalars (joined with commas, as the environment writes them).
func scalarOrList(n *yaml.Node) (string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Value, nil
	case yaml.SequenceNode:
		var items []string
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return "", fmt.Errorf("line %d: a list of plain values is expected", item.Line)
			}
			if strings.Contains(item.Value, ",") {
				return "", fmt.Errorf("line %d: a list item must not contain a comma", item.Line)
			}
			items = append(items, item.Value)
		}
		return strings.Join(items, ","), nil
	}
	return "", errors.New("a value or a list of values is expected")
}

// readIssuers reads the issuers list: each entry a mapping of issuerKeys.
func readIssuers(path string, n *yaml.Node) ([]issuerSpec, error) {
	return readEntries(path, "issuers", "issuer", n, func(line int) issuerSpec { return issuerSpec{Line: line} }, (*issuerSpec).set)
}

// readEntries reads one of the file's lists of mappings (issuers,
// projects): each entry made by entry from its line, each of its keys set
// once, through set. Errors name the file, the line and the list.
func readEntries[T any](path, list, one string, n *yaml.Node, entry func(line int) T, set func(*T, string, *yaml.Node) error) ([]T, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%s line %d: %s must be a list", path, n.Line, list)
	}
	var out []T
	var errs []error
	for _, item := range n.Content {
		if item.Kind != yaml.MappingNode {
			errs = append(errs, fmt.Errorf("%s line %d: each %s must be a mapping", path, item.Line, one))
			continue
		}
		spec := entry(item.Line)
		seen := map[string]bool{}
		for i := 0; i+1 < len(item.Content); i += 2 {
			k, v := item.Content[i], item.Content[i+1]
			if seen[k.Value] {
				errs = append(errs, fmt.Errorf("%s line %d: %s: %q is set twice", path, k.Line, list, k.Value))
				continue
			}
			seen[k.Value] = true
			if err := set(&spec, k.Value, v); err != nil {
				errs = append(errs, fmt.Errorf("%s line %d: %s: %w", path, k.Line, list, err))
			}
		}
		out = append(out, spec)
	}
	return out, errors.Join(errs...)
}

// entryValues returns the readers of an entry's value v for key: str takes
// a single value, list a value or a list of values (as settings take them).
func entryValues(key string, v *yaml.Node) (str func(*string) error, list func(*[]string) error) {
	str = func(dst *string) error {
		if v.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s must be a single value", key)
		}
		*dst = v.Value
		return nil
	}
	list = func(dst *[]string) error {
		value, err := scalarOrList(v)
		if err != nil {
			return fmt.Errorf("%s: %v", key, err)
		}
		*dst = splitList(value)
		return nil
	}
	return str, list
}

// set stores one key of an issuers entry.
func (s *issuerSpec) set(key string, v *yaml.Node) error {
	str, list := entryValues(key, v)
	switch key {
	case "name":
		return str(&s.Name)
	case "issuer":
		return str(&s.Issuer)
	case "audiences":
		return list(&s.Audiences)
	case "algorithms":
		return list(&s.Algorithms)
	case "accountClaim", "groupsClaim", "uidClaim":
		var name string
		if err := str(&name); err != nil {
			return err
		}
		if err := checkClaimName(name); err != nil {
			return fmt.Errorf("%s %v", key, err)
		}
		switch key {
		case "accountClaim":
			s.AccountClaim = name
		case "groupsClaim":
			s.GroupsClaim = name
		default:
			s.UIDClaim = name
		}
		return nil
	case "tokenType":
		return str(&s.TokenType)
	case "requiredScopes":
		return list(&s.RequiredScopes)
	case "requiredClaims":
		if v.Kind != yaml.MappingNode {
			return errors.New("requiredClaims must map claim names to a value or a list of values")
		}
		s.RequiredClaims = map[string][]any{}
		for i := 0; i+1 < len(v.Content); i += 2 {
			claim, val := v.Content[i].Value, v.Content[i+1]
			if _, dup := s.RequiredClaims[claim]; dup {
				return fmt.Errorf("requiredClaims.%s is set twice", claim)
			}
			items := []*yaml.Node{val}
			if val.Kind == yaml.SequenceNode {
				items = val.Content
			}
			values := make([]any, 0, len(items))
			for _, item := range items {
				value, err := claimValue(item)
				if err != nil {
					return fmt.Errorf("requiredClaims.%s: %v", claim, err)
				}
				values = append(values, value)
			}
			s.RequiredClaims[claim] = values // an empty list is refused by auth
		}
		return nil
	}
	return fmt.Errorf("unknown key %q%s", key, suggest(key, issuerKeys))
}

// plainNumber is a number as JSON writes it: what a claim holds.
var plainNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

// claimValue reads one accepted value of a required claim exactly as written:
// a number keeps every digit (json.Number, never YAML's octal or hex
// readings), a boolean is true or false, anything quoted is a string.
func claimValue(n *yaml.Node) (any, error) {
	if n.Kind != yaml.ScalarNode {
		return nil, errors.New("a value or a list of values is expected")
	}
	switch n.ShortTag() {
	case "!!str":
		return n.Value, nil
	case "!!bool":
		if n.Value == "true" || n.Value == "false" {
			return n.Value == "true", nil
		}
	case "!!int", "!!float":
		if plainNumber.MatchString(n.Value) {
			return json.Number(n.Value), nil
		}
	}
	return nil, fmt.Errorf("line %d: %q is not a string, true, false or a decimal number; quote it to mean the string", n.Line, n.Value)
}

// suggest names the known key closest to an unknown one, when one is close.
func suggest(key string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := distance(strings.ToLower(key), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = slices.Min([]int{prev[j] + 1, cur[j-1] + 1, prev[j-1] + cost})
		}
		prev = cur
	}
	return prev[len(b)]
}
