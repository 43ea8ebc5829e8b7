package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/broker-dev/broker/examples"
	"github.com/broker-dev/broker/internal/audit"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/devidp"
	"github.com/broker-dev/broker/internal/httpapi"
	"github.com/broker-dev/broker/internal/identity"
	"github.com/broker-dev/broker/internal/pg"
	"github.com/broker-dev/broker/internal/policy"
	"github.com/broker-dev/broker/internal/review"
	"github.com/broker-dev/broker/internal/revoke"
	"github.com/broker-dev/broker/internal/sessions"
	"github.com/broker-dev/broker/internal/tlog"
	"github.com/broker-dev/broker/internal/tokenurl"
	"github.com/broker-dev/broker/policies"
)

// The dummy Agora app `broker dev` signs with unless a real one is configured:
// its tokens are well-formed but Agora will not accept them.
const (
	devAppID   = "0000000000000000000000000000dead"
	devAppCert = "0000000000000000000000000000beef"
	devIssuer  = "/dev/oidc"
	devClient  = "broker-dev"
)

// runDev is `broker dev`: the whole broker in one process on loopback, with a
// built-in development identity provider, in-memory stores and the example
// policies. It needs nothing but Go.
func runDev(ctx context.Context, args []string, getenv func(string) string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev", stdout)
	only := map[string]bool{"BROKER_APP_ID": true, "BROKER_APP_CERTIFICATE": true, "BROKER_LOG_LEVEL": true, "BROKER_CORS_ORIGINS": true,
		"BROKER_TOKEN_URL_MAX_TTL": true, "BROKER_AGORA_NCS_SECRET": true}
	addr := fs.String("addr", "", "listen address; must be loopback (default $BROKER_ADDR, then 127.0.0.1:8080)")

	cfg, err := loadConfig(fs, args, devEnv(getenv), only)
	if err != nil {
		return err
	}
	if len(cfg.Issuers) > 0 {
		return usageError("broker dev signs users in with its built-in issuer: the configuration file's issuers list is for broker serve")
	}
	if len(cfg.Projects) != 1 || cfg.Projects[0].Name != policy.DefaultProject {
		return usageError("broker dev serves one Agora project (BROKER_APP_ID, or a dummy one): the configuration file's projects list is for broker serve")
	}
	// BROKER_DATABASE_URL (or _FILE, with BROKER_DATABASE_PASSWORD), when
	// set: that Postgres database instead of in-memory stores (migrated
	// automatically).
	dbURL, err := databaseURL(getenv)
	if err != nil {
		return err
	}
	if *addr == "" {
		*addr = firstNonEmpty(getenv("BROKER_ADDR"), "127.0.0.1:8080")
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || !devidp.IsLoopbackHost(host) {
		return usageError(fmt.Sprintf("--addr %q: broker dev only listens on loopback (127.0.0.1, ::1 or localhost); use broker serve for anything else", *addr))
	}
	dummyApp := cfg.AppID == devAppID
	logger := newLogger(stderr, cfg.LogLevel, false)
	stopTracing, err := startTracing(ctx, getenv, logger)
	if err != nil {
		return err
	}
	defer stopTracing()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	base := "http://" + ln.Addr().String()
	idp, err := devidp.New(devidp.Options{Issuer: base + devIssuer, Audience: devClient, Logger: logger})
	if err != nil {
		ln.Close()
		return err
	}

	cfg.OIDCIssuer, cfg.OIDCAudience, cfg.OIDCAlgorithms = idp.IssuerURL(), []string{devClient}, []string{"ES256", "RS256"}
	cfg.OIDCLeeway, cfg.AccountClaim, cfg.GroupsClaim = 30*time.Second, "sub", "groups"
	cfg.DefaultTTL, cfg.MaxTTL = 24*time.Hour, 24*time.Hour
	cfg.Projects[0].DefaultTTL, cfg.Projects[0].MaxTTL = cfg.DefaultTTL, cfg.MaxTTL
	cfg.RateLimit, cfg.RateBurst = 10, 20
	cfg.ConsoleClientID, cfg.ConsoleRedirectURL = devClient, base+"/console/callback"
	cfg.CLIClientID = devClient // broker login --server <this address>: the code flow with PKCE
	cfg.PublicURL = base
	// The issuance log signs checkpoints with a key of this run only.
	if cfg.LogSigningKey, cfg.LogVerifierKey, err = tlog.GenerateKey("broker.dev/issuance-log"); err != nil {
		return err
	}
	cfg.LogCheckpointInterval = time.Second
	if cfg.AuditKey, err = randomKey(); err != nil {
		ln.Close()
		return err
	}

	be, stores, closeStores, err := devBackends(ctx, dbURL, cfg.AuditKey, logger)
	if err != nil {
		ln.Close()
		return err
	}
	defer closeStores()
	reg := newRegistry()
	examplePages, err := iofs.Sub(examples.Web, "web")
	if err != nil {
		ln.Close()
		return err
	}
	a, err := newApp(ctx, cfg, be, logger, reg, []httpapi.Mount{
		{Prefix: devIssuer, Handler: idp.Handler()},
		{Prefix: "/examples", Handler: http.StripPrefix("/examples", http.FileServerFS(examplePages))},
	})
	if err != nil {
		ln.Close()
		return err
	}
	seeded, err := seedExamplePolicies(ctx, a)
	if err != nil {
		ln.Close()
		_ = a.close()
		return err
	}
	// The banner's lines work once the broker has read its own issuer's
	// discovery and keys, from the server started below: it is printed
	// then, not before (its curl line answered 503 "not reached yet" when
	// run at once).
	banner := make(chan struct{})
	go func() {
		defer close(banner)
		if err := waitVerifierReady(ctx, a.verifier, devReadyWait); err != nil {
			if ctx.Err() != nil {
				return
			}
			fmt.Fprintf(stdout, "The built-in identity provider is not ready yet (%v): token requests answer 503 until it is.\n", err)
		}
		printDevBanner(stdout, base, stores, seeded, dummyApp)
	}()
	serr := serveUntilDone(ctx, httpapi.NewHTTPServer(ln.Addr().String(), devidp.LoopbackOnly(a.handler), logger), ln, shutdownGrace, logger)
	<-banner
	if cerr := a.close(); cerr != nil && serr == nil {
		serr = cerr
	}
	return serr
}

// devReadyWait bounds how long broker dev waits for its own issuer before it
// prints the banner anyway, saying so.
const devReadyWait = 10 * time.Second

// waitVerifierReady waits until v has reached every issuer (Issuers.Ready),
// ctx is done or limit has passed; it returns the last reason it was not
// ready, or nil.
func waitVerifierReady(ctx context.Context, v *auth.Issuers, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		err := v.Ready()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// devEnv supplies the dummy Agora app when none is configured.
func devEnv(getenv func(string) string) func(string) string {
	configured := getenv("BROKER_APP_ID") != "" || getenv("APP_ID") != ""
	return func(k string) string {
		if !configured {
			switch k {
			case "BROKER_APP_ID":
				return devAppID
			case "BROKER_APP_CERTIFICATE":
				return devAppCert
			case "APP_ID", "APP_CERTIFICATE":
				return ""
			}
		}
		return getenv(k)
	}
}

func randomKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	return k, nil
}

// devBackends returns in-memory stores, or Postgres ones when dbURL is set
// (migrated automatically: this is development).
func devBackends(ctx context.Context, dbURL string, auditKey []byte, logger *slog.Logger) (backends, string, func(), error) {
	if dbURL == "" {
		log, err := audit.NewMemory(auditKey)
		if err != nil {
			return backends{}, "", nil, err
		}
		store := policy.NewMemStore()
		log.FollowPolicy(func() int64 { v, _ := store.Version(context.Background()); return v })
		return backends{policy: store, log: log, uids: identity.NewDerivedMemory(), tokenURLs: tokenurl.NewMemory(), sessions: sessions.NewMemory(), events: review.NewMemory(), revs: revoke.NewMemory()},
			"in memory (uids derived from the user, the same after a restart)", func() {}, nil
	}
	pool, err := pg.Open(ctx, dbURL, pg.Options{})
	if err != nil {
		return backends{}, "", nil, fmt.Errorf("BROKER_DATABASE_URL: %w", err)
	}
	if _, err := pg.Migrate(ctx, pool); err != nil {
		pool.Close()
		return backends{}, "", nil, fmt.Errorf("BROKER_DATABASE_URL: %w", err)
	}
	log, err := audit.NewPostgres(pool, auditKey, audit.PostgresOptions{})
	if err != nil {
		pool.Close()
		return backends{}, "", nil, err
	}
	be := backends{policy: policy.NewPGStore(pool, logger), log: log, uids: identity.NewPostgres(pool), tokenURLs: tokenurl.NewPostgres(pool), sessions: sessions.NewPostgres(pool), events: review.NewPostgres(pool), revs: revoke.NewPostgres(pool),
		ready: []httpapi.Check{{Name: "database", Check: func(ctx context.Context) error { return pg.Health(ctx, pool) }}}}
	return be, "in Postgres (" + pg.Redact(dbURL) + ")", pool.Close, nil
}

// seedExamplePolicies imports policies/example.csv into a store that holds
// no rules but the login rules of migrations (a fresh database); the import
// adds only the example's rules the store does not hold already.
func seedExamplePolicies(ctx context.Context, a *app) (int, error) {
	rules, err := a.policy.List(ctx, policy.Filter{})
	if err != nil {
		return 0, err
	}
	for _, r := range rules {
		if !r.IsLogin() {
			return 0, nil
		}
	}
	res, err := a.policy.Import(ctx, policy.Actor{Subject: "system:dev", Operator: true}, strings.NewReader(policies.ExampleCSV), policy.ImportOptions{})
	if err != nil {
		return 0, fmt.Errorf("example policies: %w", err)
	}
	return len(res.Added), nil
}

func printDevBanner(w io.Writer, base, stores string, seeded int, dummyApp bool) {
	var b strings.Builder
	fmt.Fprintf(&b, "broker dev: development mode on %s — not for production\n\n", base)
	fmt.Fprintf(&b, "  OIDC issuer   %s%s (built in; demo users alice, bob, carol: the console's sign-in page asks no\n"+
		"                password; the password grant (POST %s/token) takes dev-<name>)\n", base, devIssuer, devIssuer)
	for _, u := range devidp.DemoUsers() {
		fmt.Fprintf(&b, "                %-6s groups [%s]\n", u.Subject, strings.Join(u.Groups, " "))
	}
	fmt.Fprintf(&b, "  stores        policies, issuance log and uids %s\n", stores)
	if seeded > 0 {
		fmt.Fprintf(&b, "  policies      %d example rules from policies/example.csv (developers may publish on demo-*)\n", seeded)
	}
	if dummyApp {
		fmt.Fprintf(&b, "  Agora app     DUMMY App ID %s and certificate %s: tokens are well-formed\n"+
			"                but Agora rejects them; check one with `broker token inspect --app-cert %s TOKEN`;\n"+
			"                set BROKER_APP_ID and BROKER_APP_CERTIFICATE for real ones\n", devAppID, devAppCert, devAppCert)
	} else {
		b.WriteString("  Agora app     your App ID and certificate from BROKER_APP_ID / BROKER_APP_CERTIFICATE\n")
	}
	fmt.Fprintf(&b, "  console       %s/console/ (sign in as alice for admin and auditor rights)\n", base)
	fmt.Fprintf(&b, "  examples      %s/examples/bearer.html and tokenurl.html: a browser getting a token\n", base)
	b.WriteString("\nGet an ID token for alice (TOKEN), then an RTC token for her on channel demo-1;\n" +
		"either step prints its error instead if it fails:\n\n")
	fmt.Fprintf(&b, "TOKEN=$(curl -s --fail-with-body '%s%s/token?user=alice') || { echo \"$TOKEN\"; false; } && curl -s --fail-with-body -H \"Authorization: Bearer $TOKEN\" %s/rtc/demo-1/publisher/userAccount/alice/\n\n", base, devIssuer, base)
	fmt.Fprintf(&b, "Who am I:      curl -s -H \"Authorization: Bearer $TOKEN\" %s/v1/me\n", base)
	fmt.Fprintf(&b, "Explain:       curl -s -H \"Authorization: Bearer $TOKEN\" -d '{\"subject\":\"bob\",\"groups\":[\"developers\"],\"channel\":\"demo-secret-1\",\"role\":\"publisher\"}' %s/v1/policies/explain\n", base)
	fmt.Fprintf(&b, "Issuance log:  curl -s %s/log/checkpoint   (signed each second; verifier key of this run: %s/log/key)\n", base, base)
	io.WriteString(w, b.String())
}
