package policy

// Policies as code: a whole policy as a YAML document kept in git
// (policies/policy.schema.json), and test files of expected decisions
// (policies/policy-tests.schema.json) evaluated offline with the engine.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/broker-dev/broker/internal/apperr"
)

// DocumentVersion is the version of the policy and test file formats.
const DocumentVersion = 1

// maxDocument bounds a policy or test document read, in bytes.
const maxDocument = 8 << 20

// DocRule is a rule as a policy document writes it.
type DocRule struct {
	Subject string `yaml:"subject"`
	Channel string `yaml:"channel"`
	Role    string `yaml:"role"`
	Effect  string `yaml:"effect"`
	// MaxTTL caps the lifetime of tokens the rule grants, in seconds; 0 or
	// absent: no cap of its own.
	MaxTTL int `yaml:"maxTTL,omitempty"`
	// Project is the Agora project, or "*"; absent: as Rule.Normalized says.
	Project string `yaml:"project,omitempty"`
	// Description is for the people reading the file; the broker keeps it
	// in the file only.
	Description string `yaml:"description,omitempty"`
}

// document is a policy file: its version and its rules.
type document struct {
	Version int       `yaml:"version"`
	Rules   []DocRule `yaml:"rules"`
}

// LineRule is a rule read from a document with the line it starts on.
type LineRule struct {
	Line int
	Rule Rule
}

// ReadDocument reads and validates a policy document (YAML): version 1 and
// its rules, each checked as Rule.Validate does. Unknown fields, a rule
// repeated, or a bad value are an Invalid error (a repeat: Conflict) whose
// message starts with "line N:".
func ReadDocument(r io.Reader) ([]LineRule, error) {
	var (
		root yaml.Node
		doc  document
	)
	if err := decodeStrict(r, &root, &doc); err != nil {
		return nil, err
	}
	if doc.Version != DocumentVersion {
		return nil, apperr.Field("version", "must be %d", DocumentVersion)
	}
	items := sequence(&root, "rules")
	out := make([]LineRule, 0, len(doc.Rules))
	seen := map[Line]int{}
	for i, d := range doc.Rules {
		line := 0
		if i < len(items) {
			line = items[i].Line
		}
		r := Rule{Subject: d.Subject, Channel: d.Channel, Role: Role(d.Role), Effect: Effect(d.Effect),
			MaxTTLSeconds: d.MaxTTL, Project: d.Project}
		if err := r.Validate(); err != nil {
			ae, _ := apperr.As(err)
			return nil, apperr.Field(ae.Field, "line %d: %s", line, ae.Message)
		}
		r = r.Normalized()
		l := lineFromRule(r)
		if first, dup := seen[l]; dup {
			return nil, apperr.New(apperr.Conflict, "line %d: the rule of line %d again", line, first)
		}
		seen[l] = line
		out = append(out, LineRule{Line: line, Rule: r})
	}
	return out, nil
}

// WriteDocument writes rules as a policy document, in the order given.
func WriteDocument(w io.Writer, rules []Rule) error {
	doc := document{Version: DocumentVersion, Rules: make([]DocRule, len(rules))}
	for i, r := range rules {
		r = r.Normalized()
		doc.Rules[i] = DocRule{Subject: r.Subject, Channel: r.Channel, Role: string(r.Role), Effect: string(r.Effect),
			MaxTTL: r.MaxTTLSeconds, Project: r.Project}
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("writing the policy document: %w", err)
	}
	return enc.Close()
}

// PolicyTest is one expected decision of a test file: for a caller
// (subject, groups) in a project, on a channel and role, or a login to a
// service (rtm, chat), allow or deny, and optionally by which rule (its
// text as Rule.String writes it, without the "#id ").
type PolicyTest struct {
	Name    string   `yaml:"name"`
	Subject string   `yaml:"subject"`
	Groups  []string `yaml:"groups,omitempty"`
	Project string   `yaml:"project,omitempty"`
	Channel string   `yaml:"channel,omitempty"`
	Role    string   `yaml:"role,omitempty"`
	Service string   `yaml:"service,omitempty"`
	Expect  string   `yaml:"expect"`
	Rule    string   `yaml:"rule,omitempty"`

	line int
}

// testFile is a test document.
type testFile struct {
	Version int          `yaml:"version"`
	Tests   []PolicyTest `yaml:"tests"`
}

// ReadTests reads a test document (YAML). Errors are Invalid, "line N:".
func ReadTests(r io.Reader) ([]PolicyTest, error) {
	var (
		root yaml.Node
		f    testFile
	)
	if err := decodeStrict(r, &root, &f); err != nil {
		return nil, err
	}
	if f.Version != DocumentVersion {
		return nil, apperr.Field("version", "must be %d", DocumentVersion)
	}
	items := sequence(&root, "tests")
	for i := range f.Tests {
		t := &f.Tests[i]
		if i < len(items) {
			t.line = items[i].Line
		}
		switch {
		case t.Name == "":
			return nil, apperr.Field("name", "line %d: every test needs a name", t.line)
		case t.Expect != string(Allow) && t.Expect != string(Deny):
			return nil, apperr.Field("expect", "line %d: must be allow or deny", t.line)
		case (t.Service == "") == (t.Channel == "" && t.Role == ""):
			return nil, apperr.Field("service", "line %d: give a channel and role, or a service (rtm or chat) to log in to", t.line)
		}
	}
	return f.Tests, nil
}

// TestResult is the outcome of one PolicyTest: Failure is empty when the
// engine decided as expected.
type TestResult struct {
	Test    PolicyTest
	Got     Decision
	Failure string
}

// RunTests decides every test against rules, offline, with the engine the
// broker decides with.
func RunTests(ctx context.Context, rules []Rule, tests []PolicyTest) ([]TestResult, error) {
	e, err := NewReplayer(ctx, rules)
	if err != nil {
		return nil, err
	}
	defer e.Close()
	out := make([]TestResult, len(tests))
	for i, t := range tests {
		project := t.Project
		if project == "" {
			project = DefaultProject
		}
		caller := Caller{Subject: t.Subject, Groups: t.Groups}
		var d Decision
		var err error
		if t.Service != "" {
			d, err = e.DecideLogin(caller, project, t.Service)
		} else {
			d, err = e.Decide(caller, project, t.Channel, Role(t.Role))
		}
		res := TestResult{Test: t, Got: d}
		got := Deny
		if d.Allowed {
			got = Allow
		}
		switch {
		case err != nil:
			ae, _ := apperr.As(err)
			res.Failure = "the request is not one the broker decides: " + ae.Message
		case string(got) != t.Expect:
			res.Failure = fmt.Sprintf("expected %s, got %s (%s)", t.Expect, got, d.Reason)
		case t.Rule != "" && (d.Rule == nil || ruleText(*d.Rule) != t.Rule):
			res.Failure = fmt.Sprintf("expected the rule %q to decide, got %s", t.Rule, d.Reason)
		}
		out[i] = res
	}
	return out, nil
}

// Line is the line of the test in its file (0 when unknown).
func (t PolicyTest) Line() int { return t.line }

// ruleText is r as Rule.String writes it without its "#id ".
func ruleText(r Rule) string {
	_, text, _ := strings.Cut(r.String(), " ")
	return text
}

// decodeStrict reads one YAML document of at most maxDocument bytes into v,
// refusing fields v does not have, and into root (for the lines).
func decodeStrict(r io.Reader, root *yaml.Node, v any) error {
	b, err := io.ReadAll(io.LimitReader(r, maxDocument+1))
	if err != nil {
		return err
	}
	if len(b) > maxDocument {
		return apperr.New(apperr.TooLarge, "the document is over %d bytes", maxDocument)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return apperr.Field("version", "the document is empty")
		}
		return yamlError(err)
	}
	if err := yaml.Unmarshal(b, root); err != nil {
		return yamlError(err)
	}
	return nil
}

// yamlError makes a YAML decoding error an Invalid error (the library's
// message names the line).
func yamlError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		return apperr.New(apperr.Invalid, "%s", strings.TrimPrefix(te.Errors[0], "yaml: "))
	}
	return apperr.New(apperr.Invalid, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
}

// sequence returns the items of the sequence under key in the document
// root (for their lines), or nil.
func sequence(root *yaml.Node, key string) []*yaml.Node {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key && n.Content[i+1].Kind == yaml.SequenceNode {
			return n.Content[i+1].Content
		}
	}
	return nil
}
