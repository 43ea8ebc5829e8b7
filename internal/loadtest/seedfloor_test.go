package loadtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSeedfloorCredentials_MatchTheSeedfloor checks the constants against
// the seed floor's source, when it is beside the repository.
func TestSeedfloorCredentials_MatchTheSeedfloor(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "bench", "seedfloor", "main.go"))
	if err != nil {
		t.Skipf("no seed floor source beside the repository: %v", err)
	}
	for name, want := range map[string]string{"appID": SeedfloorAppID, "appCert": SeedfloorAppCertificate} {
		m := regexp.MustCompile(`\b` + name + `\s*=\s*"([^"]*)"`).FindSubmatch(src)
		if m == nil {
			t.Errorf("seedfloor/main.go has no %s = \"…\"", name)
		} else if string(m[1]) != want {
			t.Errorf("seedfloor/main.go %s = %q, want %q", name, m[1], want)
		}
	}
}

// TestBuildSeedfloor_BuildsAReadOnlySource builds a stand-in module from a
// read-only directory: the build happens in a copy.
func TestBuildSeedfloor_BuildsAReadOnlySource(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	src := filepath.Join(t.TempDir(), "seedfloor")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{
		"go.mod":  "module example.com/seedfloor\n\ngo 1.22\n",
		"main.go": "package main\n\nfunc main() { println(\"seed\") }\n",
	} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(text), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(src, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(src, 0o755) }) // so TempDir can remove it
	out := filepath.Join(t.TempDir(), "seedfloor-bin")
	if err := BuildSeedfloor(src, out); err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command(out).CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != "seed" {
		t.Errorf("built seed floor: %v, output %q", err, got)
	}
	if entries, err := os.ReadDir(src); err != nil || len(entries) != 2 {
		t.Errorf("source directory changed: %v, %v", entries, err)
	}
}

func TestBuildSeedfloor_ReportsAMissingSource(t *testing.T) {
	err := BuildSeedfloor(filepath.Join(t.TempDir(), "nowhere"), filepath.Join(t.TempDir(), "bin"))
	if err == nil || !strings.Contains(err.Error(), "copy the seed floor") {
		t.Errorf("BuildSeedfloor of a missing directory: %v", err)
	}
}
