#!/usr/bin/env bash
# Checks every systemd unit under deploy/ with `systemd-analyze verify`.
#
# Usage: scripts/verify-units.sh
#
# The units name their binaries at their packaged paths (/usr/bin/...), which need not exist
# on the machine that checks them, so the check runs in a scratch root (--root): the host's
# systemd units, each unit under test in etc/systemd/system, and an empty executable at every
# ExecStart path. Any message from systemd-analyze (also "Unknown key ..., ignoring", which
# it does not count as an error) fails the check.
#
# Exit status: 0 all units clean, 1 a unit has a problem, 3 systemd-analyze is not
# available (the caller decides whether that is fatal; .ci/run logs it and goes on).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "verify-units: systemd-analyze not found (package systemd): units NOT verified" >&2
  exit 3
fi

mapfile -t units < <(find deploy -type f \( -name '*.service' -o -name '*.socket' -o -name '*.timer' \) | sort)
if [ ${#units[@]} -eq 0 ]; then
  echo "verify-units: no unit under deploy/" >&2
  exit 1
fi

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
# The units a service depends on (sysinit.target, network-online.target, ...).
for d in /usr/lib/systemd/system /lib/systemd/system; do
  if [ -d "$d" ]; then
    cp -r "$d" "$root/usr/lib/systemd/"
    break
  fi
done

status=0
for unit in "${units[@]}"; do
  name="$(basename "$unit")"
  cp "$unit" "$root/etc/systemd/system/$name"
  # ExecStart=/path args, with the optional prefixes (-, @, :, +, !) systemd allows.
  while read -r exe; do
    mkdir -p "$root$(dirname "$exe")"
    printf '#!/bin/sh\nexit 0\n' >"$root$exe"
    chmod 0755 "$root$exe"
  done < <(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\(\/[^ ]*\).*/\1/p' "$unit")
  if out="$(systemd-analyze verify --man=no --root="$root" "$name" 2>&1)" && [ -z "$out" ]; then
    echo "verify-units: $unit ok"
  else
    echo "verify-units: $unit FAILED:" >&2
    printf '%s\n' "$out" >&2
    status=1
  fi
  rm -f "$root/etc/systemd/system/$name"
done
exit "$status"
