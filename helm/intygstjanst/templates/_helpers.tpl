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

{{/*
The keys of encryption at rest, for the service and the migration Job: the env entry, the mount and
the volume (each rendered only where encryptionKeys.existingSecret is set).
*/}}
{{- define "intygstjanst.keysEnv" -}}
{{- with .Values.encryptionKeys }}
{{- if .existingSecret }}
- name: INTYG_KEYS_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" .mountPath) .key | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "intygstjanst.keysMount" -}}
{{- with .Values.encryptionKeys }}
{{- if .existingSecret }}
- name: encryption-keys
  mountPath: {{ .mountPath }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{- define "intygstjanst.keysVolume" -}}
{{- with .Values.encryptionKeys }}
{{- if .existingSecret }}
- name: encryption-keys
  secret:
    secretName: {{ .existingSecret }}
    items:
      - key: {{ .key }}
        path: {{ .key }}
{{- end }}
{{- end }}
{{- end }}
