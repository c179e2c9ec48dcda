{{/*
Values that cannot make a working fleet, refused before anything is
rendered: impossible combinations, nothing to run, a broker address left at
a default that would be the pod itself. Each message names the value to
set. values.schema.json already rejects unknown keys, wrong types and enum
values; these guards are what a schema cannot say (and still hold with
--skip-schema-validation).
*/}}

{{/*
Refuse the values with a message. `fail` stops helm template and helm
install; helm lint turns a `fail` into an [INFO] line and goes on, so an
error of another kind (a template named after the message, which does not
exist) stops it here too: lint must not pass on values that cannot render.
Usage: include "minionize.refuse" "engine pulsar needs pulsar.connection"
*/}}
{{- define "minionize.refuse" -}}
{{- fail . }}
{{- include (printf "values refused: %s" .) nil }}
{{- end }}

{{- define "minionize.validate" -}}
{{- $v := .Values -}}
{{- $engines := list "execo" "file" "google" "pulsar" "redis" "amqp" "postgres" "nats" }}
{{- if not (has $v.engine $engines) }}
{{- include "minionize.refuse" (printf "engine %q is unknown: use one of %s" (toString $v.engine) (join ", " $engines)) }}
{{- end }}
{{- if not (has $v.mode (list "deployment" "job")) }}
{{- include "minionize.refuse" (printf "mode %q is unknown: use deployment or job" (toString $v.mode)) }}
{{- end }}
{{- include "minionize.validateEngine" . }}
{{- include "minionize.validateProgram" . }}
{{- include "minionize.validateRuntime" . }}
{{- if $v.keda.enabled }}
{{- include "minionize.validateKeda" . }}
{{- end }}
{{- end }}

{{/*
The variables of extraEnv by name: a value there stands for the chart's own.
*/}}
{{- define "minionize.extraEnvNames" -}}
{{- range .Values.extraEnv }}{{ .name }} {{ end }}
{{- end }}

{{- define "minionize.validateEngine" -}}
{{- $v := .Values -}}
{{- $extra := splitList " " (include "minionize.extraEnvNames" .) }}
{{- if eq $v.engine "execo" }}
  {{- if not $v.execo.existingClaim }}
  {{- include "minionize.refuse" "engine execo needs execo.existingClaim: an existing ReadWriteMany PersistentVolumeClaim holding the sweep, shared by every minion" }}
  {{- end }}
{{- else if eq $v.engine "file" }}
  {{- if not $v.file.path }}
  {{- include "minionize.refuse" "engine file needs file.path (FILE_PATH): a file mounted with extraVolumes, one parameter per line" }}
  {{- end }}
  {{- $minions := ternary $v.job.parallelism $v.deployment.replicas (eq $v.mode "job") | int }}
  {{- if or (gt $minions 1) $v.keda.enabled }}
  {{- include "minionize.refuse" "engine file allows one minion only (every minion reads the whole file): set deployment.replicas / job.parallelism to 1 and keda.enabled to false" }}
  {{- end }}
{{- else if eq $v.engine "google" }}
  {{- if not $v.google.projectId }}
  {{- include "minionize.refuse" "engine google needs google.projectId (GOOGLE_PROJECT_ID)" }}
  {{- end }}
  {{- if not $v.google.topicId }}
  {{- include "minionize.refuse" "engine google needs google.topicId (GOOGLE_TOPIC_ID)" }}
  {{- end }}
  {{- if not $v.google.subscription }}
  {{- include "minionize.refuse" "engine google needs google.subscription (GOOGLE_SUBSCRIPTION)" }}
  {{- end }}
  {{- if not (or $v.google.credentials.existingSecret $v.google.workloadIdentity $v.google.emulatorHost) }}
  {{- include "minionize.refuse" "engine google needs google.credentials.existingSecret (a Secret holding a service-account JSON key), or google.workloadIdentity=true on GKE, or google.emulatorHost" }}
  {{- end }}
  {{- if and $v.google.credentials.existingSecret $v.google.workloadIdentity }}
  {{- include "minionize.refuse" "google.credentials.existingSecret and google.workloadIdentity are exclusive: choose one way to authenticate" }}
  {{- end }}
{{- else if eq $v.engine "pulsar" }}
  {{- if not (or $v.pulsar.connection (has "PULSAR_CONNECTION" $extra)) }}
  {{- include "minionize.refuse" "engine pulsar needs pulsar.connection (PULSAR_CONNECTION), the broker's service URL, e.g. pulsar://pulsar-broker:6650: the engine's default, localhost, would be the pod itself" }}
  {{- end }}
  {{- if not $v.pulsar.topic }}
  {{- include "minionize.refuse" "engine pulsar needs pulsar.topic (PULSAR_TOPIC)" }}
  {{- end }}
{{- else if eq $v.engine "redis" }}
  {{- if not (or $v.redis.url $v.redis.urlSecret.existingSecret (has "REDIS_URL" $extra)) }}
  {{- include "minionize.refuse" "engine redis needs redis.url (REDIS_URL), e.g. redis://redis:6379/0, or redis.urlSecret.existingSecret: the engine's default, localhost, would be the pod itself" }}
  {{- end }}
  {{- if not $v.redis.stream }}
  {{- include "minionize.refuse" "engine redis needs redis.stream (REDIS_STREAM)" }}
  {{- end }}
{{- else if eq $v.engine "amqp" }}
  {{- if not (or $v.amqp.url $v.amqp.urlSecret.existingSecret (has "AMQP_URL" $extra)) }}
  {{- include "minionize.refuse" "engine amqp needs amqp.url (AMQP_URL), e.g. amqp://rabbitmq:5672/%2F, or amqp.urlSecret.existingSecret: the engine's default, localhost, would be the pod itself" }}
  {{- end }}
  {{- if not $v.amqp.queue }}
  {{- include "minionize.refuse" "engine amqp needs amqp.queue (AMQP_QUEUE)" }}
  {{- end }}
{{- else if eq $v.engine "postgres" }}
  {{- if not (or $v.postgres.url $v.postgres.urlSecret.existingSecret (has "POSTGRES_URL" $extra) (has "DATABASE_URL" $extra)) }}
  {{- include "minionize.refuse" "engine postgres needs postgres.url (POSTGRES_URL), e.g. postgresql://minion@postgres:5432/sweeps, or postgres.urlSecret.existingSecret: the engine's default, localhost, would be the pod itself" }}
  {{- end }}
  {{- if regexMatch "^postgres(ql)?://([^/@]*@)?(localhost|127\\.[0-9.]+|\\[::1\\])(:[0-9]+)?(/|$)" (default "" $v.postgres.url) }}
  {{- if not $v.postgres.urlSecret.existingSecret }}
  {{- include "minionize.refuse" "postgres.url points at localhost, which in a pod is the pod itself: give the database's service name" }}
  {{- end }}
  {{- end }}
  {{- if not $v.postgres.table }}
  {{- include "minionize.refuse" "engine postgres needs postgres.table (POSTGRES_TABLE)" }}
  {{- end }}
{{- else if eq $v.engine "nats" }}
  {{- if not (or $v.nats.url $v.nats.urlSecret.existingSecret (has "NATS_URL" $extra)) }}
  {{- include "minionize.refuse" "engine nats needs nats.url (NATS_URL), e.g. nats://nats:4222, or nats.urlSecret.existingSecret: the engine's default, localhost, would be the pod itself" }}
  {{- end }}
  {{- if and (not $v.nats.urlSecret.existingSecret) (regexMatch "(^|[,/@])(localhost|127\\.[0-9.]+|\\[::1\\])(:[0-9]+)?(/|,|$)" (default "" $v.nats.url)) }}
  {{- include "minionize.refuse" "nats.url points at localhost, which in a pod is the pod itself: give the NATS server's service name" }}
  {{- end }}
  {{- if not $v.nats.stream }}
  {{- include "minionize.refuse" "engine nats needs nats.stream (NATS_STREAM)" }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
Something must run: the base image's CMD only prints the help and exits 0,
so a Deployment would restart it forever and a Job would complete at once.
*/}}
{{- define "minionize.validateProgram" -}}
{{- $repository := .Values.image.repository }}
{{- $base := or (eq $repository "minionize/base") (hasSuffix "/minionize/base" $repository) }}
{{- if and $base (not .Values.program) }}
  {{- include "minionize.refuse" (printf "nothing would run: the image %s only prints minionize's help. Set image.repository (and image.tag) to your image, built FROM minionize/base with your program as its CMD, or set program, e.g. --set-json 'program=[\"python3\",\"train.py\"]'" $repository) }}
{{- end }}
{{- end }}

{{- define "minionize.validateRuntime" -}}
{{- $v := .Values -}}
{{- $grace := $v.minion.gracePeriod | int }}
{{- if include "minionize.isSet" $v.terminationGracePeriodSeconds }}
  {{- if le ($v.terminationGracePeriodSeconds | int) $grace }}
  {{- include "minionize.refuse" (printf "terminationGracePeriodSeconds (%d) must be greater than minion.gracePeriod (%d): Kubernetes would kill minions before they give their running parameters back" ($v.terminationGracePeriodSeconds | int) $grace) }}
  {{- end }}
{{- end }}
{{- if eq $v.mode "deployment" }}
  {{- /* A Deployment's minions wait for work until stopped: one that exits is restarted. */}}
  {{- if include "minionize.isSet" $v.minion.idleTimeout }}
  {{- include "minionize.refuse" "minion.idleTimeout is for mode job: a Deployment's minions wait for work until they are stopped, and one that exits when idle is restarted" }}
  {{- end }}
  {{- $extra := splitList " " (include "minionize.extraEnvNames" .) }}
  {{- range list "MINION_BATCH" "MINION_IDLE_TIMEOUT" }}
  {{- if has . $extra }}
  {{- include "minionize.refuse" (printf "extraEnv sets %s, for minions that exit when the queue is drained or idle: remove it, or use mode=job (a Deployment's minions wait for work until they are stopped; one that exits is restarted)" .) }}
  {{- end }}
  {{- end }}
{{- end }}
{{- if and $v.reporter.json.existingClaim (ne $v.reporter.type "json") }}
  {{- include "minionize.refuse" "reporter.json.existingClaim is set but reporter.type is not json: set reporter.type=json" }}
{{- end }}
{{- if and $v.metrics.serviceMonitor.enabled (not $v.metrics.enabled) }}
  {{- include "minionize.refuse" "metrics.serviceMonitor.enabled needs metrics.enabled=true: without MINION_METRICS_PORT the minions serve no /metrics to scrape" }}
{{- end }}
{{- if and $v.metrics.prometheusRule.enabled (not $v.metrics.enabled) }}
  {{- include "minionize.refuse" "metrics.prometheusRule.enabled needs metrics.enabled=true: without MINION_METRICS_PORT the alerts have no series to read" }}
{{- end }}
{{- if and $v.metrics.grafanaDashboard.enabled (not $v.metrics.enabled) }}
  {{- include "minionize.refuse" "metrics.grafanaDashboard.enabled needs metrics.enabled=true: without MINION_METRICS_PORT the dashboard has no series to show" }}
{{- end }}
{{- end }}

{{- define "minionize.validateKeda" -}}
{{- $v := .Values -}}
{{- if has $v.engine (list "execo" "file") }}
  {{- include "minionize.refuse" (printf "keda.enabled with engine %s: KEDA has no queue-depth metric for it; use a broker engine (google, pulsar, redis, amqp, postgres, nats) or disable keda" $v.engine) }}
{{- end }}
{{- if and (eq $v.engine "pulsar") (not $v.keda.pulsar.adminURL) }}
  {{- include "minionize.refuse" "keda.enabled with engine pulsar needs keda.pulsar.adminURL: the pulsar trigger reads the backlog from the admin (HTTP) API" }}
{{- end }}
{{- if and (eq $v.engine "google") $v.google.emulatorHost }}
  {{- include "minionize.refuse" "keda.enabled with google.emulatorHost: the gcp-pubsub trigger reads Cloud Monitoring, which the emulator does not have (nor credentials); disable keda with the emulator" }}
{{- end }}
{{- if and (eq $v.engine "pulsar") (hasPrefix "non-persistent://" $v.pulsar.topic) }}
  {{- include "minionize.refuse" "keda.enabled with a non-persistent:// pulsar.topic: the pulsar trigger reads the stats of persistent topics only" }}
{{- end }}
{{- if eq $v.engine "redis" }}
  {{- include "minionize.validateKedaRedis" . }}
{{- end }}
{{- if and (eq $v.engine "amqp") (eq $v.keda.rabbitmq.protocol "http") (not (or $v.keda.rabbitmq.managementURL $v.keda.rabbitmq.managementURLSecret.existingSecret)) }}
  {{- include "minionize.refuse" "keda.enabled with engine amqp needs keda.rabbitmq.managementURL (e.g. http://rabbitmq:15672/%2F) or keda.rabbitmq.managementURLSecret: the management API counts the unacknowledged messages, those being run. Or set keda.rabbitmq.protocol=amqp, which counts the ready messages only: a Deployment then shrinks while its minions run" }}
{{- end }}
{{- with $v.keda.rabbitmq }}
{{- if and (eq $v.engine "amqp") (eq .protocol "http") .managementURL (not .managementURLSecret.existingSecret) (not .credentialsSecret.existingSecret) (not $v.keda.authenticationRef) }}
  {{- include "minionize.refuse" "keda.rabbitmq.managementURL needs keda.rabbitmq.credentialsSecret (or keda.authenticationRef): the management API answers a user only. Or give the whole URL, credentials inside, in keda.rabbitmq.managementURLSecret" }}
{{- end }}
{{- end }}
{{- if and (eq $v.engine "redis") (not (include "minionize.kedaRedisAddress" .)) }}
  {{- include "minionize.refuse" "keda.enabled with engine redis needs keda.redis.address (host:port), or a plain redis.url to take it from: the redis-streams trigger cannot read redis.urlSecret" }}
{{- end }}
{{- if and (eq $v.engine "amqp") (eq $v.keda.rabbitmq.protocol "amqp") (not (or $v.amqp.url $v.amqp.urlSecret.existingSecret)) }}
  {{- include "minionize.refuse" "keda.enabled with engine amqp needs amqp.url or amqp.urlSecret: the rabbitmq trigger must know the broker" }}
{{- end }}
{{- if and (eq $v.engine "postgres") (not (or $v.postgres.url $v.postgres.urlSecret.existingSecret)) }}
  {{- include "minionize.refuse" "keda.enabled with engine postgres needs postgres.url or postgres.urlSecret: the postgresql trigger must know the database" }}
{{- end }}
{{- if and (eq $v.engine "nats") (not (or $v.keda.nats.monitoringEndpoint $v.keda.nats.monitoringEndpointSecret.existingSecret)) }}
  {{- include "minionize.refuse" "keda.enabled with engine nats needs keda.nats.monitoringEndpoint (host:port of the server's monitoring port, nats-server -m 8222): the nats-jetstream trigger reads the consumer's lag there" }}
{{- end }}
{{- if and (eq $v.mode "deployment") (gt ($v.keda.minReplicaCount | int) ($v.keda.maxReplicaCount | int)) }}
  {{- include "minionize.refuse" (printf "keda.minReplicaCount (%d) is greater than keda.maxReplicaCount (%d)" ($v.keda.minReplicaCount | int) ($v.keda.maxReplicaCount | int)) }}
{{- end }}
{{- end }}

{{/*
The redis-streams trigger counts the stream's length (XLEN): right only when
settled entries are deleted, and it must reach Redis with the minions' password.
*/}}
{{- define "minionize.validateKedaRedis" -}}
{{- $v := .Values -}}
{{- $metric := $v.keda.redis.metric }}
{{- if eq $metric "lagCount" }}
  {{- include "minionize.refuse" "keda.redis.metric lagCount counts only the entries not yet delivered: the fleet scales to zero while its minions run, and an entry handed back at a shutdown wakes nobody. Use streamLength (the default)" }}
{{- else if eq $metric "pendingEntriesCount" }}
  {{- include "minionize.refuse" "keda.redis.metric pendingEntriesCount counts only the entries being run: a fleet at zero never wakes. Use streamLength (the default)" }}
{{- end }}
{{- if and (include "minionize.isSet" $v.redis.deleteAcked) (not $v.redis.deleteAcked) }}
  {{- include "minionize.refuse" "keda.enabled with redis.deleteAcked=false: the stream keeps settled entries, so its length, which the trigger counts, never falls and the fleet never shrinks. Keep redis.deleteAcked true with KEDA" }}
{{- end }}
{{- if and $v.redis.urlSecret.existingSecret (not $v.redis.passwordSecret.existingSecret) (not $v.keda.authenticationRef) }}
  {{- include "minionize.refuse" "keda.enabled with redis.urlSecret needs redis.passwordSecret (or keda.authenticationRef): KEDA cannot read the password inside the URL, and would get NOAUTH" }}
{{- end }}
{{- end }}
