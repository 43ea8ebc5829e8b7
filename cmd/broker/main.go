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
	"sort"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// command is one subcommand. args excludes the program and subcommand names.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error
}

func commands() map[string]command {
	return map[string]command{
		"version": {"print the version", runVersion},
		"token":   {"mint or inspect an Agora token offline", runToken},
		"migrate": {"apply (up) or list (status) database schema migrations", runMigrate},
		"serve":   {"run the broker (Postgres and an OpenID Connect provider)", runServe},
		"dev":     {"run everything in one process on loopback, for development", runDev},
		"audit":   {"verify, export or tail the issuance log", runAudit},
		"policy":  {"list, add, remove, explain, import or export policy rules; show their history", runPolicy},
	}
}

// run executes the command line args (args[0] is the program name).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) < 2 {
		usage(stderr)
		return usageError("no command given")
	}
	name := args[1]
	switch name {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return nil
	}
	cmd, ok := commands()[name]
	if !ok {
		usage(stderr)
		return usageError(fmt.Sprintf("unknown command %q", name))
	}
	return cmd.run(ctx, args[2:], getenv, stdout, stderr)
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
	fmt.Fprintf(&b, "  %-10s %s\n", "help", "show this list")
	b.WriteString("\nRun 'broker <command> -h' for a command's flags.\n")
	io.WriteString(w, b.String())
}

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func runVersion(_ context.Context, _ []string, _ func(string) string, stdout, _ io.Writer) error {
	_, err := fmt.Fprintf(stdout, "broker %s\n", version)
	return err
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
