{{/*
Chart name, at most 63 characters (a DNS label).
*/}}
{{- define "apiscope.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: RELEASE-NAME, or RELEASE when it already contains NAME.
*/}}
{{- define "apiscope.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "apiscope.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "apiscope.labels" -}}
helm.sh/chart: {{ include "apiscope.chart" . }}
{{ include "apiscope.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: agent
{{- end }}

{{/*
Labels that select the DaemonSet's pods (immutable once deployed: keep them stable).
*/}}
{{- define "apiscope.selectorLabels" -}}
app.kubernetes.io/name: {{ include "apiscope.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the pods run as.
*/}}
{{- define "apiscope.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "apiscope.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference.
*/}}
{{- define "apiscope.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The agent's config.yaml: the `config` value, plus the keys the chart owns. server.listen is
all addresses on server.port, so that the kubelet's probes reach it; inventory.directory is
where the inventory hostPath is mounted; the node name is not here
but in APISCOPE_KUBERNETES_NODE_NAME (downward API), and the OTLP endpoint, protocol and headers are in
OTEL_EXPORTER_OTLP_* variables (headers from a Secret only).
*/}}
{{- define "apiscope.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $_ := set $config "server" (dict "listen" (printf "0.0.0.0:%d" (int .Values.server.port))) }}
{{- $inventory := deepCopy (default (dict) $config.inventory) }}
{{- $_ := set $inventory "directory" "/var/lib/apiscope" }}
{{- $_ := set $config "inventory" $inventory }}
{{- toYaml $config }}
{{- end }}

{{/*
True (non-empty) when the container runs with added capabilities rather than privileged, and
those include SYS_ADMIN: Kubernetes then refuses allowPrivilegeEscalation: false.
*/}}
{{- define "apiscope.needsPrivilegeEscalation" -}}
{{- if or .Values.securityContext.privileged (has "SYS_ADMIN" .Values.securityContext.capabilities) }}true{{- end }}
{{- end }}

{{/*
An appArmorProfile object ({type, localhostProfile}) as the value of the AppArmor annotation
that Kubernetes before 1.30 reads instead of the field.
*/}}
{{- define "apiscope.appArmorAnnotation" -}}
{{- if eq .type "Unconfined" }}unconfined
{{- else if eq .type "RuntimeDefault" }}runtime/default
{{- else }}localhost/{{ .localhostProfile }}
{{- end }}
{{- end }}
