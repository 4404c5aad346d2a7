#!/usr/bin/env bash
# Builds the two Debian packages: geoloc-coordinator and geoloc-probe-agent.
#
# Usage: scripts/build-debs.sh [OUTDIR]      (default: target/debian)
#
# Needs cargo-deb (`cargo install cargo-deb --locked`) and dpkg-deb. Builds both daemons in
# release mode (CARGO_TARGET_DIR is honoured), writes their man pages (the binaries' hidden
# `man DIR` subcommand) into target/man/, gzipped as Debian wants them, then runs
# `cargo deb --no-build` for each package and lists what each .deb holds.
# The packaging metadata is `[package.metadata.deb]` in coordinator/Cargo.toml and
# probe-agent/Cargo.toml; the units and maintainer scripts are under deploy/.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-target/debian}"
target_dir="${CARGO_TARGET_DIR:-target}"

if ! cargo deb --version >/dev/null 2>&1; then
  echo "build-debs: cargo-deb is missing: cargo install cargo-deb --locked" >&2
  exit 1
fi

cargo build --release -p geoloc-coordinator -p geoloc-probe-agent

mkdir -p "$out"
for bin in geoloc-coordinator geoloc-probe-agent; do
  # The packages' metadata names ../target/man/BIN/*.1.gz (relative to each crate).
  man="target/man/$bin"
  rm -rf "$man"
  mkdir -p "$man"
  "$target_dir/release/$bin" man "$man"
  gzip -9n "$man"/*.1
done

for pkg in geoloc-coordinator geoloc-probe-agent; do
  deb="$(cargo deb -p "$pkg" --no-build --output "$out" | tail -n 1)"
  echo "build-debs: $deb ($(du -h "$deb" | cut -f1))"
  dpkg-deb -c "$deb"
done
