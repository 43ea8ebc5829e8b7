package loadtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// The seed floor's credentials, hard-coded in seedfloor/main.go: a broker
// compared with it signs with the same app certificate.
const (
	SeedfloorAppID          = "0123456789abcdef0123456789abcdef"
	SeedfloorAppCertificate = "fedcba9876543210fedcba9876543210"
)

// GoBuild runs go build -o out pkg in dir, with env added to the
// environment. A relative out is relative to dir.
func GoBuild(dir, out, pkg string, env ...string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s in %s: %w\n%s", pkg, dir, err, b)
	}
	return nil
}

// BuildSeedfloor builds the seed floor server from its source directory src
// (../shared/bench/seedfloor, beside the broker's repository) into the binary
// out; a relative out is relative to the working directory. It builds a
// writable copy of src, removed afterwards: the shared directory is
// read-only, and the build may need to write go.sum. The build is outside any
// workspace (GOWORK=off) and may update the copy's go.mod (-mod=mod).
func BuildSeedfloor(src, out string) error {
	out, err := filepath.Abs(out) // the build runs in the copy
	if err != nil {
		return fmt.Errorf("build the seed floor: %w", err)
	}
	tmp, err := os.MkdirTemp("", "seedfloor-")
	if err != nil {
		return fmt.Errorf("build the seed floor: %w", err)
	}
	defer os.RemoveAll(tmp)
	work := filepath.Join(tmp, "seedfloor")
	if err := os.CopyFS(work, os.DirFS(src)); err != nil { // CopyFS makes the copies writable
		return fmt.Errorf("copy the seed floor from %s: %w", src, err)
	}
	return GoBuild(work, out, ".", "GOFLAGS=-mod=mod", "GOWORK=off")
}
