{{- define "calsync.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "calsync.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "calsync.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector of one component's pods: (dict "root" $ "component" "controller"|"api"). */}}
{{- define "calsync.componentSelector" -}}
{{ include "calsync.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* ServiceAccount of one component: (dict "root" $ "component" "controller"|"api"). */}}
{{- define "calsync.serviceAccountName" -}}
{{- $sa := .root.Values.serviceAccount -}}
{{- $name := ternary $sa.controllerName $sa.apiName (eq .component "controller") -}}
{{- if $sa.create -}}
{{- default (printf "%s-%s" (include "calsync.fullname" .root) .component) $name -}}
{{- else -}}
{{- required (printf "serviceAccount.%sName is required when serviceAccount.create is false" .component) $name -}}
{{- end -}}
{{- end -}}

{{- define "calsync.secretName" -}}
{{- default (include "calsync.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{- define "calsync.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Namespace the API reads and writes CalendarConnections, TaskSyncs and Secrets in. */}}
{{- define "calsync.apiNamespace" -}}
{{- default .Release.Namespace .Values.api.namespace -}}
{{- end -}}

{{/* Where both processes read their keys: files, never environment variables. */}}
{{- define "calsync.secretsDir" -}}/etc/calsync/secrets{{- end -}}

{{/* Pod-level settings shared by both Deployments. */}}
{{- define "calsync.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "calsync.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Spread one component's replicas over nodes: (dict "root" $ "component" ...). */}}
{{- define "calsync.topologySpread" -}}
{{- with .root.Values.topologySpread }}
{{- if .enabled }}
topologySpreadConstraints:
  - maxSkew: {{ .maxSkew }}
    topologyKey: {{ .topologyKey }}
    whenUnsatisfiable: {{ .whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "calsync.componentSelector" $ | nindent 8 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* OpenTelemetry trace export (README "Traces"); nothing when otel.endpoint is empty. */}}
{{- define "calsync.otelEnv" -}}
{{- with .Values.otel }}
{{- if .endpoint }}
- {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: {{ .endpoint | quote }}}
- {name: OTEL_SERVICE_NAME, value: {{ .serviceName | default "calsync" | quote }}}
{{- with .sampler }}
- {name: OTEL_TRACES_SAMPLER, value: {{ . | quote }}}
{{- end }}
{{- with .samplerArg }}
- {name: OTEL_TRACES_SAMPLER_ARG, value: {{ . | quote }}}
{{- end }}
{{- with .resourceAttributes }}
- {name: OTEL_RESOURCE_ATTRIBUTES, value: {{ . | quote }}}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The collector's headers (OTEL_EXPORTER_OTLP_HEADERS) as a file in the secrets directory. */}}
{{- define "calsync.otelHeadersSource" -}}
{{- with .Values.otel }}
{{- if and .endpoint .headersSecret }}
- secret:
    name: {{ .headersSecret | quote }}
    items:
      - {key: {{ .headersSecretKey | quote }}, path: OTEL_EXPORTER_OTLP_HEADERS}
{{- end }}
{{- end }}
{{- end }}
