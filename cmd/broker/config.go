package main

import (
	"cmp"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/broker-dev/broker/internal/agora"
	"github.com/broker-dev/broker/internal/auth"
	"github.com/broker-dev/broker/internal/httpapi"
	"github.com/broker-dev/broker/internal/revoke"
	"github.com/broker-dev/broker/internal/tlog"
)

// config is the broker's validated configuration.
type config struct {
	Addr               string
	AdminAddr          string
	DatabaseURL        string
	OIDCIssuer         string
	OIDCAudience       []string
	OIDCAlgorithms     []string
	OIDCLeeway         time.Duration
	AccountClaim       string
	GroupsClaim        string
	UIDClaim           string
	AppID              string
	AppCertificate     string
	DefaultTTL         time.Duration
	MaxTTL             time.Duration
	BootstrapAdmins    []string
	AuditKey           []byte
	AuditPreviousKeys  [][]byte
	CORSOrigins        []string
	Migrate            string
	RateLimit          float64
	RateBurst          int
	ConsoleClientID    string
	CLIClientID        string
	ConsoleSecret      string
	ConsoleRedirectURL string
	ConsoleSessionTTL  time.Duration
	PublicURL          string
	ReadConns          int
	TrustedProxies     httpapi.TrustedProxies
	TokenCacheBytes    int
	MemoryLimit        int64
	TokenURLMaxTTL     time.Duration
	LogLevel           string
	// The transparency log: the checkpoint signing key and its verifier
	// key, how often checkpoints are signed, the state file, whether entry
	// tiles are public, the witnesses.
	LogSigningKey, LogVerifierKey string
	AgoraNCSSecret                string
	// Agora's REST account (revocations' bans); empty CustomerID: none.
	AgoraCustomerID, AgoraCustomerSecret, AgoraAPIURL string
	// RevokeOnPolicyChange is what a policy change that takes away live
	// tokens' access does (BROKER_REVOKE_ON_POLICY_CHANGE).
	RevokeOnPolicyChange  revoke.Mode
	LogCheckpointInterval time.Duration
	AuditRetention        time.Duration
	// LogMaxWaiting bounds the token requests waiting for the issuance log
	// (BROKER_LOG_MAX_WAITING).
	LogMaxWaiting    int
	LogStateFile     string
	LogPublicEntries bool
	LogWitnesses     []witnessSpec
	// Issuers is the configuration file's list of identity providers; when
	// it is empty the BROKER_OIDC_* settings describe the only one.
	Issuers []issuerSpec
	// Projects are the Agora projects: the one named default that
	// BROKER_APP_ID defines (when set), then the file's projects list.
	Projects []project
	// Warnings are the configuration file's (e.g. secrets in a file others
	// may read): serve logs them, config check prints them.
	Warnings []string
	// sources says where each setting read came from: "flag --x",
	// "environment", "<file> line N" or "default", and raw the text it had
	// (broker config check, which never prints a secret's).
	sources, raw map[string]string
}

// setting is one configuration variable: its environment name, the flag that
// mirrors it, and how to check and store it. Secret settings never have their
// value printed: not in errors, not in usage defaults.
type setting struct {
	env      string
	fallback string // an older name accepted when env is unset (the seed's)
	flag     string
	def      string
	secret   bool
	usage    string
	apply    func(c *config, v string) error
}

var errRequired = errors.New("is required")

func settings() []setting {
	return []setting{
		{env: "BROKER_ADDR", flag: "addr", def: ":8080", usage: "listen address (host:port)",
			apply: func(c *config, v string) error {
				if _, _, err := net.SplitHostPort(v); err != nil {
					return errors.New("must be host:port, e.g. :8080 or 127.0.0.1:8080")
				}
				c.Addr = v
				return nil
			}},
		{env: "BROKER_ADMIN_ADDR", flag: "admin-addr", usage: "separate listen address for /metrics, /healthz, /readyz and /debug/pprof (default: metrics on the public listener, no pprof)",
			apply: func(c *config, v string) error {
				if v == "" {
					return nil
				}
				if _, _, err := net.SplitHostPort(v); err != nil {
					return errors.New("must be host:port, e.g. 127.0.0.1:9090")
				}
				c.AdminAddr = v
				return nil
			}},
		{env: "BROKER_DATABASE_URL", flag: "database-url", secret: true, usage: "Postgres URL (postgres://user:pass@host/db)",
			apply: func(c *config, v string) error {
				if v == "" {
					return errRequired
				}
				u, err := url.Parse(v)
				if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
					return errors.New("must be a postgres:// or postgresql:// URL")
				}
				c.DatabaseURL = v
				return nil
			}},
		{env: "BROKER_DATABASE_PASSWORD", flag: "database-password", secret: true, usage: "the database password, when BROKER_DATABASE_URL names the user but no password (e.g. a mounted secret: BROKER_DATABASE_PASSWORD_FILE)",
			apply: func(c *config, v string) error {
				if v == "" || c.DatabaseURL == "" {
					return nil // no password here, or the URL's own error is reported
				}
				u, err := url.Parse(c.DatabaseURL)
				if err != nil || u.User == nil || u.User.Username() == "" {
					return errors.New("needs BROKER_DATABASE_URL to name the user (postgres://user@host/db)")
				}
				if _, has := u.User.Password(); has {
					return errors.New("is set, and BROKER_DATABASE_URL carries a password too: give it in one place")
				}
				u.User = url.UserPassword(u.User.Username(), v)
				c.DatabaseURL = u.String()
				return nil
			}},
		{env: "BROKER_OIDC_ISSUER", flag: "oidc-issuer", usage: "OpenID Connect issuer URL (exactly as in the tokens' iss)",
			apply: func(c *config, v string) error {
				if v == "" {
					return errRequired
				}
				u, err := url.Parse(v)
				if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
					return errors.New("must be an absolute http(s) URL")
				}
				c.OIDCIssuer = v
				return nil
			}},
		{env: "BROKER_OIDC_AUDIENCE", flag: "oidc-audience", usage: "comma-separated client ids accepted in aud",
			apply: func(c *config, v string) error {
				c.OIDCAudience = splitList(v)
				if len(c.OIDCAudience) == 0 {
					return errRequired
				}
				return nil
			}},
		{env: "BROKER_OIDC_ALGORITHMS", flag: "oidc-algorithms", def: "RS256,ES256", usage: "allowed JWS algorithms (none and HS* are always refused)",
			apply: func(c *config, v string) error {
				algs := splitList(v)
				if len(algs) == 0 {
					return errRequired
				}
				for _, a := range algs {
					switch a {
					case "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA":
					default:
						return fmt.Errorf("has %q: allowed are RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512, EdDSA (none and HS* are never accepted)", a)
					}
				}
				c.OIDCAlgorithms = algs
				return nil
			}},
		{env: "BROKER_OIDC_LEEWAY", flag: "oidc-leeway", def: "30s", usage: "clock leeway for exp/nbf/iat",
			apply: durationIn(func(c *config) *time.Duration { return &c.OIDCLeeway }, 0, 5*time.Minute)},
		{env: "BROKER_ACCOUNT_CLAIM", flag: "account-claim", def: "sub", usage: "claim used as the Agora user account",
			apply: claimName(func(c *config) *string { return &c.AccountClaim })},
		{env: "BROKER_GROUPS_CLAIM", flag: "groups-claim", def: "groups", usage: "claim listing the caller's groups",
			apply: claimName(func(c *config) *string { return &c.GroupsClaim })},
		{env: "BROKER_UID_CLAIM", flag: "uid-claim", usage: "numeric claim used as the Agora uid (default: allocate one per user)",
			apply: func(c *config, v string) error {
				if v == "" {
					return nil
				}
				return claimName(func(c *config) *string { return &c.UIDClaim })(c, v)
			}},
		{env: "BROKER_APP_ID", fallback: "APP_ID", flag: "app-id", usage: "Agora App ID (32 hexadecimal characters)",
			apply: func(c *config, v string) error {
				if v == "" {
					return errRequired
				}
				if !isHex32(v) {
					return errors.New("must be 32 hexadecimal characters")
				}
				c.AppID = v
				return nil
			}},
		{env: "BROKER_APP_CERTIFICATE", fallback: "APP_CERTIFICATE", flag: "app-certificate", secret: true, usage: "Agora App certificate (32 hexadecimal characters)",
			apply: func(c *config, v string) error {
				if v == "" {
					return errRequired
				}
				if !isHex32(v) {
					return errors.New("must be 32 hexadecimal characters")
				}
				c.AppCertificate = v
				return nil
			}},
		{env: "BROKER_DEFAULT_TTL", flag: "default-ttl", def: "24h", usage: "token lifetime when the request names none",
			apply: durationIn(func(c *config) *time.Duration { return &c.DefaultTTL }, time.Second, 24*time.Hour)},
		{env: "BROKER_MAX_TTL", flag: "max-ttl", def: "24h", usage: "longest token lifetime granted (at most 24h)",
			apply: durationIn(func(c *config) *time.Duration { return &c.MaxTTL }, time.Second, 24*time.Hour)},
		{env: "BROKER_BOOTSTRAP_ADMINS", flag: "bootstrap-admins", usage: "subjects granted admin and audit rights on first start (e.g. group:broker-admins)",
			apply: func(c *config, v string) error {
				for _, s := range splitList(v) {
					if !strings.HasPrefix(s, "user:") && !strings.HasPrefix(s, "group:") || len(s) <= strings.Index(s, ":")+1 {
						return fmt.Errorf("has %q: each entry must be user:<subject> or group:<name>", s)
					}
					c.BootstrapAdmins = append(c.BootstrapAdmins, s)
				}
				return nil
			}},
		{env: "BROKER_AUDIT_KEY", flag: "audit-key", secret: true, usage: "key for the issuance log's hash chain and token fingerprints (≥ 32 bytes, hex or base64)",
			apply: func(c *config, v string) error {
				if v == "" {
					return errRequired
				}
				k, err := parseKey(v)
				if err != nil {
					return err
				}
				c.AuditKey = k
				return nil
			}},
		{env: "BROKER_AUDIT_PREVIOUS_KEYS", flag: "audit-previous-keys", secret: true, usage: "comma-separated rotated-out audit keys, still accepted to verify and look up the records made under them",
			apply: func(c *config, v string) error {
				for i, e := range strings.Split(v, ",") {
					if e = strings.TrimSpace(e); e == "" {
						continue
					}
					k, err := parseKey(e)
					if err != nil {
						return fmt.Errorf("entry %d %w", i+1, err)
					}
					c.AuditPreviousKeys = append(c.AuditPreviousKeys, k)
				}
				return nil
			}},
		{env: "BROKER_CORS_ORIGINS", flag: "cors-origins", usage: "comma-separated origins allowed by CORS (e.g. https://app.example.com)",
			apply: func(c *config, v string) error {
				for _, o := range splitList(v) {
					u, err := url.Parse(o)
					if o != "*" && (err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.Path != "") {
						return fmt.Errorf("has %q: each entry must be an origin like https://app.example.com", o)
					}
					c.CORSOrigins = append(c.CORSOrigins, o)
				}
				return nil
			}},
		{env: "BROKER_MIGRATE", flag: "migrate", usage: "set to auto to apply pending migrations at startup",
			apply: func(c *config, v string) error {
				if v != "" && v != "auto" {
					return errors.New(`must be empty or "auto"`)
				}
				c.Migrate = v
				return nil
			}},
		{env: "BROKER_RATE_LIMIT", flag: "rate-limit", def: "10", usage: "token requests per second per subject (0 disables)",
			apply: func(c *config, v string) error {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil || f < 0 || f > 1e6 {
					return errors.New("must be a number from 0 to 1000000")
				}
				c.RateLimit = f
				return nil
			}},
		{env: "BROKER_RATE_BURST", flag: "rate-burst", def: "20", usage: "burst allowed above the per-subject rate",
			apply: func(c *config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > 1e6 {
					return errors.New("must be a whole number from 1 to 1000000")
				}
				c.RateBurst = n
				return nil
			}},
		{env: "BROKER_CONSOLE_CLIENT_ID", flag: "console-client-id", usage: "OAuth client id of the web console (empty: console off)",
			apply: func(c *config, v string) error { c.ConsoleClientID = v; return nil }},
		{env: "BROKER_CLI_CLIENT_ID", flag: "cli-client-id", usage: "public OAuth client id `broker login` logs in with (device grant or PKCE; empty: no CLI login)",
			apply: func(c *config, v string) error { c.CLIClientID = v; return nil }},
		{env: "BROKER_CONSOLE_CLIENT_SECRET", flag: "console-client-secret", secret: true, usage: "OAuth client secret of the console (optional with PKCE)",
			apply: func(c *config, v string) error { c.ConsoleSecret = v; return nil }},
		{env: "BROKER_CONSOLE_REDIRECT_URL", flag: "console-redirect-url", usage: "console callback URL, ending in /console/callback",
			apply: func(c *config, v string) error {
				if v == "" {
					return nil
				}
				u, err := url.Parse(v)
				if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || !strings.HasSuffix(u.Path, "/console/callback") {
					return errors.New("must be an absolute http(s) URL ending in /console/callback")
				}
				c.ConsoleRedirectURL = v
				return nil
			}},
		{env: "BROKER_CONSOLE_SESSION_TTL", flag: "console-session-ttl", def: "8h", usage: "how long a console session lasts from login (1m to 24h); groups are those of the login",
			apply: durationIn(func(c *config) *time.Duration { return &c.ConsoleSessionTTL }, time.Minute, 24*time.Hour)},
		{env: "BROKER_MEMORY_LIMIT", flag: "memory-limit", usage: "the container's memory limit in bytes: the Go memory limit becomes 90% of it unless GOMEMLIMIT is set (the Kubernetes manifests pass limits.memory)",
			apply: func(c *config, v string) error {
				if v == "" {
					return nil
				}
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil || n < 64<<20 {
					return errors.New("must be a whole number of bytes, at least 67108864 (64 MiB)")
				}
				c.MemoryLimit = n
				return nil
			}},
		{env: "BROKER_TOKEN_CACHE_BYTES", flag: "token-cache-bytes", def: "33554432", usage: "memory bound of the verified-token cache, in bytes (it also holds at most 10,000 tokens)",
			apply: func(c *config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1<<16 || n > 1<<32 {
					return errors.New("must be a whole number of bytes from 65536 to 4294967296")
				}
				c.TokenCacheBytes = n
				return nil
			}},
		{env: "BROKER_TRUSTED_PROXIES", flag: "trusted-proxies", usage: "comma-separated CIDRs or addresses of the proxies in front of the broker, whose X-Forwarded-For / Forwarded name the client",
			apply: func(c *config, v string) error {
				p, err := httpapi.ParseTrustedProxies(v)
				if err != nil {
					return errors.New("must be a comma-separated list of CIDRs or IP addresses")
				}
				c.TrustedProxies = p
				return nil
			}},
		{env: "BROKER_READ_CONNS", flag: "read-conns", def: "4", usage: "database connections (and concurrent requests) for auditor reads: search, export, verify, lookup, statistics",
			apply: func(c *config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > 100 {
					return errors.New("must be a whole number from 1 to 100")
				}
				c.ReadConns = n
				return nil
			}},
		{env: "BROKER_LOG_MAX_WAITING", flag: "log-max-waiting", def: "500", usage: "token requests that may wait for the issuance log at once (its batch: one commits while the next fills); past it a request gets 503 with Retry-After at once instead of waiting",
			apply: func(c *config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > 100000 {
					return errors.New("must be a whole number from 1 to 100000")
				}
				c.LogMaxWaiting = n
				return nil
			}},
		{env: "BROKER_PUBLIC_URL", flag: "public-url", usage: "the broker's address as clients reach it, for the token URLs it hands out (default: the request's scheme and Host)",
			apply: func(c *config, v string) error {
				if v == "" {
					return nil
				}
				u, err := url.Parse(v)
				if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.RawQuery != "" || u.Fragment != "" {
					return errors.New("must be an absolute http(s) URL without query or fragment")
				}
				c.PublicURL = strings.TrimSuffix(v, "/")
				return nil
			}},
		{env: "BROKER_TOKEN_URL_MAX_TTL", flag: "token-url-max-ttl", def: "168h", usage: "longest lifetime of a token URL (default lifetime 12h, or this if shorter)",
			apply: durationIn(func(c *config) *time.Duration { return &c.TokenURLMaxTTL }, time.Minute, 30*24*time.Hour)},
		{env: "BROKER_LOG_LEVEL", flag: "log-level", def: "info", usage: "debug, info, warn or error",
			apply: func(c *config, v string) error {
				switch v {
				case "debug", "info", "warn", "error":
					c.LogLevel = v
					return nil
				}
				return errors.New("must be debug, info, warn or error")
			}},
		{env: "BROKER_LOG_SIGNING_KEY", flag: "log-signing-key", secret: true, usage: "the issuance log's checkpoint signing key, a note signer key (broker audit keygen); empty: no checkpoints",
			apply: func(c *config, v string) error {
				if v == "" {
					return nil
				}
				if _, err := tlog.NewSigner(v); err != nil {
					return errors.New("must be a note signer key (PRIVATE+KEY+<origin>+…) as broker audit keygen prints")
				}
				vkey, err := tlog.VerifierKeyOf(v)
				if err != nil {
					return errors.New("must be an Ed25519 note signer key as broker audit keygen prints")
				}
				c.LogSigningKey, c.LogVerifierKey = v, vkey
				return nil
			}},
		{env: "BROKER_AGORA_NCS_SECRET", flag: "agora-ncs-secret", secret: true, usage: "the default project's Agora NCS secret: POST /v1/agora/events keeps the channel events it signs (empty: the route is off)",
			apply: func(c *config, v string) error { c.AgoraNCSSecret = v; return nil }},
		{env: "BROKER_AGORA_CUSTOMER_ID", flag: "agora-customer-id", usage: "the Agora account's RESTful customer ID: revocations ban live sessions with it (empty: revocations only block new tokens)",
			apply: func(c *config, v string) error { c.AgoraCustomerID = v; return nil }},
		{env: "BROKER_AGORA_CUSTOMER_SECRET", flag: "agora-customer-secret", secret: true, usage: "the Agora account's RESTful customer secret",
			apply: func(c *config, v string) error { c.AgoraCustomerSecret = v; return nil }},
		{env: "BROKER_AGORA_API_URL", flag: "agora-api-url", def: agora.DefaultBaseURL, usage: "Agora's RESTful API (https)",
			apply: func(c *config, v string) error {
				if v == "" {
					v = agora.DefaultBaseURL
				}
				if agora.CheckBaseURL(v) != nil {
					return errors.New("must be an https URL without credentials, e.g. " + agora.DefaultBaseURL + " (http only on loopback: the customer secret goes with every request)")
				}
				c.AgoraAPIURL = strings.TrimRight(v, "/")
				return nil
			}},
		{env: "BROKER_REVOKE_ON_POLICY_CHANGE", flag: "revoke-on-policy-change", def: string(revoke.ModeSuggest), usage: "when a policy change takes away access live tokens carry: off, suggest (GET /v1/revocations/orphans and the console list them) or auto (each is revoked)",
			apply: func(c *config, v string) error {
				m, err := revoke.ParseMode(cmp.Or(v, string(revoke.ModeSuggest)))
				c.RevokeOnPolicyChange = m
				return err
			}},
		{env: "BROKER_AUDIT_RETENTION", flag: "audit-retention", usage: "drop the personal fields of issuance-log records a month at a time once the month ended this long ago, e.g. 400d (0 or empty: keep them)",
			apply: func(c *config, v string) error {
				d, err := parseRetention(v)
				if err != nil {
					return err
				}
				c.AuditRetention = d
				return nil
			}},
		{env: "BROKER_LOG_CHECKPOINT_INTERVAL", flag: "log-checkpoint-interval", def: "1s", usage: "longest time between a committed record and the checkpoint that covers it",
			apply: durationIn(func(c *config) *time.Duration { return &c.LogCheckpointInterval }, 100*time.Millisecond, time.Minute)},
		{env: "BROKER_LOG_STATE_FILE", flag: "log-state-file", usage: "file outside the database where this replica keeps the latest checkpoint it signed or saw (empty: none)",
			apply: func(c *config, v string) error {
				if v != "" && !filepath.IsAbs(v) {
					return errors.New("must be an absolute path")
				}
				c.LogStateFile = v
				return nil
			}},
		{env: "BROKER_LOG_PUBLIC_ENTRIES", flag: "log-public-entries", def: "false", usage: "serve the log's entry tiles (personal data) to anyone, not only to holders of read on api:audit",
			apply: func(c *config, v string) error {
				b, err := strconv.ParseBool(v)
				if err != nil {
					return errors.New("must be true or false")
				}
				c.LogPublicEntries = b
				return nil
			}},
		{env: "BROKER_LOG_WITNESSES", flag: "log-witnesses", usage: "witnesses that cosign each checkpoint: comma-separated \"<URL> <verifier key>\" pairs (c2sp.org/tlog-witness)",
			apply: func(c *config, v string) error {
				for _, entry := range splitList(v) {
					url, vkey, ok := strings.Cut(strings.TrimSpace(entry), " ")
					vkey = strings.TrimSpace(vkey)
					if !ok || (!strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://")) {
						return errors.New(`each witness must be "<http(s) URL> <verifier key>"`)
					}
					if _, err := tlog.NewCosignatureVerifier(vkey); err != nil {
						return fmt.Errorf("witness %s: the verifier key is not a cosignature key (c2sp.org/tlog-cosignature)", url)
					}
					c.LogWitnesses = append(c.LogWitnesses, witnessSpec{URL: url, Key: vkey})
				}
				if len(c.LogWitnesses) > 0 && c.LogSigningKey == "" {
					return errors.New("needs BROKER_LOG_SIGNING_KEY: witnesses cosign signed checkpoints")
				}
				return nil
			}},
	}
}

// witnessSpec is one of BROKER_LOG_WITNESSES.
type witnessSpec struct{ URL, Key string }

// configError names the variable at fault and the rule it broke, never its value.
type configError struct {
	env    string
	flag   string
	source string // "<file> line N" when the value came from the configuration file
	key    string // the file's key for it
	err    error
}

func (e *configError) Error() string {
	if e.source != "" {
		return fmt.Sprintf("%s: %s (%s) %v", e.source, e.key, e.env, e.err)
	}
	return fmt.Sprintf("%s (--%s) %v", e.env, e.flag, e.err)
}

func (e *configError) Unwrap() error { return e.err }

// perIssuer are the settings that the file's issuers list sets per issuer.
var perIssuer = []string{"BROKER_OIDC_ISSUER", "BROKER_OIDC_AUDIENCE", "BROKER_OIDC_ALGORITHMS",
	"BROKER_ACCOUNT_CLAIM", "BROKER_GROUPS_CLAIM", "BROKER_UID_CLAIM"}

// loadConfig reads settings from flags (which win), the environment, the
// configuration file (--config or BROKER_CONFIG) and the defaults, in that
// order, then validates them all, before anything touches the network. only
// limits which settings are read (nil: all); the others keep their zero
// values. The file is checked whole either way.
func loadConfig(fs *flag.FlagSet, args []string, getenv func(string) string, only map[string]bool) (*config, error) {
	all := settings()
	var filePath string
	fs.StringVar(&filePath, "config", "", "configuration file, YAML (env "+configFileEnv+")")
	vals := make(map[string]*string, len(all))
	for _, s := range all {
		if only != nil && !only[s.env] {
			continue
		}
		v := new(string)
		vals[s.env] = v
		def := s.def
		if s.secret {
			fs.StringVar(v, s.flag, "", fmt.Sprintf("refused: a secret; set %s or %s_FILE (%s)", s.env, s.env, s.usage))
			continue
		}
		fs.StringVar(v, s.flag, "", fmt.Sprintf("%s (env %s%s)", s.usage, s.env, defaultNote(def)))
	}
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if filePath == "" {
		filePath = getenv(configFileEnv)
	}
	file := &configFile{settings: map[string]fileValue{}}
	if filePath != "" {
		var err error
		if file, err = readConfigFile(filePath); err != nil {
			return nil, err
		}
	}

	c := &config{sources: map[string]string{}, raw: map[string]string{}, Issuers: file.issuers, Warnings: file.warnings}
	var errs []error
	for _, s := range all {
		v, ok := vals[s.env]
		if !ok {
			continue
		}
		if s.secret && set[s.flag] {
			errs = append(errs, &configError{env: s.env, flag: s.flag,
				err: fmt.Errorf("is a secret and is not taken from the command line, which other local users can read: set %s or %s_FILE", s.env, s.env)})
			continue
		}
		value, source := *v, "flag --"+s.flag
		if !set[s.flag] {
			var err error
			if value, err = envValue(s, getenv); err != nil {
				errs = append(errs, &configError{env: s.env, flag: s.flag, err: err})
				continue
			}
			source = "environment"
			if fv, inFile := file.settings[s.env]; value == "" && inFile {
				value, source = fv.value, fmt.Sprintf("%s line %d", file.path, fv.line)
			}
			if value == "" {
				value, source = s.def, "default"
			}
		}
		fileErr := func(err error) error {
			if strings.HasPrefix(source, file.path+" line") && file.path != "" {
				return &configError{env: s.env, flag: s.flag, source: source, key: s.fileKey(), err: err}
			}
			return &configError{env: s.env, flag: s.flag, err: err}
		}
		if len(file.projects) > 0 && (s.env == "BROKER_APP_ID" || s.env == "BROKER_APP_CERTIFICATE") && value == "" {
			continue // the file's projects stand in for the default project
		}
		if len(c.Issuers) > 0 && slices.Contains(perIssuer, s.env) {
			if value != s.def {
				errs = append(errs, fileErr(fmt.Errorf("is set per issuer when the configuration file has an issuers list; move it there")))
			}
			continue
		}
		c.sources[s.env], c.raw[s.env] = source, value
		if err := s.apply(c, strings.TrimSpace(value)); err != nil {
			errs = append(errs, fileErr(err))
		}
	}
	if len(c.Issuers) > 0 {
		if err := auth.CheckConfigs(issuerConfigs(c)); err != nil {
			errs = append(errs, fmt.Errorf("%s: issuers: %w", file.path, err))
		}
	}
	if len(errs) == 0 && c.DefaultTTL > c.MaxTTL && vals["BROKER_DEFAULT_TTL"] != nil && vals["BROKER_MAX_TTL"] != nil {
		errs = append(errs, &configError{env: "BROKER_DEFAULT_TTL", flag: "default-ttl", err: errors.New("must not exceed BROKER_MAX_TTL")})
	}
	if len(errs) == 0 && (vals["BROKER_APP_ID"] != nil || len(file.projects) > 0) {
		var err error
		if c.Projects, err = resolveProjects(c, file.path, file.projects); err != nil {
			errs = append(errs, err)
		}
		if c.AppID != "" && c.AppCertificate == "" && vals["BROKER_APP_CERTIFICATE"] != nil {
			errs = append(errs, &configError{env: "BROKER_APP_CERTIFICATE", flag: "app-certificate", err: errors.New("is required when BROKER_APP_ID is set")})
		}
	}
	if c.ConsoleClientID != "" && c.ConsoleRedirectURL == "" {
		errs = append(errs, &configError{env: "BROKER_CONSOLE_REDIRECT_URL", flag: "console-redirect-url", err: errors.New("is required when BROKER_CONSOLE_CLIENT_ID is set")})
	}
	// The console and the CLI log users in with the default issuer (the one
	// without a name): their ID tokens must be accepted.
	for _, login := range []struct{ env, flag, who, id string }{
		{"BROKER_CONSOLE_CLIENT_ID", "console-client-id", "console", c.ConsoleClientID},
		{"BROKER_CLI_CLIENT_ID", "cli-client-id", "CLI", c.CLIClientID},
	} {
		if login.id == "" {
			continue
		}
		if len(c.Issuers) > 0 && vals[login.env] != nil {
			i := slices.IndexFunc(c.Issuers, func(is issuerSpec) bool { return is.Name == "" })
			switch {
			case i < 0:
				errs = append(errs, fmt.Errorf("%s: %s is set, but no issuer is the default one (without a name), which %s logins use", file.path, login.env, login.who))
			case !slices.Contains(c.Issuers[i].Audiences, login.id):
				errs = append(errs, fmt.Errorf("%s line %d: the default issuer's audiences must include %s: %s logins are ID tokens issued to that client", file.path, c.Issuers[i].Line, login.env, login.who))
			case c.Issuers[i].TokenType != "" && c.Issuers[i].TokenType != auth.TokenTypeID:
				errs = append(errs, fmt.Errorf("%s line %d: the default issuer must issue ID tokens (tokenType %s) when %s is set: %s logins are ID tokens", file.path, c.Issuers[i].Line, auth.TokenTypeID, login.env, login.who))
			}
		}
		if len(c.Issuers) == 0 && vals["BROKER_OIDC_AUDIENCE"] != nil && !slices.Contains(c.OIDCAudience, login.id) {
			errs = append(errs, &configError{env: "BROKER_OIDC_AUDIENCE", flag: "oidc-audience",
				err: fmt.Errorf("must include %s: %s logins are ID tokens issued to that client", login.env, login.who)})
		}
	}
	if (c.AgoraCustomerID == "") != (c.AgoraCustomerSecret == "") && (vals["BROKER_AGORA_CUSTOMER_ID"] != nil || vals["BROKER_AGORA_CUSTOMER_SECRET"] != nil) {
		errs = append(errs, errors.New("BROKER_AGORA_CUSTOMER_ID and BROKER_AGORA_CUSTOMER_SECRET go together: set both (revocations ban live sessions) or neither"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// envValue reads a setting from its variable, or for a secret from the file
// that <NAME>_FILE names (as Docker and Kubernetes secrets are mounted), then
// the seed's older name; "" when none is set. A secret given both ways is an
// error naming both.
func envValue(s setting, getenv func(string) string) (string, error) {
	value := getenv(s.env)
	if s.secret {
		if path := getenv(s.env + "_FILE"); path != "" {
			if value != "" {
				return "", fmt.Errorf("and %s_FILE are both set; set one", s.env)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return "", fmt.Errorf("cannot be read from %s_FILE: %v", s.env, errors.Unwrap(err))
			}
			value = strings.TrimRight(string(b), "\r\n")
		}
	}
	if value == "" && s.fallback != "" {
		value = getenv(s.fallback)
	}
	return value, nil
}

// databaseURL reads BROKER_DATABASE_URL and BROKER_DATABASE_PASSWORD (or
// their _FILE forms) from the environment exactly as serve does, for broker
// dev, where a database is optional: "" when BROKER_DATABASE_URL is unset.
func databaseURL(getenv func(string) string) (string, error) {
	c := &config{}
	for _, s := range settings() {
		if s.env != "BROKER_DATABASE_URL" && s.env != "BROKER_DATABASE_PASSWORD" {
			continue
		}
		v, err := envValue(s, getenv)
		if err != nil {
			return "", &configError{env: s.env, flag: s.flag, err: err}
		}
		if v == "" {
			v = s.def
		}
		if s.env == "BROKER_DATABASE_URL" && v == "" {
			return "", nil
		}
		if err := s.apply(c, strings.TrimSpace(v)); err != nil {
			return "", &configError{env: s.env, flag: s.flag, err: err}
		}
	}
	return c.DatabaseURL, nil
}

func defaultNote(def string) string {
	if def == "" {
		return ""
	}
	return ", default " + def
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func isHex32(v string) bool {
	if len(v) != 32 {
		return false
	}
	_, err := hex.DecodeString(v)
	return err == nil
}

// parseKey decodes a key given as hex or base64 (standard or URL alphabet,
// padding optional) and requires at least 32 bytes. Errors never contain it.
func parseKey(v string) ([]byte, error) {
	var k []byte
	if b, err := hex.DecodeString(v); err == nil {
		k = b
	} else if b, err := base64.StdEncoding.DecodeString(v); err == nil {
		k = b
	} else if b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(v, "=")); err == nil {
		k = b
	} else {
		return nil, errors.New("must be hex or base64")
	}
	if len(k) < 32 {
		return nil, fmt.Errorf("decodes to %d bytes, need at least 32 (e.g. openssl rand -hex 32)", len(k))
	}
	return k, nil
}

func durationIn(field func(*config) *time.Duration, lo, hi time.Duration) func(*config, string) error {
	return func(c *config, v string) error {
		d, err := parseDuration(v)
		if err != nil || d < lo || d > hi {
			return fmt.Errorf("must be a duration from %s to %s (e.g. 1h, 90m or seconds as 3600)", lo, hi)
		}
		*field(c) = d
		return nil
	}
}

// parseRetention reads a retention period: whole days as "400d", or a Go
// duration of at least a day; "" or "0" is off.
func parseRetention(v string) (time.Duration, error) {
	if v == "" || v == "0" {
		return 0, nil
	}
	bad := errors.New("must be a number of days such as 400d (at least 1d, at most 36500d), or 0 for off")
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil || n < 1 || n > 36500 {
			return 0, bad
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 24*time.Hour || d > 36500*24*time.Hour {
		return 0, bad
	}
	return d, nil
}

// parseDuration accepts Go durations and plain seconds.
func parseDuration(v string) (time.Duration, error) {
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(v)
}

func claimName(field func(*config) *string) func(*config, string) error {
	return func(c *config, v string) error {
		if err := checkClaimName(v); err != nil {
			return err
		}
		*field(c) = v
		return nil
	}
}

// checkClaimName is the rule for a claim's name, in the environment and in
// the configuration file's issuers.
func checkClaimName(v string) error {
	if v == "" || len(v) > 128 || strings.ContainsAny(v, " \t\r\n") {
		return errors.New("must be a claim name (1–128 characters, no spaces)")
	}
	return nil
}
