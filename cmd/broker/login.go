package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/broker-dev/broker/internal/client"
)

// serverEnv names the broker `broker policy` and `broker audit` talk to when
// --server is not given.
const serverEnv = "BROKER_SERVER"

// credentialStore is where logins are kept: $BROKER_CONFIG_DIR, else the
// user's config directory's broker/ (e.g. ~/.config/broker).
func credentialStore(getenv func(string) string) (client.Store, error) {
	if d := getenv("BROKER_CONFIG_DIR"); d != "" {
		return client.Store{Dir: d}, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return client.Store{}, fmt.Errorf("find your config directory for the login (or set BROKER_CONFIG_DIR): %w", err)
	}
	return client.Store{Dir: filepath.Join(d, "broker")}, nil
}

// serverFrom is --server, else BROKER_SERVER, normalized; "" when neither.
func serverFrom(flagValue string, getenv func(string) string) (string, error) {
	raw := flagValue
	if raw == "" {
		raw = getenv(serverEnv)
	}
	if raw == "" {
		return "", nil
	}
	s, err := client.NormalizeServer(raw)
	if err != nil {
		return "", usageError(err.Error())
	}
	return s, nil
}

// missingDatabase reports whether a configuration error is that
// BROKER_DATABASE_URL is unset: for the policy and audit commands, a user
// who gave neither a server nor a database.
func missingDatabase(err error) bool {
	var ce *configError
	return errors.As(err, &ce) && ce.env == "BROKER_DATABASE_URL" && errors.Is(ce.err, errRequired)
}

// chooseServer picks where a policy or audit command works: the broker of
// --server in args (fs's flags), else of BROKER_SERVER; "" for the
// database. BROKER_SERVER and BROKER_DATABASE_URL both set, without
// --server, is ambiguous: a usage error.
func chooseServer(cmd string, fs *flag.FlagSet, args []string, getenv func(string) string) (string, error) {
	raw, fromFlag := serverArg(fs, args), true
	if raw == "" {
		raw, fromFlag = getenv(serverEnv), false
	}
	server, err := serverFrom(raw, getenv)
	if err != nil || server == "" {
		return server, err
	}
	if !fromFlag && getenv("BROKER_DATABASE_URL") != "" {
		return "", usageError(cmd + ": both " + serverEnv + " and BROKER_DATABASE_URL are set: unset one, or pass --server to use the broker")
	}
	return server, nil
}

// loginTarget parses the flags of login or logout (name) and returns the
// server they name and the store of its login.
func loginTarget(name string, fs *flag.FlagSet, flagServer *string, args []string, getenv func(string) string) (string, client.Store, error) {
	if err := parseFlags(fs, args); err != nil {
		return "", client.Store{}, err
	}
	if fs.NArg() > 0 {
		return "", client.Store{}, usageError(fmt.Sprintf("%s: unexpected argument %q", name, fs.Arg(0)))
	}
	server, err := serverFrom(*flagServer, getenv)
	if err != nil {
		return "", client.Store{}, err
	}
	if server == "" {
		return "", client.Store{}, usageError(name + ": give --server URL (or set " + serverEnv + ")")
	}
	store, err := credentialStore(getenv)
	return server, store, err
}

// apiClient is the client of server with the login kept for it.
func apiClient(server string, getenv func(string) string) (*client.Client, error) {
	store, err := credentialStore(getenv)
	if err != nil {
		return nil, err
	}
	return client.New(server, store, nil)
}

// runLogin is `broker login --server URL`: log in at the identity provider
// the broker names (GET /v1/cli), keep the tokens, and check that the broker
// accepts them (GET /v1/me).
func runLogin(ctx context.Context, args []string, getenv func(string) string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("login", stdout)
	flagServer := fs.String("server", "", "the broker's URL, e.g. https://broker.example.com (env "+serverEnv+")")
	timeout := fs.Duration("timeout", client.DefaultLoginTimeout, "how long to wait for you to log in")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: broker login --server URL\n\n"+
			"Logs you in to a broker for `broker policy` and `broker audit`: with the device grant when its\n"+
			"identity provider offers it (open the address shown on any device and enter the code), else in\n"+
			"a browser on this machine (PKCE, a loopback redirect). Tokens are kept in BROKER_CONFIG_DIR or\n"+
			"your config directory (credentials.json, mode 0600) and refreshed; `broker logout` forgets them.\n\nflags:\n")
		fs.PrintDefaults()
	}
	server, store, err := loginTarget("login", fs, flagServer, args, getenv)
	if err != nil {
		return err
	}
	s, err := client.Login(ctx, server, store, client.LoginOptions{Prompt: stderr, Timeout: *timeout})
	if err != nil {
		return fmt.Errorf("login to %s: %w", server, err)
	}
	c, err := client.New(server, store, nil)
	if err != nil {
		return err
	}
	var me struct {
		RuleSubject string `json:"ruleSubject"`
	}
	if err := c.JSON(ctx, client.Request{Path: "/v1/me"}, nil, &me); err != nil {
		return fmt.Errorf("logged in at %s, but the broker refuses the login: %w", s.Issuer, err)
	}
	who := me.RuleSubject
	if s.Email != "" {
		who += " (" + s.Email + ")"
	}
	_, err = fmt.Fprintf(stdout, "Logged in to %s as %s.\n", server, who)
	return err
}

// runLogout is `broker logout --server URL`: forget that server's login.
func runLogout(_ context.Context, args []string, getenv func(string) string, _ io.Reader, stdout, _ io.Writer) error {
	fs := newFlagSet("logout", stdout)
	flagServer := fs.String("server", "", "the broker's URL (env "+serverEnv+")")
	server, store, err := loginTarget("logout", fs, flagServer, args, getenv)
	if err != nil {
		return err
	}
	had, err := store.Delete(server)
	if err != nil {
		return err
	}
	if !had {
		_, err = fmt.Fprintf(stdout, "Not logged in to %s.\n", server)
		return err
	}
	_, err = fmt.Fprintf(stdout, "Logged out of %s: its tokens are forgotten here.\n", server)
	return err
}
