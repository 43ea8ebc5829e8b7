package deploy

import (
	"bufio"
	"bytes"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/broker-dev/broker/deploy/internal/composefile"
	"sigs.k8s.io/yaml"
)

const composeFile = "docker-compose.yml"

// composeEnv stands in for the operator's .env: every variable the compose
// file requires, with made-up values of the right shape.
func composeEnv() map[string]string {
	return map[string]string{
		"POSTGRES_PASSWORD":            "0123456789abcdef0123456789abcdef",
		"BROKER_APP_ID":                "970ca35de60c44645bbae8a215061b33",
		"BROKER_APP_CERTIFICATE":       "5cfd2fd1755d40ecb72977518be15d3b",
		"BROKER_AUDIT_KEY":             "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
		"BROKER_CONSOLE_CLIENT_SECRET": "fedcba9876543210fedcba9876543210",
	}
}

// loadCompose loads docker-compose.yml as `docker compose` would, variables
// interpolated from env only (composefile.Load).
func loadCompose(env map[string]string) (*types.Project, error) {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		return nil, err
	}
	return composefile.Load(root, repoPath(composeFile), env)
}

func mustLoadCompose(t *testing.T) *types.Project {
	t.Helper()
	p, err := loadCompose(composeEnv())
	if err != nil {
		t.Fatalf("load %s: %v", composeFile, err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return s
}

func TestCompose_LoadsStrictlyWithTheFourServices(t *testing.T) {
	p := mustLoadCompose(t)
	got := p.ServiceNames()
	slices.Sort(got)
	want := []string{"broker", "dex", "migrate", "postgres"}
	if !slices.Equal(got, want) {
		t.Errorf("services = %v, want %v", got, want)
	}
}

func TestCompose_RefusesToLoadWithoutEachRequiredVariable(t *testing.T) {
	for _, name := range slices.Sorted(maps.Keys(composeEnv())) {
		for _, tc := range []struct {
			how string
			env func(map[string]string)
		}{
			{"unset", func(e map[string]string) { delete(e, name) }},
			{"empty", func(e map[string]string) { e[name] = "" }},
		} {
			t.Run(name+"/"+tc.how, func(t *testing.T) {
				env := composeEnv()
				tc.env(env)
				_, err := loadCompose(env)
				if err == nil {
					t.Fatalf("loaded with %s %s; want an error naming it", name, tc.how)
				}
				if !strings.Contains(err.Error(), name) {
					t.Errorf("error %q does not name %s", err, name)
				}
			})
		}
	}
}

func TestCompose_StartsInDependencyOrder(t *testing.T) {
	p := mustLoadCompose(t)
	tests := []struct {
		service, dependsOn, condition string
	}{
		{"migrate", "postgres", types.ServiceConditionHealthy},
		{"broker", "migrate", types.ServiceConditionCompletedSuccessfully},
		{"broker", "postgres", types.ServiceConditionHealthy},
		{"broker", "dex", types.ServiceConditionHealthy},
	}
	for _, tt := range tests {
		dep, ok := service(t, p, tt.service).DependsOn[tt.dependsOn]
		if !ok {
			t.Errorf("%s does not depend on %s", tt.service, tt.dependsOn)
			continue
		}
		if dep.Condition != tt.condition {
			t.Errorf("%s depends on %s with condition %q, want %q", tt.service, tt.dependsOn, dep.Condition, tt.condition)
		}
	}
	if r := service(t, p, "migrate").Restart; r != "no" {
		t.Errorf(`migrate restart = %q, want "no" (a one-shot job)`, r)
	}
}

func TestCompose_PostgresAndDexReportHealth(t *testing.T) {
	p := mustLoadCompose(t)
	for _, name := range []string{"postgres", "dex"} {
		hc := service(t, p, name).HealthCheck
		if hc == nil || hc.Disable || len(hc.Test) < 2 {
			t.Errorf("%s has no health check (depends_on service_healthy would wait forever)", name)
			continue
		}
		if hc.Test[0] != "CMD" && hc.Test[0] != "CMD-SHELL" {
			t.Errorf("%s health check test starts with %q, want CMD or CMD-SHELL", name, hc.Test[0])
		}
		if hc.Interval == nil || hc.Retries == nil || *hc.Retries == 0 {
			t.Errorf("%s health check needs an interval and retries", name)
		}
	}
}

func TestCompose_BrokerImageHasNoShellToRunHealthchecks(t *testing.T) {
	// The image is distroless: a CMD-SHELL health check (or curl, wget…)
	// would fail forever. The image's own HEALTHCHECK (`/broker healthcheck`,
	// see the Dockerfile) applies when compose sets none.
	p := mustLoadCompose(t)
	for _, name := range []string{"broker", "migrate"} {
		if hc := service(t, p, name).HealthCheck; hc != nil && !hc.Disable {
			t.Errorf("%s has a health check %v; its image has no shell or tools to run it", name, hc.Test)
		}
	}
}

func TestCompose_BrokerAndMigrateAreBuiltFromTheDockerfile(t *testing.T) {
	p := mustLoadCompose(t)
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		service string
		command []string
	}{
		{"migrate", []string{"migrate", "up"}},
		{"broker", []string{"serve"}},
	} {
		s := service(t, p, tt.service)
		if s.Build == nil {
			t.Errorf("%s has no build section", tt.service)
			continue
		}
		if s.Build.Context != root || s.Build.Dockerfile != "Dockerfile" {
			t.Errorf("%s builds %s from %s, want Dockerfile from %s", tt.service, s.Build.Dockerfile, s.Build.Context, root)
		}
		if len(s.Build.Args) > 0 {
			t.Errorf("%s passes build args %v; configuration belongs in the environment at run time", tt.service, slices.Collect(maps.Keys(s.Build.Args)))
		}
		if !slices.Equal(s.Command, tt.command) {
			t.Errorf("%s command = %v, want %v", tt.service, s.Command, tt.command)
		}
	}
	if _, err := os.Stat(repoPath("Dockerfile")); err != nil {
		t.Errorf("the Dockerfile the services build from: %v", err)
	}
}

func TestCompose_PostgresKeepsDataInANamedVolume(t *testing.T) {
	p := mustLoadCompose(t)
	if _, ok := p.Volumes["pgdata"]; !ok {
		t.Fatalf("top-level volumes = %v, want pgdata", slices.Collect(maps.Keys(p.Volumes)))
	}
	for _, v := range service(t, p, "postgres").Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source == "pgdata" && v.Target == "/var/lib/postgresql/data" {
			return
		}
	}
	t.Errorf("postgres does not mount volume pgdata at /var/lib/postgresql/data")
}

func TestCompose_BrokerAndBrowserSeeOneIssuer(t *testing.T) {
	p := mustLoadCompose(t)
	dex := readDexConfig(t)
	broker := service(t, p, "broker")
	env := broker.Environment

	if got := value(env, "BROKER_OIDC_ISSUER"); got != dex.Issuer {
		t.Errorf("BROKER_OIDC_ISSUER = %q, Dex issuer = %q: tokens would be refused", got, dex.Issuer)
	}
	u, err := url.Parse(dex.Issuer)
	if err != nil || u.Hostname() != "localhost" {
		t.Fatalf("Dex issuer %q: want http://localhost:… (the broker takes plain http only on loopback)", dex.Issuer)
	}
	// localhost inside the broker container must be Dex: share its network.
	if broker.NetworkMode != "service:dex" {
		t.Errorf("broker network_mode = %q, want service:dex", broker.NetworkMode)
	}
	published := map[string]string{}
	for _, port := range service(t, p, "dex").Ports {
		published[port.Published] = port.HostIP
	}
	for _, port := range []string{u.Port(), "8080"} {
		hostIP, ok := published[port]
		if !ok {
			t.Errorf("dex service does not publish port %s", port)
		} else if hostIP != "127.0.0.1" {
			t.Errorf("dex service publishes port %s on %q, want 127.0.0.1 (the demo passwords are public)", port, hostIP)
		}
	}

	console, ok := dex.client("broker-console")
	if !ok {
		t.Fatal("Dex has no broker-console client")
	}
	if got := value(env, "BROKER_CONSOLE_CLIENT_ID"); got != console.ID {
		t.Errorf("BROKER_CONSOLE_CLIENT_ID = %q, want %q", got, console.ID)
	}
	if got := value(env, "BROKER_CONSOLE_REDIRECT_URL"); !slices.Contains(console.RedirectURIs, got) {
		t.Errorf("BROKER_CONSOLE_REDIRECT_URL = %q, not among Dex's redirect URIs %v", got, console.RedirectURIs)
	}
	// Dex reads the console's secret from its environment (its config's
	// secretEnv); the broker from the compose secret of the same variable.
	if got := value(service(t, p, "dex").Environment, console.SecretEnv); got == "" || got != composeEnv()["BROKER_CONSOLE_CLIENT_SECRET"] ||
		p.Secrets["console_client_secret"].Environment != "BROKER_CONSOLE_CLIENT_SECRET" ||
		value(env, "BROKER_CONSOLE_CLIENT_SECRET_FILE") != "/run/secrets/console_client_secret" {
		t.Error("the broker and Dex do not get the same console client secret")
	}
	for _, aud := range strings.Split(value(env, "BROKER_OIDC_AUDIENCE"), ",") {
		if _, ok := dex.client(strings.TrimSpace(aud)); !ok {
			t.Errorf("BROKER_OIDC_AUDIENCE names %q, which is no Dex client", aud)
		}
	}
}

func TestCompose_SecretsReachContainersOnlyAsFiles(t *testing.T) {
	p := mustLoadCompose(t)
	for _, tt := range []struct{ service, variable, secret, from string }{
		{"postgres", "POSTGRES_PASSWORD_FILE", "postgres_password", "POSTGRES_PASSWORD"},
		{"migrate", "BROKER_DATABASE_PASSWORD_FILE", "postgres_password", "POSTGRES_PASSWORD"},
		{"broker", "BROKER_DATABASE_PASSWORD_FILE", "postgres_password", "POSTGRES_PASSWORD"},
		{"broker", "BROKER_APP_CERTIFICATE_FILE", "app_certificate", "BROKER_APP_CERTIFICATE"},
		{"broker", "BROKER_AUDIT_KEY_FILE", "audit_key", "BROKER_AUDIT_KEY"},
		{"broker", "BROKER_CONSOLE_CLIENT_SECRET_FILE", "console_client_secret", "BROKER_CONSOLE_CLIENT_SECRET"},
	} {
		svc := service(t, p, tt.service)
		if got := value(svc.Environment, tt.variable); got != "/run/secrets/"+tt.secret {
			t.Errorf("%s: %s = %q, want /run/secrets/%s", tt.service, tt.variable, got, tt.secret)
		}
		if !slices.ContainsFunc(svc.Secrets, func(s types.ServiceSecretConfig) bool { return s.Source == tt.secret }) {
			t.Errorf("%s is not granted the secret %s", tt.service, tt.secret)
		}
		if got := p.Secrets[tt.secret].Environment; got != tt.from {
			t.Errorf("secret %s comes from $%s, want $%s", tt.secret, got, tt.from)
		}
	}
	// No container but Dex (whose config reads the console secret from its
	// environment) gets a secret value in its environment.
	for _, name := range []string{"postgres", "migrate", "broker"} {
		for k, v := range service(t, p, name).Environment {
			for secretVar, secret := range composeEnv() {
				if secretVar != "BROKER_APP_ID" && v != nil && strings.Contains(*v, secret) {
					t.Errorf("%s: %s carries the value of $%s", name, k, secretVar)
				}
			}
		}
	}
}

func TestCompose_WritesNoLiteralSecret(t *testing.T) {
	// Checked on the raw file: after loading, interpolated and literal values
	// look the same.
	for _, v := range rawComposeEnvironment(t) {
		if !isSecretName(v.name) {
			continue
		}
		where := v.service + ": " + v.name
		if strings.HasSuffix(v.name, "_FILE") {
			if !strings.HasPrefix(v.value, "/run/secrets/") {
				t.Errorf("%s is %q, want a compose secret's file under /run/secrets/", where, v.value)
			}
			continue
		}
		// A URL has a host: "v1:0011aabb" parses with a scheme, but is a literal secret.
		if u, err := url.Parse(v.value); err == nil && u.Scheme != "" && u.Host != "" && u.Opaque == "" && !interpolation.MatchString(v.value) {
			if _, set := u.User.Password(); set {
				t.Errorf("%s has a literal password in its URL", where)
			}
			continue // a URL without a password holds no secret
		}
		if !requiredVar.MatchString(v.value) {
			t.Errorf("%s is not taken from a required variable (${NAME:?message})", where)
			continue
		}
		rest := interpolation.ReplaceAllString(v.value, "")
		if u, err := url.Parse(rest); err == nil && u.User != nil {
			if pw, set := u.User.Password(); set && pw != "" {
				t.Errorf("%s has a literal password in its URL", where)
			}
			continue
		}
		if strings.TrimSpace(rest) != "" {
			t.Errorf("%s mixes literal text with its variable", where)
		}
	}
}

func TestCompose_SetsOnlySettingsTheBrokerReads(t *testing.T) {
	var names []string
	for _, v := range rawComposeEnvironment(t) {
		if v.service == "broker" || v.service == "migrate" {
			names = append(names, v.name)
		}
	}
	checkBrokerSettings(t, composeFile, names)
}

func TestComposeEnvExample_ListsEveryRequiredVariableEmpty(t *testing.T) {
	const example = "deploy/compose.env.example"
	var required []string
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, composeFile)))
	for sc.Scan() {
		if strings.HasPrefix(strings.TrimSpace(sc.Text()), "#") {
			continue
		}
		for _, m := range requiredVar.FindAllStringSubmatch(sc.Text(), -1) {
			if !slices.Contains(required, m[1]) {
				required = append(required, m[1])
			}
		}
	}
	slices.Sort(required)

	var listed []string
	sc = bufio.NewScanner(bytes.NewReader(readFile(t, example)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: line %q is not NAME=", example, line)
			continue
		}
		if val != "" {
			t.Errorf("%s: %s has a value; the example must hold none", example, name)
		}
		listed = append(listed, name)
	}
	slices.Sort(listed)
	if !slices.Equal(listed, required) {
		t.Errorf("%s lists %v; %s requires %v", example, listed, composeFile, required)
	}
	if !slices.Equal(required, slices.Sorted(maps.Keys(composeEnv()))) {
		t.Errorf("compose requires %v; update composeEnv in this test", required)
	}
}

var (
	// requiredVar is ${NAME:?message} or ${NAME?message}.
	requiredVar   = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*):?\?[^}]*\}`)
	interpolation = regexp.MustCompile(`\$\{[^}]*\}`)
)

// rawVar is one environment entry of a service exactly as written.
type rawVar struct{ service, name, value string }

// rawComposeEnvironment reads every service's environment from the file as
// written (map or list form), before any interpolation.
func rawComposeEnvironment(t *testing.T) []rawVar {
	t.Helper()
	var doc struct {
		Services map[string]struct {
			Environment any `json:"environment"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal(readFile(t, composeFile), &doc); err != nil {
		t.Fatalf("parse %s: %v", composeFile, err)
	}
	var out []rawVar
	for _, name := range slices.Sorted(maps.Keys(doc.Services)) {
		switch env := doc.Services[name].Environment.(type) {
		case nil:
		case map[string]any:
			for k, v := range env {
				s, _ := v.(string)
				out = append(out, rawVar{name, k, s})
			}
		case []any:
			for _, e := range env {
				s, _ := e.(string)
				k, v, _ := strings.Cut(s, "=")
				out = append(out, rawVar{name, k, v})
			}
		default:
			t.Fatalf("%s: service %s: environment of unexpected form %T", composeFile, name, env)
		}
	}
	return out
}

// value returns a variable of a loaded service environment ("" if unset).
func value(env types.MappingWithEquals, name string) string {
	if v := env[name]; v != nil {
		return *v
	}
	return ""
}
