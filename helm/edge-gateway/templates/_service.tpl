{{/* What only the gateway sets; the rest comes from suite-common. */}}
{{- define "edge-gateway.hasListenerCert" -}}
{{- if or .Values.listenerTls.secretName .Values.listenerTls.certManager.enabled -}}true{{- end -}}
{{- end -}}

{{- define "edge-gateway.listenerSecretName" -}}
{{- default (printf "%s-listener-tls" (include "suite.name" .)) .Values.listenerTls.secretName -}}
{{- end -}}

{{- define "edge-gateway.hasHs256" -}}
{{- include "suite.hasSecret" (dict "value" .Values.auth.hs256.secret "existingSecret" .Values.auth.hs256.existingSecret) -}}
{{- end -}}

{{- define "edge-gateway.env" -}}
{{- $auth := .Values.auth -}}
{{- if and (not $auth.jwks.url) (not $auth.jwks.configMap.name) (not (include "edge-gateway.hasHs256" .)) -}}
{{- fail "the gateway needs token keys: auth.jwks.url, auth.jwks.configMap.name or an HS256 secret (auth.hs256)" -}}
{{- end -}}
- name: WORKER_THREADS
  value: {{ .Values.workerThreads | quote }}
- name: GATEWAY_ROUTES
  value: /etc/suite/config/routes.toml
{{- if include "edge-gateway.hasListenerCert" . }}
- name: LISTENER_TLS_CERT
  value: /etc/suite/listener-tls/tls.crt
- name: LISTENER_TLS_KEY
  value: /etc/suite/listener-tls/tls.key
{{- end }}
{{- if $auth.jwks.url }}
- name: JWKS_URL
  value: {{ $auth.jwks.url | quote }}
{{- if $auth.jwks.caConfigMap.name }}
- name: JWKS_CA_FILE
  value: /etc/suite/jwks-ca/ca.crt
{{- end }}
{{- else if $auth.jwks.configMap.name }}
- name: JWKS_FILE
  value: /etc/suite/jwks/jwks.json
{{- end }}
- name: JWKS_REFRESH_MS
  value: {{ $auth.jwks.refreshMs | quote }}
{{- with $auth.issuer }}
- name: JWT_ISSUER
  value: {{ . | quote }}
{{- end }}
{{- with $auth.audience }}
- name: JWT_AUDIENCE
  value: {{ . | quote }}
{{- end }}
- name: JWT_ALGORITHMS
  value: {{ join "," $auth.algorithms | quote }}
{{- if include "edge-gateway.hasHs256" . }}
{{ include "suite.secretEnv" (list . "JWT_HS256_SECRET" (dict "existingSecret" $auth.hs256.existingSecret)) }}
{{- end }}
- name: JWT_LEEWAY_SECONDS
  value: {{ $auth.leewaySeconds | quote }}
- name: JWT_ROLES_CLAIM
  value: {{ $auth.rolesClaim | quote }}
- name: RATE_LIMIT_PER_SECOND
  value: {{ .Values.rateLimit.perSecond | quote }}
- name: RATE_LIMIT_BURST
  value: {{ .Values.rateLimit.burst | quote }}
- name: TOKEN_VERIFICATIONS_PER_SECOND
  value: {{ .Values.rateLimit.verificationsPerSecond | quote }}
- name: TOKEN_VERIFICATION_BURST
  value: {{ .Values.rateLimit.verificationBurst | quote }}
- name: MAX_IN_FLIGHT_PER_SUBJECT
  value: {{ .Values.rateLimit.maxInFlightPerSubject | quote }}
- name: REQUEST_BODY_IDLE_TIMEOUT_MS
  value: {{ .Values.rateLimit.requestBodyIdleTimeoutMs | quote }}
{{- end -}}

{{- define "edge-gateway.volumeMounts" -}}
- name: config
  mountPath: /etc/suite/config
  readOnly: true
{{- if include "edge-gateway.hasListenerCert" . }}
- name: listener-tls
  mountPath: /etc/suite/listener-tls
  readOnly: true
{{- end }}
{{- if and (not .Values.auth.jwks.url) .Values.auth.jwks.configMap.name }}
- name: jwks
  mountPath: /etc/suite/jwks
  readOnly: true
{{- end }}
{{- if and .Values.auth.jwks.url .Values.auth.jwks.caConfigMap.name }}
- name: jwks-ca
  mountPath: /etc/suite/jwks-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "edge-gateway.volumes" -}}
- name: config
  configMap:
    name: {{ include "suite.name" . }}
{{- if include "edge-gateway.hasListenerCert" . }}
- name: listener-tls
  secret:
    secretName: {{ include "edge-gateway.listenerSecretName" . }}
    defaultMode: 0440
{{- end }}
{{- if and (not .Values.auth.jwks.url) .Values.auth.jwks.configMap.name }}
{{- /* A directory mount: the gateway re-reads the file every JWKS_REFRESH_MS, so key rotation needs no restart. */}}
- name: jwks
  configMap:
    name: {{ .Values.auth.jwks.configMap.name }}
    items:
      - key: {{ .Values.auth.jwks.configMap.key }}
        path: jwks.json
{{- end }}
{{- if and .Values.auth.jwks.url .Values.auth.jwks.caConfigMap.name }}
- name: jwks-ca
  configMap:
    name: {{ .Values.auth.jwks.caConfigMap.name }}
    items:
      - key: {{ .Values.auth.jwks.caConfigMap.key }}
        path: ca.crt
{{- end }}
{{- end -}}

{{/* GATEWAY_ROUTES as TOML: upstream addresses are the Services' DNS names in this namespace
(each upstream's headless Service unless discovery.headless is false; suite.peerAddress). */}}
{{- define "edge-gateway.configFiles" -}}
{{- $ := . -}}
routes.toml: |
  # Rendered by the edge-gateway chart from .Values.routes.
  {{- range .Values.routes.upstreams }}

  [[upstreams]]
  name = {{ .name | toJson }}
  address = {{ include "suite.peerAddress" (list $ .name .port .address) | toJson }}
  services = {{ .services | toJson }}
  {{- with .identity }}
  identity = {{ include "suite.spiffeId" (list $ .) | toJson }}
  {{- end }}
  {{- with .maxConcurrentCalls }}
  max_concurrent_calls = {{ . }}
  {{- end }}
  {{- with .breaker }}
  {{- with .failureRatio }}
  breaker_failure_ratio = {{ . }}
  {{- end }}
  {{- with .minRequests }}
  breaker_min_requests = {{ . }}
  {{- end }}
  {{- with .windowMs }}
  breaker_window_ms = {{ . }}
  {{- end }}
  {{- with .consecutiveFailures }}
  breaker_consecutive_failures = {{ . }}
  {{- end }}
  {{- with .slowCallMs }}
  breaker_slow_call_ms = {{ . }}
  {{- end }}
  {{- with .slowCallRatio }}
  breaker_slow_call_ratio = {{ . }}
  {{- end }}
  {{- with .openMs }}
  breaker_open_ms = {{ . }}
  {{- end }}
  {{- with .openMaxMs }}
  breaker_open_max_ms = {{ . }}
  {{- end }}
  {{- with .halfOpenProbes }}
  breaker_half_open_probes = {{ . }}
  {{- end }}
  {{- end }}
  {{- end }}
{{- end -}}

{{- define "edge-gateway.secretEntries" -}}
{{- $entries := dict -}}
{{- if and .Values.auth.hs256.secret (not .Values.auth.hs256.existingSecret.name) -}}
{{- $_ := set $entries "JWT_HS256_SECRET" .Values.auth.hs256.secret -}}
{{- end -}}
{{- toJson $entries -}}
{{- end -}}
