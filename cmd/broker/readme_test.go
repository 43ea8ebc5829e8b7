package main

import (
	"os"
	"strings"
	"testing"
)

// TestREADME_DocumentsEveryVariable keeps the README's configuration table in
// step with the settings the broker reads.
func TestREADME_DocumentsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings() {
		if !strings.Contains(string(readme), "`"+s.env+"`") || !strings.Contains(string(readme), "`--"+s.flag+"`") {
			t.Errorf("README.md does not document %s (--%s)", s.env, s.flag)
		}
	}
}
