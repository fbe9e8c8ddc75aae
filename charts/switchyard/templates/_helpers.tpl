{{/* Chart name, truncated to 63 chars (a DNS label). */}}
{{- define "switchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; the release name alone when it already contains the chart name. */}}
{{- define "switchyard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "switchyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "switchyard.labels" -}}
helm.sh/chart: {{ include "switchyard.chart" . }}
{{ include "switchyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The pods' identity: what the Deployment, Services, PDB, NetworkPolicy and spread constraints select. */}}
{{- define "switchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "switchyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchyard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "switchyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* host:port for a listener; IPv6 addresses in brackets. Call with (list $ PORT). */}}
{{- define "switchyard.listen" -}}
{{- $root := index . 0 }}
{{- $port := index . 1 | int }}
{{- $host := $root.Values.listenAddress }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host $port }}
{{- else }}
{{- printf "%s:%d" $host $port }}
{{- end }}
{{- end }}

{{/* Greater than drainDelay + shutdown timeout, or the rolling update kills pods mid-drain. */}}
{{- define "switchyard.terminationGracePeriodSeconds" -}}
{{- $drain := add .Values.shutdown.drainDelaySeconds .Values.shutdown.timeoutSeconds }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $drain 10 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) (int $drain) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than shutdown.drainDelaySeconds + shutdown.timeoutSeconds (%d)" (int .Values.terminationGracePeriodSeconds) (int $drain)) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* The ConfigMap that holds the routes: yours (config.existingConfigMap), else the chart's own. */}}
{{- define "switchyard.routesConfigMap" -}}
{{- if .Values.config.existingConfigMap }}
{{- .Values.config.existingConfigMap }}
{{- else if eq .Values.config.source "api" }}
{{- printf "%s-routes" (include "switchyard.fullname" .) }}
{{- else }}
{{- include "switchyard.fullname" . }}
{{- end }}
{{- end }}

{{/* listeners.yaml: entrypoint, admin and shutdown from the values, so ports and grace period always match. */}}
{{- define "switchyard.listenersFile" -}}
{{- $listeners := dict
  "entrypoint" (dict
    "address" (include "switchyard.listen" (list . .Values.entrypoint.port))
    "maxConnectionAge" .Values.entrypoint.maxConnectionAge
    "maxConnectionAgeGrace" .Values.entrypoint.maxConnectionAgeGrace)
  "admin" (dict "address" (include "switchyard.listen" (list . .Values.admin.port)))
  "shutdown" (dict
    "drainDelay" (printf "%ds" (int .Values.shutdown.drainDelaySeconds))
    "timeout" (printf "%ds" (int .Values.shutdown.timeoutSeconds))) -}}
listeners.yaml: |
  # Rendered by the switchyard chart from its values (entrypoint, admin,
  # listenAddress, shutdown): the ports match the Service and the probes.
  # Changes here apply at the next restart.
  version: 1
  {{- toYaml $listeners | nindent 2 }}
{{- end }}

{{/* routes.yaml from values.routes (with allowRouteRemoval and removalGuard). */}}
{{- define "switchyard.routesFile" -}}
{{- if and (not .Values.routes) (not .Values.allowRouteRemoval) }}
{{- fail "values.routes is empty: every request would get 404. Pass your routes (-f my-routes.yaml), or set config.existingConfigMap, or allowRouteRemoval=true to deploy with no routes" }}
{{- end }}
{{- $routes := dict "routes" .Values.routes "removalGuard" .Values.removalGuard }}
{{- if .Values.allowRouteRemoval }}
{{- $_ := set $routes "allowRouteRemoval" true }}
{{- end }}
routes.yaml: |
  # Rendered by the switchyard chart from values.routes, allowRouteRemoval and
  # removalGuard. Hot-reloaded: no restart.
  version: 1
  {{- toYaml $routes | nindent 2 }}
{{- end }}
