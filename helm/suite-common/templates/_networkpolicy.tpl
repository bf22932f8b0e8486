{{/*
Ingress rules: the gRPC port from the pods whose service accounts the
authorization policy allows (same namespace, by name), plus networkPolicy.extraGrpcFrom;
on the gateway (networkPolicy.publicGrpc) from anywhere, since it is the suite's
only door. The admin port (metrics, probe health) from networkPolicy.adminFrom and
the chart's own health test. Kubelet probes come from the node, which
NetworkPolicy implementations let through.
*/}}
{{- define "suite.grpcCallers" -}}
{{- $callers := list -}}
{{- if hasKey .Values "authz" -}}
{{- range .Values.authz.allow -}}
{{- range .callers -}}
{{- if not (hasPrefix "spiffe://" .) -}}
{{- $callers = append $callers . -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson (uniq $callers | sortAlpha) -}}
{{- end -}}

{{- define "suite.networkpolicy" -}}
{{- $callers := include "suite.grpcCallers" . | fromJsonArray -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "suite.name" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "suite.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "suite.selectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
  ingress:
    {{- if .Values.networkPolicy.publicGrpc }}
    - ports:
        - port: grpc
          protocol: TCP
    {{- else if or $callers .Values.networkPolicy.extraGrpcFrom }}
    - ports:
        - port: grpc
          protocol: TCP
      from:
        {{- range $callers }}
        - podSelector:
            matchLabels:
              app.kubernetes.io/name: {{ . }}
        {{- end }}
        {{- with .Values.networkPolicy.extraGrpcFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    {{- end }}
    - ports:
        - port: admin
          protocol: TCP
      from:
        - podSelector:
            matchLabels:
              app.kubernetes.io/name: {{ include "suite.name" . }}
              app.kubernetes.io/component: health-test
        {{- with .Values.networkPolicy.adminFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end -}}
