package main

import (
	"errors"
	"flag"
	"io"
)

// errHelp is returned when a command was asked for its help text.
var errHelp = flag.ErrHelp

// newFlagSet returns a flag set that reports errors (not exits) and prints its
// usage to stderr.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("broker "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args, turning a flag syntax error into a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError(err.Error())
	}
	return nil
}
