#!/usr/bin/env bash
# Downloads the benchmark data of `layerlens eval` / `reproduce` / `serve
# --data` into a data directory (default weights/benchmarks), laid out as
# docs/evaluation.md describes:
#
#   rg65.tsv ws353.tsv ws353_sim.tsv ws353_rel.tsv simlex999.tsv
#   simlex999_README.txt simverb3500.tsv bellezza_valence.csv
#   stsb/sts-train.csv stsb/sts-dev.csv stsb/sts-test.csv
#   stsb/readme.txt stsb/LICENSE.txt
#
# Each file is a byte-for-byte copy of a file in a public GitHub repository
# at a pinned commit (below: the repository, commit and path), fetched as a
# raw file and checked against its sha256 before it is put in place.  The
# same bytes are the ones the test suite's reference results were computed
# on, so `GET /v1/benchmarks` or a report's data table shows these sums.
# Nothing is edited: the STS-B files keep their stray quotes, WS-353 and
# SimLex-999 their CRLF line endings, SimVerb-3500 its missing final newline
# (the parsers expect exactly that).
#
# Usage: weights/download-benchmarks.sh [DIR]        download what is missing
#        weights/download-benchmarks.sh --check DIR  only verify DIR
# Environment: LAYERLENS_BENCH_BASE (default https://raw.githubusercontent.com)
#   for a mirror with the same OWNER/REPO/COMMIT/PATH layout.
#
# Offline?  Fetch the files on a connected machine (this script, or the URLs
# it prints: BASE/OWNER/REPO/COMMIT/PATH), copy them into DIR with the names
# above, and run `weights/download-benchmarks.sh --check DIR`.
# Exit status: 0 when every file is present and verified, 1 otherwise, 2 on
# bad usage.
set -euo pipefail
base="${LAYERLENS_BENCH_BASE:-https://raw.githubusercontent.com}"

# destination | OWNER/REPO | commit | path in the repository | sha256
FILES='
rg65.tsv|mfaruqui/eval-word-vectors|f2cd65ecf00cad4edb4cf3b207e8035b45c5181b|data/word-sim/EN-RG-65.txt|c243f3a91c3f5d8cf67f21a67f6fb80bde8b6bb060851a6a48e6f2d68ec98c9f
ws353.tsv|fanglanting/skip-gram-pytorch|bda1e2b526a6eb9c828b5f54147cf1733aa1b5e5|wordsim353/combined.tab|1edf400ed472e796b3be562cf7970b10d749a07874a96ddc77e75fd1006b446c
ws353_sim.tsv|mfaruqui/eval-word-vectors|f2cd65ecf00cad4edb4cf3b207e8035b45c5181b|data/word-sim/EN-WS-353-SIM.txt|f1da938998863c94e53f72f984a5c6e215f0b46c323aae8f0f4930703a339107
ws353_rel.tsv|mfaruqui/eval-word-vectors|f2cd65ecf00cad4edb4cf3b207e8035b45c5181b|data/word-sim/EN-WS-353-REL.txt|66a7c88100624d0a391605ff61ce84e11d11ee620d51ec0298da49592838f8fa
simlex999.tsv|Sanchit27-jalan/Precog|8fbd7bc36a1c79f34629eb37b29568d6e1d581b4|SimLex-999/SimLex-999.txt|ca00ff8515a36cde32d13c2b83def23f5a167b67db93ebfcfb7dae039ba22c0b
simlex999_README.txt|Cambridge-KAIST-smallLM/SmallLM|424c2a0c693515281200995fe86c5dbe311074d9|eval/sem/SimLex999/README.txt|9a5137f54986b4ef42099225885f086da60a55f387db01e661c3a59679be9131
simverb3500.tsv|Cambridge-KAIST-smallLM/SmallLM|424c2a0c693515281200995fe86c5dbe311074d9|eval/sem/simverb3500/simverb3500.txt|4e8f4c44175396442fd6f658293f04306210ec79d5864a2365c644dd7244c6ca
bellezza_valence.csv|autumntoney/ValNorm|3972327f8aaf89c624220f440b199337c6b176f8|Validation Datasets/Bellezza_Lexicon.csv|b581382d6593395315e479cc27cd631ae05f0977d108ee96f6122e0eb043fec9
stsb/sts-train.csv|zhangzhenhu/Semantic-Texual-Similarity-Toolkits|c55a72f51bd15a8bd75114247c06984b432050f9|data/stsbenchmark/sts-train.csv|0f71910b59aa1ad973c5897f0791f3b0965a92b8f82b1a95f3eea9f4162fda82
stsb/sts-dev.csv|zhangzhenhu/Semantic-Texual-Similarity-Toolkits|c55a72f51bd15a8bd75114247c06984b432050f9|data/stsbenchmark/sts-dev.csv|5d7e944d8b02734b07bfdb5df67db3420c64bed153fcaa1ba47ad03480cf4234
stsb/sts-test.csv|zhangzhenhu/Semantic-Texual-Similarity-Toolkits|c55a72f51bd15a8bd75114247c06984b432050f9|data/stsbenchmark/sts-test.csv|affe45928a66ee5a708531233c95b7dacbbdc57f974f002a3d32ea0180cf816a
stsb/readme.txt|zhangzhenhu/Semantic-Texual-Similarity-Toolkits|c55a72f51bd15a8bd75114247c06984b432050f9|data/stsbenchmark/readme.txt|e9488363d211c32ca5e912954f16eb9233cfed1b5b4b0475d0d812d35d7c8ef1
stsb/LICENSE.txt|zhangzhenhu/Semantic-Texual-Similarity-Toolkits|c55a72f51bd15a8bd75114247c06984b432050f9|data/stsbenchmark/LICENSE.txt|3dfc3217395f8c5dd05c5f8995f25fe2f8fd258e6dd770b3de480749caee8c70
'

usage() { echo "usage: $0 [DIR] | --check DIR   (default DIR: weights/benchmarks)" >&2; exit 2; }

check_only=0
case "${1:-}" in
  --check) check_only=1; [ $# -eq 2 ] || usage; dir=$2 ;;
  -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  -*) usage ;;
  *) [ $# -le 1 ] || usage; dir=${1:-$(dirname "$0")/benchmarks} ;;
esac
command -v sha256sum >/dev/null || { echo "error: sha256sum is missing (coreutils)" >&2; exit 1; }
[ $check_only = 1 ] || command -v curl >/dev/null ||
  { echo "error: curl is missing (apt-get install curl)" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

fetch() { # dest repo commit path sha
  local dest=$1 repo=$2 commit=$3 path=$4 sha=$5
  local f="$dir/$dest" url="$base/$repo/$commit/${path// /%20}"
  if [ ! -e "$f" ]; then
    if [ $check_only = 1 ]; then echo "missing $f (from $url)" >&2; return 1; fi
    if [ $offline = 1 ]; then echo "  not fetched: $url -> $f" >&2; return 1; fi
    mkdir -p "$(dirname "$f")"
    echo "downloading $dest from $repo@${commit:0:12}"
    local crc=0
    curl -fsSL --retry 2 --connect-timeout 10 -o "$f.part" "$url" || crc=$?
    if [ $crc != 0 ]; then
      rm -f "$f.part"
      case $crc in
        5|6|7|28|35) # no proxy/DNS/connection: no point trying the other files
          offline=1
          echo "error: cannot reach $base (curl exit $crc): offline?" >&2
          echo "       Fetch these files on a connected machine, copy them into $dir" >&2
          echo "       under the names shown, then run: $0 --check $dir" >&2
          echo "  not fetched: $url -> $f" >&2 ;;
        *) echo "error: could not download $url (curl exit $crc)" >&2 ;;
      esac
      return 1
    fi
    local got; got=$(sha_of "$f.part")
    if [ "$got" != "$sha" ]; then
      rm -f "$f.part"
      echo "error: $url has sha256 $got, expected $sha; not installed" >&2
      return 1
    fi
    mv "$f.part" "$f"
  fi
  local got; got=$(sha_of "$f")
  if [ "$got" != "$sha" ]; then
    echo "error: $f has sha256 $got, expected $sha (remove it to download it again)" >&2
    return 1
  fi
  echo "ok $f ($(stat -c %s "$f") bytes, sha256 $sha)"
}

rc=0 offline=0
while IFS='|' read -r dest repo commit path sha; do
  [ -n "$dest" ] || continue
  fetch "$dest" "$repo" "$commit" "$path" "$sha" || rc=1
done <<< "$FILES"
if [ $rc = 0 ]; then
  echo "all benchmark files verified in $dir; use: layerlens serve --data $dir"
fi
exit $rc
