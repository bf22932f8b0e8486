{{/*
Migrations before the new pods: a pre-install/pre-upgrade Job running the
binary's `migrate` (safe when it races another run: PostgreSQL advisory lock).
Pre-install hooks run before the release's own objects exist, so the Job uses
no chart ServiceAccount and, for an inline database URL, its own hook Secret.
*/}}
{{- define "suite.migration" -}}
{{- if eq (include "suite.migrationJobEnabled" .) "true" -}}
{{- $name := include "suite.name" . -}}
{{- $db := .Values.database -}}
{{- $existing := and $db.existingSecret $db.existingSecret.name -}}
{{- if not $existing }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}-migration
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "suite.componentLabels" (list . "migration") | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-10"
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
type: Opaque
data:
  DATABASE_URL: {{ $db.url | b64enc | quote }}
---
{{- end }}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ $name }}-migrate
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "suite.componentLabels" (list . "migration") | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "0"
    {{- /* Kept after it ran (its logs), replaced by the next release's run. */}}
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  backoffLimit: {{ .Values.migration.backoffLimit }}
  activeDeadlineSeconds: {{ .Values.migration.activeDeadlineSeconds }}
  ttlSecondsAfterFinished: {{ .Values.migration.ttlSecondsAfterFinished }}
  template:
    metadata:
      labels:
        {{- include "suite.componentLabels" (list . "migration") | nindent 8 }}
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- include "suite.imagePullSecrets" . | nindent 6 }}
      securityContext:
        {{- include "suite.podSecurityContext" . | nindent 8 }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: migrate
          {{- /* With a canary, its (newer) schema is applied: migrations are expand-only, so the stable track keeps working on it. */}}
          image: {{ include "suite.image" (list . (ternary .Values.canary.image.tag .Values.image.tag (and .Values.canary.enabled (not (empty .Values.canary.image.tag))))) | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          args: ["migrate"]
          env:
            - name: DATABASE_URL
              valueFrom:
                secretKeyRef:
                  name: {{ ternary $db.existingSecret.name (printf "%s-migration" $name) (not (empty $existing)) }}
                  key: {{ ternary $db.existingSecret.key "DATABASE_URL" (not (empty $existing)) }}
            - name: DATABASE_CONNECT_TIMEOUT_MS
              value: {{ $db.connectTimeoutMs | quote }}
            - name: LOG_FORMAT
              value: {{ .Values.logging.format | quote }}
            - name: RUST_LOG
              value: {{ .Values.logging.level | quote }}
          resources:
            {{- toYaml .Values.migration.resources | nindent 12 }}
          securityContext:
            {{- include "suite.containerSecurityContext" . | nindent 12 }}
{{- end -}}
{{- end -}}

{{/*
`helm test`: the service's own image runs its `healthcheck` subcommand against
the admin port through the Service, for the overall name "" (readiness),
"liveness", and each served service; it exits non-zero unless all are SERVING.
*/}}
{{- define "suite.test" -}}
{{- $name := include "suite.name" . -}}
{{- $target := printf "%s.%s.svc:%d" $name .Release.Namespace (int .Values.ports.admin) -}}
apiVersion: v1
kind: Pod
metadata:
  name: {{ $name }}-test-health
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "suite.componentLabels" (list . "health-test") | nindent 4 }}
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- include "suite.imagePullSecrets" . | nindent 2 }}
  securityContext:
    {{- include "suite.podSecurityContext" . | nindent 4 }}
  containers:
    - name: grpc-health
      image: {{ include "suite.image" (list . .Values.image.tag) | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - healthcheck
        - --addr
        - {{ $target | quote }}
        {{- range prepend (prepend .Values.healthServices "liveness") "" }}
        - --service
        - {{ . | quote }}
        {{- end }}
      resources:
        requests:
          cpu: 10m
          memory: 16Mi
        limits:
          memory: 64Mi
      securityContext:
        {{- include "suite.containerSecurityContext" . | nindent 8 }}
{{- end -}}
