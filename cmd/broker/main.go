// Command broker is an authenticated token broker for Agora real-time channels:
// it verifies a caller's OpenID Connect bearer token, asks its policies whether
// the caller may hold a role on a channel, signs an AccessToken2 bound to the
// caller, and records every decision in a tamper-evident issuance log.
//
// main only calls run, so the whole program runs inside tests.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// command is one subcommand. args excludes the program and subcommand names.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error
}

func commands() map[string]command {
	return map[string]command{
		"version":     {"print the version", runVersion},
		"token":       {"mint or inspect an Agora token offline", runToken},
		"migrate":     {"apply (up) or list (status) database schema migrations", runMigrate},
		"serve":       {"run the broker (Postgres and an OpenID Connect provider)", runServe},
		"dev":         {"run everything in one process on loopback, for development", runDev},
		"audit":       {"verify, export or tail the issuance log", runAudit},
		"policy":      {"list, add, remove, explain, plan or apply policy rules; test policy files; show the history", runPolicy},
		"login":       {"log in to a broker (--server URL) for the policy, audit and revoke commands", runLogin},
		"revoke":      {"end a user's tokens now, list and lift revocations, show the tokens policy changes orphaned (--server)", runRevoke},
		"logout":      {"forget the login to a broker", runLogout},
		"healthcheck": {"exit 0 when the broker answers /healthz (for container HEALTHCHECK)", runHealthcheck},
		"config":      {"check a configuration file offline and print the effective configuration (check FILE)", runConfig},
	}
}

// run executes the command line args (args[0] is the program name) with the
// given environment and standard streams.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		usage(stderr)
		return usageError("no command given")
	}
	name, rest := args[1], args[2:]
	switch name {
	case "-h", "-help", "--help":
		usage(stdout)
		return nil
	case "help":
		if len(rest) == 0 {
			usage(stdout)
			return nil
		}
		// `broker help CMD` is `broker CMD -h`.
		name, rest = rest[0], []string{"-h"}
	case "--version", "-version":
		name = "version"
	}
	cmd, ok := commands()[name]
	if !ok {
		usage(stderr)
		return usageError(fmt.Sprintf("unknown command %q", name))
	}
	return cmd.run(ctx, rest, getenv, stdin, stdout, stderr)
}

func usage(w io.Writer) {
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("usage: broker <command> [flags]\n\ncommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintf(&b, "  %-10s %s\n", "help", "show this list; 'broker help <command>' shows a command's flags")
	b.WriteString("\nRun 'broker <command> -h' (or 'broker help <command>') for a command's flags.\n")
	io.WriteString(w, b.String())
}

// runVersion prints the module version, VCS revision and Go version the
// binary was built with (from its build info).
func runVersion(_ context.Context, args []string, _ func(string) string, _ io.Reader, stdout, _ io.Writer) error {
	if len(args) > 0 {
		return usageError("version takes no arguments")
	}
	_, err := fmt.Fprintln(stdout, versionString())
	return err
}

// version, when set at build time (-ldflags "-X main.version=v1.2.3", as the
// Dockerfile does), overrides the module version of the build info.
var version string

// versionString describes the build: "broker v1.2.3 (revision abc1234,
// modified) go1.26.8".
func versionString() string {
	b := readBuild()
	if b.goVersion == "" {
		return "broker (no build information) " + runtime.Version()
	}
	modified := ""
	if b.modified {
		modified = ", modified"
	}
	return fmt.Sprintf("broker %s (revision %s%s) %s", b.version, b.revision, modified, b.goVersion)
}

// build is what the binary knows about how it was built.
type build struct {
	version, revision, goVersion string
	modified                     bool
}

// readBuild reads the build information: the version (main.version when set,
// else the module's), the VCS revision (12 characters, "unknown" without one)
// and the Go version ("" when the binary carries no build information).
func readBuild() build {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return build{version: "(devel)", revision: "unknown"}
	}
	b := build{version: bi.Main.Version, revision: "unknown", goVersion: bi.GoVersion}
	if version != "" {
		b.version = version
	}
	if b.version == "" {
		b.version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.revision = s.Value
			if len(b.revision) > 12 {
				b.revision = b.revision[:12]
			}
		case "vcs.modified":
			b.modified = s.Value == "true"
		}
	}
	return b
}

// usageError is a command-line mistake: exit status 2.
type usageError string

func (e usageError) Error() string { return string(e) }

// exitStatus ends the program with a status and no further message, for
// commands that already reported on stdout/stderr (e.g. a failed verification).
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// exitCode maps run's error to a process exit status, printing it first.
// flag.ErrHelp (from -h) is success.
func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, errHelp) {
		return 0
	}
	var st exitStatus
	if errors.As(err, &st) {
		return int(st)
	}
	fmt.Fprintf(stderr, "broker: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}
