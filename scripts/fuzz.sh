#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for SECONDS each (default 20) on a copy of its committed corpus
# and fails if one crashes, hangs (10 s) or allocates beyond 2 GiB; the crashing input is left in
# fuzz/artifacts/<target>-*. Needs the nightly toolchain; installs cargo-fuzz when missing. With --if-available
# (CI) a machine without the nightly toolchain, or where cargo-fuzz cannot be installed, skips with a notice.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
optional=false
if [ "${1:-}" = "--if-available" ]; then optional=true; shift; fi
seconds="${1:-20}"
skip() {
  if $optional; then echo "fuzz: skipped ($1)"; exit 0; fi
  echo "fuzz: $1" >&2; exit 1
}
rustup toolchain list 2>/dev/null | grep -q '^nightly' || skip "no nightly toolchain"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked >/dev/null 2>&1 || skip "cargo-fuzz could not be installed"
fi
cargo +nightly fuzz build -O
mkdir -p artifacts
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in $(cargo +nightly fuzz list); do
  # New finds go to a scratch copy: the committed corpus changes only by a deliberate merge (fuzz/README.md).
  cp -r "corpus/$target" "$work/$target"
  status=0
  ./target/x86_64-unknown-linux-gnu/release/"$target" "$work/$target" -max_total_time="$seconds" \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -artifact_prefix="artifacts/$target-" -print_final_stats=1 \
    >"$work/$target.log" 2>&1 || status=$?
  runs="$(grep -o 'number_of_executed_units: *[0-9]*' "$work/$target.log" | grep -o '[0-9]*$' || true)"
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$work/$target.log" >&2
    echo "fuzz $target: failed after ${runs:-?} runs (the input is in fuzz/artifacts/)" >&2
    exit 1
  fi
  echo "fuzz $target: ${runs:-?} runs in ${seconds} s, no crash"
done
