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
		if row := "| `" + s.env + "` | `--" + s.flag + "`, `" + s.fileKey() + "` |"; !strings.Contains(string(readme), row) {
			t.Errorf("README.md's configuration table has no row starting %s", row)
		}
	}
}
