{{/*
The environment of the minion container: the engine, its settings, the
runtime's, then extraEnv (last, so that it wins).
*/}}
{{- define "minionize.env" -}}
{{- $v := .Values -}}
- name: MINION_ENGINE
  value: {{ $v.engine | quote }}
{{- if eq $v.engine "execo" }}
- name: EXECO_PERSISTENCE_DIR
  value: {{ printf "%s/%s" (trimSuffix "/" $v.execo.mountPath) $v.execo.persistenceDir | quote }}
{{- include "minionize.envVar" (list "MINION_LEASE_SECONDS" $v.execo.leaseSeconds) }}
{{- include "minionize.envVar" (list "EXECO_TAKE_AHEAD" $v.execo.takeAhead) }}
{{- else if eq $v.engine "file" }}
{{- include "minionize.envVar" (list "FILE_PATH" $v.file.path) }}
{{- include "minionize.envVar" (list "FILE_DECODER" $v.file.decoder) }}
{{- include "minionize.envVar" (list "FILE_DEAD_LETTER" $v.file.deadLetter) }}
{{- else if eq $v.engine "google" }}
{{- include "minionize.envVar" (list "GOOGLE_PROJECT_ID" $v.google.projectId) }}
{{- include "minionize.envVar" (list "GOOGLE_TOPIC_ID" $v.google.topicId) }}
{{- include "minionize.envVar" (list "GOOGLE_SUBSCRIPTION" $v.google.subscription) }}
{{- include "minionize.envVar" (list "GOOGLE_DECODER" $v.google.decoder) }}
{{- include "minionize.envVar" (list "GOOGLE_ACK_DEADLINE" $v.google.ackDeadline) }}
{{- include "minionize.envVar" (list "GOOGLE_DEAD_LETTER_TOPIC" $v.google.deadLetterTopic) }}
{{- include "minionize.envVar" (list "PUBSUB_EMULATOR_HOST" $v.google.emulatorHost) }}
{{- include "minionize.envVar" (list "GOOGLE_OPERATION_TIMEOUT" $v.google.operationTimeout) }}
{{- with $v.google.credentials }}
{{- if .existingSecret }}
- name: GOOGLE_APPLICATION_CREDENTIALS
  value: {{ printf "%s/%s" (trimSuffix "/" .mountPath) .key | quote }}
{{- end }}
{{- end }}
{{- else if eq $v.engine "pulsar" }}
{{- include "minionize.envVar" (list "PULSAR_CONNECTION" $v.pulsar.connection) }}
{{- include "minionize.envVar" (list "PULSAR_TOPIC" $v.pulsar.topic) }}
{{- include "minionize.envVar" (list "PULSAR_SUBSCRIPTION" $v.pulsar.subscription) }}
{{- include "minionize.envVar" (list "PULSAR_DECODER" $v.pulsar.decoder) }}
{{- include "minionize.envVar" (list "PULSAR_DEAD_LETTER_TOPIC" $v.pulsar.deadLetterTopic) }}
{{- include "minionize.envVar" (list "PULSAR_NACK_DELAY" $v.pulsar.nackDelay) }}
{{- include "minionize.envVar" (list "PULSAR_RECEIVER_QUEUE_SIZE" $v.pulsar.receiverQueueSize) }}
{{- include "minionize.envVar" (list "PULSAR_OPERATION_TIMEOUT" $v.pulsar.operationTimeout) }}
{{- if $v.pulsar.token.existingSecret }}
{{- include "minionize.envSecret" (list "PULSAR_TOKEN" $v.pulsar.token) | nindent 0 }}
{{- end }}
{{- with $v.pulsar.tls.trustCerts }}
{{- if .existingSecret }}
- name: PULSAR_TLS_TRUST_CERTS_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" .mountPath) .key | quote }}
{{- end }}
{{- end }}
{{- with $v.pulsar.tls.clientCert }}
{{- if .existingSecret }}
- name: PULSAR_TLS_CERT_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" .mountPath) .certKey | quote }}
- name: PULSAR_TLS_KEY_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" .mountPath) .keyKey | quote }}
{{- end }}
{{- end }}
{{- include "minionize.envVar" (list "PULSAR_TLS_ALLOW_INSECURE" $v.pulsar.tls.allowInsecure) }}
{{- include "minionize.envVar" (list "PULSAR_TLS_VALIDATE_HOSTNAME" $v.pulsar.tls.validateHostname) }}
{{- else if eq $v.engine "redis" }}
{{- if $v.redis.urlSecret.existingSecret }}
{{- include "minionize.envSecret" (list "REDIS_URL" $v.redis.urlSecret) | nindent 0 }}
{{- else }}
{{- include "minionize.envVar" (list "REDIS_URL" $v.redis.url) }}
{{- end }}
{{- if $v.redis.passwordSecret.existingSecret }}
{{- include "minionize.envSecret" (list "REDIS_PASSWORD" $v.redis.passwordSecret) | nindent 0 }}
{{- end }}
{{- include "minionize.envVar" (list "REDIS_STREAM" $v.redis.stream) }}
{{- include "minionize.envVar" (list "REDIS_GROUP" $v.redis.group) }}
{{- include "minionize.envVar" (list "REDIS_DECODER" $v.redis.decoder) }}
{{- include "minionize.envVar" (list "REDIS_CLAIM_IDLE" $v.redis.claimIdle) }}
{{- include "minionize.envVar" (list "REDIS_DEAD_LETTER_STREAM" $v.redis.deadLetterStream) }}
{{- include "minionize.envVar" (list "REDIS_FIELD" $v.redis.field) }}
{{- include "minionize.envVar" (list "REDIS_DELETE_ACKED" $v.redis.deleteAcked) }}
{{- include "minionize.envVar" (list "REDIS_OPERATION_TIMEOUT" $v.redis.operationTimeout) }}
{{- else if eq $v.engine "amqp" }}
{{- if $v.amqp.urlSecret.existingSecret }}
{{- include "minionize.envSecret" (list "AMQP_URL" $v.amqp.urlSecret) | nindent 0 }}
{{- else }}
{{- include "minionize.envVar" (list "AMQP_URL" $v.amqp.url) }}
{{- end }}
{{- include "minionize.envVar" (list "AMQP_QUEUE" $v.amqp.queue) }}
{{- include "minionize.envVar" (list "AMQP_DECODER" $v.amqp.decoder) }}
{{- include "minionize.envVar" (list "AMQP_QUEUE_TYPE" $v.amqp.queueType) }}
{{- include "minionize.envVar" (list "AMQP_DEAD_LETTER_QUEUE" $v.amqp.deadLetterQueue) }}
{{- include "minionize.envVar" (list "AMQP_HEARTBEAT" $v.amqp.heartbeat) }}
{{- include "minionize.envVar" (list "AMQP_PREFETCH" $v.amqp.prefetch) }}
{{- include "minionize.envVar" (list "AMQP_OPERATION_TIMEOUT" $v.amqp.operationTimeout) }}
{{- else if eq $v.engine "postgres" }}
{{- if $v.postgres.urlSecret.existingSecret }}
{{- include "minionize.envSecret" (list "POSTGRES_URL" $v.postgres.urlSecret) | nindent 0 }}
{{- else }}
{{- include "minionize.envVar" (list "POSTGRES_URL" $v.postgres.url) }}
{{- end }}
{{- include "minionize.envVar" (list "POSTGRES_TABLE" $v.postgres.table) }}
{{- include "minionize.envVar" (list "POSTGRES_DECODER" $v.postgres.decoder) }}
{{- include "minionize.envVar" (list "POSTGRES_LEASE_SECONDS" $v.postgres.leaseSeconds) }}
{{- include "minionize.envVar" (list "POSTGRES_DELETE_DONE" $v.postgres.deleteDone) }}
{{- include "minionize.envVar" (list "POSTGRES_OPERATION_TIMEOUT" $v.postgres.operationTimeout) }}
{{- else if eq $v.engine "nats" }}
{{- if $v.nats.urlSecret.existingSecret }}
{{- include "minionize.envSecret" (list "NATS_URL" $v.nats.urlSecret) | nindent 0 }}
{{- else }}
{{- include "minionize.envVar" (list "NATS_URL" $v.nats.url) }}
{{- end }}
{{- include "minionize.envVar" (list "NATS_STREAM" $v.nats.stream) }}
{{- include "minionize.envVar" (list "NATS_SUBJECT" $v.nats.subject) }}
{{- include "minionize.envVar" (list "NATS_CONSUMER" $v.nats.consumer) }}
{{- include "minionize.envVar" (list "NATS_DECODER" $v.nats.decoder) }}
{{- include "minionize.envVar" (list "NATS_ACK_WAIT" $v.nats.ackWait) }}
{{- include "minionize.envVar" (list "NATS_NAK_DELAY" $v.nats.nakDelay) }}
{{- include "minionize.envVar" (list "NATS_DEAD_LETTER_SUBJECT" $v.nats.deadLetterSubject) }}
{{- include "minionize.envVar" (list "NATS_OPERATION_TIMEOUT" $v.nats.operationTimeout) }}
{{- range $name, $ref := dict "NATS_USER" $v.nats.userSecret "NATS_PASSWORD" $v.nats.passwordSecret "NATS_TOKEN" $v.nats.tokenSecret }}
{{- if $ref.existingSecret }}
{{- include "minionize.envSecret" (list $name $ref) | nindent 0 }}
{{- end }}
{{- end }}
{{- with $v.nats.credsSecret }}
{{- if .existingSecret }}
- name: NATS_CREDS
  value: {{ printf "%s/%s" (trimSuffix "/" .mountPath) .key | quote }}
{{- end }}
{{- end }}
{{- with $v.nats.tls.ca }}
{{- if .existingSecret }}
- name: NATS_TLS_CA_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" .mountPath) .key | quote }}
{{- end }}
{{- end }}
{{- with $v.nats.tls.clientCert }}
{{- if .existingSecret }}
- name: NATS_TLS_CERT_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" .mountPath) .certKey | quote }}
- name: NATS_TLS_KEY_FILE
  value: {{ printf "%s/%s" (trimSuffix "/" .mountPath) .keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with $v.minion }}
{{- include "minionize.envVar" (list "MINION_CONCURRENCY" .concurrency) }}
{{- include "minionize.envVar" (list "MINION_MAX_ATTEMPTS" .maxAttempts) }}
{{- include "minionize.envVar" (list "MINION_TIMEOUT" .timeout) }}
{{- include "minionize.envVar" (list "MINION_GRACE_PERIOD" .gracePeriod) }}
{{- include "minionize.envVar" (list "MINION_IDLE_TIMEOUT" .idleTimeout) }}
{{- include "minionize.envVar" (list "MINION_ARGS" .args) }}
{{- include "minionize.envVar" (list "MINION_LOG_LEVEL" .logLevel) }}
{{- include "minionize.envVar" (list "MINION_LOG_FORMAT" .logFormat) }}
{{- end }}
{{- if eq $v.mode "job" }}
# Batch mode: a minion exits 0 once the queue is drained, and the Job completes.
# A Deployment's minions wait for work until they are stopped.
- name: MINION_BATCH
  value: "1"
# A minion that set parameters aside still completes its pod: they wait in the
# dead-letter place (minion-status --failed), and a pod that exits 123 would be
# counted a failure and retried. extraEnv can set it back (it comes last).
- name: MINION_FAILED_EXIT_CODE
  value: "0"
{{- end }}
{{- include "minionize.envVar" (list "MINION_REPORTER" $v.reporter.type) }}
{{- if eq $v.reporter.type "json" }}
- name: REPORTER_JSON_DIRECTORY
  value: {{ include "minionize.reportDirectory" . | quote }}
{{- end }}
{{- if $v.metrics.enabled }}
- name: MINION_METRICS_PORT
  value: {{ $v.metrics.port | toString | quote }}
{{- end }}
# The root filesystem is read-only: temporary files and dotfiles go to scratch.
- name: TMPDIR
  value: {{ .Values.scratch.mountPath | quote }}
- name: HOME
  value: {{ .Values.scratch.mountPath | quote }}
# Recorded by the reporters as the run's batch job id.
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Volume mounts of the minion container.
*/}}
{{- define "minionize.volumeMounts" -}}
{{- $v := .Values -}}
- name: scratch
  mountPath: {{ $v.scratch.mountPath }}
{{- if eq $v.engine "execo" }}
- name: execo
  mountPath: {{ $v.execo.mountPath }}
  {{- with $v.execo.subPath }}
  subPath: {{ . }}
  {{- end }}
{{- end }}
{{- if and (eq $v.engine "google") $v.google.credentials.existingSecret }}
- name: google-credentials
  mountPath: {{ $v.google.credentials.mountPath }}
  readOnly: true
{{- end }}
{{- if and (eq $v.engine "pulsar") $v.pulsar.tls.trustCerts.existingSecret }}
- name: pulsar-tls
  mountPath: {{ $v.pulsar.tls.trustCerts.mountPath }}
  readOnly: true
{{- end }}
{{- if and (eq $v.engine "pulsar") $v.pulsar.tls.clientCert.existingSecret }}
- name: pulsar-client-cert
  mountPath: {{ $v.pulsar.tls.clientCert.mountPath }}
  readOnly: true
{{- end }}
{{- if eq $v.engine "nats" }}
{{- range $name, $ref := dict "nats-creds" $v.nats.credsSecret "nats-tls" $v.nats.tls.ca "nats-client-cert" $v.nats.tls.clientCert }}
{{- if $ref.existingSecret }}
- name: {{ $name }}
  mountPath: {{ $ref.mountPath }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}
{{- if and (eq $v.reporter.type "json") $v.reporter.json.existingClaim }}
- name: reports
  mountPath: {{ $v.reporter.json.mountPath }}
{{- end }}
{{- with $v.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Volumes of the pod. Secret files are readable by the group only: fsGroup
gives that group to the minion's user.
*/}}
{{- define "minionize.volumes" -}}
{{- $v := .Values -}}
- name: scratch
  {{- if or $v.scratch.medium $v.scratch.sizeLimit }}
  emptyDir:
    {{- with $v.scratch.medium }}
    medium: {{ . }}
    {{- end }}
    {{- with $v.scratch.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- if eq $v.engine "execo" }}
- name: execo
  persistentVolumeClaim:
    claimName: {{ $v.execo.existingClaim }}
{{- end }}
{{- if and (eq $v.engine "google") $v.google.credentials.existingSecret }}
- name: google-credentials
  secret:
    secretName: {{ $v.google.credentials.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $v.google.credentials.key }}
        path: {{ $v.google.credentials.key }}
{{- end }}
{{- if and (eq $v.engine "pulsar") $v.pulsar.tls.trustCerts.existingSecret }}
- name: pulsar-tls
  secret:
    secretName: {{ $v.pulsar.tls.trustCerts.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $v.pulsar.tls.trustCerts.key }}
        path: {{ $v.pulsar.tls.trustCerts.key }}
{{- end }}
{{- with $v.pulsar.tls.clientCert }}
{{- if and (eq $v.engine "pulsar") .existingSecret }}
- name: pulsar-client-cert
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .certKey }}
        path: {{ .certKey }}
      - key: {{ .keyKey }}
        path: {{ .keyKey }}
{{- end }}
{{- end }}
{{- if eq $v.engine "nats" }}
{{- range $name, $ref := dict "nats-creds" $v.nats.credsSecret "nats-tls" $v.nats.tls.ca }}
{{- if $ref.existingSecret }}
- name: {{ $name }}
  secret:
    secretName: {{ $ref.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $ref.key }}
        path: {{ $ref.key }}
{{- end }}
{{- end }}
{{- with $v.nats.tls.clientCert }}
{{- if .existingSecret }}
- name: nats-client-cert
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .certKey }}
        path: {{ .certKey }}
      - key: {{ .keyKey }}
        path: {{ .keyKey }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (eq $v.reporter.type "json") $v.reporter.json.existingClaim }}
- name: reports
  persistentVolumeClaim:
    claimName: {{ $v.reporter.json.existingClaim }}
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The pods' annotations: Prometheus' scrape annotations when metrics are on,
then podAnnotations (which win).
*/}}
{{- define "minionize.podAnnotations" -}}
{{- $m := .Values.metrics -}}
{{- $annotations := dict }}
{{- if and $m.enabled $m.scrapeAnnotations }}
{{- $annotations = dict "prometheus.io/scrape" "true" "prometheus.io/port" (toString $m.port) "prometheus.io/path" "/metrics" }}
{{- end }}
{{- $annotations = mergeOverwrite $annotations (deepCopy (default dict .Values.podAnnotations)) }}
{{- with $annotations }}{{ toYaml . }}{{ end }}
{{- end }}

{{/*
The pod template shared by the Deployment, the Job and KEDA's ScaledJob.
`restartPolicy` is passed by the caller: Always for a Deployment, the job's
for a Job.
*/}}
{{- define "minionize.podTemplate" -}}
{{- $ := .context -}}
{{- $v := $.Values -}}
metadata:
  labels:
    {{- include "minionize.podLabels" $ | nindent 4 }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with include "minionize.podAnnotations" $ | fromYaml }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if ne .restartPolicy "Always" }}
  restartPolicy: {{ .restartPolicy }}
  {{- end }}
  serviceAccountName: {{ include "minionize.serviceAccountName" $ }}
  automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . | quote }}
  {{- end }}
  # Longer than MINION_GRACE_PERIOD: after SIGTERM the minion lets running
  # parameters finish for that long, then gives them back, then exits.
  terminationGracePeriodSeconds: {{ include "minionize.terminationGracePeriodSeconds" $ }}
  containers:
    - name: minion
      image: {{ include "minionize.image" $ | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      {{- with $v.program }}
      args:
        {{- range . }}
        - {{ toString . | quote }}
        {{- end }}
      {{- end }}
      env:
        {{- include "minionize.env" $ | nindent 8 }}
      {{- with $v.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $v.metrics.enabled }}
      ports:
        - name: metrics
          containerPort: {{ $v.metrics.port | int64 }}
          protocol: TCP
      {{- with $v.metrics.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.metrics.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- end }}
      {{- with $v.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        {{- include "minionize.volumeMounts" $ | nindent 8 }}
  volumes:
    {{- include "minionize.volumes" $ | nindent 4 }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
The Job spec, shared by the Job and KEDA's ScaledJob (its jobTargetRef).
No `completions`: a work-queue Job, complete when a minion exits 0 and the
others have stopped.
*/}}
{{- define "minionize.jobSpec" -}}
{{- $v := .Values -}}
parallelism: {{ $v.job.parallelism | int64 }}
backoffLimit: {{ $v.job.backoffLimit | int64 }}
{{- with $v.job.activeDeadlineSeconds }}
activeDeadlineSeconds: {{ . | int64 }}
{{- end }}
{{- if eq $v.job.restartPolicy "Never" }}
podFailurePolicy:
  rules:
    # Exit code 2 is a configuration error: retrying cannot help.
    - action: FailJob
      onExitCodes:
        containerName: minion
        operator: In
        values:
          - 2
    # An evicted or preempted minion gave its parameters back: not a failure.
    - action: Ignore
      onPodConditions:
        # status: required by the Job schema of KEDA's ScaledJob up to 2.19.
        - type: DisruptionTarget
          status: "True"
{{- end }}
template:
  {{- include "minionize.podTemplate" (dict "context" . "restartPolicy" $v.job.restartPolicy) | nindent 2 }}
{{- end }}
