{{/*
How calls find replicas. Every server tells a connection older than
server.maxConnectionAgeMs (+/-10%, drawn once per pod) to go away (HTTP/2 GOAWAY)
and closes it server.maxConnectionAgeGraceMs later, so a client holding one
connection (grpcurl, a load balancer's, one through the ClusterIP Service)
reconnects and may reach another pod. The callers of the suite (the order service,
the gateway: the charts with a `discovery` section) dial their peers' headless
Service and balance each call over every ready pod its name resolves to, resolving
it again every discovery.resolveIntervalMs and soon after a connection fails.

At termination the drain applies instead: at SIGTERM (after the preStop sleep) the
binary sends every connection GOAWAY and ends, whatever the age grace, within
shutdown.drainMs, which the grace period covers (suite.terminationGracePeriodSeconds);
callers drop the pod then, or when they next resolve its name without it.
*/}}

{{/*
An aged connection is closed server.maxConnectionAgeGraceMs after its GOAWAY, cutting
the calls still on it; a call may run server.requestTimeoutMs (GRPC_REQUEST_TIMEOUT_MS,
the binary's bound whatever the client's deadline), so a shorter grace would fail
calls every time a connection ages. Fails the render naming the values.
*/}}
{{- define "suite.connections.check" -}}
{{- $s := .Values.server -}}
{{- if and (gt (int $s.maxConnectionAgeMs) 0) (lt (int $s.maxConnectionAgeGraceMs) (int $s.requestTimeoutMs)) -}}
{{- fail (printf "server.maxConnectionAgeGraceMs (%d) is shorter than server.requestTimeoutMs (%d): calls still running when their connection reaches server.maxConnectionAgeMs would be cut short; raise maxConnectionAgeGraceMs to at least requestTimeoutMs (or set maxConnectionAgeMs to 0: connections never age)" (int $s.maxConnectionAgeGraceMs) (int $s.requestTimeoutMs)) -}}
{{- end -}}
{{- end -}}

{{/* The variables: connection age on every server, re-resolution on the callers. */}}
{{- define "suite.connections.env" -}}
{{- include "suite.connections.check" . -}}
- name: MAX_CONNECTION_AGE_MS
  value: {{ .Values.server.maxConnectionAgeMs | int | toString | quote }}
- name: MAX_CONNECTION_AGE_GRACE_MS
  value: {{ .Values.server.maxConnectionAgeGraceMs | int | toString | quote }}
{{- if hasKey .Values "discovery" }}
- name: RESOLVE_INTERVAL_MS
  value: {{ .Values.discovery.resolveIntervalMs | int | toString | quote }}
{{- end }}
{{- end -}}

{{/* Whether a caller's values (its .Values) ask for its peers' headless Services: discovery.headless
true (as a string too, so a value that skipped the schema means what it says). */}}
{{- define "suite.discovery.headless" -}}
{{- if eq (toString .discovery.headless) "true" -}}true{{- end -}}
{{- end -}}

{{/*
host:port a caller dials for a peer service, by DNS name in this namespace: the peer's
headless Service (discovery.headless, the default: the binary balances each call over
every ready pod the name resolves to) or its ClusterIP Service (one virtual IP: a
connection stays on the pod it reached until the peer ages it out). An explicit
address wins. Called with (list $ serviceName port explicitAddress).
*/}}
{{- define "suite.peerAddress" -}}
{{- $ctx := index . 0 -}}
{{- $service := index . 1 -}}
{{- $host := $service -}}
{{- if include "suite.discovery.headless" $ctx.Values -}}
{{- $host = include "suite.headlessName" $service -}}
{{- end -}}
{{- default (printf "%s.%s.svc:%d" $host $ctx.Release.Namespace (int (index . 2))) (index . 3) -}}
{{- end -}}

{{/* A duration in ms for people: "30 s", "5 min", "1500 ms". */}}
{{- define "suite.duration" -}}
{{- $ms := int . -}}
{{- if and (ge $ms 60000) (eq (mod $ms 60000) 0) -}}{{ div $ms 60000 }} min
{{- else if and (ge $ms 1000) (eq (mod $ms 1000) 0) -}}{{ div $ms 1000 }} s
{{- else -}}{{ $ms }} ms
{{- end -}}
{{- end -}}

{{/* NOTES: the Services that reach this service's pods, and how its connections age. */}}
{{- define "suite.connections.notes" -}}
{{- $name := include "suite.name" . -}}
Callers in the cluster dial the headless Service {{ include "suite.headlessName" $name }}.{{ .Release.Namespace }}.svc:{{ .Values.ports.grpc }},
whose name resolves to every ready pod, and spread their calls over all of them; the ClusterIP
Service {{ $name }} is for port-forward, grpcurl and callers set to discovery.headless=false.
{{- if gt (int .Values.server.maxConnectionAgeMs) 0 }}
Connections are told to go away after {{ include "suite.duration" .Values.server.maxConnectionAgeMs }} (server.maxConnectionAgeMs, +/-10%), so clients
holding one connection (through the ClusterIP Service or a load balancer) rebalance too.
{{- else }}
Connections never age (server.maxConnectionAgeMs 0): a client holding one connection stays on one pod.
{{- end }}
{{- end -}}

{{/* NOTES: where this caller sends a peer's calls. Called with (list $ serviceName address). */}}
{{- define "suite.peerNotes" -}}
{{- $ctx := index . 0 -}}
{{- $service := index . 1 -}}
{{- $address := index . 2 -}}
{{- $host := (splitList ":" $address | first) -}}
{{- if hasPrefix (printf "%s.%s.svc" (include "suite.headlessName" $service) $ctx.Release.Namespace) $host -}}
{{ $service }} at {{ $address }}: each call to one of its ready pods (headless Service), re-resolved every {{ include "suite.duration" $ctx.Values.discovery.resolveIntervalMs }}
{{- else if hasPrefix (printf "%s.%s.svc" $service $ctx.Release.Namespace) $host -}}
{{ $service }} at {{ $address }}: one pod per connection (ClusterIP Service), until {{ $service }} ages the connection out
{{- else -}}
{{ $service }} at {{ $address }}, resolved every {{ include "suite.duration" $ctx.Values.discovery.resolveIntervalMs }}
{{- end -}}
{{- end -}}
