{{/*
Names are cut at 45 characters: the CronJob's name must stay within 52 (the controller adds
an 11-character suffix to its Jobs), and the manual run of NOTES.txt,
"<name>-manual-<10 digits>", must stay within the 63 of a Job's pod label.
*/}}
{{- define "backup-sync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 45 | trimSuffix "-" }}
{{- end }}

{{- define "backup-sync.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "backup-sync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "backup-sync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "backup-sync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "backup-sync.labels" -}}
helm.sh/chart: {{ include "backup-sync.chart" . }}
{{ include "backup-sync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: backup-sync
app.kubernetes.io/part-of: velero
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Velero namespace: where the BackupStorageLocations, Backups and Secrets live. */}}
{{- define "backup-sync.veleroNamespace" -}}
{{- default .Release.Namespace .Values.namespace }}
{{- end }}

{{- define "backup-sync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "backup-sync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when the worker creates and deletes CSI snapshot objects (--features EnableCSI). */}}
{{- define "backup-sync.csi" -}}
{{- if has "EnableCSI" .Values.features }}true{{ end }}
{{- end }}

{{/* Cluster-scoped names carry the release namespace: two releases of the same name differ. */}}
{{- define "backup-sync.clusterName" -}}
{{- printf "%s-%s" (include "backup-sync.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "backup-sync.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}
