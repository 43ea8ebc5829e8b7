package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/client"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/revoke"
)

// revokeActions are the actions of `broker revoke`.
var revokeActions = []struct{ name, help string }{
	{"user", "end a user's tokens now: --subject user:<sub> (or --uid N) --reason TEXT [--channel NAME|PATTERN] [--publish-only]"},
	{"list", "show the revocations, newest first [--active] [--limit N]"},
	{"lift", "end revocation --id N early: its deny rule removed, its Agora bans deleted"},
	{"orphans", "show the live tokens whose access a policy change took away, to revoke with `user`"},
}

// revoker is where `broker revoke` works: a broker's API as the logged-in
// user (apiRevoker), or the database with the broker's own configuration
// (revoke.Service).
type revoker interface {
	Revoke(ctx context.Context, req revoke.Request) (revoke.Revocation, error)
	List(ctx context.Context, project string, active bool, limit int) ([]revoke.Revocation, error)
	Lift(ctx context.Context, id int64) (revoke.Revocation, error)
	Orphans(ctx context.Context, project string) ([]revoke.Orphan, bool, error)
}

// runRevoke is `broker revoke <action>`: with --server (or BROKER_SERVER),
// through that broker's API as the user `broker login` logged in, who needs
// write (read to list) on api:revocations; without it, on the database
// with the broker's whole configuration (its environment or --config: the
// audit key signs the issuance log's record, the Agora accounts ban), as
// --actor, no right checked: for an operator when the API is out of reach.
func runRevoke(ctx context.Context, args []string, getenv func(string) string, _ io.Reader, stdout, _ io.Writer) error {
	fs := newFlagSet("revoke", stdout)
	fs.String("server", "", "the broker, as logged in with `broker login` (env "+serverEnv+"); without it, the database with the broker's configuration")
	subject := fs.String("subject", "", `user: the user, "user:<sub>" as rules name them`)
	uid := fs.Uint("uid", 0, "user: the user of this Agora uid (instead of --subject)")
	channel := fs.String("channel", "", `user: only the tokens of this channel or pattern (default "*": every channel)`)
	publishOnly := fs.Bool("publish-only", false, "user: end publishing only; the user may still join")
	reason := fs.String("reason", "", "user: why (kept with the revocation and in the issuance log)")
	project := fs.String("project", "", "the Agora project (default: default)")
	id := fs.Int64("id", 0, "lift: the revocation")
	active := fs.Bool("active", false, "list: only those in force")
	limit := fs.Int("limit", 100, "list: at most this many")
	output := fs.String("o", "table", "output: table or json")
	actorFlag := fs.String("actor", "", `without --server: who revokes, for the policy history and the issuance log (default "cli:<os user>")`)
	fs.Usage = func() {
		var b strings.Builder
		b.WriteString("usage: broker revoke <action> [flags]\n\n" +
			"With --server URL (or BROKER_SERVER) through that broker as the user `broker login` logged in;\n" +
			"without it, on the database with the broker's own configuration (recovery, no right checked).\n\nactions:\n")
		for _, a := range revokeActions {
			fmt.Fprintf(&b, "  %-8s %s\n", a.name, a.help)
		}
		b.WriteString("\nflags:\n")
		fmt.Fprint(fs.Output(), b.String())
		fs.PrintDefaults()
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		return usageError("revoke: want an action: user, list, lift or orphans (see broker revoke -h)")
	}
	action := args[0]
	server, err := chooseServer("revoke", fs, args[1:], getenv)
	if err != nil {
		return err
	}
	only := map[string]bool{} // through the API: no setting of the broker's
	if server == "" {
		only = nil // on the database: all of them, as serve reads them
	}
	cfg, err := loadConfig(fs, args[1:], getenv, only)
	if server == "" && missingDatabase(err) {
		return usageError(fmt.Sprintf("revoke: give --server URL (a broker you logged in to with `broker login`) or the broker's configuration with BROKER_DATABASE_URL: %v", err))
	}
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("revoke %s: unexpected argument %q", action, fs.Arg(0)))
	}
	if *output != "table" && *output != "json" {
		return usageError("revoke: -o must be table or json")
	}
	var r revoker
	if server != "" {
		if flagSet(fs, "actor") {
			return usageError("revoke: --actor is for the database; a broker records the user logged in")
		}
		c, err := apiClient(server, getenv)
		if err != nil {
			return err
		}
		r = apiRevoker{c}
	} else {
		svc, closeAll, err := databaseRevoker(ctx, cfg)
		if err != nil {
			return err
		}
		defer closeAll()
		who := policy.Actor{Subject: cmp.Or(*actorFlag, "cli:"+osUser(getenv)), Operator: true}
		r = dbRevoker{svc, who}
	}
	proj := cmp.Or(*project, policy.DefaultProject)
	switch action {
	case "user":
		if *reason == "" || (*subject == "") == (*uid == 0) {
			return usageError("revoke user: give --reason and one of --subject user:<sub> or --uid N")
		}
		if *uid > 1<<32-1 {
			return usageError("revoke user: --uid is an Agora uid, at most 4294967295")
		}
		rev, err := r.Revoke(ctx, revoke.Request{Project: proj, Subject: *subject, UID: uint32(*uid), Channel: *channel, PublishOnly: *publishOnly, Reason: *reason})
		if err != nil {
			return err
		}
		return renderRevocations(stdout, *output, rev, []revoke.Revocation{rev})
	case "list":
		revs, err := r.List(ctx, proj, *active, *limit)
		if err != nil {
			return err
		}
		return renderRevocations(stdout, *output, map[string]any{"revocations": nonNilRevocations(revs)}, revs)
	case "lift":
		if *id <= 0 {
			return usageError("revoke lift: give --id, the revocation's id (broker revoke list)")
		}
		rev, err := r.Lift(ctx, *id)
		if err != nil {
			return err
		}
		return renderRevocations(stdout, *output, rev, []revoke.Revocation{rev})
	case "orphans":
		orphans, truncated, err := r.Orphans(ctx, proj)
		if err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(stdout, map[string]any{"orphans": nonNilOrphans(orphans), "truncated": truncated})
		}
		for _, o := range orphans {
			what := "join"
			if o.PublishOnly {
				what = "publish"
			}
			fmt.Fprintf(stdout, "%s  %s  %s  %d token(s), uid %s, until %s  (may no longer %s: %s)\n", o.Subject, o.Channel, o.Role, o.Tokens,
				joinUIDs(o.UIDs), o.Expires.UTC().Format(time.RFC3339), what, o.Decision.Reason)
		}
		if truncated {
			fmt.Fprintln(stdout, "… more: the list stops at 1000")
		}
		return nil
	}
	return usageError(fmt.Sprintf("revoke: unknown action %q (see broker revoke -h)", action))
}

// databaseRevoker is the revocation service on the database of cfg, as a
// broker builds it; closeAll releases what it opened.
func databaseRevoker(ctx context.Context, cfg *config) (*revoke.Service, func(), error) {
	pool, err := openDatabase(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, nil, err
	}
	engine, err := policy.Open(ctx, policy.NewPGStore(pool, nil), nil)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	engine.ServeProjects(projectNames(cfg.Projects))
	l, err := audit.NewPostgres(pool, cfg.AuditKey, audit.PostgresOptions{PreviousKeys: cfg.AuditPreviousKeys})
	if err != nil {
		engine.Close()
		pool.Close()
		return nil, nil, err
	}
	closeAll := func() {
		l.Close()
		engine.Close()
		pool.Close()
	}
	svc, err := newRevocations(cfg, engine, l, revoke.NewPostgres(pool), qualifierOf(cfg))
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return svc, closeAll, nil
}

// dbRevoker works on the database as who.
type dbRevoker struct {
	s   *revoke.Service
	who policy.Actor
}

func (d dbRevoker) Revoke(ctx context.Context, req revoke.Request) (revoke.Revocation, error) {
	return d.s.Revoke(ctx, d.who, req)
}

func (d dbRevoker) List(ctx context.Context, project string, active bool, limit int) ([]revoke.Revocation, error) {
	return d.s.Store.List(ctx, project, active, limit)
}

func (d dbRevoker) Lift(ctx context.Context, id int64) (revoke.Revocation, error) {
	return d.s.Lift(ctx, d.who, id)
}

func (d dbRevoker) Orphans(ctx context.Context, project string) ([]revoke.Orphan, bool, error) {
	return d.s.Orphans(ctx, project)
}

// apiRevoker works through a broker's API.
type apiRevoker struct{ c *client.Client }

func (a apiRevoker) Revoke(ctx context.Context, req revoke.Request) (revoke.Revocation, error) {
	var r revoke.Revocation
	err := a.c.JSON(ctx, client.Request{Method: http.MethodPost, Path: "/v1/revocations"}, map[string]any{
		"subject": req.Subject, "uid": req.UID, "channel": req.Channel, "publishOnly": req.PublishOnly, "reason": req.Reason, "project": req.Project,
	}, &r)
	return r, err
}

func (a apiRevoker) List(ctx context.Context, project string, active bool, limit int) ([]revoke.Revocation, error) {
	q := url.Values{"project": {project}, "limit": {strconv.Itoa(limit)}, "active": {strconv.FormatBool(active)}}
	var out struct {
		Revocations []revoke.Revocation `json:"revocations"`
	}
	err := a.c.JSON(ctx, client.Request{Path: "/v1/revocations", Query: q}, nil, &out)
	return out.Revocations, err
}

func (a apiRevoker) Lift(ctx context.Context, id int64) (revoke.Revocation, error) {
	var r revoke.Revocation
	err := a.c.JSON(ctx, client.Request{Method: http.MethodDelete, Path: "/v1/revocations/" + strconv.FormatInt(id, 10)}, nil, &r)
	return r, err
}

func (a apiRevoker) Orphans(ctx context.Context, project string) ([]revoke.Orphan, bool, error) {
	var out struct {
		Orphans   []revoke.Orphan `json:"orphans"`
		Truncated bool            `json:"truncated"`
	}
	err := a.c.JSON(ctx, client.Request{Path: "/v1/revocations/orphans", Query: url.Values{"project": {project}}}, nil, &out)
	return out.Orphans, out.Truncated, err
}

func nonNilRevocations(rs []revoke.Revocation) []revoke.Revocation {
	if rs == nil {
		return []revoke.Revocation{}
	}
	return rs
}

func nonNilOrphans(os []revoke.Orphan) []revoke.Orphan {
	if os == nil {
		return []revoke.Orphan{}
	}
	return os
}

// renderRevocations writes v as JSON, or rs as a table.
func renderRevocations(w io.Writer, format string, v any, rs []revoke.Revocation) error {
	if format == "json" {
		return writeJSON(w, v)
	}
	for _, r := range rs {
		state := "in force until " + r.Until.UTC().Format(time.RFC3339)
		if r.Lifted != nil {
			state = "lifted " + r.Lifted.UTC().Format(time.RFC3339) + " by " + r.LiftedBy
		}
		scope := r.Channel
		if r.PublishOnly {
			scope += " (publishing)"
		}
		fmt.Fprintf(w, "%d  %s  %s  %s  by %s: %s\n", r.ID, r.Subject, scope, state, r.Actor, r.Reason)
		for _, b := range r.Bans {
			fmt.Fprintf(w, "    ban %d: uid %d on %s until %s\n", b.ID, b.UID, banChannel(b.Channel), b.Until.UTC().Format(time.RFC3339))
		}
		if r.BansError != "" {
			fmt.Fprintf(w, "    not banned: %s\n", r.BansError)
		}
	}
	return nil
}

// banChannel names a ban's channel; "" is every channel of the app.
func banChannel(c string) string {
	if c == "" {
		return "every channel"
	}
	return c
}

func joinUIDs(uids []uint32) string {
	s := make([]string, len(uids))
	for i, u := range uids {
		s[i] = strconv.FormatUint(uint64(u), 10)
	}
	return strings.Join(s, ",")
}
