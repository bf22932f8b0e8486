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
      appProtocol: {{ include "suite.grpcAppProtocol" . }}
    - name: admin
      port: {{ .Values.ports.admin }}
      targetPort: admin
      protocol: TCP
      appProtocol: http
{{- end -}}

{{/* The mTLS is the binary's own: a mesh that parsed the gRPC port as gRPC would see TLS
records, so with Istio routing the port is declared as TLS instead (on both Services:
they select the same pods, and a mesh needs one protocol per pod port). */}}
{{- define "suite.grpcAppProtocol" -}}
{{- ternary "tls" "grpc" (and .Values.canary.enabled .Values.canary.istio.enabled) -}}
{{- end -}}

{{/* The headless Service of a service, by the service's name: <name>-headless. */}}
{{- define "suite.headlessName" -}}
{{- printf "%s-headless" . -}}
{{- end -}}

{{/*
The headless Service callers in the cluster dial: no cluster IP, so its DNS name
resolves to the IPs of the service's ready pods (both tracks: the ClusterIP
Service's selector), and the callers' binaries balance each call over them,
re-resolving every discovery.resolveIntervalMs. Pods that are not ready (starting,
draining) are left out of the answer. The gRPC port only; a headless Service
translates no port (callers connect to each pod IP at the port they dial), so it is
the pods' own. The ClusterIP Service stays for port-forward, grpcurl, the health
test, the Istio canary split and callers told discovery.headless=false.
*/}}
{{- define "suite.headlessService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "suite.headlessName" (include "suite.name" .) }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "suite.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  clusterIP: None
  publishNotReadyAddresses: false
  selector:
    {{- include "suite.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ .Values.ports.grpc }}
      targetPort: grpc
      protocol: TCP
      appProtocol: {{ include "suite.grpcAppProtocol" . }}
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
