{{/* Labels on every object. */}}
{{- define "kilo.labels" -}}
app.kubernetes.io/name: kilo
app.kubernetes.io/part-of: kilo
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The agent DaemonSet's selector (same as the plain manifests', so either can replace the other). */}}
{{- define "kilo.selectorLabels" -}}
app.kubernetes.io/name: kilo
app.kubernetes.io/part-of: kilo
{{- end }}

{{- define "kilo.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* "true" when Kilo manages the CNI: cni.enabled, and not in flannel compatibility mode. */}}
{{- define "kilo.cni" -}}
{{- if and .Values.cni.enabled (ne .Values.compatibility "flannel") -}}true{{- end -}}
{{- end }}
