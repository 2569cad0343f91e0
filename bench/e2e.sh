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
# With a PostgreSQL store on this machine, each run also reports what the database spent per
# delivery: CPU time of its processes (from /proc: the postmaster's own and its reaped children's,
# plus the live backends'), statements (= round trips; needs `pg_stat_statements` in
# `shared_preload_libraries`, else only transactions are counted) and the busiest statements.
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

# PostgreSQL's cost during a run (a server on this machine): CPU ticks of all its processes.
pg_ticks() {
  local dir pm ticks=0 pid
  dir="$(psql "$STORE" -Atqc 'SHOW data_directory')"
  pm="$(head -1 "$dir/postmaster.pid")"
  # The postmaster: its own time and that of its children already reaped (backends that ended).
  ticks=$(awk '{print $14+$15+$16+$17}' "/proc/$pm/stat")
  for pid in $(pgrep -P "$pm"); do
    ticks=$((ticks + $(awk '{print $14+$15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$ticks"
}
pg_counts() {  # statements (or -1 without pg_stat_statements) and committed transactions
  local statements
  statements="$(psql "$STORE" -Atqc "SELECT coalesce(sum(calls), 0) FROM bench_stats.pg_stat_statements
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())" 2>/dev/null || echo -1)"
  echo "$statements $(psql "$STORE" -Atqc 'SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()')"
}
pg_start() {
  psql "$STORE" -q -c 'CREATE SCHEMA IF NOT EXISTS bench_stats' \
    -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA bench_stats' >/dev/null 2>&1 || true
  psql "$STORE" -Atqc 'SELECT bench_stats.pg_stat_statements_reset()' >/dev/null 2>&1 || true
  pg_before_ticks="$(pg_ticks)"; read -r pg_before_statements pg_before_xacts <<< "$(pg_counts)"
}
pg_report() {  # $1 = deliveries
  local ticks hz statements xacts
  ticks=$(( $(pg_ticks) - pg_before_ticks )); hz="$(getconf CLK_TCK)"
  read -r statements xacts <<< "$(pg_counts)"
  python3 -c "print(f'  PostgreSQL: {$ticks / $hz * 1e6 / $1:.0f} µs CPU per delivery, ' \
    f'{($xacts - $pg_before_xacts) / $1:.2f} transactions per delivery' + \
    ('' if $statements < 0 else f', {($statements - $pg_before_statements) / $1:.2f} statements per delivery'))"
  [ "$statements" -ge 0 ] && psql "$STORE" -Atq -F ' | ' -c "SELECT round(calls::numeric / $1, 3) AS per_delivery,
      round(total_exec_time::numeric / $1 * 1000) AS us_per_delivery, left(regexp_replace(query, '\s+', ' ', 'g'), 90)
    FROM bench_stats.pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    ORDER BY calls DESC LIMIT 12" | sed 's/^/    /'
  true
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
  [[ "$STORE" == postgres* ]] && pg_start
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
  [[ "$STORE" == postgres* ]] && pg_report "$expected"
  results+=("$e2e"); posts+=("$post")
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "median of $RUNS: $(median "${results[@]}") deliveries/s end to end; POST $(median "${posts[@]}")/s; receiver ceiling $ceiling/s"
