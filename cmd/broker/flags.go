package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// errHelp is returned when a command was asked for its help text.
var errHelp = flag.ErrHelp

// newFlagSet returns a flag set that reports errors (not exits) and prints
// its help (-h, fs.Usage) to stdout.
func newFlagSet(name string, stdout io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("broker "+name, flag.ContinueOnError)
	fs.SetOutput(stdout)
	return fs
}

// parseFlags parses args. -h prints the help to the flag set's output and
// returns errHelp; a syntax error is a usage error that names the flag and
// points to the help, without printing it.
func parseFlags(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return errHelp
	case err != nil:
		return usageError(fmt.Sprintf("%v (see '%s -h')", err, fs.Name()))
	}
	return nil
}

// hasFlags reports whether fs defines any flag.
func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}
