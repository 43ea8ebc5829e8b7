{{/*
The chart's name, or nameOverride.
*/}}
{{- define "broker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name, used for every object: fullnameOverride, else the
release name if it already contains the chart's name, else release-chart.
Cut to 57 characters so that the longest suffix ("-admin") still fits the
63-character limit of a label value and a DNS-1123 name.
*/}}
{{- define "broker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 57 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 57 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 57 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
chart-version, as the helm.sh/chart label.
*/}}
{{- define "broker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "broker.labels" -}}
helm.sh/chart: {{ include "broker.chart" . }}
{{ include "broker.selectorLabels" . }}
app.kubernetes.io/version: {{ include "broker.tag" . | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select this release's objects (never changed after install).
*/}}
{{- define "broker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels that select the broker's pods, and not the migration Job's.
*/}}
{{- define "broker.serverSelectorLabels" -}}
{{ include "broker.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/*
Labels that select the migration Job's pods.
*/}}
{{- define "broker.migrateSelectorLabels" -}}
{{ include "broker.selectorLabels" . }}
app.kubernetes.io/component: migrate
{{- end }}

{{/*
The ServiceAccount of the broker pods.
*/}}
{{- define "broker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "broker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount of the migration Job's pods. The Job runs before the
release's own objects exist (pre-install), so with serviceAccount.create it
gets an account of its own, created as a hook just before it.
*/}}
{{- define "broker.migrateServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- printf "%s-migrate" (include "broker.fullname" .) }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image tag: image.tag, else the chart's appVersion.
*/}}
{{- define "broker.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
The image reference.
*/}}
{{- define "broker.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "broker.tag" .) }}
{{- end }}

{{/*
An environment variable read from an existing Secret. Takes a list: the
variable's name, the {name, key} reference from values.secrets.
*/}}
{{- define "broker.secretEnv" -}}
{{- $env := index . 0 }}
{{- $ref := index . 1 -}}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name | quote }}
      key: {{ $ref.key | quote }}
{{- end }}

{{/*
A setting's value as the text of an environment variable: whole numbers
without an exponent (YAML numbers arrive as float64), the rest as written.
*/}}
{{- define "broker.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
The pod securityContext shared by the broker and the migration Job: the
image's non-root user (distroless nonroot, 65532), seccomp RuntimeDefault.
*/}}
{{- define "broker.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The container securityContext shared by the broker and the migration Job.
*/}}
{{- define "broker.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
NetworkPolicy egress rule: Postgres (networkPolicy.database).
*/}}
{{- define "broker.egressDatabase" -}}
- to:
    {{- range .Values.networkPolicy.database.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - port: {{ .Values.networkPolicy.database.port }}
      protocol: TCP
{{- end }}

{{/*
NetworkPolicy egress rule: the cluster's DNS (networkPolicy.dns), UDP and TCP.
*/}}
{{- define "broker.egressDNS" -}}
{{- $dns := .Values.networkPolicy.dns -}}
- to:
    - namespaceSelector:
        {{- toYaml $dns.namespaceSelector | nindent 8 }}
      {{- with $dns.podSelector }}
      podSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  ports:
    - port: {{ $dns.port }}
      protocol: UDP
    - port: {{ $dns.port }}
      protocol: TCP
{{- end }}

{{/*
The configuration file (values.configFile) as the broker reads it, and where
the broker container finds it (BROKER_CONFIG). Empty configFile: no file.
*/}}
{{- define "broker.configFile" -}}
{{- toYaml (get .Values "configFile" | default dict) }}
{{- end }}

{{- define "broker.configDir" -}}
/etc/broker
{{- end }}

{{- define "broker.configPath" -}}
{{- include "broker.configDir" . }}/broker.yaml
{{- end }}

{{/*
The settings that configFile.issuers sets per issuer: with an issuers list
the broker refuses them from the environment or the file's top level.
*/}}
{{- define "broker.perIssuerSettings" -}}
oidcIssuer oidcAudience oidcAlgorithms accountClaim groupsClaim uidClaim
{{- end }}

{{/*
Fails the render on a combination of settings the broker refuses at start-up,
which values.schema.json (draft-07) cannot express. Renders nothing. The
schema-expressible checks are repeated here for `--skip-schema-validation`:
- configFile never holds a secret: it is rendered into a ConfigMap.
- With configFile.issuers, the per-issuer settings are left out of config
  (the broker refuses BROKER_OIDC_ISSUER & co. then) and of the file's top level.
- The console (consoleClientId) needs consoleRedirectURL (in config or the file).
- The console's client and the CLI's (cliClientId) must be audiences of the
  default issuer: without configFile.issuers, of config.oidcAudience (split on
  commas and trimmed as the broker does); with it, of the issuer that has no
  name (their logins are ID tokens issued to that client by that issuer).
*/}}
{{- define "broker.checkConfig" -}}
{{- $c := .Values.config -}}
{{- $f := get .Values "configFile" | default dict -}}
{{- range list "databaseURL" "databasePassword" "appCertificate" "auditKey" "auditPreviousKeys" "consoleClientSecret" "logSigningKey" "agoraNcsSecret" "agoraCustomerSecret" -}}
{{- if hasKey $f . -}}
{{- fail (printf "configFile.%s: a secret never goes in configFile (the chart renders it into a ConfigMap); name its existing Secret in secrets.%s" . .) -}}
{{- end -}}
{{- end -}}
{{- $issuers := get $f "issuers" -}}
{{- if $issuers -}}
{{- range splitList " " (include "broker.perIssuerSettings" .) -}}
{{- $value := get $c . -}}
{{- if and (not (kindIs "invalid" $value)) (ne (toString $value) "") -}}
{{- fail (printf "config.%s must be empty when configFile.issuers is set: the broker takes it per issuer from the list" .) -}}
{{- end -}}
{{- if hasKey $f . -}}
{{- fail (printf "configFile.%s must be left out when configFile.issuers is set: the broker takes it per issuer from the list" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $login := list (list "consoleClientId" "console") (list "cliClientId" "CLI") -}}
{{- $key := index $login 0 -}}
{{- $who := index $login 1 -}}
{{- $id := get $c $key | toString | trim -}}
{{- if $id -}}
{{- if and (eq $key "consoleClientId") (not (or (get $c "consoleRedirectURL" | toString | trim) (get $f "consoleRedirectURL" | toString | trim))) -}}
{{- fail "config.consoleRedirectURL is required when config.consoleClientId is set" -}}
{{- end -}}
{{- if $issuers -}}
{{- $default := dict -}}
{{- $found := false -}}
{{- range $issuers -}}
{{- if and (kindIs "map" .) (not (get . "name" | toString | trim)) -}}
{{- $default = . -}}
{{- $found = true -}}
{{- end -}}
{{- end -}}
{{- if not $found -}}
{{- fail (printf "config.%s is set, but no entry of configFile.issuers is the default issuer (the one without a name), which %s logins use" $key $who) -}}
{{- end -}}
{{- $listed := get $default "audiences" -}}
{{- $audience := list -}}
{{- if kindIs "slice" $listed -}}
{{- range $listed -}}
{{- $audience = append $audience (toString . | trim) -}}
{{- end -}}
{{- else -}}
{{- range splitList "," ($listed | toString) -}}
{{- if trim . -}}
{{- $audience = append $audience (trim .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not (has $id $audience) -}}
{{- fail (printf "the audiences of configFile.issuers' default issuer (the one without a name) must include config.%s (%s logins are ID tokens issued to that client): add %q to %v" $key $who $id $audience) -}}
{{- end -}}
{{- else -}}
{{- $audience := list -}}
{{- range splitList "," (get $c "oidcAudience" | toString) -}}
{{- if trim . -}}
{{- $audience = append $audience (trim .) -}}
{{- end -}}
{{- end -}}
{{- if not (has $id $audience) -}}
{{- fail (printf "config.oidcAudience must include config.%s (%s logins are ID tokens issued to that client): add %q to %q" $key $who $id (get $c "oidcAudience" | toString)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}
