{{/* Names, labels and the pieces the Deployment and the migration Job share. */}}

{{- define "rendezvous.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource name prefix: the release name, with the chart's name unless it contains it. */}}
{{- define "rendezvous.fullname" -}}
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

{{- define "rendezvous.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rendezvous.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rendezvous.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rendezvous.labels" -}}
helm.sh/chart: {{ include "rendezvous.chart" . }}
{{ include "rendezvous.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rendezvous
{{- end }}

{{- define "rendezvous.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Where the chart mounts files in the container. */}}
{{- define "rendezvous.configPath" -}}/etc/rendezvous/rendezvous.toml{{- end }}
{{- define "rendezvous.dataDir" -}}/var/lib/rendezvous{{- end }}

{{/* Whether a migration Job runs (it needs the shared PostgreSQL database). */}}
{{- define "rendezvous.migrationJob" -}}
{{- if and .Values.migrationJob.enabled .Values.database.existingSecret }}true{{- end }}
{{- end }}

{{/*
The database settings from the Secret, as environment variables (the Deployment and the
migration Job alike).
*/}}
{{- define "rendezvous.databaseEnv" -}}
{{- with .Values.database }}
{{- if .existingSecret }}
{{- if .mountAsFile }}
- name: RENDEZVOUS__DATABASE__URL_FILE
  value: /etc/rendezvous/database/url
{{- else }}
- name: RENDEZVOUS__DATABASE__URL
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .urlKey }}
{{- end }}
{{- if .passwordKey }}
- name: RENDEZVOUS__DATABASE__PASSWORD_FILE
  value: /etc/rendezvous/database/password
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret volumes both the Deployment and the migration Job mount. */}}
{{- define "rendezvous.secretVolumes" -}}
{{- with .Values.database }}
{{- if and .existingSecret (or .mountAsFile .passwordKey) }}
- name: database
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
    items:
      {{- if .mountAsFile }}
      - key: {{ .urlKey }}
        path: url
      {{- end }}
      {{- if .passwordKey }}
      - key: {{ .passwordKey }}
        path: password
      {{- end }}
{{- end }}
{{- end }}
{{- if .Values.auth.existingSecret }}
- name: auth
  secret:
    secretName: {{ .Values.auth.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- range .Values.secretMounts }}
- name: secret-{{ .name }}
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "rendezvous.secretVolumeMounts" -}}
{{- with .Values.database }}
{{- if and .existingSecret (or .mountAsFile .passwordKey) }}
- name: database
  mountPath: /etc/rendezvous/database
  readOnly: true
{{- end }}
{{- end }}
{{- if .Values.auth.existingSecret }}
- name: auth
  mountPath: /etc/rendezvous/auth
  readOnly: true
{{- end }}
{{- range .Values.secretMounts }}
- name: secret-{{ .name }}
  mountPath: {{ .mountPath }}
  readOnly: true
{{- end }}
{{- end }}
