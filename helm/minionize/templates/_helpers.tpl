{{/*
Expand the name of the chart.
*/}}
{{- define "minionize.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
Truncated at 63 characters because some Kubernetes name fields are limited to
this (DNS naming spec). If the release name contains the chart name, it is
used as the full name.
*/}}
{{- define "minionize.fullname" -}}
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

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "minionize.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels. k8s/*.yaml carry the same app.kubernetes.io/* keys.
*/}}
{{- define "minionize.labels" -}}
helm.sh/chart: {{ include "minionize.chart" . }}
{{ include "minionize.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/component: minion
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of the pod template: the common ones without the chart's and the
app's versions, so that a chart bump alone changes no pod template (a
Deployment would roll its busy minions, a ScaledJob would restart its Jobs).
*/}}
{{- define "minionize.podLabels" -}}
{{ include "minionize.selectorLabels" . }}
app.kubernetes.io/component: minion
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "minionize.selectorLabels" -}}
app.kubernetes.io/name: {{ include "minionize.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "minionize.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "minionize.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The label matchers of the minions' series in PromQL, for the alert rules and
the dashboard: those a ServiceMonitor of this release gives them, unless
metrics.promqlSelector says otherwise.
*/}}
{{- define "minionize.promqlSelector" -}}
{{- default (printf "job=%q,namespace=%q" (include "minionize.metricsServiceName" .) .Release.Namespace) .Values.metrics.promqlSelector }}
{{- end }}

{{/*
The headless Service listing the minions for the ServiceMonitor.
*/}}
{{- define "minionize.metricsServiceName" -}}
{{- printf "%s-metrics" (include "minionize.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/*
The image to use
*/}}
{{- define "minionize.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag)) }}
{{- end }}

{{/*
True (non-empty) when a value is set: neither null nor "".
*/}}
{{- define "minionize.isSet" -}}
{{- if and (not (kindIs "invalid" .)) (ne (toString .) "") }}true{{ end }}
{{- end }}

{{/*
One `- name: NAME / value: "VALUE"` entry of env, only when the value is set,
so that minionize's own default applies otherwise.
Usage: include "minionize.envVar" (list "NAME" .Values.some.value)
*/}}
{{- define "minionize.envVar" -}}
{{- $value := index . 1 -}}
{{- if include "minionize.isSet" $value }}
- name: {{ index . 0 }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}

{{/*
One env entry read from a key of an existing Secret.
Usage: include "minionize.envSecret" (list "NAME" .Values.some.secretRef)
*/}}
{{- define "minionize.envSecret" -}}
{{- $ref := index . 1 -}}
- name: {{ index . 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.existingSecret }}
      key: {{ $ref.key }}
{{- end }}

{{/*
Where the json reporter writes: the reports claim, else the execo claim (both
shared, so minion-status sees the fleet), else the pod's scratch volume.
*/}}
{{- define "minionize.reportDirectory" -}}
{{- $json := .Values.reporter.json -}}
{{- if $json.existingClaim }}
{{- printf "%s/%s" (trimSuffix "/" $json.mountPath) $json.directory }}
{{- else if and (eq .Values.engine "execo") .Values.execo.existingClaim }}
{{- printf "%s/%s" (trimSuffix "/" .Values.execo.mountPath) $json.directory }}
{{- else }}
{{- printf "%s/%s" (trimSuffix "/" .Values.scratch.mountPath) $json.directory }}
{{- end }}
{{- end }}

{{/*
True (non-empty) when the json reports land on a volume shared by the fleet.
*/}}
{{- define "minionize.reportsShared" -}}
{{- if eq .Values.reporter.type "json" }}
{{- if or .Values.reporter.json.existingClaim (and (eq .Values.engine "execo") .Values.execo.existingClaim) }}true{{ end }}
{{- end }}
{{- end }}

{{/*
The grace period Kubernetes gives a pod between SIGTERM and SIGKILL: longer
than the minion's own, so that it can give its running parameters back.
*/}}
{{- define "minionize.terminationGracePeriodSeconds" -}}
{{- if include "minionize.isSet" .Values.terminationGracePeriodSeconds }}
{{- .Values.terminationGracePeriodSeconds | int }}
{{- else }}
{{- add (.Values.minion.gracePeriod | int) 10 }}
{{- end }}
{{- end }}
