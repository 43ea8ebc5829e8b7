package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/broker-dev/broker/internal/apperr"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/client"
)

// runAudit is `broker audit verify|export|tail|…`: the auditor's view of the
// issuance log. With --server (or BROKER_SERVER), through that broker's API
// as the user `broker login` logged in; else in Postgres, which needs
// BROKER_DATABASE_URL and BROKER_AUDIT_KEY, and BROKER_AUDIT_PREVIOUS_KEYS to
// check records from before a key rotation (the keys check the chain and are
// never printed).
func runAudit(ctx context.Context, args []string, getenv func(string) string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit", stdout)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: broker audit verify|export|tail|prove|keygen|check-proof|acknowledge-rollback [flags]\n\n"+
			"  verify       check the hash chain and the tree against the records, and with a verifier key (--key, or\n"+
			"               BROKER_LOG_SIGNING_KEY's) the latest checkpoint, reading only the records after the last\n"+
			"               verified checkpoint unless --full; --checkpoint FILE: that the log extends an older\n"+
			"               checkpoint. Exit 0 and \"ok, …\", or exit 1 listing each problem\n"+
			"  export       write matching records to stdout, oldest first, as csv or jsonl\n"+
			"  tail         print the latest records (-n), and with --follow keep printing new ones\n"+
			"  prove        write the tlog-proof of record --seq (it carries the record) to stdout\n"+
			"  keygen       print a new checkpoint signer key and its verifier key for --origin (no database)\n"+
			"  check-proof  verify a tlog-proof FILE offline with --key (the verifier key), and print its record\n"+
			"  acknowledge-rollback  accept the log as it is now after it went back (a restored database): --reason\n\n"+
			"verify, export, tail and prove go to the broker of --server URL (or BROKER_SERVER) as the user\n"+
			"`broker login` logged in; without it, to the database of BROKER_DATABASE_URL.\n\n")
		if !hasFlags(fs) {
			fmt.Fprint(fs.Output(), "Run 'broker audit <action> -h' for the action's flags.\n")
			return
		}
		fmt.Fprint(fs.Output(), "flags:\n")
		fs.PrintDefaults()
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		fs.SetOutput(stderr)
		fs.Usage()
		return usageError("audit: want verify, export, tail, prove, keygen, check-proof or acknowledge-rollback")
	}
	action := args[0]
	var do func(context.Context, audit.Log) error
	// remote does the action through a broker's API (--server): nil for the
	// actions only the database can do.
	var remote func(context.Context, *client.Client) error
	fs.String("server", "", "verify, export, tail, prove: the broker to ask, as logged in with `broker login` (env "+serverEnv+"); without it, the database")
	var envKey string // the verifier key of BROKER_LOG_SIGNING_KEY, once read
	only := map[string]bool{"BROKER_DATABASE_URL": true, "BROKER_DATABASE_PASSWORD": true, "BROKER_AUDIT_KEY": true, "BROKER_AUDIT_PREVIOUS_KEYS": true}
	switch action {
	case "keygen", "check-proof":
		origin := fs.String("origin", "", "keygen: the log's origin, e.g. broker.example.com/issuance-log")
		key := fs.String("key", "", "check-proof: the log's verifier key (GET /log/key)")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		if action == "keygen" {
			if fs.NArg() > 0 {
				return usageError(fmt.Sprintf("audit keygen: unexpected argument %q", fs.Arg(0)))
			}
			return auditKeygen(*origin, stdout)
		}
		if fs.NArg() != 1 {
			return usageError("audit check-proof: give exactly one proof file")
		}
		return auditCheckProof(*key, fs.Arg(0), stdout)
	case "verify":
		key := fs.String("key", "", "the log's verifier key, to check the latest checkpoint and verify incrementally from the last verified one (default: BROKER_LOG_SIGNING_KEY's)")
		older := fs.String("checkpoint", "", "a file holding an older checkpoint (a signed note) the log must extend")
		full := fs.Bool("full", false, "read every record, not only those after the last verified checkpoint")
		output := fs.String("o", "table", "table (\"ok, …\" or each problem), json or yaml (the report); exit 1 when it does not verify")
		only["BROKER_LOG_SIGNING_KEY"] = true
		report := func(rep audit.Report) error {
			switch *output {
			case "table":
				return printReport(rep, stdout)
			case "json", "yaml":
				if err := render(stdout, *output, rep, nil, nil); err != nil {
					return err
				}
				if !rep.OK {
					return exitStatus(1)
				}
				return nil
			}
			return usageError(fmt.Sprintf("audit verify: -o %q: want table, json or yaml", *output))
		}
		remote = func(ctx context.Context, c *client.Client) error {
			if *key != "" || *older != "" {
				return usageError("audit verify --server: the broker verifies with its own verifier key; --key and --checkpoint are for BROKER_DATABASE_URL (or check a checkpoint from /log/checkpoint with check-proof)")
			}
			var rep audit.Report
			if err := c.JSON(ctx, client.Request{Path: "/v1/audit/verify", Query: url.Values{"full": {strconv.FormatBool(*full)}}}, nil, &rep); err != nil {
				return err
			}
			return report(rep)
		}
		do = func(ctx context.Context, l audit.Log) error {
			vkey := firstNonEmpty(*key, envKey)
			if vkey == "" {
				if *older != "" {
					return usageError("audit verify --checkpoint: give --key (the log's verifier key) or set BROKER_LOG_SIGNING_KEY")
				}
				rep, err := l.Verify(ctx)
				if err != nil {
					return err
				}
				return report(rep)
			}
			if *output != "table" {
				return usageError("audit verify: with a verifier key the checkpoints are checked too, and reported as text: -o table (or verify through --server)")
			}
			vs, origin, err := verifierFor(vkey)
			if err != nil {
				return err
			}
			rep, err := audit.VerifyIncremental(ctx, l, origin, vs, *full)
			if err != nil {
				return err
			}
			if err := printReport(rep, stdout); err != nil {
				return err
			}
			return auditVerifyCheckpoints(ctx, l, vkey, *older, stdout)
		}
	case "prove":
		seq := fs.Int64("seq", 0, "the record's sequence number")
		do = func(ctx context.Context, l audit.Log) error { return auditProve(ctx, l, *seq, stdout) }
		remote = func(ctx context.Context, c *client.Client) error {
			if *seq < 1 {
				return usageError("audit prove: --seq must be a record's sequence number (1 or more)")
			}
			return copyFrom(ctx, c, client.Request{Path: "/v1/audit/records/" + strconv.FormatInt(*seq, 10) + "/proof", Accept: "text/plain"}, stdout)
		}
	case "acknowledge-rollback":
		reason := fs.String("reason", "", "what happened (recorded with the acknowledgement)")
		actor := fs.String("actor", "", `who acknowledges (default "cli:<os user>")`)
		do = func(ctx context.Context, l audit.Log) error {
			who := *actor
			if who == "" {
				who = "cli:" + osUser(getenv)
			}
			return auditAcknowledge(ctx, l.(*audit.Postgres), who, *reason, stdout)
		}
	case "export":
		q, f := filterFlags(fs)
		format := fs.String("format", audit.FormatCSV, "csv or jsonl")
		do = func(ctx context.Context, l audit.Log) error {
			filter, err := f()
			if err != nil {
				return err
			}
			return l.Export(ctx, filter, *format, stdout)
		}
		remote = func(ctx context.Context, c *client.Client) error {
			if _, err := f(); err != nil {
				return err
			}
			v := url.Values{"format": {*format}}
			setNonEmpty(v, "issuer", q.Issuer, "subject", q.Subject, "account", q.Account, "uid", q.UID, "channel", q.Channel,
				"project", q.Project, "decision", q.Decision, "from", q.From, "to", q.To, "requestId", q.RequestID, "limit", q.Limit)
			return copyFrom(ctx, c, client.Request{Path: "/v1/audit/export", Query: v, Accept: "text/csv, application/jsonl"}, stdout)
		}
	case "tail":
		n := fs.Int("n", 10, "how many of the latest records to print")
		follow := fs.Bool("follow", false, "keep printing new records until interrupted")
		every := fs.Duration("interval", time.Second, "with --follow, how often to look for new records")
		output := fs.String("o", "table", "table (one line a record), json (one JSON object a line) or csv (the export's columns)")
		tail := func(ctx context.Context, l recordSearcher) error {
			if *n < 0 || *n > audit.MaxLimit {
				return usageError(fmt.Sprintf("audit tail: -n must be between 0 and %d", audit.MaxLimit))
			}
			if *every <= 0 {
				return usageError("audit tail: --interval must be positive")
			}
			show := func(recs []audit.Record) error { return printRecords(stdout, recs) }
			switch *output {
			case "table":
			case "json", "csv":
				format := map[string]string{"json": audit.FormatJSONL, "csv": audit.FormatCSV}[*output]
				rw, err := audit.NewRecordWriter(format, stdout)
				if err != nil {
					return err
				}
				show = rw.Write
			default:
				return usageError(fmt.Sprintf("audit tail: -o %q: want table, json or csv", *output))
			}
			return auditTail(ctx, l, *n, *follow, *every, show)
		}
		do = func(ctx context.Context, l audit.Log) error { return tail(ctx, l) }
		remote = func(ctx context.Context, c *client.Client) error { return tail(ctx, apiRecords{c}) }
	default:
		fs.Usage()
		return usageError(fmt.Sprintf("audit: unknown action %q (want verify, export, tail, prove, keygen, check-proof or acknowledge-rollback)", action))
	}
	server, err := chooseServer("audit", fs, args[1:], getenv)
	if err != nil {
		return err
	}
	if server != "" {
		if remote == nil {
			return usageError(fmt.Sprintf("audit %s works on the database only (BROKER_DATABASE_URL), not through --server", action))
		}
		only = map[string]bool{}
	}
	cfg, err := loadConfig(fs, args[1:], getenv, only)
	if server == "" && missingDatabase(err) {
		return usageError(fmt.Sprintf("audit: give --server URL (a broker you logged in to with `broker login`) or set BROKER_DATABASE_URL: %v", err))
	}
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("audit %s: unexpected argument %q", action, fs.Arg(0)))
	}
	if server != "" {
		c, err := apiClient(server, getenv)
		if err != nil {
			return err
		}
		return remote(ctx, c)
	}
	pool, err := openDatabase(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	l, err := audit.NewPostgres(pool, cfg.AuditKey, audit.PostgresOptions{PreviousKeys: cfg.AuditPreviousKeys})
	if err != nil {
		return err
	}
	defer l.Close()
	envKey = cfg.LogVerifierKey
	err = do(ctx, l)
	if e, ok := apperr.As(err); ok && e.Kind == apperr.Invalid {
		return usageError(fmt.Sprintf("audit %s: %v", action, err))
	}
	return err
}

// filterFlags defines the record filters on fs and returns them and a
// function that builds the Filter once fs is parsed.
func filterFlags(fs *flag.FlagSet) (*audit.Query, func() (audit.Filter, error)) {
	q := new(audit.Query)
	fs.StringVar(&q.Issuer, "issuer", "", "only records of this OIDC issuer (a subject is unique only within its issuer)")
	fs.StringVar(&q.Subject, "subject", "", "only records of this OIDC subject")
	fs.StringVar(&q.Account, "account", "", "only records of this account")
	fs.StringVar(&q.UID, "uid", "", "only records of this Agora uid")
	fs.StringVar(&q.Channel, "channel", "", "only this channel, or a pattern where * matches any run of characters")
	fs.StringVar(&q.Project, "project", "", "only records of this Agora project (default: every project)")
	fs.StringVar(&q.Decision, "decision", "", "only granted, denied or invalid")
	fs.StringVar(&q.RequestID, "request-id", "", "only the record of this request id (with --from and --to at most a day apart)")
	fs.StringVar(&q.From, "from", "", "only records at or after this time (RFC 3339)")
	fs.StringVar(&q.To, "to", "", "only records before this time (RFC 3339)")
	fs.StringVar(&q.Limit, "limit", "", "at most this many records (empty or 0: all)")
	return q, func() (audit.Filter, error) {
		f, err := audit.ParseQuery(*q)
		if e, ok := apperr.As(err); ok {
			return audit.Filter{}, usageError(fmt.Sprintf("--%s %s", e.Field, e.Message))
		}
		return f, err
	}
}

// printReport writes a verification report: "ok, …" or each problem and
// exit status 1.
func printReport(rep audit.Report, stdout io.Writer) error {
	redacted := ""
	if rep.Redacted > 0 {
		redacted = fmt.Sprintf(", %d of them past retention (before %s): personal fields dropped, content not checkable, chain and tree checked",
			rep.Redacted, rep.RedactedBefore.Format("2006-01-02"))
	}
	if rep.OK && rep.From > 0 {
		_, err := fmt.Fprintf(stdout, "ok, %d new records after the verified checkpoint of %d%s (--full reads them all)\n", rep.Records, rep.From, redacted)
		return err
	}
	if rep.OK {
		_, err := fmt.Fprintf(stdout, "ok, %d records%s\n", rep.Records, redacted)
		return err
	}
	var b strings.Builder
	for _, p := range rep.Problems {
		fmt.Fprintf(&b, "seq %d: %s: %s\n", p.Seq, p.Kind, p.Detail)
	}
	more := ""
	if len(rep.Problems) == audit.MaxProblems {
		more = " (list capped; there may be more)"
	}
	fmt.Fprintf(&b, "FAILED: %d problem(s) in %d records%s\n", len(rep.Problems), rep.Records, more)
	if _, err := io.WriteString(stdout, b.String()); err != nil {
		return err
	}
	return exitStatus(1)
}

// recordSearcher pages through the log newest first: an audit.Log, or
// apiRecords through a broker.
type recordSearcher interface {
	Search(ctx context.Context, f audit.Filter) (audit.Page, error)
}

// apiRecords searches a broker's log (GET /v1/audit) by Limit and Cursor,
// the only fields auditTail sets.
type apiRecords struct{ c *client.Client }

func (a apiRecords) Search(ctx context.Context, f audit.Filter) (audit.Page, error) {
	q := url.Values{"limit": {strconv.Itoa(f.Limit)}}
	setNonEmpty(q, "cursor", f.Cursor)
	var page struct {
		Records    []audit.Record `json:"records"`
		NextCursor *string        `json:"nextCursor"`
	}
	if err := a.c.JSON(ctx, client.Request{Path: "/v1/audit", Query: q}, nil, &page); err != nil {
		return audit.Page{}, err
	}
	p := audit.Page{Records: page.Records}
	if page.NextCursor != nil {
		p.NextCursor = *page.NextCursor
	}
	return p, nil
}

// copyFrom writes the body of a broker's answer to w.
func copyFrom(ctx context.Context, c *client.Client, req client.Request, w io.Writer) error {
	resp, err := c.Do(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

// auditTail prints the latest n records oldest first, then with follow polls
// for newer ones until ctx ends.
func auditTail(ctx context.Context, l recordSearcher, n int, follow bool, every time.Duration, show func([]audit.Record) error) error {
	var last int64
	if n > 0 {
		page, err := l.Search(ctx, audit.Filter{Limit: n})
		if err != nil {
			return err
		}
		slices.Reverse(page.Records)
		if err := show(page.Records); err != nil {
			return err
		}
		if len(page.Records) > 0 {
			last = page.Records[len(page.Records)-1].Seq
		}
	}
	if !follow {
		return nil
	}
	if n == 0 {
		page, err := l.Search(ctx, audit.Filter{Limit: 1})
		if err != nil {
			return err
		}
		if len(page.Records) > 0 {
			last = page.Records[0].Seq
		}
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		recs, err := newerThan(ctx, l, last)
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if err := show(recs); err != nil {
			return err
		}
		if len(recs) > 0 {
			last = recs[len(recs)-1].Seq
		}
	}
}

// newerThan returns the records after seq, oldest first, paging back from the newest.
func newerThan(ctx context.Context, l recordSearcher, seq int64) ([]audit.Record, error) {
	var out []audit.Record
	f := audit.Filter{Limit: audit.MaxLimit}
	for {
		page, err := l.Search(ctx, f)
		if err != nil {
			return nil, err
		}
		for _, r := range page.Records {
			if r.Seq <= seq {
				slices.Reverse(out)
				return out, nil
			}
			out = append(out, r)
		}
		if page.NextCursor == "" {
			slices.Reverse(out)
			return out, nil
		}
		f.Cursor = page.NextCursor
	}
}

// printRecords writes one line per record. Text from requests (user agent,
// reason) may hold control characters, which are replaced so that they cannot
// drive the auditor's terminal.
func printRecords(w io.Writer, recs []audit.Record) error {
	var b strings.Builder
	for _, r := range recs {
		uid := "-"
		if r.UID != 0 {
			uid = strconv.FormatUint(uint64(r.UID), 10)
		}
		fmt.Fprintf(&b, "%d %s %s sub=%s account=%s uid=%s %s %s %s ttl=%ds reason=%q\n",
			r.Seq, r.Time.Format(time.RFC3339), r.Decision, printable(r.Subject), printable(r.Account), uid,
			orDash(r.Service), printable(orDash(r.Channel)), orDash(r.Role), int64(r.GrantedTTL/time.Second), r.Reason)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return '\uFFFD'
		}
		return r
	}, s)
}
