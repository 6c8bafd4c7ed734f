#!/usr/bin/env bash
# scripts/run.sh - what `make run` does: start `layerlens serve` on the real
# GPT-2 and CLIP checkpoints in weights/gpt2 and weights/clip, downloading
# them first (weights/download.sh) when they are absent.
#
# When the real weights cannot be had (no network, as on build machines), it
# says so and starts on demo checkpoints instead: full-size random weights
# written by `layerlens mkweights` with the real tokenizer files of
# ../shared/fixtures (cached in $BUILD/demo/), or, if that fails, the tiny
# fixture checkpoints themselves.  /v1/models then reports "demo": true.
#
# Environment: BUILD (default build), LAYERLENS_SHARED (default ../shared),
# LAYERLENS_NO_DOWNLOAD=1 to skip the download attempt, and every
# LAYERLENS_* variable of `layerlens serve` (e.g. LAYERLENS_PORT=9000).
# Extra arguments are passed to `layerlens serve`.
set -u
cd "$(dirname "$0")/.."
build="${BUILD:-build}"
bin="$build/layerlens"
shared="${LAYERLENS_SHARED:-../shared}"

complete() { # dir: the four files of a model directory are there
  local f
  for f in model.safetensors config.json vocab.json merges.txt; do
    [ -s "$1/$f" ] || return 1
  done
}

if ! complete weights/gpt2 || ! complete weights/clip; then
  if [ "${LAYERLENS_NO_DOWNLOAD:-0}" != 1 ] && [ -x weights/download.sh ]; then
    echo "run: real weights missing in weights/; trying weights/download.sh ..."
    weights/download.sh all || echo "run: the download did not complete."
  fi
fi

args=()
demo_models=()
fixture_fallback=0
for m in gpt2 clip; do
  if complete "weights/$m"; then
    args+=("--$m" "weights/$m")
    continue
  fi
  demo_models+=("$m")
  out="$build/demo/$m"
  tiny="$shared/fixtures/models/$m-tiny"
  if ! complete "$out"; then
    echo "run: writing a full-size random $m checkpoint to $out (once) ..."
    rm -rf "$out"
    mkdir -p "$(dirname "$out")"
    if ! "$bin" mkweights --like "$tiny" --preset full --seed 1 --out "$out"; then
      echo "run: could not write demo weights for $m; using the tiny fixture $tiny"
      out="$tiny"
      fixture_fallback=1
    fi
  fi
  if ! complete "$out"; then
    echo "run: no weights at all for $m (neither weights/$m nor $tiny); serving without it"
    continue
  fi
  args+=("--$m" "$out")
done

if [ ${#demo_models[@]} -gt 0 ]; then
  cat <<EOF

  ************************************************************************
  NOTE: the real weights of ${demo_models[*]} could not be had (offline?).
  Serving DEMO checkpoints: random weights with the real tokenizers, so
  embeddings, similarities and benchmark scores are meaningless.  The API
  is complete and /v1/models reports "demo": true for them.
  To use the real models: run weights/download.sh on a connected machine
  (or copy the four files into weights/gpt2 and weights/clip).
  ************************************************************************

EOF
fi
if [ ${#args[@]} -eq 0 ]; then
  echo "run: nothing to serve" >&2
  exit 1
fi
[ "$fixture_fallback" = 1 ] && args+=(--demo)
exec "$bin" serve "${args[@]}" "$@"
