package pgtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeBinDir makes dir/initdb and dir/postgres as executable stubs.
func fakeBinDir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"initdb", "postgres"} {
		if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// These tests set PATH, so they cannot run in parallel; pgtest's parallel
// tests wait until they are done.

func TestFindBinDir_PrefersPATH(t *testing.T) {
	root := t.TempDir()
	onPath := filepath.Join(root, "path")
	fakeBinDir(t, onPath)
	fakeBinDir(t, filepath.Join(root, "lib", "15", "bin"))
	t.Setenv("PATH", onPath)
	got, err := findBinDir(filepath.Join(root, "lib", "*", "bin"))
	if err != nil || got != onPath {
		t.Errorf("findBinDir = %q, %v; want %q", got, err, onPath)
	}
}

func TestFindBinDir_TakesNewestVersionedDirWhenNotOnPATH(t *testing.T) {
	root := t.TempDir()
	for _, v := range []string{"9.6", "15", "13"} {
		fakeBinDir(t, filepath.Join(root, "lib", v, "bin"))
	}
	if err := os.MkdirAll(filepath.Join(root, "lib", "17", "bin"), 0o755); err != nil { // client-only install
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())
	want := filepath.Join(root, "lib", "15", "bin")
	got, err := findBinDir(filepath.Join(root, "lib", "*", "bin"))
	if err != nil || got != want {
		t.Errorf("findBinDir = %q, %v; want %q", got, err, want)
	}
}

func TestFindBinDir_MissingBinariesSayHowToInstall(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := findBinDir(filepath.Join(t.TempDir(), "*", "bin"))
	if err == nil {
		t.Fatal("findBinDir found binaries in empty directories")
	}
	for _, want := range []string{"apt-get install postgresql", EnvURL} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
