{{/* What only the user service sets; the rest comes from suite-common. */}}
{{- define "user-service.env" -}}
{{- include "suite.database.env" . }}
{{- if include "suite.hasSecret" (dict "value" .Values.redis.url "existingSecret" .Values.redis.existingSecret) }}
{{ include "suite.secretEnv" (list . "REDIS_URL" .Values.redis) }}
{{- end }}
- name: REDIS_TIMEOUT_MS
  value: {{ .Values.redis.timeoutMs | quote }}
- name: CACHE_TTL_SECS
  value: {{ .Values.cache.ttlSecs | quote }}
{{ include "suite.secretEnv" (list . "PAGE_TOKEN_SECRET" .Values.pageToken) }}
- name: AUTHZ_POLICY
  value: /etc/suite/config/authz.toml
{{- end -}}

{{- define "user-service.volumeMounts" -}}
- name: config
  mountPath: /etc/suite/config
  readOnly: true
{{- end -}}

{{- define "user-service.volumes" -}}
- name: config
  configMap:
    name: {{ include "suite.name" . }}
{{- end -}}

{{- define "user-service.configFiles" -}}
authz.toml: |
  {{- include "suite.authzToml" . | nindent 2 }}
{{- end -}}

{{- define "user-service.secretEntries" -}}
{{- $entries := dict -}}
{{- if and .Values.database.url (not .Values.database.embeddedSqlite) (not .Values.database.existingSecret.name) -}}
{{- $_ := set $entries "DATABASE_URL" .Values.database.url -}}
{{- end -}}
{{- if and .Values.redis.url (not .Values.redis.existingSecret.name) -}}
{{- $_ := set $entries "REDIS_URL" .Values.redis.url -}}
{{- end -}}
{{- if not .Values.pageToken.existingSecret.name -}}
{{- $_ := set $entries "PAGE_TOKEN_SECRET" (include "suite.pageTokenSecret" .) -}}
{{- end -}}
{{- toJson $entries -}}
{{- end -}}
