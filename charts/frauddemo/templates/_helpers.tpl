{{/* The chart's name, overridable. */}}
{{- define "frauddemo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name, prefixed with the chart's unless it already holds it. */}}
{{- define "frauddemo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "frauddemo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The standard labels of every object the chart makes. */}}
{{- define "frauddemo.labels" -}}
helm.sh/chart: {{ include "frauddemo.chart" . }}
{{ include "frauddemo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: frauddemo
{{- end -}}

{{- define "frauddemo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "frauddemo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The labels of the ServiceMonitor and the PrometheusRule: with the release label Prometheus selects by. */}}
{{- define "frauddemo.monitoringLabels" -}}
{{ include "frauddemo.labels" . }}
app.kubernetes.io/component: monitoring
{{- with .Values.monitoring.release }}
release: {{ . | quote }}
{{- end }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "frauddemo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "frauddemo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image reference: repository@digest, else repository:tag (the tag defaults to the appVersion). */}}
{{- define "frauddemo.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator serves (a list), or nothing when it serves the whole cluster. */}}
{{- define "frauddemo.watchNamespaces" -}}
{{- if not .Values.operator.clusterWide -}}
{{- toJson (.Values.operator.watchNamespaces | default (list .Release.Namespace)) -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/* The operator's liveness port (kopf's health endpoint; the operator's default too). */}}
{{- define "frauddemo.healthPort" -}}8081{{- end -}}

{{/*
What the operator does to the API: the same list as frauddemo_operator.kube.CALLS (the chart tests
check the two agree, both ways). kopf's peering resources are left out: the chart runs the operator
standalone (one replica, Recreate).
*/}}
{{- define "frauddemo.rbacRules" -}}
- apiGroups: [frauddemo.io]
  resources: [frauddemos]
  verbs: [get, list, watch, patch]
- apiGroups: [frauddemo.io]
  resources: [frauddemos/status]
  verbs: [get, patch]
# blockOwnerDeletion on the children's ownerReferences
- apiGroups: [frauddemo.io]
  resources: [frauddemos/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [secrets, configmaps, services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [apps]
  resources: [statefulsets, deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [get, list, watch, create, patch, delete]
{{- end -}}

{{/*
The namespaces whose FraudDemos the pre-delete hook deletes (a JSON list): the release's own namespace
when the operator serves it, and the sample's.
*/}}
{{- define "frauddemo.uninstallNamespaces" -}}
{{- $out := list -}}
{{- $served := include "frauddemo.watchNamespaces" . | fromJsonArray -}}
{{- if or .Values.operator.clusterWide (has .Release.Namespace $served) -}}
{{- $out = append $out .Release.Namespace -}}
{{- end -}}
{{- if .Values.sample.enabled -}}
{{- $out = append $out (.Values.sample.namespace | default .Release.Namespace) -}}
{{- end -}}
{{- toJson ($out | uniq) -}}
{{- end -}}
