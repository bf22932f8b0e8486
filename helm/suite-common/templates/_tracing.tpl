{{/*
Traces: the OpenTelemetry SDK environment the binaries read (OTEL_*; a value they
cannot use stops them at start-up with exit 64). The settings are the chart's
`tracing` with every value set in `global.tracing` put over it, as global.trustDomain
and global.certManager.issuerRef override a chart's own. The schemas check each
level alone (and can be skipped), so the merged settings are checked again here: a
combination the binary would refuse fails the render, naming the value.

Without an endpoint no OTEL_EXPORTER_* variable is rendered and nothing is exported.
The rest (service name, resource attributes, sampler, propagators, batching) is always
rendered: harmless without an exporter, and turning export on changes nothing else.
*/}}

{{/* Whether a global.tracing value is set: "" and empty lists or maps are not; 0 and false are. */}}
{{- define "suite.tracing.isSet" -}}
{{- if kindIs "invalid" . -}}
{{- else if kindIs "string" . -}}{{ if ne . "" }}true{{ end -}}
{{- else if or (kindIs "slice" .) (kindIs "map" .) -}}{{ if not (empty .) }}true{{ end -}}
{{- else -}}true
{{- end -}}
{{- end -}}

{{/* The checked settings, as JSON. */}}
{{- define "suite.tracing.settings" -}}
{{- $t := deepCopy (.Values.tracing | default dict) -}}
{{- $g := (.Values.global | default dict).tracing | default dict -}}
{{- /* Where each value came from, for the messages. */ -}}
{{- $from := dict -}}
{{- range $key := list "endpoint" "protocol" "sampler" "samplerArg" "propagators" "compression" "timeoutMs" "shutdownTimeoutMs" -}}
{{- if include "suite.tracing.isSet" (get $g $key) -}}
{{- $_ := set $t $key (get $g $key) -}}
{{- $_ := set $from $key "global.tracing" -}}
{{- end -}}
{{- end -}}
{{- range $group := list "resourceAttributes" "batch" -}}
{{- $merged := deepCopy (get $t $group | default dict) -}}
{{- range $key, $value := (get $g $group | default dict) -}}
{{- if include "suite.tracing.isSet" $value -}}
{{- $_ := set $merged $key $value -}}
{{- $_ := set $from (printf "%s.%s" $group $key) "global.tracing" -}}
{{- end -}}
{{- end -}}
{{- $_ := set $t $group $merged -}}
{{- end -}}
{{- /* A Secret or ConfigMap named in global.tracing replaces the chart's own; unset keys keep the chart's. */ -}}
{{- $headers := deepCopy (($t.headers | default dict).existingSecret | default dict) -}}
{{- $globalHeaders := ($g.headers | default dict).existingSecret | default dict -}}
{{- if $globalHeaders.name -}}
{{- $headers = mergeOverwrite $headers $globalHeaders -}}
{{- $_ := set $from "headers" "global.tracing" -}}
{{- end -}}
{{- $_ := set $t "headers" (dict "existingSecret" $headers) -}}
{{- $globalCa := or ($g.caSecret | default dict).name ($g.caConfigMap | default dict).name -}}
{{- range $source := list "caSecret" "caConfigMap" -}}
{{- $ref := deepCopy (get $t $source | default dict) -}}
{{- if $globalCa -}}
{{- $_ := set $ref "name" "" -}}
{{- $ref = mergeOverwrite $ref (get $g $source | default dict) -}}
{{- $_ := set $from $source "global.tracing" -}}
{{- end -}}
{{- $_ := set $t $source $ref -}}
{{- end -}}
{{- $clientTls := deepCopy ($t.clientTls | default dict) -}}
{{- if ($g.clientTls | default dict).secretName -}}
{{- $clientTls = mergeOverwrite $clientTls $g.clientTls -}}
{{- $_ := set $from "clientTls" "global.tracing" -}}
{{- end -}}
{{- $_ := set $t "clientTls" $clientTls -}}
{{- $at := dict "from" $from -}}

{{- $endpoint := $t.endpoint | default "" | toString -}}
{{- if and $endpoint (not (regexMatch `^https?://[^/\s]+(/\S*)?$` $endpoint)) -}}
{{- fail (printf "%s.endpoint %q is not an OTLP collector URL: it must start with http:// or https:// and name a host" (include "suite.tracing.at" (list $at "endpoint")) $endpoint) -}}
{{- end -}}
{{- if not (has $t.protocol (list "grpc" "http/protobuf")) -}}
{{- fail (printf "%s.protocol %q is not supported: use grpc or http/protobuf" (include "suite.tracing.at" (list $at "protocol")) (toString $t.protocol)) -}}
{{- end -}}
{{- $samplers := list "always_on" "always_off" "traceidratio" "parentbased_always_on" "parentbased_always_off" "parentbased_traceidratio" -}}
{{- if not (has $t.sampler $samplers) -}}
{{- fail (printf "%s.sampler %q is not supported: use one of %s" (include "suite.tracing.at" (list $at "sampler")) (toString $t.sampler) (join ", " $samplers)) -}}
{{- end -}}
{{- if has $t.sampler (list "traceidratio" "parentbased_traceidratio") -}}
{{- $arg := $t.samplerArg -}}
{{- $ratio := false -}}
{{- if kindIs "string" $arg -}}
{{- $ratio = regexMatch `^(0(\.[0-9]*)?|1(\.0*)?|\.[0-9]+)$` $arg -}}
{{- else if or (kindIs "float64" $arg) (kindIs "int" $arg) (kindIs "int64" $arg) -}}
{{- $ratio = and (ge (float64 $arg) 0.0) (le (float64 $arg) 1.0) -}}
{{- end -}}
{{- if not $ratio -}}
{{- fail (printf "%s.samplerArg %q is not a number between 0 and 1, which sampler %s needs (the share of new traces kept)" (include "suite.tracing.at" (list $at "samplerArg")) (toString $arg) $t.sampler) -}}
{{- end -}}
{{- $_ := set $t "samplerArg" (toString $arg) -}}
{{- end -}}
{{- $propagators := $t.propagators | default list -}}
{{- if not (or (eq (toJson $propagators) `["none"]`) (and $propagators (eq (len $propagators) (len (uniq $propagators))) (eq (len (without $propagators "tracecontext" "baggage")) 0))) -}}
{{- fail (printf "%s.propagators %s is not supported: list tracecontext and/or baggage, or [none] alone" (include "suite.tracing.at" (list $at "propagators")) (toJson $propagators)) -}}
{{- end -}}
{{- if not (has ($t.compression | default "") (list "" "gzip" "none")) -}}
{{- fail (printf "%s.compression %q is not supported: use gzip, none or \"\"" (include "suite.tracing.at" (list $at "compression")) (toString $t.compression)) -}}
{{- end -}}
{{- if lt (int $t.timeoutMs) 1 -}}
{{- fail (printf "%s.timeoutMs must be at least 1 (ms), not %v" (include "suite.tracing.at" (list $at "timeoutMs")) $t.timeoutMs) -}}
{{- end -}}
{{- if lt (int $t.shutdownTimeoutMs) 0 -}}
{{- fail (printf "%s.shutdownTimeoutMs must be 0 or more (ms), not %v" (include "suite.tracing.at" (list $at "shutdownTimeoutMs")) $t.shutdownTimeoutMs) -}}
{{- end -}}
{{- range $key, $value := $t.batch -}}
{{- if not (has $key (list "scheduleDelayMs" "maxQueueSize" "maxExportBatchSize")) -}}
{{- fail (printf "tracing.batch.%s is not a batch setting: use scheduleDelayMs, maxQueueSize or maxExportBatchSize" $key) -}}
{{- end -}}
{{- if or (kindIs "string" $value) (lt (int $value) 1) -}}
{{- fail (printf "%s.batch.%s must be a whole number of at least 1, not %v" (include "suite.tracing.at" (list $at (printf "batch.%s" $key))) $key $value) -}}
{{- end -}}
{{- end -}}
{{- $reserved := list "service.name" "service.instance.id" "k8s.namespace.name" "k8s.pod.name" "k8s.node.name" "k8s.deployment.name" -}}
{{- range $key, $value := $t.resourceAttributes -}}
{{- if has $key $reserved -}}
{{- fail (printf "%s.resourceAttributes.%s: the chart sets it (%s)" (include "suite.tracing.at" (list $at (printf "resourceAttributes.%s" $key))) $key (join ", " $reserved)) -}}
{{- end -}}
{{- if not (regexMatch `^[A-Za-z0-9_][A-Za-z0-9_./-]*$` $key) -}}
{{- fail (printf "tracing.resourceAttributes key %q is not an attribute name (letters, digits, _ . / -)" $key) -}}
{{- end -}}
{{- end -}}
{{- if and $headers.name (not $headers.key) -}}
{{- fail (printf "%s.headers.existingSecret.key is empty: name the key of Secret %s that holds OTEL_EXPORTER_OTLP_HEADERS" (include "suite.tracing.at" (list $at "headers")) $headers.name) -}}
{{- end -}}
{{- if and $t.caSecret.name $t.caConfigMap.name -}}
{{- fail (printf "%s.caSecret.name (%s) and caConfigMap.name (%s) are both set: the collector's CA bundle comes from one of them" (include "suite.tracing.at" (list $at "caSecret")) $t.caSecret.name $t.caConfigMap.name) -}}
{{- end -}}
{{- range $source := list "caSecret" "caConfigMap" -}}
{{- $ref := get $t $source -}}
{{- if and $ref.name (not $ref.key) -}}
{{- fail (printf "%s.%s.key is empty: name the key of %s that holds the collector's CA bundle" (include "suite.tracing.at" (list $at $source)) $source $ref.name) -}}
{{- end -}}
{{- end -}}
{{- if and $endpoint (not (hasPrefix "https://" $endpoint)) -}}
{{- if or $t.caSecret.name $t.caConfigMap.name -}}
{{- fail (printf "%s.%s is set, but the collector endpoint %q is not https://: a CA bundle needs a TLS endpoint" (include "suite.tracing.at" (list $at (ternary "caSecret" "caConfigMap" (not (empty $t.caSecret.name))))) (ternary "caSecret" "caConfigMap" (not (empty $t.caSecret.name))) $endpoint) -}}
{{- end -}}
{{- if $clientTls.secretName -}}
{{- fail (printf "%s.clientTls.secretName is set, but the collector endpoint %q is not https://: a client certificate needs a TLS endpoint" (include "suite.tracing.at" (list $at "clientTls")) $endpoint) -}}
{{- end -}}
{{- end -}}
{{- toJson $t -}}
{{- end -}}

{{/* "tracing" or "global.tracing": where the value of key came from. */}}
{{- define "suite.tracing.at" -}}
{{- $at := index . 0 -}}
{{- get $at.from (index . 1) | default "tracing" -}}
{{- end -}}

{{/* Whether spans leave the pod. */}}
{{- define "suite.tracing.exporting" -}}
{{- if (include "suite.tracing.settings" . | fromJson).endpoint -}}true{{- end -}}
{{- end -}}

{{/* OTEL_RESOURCE_ATTRIBUTES values are percent-encoded; `$` too, so Kubernetes never expands a user's value. */}}
{{- define "suite.tracing.encode" -}}
{{- . | toString | replace "%" "%25" | replace "," "%2C" | replace "=" "%3D" | replace "$" "%24" | replace " " "%20" -}}
{{- end -}}

{{/*
The variables, after the service's own. Called with (dict "ctx" $ "track" "stable"|"canary").
The downward-API variables come first: Kubernetes expands $(VAR) only from variables defined earlier.
*/}}
{{- define "suite.tracing.env" -}}
{{- $ := .ctx -}}
{{- $t := include "suite.tracing.settings" $ | fromJson -}}
{{- $name := include "suite.name" $ -}}
{{- $deployment := ternary (printf "%s-canary" $name) $name (eq .track "canary") -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: OTEL_SERVICE_NAME
  value: {{ $name | quote }}
{{- $attributes := list "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.pod.name=$(POD_NAME)" "k8s.node.name=$(NODE_NAME)" (printf "k8s.deployment.name=%s" $deployment) "service.instance.id=$(POD_NAME)" }}
{{- range $key, $value := $t.resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%s" $key (include "suite.tracing.encode" $value)) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attributes | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $t.sampler | quote }}
{{- if has $t.sampler (list "traceidratio" "parentbased_traceidratio") }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $t.samplerArg | quote }}
{{- end }}
- name: OTEL_PROPAGATORS
  value: {{ join "," $t.propagators | quote }}
{{- range $key, $var := dict "scheduleDelayMs" "OTEL_BSP_SCHEDULE_DELAY" "maxQueueSize" "OTEL_BSP_MAX_QUEUE_SIZE" "maxExportBatchSize" "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" }}
{{- if hasKey $t.batch $key }}
- name: {{ $var }}
  value: {{ get $t.batch $key | int | toString | quote }}
{{- end }}
{{- end }}
{{- if $t.endpoint }}
- name: TELEMETRY_SHUTDOWN_TIMEOUT_MS
  value: {{ $t.shutdownTimeoutMs | int | toString | quote }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $t.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $t.protocol | quote }}
- name: OTEL_EXPORTER_OTLP_TIMEOUT
  value: {{ $t.timeoutMs | int | toString | quote }}
{{- with $t.compression }}
- name: OTEL_EXPORTER_OTLP_COMPRESSION
  value: {{ . | quote }}
{{- end }}
{{- with $t.headers.existingSecret }}
{{- if .name }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- if or $t.caSecret.name $t.caConfigMap.name }}
- name: OTEL_EXPORTER_OTLP_CERTIFICATE
  value: /etc/suite/otel-ca/ca.crt
{{- end }}
{{- if $t.clientTls.secretName }}
- name: OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE
  value: /etc/suite/otel-client-tls/tls.crt
- name: OTEL_EXPORTER_OTLP_CLIENT_KEY
  value: /etc/suite/otel-client-tls/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{/* The collector's CA bundle and client certificate, read once at start-up (a rotation takes effect at the next pod start). */}}
{{- define "suite.tracing.volumeMounts" -}}
{{- $t := include "suite.tracing.settings" . | fromJson -}}
{{- if $t.endpoint }}
{{- if or $t.caSecret.name $t.caConfigMap.name }}
- name: otel-ca
  mountPath: /etc/suite/otel-ca
  readOnly: true
{{- end }}
{{- if $t.clientTls.secretName }}
- name: otel-client-tls
  mountPath: /etc/suite/otel-client-tls
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{- define "suite.tracing.volumes" -}}
{{- $t := include "suite.tracing.settings" . | fromJson -}}
{{- if $t.endpoint }}
{{- if $t.caSecret.name }}
- name: otel-ca
  secret:
    secretName: {{ $t.caSecret.name }}
    defaultMode: 0440
    items:
      - key: {{ $t.caSecret.key }}
        path: ca.crt
{{- else if $t.caConfigMap.name }}
- name: otel-ca
  configMap:
    name: {{ $t.caConfigMap.name }}
    items:
      - key: {{ $t.caConfigMap.key }}
        path: ca.crt
{{- end }}
{{- if $t.clientTls.secretName }}
- name: otel-client-tls
  secret:
    secretName: {{ $t.clientTls.secretName }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}
{{- end -}}

{{/* One line for NOTES.txt: whether traces leave the pods, and where. */}}
{{- define "suite.tracing.notes" -}}
{{- $t := include "suite.tracing.settings" . | fromJson -}}
{{- if $t.endpoint -}}
Traces: exported to {{ $t.endpoint }} over OTLP {{ $t.protocol }}, sampler {{ $t.sampler }}{{ if has $t.sampler (list "traceidratio" "parentbased_traceidratio") }} at {{ $t.samplerArg }}{{ end }}
{{- with $t.headers.existingSecret.name }}, headers from Secret {{ . }}{{ end }}
{{- if $t.caSecret.name }}, CA from Secret {{ $t.caSecret.name }}{{ else if $t.caConfigMap.name }}, CA from ConfigMap {{ $t.caConfigMap.name }}{{ end }}
{{- with $t.clientTls.secretName }}, client certificate from Secret {{ . }}{{ end }}.
{{- else -}}
Traces: not exported (tracing.endpoint and global.tracing.endpoint are empty); log lines still carry trace ids.
{{- end -}}
{{- end -}}
