package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// runConfig is `broker config check FILE`: validate a configuration file
// with the environment as `broker serve` would see it, offline, and print
// the effective configuration, secrets redacted.
func runConfig(_ context.Context, args []string, getenv func(string) string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: broker config check FILE\n\n"+
			"Checks FILE (YAML) together with the BROKER_* environment, exactly as `broker serve` reads them\n"+
			"(flags > environment > file > defaults), without touching the network, and prints the\n"+
			"effective configuration with each setting's source; secrets are shown as <redacted>.\n")
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		fs.Usage()
		if len(args) == 0 {
			return usageError("config: missing subcommand (check)")
		}
		return errHelp
	}
	if args[0] != "check" {
		fs.Usage()
		return usageError(fmt.Sprintf("config: unknown subcommand %q (check)", args[0]))
	}
	if len(args) != 2 || strings.HasPrefix(args[1], "-") {
		fs.Usage()
		return usageError("config check takes exactly one argument, the file")
	}
	cfg, err := loadConfig(fs, []string{"--config", args[1]}, getenv, nil)
	if err != nil {
		return err
	}
	printConfig(stdout, cfg)
	return nil
}

// printConfig writes the effective configuration as YAML comments and
// values: every setting by its file key, where it came from, and the
// issuers. Secret values are never printed.
func printConfig(w io.Writer, cfg *config) {
	fmt.Fprintln(w, "# effective configuration (flags > environment > file > defaults)")
	for _, warning := range cfg.Warnings {
		fmt.Fprintf(w, "# warning: %s\n", warning)
	}
	for _, s := range settings() {
		source, ok := cfg.sources[s.env]
		if !ok {
			continue // set per issuer
		}
		v := strings.TrimSpace(cfg.raw[s.env])
		switch {
		case s.secret && v != "":
			v = "<redacted>"
		case v == "":
			v = `""`
		default:
			v = yamlScalar(v)
		}
		fmt.Fprintf(w, "%s: %s  # %s (%s)\n", s.fileKey(), v, source, s.env)
	}
	printProjects(w, cfg.Projects)
	if len(cfg.Issuers) == 0 {
		return
	}
	fmt.Fprintln(w, "issuers:")
	for _, is := range cfg.Issuers {
		fmt.Fprintf(w, "  - issuer: %s\n", yamlScalar(is.Issuer))
		if is.Name != "" {
			fmt.Fprintf(w, "    name: %s\n", yamlScalar(is.Name))
		}
		fmt.Fprintf(w, "    audiences: [%s]\n", joinScalars(is.Audiences))
		if len(is.Algorithms) > 0 {
			fmt.Fprintf(w, "    algorithms: [%s]\n", joinScalars(is.Algorithms))
		}
		for _, kv := range [][2]string{{"accountClaim", is.AccountClaim}, {"groupsClaim", is.GroupsClaim},
			{"uidClaim", is.UIDClaim}, {"tokenType", is.TokenType}} {
			if kv[1] != "" {
				fmt.Fprintf(w, "    %s: %s\n", kv[0], yamlScalar(kv[1]))
			}
		}
		if len(is.RequiredScopes) > 0 {
			fmt.Fprintf(w, "    requiredScopes: [%s]\n", joinScalars(is.RequiredScopes))
		}
		if len(is.RequiredClaims) > 0 {
			fmt.Fprintln(w, "    requiredClaims:")
			claims := make([]string, 0, len(is.RequiredClaims))
			for c := range is.RequiredClaims {
				claims = append(claims, c)
			}
			sort.Strings(claims)
			for _, c := range claims {
				var vs []string
				for _, v := range is.RequiredClaims[c] {
					if str, ok := v.(string); ok {
						vs = append(vs, fmt.Sprintf("%q", str)) // a string stays one: "true" is not true
					} else {
						vs = append(vs, fmt.Sprint(v))
					}
				}
				fmt.Fprintf(w, "      %s: [%s]\n", yamlScalar(c), strings.Join(vs, ", "))
			}
		}
	}
}

// printProjects writes the projects, each with where it was configured;
// certificates are counted, never printed.
func printProjects(w io.Writer, ps []project) {
	if len(ps) == 0 {
		return
	}
	fmt.Fprintln(w, "projects:")
	for _, p := range ps {
		fmt.Fprintf(w, "  - name: %s  # %s\n", yamlScalar(p.Name), p.source)
		fmt.Fprintf(w, "    appID: %s\n", p.AppID)
		redacted := make([]string, len(p.Certificates))
		for i := range redacted {
			redacted[i] = "<redacted>"
		}
		fmt.Fprintf(w, "    certificates: [%s]  # the first signs\n", strings.Join(redacted, ", "))
		if p.Issuers != nil {
			fmt.Fprintf(w, "    issuers: [%s]\n", joinScalars(p.Issuers))
		} else {
			fmt.Fprintln(w, "    # issuers: every configured issuer")
		}
		fmt.Fprintf(w, "    defaultTTL: %s\n    maxTTL: %s\n", p.DefaultTTL, p.MaxTTL)
		if p.Agora.CustomerID != "" {
			fmt.Fprintf(w, "    agoraCustomerID: %s\n    agoraCustomerSecret: <redacted>\n", yamlScalar(p.Agora.CustomerID))
		}
		if p.Agora.NCSSecret != "" {
			fmt.Fprintln(w, "    agoraNCSSecret: <redacted>  # POST /v1/agora/events/"+p.Name)
		}
	}
}

func joinScalars(vs []string) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = yamlScalar(v)
	}
	return strings.Join(out, ", ")
}

// yamlScalar quotes v when YAML would read it as something else.
func yamlScalar(v string) string {
	if v == "" || strings.ContainsAny(v, ":#{}[],&*!|>'\"%@`") || strings.TrimSpace(v) != v {
		return fmt.Sprintf("%q", v)
	}
	return v
}
