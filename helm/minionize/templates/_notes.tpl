{{/*
What was deployed and how to watch it; NOTES.txt prints it after an install.
A define, so that the tests can render it without a cluster.
*/}}
{{- define "minionize.notes" -}}
{{- $fullname := include "minionize.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $selector := printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s" (include "minionize.name" .) .Release.Name }}
{{- $v := .Values -}}
minionize {{ .Chart.AppVersion }}: a fleet of minions fed by the {{ $v.engine }} engine.

  Image:    {{ include "minionize.image" . }}
  Program:  {{ if $v.program }}{{ join " " $v.program }}{{ else }}the image's CMD{{ end }}
{{- if eq $v.engine "execo" }}
  Queue:    execo sweep {{ $v.execo.mountPath }}/{{ $v.execo.persistenceDir }} on the claim {{ $v.execo.existingClaim }}
{{- else if eq $v.engine "file" }}
  Queue:    the file {{ $v.file.path }}
{{- else if eq $v.engine "google" }}
  Queue:    Pub/Sub subscription {{ $v.google.subscription }} of project {{ $v.google.projectId }}
{{- else if eq $v.engine "pulsar" }}
  Queue:    Pulsar topic {{ $v.pulsar.topic }}, subscription {{ $v.pulsar.subscription }} at {{ $v.pulsar.connection }}
{{- else if eq $v.engine "redis" }}
  Queue:    Redis stream {{ $v.redis.stream }}{{ with $v.redis.group }}, group {{ . }}{{ end }}
{{- else if eq $v.engine "amqp" }}
  Queue:    AMQP queue {{ $v.amqp.queue }}
{{- end }}
{{- if eq $v.mode "deployment" }}
{{- if $v.keda.enabled }}
  Workload: Deployment {{ $fullname }}, scaled by the KEDA ScaledObject {{ $fullname }} ({{ $v.keda.minReplicaCount }} to {{ $v.keda.maxReplicaCount }} minions)
{{- else }}
  Workload: Deployment {{ $fullname }} with {{ $v.deployment.replicas }} minion(s)
{{- end }}
{{- else }}
{{- if $v.keda.enabled }}
  Workload: KEDA ScaledJob {{ $fullname }}: up to {{ $v.keda.maxReplicaCount }} Jobs of {{ $v.job.parallelism }} minion(s), started while the queue has a backlog
{{- else }}
  Workload: Job {{ $fullname }} with {{ $v.job.parallelism }} minion(s) in parallel, in batch mode; it completes when
            {{ include "minionize.jobEnd" . }}
{{- end }}
{{- end }}

Watch the minions:

  kubectl get pods --namespace {{ $ns }} -l {{ $selector }} --watch
  kubectl logs --namespace {{ $ns }} -l {{ $selector }} --prefix --follow --max-log-requests 20
{{- if eq $v.mode "job" }}
{{- if $v.keda.enabled }}
  kubectl get scaledjob/{{ $fullname }} --namespace {{ $ns }}
  kubectl get jobs --namespace {{ $ns }} -l scaledjob.keda.sh/name={{ $fullname }}
{{- else }}
  kubectl wait --namespace {{ $ns }} --for=condition=complete job/{{ $fullname }} --timeout=-1s

A Job runs once: to run it again, `helm uninstall {{ .Release.Name }}` then install
(an upgrade cannot change the pod template of an existing Job).
{{- end }}
{{- else if $v.keda.enabled }}
  kubectl get scaledobject/{{ $fullname }} hpa/keda-hpa-{{ $fullname }} --namespace {{ $ns }}
{{- end }}
{{- if include "minionize.reportsShared" . }}

The json reports of the whole fleet are in {{ include "minionize.reportDirectory" . }} (a shared volume):

  kubectl exec --namespace {{ $ns }} -it $(kubectl get pods --namespace {{ $ns }} -l {{ $selector }} --field-selector=status.phase=Running -o name | head -n 1) -- minion-status
{{- else if eq $v.reporter.type "json" }}

The json reports stay in each pod's scratch volume ({{ include "minionize.reportDirectory" . }}):
set reporter.json.existingClaim to a ReadWriteMany claim to see the whole fleet with minion-status.
{{- end }}
{{- if $v.metrics.enabled }}
{{- $port := $v.metrics.port }}

Each minion serves /metrics, /healthz and /readyz on its port {{ $port }} (named metrics).
{{- if $v.metrics.serviceMonitor.enabled }}
Prometheus Operator scrapes them through the ServiceMonitor {{ $fullname }}, which
selects the headless Service {{ include "minionize.metricsServiceName" . }}.
{{- else if $v.metrics.scrapeAnnotations }}
The pods carry the prometheus.io/scrape, /port and /path annotations.
{{- end }}
Look at one minion (port-forward runs until Ctrl-C: curl from another shell):

  kubectl port-forward --namespace {{ $ns }} $(kubectl get pods --namespace {{ $ns }} -l {{ $selector }} --field-selector=status.phase=Running -o name | head -n 1) {{ $port }}:{{ $port }}
  curl -s http://127.0.0.1:{{ $port }}/metrics | grep '^minion_'
  curl -s http://127.0.0.1:{{ $port }}/readyz
{{- end }}
{{- if and (eq $v.mode "deployment") (has $v.engine (list "execo" "file")) }}

Note: a minion exits 0 once its {{ ternary "execo sweep" "file" (eq $v.engine "execo") }} is done, and a Deployment
restarts it; mode=job runs it to completion instead.
{{- end }}
{{- end }}

{{/*
When a minion of the Job ends: once the queue is drained, or after an idle
time where the engine cannot tell (minionize's BATCH_IDLE_TIMEOUT: 120 s).
*/}}
{{- define "minionize.jobEnd" -}}
{{- $v := .Values -}}
{{- $idle := include "minionize.isSet" $v.minion.idleTimeout }}
{{- if has $v.engine (list "google" "pulsar") -}}
the minions have had no parameter for {{ $v.minion.idleTimeout | default 120 }}s ({{ $v.engine }} cannot tell that the queue is drained)
{{- else if $idle -}}
the queue is drained, or the minions have had no parameter for {{ $v.minion.idleTimeout }}s
{{- else -}}
the queue is drained
{{- end }}
{{- end }}
