#!/usr/bin/env bash
# Installs the offline IP -> ASN database used by `geoloc know` / `geoloc enrich`:
# the npm package @ip-location-db/asn (RouteViews + NRO + DB-IP ASN Lite, CC BY 4.0:
# attribution to routeviews.org and DB-IP.com is required when you use or show its data).
# Usage: scripts/fetch-asn-db.sh [DEST]   (default: data/asn; ~33 MB of CSV)
set -euo pipefail
dest=${1:-data/asn}
version=${ASN_DB_VERSION:-latest}
command -v npm >/dev/null || { echo "fetch-asn-db: npm is needed (apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@ip-location-db/asn@$version" >/dev/null)
tar -xzf "$tmp"/ip-location-db-asn-*.tgz -C "$tmp"
mkdir -p "$dest"
for f in asn-ipv4.csv asn-ipv6.csv ROUTEVIEWS-LICENSE DBIP-LICENSE NRO_LICENSE MODIFICATIONS; do
  cp "$tmp/package/$f" "$dest/"
done
v=$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$tmp/package/package.json" | head -1)
echo "$v" > "$dest/VERSION"
echo "fetch-asn-db: @ip-location-db/asn $v in $dest ($(wc -l < "$dest/asn-ipv4.csv") IPv4 ranges, $(wc -l < "$dest/asn-ipv6.csv") IPv6)"
