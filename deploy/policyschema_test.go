package deploy

import (
	"os"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"
)

// TestPolicySchemas_AcceptTheExamplesAndRefuseMistakes: the JSON Schemas of
// the policy document and its tests (policies/) accept the files of
// examples/policy/, which `broker policy test` runs, and refuse a file with
// an unknown field or a missing one.
func TestPolicySchemas_AcceptTheExamplesAndRefuseMistakes(t *testing.T) {
	for _, c := range []struct{ schema, example, bad string }{
		{"../policies/policy.schema.json", "../examples/policy/policy.yaml",
			"version: 1\nrules:\n  - {subject: '*', channel: x, role: owner, effect: allow}\n"},
		{"../policies/policy-tests.schema.json", "../examples/policy/tests.yaml",
			"version: 1\ntests:\n  - {name: n, subject: a, service: rtm, channel: c, expect: allow}\n"},
	} {
		t.Run(c.example, func(t *testing.T) {
			comp := jsonschema.NewCompiler()
			f, err := os.Open(c.schema)
			if err != nil {
				t.Fatal(err)
			}
			doc, err := jsonschema.UnmarshalJSON(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if err := comp.AddResource(c.schema, doc); err != nil {
				t.Fatal(err)
			}
			sch, err := comp.Compile(c.schema)
			if err != nil {
				t.Fatal(err)
			}
			check := func(text string) error {
				j, err := yaml.YAMLToJSON([]byte(text))
				if err != nil {
					t.Fatal(err)
				}
				v, err := jsonschema.UnmarshalJSON(strings.NewReader(string(j)))
				if err != nil {
					t.Fatal(err)
				}
				return sch.Validate(v)
			}
			example, err := os.ReadFile(c.example)
			if err != nil {
				t.Fatal(err)
			}
			if err := check(string(example)); err != nil {
				t.Errorf("%s does not follow %s: %v", c.example, c.schema, err)
			}
			if err := check(c.bad); err == nil {
				t.Errorf("%s accepts %q", c.schema, c.bad)
			}
		})
	}
}
