package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const (
	chartDir = "deploy/helm/broker"
	// allOnValues switches every option of the chart on.
	allOnValues = chartDir + "/ci/all-on-values.yaml"
	// The release the tests render, as `helm install prod deploy/helm/broker -n auth`.
	releaseName      = "prod"
	releaseNamespace = "auth"
	fullname         = "prod-broker"
)

// requiredValues are the values the chart has no default for: the names of
// the three required Secrets and the three required settings. With them, the
// chart's defaults install.
const requiredValues = `
secrets:
  databaseURL: {name: broker-secrets}
  appCertificate: {name: broker-secrets}
  auditKey: {name: broker-secrets}
config:
  oidcIssuer: https://idp.example.com
  oidcAudience: broker
  appId: 0123456789abcdef0123456789abcdef
`

// issuersValues configure several identity providers through the chart's
// configFile (README: "Several identity providers"): the required values but
// config.oidcIssuer and config.oidcAudience, which the issuers list replaces,
// and the console, whose client is an audience of the default issuer.
const issuersValues = `
secrets:
  databaseURL: {name: broker-secrets}
  appCertificate: {name: broker-secrets}
  auditKey: {name: broker-secrets}
podAnnotations:
  example.com/team: identity
config:
  appId: 0123456789abcdef0123456789abcdef
  consoleClientId: broker-console
  consoleRedirectURL: https://broker.example.com/console/callback
configFile:
  bootstrapAdmins: group:broker-admins
  oidcLeeway: 45s
  issuers:
    - issuer: https://accounts.example.com
      audiences: [broker, broker-console]
      requiredClaims:
        email_verified: true
    - name: acme
      issuer: https://acme.okta.com/oauth2/default
      audiences: [api://broker]
      tokenType: access_token
      requiredScopes: [rtc]
      requiredClaims:
        cid: [0oa1mobile, 0oa1web]
`

// configFileVars are the variables the broker refuses from the environment
// when its configuration file has an issuers list: they are set per issuer.
var configFileVars = []string{"BROKER_OIDC_ISSUER", "BROKER_OIDC_AUDIENCE", "BROKER_OIDC_ALGORITHMS",
	"BROKER_ACCOUNT_CLAIM", "BROKER_GROUPS_CLAIM", "BROKER_UID_CLAIM"}

// chartLeavesOut lists the README's variables that no value of the chart
// sets, each with the reason. Every other variable must be settable: the
// all-on values set each one.
var chartLeavesOut = map[string]string{
	// None: BROKER_ADDR and BROKER_ADMIN_ADDR follow containerPorts,
	// BROKER_MEMORY_LIMIT follows resources.limits.memory, the secrets come
	// from secrets.*, everything else from config.*.
}

// secretVar is one of the README's secret variables, with its entry in
// values.secrets and whether the chart requires it.
type secretVar struct {
	env, value string
	required   bool
}

// secretVars are the README's secret variables (TestHelmChart_KnowsEverySecret
// keeps the list complete).
var secretVars = []secretVar{
	{"BROKER_DATABASE_URL", "databaseURL", true},
	{"BROKER_DATABASE_PASSWORD", "databasePassword", false},
	{"BROKER_APP_CERTIFICATE", "appCertificate", true},
	{"BROKER_AUDIT_KEY", "auditKey", true},
	{"BROKER_AUDIT_PREVIOUS_KEYS", "auditPreviousKeys", false},
	{"BROKER_CONSOLE_CLIENT_SECRET", "consoleClientSecret", false},
	{"BROKER_LOG_SIGNING_KEY", "logSigningKey", false},
	{"BROKER_AGORA_NCS_SECRET", "agoraNcsSecret", false},
	{"BROKER_AGORA_CUSTOMER_SECRET", "agoraCustomerSecret", false},
}

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor
// (monitoring.coreos.com/v1) the chart writes; k8s.io/api has no type for it.
// Decoded strictly, so a field the chart adds must be added here too.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Scheme        string `json:"scheme"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// chartKinds are the kinds the chart may render: those of deploy/kubernetes
// (but a kustomization; the ConfigMap only holds configFile, settings are env
// values) and the optional Ingress, NetworkPolicy and ServiceMonitor.
var chartKinds = func() map[string]func() any {
	k := maps.Clone(kinds)
	delete(k, "kustomize.config.k8s.io/v1beta1/Kustomization")
	k["networking.k8s.io/v1/Ingress"] = func() any { return new(networkingv1.Ingress) }
	k["networking.k8s.io/v1/NetworkPolicy"] = func() any { return new(networkingv1.NetworkPolicy) }
	k["monitoring.coreos.com/v1/ServiceMonitor"] = func() any { return new(serviceMonitor) }
	return k
}()

// rendered is a release of the chart, every object decoded into its API type.
type rendered struct {
	all        []manifest
	notes      string
	deploy     *appsv1.Deployment
	job        *batchv1.Job
	service    *corev1.Service // the public one
	admin      *corev1.Service // for the ServiceMonitor, if any
	accounts   map[string]*corev1.ServiceAccount
	pdb        *policyv1.PodDisruptionBudget
	hpa        *autoscalingv2.HorizontalPodAutoscaler
	ingress    *networkingv1.Ingress
	netpol     *networkingv1.NetworkPolicy // the broker pods'
	migrateNet *networkingv1.NetworkPolicy // the migration Job's
	monitor    *serviceMonitor
	config     *corev1.ConfigMap // configFile's, if any
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.LoadDir(repoPath(chartDir))
	if err != nil {
		t.Fatalf("load %s: %v", chartDir, err)
	}
	return ch
}

func parseValues(t *testing.T, src string) map[string]any {
	t.Helper()
	v, err := loader.LoadValues(strings.NewReader(src))
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	return v
}

// renderChart renders the chart as `helm install` does: the values coalesced
// with the chart's defaults and checked against values.schema.json, then the
// templates executed (strictly: a template naming a value that does not exist
// is an error, not an empty string).
func renderChart(ch *chart.Chart, vals map[string]any) (map[string]string, error) {
	return renderChartSchema(ch, vals, false)
}

// renderChartSchema is renderChart, skipping values.schema.json if asked (as
// `helm install --skip-schema-validation` does).
func renderChartSchema(ch *chart.Chart, vals map[string]any, skipSchema bool) (map[string]string, error) {
	opts := common.ReleaseOptions{Name: releaseName, Namespace: releaseNamespace, Revision: 1, IsInstall: true}
	top, err := chartutil.ToRenderValuesWithSchemaValidation(ch, vals, opts, nil, skipSchema)
	if err != nil {
		return nil, err
	}
	return engine.Engine{Strict: true}.RenderWithContext(context.Background(), ch, top)
}

// render renders the chart with the given values and decodes every object.
func render(t *testing.T, vals map[string]any) rendered {
	t.Helper()
	out, err := renderChart(loadChart(t), vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	r := rendered{accounts: map[string]*corev1.ServiceAccount{}}
	for _, file := range slices.Sorted(maps.Keys(out)) {
		if path.Base(file) == "NOTES.txt" {
			r.notes = out[file]
			continue
		}
		ms, err := decodeManifestsOf(chartKinds, file, []byte(out[file]))
		if err != nil {
			t.Fatal(err)
		}
		r.all = append(r.all, ms...)
	}
	for _, m := range r.all {
		var dup bool
		switch o := m.obj.(type) {
		case *appsv1.Deployment:
			dup, r.deploy = r.deploy != nil, o
		case *batchv1.Job:
			dup, r.job = r.job != nil, o
		case *corev1.Service:
			if o.Labels["app.kubernetes.io/component"] == "admin" {
				dup, r.admin = r.admin != nil, o
			} else {
				dup, r.service = r.service != nil, o
			}
		case *corev1.ServiceAccount:
			dup = r.accounts[o.Name] != nil
			r.accounts[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			dup, r.pdb = r.pdb != nil, o
		case *autoscalingv2.HorizontalPodAutoscaler:
			dup, r.hpa = r.hpa != nil, o
		case *networkingv1.Ingress:
			dup, r.ingress = r.ingress != nil, o
		case *networkingv1.NetworkPolicy:
			if o.Labels["app.kubernetes.io/component"] == "migrate" {
				dup, r.migrateNet = r.migrateNet != nil, o
			} else {
				dup, r.netpol = r.netpol != nil, o
			}
		case *serviceMonitor:
			dup, r.monitor = r.monitor != nil, o
		case *corev1.ConfigMap:
			dup, r.config = r.config != nil, o
		case *corev1.Secret:
			t.Errorf("%s renders a Secret: secrets are created outside the chart", m.file)
		default:
			t.Errorf("%s renders a %T the tests do not check", m.file, m.obj)
		}
		if dup {
			t.Fatalf("%s: a second %T", m.file, m.obj)
		}
	}
	if r.deploy == nil || r.service == nil {
		t.Fatal("the chart rendered no Deployment or no Service")
	}
	return r
}

func renderDefaults(t *testing.T) rendered {
	t.Helper()
	return render(t, parseValues(t, requiredValues))
}

func renderAllOn(t *testing.T) rendered {
	t.Helper()
	return render(t, parseValues(t, string(readFile(t, allOnValues))))
}

// bothValueSets runs check on the release rendered with the defaults and with
// every option on.
func bothValueSets(t *testing.T, check func(t *testing.T, r rendered)) {
	t.Run("defaults", func(t *testing.T) { check(t, renderDefaults(t)) })
	t.Run("all-on", func(t *testing.T) { check(t, renderAllOn(t)) })
}

func envOf(c corev1.Container) map[string]corev1.EnvVar {
	m := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		m[e.Name] = e
	}
	return m
}

func podsOf(r rendered) []struct {
	what string
	spec corev1.PodSpec
} {
	pods := []struct {
		what string
		spec corev1.PodSpec
	}{{"Deployment", r.deploy.Spec.Template.Spec}}
	if r.job != nil {
		pods = append(pods, struct {
			what string
			spec corev1.PodSpec
		}{"Job", r.job.Spec.Template.Spec})
	}
	return pods
}

var readmeVar = regexp.MustCompile("^\\| `(BROKER_[A-Z0-9_]+)` \\|")

// readmeSettings returns the variables of the README's configuration table.
func readmeSettings(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, line := range strings.Split(string(readFile(t, "README.md")), "\n") {
		if m := readmeVar.FindStringSubmatch(line); m != nil {
			names = append(names, m[1])
		}
	}
	if len(names) < 20 {
		t.Fatalf("found %d BROKER_ rows in README.md's configuration table: has it moved?", len(names))
	}
	return names
}

func TestHelmChart_MetadataMatchesTheKubernetesManifests(t *testing.T) {
	ch := loadChart(t)
	md := ch.Metadata
	if md.APIVersion != chart.APIVersionV2 || md.Name != "broker" || md.Version != "0.1.0" || md.Type != "application" {
		t.Errorf("Chart.yaml: apiVersion %s, name %s, version %s, type %s; want v2, broker, 0.1.0, application", md.APIVersion, md.Name, md.Version, md.Type)
	}
	if err := md.Validate(); err != nil {
		t.Errorf("Chart.yaml: %v", err)
	}
	k := loadKube(t)
	if len(k.kustomize.Images) != 1 || k.kustomize.Images[0].NewTag != md.AppVersion {
		t.Errorf("appVersion %s, kustomization images %+v: the chart must deploy the version the manifests do", md.AppVersion, k.kustomize.Images)
	}
	if want := brokerImage + ":" + md.AppVersion; onlyContainer(t, "Deployment", k.deploy.Spec.Template.Spec).Image != want {
		t.Errorf("deploy/kubernetes/deployment.yaml runs %s, the chart's appVersion is %s", onlyContainer(t, "Deployment", k.deploy.Spec.Template.Spec).Image, md.AppVersion)
	}
	if ch.Schema == nil {
		t.Error("the chart has no values.schema.json")
	}
	for _, want := range []string{"templates/_helpers.tpl", "templates/NOTES.txt"} {
		if !slices.ContainsFunc(ch.Templates, func(f *common.File) bool { return f.Name == want }) {
			t.Errorf("the chart has no %s", want)
		}
	}
}

func TestHelmChart_DefaultsRenderTheCoreObjects(t *testing.T) {
	r := renderDefaults(t)
	if r.job == nil || r.pdb == nil || len(r.accounts) == 0 {
		t.Fatal("defaults must render the migration Job, a PodDisruptionBudget and a ServiceAccount")
	}
	if r.hpa != nil || r.ingress != nil || r.netpol != nil || r.migrateNet != nil || r.monitor != nil || r.admin != nil || r.config != nil {
		t.Error("defaults render an optional object (HPA, Ingress, NetworkPolicy, ServiceMonitor, admin Service or ConfigMap)")
	}
	if d := r.deploy; d.Name != fullname || d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("Deployment %s with replicas %s, want %s with 2", d.Name, show(d.Spec.Replicas), fullname)
	}
	c := onlyContainer(t, "Deployment", r.deploy.Spec.Template.Spec)
	if want := brokerImage + ":" + loadChart(t).Metadata.AppVersion; c.Image != want || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %s (%s), want %s (IfNotPresent): the tag defaults to appVersion", c.Image, c.ImagePullPolicy, want)
	}
	env := envOf(c)
	for _, s := range secretVars {
		if _, ok := env[s.env]; ok != s.required {
			t.Errorf("defaults: %s set = %v, want %v (optional secrets only when named)", s.env, ok, s.required)
		}
	}
	// Unset settings are left to the broker's defaults, never restated.
	for _, name := range []string{"BROKER_RATE_LIMIT", "BROKER_TOKEN_CACHE_BYTES", "BROKER_MIGRATE", "BROKER_CORS_ORIGINS"} {
		if e, ok := env[name]; ok {
			t.Errorf("defaults set %s=%q; an unset value must leave it to the broker", name, e.Value)
		}
	}
	if got := env["BROKER_LOG_LEVEL"].Value; got != "info" {
		t.Errorf("BROKER_LOG_LEVEL = %q, want info", got)
	}
	if !strings.Contains(r.notes, fullname) || strings.Contains(r.notes, "<no value>") {
		t.Errorf("NOTES.txt does not render properly:\n%s", r.notes)
	}
}

func TestHelmChart_AllOnRendersEveryObject(t *testing.T) {
	r := renderAllOn(t)
	if r.job == nil || r.pdb == nil || r.hpa == nil || r.ingress == nil || r.netpol == nil || r.migrateNet == nil || r.monitor == nil || r.admin == nil {
		t.Fatalf("all-on values must render every optional object; got %d objects", len(r.all))
	}
	for _, m := range r.all {
		om, ok := m.obj.(metav1.Object)
		if !ok {
			t.Fatalf("%s: %T has no metadata", m.file, m.obj)
		}
		l := om.GetLabels()
		if om.GetName() == "" || l["app.kubernetes.io/name"] != "broker" || l["app.kubernetes.io/instance"] != releaseName || l["app.kubernetes.io/managed-by"] != "Helm" || l["helm.sh/chart"] != "broker-0.1.0" {
			t.Errorf("%s: %T %q lacks the chart's standard labels: %v", m.file, m.obj, om.GetName(), l)
		}
	}
	// Every setting of the chart's values is given, so each reaches the pods.
	var defaults, allOn struct {
		Config map[string]any `json:"config"`
	}
	if err := yaml.Unmarshal(readFile(t, chartDir+"/values.yaml"), &defaults); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(readFile(t, allOnValues), &allOn); err != nil {
		t.Fatal(err)
	}
	for key := range defaults.Config {
		if v, ok := allOn.Config[key]; !ok || v == nil || v == "" {
			t.Errorf("%s does not set config.%s", allOnValues, key)
		}
	}
	if !strings.Contains(r.notes, "https://broker.example.com") {
		t.Errorf("NOTES.txt does not name the Ingress host:\n%s", r.notes)
	}
}

func TestHelmChart_ProbesUseTheAdminPort(t *testing.T) {
	bothValueSets(t, func(t *testing.T, r rendered) {
		c := onlyContainer(t, "Deployment", r.deploy.Spec.Template.Spec)
		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		if ports["admin"] != 9090 || ports["http"] != 8080 || len(ports) != 2 {
			t.Errorf("container ports %v, want http 8080 and admin 9090", ports)
		}
		env := envOf(c)
		if env["BROKER_ADDR"].Value != ":8080" || env["BROKER_ADMIN_ADDR"].Value != ":9090" {
			t.Errorf("BROKER_ADDR=%q BROKER_ADMIN_ADDR=%q, want :8080 and :9090 (the container ports)", env["BROKER_ADDR"].Value, env["BROKER_ADMIN_ADDR"].Value)
		}
		for _, p := range []struct {
			what  string
			probe *corev1.Probe
			path  string
		}{
			{"startup", c.StartupProbe, "/healthz"},
			{"liveness", c.LivenessProbe, "/healthz"},
			{"readiness", c.ReadinessProbe, "/readyz"},
		} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Errorf("no HTTP %s probe", p.what)
				continue
			}
			if g := p.probe.HTTPGet; g.Path != p.path || g.Port != intstr.FromString("admin") {
				t.Errorf("%s probe GET %s on port %s, want %s on admin", p.what, g.Path, g.Port.String(), p.path)
			}
		}
	})
}

func TestHelmChart_KnowsEverySecret(t *testing.T) {
	// The README marks a secret "(secret…" in its row; the console's is named so.
	var want []string
	for _, line := range strings.Split(string(readFile(t, "README.md")), "\n") {
		if m := readmeVar.FindStringSubmatch(line); m != nil && (strings.Contains(line, "(secret") || strings.HasSuffix(m[1], "_SECRET")) {
			want = append(want, m[1])
		}
	}
	var got []string
	for _, s := range secretVars {
		got = append(got, s.env)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("secretVars %v, README.md's secrets %v", got, want)
	}
}

func TestHelmChart_SecretsComeOnlyFromExistingSecrets(t *testing.T) {
	t.Run("defaults", func(t *testing.T) { checkSecretRefs(t, renderDefaults(t), parseValues(t, requiredValues)) })
	t.Run("all-on", func(t *testing.T) {
		r := renderAllOn(t)
		checkSecretRefs(t, r, parseValues(t, string(readFile(t, allOnValues))))
		env := envOf(onlyContainer(t, "Deployment", r.deploy.Spec.Template.Spec))
		for _, s := range secretVars {
			if _, ok := env[s.env]; !ok {
				t.Errorf("all-on: %s is not set", s.env)
			}
		}
	})
}

// checkSecretRefs checks that every secret variable of r's pods comes from the
// Secret and key that vals name, and never from a literal value.
func checkSecretRefs(t *testing.T, r rendered, vals map[string]any) {
	t.Helper()
	vals, err := chartutil.CoalesceValues(loadChart(t), vals) // with the chart's default keys
	if err != nil {
		t.Fatal(err)
	}
	secrets, _ := vals["secrets"].(map[string]any)
	want := map[string]corev1.SecretKeySelector{}
	for _, s := range secretVars {
		ref, _ := secrets[s.value].(map[string]any)
		name, _ := ref["name"].(string)
		key, _ := ref["key"].(string)
		if s.required && (name == "" || key == "") {
			t.Fatalf("values name no Secret and key for %s", s.env)
		}
		if name != "" {
			want[s.env] = corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}
		}
	}
	for _, pod := range podsOf(r) {
		for _, c := range slices.Concat(pod.spec.InitContainers, pod.spec.Containers) {
			if len(c.EnvFrom) > 0 {
				t.Errorf("%s container %s uses envFrom; every variable is listed", pod.what, c.Name)
			}
			for _, e := range c.Env {
				if !slices.ContainsFunc(secretVars, func(s secretVar) bool { return s.env == e.Name }) {
					if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
						t.Errorf("%s container %s: %s, not a secret, comes from a Secret", pod.what, c.Name, e.Name)
					}
					continue
				}
				if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					t.Errorf("%s container %s: %s must come from a secretKeyRef", pod.what, c.Name, e.Name)
					continue
				}
				if got := *e.ValueFrom.SecretKeyRef; !reflect.DeepEqual(got, want[e.Name]) {
					t.Errorf("%s container %s: %s from %+v, want %+v", pod.what, c.Name, e.Name, got, want[e.Name])
				}
			}
		}
	}
	if r.job != nil {
		env := envOf(onlyContainer(t, "Job", r.job.Spec.Template.Spec))
		_, pw := env["BROKER_DATABASE_PASSWORD"]
		if _, ok := env["BROKER_DATABASE_URL"]; !ok || len(env) != 1+btoi(pw) {
			t.Errorf("the migration Job's env %v, want BROKER_DATABASE_URL (and BROKER_DATABASE_PASSWORD) only", slices.Sorted(maps.Keys(env)))
		}
	}
}

func TestHelmChart_MigrationJobIsAPreInstallPreUpgradeHook(t *testing.T) {
	bothValueSets(t, func(t *testing.T, r rendered) {
		j := r.job
		if j == nil {
			t.Fatal("no migration Job")
		}
		hooks := strings.Split(j.Annotations["helm.sh/hook"], ",")
		slices.Sort(hooks)
		if !slices.Equal(hooks, []string{"pre-install", "pre-upgrade"}) {
			t.Errorf("helm.sh/hook = %q, want pre-install,pre-upgrade", j.Annotations["helm.sh/hook"])
		}
		if got := j.Annotations["helm.sh/hook-delete-policy"]; got != "before-hook-creation,hook-succeeded" {
			t.Errorf("helm.sh/hook-delete-policy = %q, want before-hook-creation,hook-succeeded", got)
		}
		spec := j.Spec.Template.Spec
		c := onlyContainer(t, "Job", spec)
		if !slices.Equal(c.Args, []string{"migrate", "up"}) {
			t.Errorf("args = %v, want [migrate up]", c.Args)
		}
		server := onlyContainer(t, "Deployment", r.deploy.Spec.Template.Spec)
		if c.Image != server.Image || c.ImagePullPolicy != server.ImagePullPolicy {
			t.Errorf("Job image %s, Deployment image %s: migrations must match the code", c.Image, server.Image)
		}
		if spec.RestartPolicy != corev1.RestartPolicyNever || j.Spec.BackoffLimit == nil || j.Spec.ActiveDeadlineSeconds == nil {
			t.Error("the Job must not restart in place, and needs a backoffLimit and a deadline")
		}
		if selects(t, r.deploy.Spec.Selector, labels.Set(j.Spec.Template.Labels)) {
			t.Error("the Deployment's selector also matches the Job's pods")
		}
		// Pre-install hooks run before the release's ServiceAccount exists: the
		// Job's account must be a hook too, created before the Job.
		sa := r.accounts[spec.ServiceAccountName]
		if sa == nil {
			t.Fatalf("the Job runs as %q, which the chart does not create", spec.ServiceAccountName)
		}
		checkEarlierHook(t, sa.Annotations, j.Annotations, "ServiceAccount "+sa.Name)
		if r.migrateNet != nil {
			checkEarlierHook(t, r.migrateNet.Annotations, j.Annotations, "NetworkPolicy "+r.migrateNet.Name)
		}
	})
}

// checkEarlierHook checks that a hook object (annotations a) runs with the
// same hooks as the Job (annotations job) but before it.
func checkEarlierHook(t *testing.T, a, job map[string]string, what string) {
	t.Helper()
	if a["helm.sh/hook"] != job["helm.sh/hook"] || a["helm.sh/hook-delete-policy"] != job["helm.sh/hook-delete-policy"] {
		t.Errorf("%s: hook %q (delete %q), want the Job's %q (delete %q)", what, a["helm.sh/hook"], a["helm.sh/hook-delete-policy"], job["helm.sh/hook"], job["helm.sh/hook-delete-policy"])
	}
	var w, jw int
	if _, err := fmt.Sscan(a["helm.sh/hook-weight"], &w); err != nil {
		t.Errorf("%s: hook-weight %q: %v", what, a["helm.sh/hook-weight"], err)
	}
	_, _ = fmt.Sscan(job["helm.sh/hook-weight"], &jw)
	if w >= jw {
		t.Errorf("%s: hook-weight %d, want below the Job's %d", what, w, jw)
	}
}

func TestHelmChart_PodsRunLockedDownLikeTheManifests(t *testing.T) {
	k := loadKube(t)
	kpod := k.deploy.Spec.Template.Spec
	kc := onlyContainer(t, "Deployment", kpod)
	bothValueSets(t, func(t *testing.T, r rendered) {
		for _, pod := range podsOf(r) {
			s := pod.spec
			if !reflect.DeepEqual(s.SecurityContext, kpod.SecurityContext) {
				t.Errorf("%s: pod securityContext differs from deploy/kubernetes/deployment.yaml's", pod.what)
			}
			c := onlyContainer(t, pod.what, s)
			if !reflect.DeepEqual(c.SecurityContext, kc.SecurityContext) {
				t.Errorf("%s: container securityContext differs from deploy/kubernetes/deployment.yaml's", pod.what)
			}
			if s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken {
				t.Errorf("%s: automountServiceAccountToken must be false", pod.what)
			}
			if s.HostNetwork || s.HostPID || s.HostIPC {
				t.Errorf("%s: shares a host namespace", pod.what)
			}
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if req, lim := c.Resources.Requests[res], c.Resources.Limits[res]; req.IsZero() || lim.IsZero() {
					t.Errorf("%s: needs a %s request and limit", pod.what, res)
				}
			}
		}
		if _, ok := r.accounts[r.deploy.Spec.Template.Spec.ServiceAccountName]; !ok {
			t.Errorf("the Deployment runs as %q, which the chart does not create", r.deploy.Spec.Template.Spec.ServiceAccountName)
		}
		for _, sa := range r.accounts {
			if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Errorf("ServiceAccount %s: automountServiceAccountToken must be false", sa.Name)
			}
		}
		// The broker's own shutdown rules, as for the manifests.
		d := r.deploy.Spec.Template.Spec
		c := onlyContainer(t, "Deployment", d)
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
			t.Fatal("no preStop sleep")
		}
		if g := d.TerminationGracePeriodSeconds; g == nil || *g <= 20+c.Lifecycle.PreStop.Sleep.Seconds {
			t.Errorf("terminationGracePeriodSeconds = %s, want more than 20 s + the preStop sleep", show(g))
		}
	})
}

func TestHelmChart_PublicServiceHasNoAdminPort(t *testing.T) {
	bothValueSets(t, func(t *testing.T, r rendered) {
		pods := labels.Set(r.deploy.Spec.Template.Labels)
		server := onlyContainer(t, "Deployment", r.deploy.Spec.Template.Spec)
		svc := r.service
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort != intstr.FromString("http") {
			t.Errorf("public Service ports %+v, want the http port only", svc.Spec.Ports)
		}
		for _, p := range svc.Spec.Ports {
			if p.TargetPort == intstr.FromString("admin") || p.TargetPort == intstr.FromInt32(9090) || p.Port == 9090 || p.Name == "admin" {
				t.Errorf("public Service %s exposes the admin port: %+v", svc.Name, p)
			}
			if !hasPort(server, p.TargetPort) {
				t.Errorf("Service port %s targets %s, not a container port", p.Name, p.TargetPort.String())
			}
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		if len(svc.Spec.Selector) == 0 || !sel.Matches(pods) || (r.job != nil && sel.Matches(labels.Set(r.job.Spec.Template.Labels))) {
			t.Errorf("Service selector %v must match the broker pods and not the Job's", svc.Spec.Selector)
		}
		if ing := r.ingress; ing != nil {
			for _, rule := range ing.Spec.Rules {
				for _, p := range rule.HTTP.Paths {
					b := p.Backend.Service
					if b == nil || b.Name != svc.Name || b.Port.Name != "http" {
						t.Errorf("Ingress path %s goes to %+v, want Service %s port http", p.Path, b, svc.Name)
					}
				}
			}
		}
		if m := r.monitor; m != nil {
			a := r.admin
			if a == nil {
				t.Fatal("a ServiceMonitor without the admin Service")
			}
			if a.Spec.Type != corev1.ServiceTypeClusterIP || len(a.Spec.Ports) != 1 || a.Spec.Ports[0].TargetPort != intstr.FromString("admin") || !labels.SelectorFromSet(a.Spec.Selector).Matches(pods) {
				t.Errorf("admin Service %s: %s %+v, want ClusterIP, the admin port of the broker pods only", a.Name, a.Spec.Type, a.Spec.Ports)
			}
			if !selects(t, &m.Spec.Selector, labels.Set(a.Labels)) || selects(t, &m.Spec.Selector, labels.Set(svc.Labels)) {
				t.Errorf("ServiceMonitor selector %v must match the admin Service and not the public one", m.Spec.Selector)
			}
			if len(m.Spec.Endpoints) != 1 || m.Spec.Endpoints[0].Port != "admin" || m.Spec.Endpoints[0].Path != "/metrics" {
				t.Errorf("ServiceMonitor endpoints %+v, want /metrics on port admin", m.Spec.Endpoints)
			}
			if m.APIVersion != "monitoring.coreos.com/v1" || !slices.Equal(m.Spec.NamespaceSelector.MatchNames, []string{releaseNamespace}) {
				t.Errorf("ServiceMonitor %s in %v, want monitoring.coreos.com/v1 in the release's namespace", m.APIVersion, m.Spec.NamespaceSelector.MatchNames)
			}
			if m.Labels["release"] != "prometheus" {
				t.Errorf("ServiceMonitor labels %v lack serviceMonitor.labels", m.Labels)
			}
		}
	})
}

func TestHelmChart_NetworkPolicyAdmitsOnlyTheIngressAndMonitoring(t *testing.T) {
	r := renderAllOn(t)
	np := r.netpol
	pods := labels.Set(r.deploy.Spec.Template.Labels)
	if !selects(t, &np.Spec.PodSelector, pods) || selects(t, &np.Spec.PodSelector, labels.Set(r.job.Spec.Template.Labels)) {
		t.Errorf("NetworkPolicy %s must select the broker pods and not the Job's", np.Name)
	}
	if types := np.Spec.PolicyTypes; !slices.Contains(types, networkingv1.PolicyTypeIngress) || !slices.Contains(types, networkingv1.PolicyTypeEgress) {
		t.Errorf("policyTypes %v, want Ingress and Egress", types)
	}
	want := map[string]metav1.LabelSelector{
		"http":  {MatchLabels: map[string]string{"kubernetes.io/metadata.name": "ingress-nginx"}},
		"admin": {MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}},
	}
	admitted := map[string]bool{}
	for i, rule := range np.Spec.Ingress {
		if len(rule.Ports) == 0 || len(rule.From) == 0 {
			t.Errorf("ingress rule %d admits every port or every source", i)
		}
		for _, p := range rule.Ports {
			name := p.Port.String()
			if p.Port.Type == intstr.Int {
				name = map[int32]string{8080: "http", 9090: "admin"}[p.Port.IntVal]
			}
			sel, ok := want[name]
			if !ok {
				t.Errorf("ingress rule %d admits port %s, neither http nor admin", i, p.Port.String())
				continue
			}
			admitted[name] = true
			for _, peer := range rule.From {
				if peer.IPBlock != nil || peer.NamespaceSelector == nil || !reflect.DeepEqual(peer.NamespaceSelector.MatchLabels, sel.MatchLabels) || len(peer.NamespaceSelector.MatchExpressions) > 0 {
					t.Errorf("port %s admits %+v, want only namespaces %v", name, peer, sel.MatchLabels)
				}
			}
		}
	}
	if !admitted["http"] || !admitted["admin"] {
		t.Errorf("ingress admits %v, want http from the ingress controller and admin from monitoring", admitted)
	}

	type dest struct {
		to    string
		port  int32
		proto corev1.Protocol
	}
	egress := func(np *networkingv1.NetworkPolicy) []dest {
		var out []dest
		for i, rule := range np.Spec.Egress {
			if len(rule.To) == 0 || len(rule.Ports) == 0 {
				t.Errorf("%s egress rule %d allows every destination or every port", np.Name, i)
			}
			for _, peer := range rule.To {
				to := "?"
				switch {
				case peer.IPBlock != nil:
					to = peer.IPBlock.CIDR
				case peer.NamespaceSelector != nil && peer.PodSelector != nil:
					to = labels.Set(peer.NamespaceSelector.MatchLabels).String() + "/" + labels.Set(peer.PodSelector.MatchLabels).String()
				}
				for _, p := range rule.Ports {
					out = append(out, dest{to, p.Port.IntVal, *p.Protocol})
				}
			}
		}
		sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]) < fmt.Sprint(out[j]) })
		return out
	}
	dns := "kubernetes.io/metadata.name=kube-system/k8s-app=kube-dns"
	wantEgress := []dest{
		{"10.20.0.0/24", 5432, corev1.ProtocolTCP},
		{"198.51.100.7/32", 443, corev1.ProtocolTCP},
		{"203.0.113.0/24", 443, corev1.ProtocolTCP},
		{dns, 53, corev1.ProtocolTCP},
		{dns, 53, corev1.ProtocolUDP},
	}
	if got := egress(np); !slices.Equal(got, wantEgress) {
		t.Errorf("broker egress %v, want %v", got, wantEgress)
	}

	m := r.migrateNet
	if !selects(t, &m.Spec.PodSelector, labels.Set(r.job.Spec.Template.Labels)) || selects(t, &m.Spec.PodSelector, pods) {
		t.Errorf("NetworkPolicy %s must select the Job's pods and not the broker's", m.Name)
	}
	if !slices.Contains(m.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || len(m.Spec.Ingress) > 0 {
		t.Errorf("NetworkPolicy %s must admit nothing", m.Name)
	}
	wantMigrate := []dest{wantEgress[0], wantEgress[3], wantEgress[4]}
	if got := egress(m); !slices.Equal(got, wantMigrate) {
		t.Errorf("migration egress %v, want %v (Postgres and DNS)", got, wantMigrate)
	}
}

func TestHelmChart_AutoscalingAndDisruptionBudget(t *testing.T) {
	r := renderAllOn(t)
	pods := labels.Set(r.deploy.Spec.Template.Labels)
	jobPods := labels.Set(r.job.Spec.Template.Labels)
	if r.deploy.Spec.Replicas != nil {
		t.Errorf("replicas = %d with the HPA on; the HPA must own it", *r.deploy.Spec.Replicas)
	}
	h := r.hpa.Spec
	if h.ScaleTargetRef.APIVersion != "apps/v1" || h.ScaleTargetRef.Kind != "Deployment" || h.ScaleTargetRef.Name != r.deploy.Name {
		t.Errorf("HPA targets %+v, want Deployment %s", h.ScaleTargetRef, r.deploy.Name)
	}
	if h.MinReplicas == nil || *h.MinReplicas != 2 || h.MaxReplicas != 6 {
		t.Errorf("HPA replicas %s…%d, want 2…6 from the values", show(h.MinReplicas), h.MaxReplicas)
	}
	if len(h.Metrics) != 1 || h.Metrics[0].Resource == nil || h.Metrics[0].Resource.Name != corev1.ResourceCPU || show(h.Metrics[0].Resource.Target.AverageUtilization) != "60" {
		t.Errorf("HPA metrics %+v, want CPU utilization 60", h.Metrics)
	}
	if m := r.pdb.Spec.MinAvailable; m == nil || *m != intstr.FromInt32(1) {
		t.Errorf("PodDisruptionBudget minAvailable = %s, want 1", m.String())
	}
	if !selects(t, r.pdb.Spec.Selector, pods) || selects(t, r.pdb.Spec.Selector, jobPods) {
		t.Error("PodDisruptionBudget selector must match the broker pods and not the Job's")
	}
}

func TestHelmChart_SetsEveryREADMEVariableAndNoOther(t *testing.T) {
	documented := readmeSettings(t)
	bothValueSets(t, func(t *testing.T, r rendered) {
		var names []string
		for _, pod := range podsOf(r) {
			for _, c := range pod.spec.Containers {
				for _, e := range c.Env {
					names = append(names, e.Name)
					if !slices.Contains(documented, e.Name) {
						t.Errorf("%s container %s sets %s, which README.md's configuration table does not document", pod.what, c.Name, e.Name)
					}
				}
			}
		}
		checkBrokerSettings(t, chartDir, names)
	})

	r := renderAllOn(t)
	env := envOf(onlyContainer(t, "Deployment", r.deploy.Spec.Template.Spec))
	for _, name := range documented {
		reason, out := chartLeavesOut[name]
		if _, set := env[name]; set == out {
			if out {
				t.Errorf("%s is listed as left out (%s) but the chart sets it", name, reason)
			} else {
				t.Errorf("no value of the chart sets %s (README.md documents it): add it, or list it in chartLeavesOut with the reason", name)
			}
		}
	}
	for name := range chartLeavesOut {
		if !slices.Contains(documented, name) {
			t.Errorf("chartLeavesOut names %s, which README.md does not document", name)
		}
	}
	// The values arrive as written: numbers without an exponent.
	for name, want := range map[string]string{
		"BROKER_TOKEN_CACHE_BYTES":   "33554432",
		"BROKER_RATE_LIMIT":          "2.5",
		"BROKER_RATE_BURST":          "20",
		"BROKER_READ_CONNS":          "4",
		"BROKER_OIDC_AUDIENCE":       "broker,broker-mobile,broker-console,broker-cli",
		"BROKER_TRUSTED_PROXIES":     "10.0.0.0/8",
		"BROKER_CONSOLE_SESSION_TTL": "8h",
		"BROKER_MIGRATE":             "auto",
		"BROKER_LOG_LEVEL":           "debug",
	} {
		if got := env[name]; got.Value != want || got.ValueFrom != nil {
			t.Errorf("%s = %q, want %q", name, got.Value, want)
		}
	}
	m := env["BROKER_MEMORY_LIMIT"].ValueFrom
	if m == nil || m.ResourceFieldRef == nil || m.ResourceFieldRef.Resource != "limits.memory" || m.ResourceFieldRef.ContainerName != "broker" {
		t.Errorf("BROKER_MEMORY_LIMIT = %+v, want the broker container's limits.memory (downward API)", env["BROKER_MEMORY_LIMIT"])
	}
}

func TestHelmSchema_RefusesBadValues(t *testing.T) {
	ch := loadChart(t)
	validate := func(src string) error {
		vals, err := chartutil.CoalesceValues(ch, parseValues(t, src))
		if err != nil {
			t.Fatal(err)
		}
		return chartutil.ValidateAgainstSchema(ch, vals)
	}
	for name, src := range map[string]string{
		"required values":    requiredValues,
		"every option on":    string(readFile(t, allOnValues)),
		"integer overrides":  requiredValues + "  rateLimit: 0\n  readConns: 8\n",
		"no migration Job":   requiredValues + "migration: {enabled: false}\n",
		"existing SA":        requiredValues + "serviceAccount: {create: false, name: broker}\n",
		"percent PDB":        requiredValues + "podDisruptionBudget: {enabled: true, minAvailable: 50%}\n",
		"pinned image tag":   requiredValues + "image: {tag: 0.2.0-rc.1}\n",
		"an ingress w/o TLS": requiredValues + "ingress: {enabled: true}\n",
		"several issuers":    issuersValues,
		"a file w/o issuers": requiredValues + "configFile: {bootstrapAdmins: [group:broker-admins]}\n",
	} {
		if err := validate(src); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}

	// The chart's defaults alone: helm install names each value to give.
	err := validate("")
	for _, want := range []string{"/secrets/databaseURL/name", "/secrets/appCertificate/name", "/secrets/auditKey/name", "/config/oidcIssuer", "/config/oidcAudience", "/config/appId"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("defaults alone: validate = %v, want an error at %s", err, want)
		}
	}

	tests := []struct {
		name, values, wantErr string
	}{
		{"replicaCount 0", requiredValues + "replicaCount: 0\n", "replicaCount"},
		{"replicaCount as a string", requiredValues + "replicaCount: \"2\"\n", "replicaCount"},
		{"unknown top-level key", requiredValues + "replicas: 3\n", "replicas"},
		{"unknown key in image", requiredValues + "image: {digest: sha256:abc}\n", "digest"},
		{"wrong pullPolicy", requiredValues + "image: {pullPolicy: Sometimes}\n", "pullPolicy"},
		{"latest tag", requiredValues + "image: {tag: latest}\n", "tag"},
		{"wrong logLevel", requiredValues + "  logLevel: verbose\n", "logLevel"},
		{"misspelt setting", requiredValues + "  oidcIsuer: https://idp.example.com\n", "oidcIsuer"},
		{"App ID not hex", strings.Replace(requiredValues, "0123456789abcdef0123456789abcdef", "not-an-app-id", 1), "appId"},
		{"issuer not a URL", strings.Replace(requiredValues, "https://idp.example.com", "idp.example.com", 1), "oidcIssuer"},
		{"rateBurst 0", requiredValues + "  rateBurst: 0\n", "rateBurst"},
		{"duration without unit", requiredValues + "  maxTTL: \"3600\"\n", "maxTTL"},
		{"migrate not auto", requiredValues + "  migrate: always\n", "migrate"},
		{"missing database secret name", strings.Replace(requiredValues, "databaseURL: {name: broker-secrets}", "databaseURL: {}", 1), "databaseURL"},
		{"empty audit key secret name", strings.Replace(requiredValues, "auditKey: {name: broker-secrets}", "auditKey: {name: \"\"}", 1), "auditKey"},
		{"secret value in values", strings.Replace(requiredValues, "appCertificate: {name: broker-secrets}", "appCertificate: {name: x, value: 0123456789abcdef0123456789abcdef}", 1), "value"},
		{"secret setting in config", requiredValues + "  databaseURL: postgres://u:p@db/broker\n", "databaseURL"},
		{"service type", requiredValues + "service: {type: ExternalName}\n", "type"},
		{"network policy without database CIDR", requiredValues + "networkPolicy: {enabled: true, identityProvider: {cidrs: [0.0.0.0/0]}}\n", "cidrs"},
		{"network policy open to every namespace", requiredValues + "networkPolicy: {monitoring: {namespaceSelector: {matchLabels: null}}}\n", "namespaceSelector"},
		{"ingress without hosts", requiredValues + "ingress: {enabled: true, hosts: []}\n", "hosts"},
		{"HPA of zero", requiredValues + "autoscaling: {enabled: true, minReplicas: 0}\n", "minReplicas"},
		{"memory limit not a quantity", requiredValues + "resources: {limits: {memory: lots}}\n", "memory"},
		{"configFile not a mapping", requiredValues + "configFile: [issuers]\n", "configFile"},
		{"secret in configFile", requiredValues + "configFile: {auditKey: 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff}\n", "/configFile/auditKey"},
		{"database URL in configFile", issuersValues + "  databaseURL: postgres://broker:pw@db/broker\n", "/configFile/databaseURL"},
		{"console secret in configFile", requiredValues + "configFile: {consoleClientSecret: s3cr3t}\n", "/configFile/consoleClientSecret"},
		{"issuers and config.oidcIssuer", strings.Replace(issuersValues, "config:\n", "config:\n  oidcIssuer: https://idp.example.com\n", 1), "/config/oidcIssuer"},
		{"issuers and config.accountClaim", strings.Replace(issuersValues, "config:\n", "config:\n  accountClaim: email\n", 1), "/config/accountClaim"},
		{"issuers and the file's oidcAudience", issuersValues + "  oidcAudience: broker\n", "/configFile/oidcAudience"},
		{"empty issuers list", requiredValues + "configFile: {issuers: []}\n", "issuers"},
		{"no issuer and no oidcIssuer", strings.Replace(requiredValues, "  oidcIssuer: https://idp.example.com\n", "", 1) + "configFile: {bootstrapAdmins: group:x}\n", "oidcIssuer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validate(tt.values)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("validate = %v, want an error naming %q", err, tt.wantErr)
			}
			// And helm install stops there: rendering validates too.
			if _, err := renderChart(ch, parseValues(t, tt.values)); err == nil {
				t.Error("rendered anyway")
			}
		})
	}
}

func TestHelmChart_RefusesConsoleSettingsTheBrokerWould(t *testing.T) {
	// The broker refuses to start when BROKER_CONSOLE_CLIENT_ID is not one of
	// BROKER_OIDC_AUDIENCE's client ids, or has no BROKER_CONSOLE_REDIRECT_URL;
	// the schema cannot relate two values, so the templates fail the render.
	ch := loadChart(t)
	const redirect = "  consoleRedirectURL: https://broker.example.com/console/callback\n"
	withAudience := func(aud string) string {
		return strings.Replace(requiredValues, "oidcAudience: broker\n", "oidcAudience: "+aud+"\n", 1)
	}
	const audienceErr = "config.oidcAudience must include config.consoleClientId (console logins are ID tokens issued to that client)"
	tests := []struct {
		name, values, wantErr string
	}{
		{"console not in the audience", requiredValues + "  consoleClientId: broker-console\n" + redirect, audienceErr},
		{"console a prefix of an audience id", withAudience("broker-console-app") + "  consoleClientId: broker-console\n" + redirect, audienceErr},
		{"console in no list item", withAudience(`"broker, broker-mobile"`) + "  consoleClientId: broker-mobile-console\n" + redirect, audienceErr},
		{"console without redirect URL", withAudience("broker,broker-console") + "  consoleClientId: broker-console\n", "config.consoleRedirectURL is required when config.consoleClientId is set"},
		{"CLI not in the audience", withAudience("broker,broker-console") + "  cliClientId: broker-cli\n",
			"config.oidcAudience must include config.cliClientId (CLI logins are ID tokens issued to that client)"},
		{"CLI not an audience of the default issuer", strings.Replace(issuersValues, "  consoleClientId: broker-console\n", "  consoleClientId: broker-console\n  cliClientId: broker-cli\n", 1),
			"the audiences of configFile.issuers' default issuer (the one without a name) must include config.cliClientId (CLI logins"},
		// With configFile.issuers, console logins come from the issuer without a name.
		{"console not an audience of the default issuer", strings.Replace(issuersValues, "audiences: [broker, broker-console]", "audiences: [broker, broker-console-app]", 1),
			"the audiences of configFile.issuers' default issuer (the one without a name) must include config.consoleClientId"},
		{"console an audience of another issuer only", strings.Replace(strings.Replace(issuersValues, "audiences: [broker, broker-console]", "audiences: broker", 1), "audiences: [api://broker]", "audiences: [api://broker, broker-console]", 1),
			"the audiences of configFile.issuers' default issuer (the one without a name) must include config.consoleClientId"},
		{"no default issuer", strings.Replace(issuersValues, "    - issuer: https://accounts.example.com\n", "    - name: main\n      issuer: https://accounts.example.com\n", 1),
			"no entry of configFile.issuers is the default issuer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vals := parseValues(t, tt.values)
			if err := chartutil.ValidateAgainstSchema(ch, mustCoalesce(t, ch, vals)); err != nil {
				t.Fatalf("the schema refuses the values already (%v): the test checks the templates", err)
			}
			_, err := renderChart(ch, vals)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("render = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}

	for name, src := range map[string]string{
		"console off":               requiredValues,
		"console in the audience":   withAudience("broker,broker-console") + "  consoleClientId: broker-console\n" + redirect,
		"the audience spaced":       withAudience(`" broker , broker-console ,"`) + "  consoleClientId: \" broker-console\"\n" + redirect,
		"console the only audience": withAudience("broker-console") + "  consoleClientId: broker-console\n" + redirect,
	} {
		t.Run(name, func(t *testing.T) {
			r := render(t, parseValues(t, src))
			env := envOf(onlyContainer(t, "Deployment", r.deploy.Spec.Template.Spec))
			if console := strings.TrimSpace(env["BROKER_CONSOLE_CLIENT_ID"].Value); console != "" && !slices.Contains(splitList(env["BROKER_OIDC_AUDIENCE"].Value), console) {
				t.Errorf("rendered BROKER_CONSOLE_CLIENT_ID %q outside BROKER_OIDC_AUDIENCE %q", console, env["BROKER_OIDC_AUDIENCE"].Value)
			}
		})
	}
	// The default issuer's audiences as a list or as the broker's comma-separated
	// string; the redirect URL from the file.
	for name, src := range map[string]string{
		"default issuer's audiences, a list":   issuersValues,
		"default issuer's audiences, a string": strings.Replace(issuersValues, "audiences: [broker, broker-console]", `audiences: " broker , broker-console"`, 1),
		"redirect URL in the file": strings.Replace(strings.Replace(issuersValues, "  consoleRedirectURL: https://broker.example.com/console/callback\n", "", 1),
			"configFile:\n", "configFile:\n  consoleRedirectURL: https://broker.example.com/console/callback\n", 1),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := renderChart(ch, parseValues(t, src)); err != nil {
				t.Errorf("render: %v", err)
			}
		})
	}
	// The shipped values are ones the broker starts with.
	bothValueSets(t, func(t *testing.T, r rendered) {
		env := envOf(onlyContainer(t, "Deployment", r.deploy.Spec.Template.Spec))
		if console := env["BROKER_CONSOLE_CLIENT_ID"].Value; console != "" && !slices.Contains(splitList(env["BROKER_OIDC_AUDIENCE"].Value), console) {
			t.Errorf("BROKER_CONSOLE_CLIENT_ID %q outside BROKER_OIDC_AUDIENCE %q", console, env["BROKER_OIDC_AUDIENCE"].Value)
		}
	})
}

func mustCoalesce(t *testing.T, ch *chart.Chart, vals map[string]any) map[string]any {
	t.Helper()
	v, err := chartutil.CoalesceValues(ch, vals)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestHelmChart_TemplatesHoldOnlyTemplates(t *testing.T) {
	// Every template is rendered and decoded above; anything else in
	// templates/ would be shipped untested.
	entries, err := os.ReadDir(repoPath(chartDir + "/templates"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || !(strings.HasSuffix(n, ".yaml") || n == "_helpers.tpl" || n == "NOTES.txt") {
			t.Errorf("templates/%s: only .yaml templates, _helpers.tpl and NOTES.txt belong here", n)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestHelmChart_ConfigFileIsOffByDefault(t *testing.T) {
	bothValueSets(t, func(t *testing.T, r rendered) {
		if r.config != nil {
			t.Errorf("a ConfigMap %s without configFile", r.config.Name)
		}
		for _, pod := range podsOf(r) {
			if len(pod.spec.Volumes) > 0 {
				t.Errorf("%s: volumes %v without configFile", pod.what, pod.spec.Volumes)
			}
			for _, c := range pod.spec.Containers {
				if _, ok := envOf(c)["BROKER_CONFIG"]; ok || len(c.VolumeMounts) > 0 {
					t.Errorf("%s container %s: BROKER_CONFIG or a mount without configFile", pod.what, c.Name)
				}
			}
		}
		if _, ok := r.deploy.Spec.Template.Annotations["checksum/config"]; ok {
			t.Error("a checksum/config annotation without configFile")
		}
	})
}

func TestHelmChart_ConfigFileConfiguresSeveralIssuers(t *testing.T) {
	vals := parseValues(t, issuersValues)
	r := render(t, vals)

	// The ConfigMap holds configFile exactly, and nothing secret.
	cm := r.config
	if cm == nil {
		t.Fatal("configFile set, but no ConfigMap")
	}
	if cm.Name != fullname+"-config" || len(cm.Data) != 1 || len(cm.BinaryData) > 0 {
		t.Fatalf("ConfigMap %s with keys %v, want %s-config with broker.yaml only", cm.Name, slices.Sorted(maps.Keys(cm.Data)), fullname)
	}
	file, ok := cm.Data["broker.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no broker.yaml", cm.Name)
	}
	var got map[string]any
	if err := yaml.UnmarshalStrict([]byte(file), &got); err != nil {
		t.Fatalf("broker.yaml: %v\n%s", err, file)
	}
	if want := vals["configFile"]; !reflect.DeepEqual(got, want) {
		t.Errorf("broker.yaml holds\n%v\nwant configFile\n%v", got, want)
	}
	for key := range got {
		if isSecretName(key) || slices.ContainsFunc(secretVars, func(s secretVar) bool { return s.value == key }) {
			t.Errorf("broker.yaml holds the secret %s", key)
		}
	}

	// The broker container reads it, read-only, through BROKER_CONFIG.
	spec := r.deploy.Spec.Template.Spec
	c := onlyContainer(t, "Deployment", spec)
	env := envOf(c)
	path := env["BROKER_CONFIG"].Value
	if path != "/etc/broker/broker.yaml" {
		t.Errorf("BROKER_CONFIG = %q, want /etc/broker/broker.yaml", path)
	}
	var mounted bool
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			t.Errorf("mount %s: no such volume", m.Name)
			continue
		}
		v := spec.Volumes[i]
		if v.ConfigMap == nil || v.ConfigMap.Name != cm.Name {
			t.Errorf("volume %s is not the ConfigMap %s: %+v", v.Name, cm.Name, v.VolumeSource)
			continue
		}
		if !m.ReadOnly || m.SubPath != "" {
			t.Errorf("mount %s at %s: read-only %v, subPath %q; want read-only, whole (subPath mounts never update)", m.Name, m.MountPath, m.ReadOnly, m.SubPath)
		}
		for _, item := range v.ConfigMap.Items {
			if item.Key == "broker.yaml" && m.MountPath+"/"+item.Path == path {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("BROKER_CONFIG %s is not the ConfigMap's broker.yaml: mounts %+v, volumes %+v", path, c.VolumeMounts, spec.Volumes)
	}
	checkBrokerSettings(t, chartDir, slices.Collect(maps.Keys(env)))
	if !strings.Contains(string(readFile(t, "README.md")), "`BROKER_CONFIG=") {
		t.Error("README.md no longer documents BROKER_CONFIG")
	}

	// The issuers replace the single issuer's variables, which the broker
	// would refuse ("is set per issuer"); the file's other settings stay.
	for _, name := range configFileVars {
		if e, ok := env[name]; ok {
			t.Errorf("%s=%q is set with configFile.issuers; the broker refuses it then", name, e.Value)
		}
	}
	for _, name := range []string{"BROKER_APP_ID", "BROKER_CONSOLE_CLIENT_ID", "BROKER_CONSOLE_REDIRECT_URL", "BROKER_LOG_LEVEL"} {
		if _, ok := env[name]; !ok {
			t.Errorf("%s is not set: config.* still sets the variables", name)
		}
	}
	checkSecretRefs(t, r, vals)

	// A change of the file rolls the pods; the pod annotations stay.
	ann := r.deploy.Spec.Template.Annotations
	sum := sha256.Sum256([]byte(strings.TrimSuffix(file, "\n")))
	if ann["checksum/config"] != hex.EncodeToString(sum[:]) {
		t.Errorf("checksum/config = %q, want the sha256 of broker.yaml, %x", ann["checksum/config"], sum)
	}
	if ann["example.com/team"] != "identity" {
		t.Errorf("pod annotations %v lack podAnnotations", ann)
	}
	changed := render(t, parseValues(t, strings.Replace(issuersValues, "oidcLeeway: 45s", "oidcLeeway: 1m", 1)))
	if a := changed.deploy.Spec.Template.Annotations["checksum/config"]; a == ann["checksum/config"] || a == "" {
		t.Errorf("checksum/config %q after a change of configFile, %q before: the pods would not roll", a, ann["checksum/config"])
	}
	if again := render(t, vals); again.deploy.Spec.Template.Annotations["checksum/config"] != ann["checksum/config"] {
		t.Error("checksum/config differs between two renders of the same values: every upgrade would roll the pods")
	}

	// The migration Job reads the database settings only: no file.
	if r.job == nil {
		t.Fatal("no migration Job")
	}
	jspec := r.job.Spec.Template.Spec
	if _, ok := envOf(onlyContainer(t, "Job", jspec))["BROKER_CONFIG"]; ok || len(jspec.Volumes) > 0 {
		t.Error("the migration Job mounts or names the configuration file; `broker migrate` reads the database settings only")
	}
	if !strings.Contains(r.notes, cm.Name) || strings.Contains(r.notes, "<no value>") {
		t.Errorf("NOTES.txt does not name the ConfigMap %s:\n%s", cm.Name, r.notes)
	}
}

func TestHelmChart_RefusesConfigFileMistakesWithoutTheSchema(t *testing.T) {
	// helm install --skip-schema-validation skips values.schema.json; the
	// templates still never put a secret in the ConfigMap, nor render what the
	// broker refuses next to an issuers list.
	ch := loadChart(t)
	tests := []struct {
		name, values, wantErr string
	}{
		{"secret in configFile", requiredValues + "configFile: {appCertificate: 0123456789abcdef0123456789abcdef}\n",
			"configFile.appCertificate: a secret never goes in configFile (the chart renders it into a ConfigMap); name its existing Secret in secrets.appCertificate"},
		{"issuers and config.oidcIssuer", strings.Replace(issuersValues, "config:\n", "config:\n  oidcIssuer: https://idp.example.com\n", 1),
			"config.oidcIssuer must be empty when configFile.issuers is set"},
		{"issuers and config.uidClaim", strings.Replace(issuersValues, "config:\n", "config:\n  uidClaim: agora_uid\n", 1),
			"config.uidClaim must be empty when configFile.issuers is set"},
		{"issuers and the file's groupsClaim", issuersValues + "  groupsClaim: roles\n",
			"configFile.groupsClaim must be left out when configFile.issuers is set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := renderChart(ch, parseValues(t, tt.values)); err == nil {
				t.Error("the schema accepts the values")
			}
			_, err := renderChartSchema(ch, parseValues(t, tt.values), true)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("render without the schema = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
	if _, err := renderChartSchema(ch, parseValues(t, issuersValues), true); err != nil {
		t.Errorf("issuersValues without the schema: %v", err)
	}
}
