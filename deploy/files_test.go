package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the broker repository, the parent of this module.
const repoRoot = ".."

// repoLinks is where the tests read the repository's files that lie outside
// this module. go test caches a passing result and reruns it only when a file
// the test opened changes, but it watches only files inside the module: read
// as ../Dockerfile, an edited Dockerfile would still report the old "ok
// (cached)". Each entry here is a symlink to the real file, so the path is
// inside the module and go test notices every change.
const repoLinks = "testdata/repo"

// linked lists the symlinks under repoLinks, relative to the repository root.
var linked = []string{"Dockerfile", ".dockerignore", "docker-compose.yml", "go.mod", "cmd/broker", "README.md"}

// repoPath returns where to read a repository file (rel is relative to the
// repository root): this module's own files directly, others through repoLinks.
func repoPath(rel string) string {
	if own, ok := strings.CutPrefix(rel, "deploy/"); ok {
		return filepath.FromSlash(own)
	}
	return filepath.Join(repoLinks, filepath.FromSlash(rel))
}

// readFile returns a file of the repository, relative to its root.
func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(repoPath(rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return b
}

func TestRepoLinks_PointAtTheRealFiles(t *testing.T) {
	for _, rel := range linked {
		link := repoPath(rel)
		li, err := os.Lstat(link)
		if err != nil || li.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s must be a symlink to %s/%s (err %v)", link, repoRoot, rel, err)
			continue
		}
		got, err1 := os.Stat(link)
		want, err2 := os.Stat(filepath.Join(repoRoot, filepath.FromSlash(rel)))
		if err1 != nil || err2 != nil || !os.SameFile(got, want) {
			t.Errorf("%s does not lead to %s/%s (%v, %v)", link, repoRoot, rel, err1, err2)
		}
	}
}

// secretWords mark an environment variable, build argument or ConfigMap key
// whose value is a credential (or contains one, like a database URL).
var secretWords = []string{"PASSWORD", "SECRET", "CERTIFICATE", "KEY", "TOKEN", "CREDENTIAL", "DATABASE_URL", "PRIVATE"}

// isSecretName reports whether a variable of this name holds a secret.
func isSecretName(name string) bool {
	n := strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	for _, w := range secretWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

func TestIsSecretName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"BROKER_APP_CERTIFICATE", true},
		{"APP_CERTIFICATE", true},
		{"BROKER_AUDIT_KEY", true},
		{"BROKER_CONSOLE_CLIENT_SECRET", true},
		{"BROKER_DATABASE_URL", true},
		{"POSTGRES_PASSWORD", true},
		{"database-url", true},
		{"GITHUB_TOKEN", true},
		{"BROKER_APP_ID", false},
		{"BROKER_OIDC_AUDIENCE", false},
		{"BROKER_CONSOLE_CLIENT_ID", false},
		{"BROKER_RATE_BURST", false},
		{"VERSION", false},
	}
	for _, tt := range tests {
		if got := isSecretName(tt.name); got != tt.want {
			t.Errorf("isSecretName(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

var settingName = regexp.MustCompile(`"(BROKER_[A-Z0-9_]+)"`)

// brokerSettings returns the BROKER_* variables the broker's command reads,
// taken from the source of cmd/broker, so a misspelt variable in a deployment
// file fails here instead of being silently ignored at run time.
func brokerSettings(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoPath("cmd/broker"), "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range settingName.FindAllSubmatch(src, -1) {
			known[string(m[1])] = true
		}
	}
	if len(known) == 0 {
		t.Fatal("found no BROKER_* settings in cmd/broker: has the configuration moved?")
	}
	return known
}

// checkBrokerSettings fails for each BROKER_* name the broker does not read.
func checkBrokerSettings(t *testing.T, where string, names []string) {
	t.Helper()
	known := brokerSettings(t)
	slices.Sort(names)
	for _, n := range names {
		if base, ok := strings.CutSuffix(n, "_FILE"); ok && known[base] && isSecretName(base) {
			continue // a secret read from a file (the broker reads <NAME>_FILE for every secret)
		}
		if strings.HasPrefix(n, "BROKER_") && !known[n] {
			t.Errorf("%s sets %s, which cmd/broker does not read", where, n)
		}
	}
}
