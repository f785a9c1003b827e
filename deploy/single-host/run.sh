#!/usr/bin/env bash
# Runs the whole dtm service on one machine as plain processes: redis-server (durable: AOF, fsync
# on every write), dtm-coordinator, one dtm-worker per GPU (or N CPU workers) and Prometheus with
# deploy/prometheus's config and alert rules. Everything listens on 127.0.0.1 only. Ctrl-C (or any
# daemon exiting) stops them all, in reverse start order: Prometheus, the workers (SIGTERM: each
# finishes its task and hands back the rest), the coordinator, Redis. State (Redis AOF, Prometheus TSDB, logs) stays
# in --dir, so a second run resumes unfinished jobs. See README.md in this folder.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=$repo/build
model=$build/tiny-model
state=$PWD/dtm-single-host
cpu_workers=          # empty: one worker per GPU, or 2 CPU workers without one
dtype=
# Ports: env overrides, defaults as in the daemons' --help and deploy/prometheus/prometheus.yml.
REDIS_PORT=${REDIS_PORT:-6379} GRPC_PORT=${GRPC_PORT:-7070} METRICS_PORT=${METRICS_PORT:-9100}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}

usage() {
  cat <<USAGE
usage: $0 [--model DIR] [--cpu-workers N] [--dtype float32|float16|bfloat16] [--dir STATE_DIR] [--build BUILD_DIR]
  --model        Hugging Face Llama checkpoint folder (default: $model)
  --cpu-workers  run N workers with --device cpu even if there are GPUs (default: one per GPU, else 2)
  --dir          Redis data, Prometheus TSDB and logs (default: ./dtm-single-host)
  --build        where dtm-coordinator/dtm-worker/dtmctl were built (default: $build)
env: REDIS_PORT (6379) GRPC_PORT (7070) METRICS_PORT (9100; worker i gets METRICS_PORT+i) PROMETHEUS_PORT (9090)
USAGE
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --cpu-workers) cpu_workers=$2; shift 2 ;;
    --dtype) dtype=$2; shift 2 ;;
    --dir) state=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

coordinator=$build/coordinator/dtm-coordinator
worker=$build/worker/dtm-worker
for bin in setsid redis-server prometheus "$coordinator" "$worker"; do
  command -v "$bin" >/dev/null || { echo "run.sh: $bin not found" >&2; exit 2; }
done
[[ -f $model/config.json ]] || { echo "run.sh: --model $model: no config.json" >&2; exit 2; }
model=$(cd "$model" && pwd)   # workers register this path; jobs name the model by it
mkdir -p "$state"/{redis,prometheus/data,logs}
state=$(cd "$state" && pwd)
logs=$state/logs

# One worker per GPU, each pinned to its device; CPU workers share the cores.
if [[ -z $cpu_workers ]] && command -v nvidia-smi >/dev/null && gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU') \
   && [[ $gpus -gt 0 ]]; then
  devices=(); for ((i = 0; i < gpus; i++)); do devices+=("cuda:$i"); done
  threads=0
else
  n=${cpu_workers:-2}
  devices=(); for ((i = 0; i < n; i++)); do devices+=(cpu); done
  threads=$(( $(nproc) / n > 0 ? $(nproc) / n : 1 ))
fi

pids=()          # in start order; stopped in reverse
stop_all() {
  trap - EXIT INT TERM
  echo "run.sh: stopping" >&2
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true   # one at a time: workers hand back before the coordinator goes
  done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# wait_log FILE REGEX PID: until the daemon logs REGEX; fails if it exits first or after 120 s.
wait_log() {
  for ((t = 0; t < 1200; t++)); do
    grep -qE "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { echo "run.sh: $(basename "$1" .log) exited; last lines of $1:" >&2; tail -20 "$1" >&2; exit 1; }
    sleep 0.1
  done
  echo "run.sh: $(basename "$1" .log) not ready after 120 s; see $1" >&2; exit 1
}

# setsid: a terminal's Ctrl-C reaches only this script, which then stops the daemons in order.
setsid redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$state/redis" \
  --appendonly yes --appendfsync always >"$logs/redis.log" 2>&1 &
pids+=($!); wait_log "$logs/redis.log" "Ready to accept connections" $!

setsid "$coordinator" --listen "127.0.0.1:$GRPC_PORT" --redis "redis://127.0.0.1:$REDIS_PORT" \
  --metrics-listen "127.0.0.1:$METRICS_PORT" >"$logs/coordinator.log" 2>&1 &
pids+=($!); wait_log "$logs/coordinator.log" "dtm-coordinator ready" $!

targets=()
for i in "${!devices[@]}"; do
  id=$(hostname -s)-w$i port=$((METRICS_PORT + 1 + i))
  setsid "$worker" --coordinator "127.0.0.1:$GRPC_PORT" --model "$model" --device "${devices[i]}" --worker-id "$id" \
    --metrics-listen "127.0.0.1:$port" ${threads:+--threads "$threads"} ${dtype:+--dtype "$dtype"} >"$logs/$id.log" 2>&1 &
  pids+=($!); targets+=("\"127.0.0.1:$port\"")
done
for i in "${!devices[@]}"; do   # models load in parallel; wait for all of them
  wait_log "$logs/$(hostname -s)-w$i.log" "dtm-worker .* ready" "${pids[2 + i]}"
done

# Prometheus: the shipped config and rules, with this run's ports.
prom=$state/prometheus
sed "s/127\.0\.0\.1:9100/127.0.0.1:$METRICS_PORT/" "$repo/deploy/prometheus/prometheus.yml" >"$prom/prometheus.yml"
cp "$repo/deploy/prometheus/alerts.yml" "$prom/alerts.yml"
(IFS=,; echo "[{\"targets\": [${targets[*]}]}]") >"$prom/workers.json"
setsid prometheus --config.file="$prom/prometheus.yml" --storage.tsdb.path="$prom/data" \
  --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" >"$logs/prometheus.log" 2>&1 &
pids+=($!); wait_log "$logs/prometheus.log" "Server is ready to receive web requests" $!

cat <<EOF_READY
dtm service up (${#devices[@]} workers on ${devices[*]}); logs in $logs
  coordinator  127.0.0.1:$GRPC_PORT   (export DTM_COORDINATOR=127.0.0.1:$GRPC_PORT; dtmctl submit SPEC.yaml --watch)
  metrics      coordinator 127.0.0.1:$METRICS_PORT, workers ${targets[*]}
  prometheus   http://127.0.0.1:$PROMETHEUS_PORT  (alerts: /alerts; Grafana dashboards: $repo/dashboards)
Ctrl-C stops everything.
EOF_READY

wait -n "${pids[@]}" || true    # any daemon exiting ends the run
echo "run.sh: a daemon exited; see $logs" >&2
exit 1
