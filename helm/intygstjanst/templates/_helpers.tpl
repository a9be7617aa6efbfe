{{/* Name of the chart, or nameOverride. */}}
{{- define "intygstjanst.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<name>, or the release name if it already holds the name. */}}
{{- define "intygstjanst.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "intygstjanst.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: the pods of this release (server and migration alike). */}}
{{- define "intygstjanst.selectorLabels" -}}
app.kubernetes.io/name: {{ include "intygstjanst.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "intygstjanst.labels" -}}
helm.sh/chart: {{ include "intygstjanst.chart" . }}
{{ include "intygstjanst.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: intygstjanst
{{- end }}

{{- define "intygstjanst.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Whether a monitoring.coreos.com/v1 object is rendered: the value "auto" (the default) renders it when
the cluster serves the API (the Prometheus Operator's CRDs); true/"true" always; false/"false" never.
Usage: include "intygstjanst.monitoringEnabled" (list . .Values.monitoring.serviceMonitor.enabled)
Prints "true" or nothing.
*/}}
{{- define "intygstjanst.monitoringEnabled" -}}
{{- $root := index . 0 }}
{{- $setting := index . 1 | toString | lower }}
{{- if eq $setting "true" }}true
{{- else if eq $setting "false" }}
{{- else if eq $setting "auto" }}
{{- if $root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- else }}
{{- fail (printf "monitoring: enabled must be auto, true or false, not %q" $setting) }}
{{- end }}
{{- end }}

{{/*
The settings of the service, as name: value (ConfigMap data, and inline env of the migration Job).
Never a secret: config.extra may not name the settings the chart sets, the database URL, or the
files mounted from Secrets (a ConfigMap is readable by more people than a Secret, and a second
definition of a name would silently shadow the first).
*/}}
{{- define "intygstjanst.settings" -}}
{{- $reserved := list "INTYG_PROFILE" "INTYG_LOG_LEVEL" "INTYG_TIMEZONE" "INTYG_DB_POOL_SIZE" "INTYG_PORTAL_ISSUER" "INTYG_PORTAL_AUDIENCE" "INTYG_PUBLIC_BASE_URL" "INTYG_TRUSTED_PROXIES" "INTYG_CLIENT_CERT_HEADER" "INTYG_METRICS_PORT" "INTYG_DATABASE_URL" "INTYG_PORTAL_JWKS_FILE" "INTYG_TLS_CLIENT_CA_FILE" "INTYG_PERMISSIONS_FILE" "INTYG_TLS_CERT_FILE" "INTYG_TLS_KEY_FILE" "INTYG_KEYS_FILE" "INTYG_AUDIT_SIGNING_KEY_FILE" "INTYG_BUSINESS_RULES_DIR" -}}
INTYG_PROFILE: {{ .Values.config.profile | quote }}
INTYG_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
INTYG_TIMEZONE: {{ .Values.config.timezone | quote }}
INTYG_DB_POOL_SIZE: {{ .Values.config.dbPoolSize | toString | quote }}
INTYG_PORTAL_ISSUER: {{ .Values.config.portalIssuer | quote }}
INTYG_PORTAL_AUDIENCE: {{ .Values.config.portalAudience | quote }}
{{- with .Values.config.publicBaseUrl }}
INTYG_PUBLIC_BASE_URL: {{ . | quote }}
{{- end }}
{{- if eq .Values.callers.mode "ingress" }}
INTYG_TRUSTED_PROXIES: {{ join "," .Values.callers.ingress.trustedProxies | quote }}
INTYG_CLIENT_CERT_HEADER: {{ .Values.callers.ingress.clientCertHeader | quote }}
{{- end }}
{{- range $name, $value := .Values.config.extra }}
{{- if not (hasPrefix "INTYG_" $name) }}
{{- fail (printf "config.extra: %q is not an INTYG_ setting" $name) }}
{{- end }}
{{- if has $name $reserved }}
{{- fail (printf "config.extra: %s is set by the chart (its own value, or a file mounted from a Secret), not here" $name) }}
{{- end }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Name of the container and Service port: https when the service terminates TLS itself. */}}
{{- define "intygstjanst.portName" -}}
{{- if eq .Values.callers.mode "direct" }}https{{ else }}http{{ end }}
{{- end }}

{{/*
The files the server reads from operators' Secrets, as YAML: volume name -> {secretName, mountPath,
files: [{key, env}]}. Each is mounted read-only in its own directory under /etc/intygstjanst/ and the
service is pointed at it by an INTYG_*_FILE variable.
*/}}
{{- define "intygstjanst.secretFiles" -}}
{{- $c := .Values.callers }}
client-ca:
  secretName: {{ $c.clientCa.existingSecret | quote }}
  mountPath: {{ $c.clientCa.mountPath | quote }}
  files:
    - key: {{ $c.clientCa.key | quote }}
      env: INTYG_TLS_CLIENT_CA_FILE
permissions:
  secretName: {{ $c.permissions.existingSecret | quote }}
  mountPath: {{ $c.permissions.mountPath | quote }}
  files:
    - key: {{ $c.permissions.key | quote }}
      env: INTYG_PERMISSIONS_FILE
{{- include "intygstjanst.dataKeysFile" . | nindent 0 }}
audit-signing-key:
  secretName: {{ .Values.audit.signingKey.existingSecret | quote }}
  mountPath: {{ .Values.audit.signingKey.mountPath | quote }}
  files:
    - key: {{ .Values.audit.signingKey.key | quote }}
      env: INTYG_AUDIT_SIGNING_KEY_FILE
{{- if eq $c.mode "direct" }}
server-tls:
  secretName: {{ $c.direct.tlsSecret | quote }}
  mountPath: {{ $c.direct.mountPath | quote }}
  files:
    - key: tls.crt
      env: INTYG_TLS_CERT_FILE
    - key: tls.key
      env: INTYG_TLS_KEY_FILE
{{- end }}
{{- end }}

{{/* The data-at-rest keyring, which the server and the migration Job both read. */}}
{{- define "intygstjanst.dataKeysFile" -}}
data-keys:
  secretName: {{ .Values.dataKeys.existingSecret | quote }}
  mountPath: {{ .Values.dataKeys.mountPath | quote }}
  files:
    - key: {{ .Values.dataKeys.key | quote }}
      env: INTYG_KEYS_FILE
{{- end }}

{{/* env entries pointing the service at the files of a secretFiles map (given as the context). */}}
{{- define "intygstjanst.secretFilesEnv" -}}
{{- range $volume, $f := . }}
{{- range $f.files }}
- name: {{ .env }}
  value: {{ printf "%s/%s" (trimSuffix "/" $f.mountPath) .key | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* volumeMounts of a secretFiles map: read-only, one directory each. */}}
{{- define "intygstjanst.secretFilesMounts" -}}
{{- range $volume, $f := . }}
- name: {{ $volume }}
  mountPath: {{ $f.mountPath | quote }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
volumes of a secretFiles map. Mode 0400 (decimal 256, so that no YAML reader takes it for decimal 400):
the files belong to root, and kubelet adds group read for podSecurityContext.fsGroup, the service's
group (checked in intygstjanst.validate); nobody else in the pod reads them.
*/}}
{{- define "intygstjanst.secretFilesVolumes" -}}
{{- range $volume, $f := . }}
- name: {{ $volume }}
  secret:
    secretName: {{ $f.secretName | quote }}
    defaultMode: 256
    items:
      {{- range $f.files }}
      - key: {{ .key | quote }}
        path: {{ .key | quote }}
      {{- end }}
{{- end }}
{{- end }}

{{/*
What the chart refuses to render, with the reason: what the service would refuse to start without
(issue 5: a non-loopback bind needs the client CA bundle, the permission table and TLS or a trusted
proxy; the production profile also needs the portal's keys), and what would fail later in a less
readable way. Included by the Deployment, which every render has.
*/}}
{{- define "intygstjanst.validate" -}}
{{- $c := .Values.callers }}
{{- if eq (int .Values.metricsPort) (int .Values.containerPort) }}
{{- fail "metricsPort must differ from containerPort: the metrics have a port of their own, which only Prometheus may reach" }}
{{- end }}
{{- if not (has .Values.config.profile (list "production" "development")) }}
{{- fail (printf "config.profile must be production or development, not %q" (toString .Values.config.profile)) }}
{{- end }}
{{- if not (has $c.mode (list "ingress" "direct")) }}
{{- fail (printf "callers.mode must be ingress or direct, not %q" (toString $c.mode)) }}
{{- end }}
{{- if not $c.clientCa.existingSecret }}
{{- fail "callers.clientCa.existingSecret: name the Secret with the CA bundle of the callers' client certificates; the service refuses to serve SOAP without it" }}
{{- end }}
{{- if not $c.permissions.existingSecret }}
{{- fail "callers.permissions.existingSecret: name the Secret with the permission table; the service refuses to serve SOAP without it" }}
{{- end }}
{{- if not .Values.dataKeys.existingSecret }}
{{- fail "dataKeys.existingSecret: name the Secret with the data-at-rest keyring; a key generated in the pod would die with it, and the data with it" }}
{{- end }}
{{- if not .Values.audit.signingKey.existingSecret }}
{{- fail "audit.signingKey.existingSecret: name the Secret with the audit log's Ed25519 signing key; a key generated in the pod would leave the audit chain unverifiable" }}
{{- end }}
{{- if and (eq .Values.config.profile "production") (not (or .Values.portalJwks.existingSecret .Values.portalJwks.existingConfigMap)) }}
{{- fail "portalJwks: the production profile refuses to start without the citizen portal's keys; set portalJwks.existingSecret or existingConfigMap" }}
{{- end }}
{{- if and (eq .Values.config.profile "production") (not .Values.businessRules.existingConfigMap) }}
{{- fail "businessRules.existingConfigMap: the production profile refuses to start without the certificate types' business rules; create the ConfigMap of the national Schematron rule set (helm/README.md)" }}
{{- end }}
{{- if and (eq .Values.config.profile "production") (not .Values.broker.existingSecret) }}
{{- fail "broker.existingSecret: the production profile refuses to start without the message broker; name the Secret that holds its URL (helm/README.md)" }}
{{- end }}
{{- if eq $c.mode "ingress" }}
{{- if not $c.ingress.trustedProxies }}
{{- fail "callers.ingress.trustedProxies: list the ingress controller pods' IPs or CIDRs; in ingress mode the service honours the client-certificate header only from them" }}
{{- end }}
{{- range $c.ingress.trustedProxies }}
{{- if not (regexMatch "^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$" (toString .)) }}
{{- fail (printf "callers.ingress.trustedProxies: %q is not an IP address or CIDR" (toString .)) }}
{{- end }}
{{- if has (toString .) (list "0.0.0.0/0" "::/0") }}
{{- fail (printf "callers.ingress.trustedProxies: %s trusts every peer, so any caller could forge the client-certificate header" (toString .)) }}
{{- end }}
{{- end }}
{{- if not $c.ingress.clientCertHeader }}
{{- fail "callers.ingress.clientCertHeader: name the header carrying the verified certificate (ingress-nginx: ssl-client-cert)" }}
{{- end }}
{{- if not (has (toString $c.ingress.verifyClient) (list "on" "optional")) }}
{{- fail (printf "callers.ingress.verifyClient must be \"on\" or \"optional\", not %q: the Ingress must verify the certificates it forwards" (toString $c.ingress.verifyClient)) }}
{{- end }}
{{- if .Values.ingress.enabled }}
{{- if not .Values.ingress.tls }}
{{- fail "ingress.tls: in ingress mode the Ingress terminates mutual TLS, so it needs a TLS host" }}
{{- end }}
{{- if ne $c.clientCa.key "ca.crt" }}
{{- fail "callers.clientCa.key must be ca.crt in ingress mode: ingress-nginx's auth-tls-secret reads the CA bundle from that key" }}
{{- end }}
{{- end }}
{{- else }}
{{- if not $c.direct.tlsSecret }}
{{- fail "callers.direct.tlsSecret: in direct mode the service terminates TLS itself; name the kubernetes.io/tls Secret with its certificate and key" }}
{{- end }}
{{- if and .Values.ingress.enabled .Values.ingress.tls }}
{{- fail "ingress.tls: in direct mode the Ingress passes TLS through to the service (ssl-passthrough), so ingress.tls would never be used; leave it empty" }}
{{- end }}
{{- end }}
{{- range $name, $_ := .Values.ingress.annotations }}
{{- if or (hasPrefix "nginx.ingress.kubernetes.io/auth-tls-" $name) (eq $name "nginx.ingress.kubernetes.io/ssl-passthrough") }}
{{- fail (printf "ingress.annotations: %s is set by the chart from callers, not here" $name) }}
{{- end }}
{{- end }}
{{- if not .Values.podSecurityContext.fsGroup }}
{{- fail "podSecurityContext.fsGroup: the Secret files are mode 0400 owned by root; the service reads them through the fsGroup's group read" }}
{{- end }}
{{- $paths := list }}
{{- if or .Values.portalJwks.existingSecret .Values.portalJwks.existingConfigMap }}
{{- $paths = append $paths (trimSuffix "/" .Values.portalJwks.mountPath) }}
{{- end }}
{{- range $volume, $f := (include "intygstjanst.secretFiles" . | fromYaml) }}
{{- if has (trimSuffix "/" $f.mountPath) $paths }}
{{- fail (printf "%s: mount path %s is used twice; every Secret gets its own directory" $volume $f.mountPath) }}
{{- end }}
{{- $paths = append $paths (trimSuffix "/" $f.mountPath) }}
{{- end }}
{{- end }}

{{/* INTYG_DATABASE_URL from the Secret named in values.database. */}}
{{- define "intygstjanst.databaseEnv" -}}
{{- if not .Values.database.existingSecret }}
{{- fail "database.existingSecret: name the Secret that holds the PostgreSQL URL (see helm/README.md)" }}
{{- end }}
- name: INTYG_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret | quote }}
      key: {{ .Values.database.secretKey | quote }}
{{- end }}

{{/* The broker's URL from its Secret (the server only: the migration Job publishes nothing). */}}
{{- define "intygstjanst.brokerEnv" -}}
{{- if .Values.broker.existingSecret }}
- name: INTYG_BROKER_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.broker.existingSecret | quote }}
      key: {{ .Values.broker.secretKey | quote }}
{{- end }}
{{- end }}

{{/* Pod-level fields shared by the Deployment and the migration Job. */}}
{{- define "intygstjanst.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .Values.serviceAccount.name }}
serviceAccountName: {{ .Values.serviceAccount.name | quote }}
{{- end }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
