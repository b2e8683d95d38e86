{{/*
The chart name, or nameOverride.
*/}}
{{- define "kuant.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The base name of every resource: fullnameOverride, else the release name when it
already contains the chart name (release "kuant" gives "kuant-operator"), else
"<release>-<chart>". Trimmed so that "-ops-api" still fits in 63 characters.
*/}}
{{- define "kuant.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version for the helm.sh/chart label.
*/}}
{{- define "kuant.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels; callers add app.kubernetes.io/component.
*/}}
{{- define "kuant.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kuant.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "kuant.labels" -}}
helm.sh/chart: {{ include "kuant.chart" . }}
{{ include "kuant.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kuant
{{- end }}

{{/* Names of the three identities. */}}
{{- define "kuant.operator.name" -}}
{{- printf "%s-operator" (include "kuant.fullname" .) }}
{{- end }}

{{- define "kuant.opsApi.name" -}}
{{- printf "%s-ops-api" (include "kuant.fullname" .) }}
{{- end }}

{{/*
The Secret the ops API makes at first start for its tokens, when opsApi.tokens.existingSecret
is not set.
*/}}
{{- define "kuant.opsApi.tokensSecret" -}}
{{- printf "%s-ops-api-tokens" (include "kuant.fullname" .) }}
{{- end }}

{{/*
The identity of agent pods: the ServiceAccount name the operator creates in every
namespace that holds a kuant resource, and the ClusterRole it binds there.
*/}}
{{- define "kuant.agent.name" -}}
{{- printf "%s-agent" (include "kuant.fullname" .) }}
{{- end }}

{{/*
The identity of TradingSession agent pods: rights of their own (a Backtest pod must not get a
session's, nor the reverse), created and bound per namespace like the agent's.
*/}}
{{- define "kuant.sessionAgent.name" -}}
{{- printf "%s-session-agent" (include "kuant.fullname" .) }}
{{- end }}

{{/*
The one image of every role.
*/}}
{{- define "kuant.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Pod security context shared by every pod (restricted Pod Security Standard).
*/}}
{{- define "kuant.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Container security context shared by every container.
*/}}
{{- define "kuant.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end }}

{{/*
The bundled PostgreSQL (postgresql.enabled; for trying kuant out, not for production).
*/}}
{{- define "kuant.postgresql.name" -}}
{{- printf "%s-postgresql" (include "kuant.fullname" .) }}
{{- end }}

{{/*
The Secret holding the store's URL, or "" for none: database.existingSecret, else the
password-free one the chart makes for its bundled PostgreSQL.
*/}}
{{- define "kuant.database.secret" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else if .Values.postgresql.enabled }}
{{- printf "%s-database" (include "kuant.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Egress every agent needs: DNS, the API server, the store.
*/}}
{{- define "kuant.networkPolicy.common" -}}
{{- $np := .Values.networkPolicy -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- with $np.apiServer.cidrs }}
- to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - port: {{ $np.apiServer.port }}
      protocol: TCP
{{- end }}
{{- if or $np.store.cidrs $.Values.postgresql.enabled }}
- to:
    {{- range $np.store.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- if $.Values.postgresql.enabled }}
    - podSelector:
        matchLabels:
          app.kubernetes.io/component: postgresql
    {{- end }}
  ports:
    - port: {{ $np.store.port }}
      protocol: TCP
{{- end }}
{{- end }}
