{{/*
The service's Deployment. Called with (dict "ctx" $ "track" "stable"|"canary").
Each service chart defines "<chart>.env", "<chart>.volumeMounts" and "<chart>.volumes".
*/}}
{{- define "suite.deployment" -}}
{{- $ := .ctx -}}
{{- $track := .track -}}
{{- $name := include "suite.name" $ -}}
{{- $canary := eq $track "canary" -}}
{{- if hasKey $.Values "database" }}{{ include "suite.database.check" $ }}{{ end -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ ternary (printf "%s-canary" $name) $name $canary }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "suite.labels" $ | nindent 4 }}
    suite.io/track: {{ $track }}
spec:
  {{- if $canary }}
  replicas: {{ $.Values.canary.replicas }}
  {{- else if not $.Values.autoscaling.enabled }}
  replicas: {{ $.Values.replicas }}
  {{- end }}
  revisionHistoryLimit: {{ $.Values.revisionHistoryLimit }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: {{ $.Values.rollingUpdate.maxSurge }}
      maxUnavailable: {{ $.Values.rollingUpdate.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "suite.selectorLabels" $ | nindent 6 }}
      suite.io/track: {{ $track }}
  template:
    metadata:
      labels:
        {{- include "suite.labels" $ | nindent 8 }}
        suite.io/track: {{ $track }}
        {{- with $.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- /* Files read once at start-up restart the pods when they change; certificates reload on their own. */}}
        checksum/config: {{ include (printf "%s.configFiles" $.Chart.Name) $ | sha256sum }}
        {{- with $.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ $name }}
      automountServiceAccountToken: {{ $.Values.serviceAccount.automountToken }}
      {{- /* Peers are found by DNS name; service-link variables would only crowd the environment. */}}
      enableServiceLinks: false
      {{- include "suite.imagePullSecrets" $ | nindent 6 }}
      {{- with $.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- include "suite.podSecurityContext" $ | nindent 8 }}
      terminationGracePeriodSeconds: {{ include "suite.terminationGracePeriodSeconds" $ }}
      {{- if $.Values.topologySpread.enabled }}
      topologySpreadConstraints:
        {{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
        - topologyKey: {{ $key }}
          maxSkew: {{ $.Values.topologySpread.maxSkew }}
          whenUnsatisfiable: {{ $.Values.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "suite.selectorLabels" $ | nindent 14 }}
              suite.io/track: {{ $track }}
          matchLabelKeys:
            - pod-template-hash
        {{- end }}
      {{- end }}
      {{- with $.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $name }}
          image: {{ include "suite.image" (list $ (ternary $.Values.canary.image.tag $.Values.image.tag $canary)) | quote }}
          imagePullPolicy: {{ $.Values.image.pullPolicy }}
          args: ["serve"]
          ports:
            - name: grpc
              containerPort: {{ $.Values.ports.grpc }}
              protocol: TCP
            - name: admin
              containerPort: {{ $.Values.ports.admin }}
              protocol: TCP
          env:
            {{- include "suite.commonEnv" $ | nindent 12 }}
            {{- include (printf "%s.env" $.Chart.Name) $ | nindent 12 }}
            {{- include "suite.tracing.env" (dict "ctx" $ "track" $track) | nindent 12 }}
          {{- /* gRPC probes need a numeric port. Startup and liveness ask for "liveness", which stays
                 SERVING while the process lives, so a database outage never restarts pods;
                 readiness asks for "" (every served service), which follows the dependencies. */}}
          startupProbe:
            grpc:
              port: {{ $.Values.ports.admin }}
              service: liveness
            periodSeconds: {{ $.Values.probes.startup.periodSeconds }}
            timeoutSeconds: {{ $.Values.probes.startup.timeoutSeconds }}
            failureThreshold: {{ $.Values.probes.startup.failureThreshold }}
          livenessProbe:
            grpc:
              port: {{ $.Values.ports.admin }}
              service: liveness
            periodSeconds: {{ $.Values.probes.liveness.periodSeconds }}
            timeoutSeconds: {{ $.Values.probes.liveness.timeoutSeconds }}
            failureThreshold: {{ $.Values.probes.liveness.failureThreshold }}
          readinessProbe:
            grpc:
              port: {{ $.Values.ports.admin }}
              service: ""
            periodSeconds: {{ $.Values.probes.readiness.periodSeconds }}
            timeoutSeconds: {{ $.Values.probes.readiness.timeoutSeconds }}
            failureThreshold: {{ $.Values.probes.readiness.failureThreshold }}
            successThreshold: 1
          lifecycle:
            {{- /* Keeps serving while the endpoint removal reaches every client and proxy;
                   SIGTERM (and the binary's drain) follows. */}}
            preStop:
              sleep:
                seconds: {{ $.Values.shutdown.preStopSleepSeconds }}
          resources:
            {{- toYaml (ternary ($.Values.canary.resources | default $.Values.resources) $.Values.resources $canary) | nindent 12 }}
          securityContext:
            {{- include "suite.containerSecurityContext" $ | nindent 12 }}
          volumeMounts:
            - name: tls
              mountPath: /etc/suite/tls
              readOnly: true
            {{- if $.Values.tls.caConfigMap.name }}
            - name: ca
              mountPath: /etc/suite/ca
              readOnly: true
            {{- end }}
            {{- if and (hasKey $.Values "database") $.Values.database.embeddedSqlite }}
            - name: data
              mountPath: /data
            {{- end }}
            {{- include (printf "%s.volumeMounts" $.Chart.Name) $ | nindent 12 }}
            {{- with include "suite.tracing.volumeMounts" $ | trim }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        {{- /* Whole-directory mounts (never subPath) so rotated files appear in place and the binary reloads them. */}}
        - name: tls
          secret:
            secretName: {{ include "suite.tlsSecretName" $ }}
            defaultMode: 0440
        {{- if $.Values.tls.caConfigMap.name }}
        - name: ca
          configMap:
            name: {{ $.Values.tls.caConfigMap.name }}
            items:
              - key: {{ $.Values.tls.caConfigMap.key }}
                path: ca.crt
        {{- end }}
        {{- if and (hasKey $.Values "database") $.Values.database.embeddedSqlite }}
        - name: data
          emptyDir:
            sizeLimit: 1Gi
        {{- end }}
        {{- include (printf "%s.volumes" $.Chart.Name) $ | nindent 8 }}
        {{- with include "suite.tracing.volumes" $ | trim }}
        {{- . | nindent 8 }}
        {{- end }}
{{- end -}}
