#!/usr/bin/env bash
# Downloads the real checkpoints into weights/gpt2 and weights/clip:
# model.safetensors, config.json, vocab.json, merges.txt of
#   openai-community/gpt2          (GPT-2 small, 124M parameters)
#   openai/clip-vit-base-patch32   (CLIP ViT-B/32; layerlens uses the text tower)
# pinned to a revision, and checks every file's size and sha256.
#
# Usage: weights/download.sh [gpt2|clip|all]     (default: all)
# Environment: HF_ENDPOINT (default https://huggingface.co), for a mirror.
#
# Offline?  Download the same files on a connected machine (this script or
# `huggingface-cli download REPO --revision REV FILE...`), copy them into
# weights/gpt2/ and weights/clip/, and run this script again: it only checks
# files that are already present.  Without them `make run` starts on demo
# (random) weights and says so.
set -euo pipefail
cd "$(dirname "$0")"
endpoint="${HF_ENDPOINT:-https://huggingface.co}"

# repo, revision, then per file: name size sha256
GPT2_REPO=openai-community/gpt2
GPT2_REV=607a30d783dfa663caf39e06633721c8d4cfcd7e
GPT2_FILES="
model.safetensors - -
config.json - -
vocab.json 1042301 196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
merges.txt 456318 1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
"
CLIP_REPO=openai/clip-vit-base-patch32
CLIP_REV=3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268
CLIP_FILES="
model.safetensors - -
config.json - -
vocab.json - -
merges.txt - -
"
# "-" = no size/hash pinned in this script: the GPT-2 tokenizer files are
# pinned (they are byte-identical to OpenAI's encoder.json / vocab.bpe); for
# the others the first complete download records its sha256 in
# weights/DIR/SHA256SUMS and every later run verifies against that record.

fetch() { # dir repo rev files
  local dir=$1 repo=$2 rev=$3 files=$4 fail=0
  mkdir -p "$dir"
  while read -r name size sha; do
    [ -n "$name" ] || continue
    local f="$dir/$name"
    if [ ! -s "$f" ]; then
      echo "downloading $repo@$rev $name"
      if ! curl -fL --retry 2 --connect-timeout 10 -o "$f.part" \
           "$endpoint/$repo/resolve/$rev/$name"; then
        rm -f "$f.part"
        echo "error: could not download $name from $endpoint (offline?)." >&2
        echo "       Copy the file into weights/$dir/ by hand; see the top of this script." >&2
        fail=1; continue
      fi
      mv "$f.part" "$f"
    fi
    local got_size got_sha
    got_size=$(stat -c %s "$f")
    got_sha=$(sha256sum "$f" | cut -d' ' -f1)
    if [ "$size" != "-" ] && [ "$got_size" != "$size" ]; then
      echo "error: $f has $got_size bytes, expected $size" >&2; fail=1; continue
    fi
    if [ "$sha" != "-" ] && [ "$got_sha" != "$sha" ]; then
      echo "error: $f sha256 $got_sha, expected $sha" >&2; fail=1; continue
    fi
    local rec; rec=$(awk -v n="$name" '$2==n{print $1}' "$dir/SHA256SUMS" 2>/dev/null || true)
    if [ -n "$rec" ] && [ "$rec" != "$got_sha" ]; then
      echo "error: $f sha256 $got_sha differs from the recorded $rec" >&2; fail=1; continue
    fi
    [ -n "$rec" ] || echo "$got_sha  $name" >> "$dir/SHA256SUMS"
    echo "ok $f ($got_size bytes, sha256 $got_sha)"
  done <<< "$files"
  return $fail
}

what="${1:-all}"
rc=0
case "$what" in
  gpt2) fetch gpt2 "$GPT2_REPO" "$GPT2_REV" "$GPT2_FILES" || rc=1 ;;
  clip) fetch clip "$CLIP_REPO" "$CLIP_REV" "$CLIP_FILES" || rc=1 ;;
  all)  fetch gpt2 "$GPT2_REPO" "$GPT2_REV" "$GPT2_FILES" || rc=1
        fetch clip "$CLIP_REPO" "$CLIP_REV" "$CLIP_FILES" || rc=1 ;;
  *) echo "usage: $0 [gpt2|clip|all]" >&2; exit 2 ;;
esac
exit $rc
