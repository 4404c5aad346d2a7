#!/usr/bin/env python3
"""Anycast evaluation on the iGreedy ground truth (../shared/data/anycast-igreedy).

For each target file `measurements/<target>-<platform>` (tab-separated
`hostname lat lon gt min_rtt_ms`), feeds the vantage points' RTTs to `geoloc solve --method cbg`
and reports: anycast detected, instances found vs ground-truth sites seen by the vantage
points, and the share of instances placed in the right city. An instance is revealed by one
vantage point's disc; its truth is the site (IATA code) that answered that vantage point;
"right city" = our chosen city within 100 km of that site's airport. Mean error in km too.

Usage: scripts/anycast-eval.py [DATA_DIR] [GEOLOC_BINARY]
"""
import json, math, os, subprocess, sys, tempfile

data = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/anycast-igreedy"
geoloc = sys.argv[2] if len(sys.argv) > 2 else "./target/release/geoloc"

def dist(a, b):
    la1, lo1, la2, lo2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1, math.sqrt(h)))

airports = {}
for line in open(os.path.join(data, "airports.csv"), encoding="utf-8"):
    if line.startswith("#"):
        continue
    f = line.rstrip("\n").split("\t")
    if len(f) >= 4:
        lat, lon = map(float, f[3].split())
        airports[f[0].upper()] = (lat, lon)

print("| target | VPs | anycast | instances | GT sites | right city | mean error km |")
print("|---|---|---|---|---|---|---|")
tot_inst = tot_right = 0
for name in sorted(os.listdir(os.path.join(data, "measurements"))):
    rows, gt = {}, {}
    for line in open(os.path.join(data, "measurements", name), encoding="utf-8"):
        if line.startswith("#"):
            continue
        f = line.rstrip("\n").split("\t")
        if len(f) < 5:
            continue
        host = f[0].replace(",", "_")
        if host in rows:
            continue
        rows[host] = (f[1], f[2], f[4])
        gt[host] = f[3].upper()
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as tmp:
        for h, (lat, lon, rtt) in rows.items():
            tmp.write(f"{h},{lat},{lon},{rtt}\n")
    out = subprocess.run([geoloc, "solve", "--input", tmp.name, "--method", "cbg"], capture_output=True, text=True)
    os.unlink(tmp.name)
    if out.returncode != 0:
        print(f"| {name} | {len(rows)} | error: {out.stderr.strip()} | | | | |")
        continue
    v = json.loads(out.stdout)
    sites = {g for g in gt.values() if g in airports}
    right, errs = 0, []
    for inst in v["instances"]:
        site = airports.get(gt.get(inst["landmark"], ""))
        if site is None:
            continue
        e = dist((inst["lat"], inst["lon"]), site)
        errs.append(e)
        right += e <= 100
    n = len(v["instances"])
    tot_inst += len(errs)
    tot_right += right
    mean = sum(errs) / len(errs) if errs else float("nan")
    print(f"| {name} | {len(rows)} | {v['anycast']} | {n} | {len(sites)} | {right}/{len(errs)} | {mean:.0f} |")
print(f"\nall targets: {tot_right}/{tot_inst} instances in the right city ({tot_right / max(tot_inst, 1):.1%})")
