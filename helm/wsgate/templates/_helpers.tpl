{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "wsgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. Truncated to 57 characters so that "-redis" still fits in 63.
*/}}
{{- define "wsgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 57 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 57 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 57 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "wsgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "wsgate.labels" -}}
helm.sh/chart: {{ include "wsgate.chart" . }}
{{ include "wsgate.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels of the gateway pods.
*/}}
{{- define "wsgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wsgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{/*
The internal admin Service: name, and labels that tell it from the public one (the
ServiceMonitor selects by them).
*/}}
{{- define "wsgate.admin.fullname" -}}
{{- printf "%s-admin" (include "wsgate.fullname" .) }}
{{- end }}

{{- define "wsgate.admin.labels" -}}
helm.sh/chart: {{ include "wsgate.chart" . }}
app.kubernetes.io/name: {{ include "wsgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: admin
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Bundled Redis: name and selector labels.
*/}}
{{- define "wsgate.redis.fullname" -}}
{{- printf "%s-redis" (include "wsgate.fullname" .) }}
{{- end }}

{{- define "wsgate.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wsgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "wsgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wsgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The gateway image reference: repository@digest, or repository:tag (tag defaults to appVersion).
*/}}
{{- define "wsgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the JWT key: auth.existingSecret, else the chart's Secret.
*/}}
{{- define "wsgate.authSecretName" -}}
{{- default (include "wsgate.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{/*
The key sources set in the values, by name, in a fixed order.
*/}}
{{- define "wsgate.authSources" -}}
{{- $s := list }}
{{- if .Values.auth.jwtSecret }}{{ $s = append $s "auth.jwtSecret" }}{{ end }}
{{- if .Values.auth.jwtPublicKey }}{{ $s = append $s "auth.jwtPublicKey" }}{{ end }}
{{- if .Values.auth.jwks.url }}{{ $s = append $s "auth.jwks.url" }}{{ end }}
{{- if .Values.auth.existingSecret }}{{ $s = append $s "auth.existingSecret" }}{{ end }}
{{- join "," $s }}
{{- end }}

{{/*
The auth mode in force: auth.mode when set, else the one the source implies (secret when
there is none: the chart generates it).
*/}}
{{- define "wsgate.authMode" -}}
{{- if .Values.auth.mode }}{{ .Values.auth.mode }}
{{- else if .Values.auth.jwtPublicKey }}publicKey
{{- else if .Values.auth.jwks.url }}jwks
{{- else }}secret
{{- end }}
{{- end }}

{{/*
The key in that Secret for the chosen auth mode.
*/}}
{{- define "wsgate.authSecretKey" -}}
{{- if eq (include "wsgate.authMode" .) "publicKey" }}
{{- .Values.auth.existingSecretKeys.jwtPublicKey }}
{{- else }}
{{- .Values.auth.existingSecretKeys.jwtSecret }}
{{- end }}
{{- end }}

{{/*
The sources of the gateway's projected "secrets" volume (empty when it needs no file).
*/}}
{{- define "wsgate.secretVolumeSources" -}}
{{- $mode := include "wsgate.authMode" . }}
{{- if ne $mode "jwks" }}
- secret:
    name: {{ include "wsgate.authSecretName" . }}
    items:
      - key: {{ include "wsgate.authSecretKey" . }}
        path: {{ if eq $mode "publicKey" }}jwt-public-key.pem{{ else }}jwt-secret{{ end }}
{{- end }}
{{- if include "wsgate.redisHasPassword" . }}
- secret:
    name: {{ include "wsgate.redisPasswordSecretName" . }}
    items:
      - key: {{ include "wsgate.redisPasswordSecretKey" . }}
        path: redis-password
{{- end }}
{{- end }}

{{/*
Where the gateway reads its secret files: one projected volume of Secret items.
*/}}
{{- define "wsgate.secretsDir" -}}/etc/wsgate/secrets{{- end }}

{{/*
Whether the gateway gets a REDIS_URL at all: "true" or "".
*/}}
{{- define "wsgate.redisConfigured" -}}
{{- if or .Values.redis.enabled .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{/*
Name and key of the Secret that holds REDIS_URL: redis.existingSecret, else the chart's
Secret (which holds the URL of the bundled Redis or redis.url).
*/}}
{{- define "wsgate.redisSecretName" -}}
{{- if and (not .Values.redis.enabled) .Values.redis.existingSecret }}
{{- .Values.redis.existingSecret }}
{{- else }}
{{- include "wsgate.fullname" . }}
{{- end }}
{{- end }}

{{- define "wsgate.redisSecretKey" -}}
{{- if and (not .Values.redis.enabled) .Values.redis.existingSecret }}
{{- .Values.redis.existingSecretKey }}
{{- else -}}
redis-url
{{- end }}
{{- end }}

{{/*
REDIS_URL for the chart's own Secret (redis.url). The bundled Redis's URL carries no
password and is a plain env value (wsgate.redisBundledUrl).
*/}}
{{- define "wsgate.redisUrl" -}}
{{- .Values.redis.url }}
{{- end }}

{{- define "wsgate.redisBundledUrl" -}}
{{- printf "redis://%s:6379" (include "wsgate.redis.fullname" .) }}
{{- end }}

{{/*
Whether the gateway gets REDIS_PASSWORD_FILE: "true" or "". Always for the bundled Redis.
*/}}
{{- define "wsgate.redisHasPassword" -}}
{{- if or .Values.redis.enabled (and (include "wsgate.redisConfigured" .) (or .Values.redis.password .Values.redis.existingPasswordSecret)) }}true{{ end }}
{{- end }}

{{- define "wsgate.redisPasswordSecretName" -}}
{{- default (include "wsgate.fullname" .) .Values.redis.existingPasswordSecret }}
{{- end }}

{{- define "wsgate.redisPasswordSecretKey" -}}
{{- if .Values.redis.existingPasswordSecret }}{{ .Values.redis.existingPasswordSecretKey }}{{ else }}redis-password{{ end }}
{{- end }}

{{/*
The Redis password the chart stores: redis.password, else the one already in the cluster
(so upgrades keep it), else a new random one.
*/}}
{{- define "wsgate.redisPasswordValue" -}}
{{- if .Values.redis.password }}
{{- .Values.redis.password }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "wsgate.fullname" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "redis-password") }}
{{- index $existing.data "redis-password" | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The HS256 secret the chart stores: auth.jwtSecret, else the one already in the cluster
(so upgrades keep it), else a new random one.
*/}}
{{- define "wsgate.jwtSecretValue" -}}
{{- if .Values.auth.jwtSecret }}
{{- .Values.auth.jwtSecret }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "wsgate.fullname" .) }}
{{- if and $existing $existing.data (hasKey $existing.data .Values.auth.existingSecretKeys.jwtSecret) }}
{{- index $existing.data .Values.auth.existingSecretKeys.jwtSecret | b64dec }}
{{- else }}
{{- randAlphaNum 48 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The preStop hook actually used: lifecycle.preStopMode, with "auto" resolved to the built-in
sleep action on Kubernetes 1.30+ (nothing needed in the image) and to exec /bin/sleep before.
*/}}
{{- define "wsgate.preStopMode" -}}
{{- if eq .Values.lifecycle.preStopMode "auto" }}
{{- if semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version }}sleepAction{{ else }}exec{{ end }}
{{- else }}
{{- .Values.lifecycle.preStopMode }}
{{- end }}
{{- end }}

{{/*
Checks of the values that would otherwise deploy something broken. Included by the
Deployment, so `helm template`/`helm install` fail with a message instead.
*/}}
{{- define "wsgate.validate" -}}
{{- if not .Values.image.repository }}
{{- fail (printf "image.repository is not set: wsgate publishes no image. Build one from the repository's Dockerfile and push it to your registry, e.g. `docker build -t registry.example.com/wsgate:%s . && docker push registry.example.com/wsgate:%s`, then `--set image.repository=registry.example.com/wsgate` (the tag defaults to the chart's appVersion; image.digest pins a digest). See deploy/README.md, The image." .Chart.AppVersion .Chart.AppVersion) }}
{{- end }}
{{- if not (has .Values.auth.mode (list "" "secret" "publicKey" "jwks")) }}
{{- fail (printf "auth.mode must be \"\" (from the source set), \"secret\", \"publicKey\" or \"jwks\", got %q" .Values.auth.mode) }}
{{- end }}
{{- $sources := splitList "," (include "wsgate.authSources" .) | compact }}
{{- if gt (len $sources) 1 }}
{{- fail (printf "two JWT key sources are set: %s. The gateway verifies tokens with exactly one key source (JWT_SECRET_FILE, JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL): keep one of them" (join " and " $sources)) }}
{{- end }}
{{- $mode := include "wsgate.authMode" . }}
{{- $source := default "a generated HS256 secret" (first $sources) }}
{{- $fits := dict "secret" (list "auth.jwtSecret" "auth.existingSecret" "a generated HS256 secret") "publicKey" (list "auth.jwtPublicKey" "auth.existingSecret") "jwks" (list "auth.jwks.url") }}
{{- if not (has $source (index $fits $mode)) }}
{{- if and (eq $mode "publicKey") (eq $source "a generated HS256 secret") }}
{{- fail "auth.mode=publicKey needs auth.jwtPublicKey (a PEM) or auth.existingSecret" }}
{{- else if and (eq $mode "jwks") (eq $source "a generated HS256 secret") }}
{{- fail "auth.mode=jwks needs auth.jwks.url" }}
{{- else }}
{{- fail (printf "two JWT key sources are set: auth.mode=%s and %s. Keep one: drop auth.mode (it follows the source) or the other value" $mode $source) }}
{{- end }}
{{- end }}
{{- if and .Values.auth.jwtSecret (lt (len .Values.auth.jwtSecret) 32) }}
{{- fail (printf "auth.jwtSecret is %d bytes: the gateway refuses HS256 secrets shorter than 32 bytes (generate one with: openssl rand -base64 48)" (len .Values.auth.jwtSecret)) }}
{{- end }}
{{- if and .Values.auth.jwks.url (not (hasPrefix "https://" .Values.auth.jwks.url)) }}
{{- fail (printf "auth.jwks.url must be an https:// URL (keys fetched in plain text can be replaced on the way), got %q" .Values.auth.jwks.url) }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if has .name (list "JWT_SECRET" "JWT_SECRET_FILE" "JWT_PUBLIC_KEY_FILE" "JWT_JWKS_URL") }}
{{- fail (printf "two JWT key sources are set: extraEnv %s and %s. Set the key through the auth values only" .name $source) }}
{{- end }}
{{- if has .name (list "REDIS_URL" "REDIS_PASSWORD_FILE" "ADMIN_LISTEN_ADDR" "INSTANCE_ID" "JWKS_REFRESH_SECS" "JWKS_MIN_REFETCH_SECS") }}
{{- fail (printf "extraEnv %s is set by the chart: use the redis, auth and service values" .name) }}
{{- end }}
{{- end }}
{{- if not (has .Values.lifecycle.preStopMode (list "auto" "exec" "sleepAction")) }}
{{- fail (printf "lifecycle.preStopMode must be \"auto\", \"exec\" or \"sleepAction\", got %q" .Values.lifecycle.preStopMode) }}
{{- end }}
{{- if and (eq .Values.lifecycle.preStopMode "sleepAction") (semverCompare "<1.30.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "lifecycle.preStopMode=sleepAction needs Kubernetes 1.30 or later (PodLifecycleSleepAction), this is %s: use preStopMode=exec" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- $adminPort := int .Values.service.adminPort }}
{{- if or (lt $adminPort 1) (gt $adminPort 65535) (eq $adminPort 8000) }}
{{- fail (printf "service.adminPort must be a port other than 8000 (the public listener's), got %v" .Values.service.adminPort) }}
{{- end }}
{{- range $k := list "REDIS_URL" "REDIS_PASSWORD_FILE" "JWT_SECRET" "JWT_SECRET_FILE" "JWT_PUBLIC_KEY_FILE" "JWT_JWKS_URL" "JWKS_REFRESH_SECS" "JWKS_MIN_REFETCH_SECS" "INSTANCE_ID" "ADMIN_LISTEN_ADDR" }}
{{- if hasKey $.Values.config $k }}
{{- fail (printf "config.%s is set by the chart: use the redis/auth values and service.adminPort (and leave INSTANCE_ID to the pod name)" $k) }}
{{- end }}
{{- end }}
{{- if and .Values.redis.enabled (or .Values.redis.url .Values.redis.existingSecret) }}
{{- fail (printf "redis.url and redis.enabled are both set (%s): the bundled Redis or an external one, not both. For an external Redis set redis.enabled=false" (ternary "redis.url" "redis.existingSecret" (not (empty .Values.redis.url)))) }}
{{- end }}
{{- if and .Values.redis.password .Values.redis.existingPasswordSecret }}
{{- fail "redis.password and redis.existingPasswordSecret are both set: keep one" }}
{{- end }}
{{- if and (include "wsgate.redisHasPassword" .) .Values.redis.url (regexMatch "^[a-z-]+://[^/@]*:[^/@]*@" .Values.redis.url) }}
{{- fail (printf "redis.url carries a password and redis.%s gives one too: the gateway refuses two (REDIS_PASSWORD_FILE with a URL that has a password). Keep one" (ternary "password" "existingPasswordSecret" (not (empty .Values.redis.password)))) }}
{{- end }}
{{- $replicas := int .Values.replicaCount }}
{{- if .Values.autoscaling.enabled }}
{{- $replicas = int .Values.autoscaling.maxReplicas }}
{{- if lt (int .Values.autoscaling.minReplicas) 2 }}
{{- fail "autoscaling.minReplicas must be at least 2 (one pod draining must not leave the gateway without a ready pod)" }}
{{- end }}
{{- end }}
{{- if and (gt $replicas 1) (not (include "wsgate.redisConfigured" .)) }}
{{- fail "more than one gateway pod needs Redis: set redis.enabled=true, redis.url or redis.existingSecret (or replicaCount=1)" }}
{{- end }}
{{- $drainMs := int (default 10000 .Values.config.DRAIN_TIMEOUT_MS) }}
{{- $needMs := add (mul (int .Values.lifecycle.preStopSleepSeconds) 1000) $drainMs }}
{{- if le (mul (int .Values.terminationGracePeriodSeconds) 1000) $needMs }}
{{- fail (printf "terminationGracePeriodSeconds (%d s) must exceed lifecycle.preStopSleepSeconds + DRAIN_TIMEOUT_MS (%d ms)" (int .Values.terminationGracePeriodSeconds) $needMs) }}
{{- end }}
{{- end }}

{{/*
Labels of the bundled Redis's objects.
*/}}
{{- define "wsgate.redis.labels" -}}
helm.sh/chart: {{ include "wsgate.chart" . }}
{{ include "wsgate.redis.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
