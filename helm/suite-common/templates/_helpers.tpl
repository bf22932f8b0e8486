{{/*
Names. Every object is named after the service (not the release): the service
account name is the service's SPIFFE identity (spiffe://<td>/ns/<ns>/sa/<name>),
and the other services and the gateway's routes expect exactly these names.
One release of a service per namespace.
*/}}
{{- define "suite.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "suite.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "suite.trustDomain" -}}
{{- $global := .Values.global | default dict -}}
{{- default .Values.trustDomain $global.trustDomain -}}
{{- end -}}

{{/* spiffe://<trust-domain>/ns/<namespace>/sa/<name>; a value that already is a SPIFFE id is kept. */}}
{{- define "suite.spiffeId" -}}
{{- $ctx := index . 0 -}}
{{- $sa := index . 1 -}}
{{- if hasPrefix "spiffe://" $sa -}}
{{- $sa -}}
{{- else -}}
{{- printf "spiffe://%s/ns/%s/sa/%s" (include "suite.trustDomain" $ctx) $ctx.Release.Namespace $sa -}}
{{- end -}}
{{- end -}}

{{- define "suite.selectorLabels" -}}
app.kubernetes.io/name: {{ include "suite.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of a part other than the server (component: migration, health-test, ...). */}}
{{- define "suite.componentLabels" -}}
{{- $ctx := index . 0 -}}
helm.sh/chart: {{ include "suite.chart" $ctx }}
{{ include "suite.selectorLabels" $ctx }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ index . 1 }}
app.kubernetes.io/part-of: suite
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
{{- end -}}

{{- define "suite.labels" -}}
{{- include "suite.componentLabels" (list . "server") -}}
{{- end -}}

{{- define "suite.image" -}}
{{- $ctx := index . 0 -}}
{{- $tag := index . 1 -}}
{{- printf "%s:%s" $ctx.Values.image.repository (default $ctx.Chart.AppVersion $tag) -}}
{{- end -}}

{{- define "suite.imagePullSecrets" -}}
{{- $global := .Values.global | default dict -}}
{{- $secrets := concat (default list $global.imagePullSecrets) (default list .Values.imagePullSecrets) -}}
{{- if $secrets }}
imagePullSecrets:
{{- range $secrets }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The Secret the chart writes inline secret values into. */}}
{{- define "suite.envSecretName" -}}
{{- printf "%s-env" (include "suite.name" .) -}}
{{- end -}}

{{- define "suite.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "suite.name" .)) .Values.tls.secretName -}}
{{- end -}}

{{/*
Seconds Kubernetes waits after the preStop hook started before SIGKILL: the
preStop delay (endpoints are removed while it sleeps), then the binary's drain
(SHUTDOWN_GRACE_MS), then, when it exports traces, the wait for the last spans
(tracing.shutdownTimeoutMs), then a margin for closing the admin port (up to 1 s)
and exiting. An explicit value below that would cut the drain short, so it fails.
*/}}
{{- define "suite.terminationGracePeriodSeconds" -}}
{{- $drainSeconds := div (add (int .Values.shutdown.drainMs) 999) 1000 -}}
{{- $minimum := add (int .Values.shutdown.preStopSleepSeconds) $drainSeconds 2 -}}
{{- $flush := "" -}}
{{- if include "suite.tracing.exporting" . -}}
{{- $minimum = add $minimum (div (add (int (include "suite.tracing.settings" . | fromJson).shutdownTimeoutMs) 999) 1000) -}}
{{- $flush = " + tracing.shutdownTimeoutMs" -}}
{{- end -}}
{{- if .Values.shutdown.terminationGracePeriodSeconds -}}
{{- if lt (int .Values.shutdown.terminationGracePeriodSeconds) (int $minimum) -}}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%d) is shorter than preStopSleepSeconds + drainMs%s + 2 s (%d): pods would be killed mid-drain" (int .Values.shutdown.terminationGracePeriodSeconds) $flush (int $minimum)) -}}
{{- end -}}
{{- int .Values.shutdown.terminationGracePeriodSeconds -}}
{{- else -}}
{{- add $minimum 3 -}}
{{- end -}}
{{- end -}}

{{/* An env var read from a Secret: an existing Secret if named, else the chart's own. */}}
{{- define "suite.secretEnv" -}}
{{- $ctx := index . 0 -}}
{{- $var := index . 1 -}}
{{- $source := index . 2 -}}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
{{- if and $source.existingSecret $source.existingSecret.name }}
      name: {{ $source.existingSecret.name }}
      key: {{ $source.existingSecret.key }}
{{- else }}
      name: {{ include "suite.envSecretName" $ctx }}
      key: {{ $var }}
{{- end }}
{{- end -}}

{{/* Whether a secret-valued setting is configured (inline or existing Secret). */}}
{{- define "suite.hasSecret" -}}
{{- if or .value (and .existingSecret .existingSecret.name) -}}true{{- end -}}
{{- end -}}

{{/*
The database: PostgreSQL from a Secret, or (only when asked for) SQLite on an
emptyDir, which loses its data with the pod and so allows one replica only.
*/}}
{{- define "suite.database.check" -}}
{{- $db := .Values.database -}}
{{- if $db.embeddedSqlite -}}
{{- if or (gt (int .Values.replicas) 1) .Values.autoscaling.enabled .Values.canary.enabled -}}
{{- fail "database.embeddedSqlite keeps data in one pod's emptyDir: use replicas: 1 without autoscaling or canary, or configure PostgreSQL (database.url or database.existingSecret)" -}}
{{- end -}}
{{- else if not (include "suite.hasSecret" (dict "value" $db.url "existingSecret" $db.existingSecret)) -}}
{{- fail "a PostgreSQL database is required: set database.existingSecret.name (or database.url), or database.embeddedSqlite=true for a throwaway single-pod database" -}}
{{- end -}}
{{- end -}}

{{- define "suite.database.env" -}}
{{- $db := .Values.database -}}
{{- if $db.embeddedSqlite }}
- name: DATA_DIR
  value: /data
{{- else }}
{{ include "suite.secretEnv" (list . "DATABASE_URL" (dict "existingSecret" $db.existingSecret)) }}
{{- end }}
- name: DATABASE_MAX_CONNECTIONS
  value: {{ $db.maxConnections | quote }}
- name: DATABASE_ACQUIRE_TIMEOUT_MS
  value: {{ $db.acquireTimeoutMs | quote }}
- name: DATABASE_CONNECT_TIMEOUT_MS
  value: {{ $db.connectTimeoutMs | quote }}
{{- with $db.statementTimeoutMs }}
- name: DATABASE_STATEMENT_TIMEOUT_MS
  value: {{ . | quote }}
{{- end }}
- name: MIGRATE_ON_START
  value: {{ ternary "false" "true" (eq (include "suite.migrationJobEnabled" .) "true") | quote }}
{{- end -}}

{{/* The migration Job runs instead of migrating on start, unless the database is embedded. */}}
{{- define "suite.migrationJobEnabled" -}}
{{- if and .Values.migration .Values.migration.enabled (not .Values.database.embeddedSqlite) -}}true{{- end -}}
{{- end -}}

{{- define "suite.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "suite.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Settings every binary shares: listen addresses, drain, logs, server tuning, connection age
(and, on the callers, re-resolution: _connections.tpl). */}}
{{- define "suite.commonEnv" -}}
- name: GRPC_ADDR
  value: {{ printf "%s:%d" .Values.listenHost (int .Values.ports.grpc) | quote }}
- name: ADMIN_ADDR
  value: {{ printf "%s:%d" .Values.listenHost (int .Values.ports.admin) | quote }}
- name: SHUTDOWN_GRACE_MS
  value: {{ .Values.shutdown.drainMs | quote }}
- name: LOG_FORMAT
  value: {{ .Values.logging.format | quote }}
- name: RUST_LOG
  value: {{ .Values.logging.level | quote }}
- name: GRPC_MAX_CONCURRENT_REQUESTS
  value: {{ .Values.server.maxConcurrentRequests | quote }}
- name: GRPC_MAX_MESSAGE_BYTES
  value: {{ .Values.server.maxMessageBytes | quote }}
- name: GRPC_REQUEST_TIMEOUT_MS
  value: {{ .Values.server.requestTimeoutMs | quote }}
{{ include "suite.connections.env" . }}
- name: TLS_CERT
  value: /etc/suite/tls/tls.crt
- name: TLS_KEY
  value: /etc/suite/tls/tls.key
- name: TLS_CA
  value: {{ ternary "/etc/suite/ca/ca.crt" "/etc/suite/tls/ca.crt" (not (empty .Values.tls.caConfigMap.name)) }}
- name: TLS_RELOAD_INTERVAL_MS
  value: {{ .Values.tls.reloadIntervalMs | quote }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}
