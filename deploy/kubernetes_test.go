package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const kubeDir = "deploy/kubernetes"

// brokerImage is the broker's image, without a tag.
const brokerImage = "ghcr.io/broker-dev/broker"

// kustomization is the part of kustomize's format used here: a plain list
// of manifests and the image they run.
type kustomization struct {
	APIVersion string               `json:"apiVersion"`
	Kind       string               `json:"kind"`
	Resources  []string             `json:"resources"`
	Images     []kustomizationImage `json:"images"`
}

// kustomizationImage is an entry of a kustomization's images: every container
// image named Name gets tag NewTag.
type kustomizationImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

// kinds maps each apiVersion/kind allowed in the manifests to its API type.
// A manifest of any other kind fails the tests until it is added here (and so
// validated).
var kinds = map[string]func() any{
	"v1/ServiceAccount":                             func() any { return new(corev1.ServiceAccount) },
	"v1/ConfigMap":                                  func() any { return new(corev1.ConfigMap) },
	"v1/Service":                                    func() any { return new(corev1.Service) },
	"apps/v1/Deployment":                            func() any { return new(appsv1.Deployment) },
	"batch/v1/Job":                                  func() any { return new(batchv1.Job) },
	"policy/v1/PodDisruptionBudget":                 func() any { return new(policyv1.PodDisruptionBudget) },
	"autoscaling/v2/HorizontalPodAutoscaler":        func() any { return new(autoscalingv2.HorizontalPodAutoscaler) },
	"kustomize.config.k8s.io/v1beta1/Kustomization": func() any { return new(kustomization) },
	// Decoded so that TestKubernetes_ShipsNoSecretValues can name it.
	"v1/Secret": func() any { return new(corev1.Secret) },
}

// manifest is one decoded YAML document of deploy/kubernetes.
type manifest struct {
	file string
	obj  any
}

// decodeManifests splits a file into YAML documents and decodes each into its
// API type strictly: an unknown or misspelt field, a duplicate key or a value
// of the wrong type is an error, as the API server's strict validation would
// report it.
func decodeManifests(file string, src []byte) ([]manifest, error) {
	return decodeManifestsOf(kinds, file, src)
}

// decodeManifestsOf is decodeManifests for the API types of known: the Helm
// chart's tests add the kinds only the chart renders.
func decodeManifestsOf(known map[string]func() any, file string, src []byte) ([]manifest, error) {
	var out []manifest
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(src)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		if tm.APIVersion == "" && tm.Kind == "" {
			continue // only comments
		}
		newObj, ok := known[tm.APIVersion+"/"+tm.Kind]
		if !ok {
			return nil, fmt.Errorf("%s: document %d: %s %s is not a kind these tests know", file, i, tm.APIVersion, tm.Kind)
		}
		obj := newObj()
		if err := decodeStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", file, i, tm.Kind, err)
		}
		out = append(out, manifest{file: file, obj: obj})
	}
}

// decodeStrict decodes one YAML document the way the API server's strict
// field validation does: field names match case-sensitively, and unknown or
// duplicate fields are errors (encoding/json alone would accept
// readOnlyRootFileSystem for readOnlyRootFilesystem).
func decodeStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(j, obj)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

func TestDecodeManifests_RejectsWhatTheAPIServerWould(t *testing.T) {
	tests := []struct {
		name, src, wantErr string
	}{
		{"unknown field", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndatta: {}\n", "unknown field"},
		{"field name in the wrong case", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nData: {a: b}\n", "unknown field"},
		{"misplaced field", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: 2, image: x}\n", "unknown field"},
		{"duplicate key", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\ndata: {c: d}\n", "already set"},
		{"wrong type", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: two}\n", "replicas"},
		{"unknown kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", "not a kind"},
		{"wrong version", "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: x}\n", "not a kind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeManifests("test.yaml", []byte(tt.src))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	ok := "# comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: second}\n"
	got, err := decodeManifests("ok.yaml", []byte(ok))
	if err != nil || len(got) != 2 {
		t.Errorf("decodeManifests(two documents) = %d manifests, %v", len(got), err)
	}
}

// kube holds every manifest of deploy/kubernetes, decoded and validated.
type kube struct {
	files     []string
	all       []manifest
	deploy    *appsv1.Deployment
	job       *batchv1.Job
	service   *corev1.Service
	config    *corev1.ConfigMap
	account   *corev1.ServiceAccount
	pdb       *policyv1.PodDisruptionBudget
	hpa       *autoscalingv2.HorizontalPodAutoscaler
	kustomize *kustomization
}

func loadKube(t *testing.T) kube {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoPath(kubeDir), "*"))
	if err != nil {
		t.Fatal(err)
	}
	var k kube
	for _, f := range files {
		name := filepath.Base(f)
		if !strings.HasSuffix(name, ".yaml") {
			t.Errorf("%s/%s: only .yaml manifests belong here", kubeDir, name)
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ms, err := decodeManifests(name, src)
		if err != nil {
			t.Fatal(err)
		}
		k.files = append(k.files, name)
		k.all = append(k.all, ms...)
	}
	for _, m := range k.all {
		var dup bool
		switch o := m.obj.(type) {
		case *appsv1.Deployment:
			dup, k.deploy = k.deploy != nil, o
		case *batchv1.Job:
			dup, k.job = k.job != nil, o
		case *corev1.Service:
			dup, k.service = k.service != nil, o
		case *corev1.ConfigMap:
			dup, k.config = k.config != nil, o
		case *corev1.ServiceAccount:
			dup, k.account = k.account != nil, o
		case *policyv1.PodDisruptionBudget:
			dup, k.pdb = k.pdb != nil, o
		case *autoscalingv2.HorizontalPodAutoscaler:
			dup, k.hpa = k.hpa != nil, o
		case *kustomization:
			dup, k.kustomize = k.kustomize != nil, o
		}
		if dup {
			t.Fatalf("%s: a second %T; the checks below expect one of each", m.file, m.obj)
		}
	}
	if k.deploy == nil || k.job == nil || k.service == nil || k.config == nil || k.account == nil || k.pdb == nil || k.hpa == nil || k.kustomize == nil {
		t.Fatalf("%s must hold a Deployment, Job, Service, ConfigMap, ServiceAccount, PodDisruptionBudget, HorizontalPodAutoscaler and kustomization", kubeDir)
	}
	return k
}

func TestKubernetes_EveryManifestMatchesTheAPISchema(t *testing.T) {
	k := loadKube(t)
	if len(k.all) < 8 {
		t.Errorf("decoded %d objects from %v", len(k.all), k.files)
	}
	for _, m := range k.all {
		if om, ok := m.obj.(metav1.Object); ok && om.GetName() == "" {
			t.Errorf("%s: %T has no metadata.name", m.file, m.obj)
		}
	}
}

func TestKustomization_ListsEveryManifestAndNothingElse(t *testing.T) {
	k := loadKube(t)
	want := slices.DeleteFunc(slices.Clone(k.files), func(f string) bool { return f == "kustomization.yaml" })
	got := slices.Sorted(slices.Values(k.kustomize.Resources))
	if !slices.Equal(got, want) {
		t.Errorf("kustomization resources = %v, want the directory's manifests %v", got, want)
	}
}

func TestKustomization_SetsTheImageInOnePlace(t *testing.T) {
	k := loadKube(t)
	if len(k.kustomize.Images) != 1 {
		t.Fatalf("kustomization images = %+v, want one entry for the broker image", k.kustomize.Images)
	}
	img := k.kustomize.Images[0]
	if img.Name != brokerImage || img.NewName != "" || img.Digest != "" || img.NewTag == "" || img.NewTag == "latest" {
		t.Errorf("kustomization image = %+v, want name %s with a version newTag only", img, brokerImage)
	}
	// Applied without kustomize, the manifests must run the same version.
	for _, pod := range []struct {
		what string
		spec corev1.PodSpec
	}{{"Deployment", k.deploy.Spec.Template.Spec}, {"Job", k.job.Spec.Template.Spec}} {
		for _, c := range slices.Concat(pod.spec.InitContainers, pod.spec.Containers) {
			if want := brokerImage + ":" + img.NewTag; c.Image != want {
				t.Errorf("%s container %s: image %s, want %s as the kustomization sets it", pod.what, c.Name, c.Image, want)
			}
		}
	}
}

func TestKubernetes_ShipsNoSecretValues(t *testing.T) {
	k := loadKube(t)
	for _, m := range k.all {
		if _, ok := m.obj.(*corev1.Secret); ok {
			t.Errorf("%s: a Secret manifest; secrets are created outside the repository", m.file)
		}
	}
	for key := range k.config.Data {
		if isSecretName(key) {
			t.Errorf("ConfigMap %s holds %s; secrets belong in a Secret", k.config.Name, key)
		}
	}
	if len(k.config.BinaryData) > 0 {
		t.Errorf("ConfigMap %s has binaryData", k.config.Name)
	}
	for _, pod := range []struct {
		what string
		spec corev1.PodSpec
	}{{"Deployment", k.deploy.Spec.Template.Spec}, {"Job", k.job.Spec.Template.Spec}} {
		for _, c := range slices.Concat(pod.spec.InitContainers, pod.spec.Containers) {
			for _, e := range c.Env {
				if isSecretName(e.Name) && (e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
					t.Errorf("%s container %s: %s must come from a secretKeyRef", pod.what, c.Name, e.Name)
				}
			}
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef != nil && ef.ConfigMapRef.Name != k.config.Name {
					t.Errorf("%s container %s reads ConfigMap %s, which is not shipped", pod.what, c.Name, ef.ConfigMapRef.Name)
				}
			}
		}
	}
}

func TestKubernetes_SetsOnlySettingsTheBrokerReads(t *testing.T) {
	k := loadKube(t)
	names := slices.Collect(maps.Keys(k.config.Data))
	for _, c := range slices.Concat(k.deploy.Spec.Template.Spec.Containers, k.job.Spec.Template.Spec.Containers) {
		for _, e := range c.Env {
			names = append(names, e.Name)
		}
	}
	checkBrokerSettings(t, kubeDir, names)
}

// splitList splits a comma-separated setting as the broker does
// (cmd/broker/config.go): items trimmed, empty ones dropped.
func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func TestKubernetes_ConsoleSettingsAreOnesTheBrokerAccepts(t *testing.T) {
	// The broker refuses to start with a console client that is not one of
	// the audience's client ids (console logins are ID tokens issued to it),
	// or without the console's redirect URL.
	k := loadKube(t)
	data := k.config.Data
	console := strings.TrimSpace(data["BROKER_CONSOLE_CLIENT_ID"])
	if console == "" {
		return
	}
	if aud := data["BROKER_OIDC_AUDIENCE"]; !slices.Contains(splitList(aud), console) {
		t.Errorf("ConfigMap %s: BROKER_OIDC_AUDIENCE %q does not include BROKER_CONSOLE_CLIENT_ID %q; the broker would refuse to start", k.config.Name, aud, console)
	}
	if strings.TrimSpace(data["BROKER_CONSOLE_REDIRECT_URL"]) == "" {
		t.Errorf("ConfigMap %s sets BROKER_CONSOLE_CLIENT_ID without BROKER_CONSOLE_REDIRECT_URL; the broker would refuse to start", k.config.Name)
	}
}

func TestDeployment_RunsReplicatedWithProbes(t *testing.T) {
	k := loadKube(t)
	d := k.deploy
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas = %s, want at least 2", show(d.Spec.Replicas))
	}
	c := onlyContainer(t, "Deployment", d.Spec.Template.Spec)
	if !slices.Equal(c.Args, []string{"serve"}) {
		t.Errorf("args = %v, want [serve]", c.Args)
	}
	for _, p := range []struct {
		what  string
		probe *corev1.Probe
		path  string
	}{
		{"readiness", c.ReadinessProbe, "/readyz"},
		{"liveness", c.LivenessProbe, "/healthz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.what)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s probe path = %s, want %s", p.what, p.probe.HTTPGet.Path, p.path)
		}
		if !hasPort(c, p.probe.HTTPGet.Port) {
			t.Errorf("%s probe port %s is not a container port", p.what, p.probe.HTTPGet.Port.String())
		}
	}
	if sp := c.StartupProbe; sp != nil && (sp.HTTPGet == nil || sp.HTTPGet.Path != "/healthz") {
		t.Error("startup probe, if any, must GET /healthz")
	}
}

func TestDeployment_OutlastsTheBrokersShutdown(t *testing.T) {
	// The broker drains for up to 20 s after SIGTERM; a preStop sleep comes first.
	k := loadKube(t)
	spec := k.deploy.Spec.Template.Spec
	var sleep int64
	if c := onlyContainer(t, "Deployment", spec); c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		ps := c.Lifecycle.PreStop
		if ps.Exec != nil {
			t.Error("preStop exec needs a shell or tool; the image has none (use sleep)")
		}
		if ps.Sleep != nil {
			sleep = ps.Sleep.Seconds
		}
	}
	if g := spec.TerminationGracePeriodSeconds; g == nil || *g <= 20+sleep {
		t.Errorf("terminationGracePeriodSeconds = %s, want more than 20 s + preStop sleep %d s", show(g), sleep)
	}
}

func TestPods_RunLockedDown(t *testing.T) {
	k := loadKube(t)
	for _, pod := range []struct {
		what string
		spec corev1.PodSpec
	}{{"Deployment", k.deploy.Spec.Template.Spec}, {"Job", k.job.Spec.Template.Spec}} {
		s := pod.spec
		if s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken {
			t.Errorf("%s: automountServiceAccountToken must be false", pod.what)
		}
		if s.ServiceAccountName != k.account.Name {
			t.Errorf("%s: serviceAccountName = %q, want %q", pod.what, s.ServiceAccountName, k.account.Name)
		}
		if s.HostNetwork || s.HostPID || s.HostIPC {
			t.Errorf("%s: shares a host namespace", pod.what)
		}
		psc := s.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
			t.Errorf("%s: pod securityContext.runAsNonRoot must be true", pod.what)
		}
		if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod seccompProfile must be RuntimeDefault", pod.what)
		}
		if psc != nil && psc.RunAsUser != nil && *psc.RunAsUser == 0 {
			t.Errorf("%s: runAsUser 0", pod.what)
		}
		for _, c := range slices.Concat(s.InitContainers, s.Containers) {
			where := pod.what + " container " + c.Name
			sc := c.SecurityContext
			switch {
			case sc == nil:
				t.Errorf("%s: no securityContext", where)
				continue
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s: allowPrivilegeEscalation must be false", where)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Errorf("%s: readOnlyRootFilesystem must be true", where)
			case sc.Privileged != nil && *sc.Privileged:
				t.Errorf("%s: privileged", where)
			case sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot, sc.RunAsUser != nil && *sc.RunAsUser == 0:
				t.Errorf("%s: overrides the pod's non-root user", where)
			case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
				t.Errorf("%s: capabilities must drop ALL and add none", where)
			case sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
				t.Errorf("%s: overrides seccomp with %s", where, sc.SeccompProfile.Type)
			}
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
				if req.IsZero() || lim.IsZero() {
					t.Errorf("%s: needs a %s request and limit", where, r)
				} else if req.Cmp(lim) > 0 {
					t.Errorf("%s: %s request %s exceeds limit %s", where, r, req.String(), lim.String())
				}
			}
			if c.ImagePullPolicy == corev1.PullNever || strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
				t.Errorf("%s: image %q must name a version tag", where, c.Image)
			}
		}
	}
	if a := k.account.AutomountServiceAccountToken; a == nil || *a {
		t.Errorf("ServiceAccount %s: automountServiceAccountToken must be false", k.account.Name)
	}
}

func TestMigrationJob_RunsMigrateUpLikeTheDeployment(t *testing.T) {
	k := loadKube(t)
	j := k.job
	if j.Spec.BackoffLimit == nil || *j.Spec.BackoffLimit < 1 {
		t.Errorf("backoffLimit = %s, want a positive limit", show(j.Spec.BackoffLimit))
	}
	spec := j.Spec.Template.Spec
	if spec.RestartPolicy != corev1.RestartPolicyNever && spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		t.Errorf("restartPolicy = %q, want Never or OnFailure", spec.RestartPolicy)
	}
	c := onlyContainer(t, "Job", spec)
	if !slices.Equal(c.Args, []string{"migrate", "up"}) {
		t.Errorf("args = %v, want [migrate up]", c.Args)
	}
	server := onlyContainer(t, "Deployment", k.deploy.Spec.Template.Spec)
	if c.Image != server.Image {
		t.Errorf("Job image %s, Deployment image %s: migrations must match the code", c.Image, server.Image)
	}
	if !reflect.DeepEqual(spec.SecurityContext, k.deploy.Spec.Template.Spec.SecurityContext) {
		t.Error("Job's pod securityContext differs from the Deployment's")
	}
	if !reflect.DeepEqual(c.SecurityContext, server.SecurityContext) {
		t.Error("Job's container securityContext differs from the Deployment's")
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "BROKER_DATABASE_URL" }) {
		t.Error("Job does not get BROKER_DATABASE_URL")
	}
	if podLabels := labels.Set(j.Spec.Template.Labels); selects(t, k.deploy.Spec.Selector, podLabels) {
		t.Error("the Deployment's selector also matches the Job's pods")
	}
}

func TestServicePDBAndHPA_TargetTheBrokerPods(t *testing.T) {
	k := loadKube(t)
	pods := labels.Set(k.deploy.Spec.Template.Labels)
	jobPods := labels.Set(k.job.Spec.Template.Labels)
	server := onlyContainer(t, "Deployment", k.deploy.Spec.Template.Spec)

	if !selects(t, k.deploy.Spec.Selector, pods) {
		t.Error("Deployment selector does not match its own pod template")
	}
	svc := labels.SelectorFromSet(k.service.Spec.Selector)
	if len(k.service.Spec.Selector) == 0 || !svc.Matches(pods) || svc.Matches(jobPods) {
		t.Errorf("Service selector %v must match the broker pods and not the Job's", k.service.Spec.Selector)
	}
	for _, p := range k.service.Spec.Ports {
		if !hasPort(server, p.TargetPort) {
			t.Errorf("Service port %s targets %s, not a container port", p.Name, p.TargetPort.String())
		}
	}

	if m := k.pdb.Spec.MinAvailable; m == nil || *m != intstr.FromInt32(1) {
		t.Errorf("PodDisruptionBudget minAvailable = %s, want 1", m.String())
	}
	if !selects(t, k.pdb.Spec.Selector, pods) || selects(t, k.pdb.Spec.Selector, jobPods) {
		t.Error("PodDisruptionBudget selector must match the broker pods and not the Job's")
	}

	h := k.hpa.Spec
	if h.ScaleTargetRef.APIVersion != "apps/v1" || h.ScaleTargetRef.Kind != "Deployment" || h.ScaleTargetRef.Name != k.deploy.Name {
		t.Errorf("HPA targets %+v, want Deployment %s", h.ScaleTargetRef, k.deploy.Name)
	}
	if h.MinReplicas == nil || *h.MinReplicas < 2 || h.MaxReplicas < *h.MinReplicas {
		t.Errorf("HPA replicas %s…%d, want at least 2 and max ≥ min", show(h.MinReplicas), h.MaxReplicas)
	}
	cpu := slices.ContainsFunc(h.Metrics, func(m autoscalingv2.MetricSpec) bool {
		return m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU &&
			m.Resource.Target.Type == autoscalingv2.UtilizationMetricType && m.Resource.Target.AverageUtilization != nil
	})
	if !cpu {
		t.Error("HPA does not scale on CPU utilization")
	}
}

// show prints an optional field's value, or "unset".
func show[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

func onlyContainer(t *testing.T, what string, spec corev1.PodSpec) corev1.Container {
	t.Helper()
	if len(spec.Containers) != 1 {
		t.Fatalf("%s has %d containers, want 1", what, len(spec.Containers))
	}
	return spec.Containers[0]
}

// hasPort reports whether a probe's or Service's port names one of c's ports.
func hasPort(c corev1.Container, p intstr.IntOrString) bool {
	return slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
		if p.Type == intstr.String {
			return cp.Name == p.StrVal
		}
		return cp.ContainerPort == p.IntVal
	})
}

func selects(t *testing.T, sel *metav1.LabelSelector, set labels.Set) bool {
	t.Helper()
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("label selector: %v", err)
	}
	return !s.Empty() && s.Matches(set)
}
