{{/* Names and labels. */}}
{{- define "dtm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dtm.fullname" -}}
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

{{- define "dtm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "dtm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" $ "component" "worker"). */}}
{{- define "dtm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dtm.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "dtm.coordinatorAddress" -}}
{{ include "dtm.fullname" . }}-coordinator:{{ .Values.coordinator.grpcPort }}
{{- end -}}

{{- define "dtm.redisUrl" -}}
{{- if .Values.redis.enabled -}}
redis://{{ include "dtm.fullname" . }}-redis:6379
{{- else -}}
{{- .Values.redis.externalUrl -}}
{{- end -}}
{{- end -}}

{{- define "dtm.tokenSecret" -}}
{{- default (printf "%s-token" (include "dtm.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* The ReadWriteMany claim mounted at sharedStorage.mountPath in every pod: the user's or the chart's. */}}
{{- define "dtm.sharedClaim" -}}
{{- default (printf "%s-shared" (include "dtm.fullname" .)) .Values.sharedStorage.existingClaim -}}
{{- end -}}

{{/* Prometheus annotation-based scraping of a pod's /metrics on the given port. */}}
{{- define "dtm.scrapeAnnotations" -}}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/*
Template-time checks: a values mistake fails `helm install`/`helm template` with a message instead
of deploying something that cannot work. Included once, from coordinator.yaml.
*/}}
{{- define "dtm.validate" -}}
{{- $w := .Values.worker -}}
{{- $as := $w.autoscaling -}}
{{- $_ := required "worker.model.existingClaim is required: the PVC holding the model checkpoint" $w.model.existingClaim -}}
{{- $_ := required "worker.model.mountPath is required" $w.model.mountPath -}}
{{- if and (not $as.enabled) (lt (int $w.replicas) 1) -}}
{{- fail "worker.replicas must be at least 1 when worker.autoscaling.enabled is false: no worker, no job runs" -}}
{{- end -}}
{{- if $as.enabled -}}
{{- if not (has $as.mode (list "hpa" "keda")) -}}
{{- fail (printf "worker.autoscaling.mode must be hpa or keda, not %q" $as.mode) -}}
{{- end -}}
{{- if lt (int $as.minReplicas) 1 -}}
{{- fail "worker.autoscaling.minReplicas must be at least 1: jobs resolve their model through registered workers, so with none no task is queued and nothing scales up" -}}
{{- end -}}
{{- if lt (int $as.maxReplicas) (int $as.minReplicas) -}}
{{- fail "worker.autoscaling.maxReplicas must be at least minReplicas" -}}
{{- end -}}
{{- if lt (int $as.tasksPerWorker) 1 -}}
{{- fail "worker.autoscaling.tasksPerWorker must be at least 1" -}}
{{- end -}}
{{- end -}}
{{- if and (hasPrefix "cuda" $w.device) (lt (int $w.gpu) 1) -}}
{{- fail "worker.device is cuda but worker.gpu is 0: the pod would get no GPU" -}}
{{- end -}}
{{- if and (not .Values.redis.enabled) (not .Values.redis.externalUrl) -}}
{{- fail "redis.enabled is false: set redis.externalUrl (redis://host:port)" -}}
{{- end -}}
{{- if and (ne .Values.coordinator.service.type "ClusterIP") (not .Values.tls.enabled) -}}
{{- fail "coordinator.service.type LoadBalancer/NodePort needs tls.enabled: the client token and results would cross the network in clear (use ClusterIP and kubectl port-forward otherwise)" -}}
{{- end -}}
{{- if .Values.tls.enabled -}}
{{- $_ := required "tls.secretName is required when tls.enabled" .Values.tls.secretName -}}
{{- end -}}
{{- $t := .Values.training -}}
{{- if or (lt (int $t.gangPort) 1) (gt (int $t.gangPort) 65535) (eq (int $t.gangPort) (int $w.healthPort)) (eq (int $t.gangPort) (int $w.metricsPort)) -}}
{{- fail "training.gangPort must be a port (1-65535) other than worker.healthPort and worker.metricsPort" -}}
{{- end -}}
{{- $s := .Values.sharedStorage -}}
{{- if $s.enabled -}}
{{- if or (not (hasPrefix "/" $s.mountPath)) (eq (trimSuffix "/" $s.mountPath) "") -}}
{{- fail "sharedStorage.mountPath must be an absolute path other than /" -}}
{{- end -}}
{{- if eq (trimSuffix "/" $s.mountPath) (trimSuffix "/" $w.model.mountPath) -}}
{{- fail "sharedStorage.mountPath must differ from worker.model.mountPath" -}}
{{- end -}}
{{- if not $s.existingClaim -}}
{{- $_ := required "sharedStorage.storageClassName is required when the chart makes the claim: a class providing ReadWriteMany (most default classes are ReadWriteOnce, and a Pending claim keeps every pod from starting); or set sharedStorage.existingClaim" $s.storageClassName -}}
{{- $_ := required "sharedStorage.size is required when the chart makes the claim" $s.size -}}
{{- end -}}
{{- range .Values.coordinator.extraArgs -}}
{{- if regexMatch "^--data-root(=|$)" (toString .) -}}
{{- fail "coordinator.extraArgs must not set the data root: sharedStorage.enabled sets it to sharedStorage.mountPath (the coordinator refuses a repeated flag)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if .Values.tls.requireWorkerCerts -}}
{{- if not .Values.tls.enabled -}}
{{- fail "tls.requireWorkerCerts needs tls.enabled" -}}
{{- end -}}
{{- $_ := required "tls.workerSecretName is required when tls.requireWorkerCerts" .Values.tls.workerSecretName -}}
{{- end -}}
{{- end -}}
