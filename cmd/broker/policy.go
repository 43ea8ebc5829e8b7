package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/client"
	"github.com/broker-dev/broker/internal/policy"
)

// policyFlags are the flags of every `broker policy` action.
type policyFlags struct {
	subject, channel, role, effect, groups, actor, project *string
	file, tests, output, server, appliesTo, sort, mode, by *string
	at                                                     *string
	maxTTL, limit, count                                   *int
	id, before, expected                                   *int64
	since                                                  *time.Duration
	asJSON, dryRun                                         *bool
}

// policyCmd is one run of `broker policy`: where the policy lives (a broker
// or the database), the caller's flags and streams.
type policyCmd struct {
	backend   policyBackend
	f         policyFlags
	effectSet bool     // --effect given (list filters by it only then; add defaults it to allow)
	files     []string // import: the file to read ("-" or none: stdin)
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
}

// policyAction is a subcommand of `broker policy`, with its help and the
// output formats it has besides the default (the first).
type policyAction struct {
	name, help string
	run        func(*policyCmd, context.Context) error
	formats    []string
}

// policyActions are the subcommands of `broker policy`.
var policyActions = []policyAction{
	{"list", "list rules: --subject, --channel as text where * is any run (team-* finds team-1 and team-*; a bare name matches user: and group:), --role, --effect, --applies-to CHANNEL, --sort, --limit; --project: its rules and those of \"*\"", (*policyCmd).list, []string{"table", "json", "yaml", "csv"}},
	{"add", "add a rule: --subject --channel --role --effect [--max-ttl SECONDS] [--project NAME or \"*\"]", (*policyCmd).add, []string{"table", "json", "yaml"}},
	{"rm", "remove the rule --id, or every rule a filter selects (--subject, --channel, --role, --effect, --applies-to as for list) once you confirm their --count", (*policyCmd).rm, nil},
	{"explain", "decide for a caller and show every rule that applies: --subject user:<sub> [--groups a,b] --channel --role [--project]", (*policyCmd).explain, []string{"table", "json", "yaml", "csv"}},
	{"who", "who may hold --role on --channel [--project]: the rules that allow it and those that deny it", (*policyCmd).who, []string{"table", "json", "yaml", "csv"}},
	{"plan", "show what applying the policy document -f policy.yaml changes (--server only): the rules added, removed, changed, and who gains or loses access in the recorded decisions of the last --since", (*policyCmd).plan, []string{"table", "json", "yaml", "csv"}},
	{"apply", "replace the rules of --project and \"*\" with those of -f policy.yaml, atomically, only if the policy is still at --expected-version (the plan's)", (*policyCmd).apply, []string{"table", "json", "yaml"}},
	{"test", "decide the expected decisions of -t tests.yaml against the policy document -f policy.yaml, offline (no server, no database); exit 1 on a failure", nil, nil},
	{"import", "import a CSV file (or - / none for stdin), all or nothing, every bad row named: --mode add or replace, --dry-run", (*policyCmd).importCSV, []string{"table", "json", "yaml"}},
	{"export", "write every rule as CSV (-o csv) or as a policy document (-o yaml) (--project: its rules and those of \"*\")", (*policyCmd).export, []string{"csv", "yaml"}},
	{"history", "show policy changes, newest first [--limit N] [--before ID] [--project] [--by ACTOR] [--channel PATTERN]", (*policyCmd).history, []string{"table", "json", "yaml", "csv"}},
}

// runPolicy is `broker policy <action>`: with --server (or BROKER_SERVER),
// the admin API of that broker as the user logged in with `broker login`,
// who needs the rights the API checks; with --database-url (bootstrap and
// recovery), the database itself, changes recorded as made by --actor and
// no right checked (database access could write the tables anyway).
func runPolicy(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy", stdout)
	f := policyFlags{
		server:    fs.String("server", "", "the broker to work on, as logged in with `broker login` (env "+serverEnv+"); without it, the database of --database-url"),
		subject:   fs.String("subject", "", `rule subject: "user:<sub>", "group:<name>" or "*" (explain: the caller, user:<sub>)`),
		channel:   fs.String("channel", "", `channel name or pattern ("*" is the only wildcard)`),
		role:      fs.String("role", "", "publisher or subscriber; login with --channel rtm or chat; admin rights: read or write with --channel api:…"),
		effect:    fs.String("effect", "allow", "allow or deny"),
		maxTTL:    fs.Int("max-ttl", 0, "longest token lifetime the rule grants, in seconds (0: no limit of its own)"),
		groups:    fs.String("groups", "", "explain: the caller's groups, comma-separated"),
		id:        fs.Int64("id", 0, "rm: id of the rule to remove"),
		limit:     fs.Int("limit", 0, fmt.Sprintf("list: at most this many rules (default all); history: entries to show (default %d)", policy.DefaultHistoryLimit)),
		before:    fs.Int64("before", 0, "history: only entries with an id below this"),
		actor:     fs.String("actor", "", `with --database-url: who makes the change, for the history (default "cli:<os user>"); a broker records the logged-in user`),
		asJSON:    fs.Bool("json", false, "the same as -o json"),
		file:      fs.String("f", "", "plan, apply, test: the policy document (YAML, policies/policy.schema.json)"),
		tests:     fs.String("t", "", "test: the expected decisions (YAML, policies/policy-tests.schema.json)"),
		output:    fs.String("o", "", "output: table (the default), json, yaml or csv; export: csv (the default) or yaml"),
		since:     fs.Duration("since", 7*24*time.Hour, "plan: replay the decisions recorded in this last period"),
		appliesTo: fs.String("applies-to", "", "list: only the rules whose channel (or pattern) matches this channel"),
		mode:      fs.String("mode", "add", "import: add (the rules not in force; a second import of the same file adds nothing) or replace (the rules of --project and \"*\" become the file's)"),
		count:     fs.Int("count", -1, "rm by filter: the number of rules the filter selects, confirmed (rm without it says how many)"),
		at:        fs.String("at", "", "explain: decide on the policy as it stood at this moment (RFC 3339), rebuilt from the history"),
		by:        fs.String("by", "", "history: only changes by an actor whose name contains this"),
		dryRun:    fs.Bool("dry-run", false, "import: show what would change, change nothing"),
		sort:      fs.String("sort", "", "list: order by id (the default), subject, channel, role, effect or project; a leading - descends"),
		expected:  fs.Int64("expected-version", -1, "apply: the policy version the plan was made against (its expectedVersion)"),
		project:   fs.String("project", "", `the Agora project: add: the rule's ("*": every project; default: default, or "*" for an admin right); explain, who, plan, apply: where (default: default); list, export, history: show that project's rules and those of "*"`),
	}
	fs.Usage = func() {
		var b strings.Builder
		b.WriteString("usage: broker policy <action> [flags] [file]\n\n" +
			"With --server URL (or BROKER_SERVER) the actions go to that broker's API as the user `broker login`\n" +
			"logged in, with that user's rights. Without it they work on the database of --database-url\n" +
			"(BROKER_DATABASE_URL) directly: for bootstrap and recovery, with no right checked.\n\nactions:\n")
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
		return usageError("policy: want an action: " + actionNames() + " (see broker policy -h)")
	}
	action := args[0]
	i := slices.IndexFunc(policyActions, func(a policyAction) bool { return a.name == action })
	if i < 0 {
		return usageError(fmt.Sprintf("policy: unknown action %q (see broker policy -h)", action))
	}
	if action == "test" {
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return usageError(fmt.Sprintf("policy test: unexpected argument %q", fs.Arg(0)))
		}
		return policyTest(ctx, *f.file, *f.tests, stdout)
	}
	// --server (or BROKER_SERVER) picks the API; the database settings are
	// then not read.
	server, err := chooseServer("policy", fs, args[1:], getenv)
	if err != nil {
		return err
	}
	if server != "" {
		only = map[string]bool{}
	}
	cfg, err := loadConfig(fs, args[1:], getenv, only)
	if server == "" && missingDatabase(err) {
		return usageError(fmt.Sprintf("policy: give --server URL (a broker you logged in to with `broker login`) or set BROKER_DATABASE_URL (bootstrap and recovery): %v", err))
	}
	if err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) > 0 && action != "import" || len(rest) > 1 {
		return usageError(fmt.Sprintf("policy %s: unexpected argument %q", action, rest[len(rest)-1]))
	}
	if err := outputFormat(policyActions[i], &f); err != nil {
		return err
	}
	if action == "apply" && *f.expected < 0 {
		return usageError("policy apply: give --expected-version, the expectedVersion of the plan you checked (broker policy plan)")
	}
	c := &policyCmd{f: f, files: rest, stdin: stdin, stdout: stdout, stderr: stderr, effectSet: flagSet(fs, "effect")}
	if server != "" {
		if flagSet(fs, "actor") {
			return usageError("policy: --actor is for BROKER_DATABASE_URL; a broker records the user logged in")
		}
		cl, err := apiClient(server, getenv)
		if err != nil {
			return err
		}
		c.backend = apiPolicy{cl}
		return policyActions[i].run(c, ctx)
	}
	who := policy.Actor{Subject: *f.actor, Operator: true}
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
	c.backend = dbPolicy{engine: engine, who: who}
	return policyActions[i].run(c, ctx)
}

// actionNames lists the actions for messages.
func actionNames() string {
	names := make([]string, len(policyActions))
	for i, a := range policyActions {
		names[i] = a.name
	}
	return strings.Join(names, ", ")
}

// serverArg is the value of --server in args, "" when it is not given. It
// reads args as fs will parse them: flags up to the first other argument,
// a flag fs does not define (the database's, --config) taking a value.
func serverArg(fs *flag.FlagSet, args []string) string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") {
			return ""
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "server" {
			if hasVal {
				return val
			}
			if i+1 < len(args) {
				return args[i+1]
			}
			return ""
		}
		if f := fs.Lookup(name); !hasVal && (f == nil || !isBoolFlag(f)) {
			i++ // its value
		}
	}
	return ""
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// flagSet reports whether the command line set the flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// outputFormat checks -o (or --json) against what action writes, and
// fills in its default.
func outputFormat(a policyAction, f *policyFlags) error {
	if *f.asJSON {
		if *f.output != "" && *f.output != "json" {
			return usageError(fmt.Sprintf("policy %s: --json and -o %s disagree", a.name, *f.output))
		}
		*f.output = "json"
	}
	if len(a.formats) == 0 {
		if *f.output != "" {
			return usageError(fmt.Sprintf("policy %s: takes no -o", a.name))
		}
		return nil
	}
	if *f.output == "" {
		*f.output = a.formats[0]
	}
	if !slices.Contains(a.formats, *f.output) {
		return usageError(fmt.Sprintf("policy %s: -o %q: want %s", a.name, *f.output, strings.Join(a.formats, ", ")))
	}
	return nil
}

func (c *policyCmd) list(ctx context.Context) error {
	f := policy.Filter{SubjectLike: *c.f.subject, ChannelLike: *c.f.channel, Role: policy.Role(*c.f.role),
		AppliesToChannel: *c.f.appliesTo, Sort: *c.f.sort, Limit: *c.f.limit}
	if c.effectSet {
		f.Effect = policy.Effect(*c.f.effect)
	}
	rules, err := c.backend.List(ctx, f, *c.f.project)
	if err != nil {
		return err
	}
	switch *c.f.output {
	case "csv":
		return policy.WriteCSV(c.stdout, rules)
	case "yaml":
		return policy.WriteDocument(c.stdout, rules)
	}
	return render(c.stdout, *c.f.output, rules, func(w io.Writer) error { return writeRules(w, rules) }, nil)
}

func (c *policyCmd) add(ctx context.Context) error {
	r, err := c.backend.Add(ctx, policy.Rule{Subject: *c.f.subject, Channel: *c.f.channel, Role: policy.Role(*c.f.role),
		Effect: policy.Effect(*c.f.effect), MaxTTLSeconds: *c.f.maxTTL, Project: *c.f.project})
	if err != nil {
		return err
	}
	return render(c.stdout, *c.f.output, r, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "added %s\n", r)
		return err
	}, nil)
}

func (c *policyCmd) rm(ctx context.Context) error {
	f := policy.Filter{SubjectLike: *c.f.subject, ChannelLike: *c.f.channel, Role: policy.Role(*c.f.role), AppliesToChannel: *c.f.appliesTo}
	if c.effectSet {
		f.Effect = policy.Effect(*c.f.effect)
	}
	byFilter := f.SubjectLike != "" || f.ChannelLike != "" || f.Role != "" || f.Effect != "" || f.AppliesToChannel != ""
	switch {
	case *c.f.id != 0 && byFilter:
		return usageError("policy rm: give --id or a filter, not both")
	case *c.f.id != 0:
		if err := c.backend.Remove(ctx, *c.f.id); err != nil {
			return err
		}
		_, err := fmt.Fprintf(c.stdout, "removed #%d\n", *c.f.id)
		return err
	case !byFilter:
		return usageError("policy rm: give --id, or a filter (--subject, --channel, --role, --effect, --applies-to) and its --count")
	}
	var confirmed *int
	if *c.f.count >= 0 {
		confirmed = c.f.count
	}
	n, err := c.backend.RemoveWhere(ctx, f, *c.f.project, confirmed)
	if ae, ok := apperr.As(err); ok && ae.Field == "count" {
		return usageError("policy rm: " + ae.Message + "; run it again with --count to remove them")
	}
	if p, ok := err.(*client.Problem); ok && p.Field == "count" {
		return usageError("policy rm: " + p.Detail + "; run it again with --count to remove them")
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "removed %d rules\n", n)
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
	res, err := c.backend.Import(ctx, in, policy.ImportOptions{Mode: policy.ImportMode(*c.f.mode), Project: *c.f.project, DryRun: *c.f.dryRun})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return render(c.stdout, *c.f.output, res, func(w io.Writer) error {
		verb := "imported"
		if res.DryRun {
			verb = "would import (dry run, nothing changed)"
		}
		fmt.Fprintf(w, "%s (%s): %d rules added, %d removed, %d unchanged\n", verb, res.Mode, res.Added, res.Removed, res.Unchanged)
		for _, r := range res.Diff.Added {
			fmt.Fprintf(w, "  + %s\n", r)
		}
		for _, r := range res.Diff.Removed {
			fmt.Fprintf(w, "  - %s\n", r)
		}
		if n := res.Added + res.Removed - len(res.Diff.Added) - len(res.Diff.Removed); n > 0 {
			fmt.Fprintf(w, "  (and %d more)\n", n)
		}
		return nil
	}, nil)
}

func (c *policyCmd) export(ctx context.Context) error {
	return c.backend.Export(ctx, c.stdout, *c.f.output, *c.f.project)
}

func (c *policyCmd) history(ctx context.Context) error {
	changes, err := c.backend.History(ctx, policy.HistoryFilter{Limit: *c.f.limit, Before: *c.f.before, Actor: *c.f.by, Channel: *c.f.channel}, *c.f.project)
	if err != nil {
		return err
	}
	return render(c.stdout, *c.f.output, changes, func(w io.Writer) error { return writeHistory(w, changes) }, func() [][]string {
		rows := [][]string{{"id", "at", "actor", "action", "apply_id", "request_id", "removed", "added"}}
		for _, ch := range changes {
			apply := ""
			if ch.ApplyID != 0 {
				apply = strconv.FormatInt(ch.ApplyID, 10)
			}
			rows = append(rows, []string{strconv.FormatInt(ch.ID, 10), ch.At.UTC().Format(time.RFC3339), ch.Actor, ch.Action, apply, ch.RequestID,
				joinRules(ch.Before), joinRules(ch.After)})
		}
		return rows
	})
}

func joinRules(rules []policy.Rule) string {
	s := make([]string, len(rules))
	for i, r := range rules {
		s[i] = r.String()
	}
	return strings.Join(s, "; ")
}

// project is --project, or the default project for the actions that work
// in one project.
func (c *policyCmd) oneProject() string {
	if p := *c.f.project; p != "" {
		return p
	}
	return policy.DefaultProject
}

func (c *policyCmd) explain(ctx context.Context) error {
	subject := *c.f.subject
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
	var at time.Time
	if *c.f.at != "" {
		var err error
		if at, err = time.Parse(time.RFC3339, *c.f.at); err != nil {
			return usageError(fmt.Sprintf("policy explain: --at %q: want a time such as 2026-11-01T00:00:00Z", *c.f.at))
		}
	}
	x, err := c.backend.Explain(ctx, caller, c.oneProject(), *c.f.channel, policy.Role(*c.f.role), at)
	if err != nil {
		return err
	}
	return render(c.stdout, *c.f.output, x, func(w io.Writer) error {
		verdict := "DENIED"
		if x.Allowed {
			verdict = "ALLOWED"
		}
		if x.At != nil {
			fmt.Fprintf(w, "as the policy stood at %s (version %d):\n", x.At.UTC().Format(time.RFC3339), x.Version)
		}
		fmt.Fprintf(w, "%s: %s\n", verdict, x.Reason)
		if x.Allowed && x.MaxTTLSeconds > 0 {
			fmt.Fprintf(w, "max token lifetime: %s\n", time.Duration(x.MaxTTLSeconds)*time.Second)
		}
		shown := ""
		if x.Applicable > len(x.Matches) {
			shown = fmt.Sprintf(" (the first %d: the deciding rule, then the others that match)", len(x.Matches))
		}
		fmt.Fprintf(w, "\n%d rules apply to %s%s:\n", x.Applicable, subject, shown)
		return writeChecks(w, x.Matches, "match", "-")
	}, func() [][]string { return checkRows(x.Matches, "match", "-") })
}

func (c *policyCmd) who(ctx context.Context) error {
	if *c.f.channel == "" || *c.f.role == "" {
		return usageError("policy who: give --channel and --role")
	}
	h, err := c.backend.Who(ctx, c.oneProject(), *c.f.channel, policy.Role(*c.f.role))
	if err != nil {
		return err
	}
	return render(c.stdout, *c.f.output, h, func(w io.Writer) error {
		fmt.Fprintf(w, "%s on %q in project %s: subjects of an allowing rule that no denying rule names\n", h.Role, h.Channel, h.Project)
		fmt.Fprintf(w, "\nallowed by %d rules:\n", len(h.Allowed))
		if err := writeChecks(w, h.Allowed, "", ""); err != nil {
			return err
		}
		fmt.Fprintf(w, "\ndenied by %d rules:\n", len(h.Denied))
		return writeChecks(w, h.Denied, "", "")
	}, func() [][]string {
		rows := [][]string{{"effect", "id", "subject", "channel", "role", "max_ttl_seconds", "project", "reason"}}
		for _, list := range [][]policy.RuleCheck{h.Allowed, h.Denied} {
			for _, rc := range list {
				r := rc.Rule
				rows = append(rows, []string{string(r.Effect), strconv.FormatInt(r.ID, 10), r.Subject, r.Channel, string(r.Role),
					strconv.Itoa(r.MaxTTLSeconds), r.Project, rc.Reason})
			}
		}
		return rows
	})
}

// document reads -f, the policy document of plan and apply.
func (c *policyCmd) document(action string) ([]byte, error) {
	if *c.f.file == "" {
		return nil, usageError(fmt.Sprintf("policy %s: give -f <policy.yaml>", action))
	}
	b, err := os.ReadFile(*c.f.file)
	if err != nil {
		return nil, usageError(fmt.Sprintf("policy %s: %v", action, err))
	}
	if _, err := policy.ReadDocument(strings.NewReader(string(b))); err != nil {
		return nil, fmt.Errorf("%s: %w", *c.f.file, err)
	}
	return b, nil
}

func (c *policyCmd) plan(ctx context.Context) error {
	doc, err := c.document("plan")
	if err != nil {
		return err
	}
	p, err := c.backend.Plan(ctx, doc, c.oneProject(), *c.f.since, c.stderr)
	if err != nil {
		return err
	}
	return render(c.stdout, *c.f.output, p, func(w io.Writer) error { return writePlan(w, p, *c.f.file) }, func() [][]string {
		rows := [][]string{{"access", "subject", "channel", "role", "decisions"}}
		for _, l := range []struct {
			name string
			list []impactEntry
		}{{"lose", p.Impact.Lose}, {"gain", p.Impact.Gain}} {
			for _, e := range l.list {
				rows = append(rows, []string{l.name, e.Subject, e.Channel, e.Role, strconv.FormatInt(e.Decisions, 10)})
			}
		}
		return rows
	})
}

func (c *policyCmd) apply(ctx context.Context) error {
	doc, err := c.document("apply")
	if err != nil {
		return err
	}
	res, err := c.backend.Apply(ctx, doc, c.oneProject(), *c.f.expected)
	if err != nil {
		return err
	}
	return render(c.stdout, *c.f.output, res, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "applied to project %s: %d rules added, %d removed; the policy is at version %d\n", res.Project, res.Added, res.Removed, res.Version)
		return err
	}, nil)
}

// writePlan writes a plan for people: the rule changes, then who gains and
// loses access, then how to apply it.
func writePlan(w io.Writer, p planResult, file string) error {
	fmt.Fprintf(w, "Plan for project %s against policy version %d.\n\nRules:\n", p.Project, p.ExpectedVersion)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range p.Diff.Added {
		fmt.Fprintf(tw, "  + %s\n", r)
	}
	for _, r := range p.Diff.Removed {
		fmt.Fprintf(tw, "  - %s\n", r)
	}
	for _, ch := range p.Diff.Changed {
		fmt.Fprintf(tw, "  ~ %s\n    → %s\n", ch.From, ch.To)
	}
	if len(p.Diff.Added)+len(p.Diff.Removed)+len(p.Diff.Changed) == 0 {
		fmt.Fprintln(tw, "  no change")
	}
	tw.Flush()
	im := p.Impact
	fmt.Fprintf(w, "\nImpact on the %d decisions recorded since %s", im.Decisions, p.Since.UTC().Format(time.RFC3339))
	if im.Skipped > 0 {
		fmt.Fprintf(w, " (%d more not replayable: an issuer no longer configured, or not decidable)", im.Skipped)
	}
	fmt.Fprintln(w, ":")
	for _, l := range []struct {
		verb      string
		list      []impactEntry
		decisions int64
	}{{"would LOSE access", im.Lose, im.LoseDecisions}, {"would GAIN access", im.Gain, im.GainDecisions}} {
		fmt.Fprintf(w, "  %d %s (%d decisions turned around)\n", len(l.list), l.verb, l.decisions)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, e := range l.list {
			fmt.Fprintf(tw, "    %s\t%q\t%s\t%d decisions\n", e.Subject, e.Channel, e.Role, e.Decisions)
		}
		tw.Flush()
	}
	if im.Truncated {
		fmt.Fprintln(w, "  (the lists are cut: they show the callers with the most decisions; the counts of decisions are whole)")
	}
	_, err := fmt.Fprintf(w, "\nTo apply it: broker policy apply -f %s --project %s --expected-version %d\n", file, p.Project, p.ExpectedVersion)
	return err
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

// writeChecks writes rule checks one per line, marking matches.
func writeChecks(w io.Writer, checks []policy.RuleCheck, match, miss string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, rc := range checks {
		mark := miss
		if rc.Matches {
			mark = match
		}
		if mark == "" {
			fmt.Fprintf(tw, "  %s\t%s\n", rc.Rule, rc.Reason)
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", rc.Rule, mark, rc.Reason)
	}
	return tw.Flush()
}

func checkRows(checks []policy.RuleCheck, match, miss string) [][]string {
	rows := [][]string{{"id", "subject", "channel", "role", "effect", "max_ttl_seconds", "project", "matches", "reason"}}
	for _, rc := range checks {
		r, mark := rc.Rule, miss
		if rc.Matches {
			mark = match
		}
		rows = append(rows, []string{strconv.FormatInt(r.ID, 10), r.Subject, r.Channel, string(r.Role), string(r.Effect),
			strconv.Itoa(r.MaxTTLSeconds), r.Project, mark, rc.Reason})
	}
	return rows
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
		if c.ApplyID != 0 {
			fmt.Fprintf(w, "  apply %d", c.ApplyID)
		}
		if c.Unchanged != 0 {
			fmt.Fprintf(w, "  %d unchanged", c.Unchanged)
		}
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
