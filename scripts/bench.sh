#!/usr/bin/env bash
# bench.sh - what `make bench` runs: layerlens against ONNX Runtime and
# PyTorch on the same machine, the same thread count, the same token ids, in
# the same run (docs/benchmark.md describes the workloads and the table).
#
#   BENCH_QUICK=1   every workload briefly (checks that the script works;
#                   the numbers are not the benchmark)
#   BENCH_PORT=N    the server's port on 127.0.0.1 (default 18480)
#   BENCH_SKIP_PEERS=1  layerlens only
#
# Output: build/bench/results.md (also printed), the raw JSON of every
# measurement in build/bench/results/, the server log in build/bench/server.log.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
QUICK=${BENCH_QUICK:-0}
SHARED=${LAYERLENS_SHARED:-../shared}
PORT=${BENCH_PORT:-18480}
OUT=$BUILD/bench
RES=$OUT/results
DATA=$OUT/data
WEIGHTS=$BUILD/bench-weights
LLBENCH=$OUT/llbench
LLLOAD=$OUT/llload
URL=http://127.0.0.1:$PORT
PY=/usr/bin/python3 # Debian's python3, where python3-torch is installed
export NODE_PATH=$PWD/$OUT/npm/node_modules

if [ "$QUICK" = 1 ]; then
    N_WORDS=96 N_SENTS=96 N_STSB=192 N_LAT=20 ENGINE_S=0.5 ENGINE_TOKENS=256,2048
    HTTP_ROUNDS=1 SGEMM_S=0.3
else
    N_WORDS=1000 N_SENTS=1000 N_STSB=0 N_LAT=200 ENGINE_S=18 ENGINE_TOKENS=256,512,1024,2048
    HTTP_ROUNDS=3 SGEMM_S=2
fi
CLIENTS=32
THREADS=2 # the peers' thread count = the cores layerlens uses

log() { echo "bench: $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

# ------------------------------------------------------------ set-up

# Debian packages of the peers (and the load generator's libcurl).
ensure_debs() {
    local missing=""
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    [ -z "$missing" ] && return 0
    log "installing:$missing"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
}

# onnxruntime-node into build/bench/npm.  Its install script would fetch GPU
# binaries from outside the registry; the CPU build ships in the package.
ensure_ort() {
    [ -f "$OUT/npm/node_modules/onnxruntime-node/package.json" ] &&
        cmp -s bench/package.json "$OUT/npm/package.json" && return 0
    log "npm install onnxruntime-node"
    mkdir -p "$OUT/npm"
    cp bench/package.json "$OUT/npm/"
    (cd "$OUT/npm" && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --loglevel=error >/dev/null)
}

# Full-size random checkpoints, made once.
ensure_weights() { # name like-fixture seed
    local dir=$WEIGHTS/$1
    [ -f "$dir/model.safetensors" ] && [ -f "$dir/config.json" ] && return 0
    log "writing full-size random $1 weights to $dir"
    rm -rf "$dir"
    "$BUILD/layerlens" mkweights --like "$SHARED/fixtures/models/$2" --preset full --seed "$3" --out "$dir"
}

# The peers must compute what layerlens computes: both are checked on a few
# words and sentences (one right-padded batch) before anything is timed.
verify_peers() { # model width proj
    local m=$1 ids=$DATA/$1-verify.ids bin=$DATA/$1-verify.bin
    { head -4 "$DATA/$m-words.ids"; head -4 "$DATA/$m-sentences.ids"; sed -n 100p "$DATA/$m-stsb.ids"; } > "$ids"
    "$LLBENCH" dump --model "$WEIGHTS/$m" --ids "$ids" --count 9 --out "$bin"
    OMP_WAIT_POLICY=PASSIVE $PY bench/peer_torch.py verify --model "$WEIGHTS/$m" --ids "$ids" \
        --dump "$bin" --count 9 > "$RES/verify-torch-$m.json"
    local onnx=$OUT/onnx/$m.onnx
    if [ ! -s "$onnx" ] || [ "$onnx" -ot "$WEIGHTS/$m/model.safetensors" ] || [ "$onnx" -ot bench/peer_torch.py ]; then
        log "exporting $m to ONNX"
        mkdir -p "$OUT/onnx"
        $PY bench/peer_torch.py export --model "$WEIGHTS/$m" --out "$onnx.tmp" 2> "$OUT/onnx/$m.export.log" ||
            { cat "$OUT/onnx/$m.export.log" >&2; die "ONNX export of $m failed"; }
        mv "$onnx.tmp" "$onnx"
    fi
    node bench/peer_ort.js verify --onnx "$onnx" --ids "$ids" --dump "$bin" --count 9 \
        --width "$2" --layers 12 --proj "$3" > "$RES/verify-ort-$m.json"
    log "$m: pytorch and onnxruntime agree with layerlens ($(cat "$RES/verify-torch-$m.json" "$RES/verify-ort-$m.json" | grep -o '"max_abs_diff": *[0-9.e-]*' | tr '\n' ' '))"
}

# ------------------------------------------------------------ the server

SERVER_PID=""
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
trap stop_server EXIT

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status"; }

start_server() {
    local t0
    t0=$(date +%s%N)
    LAYERLENS_DATA=$SHARED/data/benchmarks \
        "$BUILD/layerlens" serve --gpt2 "$WEIGHTS/gpt2" --clip "$WEIGHTS/clip" --port "$PORT" \
        >> "$OUT/server.log" 2>&1 &
    SERVER_PID=$!
    local ready
    ready=$("$LLLOAD" ready --url "$URL/readyz" --since-ns "$t0" --timeout-s 60) ||
        { tail "$OUT/server.log" >&2; die "the server did not get ready"; }
    # the first start is the one reported (a restart after a crash is not)
    [ -s "$RES/ready-ms.txt" ] || { echo "$ready" > "$RES/ready-ms.txt"; echo "$(rss_kb)" > "$RES/rss-loaded-kb.txt"; }
}

metrics() { curl -s "$URL/metrics" > "$1"; }

# One HTTP workload: bodies file, clients, requests -> results/<name>.json
# (with the server's batch metrics before and after it).  With a model and a
# number of rounds, the requests are sent that many times over, and the
# workload's sgemm bound is measured before, between and after the rounds:
# the host's speed drifts by 10-25% within seconds, so a bound measured
# minutes away (workload 5) can be off by as much.  The rate is the sum over
# the rounds; each round's is kept.
# A failed run is recorded as such ("failed": true in its JSON, shown in the
# table); if the server died, its log is kept and a new one started, so the
# remaining workloads still run.
http_run() { # name bodies clients requests [model rounds]
    local name=$1 rounds=${6:-1} r
    metrics "$RES/$name.metrics-before"
    [ -n "${5:-}" ] && sgemm_bound "$5" "$RES/$name.sgemm-0.json"
    for ((r = 1; r <= rounds; r++)); do
        if ! "$LLLOAD" run --url "$URL/v1/embeddings" --bodies "$2" --clients "$3" --requests "$4" \
            --max-seconds 300 > "$RES/$name.round-$r.json"; then
            local why="errors"
            if ! kill -0 "$SERVER_PID" 2>/dev/null; then
                why="server died"
                cp "$OUT/server.log" "$RES/$name.server-died.log"
                log "$name: THE SERVER DIED: $(grep -v 'layerlens: request' "$OUT/server.log" | tail -1)"
                SERVER_PID=""
                start_server
            fi
            echo "{\"failed\":true,\"why\":\"$why\"}" > "$RES/$name.json"
            log "$name failed: $why"
            return 0
        fi
        [ -n "${5:-}" ] && sgemm_bound "$5" "$RES/$name.sgemm-$r.json"
    done
    metrics "$RES/$name.metrics-after"
    $PY - "$RES" "$name" "$rounds" > "$RES/$name.json" <<'PYEOF'
import json, os, sys
res, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = [json.load(open(os.path.join(res, f"{name}.round-{r}.json"))) for r in range(1, rounds + 1)]
out = dict(runs[0])  # latency percentiles: the first round
out["requests"] = sum(r["requests"] for r in runs)
out["errors"] = sum(r["errors"] for r in runs)
out["seconds"] = sum(r["seconds"] for r in runs)
out["rps"] = out["requests"] / out["seconds"]
out["rounds_rps"] = [r["rps"] for r in runs]
sg = [os.path.join(res, f"{name}.sgemm-{r}.json") for r in range(rounds + 1)]
if all(os.path.exists(p) for p in sg):
    hot = [json.load(open(p))["sgemm_hot_gflops"] for p in sg]
    out["sgemm_rounds"] = hot  # before, between and after the rounds
    out["sgemm_hot_gflops"] = sum(hot) / len(hot)
print(json.dumps(out))
PYEOF
    log "$name: $(cat "$RES/$name.json")"
}

# The bound of an HTTP workload, measured next to it (before, between and
# after its rounds, the server idle): cblas_sgemm on the model's shapes, 256
# rows, 2 threads x 1, one layer's weights hot in cache.
sgemm_bound() { # model out.json
    "$LLBENCH" sgemm --model "$WEIGHTS/$1" --batch 256 --workers 2 --threads 1 \
        --seconds "$SGEMM_S" > "$2"
}

# Workload 3: a full STS-B evaluation through /v1/evaluate, if the service
# has that endpoint (first call: nothing cached; the second call is recorded
# too).  Bootstrap off: the peers run only the forward passes.
EVAL_BODY='{"tasks":["stsb"],"models":["gpt2","clip"],"layers":"all","bootstrap":0}'
# Quick mode: the first N_STSB / 2 test pairs as custom pairs (the peers run
# the same N_STSB sentences).
quick_eval_body() {
    $PY - "$SHARED/data/benchmarks/stsb/sts-test.csv" "$((N_STSB / 2))" <<'PYEOF'
import json, sys
pairs = []
for line in open(sys.argv[1], encoding="utf-8"):
    f = line.rstrip("\n").split("\t")
    if len(f) >= 7 and len(pairs) < int(sys.argv[2]):
        pairs.append([f[5], f[6], float(f[4])])
print(json.dumps({"pairs": pairs, "pairs_type": "sentences", "models": ["gpt2", "clip"],
                  "layers": "all", "bootstrap": 0}))
PYEOF
}
http_evaluate() {
    local code t0 t1
    [ "$QUICK" = 1 ] && EVAL_BODY=$(quick_eval_body)
    for run in cold warm; do
        t0=$(date +%s%N)
        code=$(curl -s -o "$RES/w3-evaluate-$run.body" -w '%{http_code}' -X POST \
            -H 'Content-Type: application/json' --max-time 900 --data-binary "$EVAL_BODY" "$URL/v1/evaluate" || echo 000)
        t1=$(date +%s%N)
        if [ "$code" != 200 ]; then
            log "workload 3: /v1/evaluate answered $code: $(head -c 300 "$RES/w3-evaluate-$run.body")"
            echo "{\"available\":false,\"status\":$code}" > "$RES/w3-evaluate.json"
            return 0
        fi
        echo "$(( (t1 - t0) / 1000000 ))" > "$RES/w3-evaluate-$run-ms.txt"
    done
    echo "{\"available\":true,\"cold_ms\":$(cat "$RES/w3-evaluate-cold-ms.txt"),\"warm_ms\":$(cat "$RES/w3-evaluate-warm-ms.txt")}" \
        > "$RES/w3-evaluate.json"
}

# The same evaluation in-process with `layerlens eval` (same request parser
# and driver as the server), when the command exists.
cli_evaluate() {
    "$BUILD/layerlens" eval --help > /dev/null 2>&1 || return 0
    local t0 t1
    t0=$(date +%s%N)
    "$BUILD/layerlens" eval --gpt2 "$WEIGHTS/gpt2" --clip "$WEIGHTS/clip" --data "$SHARED/data/benchmarks" \
        --request <(echo "$EVAL_BODY") --quiet > "$RES/w3-eval-cli.body" 2> "$RES/w3-eval-cli.log" ||
        { log "workload 3: layerlens eval failed: $(tail -c 300 "$RES/w3-eval-cli.log")"; return 0; }
    t1=$(date +%s%N)
    echo "{\"ms\":$(( (t1 - t0) / 1000000 ))}" > "$RES/w3-eval-cli.json"
}

# ------------------------------------------------------------ main

[ -x "$BUILD/layerlens" ] && [ -x "$LLBENCH" ] && [ -x "$LLLOAD" ] ||
    die "build first: make bench (builds $BUILD/layerlens and $OUT/llbench, $OUT/llload)"
[ -d "$SHARED/data/benchmarks" ] || die "no benchmark data at $SHARED/data/benchmarks (set LAYERLENS_SHARED)"
mkdir -p "$RES" "$DATA"
rm -f "$RES"/* "$OUT/server.log"

# layerlens re-executes itself with OPENBLAS_CORETYPE set when Debian's
# OpenBLAS would fall back to generic kernels on this CPU (src/blas.c); the
# PyTorch peer links the same OpenBLAS and gets the same kernels.
OPENBLAS_CORETYPE=$("$LLBENCH" corename)
export OPENBLAS_CORETYPE
echo "$OPENBLAS_CORETYPE" > "$RES/openblas-core.txt"
log "OpenBLAS kernels: $OPENBLAS_CORETYPE"

if [ "${BENCH_SKIP_PEERS:-0}" != 1 ]; then
    ensure_debs python3-torch python3-numpy
    command -v node >/dev/null && command -v npm >/dev/null || ensure_debs nodejs npm
    ensure_ort
fi
ensure_weights gpt2 gpt2-tiny 1
ensure_weights clip clip-tiny 2

"$LLBENCH" prep --gpt2 "$WEIGHTS/gpt2" --clip "$WEIGHTS/clip" --data "$SHARED/data/benchmarks" \
    --out "$DATA" --words "$N_WORDS" --sentences "$N_SENTS" 2> "$RES/prep.log"
if [ "$N_STSB" != 0 ]; then
    for m in gpt2 clip; do head -n "$N_STSB" "$DATA/$m-stsb.ids" > "$DATA/$m-stsb.tmp" && mv "$DATA/$m-stsb.tmp" "$DATA/$m-stsb.ids"; done
fi
for m in gpt2 clip; do
    for w in words sentences stsb; do
        "$LLBENCH" flops --model "$WEIGHTS/$m" --ids "$DATA/$m-$w.ids" --batch 64 > "$RES/flops-$m-$w.json"
    done
done

[ "${BENCH_SKIP_PEERS:-0}" != 1 ] && { verify_peers gpt2 768 0; verify_peers clip 512 512; }

# The machine must be quiet: the two cores are shared.
{ uptime; top -bn1 | sed -n '7,12p'; } > "$RES/load-before.txt"
load1=$(awk '{print $1}' /proc/loadavg)
log "load before timing: $(cat /proc/loadavg)"
awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }' &&
    log "WARNING: load average $load1 - another job is running; the numbers will be low"

# --- layerlens over HTTP (workloads 1-4, memory, start-up, JSON cost)
log "layerlens server: start-up, workloads 1-4"
start_server
for m in gpt2 clip; do # warm-up (pages the weights in, grows the workspaces); not timed
    "$LLLOAD" run --url "$URL/v1/embeddings" --bodies "$DATA/$m-sentences.jsonl" --clients "$CLIENTS" \
        --requests 128 > /dev/null || die "warm-up requests failed"
done
for m in gpt2 clip; do
    # workloads 1 and 2: each in rounds of every text, with its bound between
    http_run "w1-words-$m" "$DATA/$m-words.jsonl" "$CLIENTS" "$N_WORDS" "$m" "$HTTP_ROUNDS"
    http_run "w1-words-all-layers-$m" "$DATA/$m-words.all.jsonl" "$CLIENTS" "$N_WORDS"
    http_run "w2-sentences-$m" "$DATA/$m-sentences.jsonl" "$CLIENTS" "$N_SENTS" "$m" "$HTTP_ROUNDS"
    http_run "w4-latency-$m" "$DATA/$m-words.jsonl" 1 "$N_LAT"
done
echo "$(rss_kb)" > "$RES/rss-before-eval-kb.txt" # workloads 1, 2, 4 done
http_evaluate
echo "$(rss_kb)" > "$RES/rss-after-kb.txt"        # + the evaluation's vector cache
stop_server

# --- layerlens in-process (no HTTP): the peers' batches, and workload 5
log "layerlens engine in-process"
cli_evaluate
# bf16 weights are timed right after float32 on the same batches, so both
# see the same machine; only where the products run on AVX512-BF16 (the
# portable code gives the same states, far slower: not worth a number).
BF16=$("$LLBENCH" bf16native)
echo "$BF16" > "$RES/bf16-native.txt"
[ "$BF16" = 1 ] || log "bf16 weights: not timed (no AVX512-BF16 in this build or CPU)"
for m in gpt2 clip; do
    for w in words sentences stsb; do
        "$LLBENCH" forward --model "$WEIGHTS/$m" --ids "$DATA/$m-$w.ids" --batch 64 \
            --workers 2 --threads 1 > "$RES/engine-b64-$m-$w.json"
    done
    "$LLBENCH" forward --model "$WEIGHTS/$m" --ids "$DATA/$m-words.ids" --latency "$N_LAT" \
        --threads 2 --layers last > "$RES/engine-b1-$m.json"
    if [ "$BF16" = 1 ]; then
        for w in words sentences; do
            "$LLBENCH" forward --model "$WEIGHTS/$m" --ids "$DATA/$m-$w.ids" --batch 64 \
                --workers 2 --threads 1 --dtype bf16 > "$RES/engine-b64-bf16-$m-$w.json"
            "$LLBENCH" deviation --model "$WEIGHTS/$m" --ids "$DATA/$m-$w.ids" --count 64 \
                > "$RES/bf16-deviation-$m-$w.json"
        done
        "$LLBENCH" forward --model "$WEIGHTS/$m" --ids "$DATA/$m-words.ids" --latency "$N_LAT" \
            --threads 2 --layers last --dtype bf16 > "$RES/engine-b1-bf16-$m.json"
    fi
    "$LLBENCH" engine --model "$WEIGHTS/$m" --ids "$DATA/$m-stsb.ids" --tokens "$ENGINE_TOKENS" \
        --workers 2 --threads 1 --seconds "$ENGINE_S" > "$RES/w5-$m-2x1.json"
    "$LLBENCH" engine --model "$WEIGHTS/$m" --ids "$DATA/$m-stsb.ids" --tokens "$ENGINE_TOKENS" \
        --workers 1 --threads 2 --seconds "$ENGINE_S" > "$RES/w5-$m-1x2.json"
done

# --- the peers, in-process, padded batches of 64 and batch 1
if [ "${BENCH_SKIP_PEERS:-0}" != 1 ]; then
    for m in gpt2 clip; do
        for w in words sentences stsb; do
            log "peers: $m $w"
            OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=$THREADS $PY bench/peer_torch.py bench \
                --model "$WEIGHTS/$m" --ids "$DATA/$m-$w.ids" --batch 64 --threads $THREADS \
                > "$RES/torch-b64-$m-$w.json"
            node bench/peer_ort.js bench --onnx "$OUT/onnx/$m.onnx" --ids "$DATA/$m-$w.ids" \
                --batch 64 --threads $THREADS --arch $m > "$RES/ort-b64-$m-$w.json"
        done
        OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=$THREADS $PY bench/peer_torch.py bench \
            --model "$WEIGHTS/$m" --ids "$DATA/$m-words.ids" --latency "$N_LAT" --threads $THREADS \
            > "$RES/torch-b1-$m.json"
        node bench/peer_ort.js bench --onnx "$OUT/onnx/$m.onnx" --ids "$DATA/$m-words.ids" \
            --latency "$N_LAT" --threads $THREADS --arch $m > "$RES/ort-b1-$m.json"
    done
fi

{ uptime; top -bn1 | sed -n '7,12p'; } > "$RES/load-after.txt"
$PY bench/report.py "$RES" "$QUICK" > "$OUT/results.md"
cat "$OUT/results.md"
log "written to $OUT/results.md"
