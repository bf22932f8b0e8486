{{/* What only the order service sets; the rest comes from suite-common. */}}
{{- define "order-service.env" -}}
{{- include "suite.database.env" . }}
{{- $users := .Values.userService }}
- name: USER_SERVICE_ADDR
  value: {{ include "suite.peerAddress" (list . $users.serviceName $users.port $users.address) | quote }}
- name: USER_SERVICE_IDENTITY
  value: {{ default (include "suite.spiffeId" (list . $users.serviceName)) $users.identity | quote }}
- name: USER_SERVICE_DEFAULT_DEADLINE_MS
  value: {{ $users.defaultDeadlineMs | quote }}
- name: USER_SERVICE_MAX_ATTEMPTS
  value: {{ $users.maxAttempts | quote }}
- name: USER_SERVICE_MAX_CONCURRENT_CALLS
  value: {{ $users.maxConcurrentCalls | quote }}
- name: USER_SERVICE_BREAKER_WINDOW_MS
  value: {{ $users.breaker.windowMs | quote }}
- name: USER_SERVICE_BREAKER_MIN_REQUESTS
  value: {{ $users.breaker.minRequests | quote }}
- name: USER_SERVICE_BREAKER_FAILURE_RATIO
  value: {{ $users.breaker.failureRatio | quote }}
- name: USER_SERVICE_BREAKER_SLOW_CALL_MS
  value: {{ $users.breaker.slowCallMs | quote }}
- name: USER_SERVICE_BREAKER_SLOW_CALL_RATIO
  value: {{ $users.breaker.slowCallRatio | quote }}
- name: USER_SERVICE_BREAKER_CONSECUTIVE_FAILURES
  value: {{ $users.breaker.consecutiveFailures | quote }}
- name: USER_SERVICE_BREAKER_OPEN_MS
  value: {{ $users.breaker.openMs | quote }}
- name: USER_SERVICE_BREAKER_OPEN_MAX_MS
  value: {{ $users.breaker.openMaxMs | quote }}
- name: USER_SERVICE_BREAKER_HALF_OPEN_PROBES
  value: {{ $users.breaker.halfOpenProbes | quote }}
{{ include "suite.secretEnv" (list . "PAGE_TOKEN_SECRET" .Values.pageToken) }}
- name: AUTHZ_POLICY
  value: /etc/suite/config/authz.toml
{{- if .Values.priceList.prices }}
- name: PRICE_LIST
  value: /etc/suite/config/price-list.toml
{{- end }}
{{- end -}}

{{- define "order-service.volumeMounts" -}}
- name: config
  mountPath: /etc/suite/config
  readOnly: true
{{- end -}}

{{- define "order-service.volumes" -}}
- name: config
  configMap:
    name: {{ include "suite.name" . }}
{{- end -}}

{{- define "order-service.configFiles" -}}
authz.toml: |
  {{- include "suite.authzToml" . | nindent 2 }}
{{- with .Values.priceList.prices }}
{{- /* Keys quoted: a SKU may hold '.', which a bare TOML key would split. int64: values arrive as floats, which print in exponent form. */}}
price-list.toml: |
  [prices]
  {{- range $sku, $price := . }}
  {{ $sku | quote }} = { currency_code = {{ $price.currencyCode | quote }}, amount_minor = {{ int64 $price.amountMinor }} }
  {{- end }}
{{- end }}
{{- end -}}

{{- define "order-service.secretEntries" -}}
{{- $entries := dict -}}
{{- if and .Values.database.url (not .Values.database.embeddedSqlite) (not .Values.database.existingSecret.name) -}}
{{- $_ := set $entries "DATABASE_URL" .Values.database.url -}}
{{- end -}}
{{- if not .Values.pageToken.existingSecret.name -}}
{{- $_ := set $entries "PAGE_TOKEN_SECRET" (include "suite.pageTokenSecret" .) -}}
{{- end -}}
{{- toJson $entries -}}
{{- end -}}
