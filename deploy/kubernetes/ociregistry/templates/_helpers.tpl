{{/* The chart's name, truncated for label values. */}}
{{- define "ociregistry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's objects' name: the release name, with the chart's unless it holds it already. */}}
{{- define "ociregistry.fullname" -}}
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

{{- define "ociregistry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ociregistry.labels" -}}
helm.sh/chart: {{ include "ociregistry.chart" . }}
{{ include "ociregistry.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ociregistry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ociregistry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ociregistry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ociregistry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* registry/repository:tag, or @digest when a digest is given; the tag defaults to appVersion. */}}
{{- define "ociregistry.image" -}}
{{- $img := .Values.image.ociregistry }}
{{- $ref := printf ":%s" (default .Chart.AppVersion $img.tag) }}
{{- if $img.digest }}
{{- $ref = printf "@%s" $img.digest }}
{{- end }}
{{- if $img.registry }}
{{- printf "%s/%s%s" $img.registry $img.repository $ref }}
{{- else }}
{{- printf "%s%s" $img.repository $ref }}
{{- end }}
{{- end }}

{{/* The health port: health.port (passed as --health), else the config file's health key. */}}
{{- define "ociregistry.healthPort" -}}
{{- $cfg := .Values.serverConfig.configuration | default dict }}
{{- with coalesce .Values.health.port $cfg.health }}{{ . }}{{ end }}
{{- end }}

{{/* The metrics port: metrics.port (passed as --metrics), else the config file's metrics key. */}}
{{- define "ociregistry.metricsPort" -}}
{{- $cfg := .Values.serverConfig.configuration | default dict }}
{{- with coalesce .Values.metrics.port $cfg.metrics }}{{ . }}{{ end }}
{{- end }}

{{/* The config file's text: serverConfig.configuration with port from service.port and
serverTlsConfig from serverTls. */}}
{{- define "ociregistry.configFile" -}}
{{- $cfg := deepCopy (.Values.serverConfig.configuration | default dict) }}
{{- $_ := set $cfg "port" (int .Values.service.port) }}
{{- if .Values.serverTls.enabled }}
{{- $tls := dict "cert" "/etc/pki/ociregistry/tls.crt" "key" "/etc/pki/ociregistry/tls.key" "clientAuth" .Values.serverTls.clientAuth }}
{{- if or .Values.serverTls.ca (and .Values.serverTls.secretName (eq .Values.serverTls.clientAuth "verify")) }}
{{- $_ := set $tls "ca" "/etc/pki/ociregistry/ca.crt" }}
{{- end }}
{{- $_ := set $cfg "serverTlsConfig" $tls }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Refuses value combinations that cannot work, naming the values. */}}
{{- define "ociregistry.validate" -}}
{{- $p := .Values.persistence }}
{{- if and $p.hostPath.enabled $p.persistentVolumeClaim.enabled }}
{{- fail "persistence.hostPath and persistence.persistentVolumeClaim exclude each other: enable one" }}
{{- end }}
{{- if and (eq .Values.kind "DaemonSet") $p.persistentVolumeClaim.enabled }}
{{- fail "kind: DaemonSet with persistence.persistentVolumeClaim would have every node's pod share one claim (and one image path lock): use persistence.hostPath or emptyDir" }}
{{- end }}
{{- if and .Values.observability.enabled (not (include "ociregistry.metricsPort" .)) }}
{{- fail "observability.enabled needs a metrics port: set metrics.port or serverConfig.configuration.metrics" }}
{{- end }}
{{- if and .Values.serverTls.enabled (not .Values.serverTls.secretName) (or (not .Values.serverTls.cert) (not .Values.serverTls.key)) }}
{{- fail "serverTls.enabled without serverTls.secretName needs serverTls.cert and serverTls.key (PEM)" }}
{{- end }}
{{- $cfg := .Values.serverConfig.configuration | default dict }}
{{- if and $cfg.port (ne (int $cfg.port) (int .Values.service.port)) }}
{{- fail (printf "serverConfig.configuration.port (%v) differs from service.port (%v): the container and Service ports follow service.port, so set that one" $cfg.port .Values.service.port) }}
{{- end }}
{{- if and .Values.serverTls.enabled (not .Values.serverConfig.configuration) }}
{{- fail "serverTls.enabled needs a config file to carry serverTlsConfig: serverConfig.configuration must not be null" }}
{{- end }}
{{- end }}
