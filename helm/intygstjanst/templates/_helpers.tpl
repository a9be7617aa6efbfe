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

{{/* The settings of the service, as name: value (ConfigMap data, and inline env of the migration Job). */}}
{{- define "intygstjanst.settings" -}}
INTYG_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
INTYG_TIMEZONE: {{ .Values.config.timezone | quote }}
INTYG_DB_POOL_SIZE: {{ .Values.config.dbPoolSize | toString | quote }}
INTYG_PORTAL_ISSUER: {{ .Values.config.portalIssuer | quote }}
INTYG_PORTAL_AUDIENCE: {{ .Values.config.portalAudience | quote }}
{{- range $name, $value := .Values.config.extra }}
{{- if not (hasPrefix "INTYG_" $name) }}
{{- fail (printf "config.extra: %q is not an INTYG_ setting" $name) }}
{{- end }}
{{ $name }}: {{ $value | toString | quote }}
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

{{/* Whether the service terminates TLS itself (callers.serverTls): prints "true" or nothing. */}}
{{- define "intygstjanst.serverTls" -}}
{{- if .Values.callers.serverTls.existingSecret }}true{{ end }}
{{- end }}

{{/* The caller settings (issue 5): the CA bundle, the permission table, and TLS or trusted proxies. */}}
{{- define "intygstjanst.callersEnv" -}}
{{- $c := .Values.callers }}
{{- if not $c.clientCa.existingSecret }}
{{- fail "callers.clientCa.existingSecret: name the Secret with the CA bundle of client certificates (see helm/README.md)" }}
{{- end }}
{{- if not $c.permissions.existingConfigMap }}
{{- fail "callers.permissions.existingConfigMap: name the ConfigMap with the permission table (see helm/README.md)" }}
{{- end }}
{{- if and (not $c.serverTls.existingSecret) (not $c.trustedProxies) }}
{{- fail "callers: set serverTls.existingSecret (the service terminates TLS) or trustedProxies (an ingress does and forwards the client certificate)" }}
{{- end }}
{{- $dir := trimSuffix "/" $c.mountPath }}
- name: INTYG_TLS_CLIENT_CA_FILE
  value: {{ printf "%s/client-ca.pem" $dir | quote }}
- name: INTYG_PERMISSIONS_FILE
  value: {{ printf "%s/permissions.json" $dir | quote }}
{{- if $c.serverTls.existingSecret }}
- name: INTYG_TLS_CERT_FILE
  value: {{ printf "%s/tls.crt" $dir | quote }}
- name: INTYG_TLS_KEY_FILE
  value: {{ printf "%s/tls.key" $dir | quote }}
{{- end }}
{{- with $c.trustedProxies }}
- name: INTYG_TRUSTED_PROXIES
  value: {{ join "," . | quote }}
- name: INTYG_CLIENT_CERT_HEADER
  value: {{ $c.clientCertHeader | quote }}
{{- end }}
{{- end }}

{{/* One read-only volume with the caller files under the names callersEnv points at. */}}
{{- define "intygstjanst.callersVolume" -}}
{{- $c := .Values.callers }}
- name: callers
  projected:
    # Readable by the service's group (fsGroup) only: the directory holds the server's private key.
    defaultMode: 0440
    sources:
      - secret:
          name: {{ $c.clientCa.existingSecret | quote }}
          items:
            - key: {{ $c.clientCa.key | quote }}
              path: client-ca.pem
      - configMap:
          name: {{ $c.permissions.existingConfigMap | quote }}
          items:
            - key: {{ $c.permissions.key | quote }}
              path: permissions.json
      {{- if $c.serverTls.existingSecret }}
      - secret:
          name: {{ $c.serverTls.existingSecret | quote }}
          items:
            - key: tls.crt
              path: tls.crt
            - key: tls.key
              path: tls.key
      {{- end }}
{{- end }}
