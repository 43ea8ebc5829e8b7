package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/broker-dev/broker/internal/policy"
)

// policyFlags are the flags of every `broker policy` action.
type policyFlags struct {
	subject, channel, role, effect, groups, actor, project *string
	file, tests, output                                    *string
	maxTTL, limit                                          *int
	id, before                                             *int64
	asJSON                                                 *bool
}

// policyCmd is one run of `broker policy`: the engine on the database, the
// caller's flags and streams, and the actor changes are recorded as.
type policyCmd struct {
	engine *policy.Engine
	f      policyFlags
	who    policy.Actor
	files  []string // import: the file to read ("-" or none: stdin)
	stdin  io.Reader
	stdout io.Writer
}

// policyAction is a subcommand of `broker policy`, with its help.
type policyAction struct {
	name, help string
	run        func(*policyCmd, context.Context) error
}

// policyActions are the subcommands of `broker policy`.
var policyActions = []policyAction{
	{"list", "list rules (--subject, --channel select exactly as written; --project: its rules and those of \"*\")", (*policyCmd).list},
	{"add", "add a rule: --subject --channel --role --effect [--max-ttl SECONDS] [--project NAME or \"*\"]", (*policyCmd).add},
	{"rm", "remove the rule --id", (*policyCmd).rm},
	{"explain", "decide for a caller and show every rule that applies: --subject user:<sub> [--groups a,b] --channel --role [--project]", (*policyCmd).explain},
	{"import", "add every rule of a CSV file (or - / none for stdin), all or nothing", (*policyCmd).importCSV},
	{"export", "write every rule as CSV, or as a policy document with -o yaml (--project: its rules and those of \"*\")", (*policyCmd).export},
	{"test", "decide the expected decisions of -t tests.yaml against the policy document -f policy.yaml, offline (no database); exit 1 on a failure", nil},
	{"history", "show policy changes, newest first [--limit N] [--before ID] [--project]", (*policyCmd).history},
}

// runPolicy is `broker policy <action>`: the same services as the admin API,
// against the database. Changes are recorded as made by --actor, by default
// "cli:<os user>"; no right is checked (database access could write the
// tables anyway).
func runPolicy(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy", stdout)
	f := policyFlags{
		subject: fs.String("subject", "", `rule subject: "user:<sub>", "group:<name>" or "*" (explain: the caller, user:<sub>)`),
		channel: fs.String("channel", "", `channel name or pattern ("*" is the only wildcard)`),
		role:    fs.String("role", "", "publisher or subscriber; login with --channel rtm or chat; admin rights: read or write with --channel api:…"),
		effect:  fs.String("effect", "allow", "allow or deny"),
		maxTTL:  fs.Int("max-ttl", 0, "longest token lifetime the rule grants, in seconds (0: no limit of its own)"),
		groups:  fs.String("groups", "", "explain: the caller's groups, comma-separated"),
		id:      fs.Int64("id", 0, "rm: id of the rule to remove"),
		limit:   fs.Int("limit", 0, fmt.Sprintf("history: entries to show (default %d)", policy.DefaultHistoryLimit)),
		before:  fs.Int64("before", 0, "history: only entries with an id below this"),
		actor:   fs.String("actor", "", `who makes the change, for the history (default "cli:<os user>")`),
		asJSON:  fs.Bool("json", false, "list, explain, history: print JSON"),
		file:    fs.String("f", "", "test: the policy document (YAML, policies/policy.schema.json)"),
		tests:   fs.String("t", "", "test: the expected decisions (YAML, policies/policy-tests.schema.json)"),
		output:  fs.String("o", "csv", "export: csv or yaml (a policy document)"),
		project: fs.String("project", "", `the Agora project: add: the rule's ("*": every project; default: default, or "*" for an admin right); explain: where to decide (default: default); list, export, history: show that project's rules and those of "*"`),
	}
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
	only := map[string]bool{"BROKER_DATABASE_URL": true, "BROKER_DATABASE_PASSWORD": true}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 {
			// -h lists every flag, the database's too.
			if _, err := loadConfig(fs, args, getenv, only); errors.Is(err, errHelp) {
				return err
			}
		}
		return usageError("policy: want an action: list, add, rm, explain, import, export, test or history (see broker policy -h)")
	}
	action := args[0]
	i := slices.IndexFunc(policyActions, func(a policyAction) bool { return a.name == action })
	if i < 0 {
		return usageError(fmt.Sprintf("policy: unknown action %q (see broker policy -h)", action))
	}
	if action == "test" {
		if err := fs.Parse(args[1:]); err != nil {
			return usageError(err.Error())
		}
		if fs.NArg() > 0 {
			return usageError(fmt.Sprintf("policy test: unexpected argument %q", fs.Arg(0)))
		}
		return policyTest(ctx, *f.file, *f.tests, stdout)
	}
	cfg, err := loadConfig(fs, args[1:], getenv, only)
	if err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) > 0 && action != "import" || len(rest) > 1 {
		return usageError(fmt.Sprintf("policy %s: unexpected argument %q", action, rest[len(rest)-1]))
	}
	c := &policyCmd{f: f, files: rest, stdin: stdin, stdout: stdout,
		who: policy.Actor{Subject: *f.actor, Operator: true}}
	if c.who.Subject == "" {
		c.who.Subject = "cli:" + osUser(getenv)
	}
	pool, err := openDatabase(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if c.engine, err = policy.Open(ctx, policy.NewPGStore(pool, nil), nil); err != nil {
		return err
	}
	defer c.engine.Close()
	return policyActions[i].run(c, ctx)
}

func (c *policyCmd) list(ctx context.Context) error {
	rules, err := c.engine.List(ctx, policy.Filter{Subject: *c.f.subject, Channel: *c.f.channel, Projects: c.projects()})
	if err != nil {
		return err
	}
	if *c.f.asJSON {
		return writeJSON(c.stdout, rules)
	}
	return writeRules(c.stdout, rules)
}

func (c *policyCmd) add(ctx context.Context) error {
	r, err := c.engine.Add(ctx, c.who, policy.Rule{Subject: *c.f.subject, Channel: *c.f.channel, Role: policy.Role(*c.f.role),
		Effect: policy.Effect(*c.f.effect), MaxTTLSeconds: *c.f.maxTTL, Project: *c.f.project})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "added %s\n", r)
	return err
}

func (c *policyCmd) rm(ctx context.Context) error {
	if *c.f.id == 0 {
		return usageError("policy rm: --id is required")
	}
	if err := c.engine.Remove(ctx, c.who, *c.f.id); err != nil {
		return err
	}
	_, err := fmt.Fprintf(c.stdout, "removed #%d\n", *c.f.id)
	return err
}

func (c *policyCmd) importCSV(ctx context.Context) error {
	in, name := c.stdin, "stdin"
	if len(c.files) == 1 && c.files[0] != "-" {
		f, err := os.Open(c.files[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in, name = f, c.files[0]
	}
	n, err := c.engine.Import(ctx, c.who, in)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	_, err = fmt.Fprintf(c.stdout, "imported %d rules\n", n)
	return err
}

func (c *policyCmd) export(ctx context.Context) error {
	switch *c.f.output {
	case "csv":
		return c.engine.Export(ctx, c.stdout, policy.Filter{Projects: c.projects()})
	case "yaml":
		rules, err := c.engine.List(ctx, policy.Filter{Projects: c.projects()})
		if err != nil {
			return err
		}
		return policy.WriteDocument(c.stdout, rules)
	}
	return usageError(fmt.Sprintf("policy export: -o %q: want csv or yaml", *c.f.output))
}

// policyTest is `broker policy test -f policy.yaml -t tests.yaml`: every
// expected decision of the tests decided against the policy document with
// the broker's engine, offline; each failure named with its line, exit 1 if
// any.
func policyTest(ctx context.Context, policyFile, testsFile string, stdout io.Writer) error {
	if policyFile == "" || testsFile == "" {
		return usageError("policy test: give -f <policy.yaml> and -t <tests.yaml>")
	}
	read := func(name string, parse func(io.Reader) error) error {
		f, err := os.Open(name)
		if err != nil {
			return usageError(fmt.Sprintf("policy test: %v", err))
		}
		defer f.Close()
		if err := parse(f); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	var (
		rules []policy.Rule
		tests []policy.PolicyTest
	)
	if err := read(policyFile, func(r io.Reader) error {
		lrs, err := policy.ReadDocument(r)
		for _, lr := range lrs {
			rules = append(rules, lr.Rule)
		}
		return err
	}); err != nil {
		return err
	}
	if err := read(testsFile, func(r io.Reader) (err error) {
		tests, err = policy.ReadTests(r)
		return err
	}); err != nil {
		return err
	}
	results, err := policy.RunTests(ctx, rules, tests)
	if err != nil {
		return err
	}
	var b strings.Builder
	failed := 0
	for _, r := range results {
		if r.Failure != "" {
			failed++
			fmt.Fprintf(&b, "FAIL %s (%s:%d): %s\n", r.Test.Name, testsFile, r.Test.Line(), r.Failure)
		}
	}
	if failed == 0 {
		fmt.Fprintf(&b, "ok, %d tests against %d rules\n", len(results), len(rules))
	} else {
		fmt.Fprintf(&b, "FAILED: %d of %d tests\n", failed, len(results))
	}
	if _, err := io.WriteString(stdout, b.String()); err != nil {
		return err
	}
	if failed > 0 {
		return exitStatus(1)
	}
	return nil
}

// projects is the --project selection of list, export and history: nil
// for every rule, else the project's rules and those of "*".
func (c *policyCmd) projects() []string {
	switch p := *c.f.project; p {
	case "":
		return nil
	case policy.AllProjects:
		return []string{p}
	default:
		return []string{p, policy.AllProjects}
	}
}

func (c *policyCmd) history(ctx context.Context) error {
	changes, _, err := c.engine.History(ctx, policy.HistoryFilter{Limit: *c.f.limit, Before: *c.f.before, Projects: c.projects()})
	if err != nil {
		return err
	}
	if *c.f.asJSON {
		return writeJSON(c.stdout, changes)
	}
	return writeHistory(c.stdout, changes)
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

func (c *policyCmd) explain(context.Context) error {
	subject, w := *c.f.subject, c.stdout
	sub, ok := strings.CutPrefix(subject, "user:")
	if !ok || sub == "" {
		return usageError(`policy explain: --subject must be the caller as "user:<sub>"`)
	}
	caller := policy.Caller{Subject: sub}
	for _, g := range strings.Split(*c.f.groups, ",") {
		if g = strings.TrimSpace(g); g != "" {
			caller.Groups = append(caller.Groups, g)
		}
	}
	project := *c.f.project
	if project == "" {
		project = policy.DefaultProject
	}
	x, err := c.engine.Explain(caller, project, *c.f.channel, policy.Role(*c.f.role))
	if err != nil {
		return err
	}
	if *c.f.asJSON {
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
	fmt.Fprintln(tw, "ID\tSUBJECT\tCHANNEL\tROLE\tEFFECT\tMAX TTL\tPROJECT")
	for _, r := range rules {
		ttl := "-"
		if r.MaxTTLSeconds > 0 {
			ttl = strconv.Itoa(r.MaxTTLSeconds) + "s"
		}
		fmt.Fprintf(tw, "%d\t%s\t%q\t%s\t%s\t%s\t%s\n", r.ID, r.Subject, r.Channel, r.Role, r.Effect, ttl, r.Project)
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
