{{/*
The service's identity certificate from cert-manager: exactly one URI SAN, the
SPIFFE id the other services authorize, plus the Service's DNS names for
grpcurl (the binaries ignore DNS SANs). Rotation rewrites the Secret; the
binary reloads the mounted files without a restart.
*/}}
{{- define "suite.certificate" -}}
{{- $cm := .Values.tls.certManager -}}
{{- $global := (.Values.global | default dict).certManager | default dict -}}
{{- $issuer := mergeOverwrite (dict) ($cm.issuerRef | default dict) ($global.issuerRef | default dict) -}}
{{- if not $issuer.name -}}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name (or global.certManager.issuerRef.name)" -}}
{{- end -}}
{{- $name := include "suite.name" . -}}
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: {{ $name }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "suite.labels" . | nindent 4 }}
spec:
  secretName: {{ include "suite.tlsSecretName" . }}
  secretTemplate:
    labels:
      {{- include "suite.selectorLabels" . | nindent 6 }}
  duration: {{ $cm.duration }}
  renewBefore: {{ $cm.renewBefore }}
  privateKey:
    algorithm: {{ $cm.privateKeyAlgorithm }}
    {{- if eq $cm.privateKeyAlgorithm "ECDSA" }}
    size: 256
    {{- end }}
    encoding: PKCS8
    rotationPolicy: Always
  uris:
    - {{ include "suite.spiffeId" (list . $name) }}
  dnsNames:
    - {{ $name }}
    - {{ $name }}.{{ .Release.Namespace }}.svc
    - {{ $name }}.{{ .Release.Namespace }}.svc.cluster.local
  usages:
    - digital signature
    - key encipherment
    - server auth
    - client auth
  issuerRef:
    name: {{ $issuer.name }}
    kind: {{ $issuer.kind | default "ClusterIssuer" }}
    group: {{ $issuer.group | default "cert-manager.io" }}
{{- end -}}
