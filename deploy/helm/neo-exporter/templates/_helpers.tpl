{{/* Names are the release name, or release-chart when the release name lacks the chart's. */}}
{{- define "neo-exporter.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "neo-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "neo-exporter.labels" -}}
{{ include "neo-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "neo-exporter.secretName" -}}
{{- .Values.existingSecret | default (include "neo-exporter.fullname" .) -}}
{{- end -}}

{{/* The environment variable an account's token is passed in: NEO_TOKEN_<index>. */}}
{{- define "neo-exporter.tokenEnv" -}}
{{- printf "NEO_TOKEN_%d" . -}}
{{- end -}}
