{{/*
Names, labels and shared values. Resource names follow agent_identity.app.operator_rbac when the release is
named "agent-identity-operator" (or fullnameOverride is): ClusterRoles <fullname>,
<fullname>:namespace and <fullname>:ceilings, RoleBindings <fullname>-namespace and
<fullname>-ceilings.
*/}}

{{- define "aio.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or the release name alone when it already contains the chart name. */}}
{{- define "aio.fullname" -}}
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

{{- define "aio.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aio.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aio.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "aio.labels" -}}
{{ include "aio.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agent-identity-operator
helm.sh/chart: {{ include "aio.chart" . }}
{{- end -}}

{{- define "aio.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The webhook Service and the name the API server reaches it at (in the serving certificate). */}}
{{- define "aio.webhookService" -}}
{{- printf "%s-webhook" (include "aio.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aio.webhookHost" -}}
{{- printf "%s.%s.svc" (include "aio.webhookService" .) .Release.Namespace -}}
{{- end -}}

{{- define "aio.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "aio.fullname" .) -}}
{{- end -}}

{{- define "aio.metricsService" -}}
{{- printf "%s-metrics" (include "aio.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The ValidatingAdmissionPolicy and its binding that fence the operator's own writes (fence.yaml). */}}
{{- define "aio.fence" -}}
{{- printf "%s-fence" (include "aio.fullname" .) -}}
{{- end -}}

{{- define "aio.jwksService" -}}
{{- printf "%s-jwks" (include "aio.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* --issuer: signing.issuer, else the JWKS Service's in-cluster URL when it is served, else none. */}}
{{- define "aio.issuer" -}}
{{- if .Values.signing.issuer -}}
{{- .Values.signing.issuer -}}
{{- else if .Values.signing.jwks.enabled -}}
{{- printf "http://%s.%s.svc" (include "aio.jwksService" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* The union (concatenation) of the profiles' permission ceilings, plus rbac.extraCeilingRules. */}}
{{- define "aio.ceilingRules" -}}
{{- $rules := list -}}
{{- range .Values.profiles -}}
{{- $rules = concat $rules .spec.permissionCeiling -}}
{{- end -}}
{{- $rules = concat $rules .Values.rbac.extraCeilingRules -}}
{{- if $rules }}{{ toYaml $rules }}{{ else }}[]{{ end -}}
{{- end -}}

{{/* .Values.affinity, plus the podAntiAffinity of .Values.podAntiAffinity (replicas on different
nodes: preferred or required) unless affinity sets its own. */}}
{{- define "aio.affinity" -}}
{{- $affinity := deepCopy .Values.affinity -}}
{{- if and (ne .Values.podAntiAffinity "none") (not (hasKey $affinity "podAntiAffinity")) -}}
{{- $term := dict "labelSelector" (dict "matchLabels" (include "aio.selectorLabels" . | fromYaml)) "topologyKey" "kubernetes.io/hostname" -}}
{{- if eq .Values.podAntiAffinity "required" -}}
{{- $_ := set $affinity "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) -}}
{{- else -}}
{{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) -}}
{{- end -}}
{{- end -}}
{{- toYaml $affinity -}}
{{- end -}}

{{/* Refuse configurations that cannot work, with a message that says why. */}}
{{- define "aio.validate" -}}
{{- if has .Release.Namespace .Values.watchNamespaces -}}
{{- fail (printf "watchNamespaces must not include the release namespace %q: the webhooks exclude it (so a broken operator can always be repaired), so identities there could not be stamped with their creator and would be Denied" .Release.Namespace) -}}
{{- end -}}
{{- with .Values.networkPolicy }}
{{- if and .enabled (not .webhook.allowFromAnywhere) (not (or .webhook.cidrs .webhook.namespaceSelectors .webhook.podSelectors .webhook.peers)) -}}
{{- fail "networkPolicy.webhook admits nobody: the API server could not call the webhooks (failurePolicy Fail refuses every AgentIdentity then). List the API server's addresses in networkPolicy.webhook.cidrs (or its peers), or set networkPolicy.webhook.allowFromAnywhere=true" -}}
{{- end -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail (printf "replicaCount=%v needs leaderElection.enabled=true: without it every replica would act on the same identities" .Values.replicaCount) -}}
{{- end -}}
{{- if and (or .Values.metrics.serviceMonitor.enabled .Values.metrics.prometheusRule.enabled) (not .Values.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor and metrics.prometheusRule need metrics.enabled=true" -}}
{{- end -}}
{{- end -}}
