{{/*
Impossible combinations, refused before anything is rendered. Each message
names the value to change. values.schema.json already rejects unknown keys,
wrong types and enum values; these guards are what a schema cannot say (and
still hold with --skip-schema-validation).
*/}}
{{- define "minionize.validate" -}}
{{- $v := .Values -}}
{{- $engines := list "execo" "file" "google" "pulsar" "redis" "amqp" }}
{{- if not (has $v.engine $engines) }}
{{- fail (printf "engine %q is unknown: use one of %s" (toString $v.engine) (join ", " $engines)) }}
{{- end }}
{{- if not (has $v.mode (list "deployment" "job")) }}
{{- fail (printf "mode %q is unknown: use deployment or job" (toString $v.mode)) }}
{{- end }}
{{- include "minionize.validateEngine" . }}
{{- include "minionize.validateRuntime" . }}
{{- if $v.keda.enabled }}
{{- include "minionize.validateKeda" . }}
{{- end }}
{{- end }}

{{- define "minionize.validateEngine" -}}
{{- $v := .Values -}}
{{- if eq $v.engine "execo" }}
  {{- if not $v.execo.existingClaim }}
  {{- fail "engine execo needs execo.existingClaim: an existing ReadWriteMany PersistentVolumeClaim holding the sweep, shared by every minion" }}
  {{- end }}
{{- else if eq $v.engine "file" }}
  {{- if not $v.file.path }}
  {{- fail "engine file needs file.path (FILE_PATH): a file mounted with extraVolumes, one parameter per line" }}
  {{- end }}
  {{- $minions := ternary $v.job.parallelism $v.deployment.replicas (eq $v.mode "job") | int }}
  {{- if or (gt $minions 1) $v.keda.enabled }}
  {{- fail "engine file allows one minion only (every minion reads the whole file): set deployment.replicas / job.parallelism to 1 and keda.enabled to false" }}
  {{- end }}
{{- else if eq $v.engine "google" }}
  {{- if not $v.google.projectId }}
  {{- fail "engine google needs google.projectId (GOOGLE_PROJECT_ID)" }}
  {{- end }}
  {{- if not $v.google.topicId }}
  {{- fail "engine google needs google.topicId (GOOGLE_TOPIC_ID)" }}
  {{- end }}
  {{- if not $v.google.subscription }}
  {{- fail "engine google needs google.subscription (GOOGLE_SUBSCRIPTION)" }}
  {{- end }}
  {{- if not (or $v.google.credentials.existingSecret $v.google.workloadIdentity $v.google.emulatorHost) }}
  {{- fail "engine google needs google.credentials.existingSecret (a Secret holding a service-account JSON key), or google.workloadIdentity=true on GKE, or google.emulatorHost" }}
  {{- end }}
  {{- if and $v.google.credentials.existingSecret $v.google.workloadIdentity }}
  {{- fail "google.credentials.existingSecret and google.workloadIdentity are exclusive: choose one way to authenticate" }}
  {{- end }}
{{- else if eq $v.engine "pulsar" }}
  {{- if not $v.pulsar.topic }}
  {{- fail "engine pulsar needs pulsar.topic (PULSAR_TOPIC)" }}
  {{- end }}
{{- else if eq $v.engine "redis" }}
  {{- if not $v.redis.stream }}
  {{- fail "engine redis needs redis.stream (REDIS_STREAM)" }}
  {{- end }}
{{- else if eq $v.engine "amqp" }}
  {{- if not $v.amqp.queue }}
  {{- fail "engine amqp needs amqp.queue (AMQP_QUEUE)" }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "minionize.validateRuntime" -}}
{{- $v := .Values -}}
{{- $grace := $v.minion.gracePeriod | int }}
{{- if include "minionize.isSet" $v.terminationGracePeriodSeconds }}
  {{- if le ($v.terminationGracePeriodSeconds | int) $grace }}
  {{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than minion.gracePeriod (%d): Kubernetes would kill minions before they give their running parameters back" ($v.terminationGracePeriodSeconds | int) $grace) }}
  {{- end }}
{{- end }}
{{- $broker := has $v.engine (list "google" "pulsar" "redis" "amqp") }}
{{- $idle := include "minionize.isSet" $v.minion.idleTimeout }}
{{- if and (eq $v.mode "job") $broker (not $idle) }}
  {{- fail (printf "mode job with engine %s needs minion.idleTimeout (MINION_IDLE_TIMEOUT): a broker's queue never reports drained, so the minions would never exit and the Job never complete" $v.engine) }}
{{- end }}
{{- if and (eq $v.mode "deployment") $idle }}
  {{- fail "minion.idleTimeout is for mode job: a Deployment restarts the minions that exit when idle" }}
{{- end }}
{{- if and $v.reporter.json.existingClaim (ne $v.reporter.type "json") }}
  {{- fail "reporter.json.existingClaim is set but reporter.type is not json: set reporter.type=json" }}
{{- end }}
{{- if and $v.metrics.serviceMonitor.enabled (not $v.metrics.enabled) }}
  {{- fail "metrics.serviceMonitor.enabled needs metrics.enabled=true: without MINION_METRICS_PORT the minions serve no /metrics to scrape" }}
{{- end }}
{{- end }}

{{- define "minionize.validateKeda" -}}
{{- $v := .Values -}}
{{- if has $v.engine (list "execo" "file") }}
  {{- fail (printf "keda.enabled with engine %s: KEDA has no queue-depth metric for it; use a broker engine (google, pulsar, redis, amqp) or disable keda" $v.engine) }}
{{- end }}
{{- if and (eq $v.engine "pulsar") (not $v.keda.pulsar.adminURL) }}
  {{- fail "keda.enabled with engine pulsar needs keda.pulsar.adminURL: the pulsar trigger reads the backlog from the admin (HTTP) API" }}
{{- end }}
{{- if and (eq $v.engine "redis") (not (include "minionize.kedaRedisAddress" .)) }}
  {{- fail "keda.enabled with engine redis needs keda.redis.address (host:port), or a plain redis.url to take it from: the redis-streams trigger cannot read redis.urlSecret" }}
{{- end }}
{{- if and (eq $v.engine "amqp") (not (or $v.amqp.url $v.amqp.urlSecret.existingSecret)) }}
  {{- fail "keda.enabled with engine amqp needs amqp.url or amqp.urlSecret: the rabbitmq trigger must know the broker" }}
{{- end }}
{{- if and (eq $v.mode "deployment") (gt ($v.keda.minReplicaCount | int) ($v.keda.maxReplicaCount | int)) }}
  {{- fail (printf "keda.minReplicaCount (%d) is greater than keda.maxReplicaCount (%d)" ($v.keda.minReplicaCount | int) ($v.keda.maxReplicaCount | int)) }}
{{- end }}
{{- end }}
