{{- define "status-page.fullname" -}}
{{ .Release.Name }}-{{ .Chart.Name }}
{{- end -}}
