{{- define "suite.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "suite.name" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "suite.labels" . | nindent 4 }}
  {{- with .Values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .Values.service.type }}
  selector:
    {{- include "suite.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ .Values.ports.grpc }}
      targetPort: grpc
      protocol: TCP
      {{- /* The mTLS is the binary's own: a mesh that parsed this port as gRPC would see TLS
             records, so with Istio routing the port is declared as TLS instead. */}}
      appProtocol: {{ ternary "tls" "grpc" (and .Values.canary.enabled .Values.canary.istio.enabled) }}
    - name: admin
      port: {{ .Values.ports.admin }}
      targetPort: admin
      protocol: TCP
      appProtocol: http
{{- end -}}

{{- define "suite.serviceaccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "suite.name" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "suite.labels" . | nindent 4 }}
  {{- with .Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
{{- end -}}

{{/* Inline secret values, each under its variable name. `entries` maps variable -> value. */}}
{{- define "suite.envSecret" -}}
{{- $ := .ctx -}}
{{- if .entries }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ include "suite.envSecretName" $ }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "suite.labels" $ | nindent 4 }}
type: Opaque
data:
  {{- range $key, $value := .entries }}
  {{ $key }}: {{ $value | b64enc | quote }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
A page-token key every replica shares: the configured one, or one generated at
install and kept across upgrades (read back from the release's own Secret).
*/}}
{{- define "suite.pageTokenSecret" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "suite.envSecretName" .) -}}
{{- if .Values.pageToken.secret -}}
{{- .Values.pageToken.secret -}}
{{- else if and $existing $existing.data (hasKey $existing.data "PAGE_TOKEN_SECRET") -}}
{{- index $existing.data "PAGE_TOKEN_SECRET" | b64dec -}}
{{- else -}}
{{- randAlphaNum 48 -}}
{{- end -}}
{{- end -}}
