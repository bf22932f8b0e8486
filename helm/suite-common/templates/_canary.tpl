{{/*
Canary routing through Istio: the stable and canary Deployments are subsets
of one host, split by weight. The gRPC port carries the binaries' own mutual
TLS, which a mesh cannot read, so the split is per connection (a TCP route),
not per request. Without Istio the Service spreads connections over both
tracks in proportion to their replicas.
*/}}
{{- define "suite.canary.istio" -}}
{{- $name := include "suite.name" . -}}
{{- $host := printf "%s.%s.svc.cluster.local" $name .Release.Namespace -}}
{{- $weight := int .Values.canary.istio.weight -}}
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "suite.labels" . | nindent 4 }}
spec:
  host: {{ $host }}
  subsets:
    - name: stable
      labels:
        suite.io/track: stable
    - name: canary
      labels:
        suite.io/track: canary
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "suite.labels" . | nindent 4 }}
spec:
  hosts:
    - {{ $host }}
  tcp:
    - match:
        - port: {{ .Values.ports.grpc }}
      route:
        - destination:
            host: {{ $host }}
            subset: stable
            port:
              number: {{ .Values.ports.grpc }}
          weight: {{ sub 100 $weight }}
        - destination:
            host: {{ $host }}
            subset: canary
            port:
              number: {{ .Values.ports.grpc }}
          weight: {{ $weight }}
{{- end -}}
