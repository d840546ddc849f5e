{{- define "certfleet.name" -}}{{ .Release.Name }}-certfleet{{- end -}}

{{- define "certfleet.labels" -}}
app.kubernetes.io/name: certfleet
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "certfleet.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}

{{/* Environment shared by every role: the stores, and each replica's consumer name (its pod name, stable across restarts of a StatefulSet, unique per pod here). */}}
{{- define "certfleet.env" -}}
- name: CERTFLEET_REDIS_URL
  value: {{ .Values.redis.url | quote }}
- name: CERTFLEET_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end -}}

{{- define "certfleet.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: {{ . }}}
  periodSeconds: 10
  failureThreshold: 6
readinessProbe:
  httpGet: {path: /readyz, port: {{ . }}}
  periodSeconds: 5
{{- end -}}
