#!/bin/sh
# docker-entrypoint.sh - what the layerlens container runs.
#
#   serve [FLAGS]     (default) `layerlens serve`, configured by the LAYERLENS_*
#                     environment variables; FLAGS are added after them
#   fetch-weights     download the checkpoints into /weights, then exit
#   COMMAND...        anything else runs as is (e.g. `layerlens tokenize ...`)
#
# The checkpoints live in the /weights volume (gpt2/ and clip/, each with
# model.safetensors, config.json, vocab.json, merges.txt).  When one that is
# configured is missing, `serve` downloads it first if LAYERLENS_FETCH_WEIGHTS=1
# (weights/download.sh, which needs access to Hugging Face), and otherwise
# says what to do and exits 1.
set -eu

fetch_weights() {
  # download.sh writes next to itself, so a copy runs inside the volume.
  cp /usr/local/share/layerlens/download.sh /weights/download.sh
  /weights/download.sh "$@"
}

# "MODEL DIR" for each configured model whose checkpoint is not there yet.
missing_models() {
  if [ -n "${LAYERLENS_GPT2:-}" ] && [ ! -s "$LAYERLENS_GPT2/model.safetensors" ]; then
    echo "gpt2 $LAYERLENS_GPT2"
  fi
  if [ -n "${LAYERLENS_CLIP:-}" ] && [ ! -s "$LAYERLENS_CLIP/model.safetensors" ]; then
    echo "clip $LAYERLENS_CLIP"
  fi
}

case "${1:-serve}" in
fetch-weights)
  shift
  fetch_weights "${@:-all}"
  ;;
serve)
  [ $# -gt 0 ] && shift
  missing_models | while read -r m dir; do
    if [ "${LAYERLENS_FETCH_WEIGHTS:-0}" = 1 ] && [ "$dir" = "/weights/$m" ]; then
      fetch_weights "$m"
    else
      echo "layerlens: no $m checkpoint in $dir: mount the weights volume (see" \
           "docs/deploy.md) or set LAYERLENS_FETCH_WEIGHTS=1 to download it" \
           "into /weights/$m" >&2
      exit 1
    fi
  done
  exec layerlens serve "$@"
  ;;
*)
  exec "$@"
  ;;
esac
