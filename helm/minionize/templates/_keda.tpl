{{/*
The name of the TriggerAuthentication the chart creates, or "" when the
trigger needs none (or keda.authenticationRef names an existing one).
*/}}
{{- define "minionize.kedaAuthName" -}}
{{- $v := .Values -}}
{{- if and $v.keda.enabled (not $v.keda.authenticationRef) }}
{{- $needed := or
  (and (eq $v.engine "google") (or $v.google.credentials.existingSecret $v.google.workloadIdentity))
  (and (eq $v.engine "pulsar") $v.pulsar.token.existingSecret)
  (and (eq $v.engine "redis") $v.redis.passwordSecret.existingSecret)
  (and (eq $v.engine "amqp") $v.amqp.urlSecret.existingSecret)
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
The KEDA trigger matching the engine: the metric is the backlog of the
queue the minions consume.
*/}}
{{- define "minionize.kedaTrigger" -}}
{{- $v := .Values -}}
{{- $k := $v.keda }}
{{- $target := toString $k.target }}
{{- $activation := toString $k.activationTarget }}
{{- $metadata := dict }}
{{- $type := "" }}
{{- if eq $v.engine "google" }}
  {{- $type = "gcp-pubsub" }}
  {{- $subscription := $v.google.subscription }}
  {{- if not (hasPrefix "projects/" $subscription) }}
  {{- $subscription = printf "projects/%s/subscriptions/%s" $v.google.projectId $subscription }}
  {{- end }}
  {{- $metadata = dict "subscriptionName" $subscription "mode" "SubscriptionSize" "value" $target "activationValue" $activation }}
{{- else if eq $v.engine "pulsar" }}
  {{- $type = "pulsar" }}
  {{- $metadata = dict "adminURL" $k.pulsar.adminURL "topic" $v.pulsar.topic "subscription" $v.pulsar.subscription "isPartitionedTopic" (toString $k.pulsar.isPartitionedTopic) "msgBacklogThreshold" $target "activationMsgBacklogThreshold" $activation }}
  {{- if $v.pulsar.token.existingSecret }}
  {{- $_ := set $metadata "authModes" "bearer" }}
  {{- end }}
{{- else if eq $v.engine "redis" }}
  {{- $type = "redis-streams" }}
  {{- $metadata = dict "address" (include "minionize.kedaRedisAddress" .) "stream" $v.redis.stream "consumerGroup" $v.redis.group "enableTLS" (toString $k.redis.enableTLS) }}
  {{- $_ := set $metadata $k.redis.metric $target }}
  {{- if eq $k.redis.metric "lagCount" }}
  {{- $_ := set $metadata "activationLagCount" $activation }}
  {{- end }}
{{- else if eq $v.engine "amqp" }}
  {{- $type = "rabbitmq" }}
  {{- $metadata = dict "protocol" "amqp" "queueName" $v.amqp.queue "mode" "QueueLength" "value" $target "activationValue" $activation }}
  {{- if not $v.amqp.urlSecret.existingSecret }}
  {{- $_ := set $metadata "host" $v.amqp.url }}
  {{- end }}
{{- else if eq $v.engine "postgres" }}
  {{- $type = "postgresql" }}
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
  {{- $type = "nats-jetstream" }}
  {{- $metadata = dict "account" $k.nats.account "stream" $v.nats.stream "consumer" (default "minionize" $v.nats.consumer) "lagThreshold" $target "activationLagThreshold" $activation "useHttps" (toString $k.nats.useHttps) }}
  {{- if not $k.nats.monitoringEndpointSecret.existingSecret }}
  {{- $_ := set $metadata "natsServerMonitoringEndpoint" $k.nats.monitoringEndpoint }}
  {{- end }}
{{- end }}
{{- $metadata = mergeOverwrite $metadata (deepCopy $k.triggerMetadata) }}
{{- $auth := default (include "minionize.kedaAuthName" .) $k.authenticationRef -}}
- type: {{ $type }}
  metadata:
    {{- range $key, $value := $metadata }}
    {{ $key }}: {{ toString $value | quote }}
    {{- end }}
  {{- with $auth }}
  authenticationRef:
    name: {{ . }}
  {{- end }}
{{- end }}
