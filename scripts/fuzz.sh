#!/usr/bin/env bash
# Runs every cargo-fuzz target under fuzz/ for SECONDS each and prints, per target, the
# inputs run and the crashes found.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]       (default: 600 s, every target)
#   FUZZ_JOBS=N        targets fuzzed at the same time (default 1)
#   FUZZ_SANITIZER=S   address | none (default none: the workspace forbids unsafe code, so
#                      what is looked for is panics, overflows and aborts; `address` also
#                      checks the dependencies' unsafe code, about 2x slower)
#   FUZZ_NICE=N        niceness of the fuzzers (default 19)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). Not run
# in CI. Targets are built with debug assertions and overflow checks (-a). The corpus of
# each target (fuzz/corpus/TARGET, not committed) is seeded from the repository's samples on
# the first run and kept between runs. A crash stops its target: the input is saved under
# fuzz/artifacts/TARGET/ and the line says so; reproduce it with
#   cargo +nightly fuzz run -s none -a TARGET fuzz/artifacts/TARGET/crash-...
# Logs: fuzz/logs/TARGET.log. Exit status: 0 no crash, 1 a crash (or a target failed).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

seconds="${1:-600}"
[[ $seconds =~ ^[0-9]+$ ]] || {
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
  exit 2
}
shift || true
jobs="${FUZZ_JOBS:-1}"
sanitizer="${FUZZ_SANITIZER:-none}"
niceness="${FUZZ_NICE:-19}"
flags=(-s "$sanitizer" -a)

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz or the nightly toolchain is missing: rustup toolchain install nightly; cargo install cargo-fuzz --locked" >&2
  exit 2
fi

cd fuzz
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# Seeds: the repository's own samples of each input, prefixed with the selector byte the
# targets that parse several formats read first.
seed() { # TARGET PREFIX-BYTE FILE...
  local t=$1 prefix=$2 f
  shift 2
  mkdir -p "corpus/$t"
  for f in "$@"; do
    [ -f "$root/$f" ] || continue
    { printf '%b' "\\x$prefix"; head -c 65536 "$root/$f"; } >"corpus/$t/seed-$(basename "$f")-$prefix"
  done
}
seed_plain() { # TARGET FILE...
  local t=$1 f
  shift
  mkdir -p "corpus/$t"
  for f in "$@"; do
    [ -f "$root/$f" ] || continue
    head -c 65536 "$root/$f" >"corpus/$t/seed-$(basename "$f")"
  done
}
if [ ! -d corpus/atlas_json ]; then
  for p in 00 02; do
    seed atlas_json "$p" atlas/tests/data/ping-v4.json atlas/tests/data/ping-v6.ndjson \
      atlas/tests/data/traceroute-v4.json atlas/tests/data/traceroute-v6.json \
      atlas/tests/data/mesh-v4.json atlas/tests/data/malformed.ndjson
  done
  seed atlas_json 01 atlas/tests/data/probes.json
fi
if [ ! -d corpus/config_toml ]; then
  seed_plain config_toml deploy/coordinator.toml deploy/probe-agent.toml
  sed -n 's/^# \([a-z0-9-]* = .*\)/\1/p' "$root/deploy/probe-agent.toml" >corpus/config_toml/seed-agent-uncommented.toml
fi
if [ ! -d corpus/audit_csv ]; then
  seed_plain audit_csv landmarks/landmarks.csv cli/tests/fixtures/london.csv
  printf 'ip,label\n192.0.2.1,a\n2001:db8::1,"b, c"\n# comment\n\n198.51.100.7\n' >corpus/audit_csv/seed-small.csv
fi
mkdir -p corpus/probe_message corpus/agent_reply logs

echo "fuzz: building ${targets[*]} (nightly, sanitizer $sanitizer, debug assertions)"
# One target per `cargo fuzz build` (the first one builds the dependencies).
for t in "${targets[@]}"; do
  nice -n "$niceness" cargo +nightly fuzz build "${flags[@]}" "$t" >"logs/$t.build.log" 2>&1 || {
    echo "fuzz: $t does not build (fuzz/logs/$t.build.log)" >&2
    exit 1
  }
done

run_one() {
  local t=$1
  local log="logs/$t.log"
  mkdir -p "artifacts/$t"
  local before
  before="$(find "artifacts/$t" -name 'crash-*' | wc -l)"
  nice -n "$niceness" cargo +nightly fuzz run "${flags[@]}" "$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
    >"$log" 2>&1 || true
  local runs crashes after
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  if [ -z "$runs" ]; then # stopped by a crash: the last status line has the count
    runs="$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')"
  fi
  after="$(find "artifacts/$t" -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' | wc -l)"
  crashes=$((after - before))
  [ "$crashes" -ge 0 ] || crashes=0
  local what=""
  if grep -q 'panicked at' "$log"; then
    what=" ($(grep -m1 'panicked at' "$log" | cut -c1-160))"
  fi
  printf 'fuzz: %-14s %6ss  runs %10s  crashes %s%s\n' "$t" "$seconds" "${runs:-?}" "$crashes" "$what"
}

status=0
results="$(mktemp)"
running=0
for t in "${targets[@]}"; do
  run_one "$t" >>"$results" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true
sort "$results"
if grep -q 'crashes [1-9]' "$results"; then
  status=1
fi
rm -f "$results"
exit "$status"
