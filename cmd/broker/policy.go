package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/broker-dev/broker/internal/policy"
)

// policyActions are the subcommands of `broker policy`, with their help.
var policyActions = []struct{ name, help string }{
	{"list", "list rules (--subject, --channel select exactly as written)"},
	{"add", "add a rule: --subject --channel --role --effect [--max-ttl SECONDS]"},
	{"rm", "remove the rule --id"},
	{"explain", "decide for a caller and show every rule that applies: --subject user:<sub> [--groups a,b] --channel --role"},
	{"import", "add every rule of a CSV file (or - / none for stdin), all or nothing"},
	{"export", "write every rule as CSV"},
	{"history", "show policy changes, newest first [--limit N] [--before ID]"},
}

// runPolicy is `broker policy <action>`: the same services as the admin API,
// against the database. Changes are recorded as made by --actor, by default
// "cli:<os user>".
func runPolicy(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy", stderr)
	fs.Usage = func() {
		var b strings.Builder
		b.WriteString("usage: broker policy <action> [flags] [file]\n\nactions:\n")
		for _, a := range policyActions {
			fmt.Fprintf(&b, "  %-8s %s\n", a.name, a.help)
		}
		b.WriteString("\nflags:\n")
		fmt.Fprint(fs.Output(), b.String())
		fs.PrintDefaults()
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fs.Usage()
			return errHelp
		}
		return usageError("policy: want an action: list, add, rm, explain, import, export or history (see broker policy -h)")
	}
	action := args[0]
	known := false
	for _, a := range policyActions {
		known = known || a.name == action
	}
	if !known {
		return usageError(fmt.Sprintf("policy: unknown action %q (see broker policy -h)", action))
	}

	var (
		subject  = fs.String("subject", "", `rule subject: "user:<sub>", "group:<name>" or "*" (explain: the caller, user:<sub>)`)
		channel  = fs.String("channel", "", `channel name or pattern ("*" is the only wildcard)`)
		role     = fs.String("role", "", "publisher or subscriber (admin rights: read or write, with --channel api:policies, api:audit or api:rights)")
		effect   = fs.String("effect", "allow", "allow or deny")
		maxTTL   = fs.Int("max-ttl", 0, "longest token lifetime the rule grants, in seconds (0: no limit of its own)")
		groups   = fs.String("groups", "", "explain: the caller's groups, comma-separated")
		id       = fs.Int64("id", 0, "rm: id of the rule to remove")
		limit    = fs.Int("limit", 0, fmt.Sprintf("history: entries to show (default %d)", policy.DefaultHistoryLimit))
		before   = fs.Int64("before", 0, "history: only entries with an id below this")
		actor    = fs.String("actor", "", `who makes the change, for the history (default "cli:<os user>")`)
		asJSON   = fs.Bool("json", false, "list, explain, history: print JSON")
		only     = map[string]bool{"BROKER_DATABASE_URL": true}
		cfg, err = loadConfig(fs, args[1:], getenv, only)
	)
	if err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) > 0 && action != "import" || len(rest) > 1 {
		return usageError(fmt.Sprintf("policy %s: unexpected argument %q", action, rest[len(rest)-1]))
	}
	who := policy.Actor{Subject: *actor, Operator: true} // database access: no right to check
	if who.Subject == "" {
		who.Subject = "cli:" + osUser(getenv)
	}

	pool, err := openDatabase(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	engine, err := policy.Open(ctx, policy.NewPGStore(pool, nil), nil)
	if err != nil {
		return err
	}
	defer engine.Close()

	switch action {
	case "list":
		rules, err := engine.List(ctx, policy.Filter{Subject: *subject, Channel: *channel})
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, rules)
		}
		return writeRules(stdout, rules)
	case "add":
		r, err := engine.Add(ctx, who, policy.Rule{Subject: *subject, Channel: *channel, Role: policy.Role(*role),
			Effect: policy.Effect(*effect), MaxTTLSeconds: *maxTTL})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "added %s\n", r)
		return err
	case "rm":
		if *id == 0 {
			return usageError("policy rm: --id is required")
		}
		if err := engine.Remove(ctx, who, *id); err != nil {
			return err
		}
		_, err := fmt.Fprintf(stdout, "removed #%d\n", *id)
		return err
	case "explain":
		return explainCLI(engine, *subject, *groups, *channel, policy.Role(*role), *asJSON, stdout)
	case "import":
		in, name := io.Reader(os.Stdin), "stdin"
		if len(rest) == 1 && rest[0] != "-" {
			f, err := os.Open(rest[0])
			if err != nil {
				return err
			}
			defer f.Close()
			in, name = f, rest[0]
		}
		n, err := engine.Import(ctx, who, in)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		_, err = fmt.Fprintf(stdout, "imported %d rules\n", n)
		return err
	case "export":
		return engine.Export(ctx, stdout)
	default: // history
		changes, err := engine.History(ctx, policy.HistoryFilter{Limit: *limit, Before: *before})
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, changes)
		}
		return writeHistory(stdout, changes)
	}
}

// osUser names the operating-system user for the default actor.
func osUser(getenv func(string) string) string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}

func explainCLI(e *policy.Engine, subject, groups, channel string, role policy.Role, asJSON bool, w io.Writer) error {
	sub, ok := strings.CutPrefix(subject, "user:")
	if !ok || sub == "" {
		return usageError(`policy explain: --subject must be the caller as "user:<sub>"`)
	}
	c := policy.Caller{Subject: sub}
	for _, g := range strings.Split(groups, ",") {
		if g = strings.TrimSpace(g); g != "" {
			c.Groups = append(c.Groups, g)
		}
	}
	x, err := e.Explain(c, channel, role)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(w, x)
	}
	verdict := "DENIED"
	if x.Decision.Allowed {
		verdict = "ALLOWED"
	}
	fmt.Fprintf(w, "%s: %s\n", verdict, x.Decision.Reason)
	if x.Decision.Allowed && x.Decision.MaxTTL > 0 {
		fmt.Fprintf(w, "max token lifetime: %s\n", x.Decision.MaxTTL)
	}
	fmt.Fprintf(w, "\n%d rules apply to %s:\n", len(x.Rules), subject)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, rc := range x.Rules {
		mark := "-"
		if rc.Matches {
			mark = "match"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", rc.Rule, mark, rc.Reason)
	}
	return tw.Flush()
}

func writeRules(w io.Writer, rules []policy.Rule) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSUBJECT\tCHANNEL\tROLE\tEFFECT\tMAX TTL")
	for _, r := range rules {
		ttl := "-"
		if r.MaxTTLSeconds > 0 {
			ttl = strconv.Itoa(r.MaxTTLSeconds) + "s"
		}
		fmt.Fprintf(tw, "%d\t%s\t%q\t%s\t%s\t%s\n", r.ID, r.Subject, r.Channel, r.Role, r.Effect, ttl)
	}
	return tw.Flush()
}

func writeHistory(w io.Writer, changes []policy.Change) error {
	for _, c := range changes {
		fmt.Fprintf(w, "%d  %s  %s  %s", c.ID, c.At.UTC().Format("2006-01-02T15:04:05Z"), c.Actor, c.Action)
		if c.RequestID != "" {
			fmt.Fprintf(w, "  request %s", c.RequestID)
		}
		fmt.Fprintln(w)
		for _, r := range c.Before {
			fmt.Fprintf(w, "    - %s\n", r)
		}
		for _, r := range c.After {
			fmt.Fprintf(w, "    + %s\n", r)
		}
	}
	return nil
}
