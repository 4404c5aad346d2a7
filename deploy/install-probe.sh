#!/usr/bin/env bash
# Sets up a geoloc probe agent on a fresh Debian/Ubuntu host with systemd, in one command.
# Run `install-probe.sh --help` for the options; deploy/README-probe-agent.md explains each
# step. Safe to run again: it changes only what differs from what was asked.
set -euo pipefail

readonly SERVICE=geoloc-probe-agent
readonly USER_NAME=geoloc-probe
readonly CONF_DIR=/etc/geoloc
readonly CONF_FILE=$CONF_DIR/probe-agent.toml
readonly ENV_FILE=$CONF_DIR/probe-agent.env
readonly CA_FILE=$CONF_DIR/coordinator-ca.pem
# The unit's StateDirectory=geoloc-probe-agent (option state-dir, GEOLOC_PROBE_STATE_DIR).
readonly STATE_DIR=/var/lib/geoloc-probe-agent
# The file the agent keeps its credential in, inside STATE_DIR.
readonly CREDENTIAL=$STATE_DIR/credential
readonly LOCAL_BIN=/usr/local/bin/geoloc-probe-agent
readonly PACKAGED_BIN=/usr/bin/geoloc-probe-agent
readonly UNIT_DEST=/etc/systemd/system/$SERVICE.service
readonly TOKEN_VAR=GEOLOC_PROBE_ENROLMENT_TOKEN

usage() {
  cat <<'EOF'
Usage: install-probe.sh (--deb FILE | --binary FILE) --id ID --lat LAT --lon LON
                        --coordinator https://HOST:PORT [--ca FILE]
                        [--enroll-token TOKEN | --enroll-token-file FILE]
                        [--advertise-ipv4 ADDR] [--advertise-ipv6 ADDR]
                        [--wait SECONDS] [--no-start] [--dry-run]

Installs and enrols a geoloc probe agent on this Debian/Ubuntu host (systemd required):
  1. the agent: the geoloc-probe-agent .deb (--deb, recommended: binary, unit, system user,
     man pages) or a binary (--binary: copied to /usr/local/bin, unit from deploy/);
  2. the system user geoloc-probe (no login, no home);
  3. the systemd unit: unprivileged, CAP_NET_RAW only, NoNewPrivileges, ProtectSystem=strict,
     state in /var/lib/geoloc-probe-agent (mode 0700);
  4. /etc/geoloc/probe-agent.toml (id, position, coordinator, CA; root:geoloc-probe 0640);
  5. enrolment: the one-time token goes to /etc/geoloc/probe-agent.env (root 0600) as
     GEOLOC_PROBE_ENROLMENT_TOKEN (the agent's option enrolment-token); the service starts,
     exchanges it for its own credential in /var/lib/geoloc-probe-agent, and the token is
     then deleted from the file. A probe already enrolled (credential present) needs none.

The coordinator's admin creates the token: geoloc-coordinator probes enroll --id ID.

Options:
  --deb FILE                 geoloc-probe-agent_*.deb to install (apt-get installs it)
  --binary FILE              geoloc-probe-agent executable to install instead of a .deb
  --id ID                    probe id, 1..=64 of [A-Za-z0-9._-] (the one it was enrolled as)
  --lat LAT, --lon LON       this host's position, WGS84 decimal degrees
  --coordinator URL          https:// URL of the coordinator (http:// only for loopback)
  --ca FILE                  CA certificate (PEM) the coordinator's certificate chains to
                             (default: the system roots)
  --enroll-token TOKEN       one-time enrolment token printed by `geoloc-coordinator probes
                             enroll` (visible in ps: prefer the next one);
                             also spelt --enrolment-token
  --enroll-token-file F      read the token from file F ("-" = standard input);
                             also spelt --enrolment-token-file
  --advertise-ipv4 ADDR      address where other probes can measure this one
  --advertise-ipv6 ADDR      same, IPv6
  --wait SECONDS             how long to wait for the enrolment to finish (default 60)
  --no-start                 install and configure, but do not start the service
  --dry-run                  print what would be done, change nothing (no root needed)
  -h, --help                 this text

Exit status: 0 done; 1 failed (the message says why); 2 bad arguments; 3 host not
supported (no systemd, not Debian/Ubuntu, not root).
EOF
}

die() {
  echo "install-probe: error: $*" >&2
  exit 1
}
bad_arg() {
  echo "install-probe: $*" >&2
  echo "Run install-probe.sh --help for the options." >&2
  exit 2
}
unsupported() {
  echo "install-probe: this host is not supported: $*" >&2
  exit 3
}
say() { echo "install-probe: $*"; }

dry_run=0
# Runs a command, or prints it under --dry-run.
run() {
  if [ "$dry_run" = 1 ]; then
    printf '[dry-run]'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# Installs CONTENT (stdin) as FILE with MODE and OWNER:GROUP, only if it differs (a 4th
# argument "secret": never shown, also not under --dry-run). Prints
# "changed" or "unchanged" so callers know whether to restart.
put_file() {
  local file=$1 mode=$2 owner=$3 secret=${4:-} tmp
  tmp="$(mktemp)"
  cat >"$tmp"
  if [ -f "$file" ] && cmp -s "$tmp" "$file" &&
    [ "$(stat -c '%a %U:%G' "$file")" = "${mode#0} $owner" ]; then
    rm -f "$tmp"
    echo unchanged
    return
  fi
  if [ "$dry_run" = 1 ]; then
    echo "[dry-run] would write $file (mode $mode, $owner, $(wc -l <"$tmp") lines)" >&2
    if [ -z "$secret" ] && [ "$(wc -l <"$tmp")" -le 40 ]; then
      sed 's/^/[dry-run]   | /' "$tmp" >&2
    fi
    rm -f "$tmp"
  else
    install -m "$mode" -o "${owner%%:*}" -g "${owner#*:}" "$tmp" "$file"
    rm -f "$tmp"
  fi
  echo changed
}

toml_string() {
  # A TOML basic string: backslashes and quotes escaped (the inputs are checked already).
  local s=${1//\\/\\\\}
  printf '"%s"' "${s//\"/\\\"}"
}

deb="" binary="" id="" lat="" lon="" coordinator="" ca="" token="" token_file=""
adv4="" adv6="" wait_s=60 start=1
need_value() {
  if [ $# -lt 2 ] || [ -z "$2" ]; then
    bad_arg "$1 needs a value"
  fi
}
while [ $# -gt 0 ]; do
  case $1 in
  -h | --help)
    usage
    exit 0
    ;;
  --deb) need_value "$@"; deb=$2; shift 2 ;;
  --binary) need_value "$@"; binary=$2; shift 2 ;;
  --id) need_value "$@"; id=$2; shift 2 ;;
  --lat) need_value "$@"; lat=$2; shift 2 ;;
  --lon) need_value "$@"; lon=$2; shift 2 ;;
  --coordinator) need_value "$@"; coordinator=$2; shift 2 ;;
  --ca) need_value "$@"; ca=$2; shift 2 ;;
  --enroll-token | --enrolment-token) need_value "$@"; token=$2; shift 2 ;;
  --enroll-token-file | --enrolment-token-file) need_value "$@"; token_file=$2; shift 2 ;;
  --advertise-ipv4) need_value "$@"; adv4=$2; shift 2 ;;
  --advertise-ipv6) need_value "$@"; adv6=$2; shift 2 ;;
  --wait) need_value "$@"; wait_s=$2; shift 2 ;;
  --no-start) start=0; shift ;;
  --dry-run) dry_run=1; shift ;;
  *) bad_arg "unknown argument: $1" ;;
  esac
done

# ---- arguments (all checked before anything is changed) ----
if [ -n "$deb" ] && [ -n "$binary" ]; then
  bad_arg "give --deb or --binary, not both"
fi
if [ -z "$deb" ] && [ -z "$binary" ]; then
  bad_arg "--deb FILE or --binary FILE is required"
fi
[ -z "$deb" ] || [ -f "$deb" ] || bad_arg "--deb $deb: no such file"
[ -z "$binary" ] || [ -f "$binary" ] || bad_arg "--binary $binary: no such file"
[ -n "$id" ] || bad_arg "--id is required"
[[ $id =~ ^[A-Za-z0-9._-]{1,64}$ ]] || bad_arg "--id must be 1..=64 characters of [A-Za-z0-9._-], got '$id'"
number='^-?[0-9]+(\.[0-9]+)?$'
[[ $lat =~ $number ]] || bad_arg "--lat must be a decimal number of degrees, got '$lat'"
[[ $lon =~ $number ]] || bad_arg "--lon must be a decimal number of degrees, got '$lon'"
awk -v v="$lat" 'BEGIN { exit !(v >= -90 && v <= 90) }' || bad_arg "--lat must be within -90..=90, got $lat"
awk -v v="$lon" 'BEGIN { exit !(v >= -180 && v <= 180) }' || bad_arg "--lon must be within -180..=180, got $lon"
[ -n "$coordinator" ] || bad_arg "--coordinator is required"
[[ $coordinator =~ ^https?://[^[:space:]\"\\]+$ ]] || bad_arg "--coordinator must be an https:// URL, got '$coordinator'"
if [[ $coordinator == http://* ]] &&
  ! [[ $coordinator =~ ^http://(127\.[0-9.]+|localhost|\[::1\])(:[0-9]+)?/?$ ]]; then
  bad_arg "--coordinator $coordinator is plaintext: the enrolment token and the probe's credential would cross the network in clear. Use https:// (http:// is accepted for loopback only)"
fi
[ -z "$ca" ] || [ -r "$ca" ] || bad_arg "--ca $ca: cannot read it"
if [ -n "$ca" ] && ! grep -q -- '-----BEGIN CERTIFICATE-----' "$ca"; then
  bad_arg "--ca $ca: not a PEM certificate (no BEGIN CERTIFICATE line)"
fi
ip_re='^[0-9A-Fa-f.:]+$'
[ -z "$adv4" ] || [[ $adv4 =~ ^[0-9.]+$ ]] || bad_arg "--advertise-ipv4: not an IPv4 address: '$adv4'"
[ -z "$adv6" ] || [[ $adv6 =~ $ip_re ]] || bad_arg "--advertise-ipv6: not an IPv6 address: '$adv6'"
[[ $wait_s =~ ^[0-9]+$ ]] || bad_arg "--wait must be a whole number of seconds, got '$wait_s'"
if [ -n "$token" ] && [ -n "$token_file" ]; then
  bad_arg "give --enroll-token or --enroll-token-file, not both"
fi
if [ -n "$token_file" ]; then
  if [ "$token_file" = - ]; then
    IFS= read -r token || true
  else
    [ -r "$token_file" ] || bad_arg "--enroll-token-file $token_file: cannot read it"
    IFS= read -r token <"$token_file" || true
  fi
  [ -n "$token" ] || bad_arg "--enroll-token-file $token_file: empty"
fi
if [ -n "$token" ] && ! [[ $token =~ ^[A-Za-z0-9_.~+/=-]{8,512}$ ]]; then
  bad_arg "the enrolment token has characters or a length no token has (8..512 of [A-Za-z0-9_.~+/=-])"
fi

# ---- host ----
if [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1; then
  if [ "$dry_run" = 1 ]; then
    echo "install-probe: warning: systemd is not running here; a real run would stop at this point" >&2
  else
    unsupported "systemd is not running here (no /run/systemd/system). This script installs a systemd service; on other init systems run the agent by hand (deploy/README-probe-agent.md)."
  fi
fi
if [ -n "$deb" ] && ! command -v apt-get >/dev/null 2>&1; then
  unsupported "--deb needs apt-get (Debian/Ubuntu); use --binary elsewhere"
fi
if [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
  unsupported "run it as root (sudo $0 ...), or with --dry-run to see what it would do"
fi

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# ---- 1. the agent ----
if [ -n "$deb" ]; then
  deb_abs="$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")"
  pkg="$(dpkg-deb -f "$deb_abs" Package 2>/dev/null)" || die "--deb $deb: not a Debian package"
  [ "$pkg" = geoloc-probe-agent ] || die "--deb $deb is package '$pkg', not geoloc-probe-agent"
  new_version="$(dpkg-deb -f "$deb_abs" Version)"
  old_version="$(dpkg-query -W -f '${Version}' geoloc-probe-agent 2>/dev/null || true)"
  if [ "$old_version" = "$new_version" ]; then
    say "geoloc-probe-agent $new_version already installed"
    agent_changed=unchanged
  else
    say "installing geoloc-probe-agent $new_version (was: ${old_version:-none})"
    # --force-confold: keep the /etc/geoloc/probe-agent.toml this script wrote on upgrades.
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      -o Dpkg::Options::=--force-confold "$deb_abs"
    agent_changed=changed
  fi
  agent_bin=$PACKAGED_BIN
  # A unit left by an earlier --binary install would shadow the package's.
  if [ -f "$UNIT_DEST" ]; then
    say "removing $UNIT_DEST (the package's unit replaces it)"
    run rm -f "$UNIT_DEST"
    agent_changed=changed
  fi
else
  if [ "$dry_run" = 0 ] && ! "$binary" --version >/dev/null 2>&1; then
    die "--binary $binary does not run here (\`$binary --version\` failed)"
  fi
  if [ -f "$LOCAL_BIN" ] && cmp -s "$binary" "$LOCAL_BIN"; then
    say "$LOCAL_BIN is already this binary"
    agent_changed=unchanged
  else
    say "installing $binary as $LOCAL_BIN"
    run install -m 0755 -o root -g root "$binary" "$LOCAL_BIN"
    agent_changed=changed
  fi
  agent_bin=$LOCAL_BIN
fi

# ---- 2. the system user ----
if getent passwd "$USER_NAME" >/dev/null; then
  say "system user $USER_NAME exists"
else
  say "creating system user $USER_NAME"
  nologin="$(command -v nologin || echo /usr/sbin/nologin)"
  run useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell "$nologin" --comment "geoloc probe agent" "$USER_NAME"
fi
if [ "$dry_run" = 1 ] && ! getent group "$USER_NAME" >/dev/null; then
  group=root # the group does not exist yet in a dry run
else
  group=$USER_NAME
fi

# ---- 3. the unit ----
if [ -z "$deb" ]; then
  unit_src=$script_dir/$SERVICE.service
  [ -f "$unit_src" ] || die "$unit_src not found: --binary installs the unit from the deploy/ folder next to this script"
  unit_state="$(sed "s#$PACKAGED_BIN#$LOCAL_BIN#g" "$unit_src" | put_file "$UNIT_DEST" 0644 root:root)"
  say "unit $UNIT_DEST: $unit_state"
  [ "$unit_state" = unchanged ] || agent_changed=changed
fi

# ---- 4. the configuration ----
run install -d -m 0755 -o root -g root "$CONF_DIR"
ca_line="# ca: none, the system roots verify the coordinator"
if [ -n "$ca" ]; then
  ca_state="$(put_file "$CA_FILE" 0644 root:root <"$ca")"
  say "CA $CA_FILE: $ca_state"
  [ "$ca_state" = unchanged ] || agent_changed=changed
  ca_line="ca = $(toml_string "$CA_FILE")"
fi
conf_text="$(
  echo "# geoloc-probe-agent configuration, written by install-probe.sh."
  echo "# Every option: /usr/share/doc/geoloc-probe-agent/probe-agent.toml (or deploy/probe-agent.toml)."
  echo "# The enrolment token is not here: it goes to $ENV_FILE (root only) and is removed"
  echo "# once the agent holds its credential in $STATE_DIR (state-dir)."
  echo "id = $(toml_string "$id")"
  echo "lat = $lat"
  echo "lon = $lon"
  echo "coordinator = $(toml_string "$coordinator")"
  echo "$ca_line"
  if [ -n "$adv4" ]; then echo "advertise-ipv4 = $(toml_string "$adv4")"; fi
  if [ -n "$adv6" ]; then echo "advertise-ipv6 = $(toml_string "$adv6")"; fi
)"
conf_state="$(printf '%s\n' "$conf_text" | put_file "$CONF_FILE" 0640 "root:$group")"
say "config $CONF_FILE: $conf_state"
[ "$conf_state" = unchanged ] || agent_changed=changed

# ---- 5. enrolment ----
enrolled=0
if [ -s "$CREDENTIAL" ]; then
  enrolled=1
fi
if [ "$enrolled" = 1 ]; then
  say "already enrolled ($CREDENTIAL exists)"
  if [ -n "$token" ]; then
    say "the enrolment token given is NOT used; to enrol again: geoloc-coordinator probes revoke $id, then delete $CREDENTIAL here and run this script with a new token"
  fi
elif [ -z "$token" ]; then
  die "this probe is not enrolled yet (no $CREDENTIAL): give --enroll-token-file FILE (the admin makes one with: geoloc-coordinator probes enroll --id $id)"
else
  # The env file keeps any other line the operator put there.
  env_now=""
  [ ! -f "$ENV_FILE" ] || env_now="$(grep -v "^$TOKEN_VAR=" "$ENV_FILE" || true)"
  {
    [ -z "$env_now" ] || printf '%s\n' "$env_now"
    echo "$TOKEN_VAR=$token"
  } | put_file "$ENV_FILE" 0600 root:root secret >/dev/null
  say "enrolment token written to $ENV_FILE (root only)"
  agent_changed=changed
fi

# ---- start, and wait for the credential ----
run systemctl daemon-reload
if [ "$start" = 0 ]; then
  run systemctl enable "$SERVICE"
  say "installed; not started (--no-start). Start it with: systemctl start $SERVICE"
  exit 0
fi
run systemctl enable "$SERVICE"
if [ "$agent_changed" = changed ]; then
  run systemctl restart "$SERVICE"
else
  run systemctl start "$SERVICE"
fi
if [ "$dry_run" = 1 ]; then
  say "dry run: would wait up to ${wait_s}s for $CREDENTIAL, then remove $TOKEN_VAR from $ENV_FILE"
  exit 0
fi
if [ "$enrolled" = 0 ]; then
  say "waiting up to ${wait_s}s for the agent to enrol"
  for _ in $(seq 1 "$wait_s"); do
    [ -s "$CREDENTIAL" ] && break
    if ! systemctl is-active --quiet "$SERVICE" && systemctl is-failed --quiet "$SERVICE"; then
      break
    fi
    sleep 1
  done
  if [ ! -s "$CREDENTIAL" ]; then
    systemctl --no-pager status "$SERVICE" >&2 || true
    die "the agent did not enrol within ${wait_s}s (its log: journalctl -u $SERVICE). The token stays in $ENV_FILE for the next try; if it was used or expired, ask for a new one."
  fi
  { grep -v "^$TOKEN_VAR=" "$ENV_FILE" || true; } | put_file "$ENV_FILE" 0600 root:root secret >/dev/null
  say "enrolled: credential in $CREDENTIAL; the one-time token was removed from $ENV_FILE"
fi
if systemctl is-active --quiet "$SERVICE"; then
  say "$SERVICE is running ($agent_bin). Log: journalctl -u $SERVICE -f"
else
  systemctl --no-pager status "$SERVICE" >&2 || true
  die "$SERVICE is not running (log: journalctl -u $SERVICE)"
fi
