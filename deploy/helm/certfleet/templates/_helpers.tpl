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

{{/* Probes of a role's HTTP port (the API's, or the metrics listener of a role without one). Every role binds that port first and answers /healthz 200 while it waits for Redis or builds its indexes, so no startupProbe is needed: liveness fails only when a loop stopped for good. The timeout is above the 2 s within which both endpoints answer (a check that has not answered by then is named in a 503), so a hung Redis or ClickHouse shows as a 503 with its reason, not a probe timeout. */}}
{{- define "certfleet.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: {{ . }}}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 6
readinessProbe:
  httpGet: {path: /readyz, port: {{ . }}}
  periodSeconds: 5
  timeoutSeconds: 3
{{- end -}}
