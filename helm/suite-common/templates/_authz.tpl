{{/* AUTHZ_POLICY as TOML; service-account names become this namespace's SPIFFE ids. */}}
{{- define "suite.authzToml" -}}
{{- $ := . -}}
{{- $gateways := list -}}
{{- range .Values.authz.endUserGateways -}}
{{- $gateways = append $gateways (include "suite.spiffeId" (list $ .)) -}}
{{- end -}}
# Rendered by the {{ .Chart.Name }} chart from .Values.authz. Anything not allowed is denied.
end_user_gateways = {{ toJson $gateways }}
{{- range .Values.authz.allow }}
{{- $callers := list -}}
{{- range .callers -}}
{{- $callers = append $callers (include "suite.spiffeId" (list $ .)) -}}
{{- end }}

[[allow]]
callers = {{ toJson $callers }}
methods = {{ toJson .methods }}
{{- end }}
{{- end -}}
