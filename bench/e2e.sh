#!/usr/bin/env bash
# End-to-end throughput through the daemon, the way a user compares webhook senders:
# `hey` POSTs messages to `POST /v1/messages` from 100 connections, herald delivers each to one
# endpoint (`standard-webhooks` policy), and nginx (one worker, access log on) is the receiver.
# The figure is deliveries per second from the first POST to the last request nginx logged;
# the receiver's own ceiling is measured with wrk against the same nginx. Everything runs on
# 127.0.0.1 and stops by itself.
#
#   bench/e2e.sh                      # 3 runs, embedded store, medians at the end
#   RUNS=5 MESSAGES=20000 bench/e2e.sh
#   STORE=postgres://postgres@127.0.0.1:5432/herald NODES=3 bench/e2e.sh   # a cluster
#
# Needs hey, nginx-light and wrk (installed from Debian when missing) and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-3}"
MESSAGES="${MESSAGES:-20000}"
CONNECTIONS="${CONNECTIONS:-100}"
NODES="${NODES:-1}"
STORE="${STORE:-sled}"
HERALD="${HERALD:-target/release/herald}"

need=()
command -v hey >/dev/null || need+=(hey)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -x "$HERALD" ] || cargo build --release

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  sleep 0.2
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The receiver: nginx, one worker, answering 200 to every POST and logging it.
sink_port="$(free_port)"
mkdir -p "$work/nginx"
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log $work/access.log;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:$sink_port;
    location / { return 200 "ok"; }
  }
}
EOF
nginx -c "$work/nginx.conf"

# The receiver's ceiling, with the same body herald sends.
body='{"job_id":123456,"status":"completed","target_language":"de","source_language":"en","words":1200,"project":"website-relaunch","deadline":"2026-12-01T12:00:00Z"}'
cat > "$work/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["content-type"] = "application/json"
EOF
ceiling="$(wrk -t1 -c16 -d5s -s "$work/post.lua" "http://127.0.0.1:$sink_port/" | awk '/Requests\/sec/ {print $2}')"
echo "receiver ceiling (wrk, 16 connections): $ceiling requests/s"

message="{\"tenant\":\"acme\",\"event_type\":\"job.completed\",\"payload\":$body}"
printf '%s' "$message" > "$work/message.json"
echo "message: ${#message} bytes; $MESSAGES messages from $CONNECTIONS connections; store $STORE; $NODES node(s)"

start_node() {  # $1 = node index; appends the node's base URL to `nodes`
  local port; port="$(free_port)"
  mkdir -p "$work/run/node$1"
  HERALD_LISTEN="127.0.0.1:$port" HERALD_DATA_DIR="$work/run/node$1/data" \
    HERALD_POLICIES_DIR="$work/none" HERALD_ALLOW_PRIVATE_TARGETS=true HERALD_STORE="$STORE" \
    HERALD_SECRET_KEY="BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=" \
    "$HERALD" serve >/dev/null 2>"$work/run/node$1.log" &
  pids+=($!)
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.05
  done
  nodes+=("http://127.0.0.1:$port")
}

results=()
posts=()
for run in $(seq 1 "$RUNS"); do
  rm -rf "$work/run"; mkdir -p "$work/run"
  : > "$work/access.log"
  if [[ "$STORE" == postgres* ]]; then
    psql "$STORE" -q -c 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;' >/dev/null
  fi
  nodes=()
  for n in $(seq 1 "$NODES"); do start_node "$n"; done
  curl -sf "${nodes[0]}/admin/endpoints" -H 'content-type: application/json' -d "{
    \"tenant\":\"acme\",\"url\":\"http://127.0.0.1:$sink_port/hook\",\"policy\":\"standard-webhooks\",
    \"secret\":\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\",\"default\":true}" >/dev/null
  sleep 0.5  # the other nodes hear of the endpoint
  started="$(date +%s.%N)"
  per_node=$((MESSAGES / NODES))
  hey_pids=()
  for n in $(seq 0 $((NODES - 1))); do
    hey -n "$per_node" -c $((CONNECTIONS / NODES)) -m POST -T application/json \
      -D "$work/message.json" "${nodes[$n]}/v1/messages" > "$work/hey$n.txt" &
    hey_pids+=($!)
  done
  for pid in "${hey_pids[@]}"; do wait "$pid"; done
  posted="$(date +%s.%N)"
  expected=$((per_node * NODES))
  deadline=$(( $(date +%s) + 300 ))
  while [ "$(wc -l < "$work/access.log")" -lt "$expected" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "only $(wc -l < "$work/access.log") of $expected delivered"; exit 1; }
    sleep 0.05
  done
  delivered="$(date +%s.%N)"
  e2e="$(python3 -c "print(round($expected / ($delivered - $started)))")"
  post="$(python3 -c "print(round($expected / ($posted - $started)))")"
  non202="$(grep -h -A20 'Status code distribution' "$work"/hey*.txt | grep -v '\[202\]' | grep -c '\[' || true)"
  echo "run $run: $e2e deliveries/s end to end; POST $post/s; non-202 status lines: $non202"
  results+=("$e2e"); posts+=("$post")
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "median of $RUNS: $(median "${results[@]}") deliveries/s end to end; POST $(median "${posts[@]}")/s; receiver ceiling $ceiling/s"
