#!/bin/sh
# Build llamacpp-logits against node-llama-cpp's prebuilt llama.cpp and dump llama.cpp's logits.
# usage: run.sh [model.gguf] [P] [M] [outdir]      (empty or missing arguments take the defaults)
#   model  default ${SEEDINFER_CACHE:-~/.cache/seedinfer}/models/SmolLM2-135M-Instruct.Q4_1.gguf
#   P, M   default 300, 40; tokens = teacherForced.tokens of __test__/fixtures/llamacpp-smollm2.json
#   outdir default /tmp/llamacpp-logits
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
PEERS=$(dirname "$HERE")
REPO=$(dirname "$(dirname "$PEERS")")
LIBS=$PEERS/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
BUNDLE=$PEERS/node_modules/node-llama-cpp/llama/gitRelease.bundle
FIXTURE=$REPO/__test__/fixtures/llamacpp-smollm2.json
BUILD=$HERE/.build

MODEL=${1:-${SEEDINFER_CACHE:-$HOME/.cache/seedinfer}/models/SmolLM2-135M-Instruct.Q4_1.gguf}
P=${2:-300}
M=${3:-40}
OUT=${4:-/tmp/llamacpp-logits}

if [ ! -d "$LIBS" ] || [ ! -f "$BUNDLE" ]; then
    echo "error: node-llama-cpp's prebuilt llama.cpp is missing ($LIBS)." >&2
    echo "       run: cd bench/peers && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install" >&2
    exit 1
fi
[ -f "$MODEL" ] || { echo "error: model not found: $MODEL" >&2; exit 1; }
[ -f "$FIXTURE" ] || { echo "error: fixture not found: $FIXTURE" >&2; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM

# llama.h / ggml headers of exactly the llama.cpp commit the prebuilt libs were built from
COMMIT=$(git bundle list-heads "$BUNDLE" | awk '{ print $1; exit }')
HDRS=$BUILD/llama.cpp-$COMMIT
if [ ! -f "$HDRS/include/llama.h" ]; then
    echo "extracting llama.cpp headers ($COMMIT) from $BUNDLE" >&2
    git clone -q --no-checkout "$BUNDLE" "$TMP/llama.cpp"
    mkdir -p "$HDRS.tmp"
    git -C "$TMP/llama.cpp" archive "$COMMIT" include ggml/include | tar -x -C "$HDRS.tmp"
    rm -rf "$HDRS" && mv "$HDRS.tmp" "$HDRS"
fi

# link the prebuilt libs by file name (libllama.v<ver>.so, libggml.v<ver>.so, libggml-base.so), rpath = $LIBS
LINK=
for f in "$LIBS"/libllama.*so "$LIBS"/libggml.*so "$LIBS"/libggml-base.so; do
    [ -f "$f" ] || { echo "error: missing prebuilt library $f" >&2; exit 1; }
    LINK="$LINK -l:$(basename "$f")"
done
mkdir -p "$BUILD"
# shellcheck disable=SC2086
gcc -O2 -std=gnu11 -Wall -Wextra -o "$BUILD/llamacpp-logits" "$HERE/llamacpp-logits.c" \
    -I"$HDRS/include" -I"$HDRS/ggml/include" -L"$LIBS" $LINK -Wl,-rpath,"$LIBS"

node -e 'const fs = require("fs");
const t = JSON.parse(fs.readFileSync(process.argv[1], "utf8")).teacherForced.tokens;
fs.writeFileSync(process.argv[2], JSON.stringify(t));' "$FIXTURE" "$TMP/tokens.json"

LLAMACPP_LIBS_DIR=$LIBS "$BUILD/llamacpp-logits" "$MODEL" "$TMP/tokens.json" "$P" "$M" "$OUT"
echo "$OUT"
