package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/broker-dev/broker/internal/client"
	"github.com/broker-dev/broker/internal/revoke"
)

// revokeActions are the actions of `broker revoke`.
var revokeActions = []struct{ name, help string }{
	{"user", "end a user's tokens now: --subject user:<sub> (or --uid N) --reason TEXT [--channel NAME|PATTERN] [--publish-only]"},
	{"list", "show the revocations, newest first [--active] [--limit N]"},
	{"lift", "end revocation --id N early: its deny rule removed, its Agora bans deleted"},
	{"orphans", "show the live tokens whose access a policy change took away, to revoke with `user`"},
}

// runRevoke is `broker revoke <action>`: revocations through a broker's API
// (--server or BROKER_SERVER, after `broker login`), as the logged-in user,
// who needs write (read to list) on api:revocations. A revocation signs
// an issuance log record and calls Agora: only a broker holds those keys,
// so there is no database mode.
func runRevoke(ctx context.Context, args []string, getenv func(string) string, _ io.Reader, stdout, _ io.Writer) error {
	fs := newFlagSet("revoke", stdout)
	server := fs.String("server", "", "the broker, as logged in with `broker login` (env "+serverEnv+")")
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
	fs.Usage = func() {
		var b strings.Builder
		b.WriteString("usage: broker revoke <action> [flags]\n\n" +
			"Through the broker of --server (or BROKER_SERVER) as the user `broker login` logged in.\n\nactions:\n")
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
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("revoke %s: unexpected argument %q", action, fs.Arg(0)))
	}
	if *output != "table" && *output != "json" {
		return usageError("revoke: -o must be table or json")
	}
	srv, err := serverFrom(*server, getenv)
	if err != nil {
		return err
	}
	if srv == "" {
		return usageError("revoke: give --server URL (or set " + serverEnv + "), a broker you logged in to with `broker login`")
	}
	c, err := apiClient(srv, getenv)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *project != "" {
		q.Set("project", *project)
	}
	switch action {
	case "user":
		if *reason == "" || (*subject == "") == (*uid == 0) {
			return usageError("revoke user: give --reason and one of --subject user:<sub> or --uid N")
		}
		if *uid > 1<<32-1 {
			return usageError("revoke user: --uid is an Agora uid, at most 4294967295")
		}
		var r revoke.Revocation
		err := c.JSON(ctx, client.Request{Method: http.MethodPost, Path: "/v1/revocations"}, map[string]any{
			"subject": *subject, "uid": *uid, "channel": *channel, "publishOnly": *publishOnly, "reason": *reason, "project": *project,
		}, &r)
		if err != nil {
			return err
		}
		return renderRevocations(stdout, *output, r, []revoke.Revocation{r})
	case "list":
		q.Set("limit", strconv.Itoa(*limit))
		if *active {
			q.Set("active", "true")
		}
		var out struct {
			Revocations []revoke.Revocation `json:"revocations"`
		}
		if err := c.JSON(ctx, client.Request{Path: "/v1/revocations", Query: q}, nil, &out); err != nil {
			return err
		}
		return renderRevocations(stdout, *output, out, out.Revocations)
	case "lift":
		if *id <= 0 {
			return usageError("revoke lift: give --id, the revocation's id (broker revoke list)")
		}
		var r revoke.Revocation
		if err := c.JSON(ctx, client.Request{Method: http.MethodDelete, Path: "/v1/revocations/" + strconv.FormatInt(*id, 10)}, nil, &r); err != nil {
			return err
		}
		return renderRevocations(stdout, *output, r, []revoke.Revocation{r})
	case "orphans":
		var out struct {
			Orphans   []revoke.Orphan `json:"orphans"`
			Truncated bool            `json:"truncated"`
			Mode      string          `json:"mode"`
		}
		if err := c.JSON(ctx, client.Request{Path: "/v1/revocations/orphans", Query: q}, nil, &out); err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(stdout, out)
		}
		for _, o := range out.Orphans {
			what := "join"
			if o.PublishOnly {
				what = "publish"
			}
			fmt.Fprintf(stdout, "%s  %s  %s  %d token(s), uid %s, until %s  (may no longer %s: %s)\n", o.Subject, o.Channel, o.Role, o.Tokens,
				joinUIDs(o.UIDs), o.Expires.UTC().Format(time.RFC3339), what, o.Decision.Reason)
		}
		if out.Truncated {
			fmt.Fprintln(stdout, "… more: the list stops at 1000")
		}
		return nil
	}
	return usageError(fmt.Sprintf("revoke: unknown action %q (see broker revoke -h)", action))
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
