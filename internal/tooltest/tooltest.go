// Package tooltest builds the programs tests run for real (Dex, Jaeger) from
// their pinned tools modules, and fetches the pinned npm packages they use
// (axe-core), once per version, and collects their output. It is test-only:
// production code never imports it.
package tooltest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Build returns the path of the binary of pkg (a main package) built from
// the tools module tools/<name>. The binary is cached under the Go build
// cache, in broker-<name>/<first 16 hex digits of sha256(go.sum)>/<name>, so
// an upgrade of the tool builds afresh and every later run reuses it. Test
// binaries of several packages start at once: one builds while the others
// wait on a file lock, then find the binary.
func Build(name, pkg string) (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the tooltest source to find the tools modules")
	}
	toolDir := filepath.Join(filepath.Dir(file), "..", "..", "tools", name)
	sum, err := os.ReadFile(filepath.Join(toolDir, "go.sum"))
	if err != nil {
		return "", fmt.Errorf("read the %s tools module: %w", name, err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is needed to build %s: %w", name, err)
	}
	out, err := exec.Command(goBin, "env", "GOCACHE").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOCACHE: %w", err)
	}
	h := sha256.Sum256(sum)
	dir := filepath.Join(strings.TrimSpace(string(out)), "broker-"+name, hex.EncodeToString(h[:8]))
	bin := filepath.Join(dir, path.Base(pkg)) // one module may hold several programs
	if built(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("open the %s build lock: %w", name, err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock the %s build: %w", name, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if built(bin) {
		return bin, nil
	}
	// Build to a private name and rename, so a binary is never seen half-written.
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", tmp, pkg)
	cmd.Dir = toolDir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("cannot build %s (cd %s && go build %s): %w\n%s", name, toolDir, pkg, err, log.String())
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", fmt.Errorf("install the %s binary: %w", name, err)
	}
	return bin, nil
}

// NPM returns the path of file inside the npm packages pinned by
// tools/<name> (package.json and package-lock.json), installed with `npm
// ci` into the Go build cache, in broker-<name>/<first 16 hex digits of
// sha256(package-lock.json)>, so that a new pin installs afresh and every
// later run reuses it. Concurrent test binaries take turns on a file lock.
func NPM(name, file string) (string, error) {
	_, src, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the tooltest source to find the tools folder")
	}
	toolDir := filepath.Join(filepath.Dir(src), "..", "..", "tools", name)
	pkg, err := os.ReadFile(filepath.Join(toolDir, "package.json"))
	if err != nil {
		return "", fmt.Errorf("read tools/%s/package.json: %w", name, err)
	}
	lockfile, err := os.ReadFile(filepath.Join(toolDir, "package-lock.json"))
	if err != nil {
		return "", fmt.Errorf("read tools/%s/package-lock.json: %w", name, err)
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", fmt.Errorf("npm is needed to fetch tools/%s (apt-get install npm): %w", name, err)
	}
	out, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOCACHE: %w", err)
	}
	h := sha256.Sum256(lockfile)
	dir := filepath.Join(strings.TrimSpace(string(out)), "broker-"+name, hex.EncodeToString(h[:8]))
	target := filepath.Join(dir, "node_modules", file)
	if built(target) {
		return target, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("open the %s install lock: %w", name, err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock the %s install: %w", name, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if built(target) {
		return target, nil
	}
	for f, b := range map[string][]byte{"package.json": pkg, "package-lock.json": lockfile} {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return "", fmt.Errorf("install tools/%s: %w", name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// npm ci installs exactly the lock file's versions and checks their
	// integrity hashes; no install scripts run.
	cmd := exec.CommandContext(ctx, npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund")
	cmd.Dir = dir
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("cannot install tools/%s (cd %s && npm ci): %w\n%s", name, dir, err, log.String())
	}
	if !built(target) {
		return "", fmt.Errorf("tools/%s installed, but %s is not in it", name, file)
	}
	return target, nil
}

func built(bin string) bool {
	fi, err := os.Stat(bin)
	return err == nil && fi.Mode().IsRegular()
}

// Output collects a process's stdout and stderr, safe for both pipes at once.
type Output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

// String returns everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}
