{{/*
KEDA's objects: the trigger of each engine, its TriggerAuthentication, and
the numbers they share. What each scaler reads (names, integers, auth
parameters) is tested against KEDA's code in tests/unit/test_chart_keda.py,
and listed in the chart's README.
*/}}

{{/*
Backlog per minion (ScaledObject) or per Job (ScaledJob): keda.target, else
what one minion runs at once (minion.concurrency, 1 when unset), times
job.parallelism for a Job. An integer, always written in digits: a value
read from a values file is a float to Helm, which would print 1e+06.
*/}}
{{- define "minionize.kedaTarget" -}}
{{- $v := .Values -}}
{{- if include "minionize.isSet" $v.keda.target }}
{{- printf "%d" (int64 $v.keda.target) }}
{{- else }}
{{- $concurrency := int64 (default 1 $v.minion.concurrency) }}
{{- if eq $v.mode "job" }}
{{- printf "%d" (mul $concurrency (int64 $v.job.parallelism)) }}
{{- else }}
{{- printf "%d" $concurrency }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The name of the TriggerAuthentication the chart creates, or "" when the
trigger needs none (or keda.authenticationRef names an existing one).
*/}}
{{- define "minionize.kedaAuthName" -}}
{{- $v := .Values -}}
{{- if and $v.keda.enabled (not $v.keda.authenticationRef) }}
{{- $pulsar := $v.pulsar.tls }}
{{- $needed := or
  (and (eq $v.engine "google") (or $v.google.credentials.existingSecret $v.google.workloadIdentity))
  (and (eq $v.engine "pulsar") (or $v.pulsar.token.existingSecret $pulsar.trustCerts.existingSecret $pulsar.clientCert.existingSecret))
  (and (eq $v.engine "redis") $v.redis.passwordSecret.existingSecret)
  (and (eq $v.engine "amqp") (eq $v.keda.rabbitmq.protocol "amqp") $v.amqp.urlSecret.existingSecret)
  (and (eq $v.engine "amqp") (eq $v.keda.rabbitmq.protocol "http") (or $v.keda.rabbitmq.managementURLSecret.existingSecret $v.keda.rabbitmq.credentialsSecret.existingSecret))
  (and (eq $v.engine "nats") $v.keda.nats.monitoringEndpointSecret.existingSecret)
  (and (eq $v.engine "postgres") $v.postgres.urlSecret.existingSecret) }}
{{- if $needed }}{{ include "minionize.fullname" . }}{{ end }}
{{- end }}
{{- end }}

{{/*
host:port of Redis for the redis-streams trigger: keda.redis.address, else
the host of a plain redis.url ("" when neither says it).
*/}}
{{- define "minionize.kedaRedisAddress" -}}
{{- if .Values.keda.redis.address }}
{{- .Values.keda.redis.address }}
{{- else if and .Values.redis.url (not .Values.redis.urlSecret.existingSecret) }}
{{- $url := urlParse .Values.redis.url }}
{{- if contains ":" $url.host }}{{ $url.host }}{{ else if $url.host }}{{ $url.host }}:6379{{ end }}
{{- end }}
{{- end }}

{{/*
The redis-streams trigger's connection settings that a plain redis.url
holds besides the address: the database index (its path), the user name and
TLS (rediss://); keda.redis.* say them when the URL is in a Secret.
*/}}
{{- define "minionize.kedaRedisConnection" -}}
{{- $v := .Values -}}
{{- $k := $v.keda.redis -}}
{{- $out := dict "enableTLS" (toString $k.enableTLS) }}
{{- if include "minionize.isSet" $k.databaseIndex }}
{{- $_ := set $out "databaseIndex" (printf "%d" (int64 $k.databaseIndex)) }}
{{- end }}
{{- with $k.username }}
{{- $_ := set $out "username" . }}
{{- end }}
{{- if and $v.redis.url (not $v.redis.urlSecret.existingSecret) }}
{{- $url := urlParse $v.redis.url }}
{{- if eq $url.scheme "rediss" }}
{{- $_ := set $out "enableTLS" "true" }}
{{- end }}
{{- $db := trimPrefix "/" $url.path }}
{{- if and $db (not (hasKey $out "databaseIndex")) }}
{{- $_ := set $out "databaseIndex" $db }}
{{- end }}
{{- $user := first (splitList ":" (default "" $url.userinfo)) }}
{{- if and $user (not (hasKey $out "username")) }}
{{- $_ := set $out "username" $user }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
The Pulsar topic as KEDA's stats URL needs it: the client expands a short
name (`params`, `tenant/namespace/params`) to a full one, KEDA does not.
*/}}
{{- define "minionize.kedaPulsarTopic" -}}
{{- $topic := .Values.pulsar.topic }}
{{- if contains "://" $topic }}{{ $topic }}
{{- else if eq (len (splitList "/" $topic)) 3 }}persistent://{{ $topic }}
{{- else }}persistent://public/default/{{ $topic }}
{{- end }}
{{- end }}

{{/*
The trigger's metadata for the engine: the metric is the queue's backlog,
counted so that messages being run are in it (a fleet never scales below
the minions that are busy).
*/}}
{{- define "minionize.kedaMetadata" -}}
{{- $v := .Values -}}
{{- $k := $v.keda }}
{{- $target := include "minionize.kedaTarget" . }}
{{- $activation := printf "%d" (int64 $k.activationTarget) }}
{{- $metadata := dict }}
{{- if eq $v.engine "google" }}
  {{- $subscription := $v.google.subscription }}
  {{- if not (hasPrefix "projects/" $subscription) }}
  {{- $subscription = printf "projects/%s/subscriptions/%s" $v.google.projectId $subscription }}
  {{- end }}
  {{- /* num_undelivered_messages counts the unacked ones too; an idle subscription has no data point: 0. */}}
  {{- $metadata = dict "subscriptionName" $subscription "mode" "SubscriptionSize" "value" $target "activationValue" $activation "valueIfNull" "0" }}
{{- else if eq $v.engine "pulsar" }}
  {{- $metadata = dict "adminURL" $k.pulsar.adminURL "topic" (include "minionize.kedaPulsarTopic" .) "subscription" $v.pulsar.subscription "isPartitionedTopic" (toString $k.pulsar.isPartitionedTopic) "msgBacklogThreshold" $target "activationMsgBacklogThreshold" $activation }}
  {{- if $v.pulsar.token.existingSecret }}
  {{- $_ := set $metadata "authModes" "bearer" }}
  {{- end }}
  {{- if $v.pulsar.tls.clientCert.existingSecret }}
  {{- /* With cert and key in authParams, KEDA adds the tls auth mode. */}}
  {{- $_ := set $metadata "tls" "enable" }}
  {{- end }}
{{- else if eq $v.engine "redis" }}
  {{- /* XLEN without consumerGroup: the engine deletes settled entries, so the stream's length is what waits, runs or was handed back. */}}
  {{- $metadata = dict "address" (include "minionize.kedaRedisAddress" .) "stream" $v.redis.stream "streamLength" $target "activationLagCount" $activation }}
  {{- $metadata = merge $metadata (include "minionize.kedaRedisConnection" . | fromYaml) }}
{{- else if eq $v.engine "amqp" }}
  {{- $metadata = dict "protocol" $k.rabbitmq.protocol "queueName" $v.amqp.queue "mode" "QueueLength" "value" $target "activationValue" $activation }}
  {{- if eq $k.rabbitmq.protocol "http" }}
  {{- if not $k.rabbitmq.managementURLSecret.existingSecret }}
  {{- $_ := set $metadata "host" $k.rabbitmq.managementURL }}
  {{- end }}
  {{- else if not $v.amqp.urlSecret.existingSecret }}
  {{- $_ := set $metadata "host" $v.amqp.url }}
  {{- end }}
{{- else if eq $v.engine "postgres" }}
  {{- /* The table as an SQL identifier: each part of schema.name double-quoted, as the engine takes it. */}}
  {{- $quoted := list }}
  {{- range splitList "." $v.postgres.table }}
  {{- $quoted = append $quoted (printf "\"%s\"" (replace "\"" "\"\"" .)) }}
  {{- end }}
  {{- /* Pending and running rows: the fleet keeps its size while rows run, and scales to zero when none is left. */}}
  {{- $query := printf "SELECT count(*) FROM %s WHERE state IN ('pending', 'running')" (join "." $quoted) }}
  {{- $metadata = dict "query" $query "targetQueryValue" $target "activationTargetQueryValue" $activation }}
  {{- if not $v.postgres.urlSecret.existingSecret }}
  {{- $_ := set $metadata "connectionFromEnv" "POSTGRES_URL" }}
  {{- end }}
{{- else if eq $v.engine "nats" }}
  {{- $metadata = dict "account" $k.nats.account "stream" $v.nats.stream "consumer" (default "minionize" $v.nats.consumer) "lagThreshold" $target "activationLagThreshold" $activation "useHttps" (toString $k.nats.useHttps) }}
  {{- if not $k.nats.monitoringEndpointSecret.existingSecret }}
  {{- $_ := set $metadata "natsServerMonitoringEndpoint" $k.nats.monitoringEndpoint }}
  {{- end }}
{{- end }}
{{- toYaml (mergeOverwrite $metadata (deepCopy $k.triggerMetadata)) }}
{{- end }}

{{/*
The KEDA trigger matching the engine.
*/}}
{{- define "minionize.kedaTrigger" -}}
{{- $v := .Values -}}
{{- $types := dict "google" "gcp-pubsub" "pulsar" "pulsar" "redis" "redis-streams" "amqp" "rabbitmq" "postgres" "postgresql" "nats" "nats-jetstream" }}
{{- $metadata := include "minionize.kedaMetadata" . | fromYaml }}
{{- $auth := default (include "minionize.kedaAuthName" .) $v.keda.authenticationRef -}}
- type: {{ get $types $v.engine }}
  metadata:
    {{- range $key, $value := $metadata }}
    {{- /* A number from triggerMetadata is written in digits, never 1e+06. */}}
    {{- if or (kindIs "float64" $value) (kindIs "int64" $value) (kindIs "int" $value) }}
    {{- if eq (float64 $value) (float64 (int64 $value)) }}
    {{- $value = printf "%d" (int64 $value) }}
    {{- end }}
    {{- end }}
    {{ $key }}: {{ toString $value | quote }}
    {{- end }}
  {{- with $auth }}
  authenticationRef:
    name: {{ . }}
  {{- end }}
{{- end }}
