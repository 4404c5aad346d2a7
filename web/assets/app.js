// geoloc web interface: plain JS, no bundler. Every text from the server is written with
// textContent (never as HTML).
"use strict";
(function () {
  const G = (window.geoloc = { probeUpdates: {}, firstMapPaintMs: null, lastResult: null });
  const $ = (id) => document.getElementById(id);
  const el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  };
  // ---- API key: pasted once, kept in this browser (localStorage), sent as an
  // `Authorization: Bearer` header with every API request (the server forwards it to the
  // coordinator). Never put in a URL.
  const KEY = "geoloc-api-key";
  const storedKey = () => { try { return localStorage.getItem(KEY) || ""; } catch (e) { return ""; } };
  const keyInput = $("api-key");
  keyInput.value = storedKey();
  keyInput.addEventListener("change", () => {
    try { localStorage.setItem(KEY, keyInput.value.trim()); } catch (e) { /* private mode */ }
  });
  const api = (path, opts) => {
    const o = Object.assign({}, opts || {});
    const h = Object.assign({}, o.headers || {});
    const k = storedKey();
    if (k) h.authorization = "Bearer " + k;
    o.headers = h;
    return fetch(path, o);
  };
  G.api = api;
  const fmt = (x, d) => (typeof x === "number" && isFinite(x) ? x.toFixed(d) : "-");
  const row = (table, cells, head) => {
    const tr = el("tr");
    cells.forEach((c) => tr.appendChild(el(head ? "th" : "td", c)));
    table.appendChild(tr);
    return tr;
  };

  // ---- map: embedded Natural Earth outlines, optional online tiles ----
  const map = L.map("map", { worldCopyJump: true, minZoom: 1 }).setView([20, 0], 2);
  const layers = { probes: L.layerGroup().addTo(map), result: L.layerGroup().addTo(map), fleet: L.layerGroup(), audit: L.layerGroup(), history: L.layerGroup() };
  api("/api/config").then((r) => r.json()).then((cfg) => {
    if (cfg.tile_url) {
      L.tileLayer(cfg.tile_url, { attribution: cfg.tile_attribution || "" }).addTo(map).bringToBack();
    }
  }).catch(() => {});
  fetch("/assets/vendor/world-atlas/countries-110m.json").then((r) => r.json()).then((topo) => {
    const countries = topojson.feature(topo, topo.objects.countries);
    // Rings that cross the antimeridian jump from +180 to -180: unwrap them (a point more
    // than 180 degrees from the previous one is shifted by 360), or Leaflet draws a band
    // across the whole map (Russia, Fiji, Antarctica).
    const unwrap = (ring) => {
      let shift = 0;
      return ring.map((p, i) => {
        if (i > 0) {
          const d = p[0] + shift - ring[i - 1][0] - (ring[i - 1].shift || 0);
          if (d > 180) shift -= 360;
          else if (d < -180) shift += 360;
        }
        const q = [p[0] + shift, p[1]];
        p.shift = shift;
        return q;
      });
    };
    countries.features.forEach((f) => {
      const g = f.geometry;
      if (!g) return;
      if (g.type === "Polygon") g.coordinates = g.coordinates.map(unwrap);
      if (g.type === "MultiPolygon") g.coordinates = g.coordinates.map((poly) => poly.map(unwrap));
    });
    L.geoJSON(countries, {
      style: { color: "#9c9483", weight: 0.6, fillColor: "#e4dfd2", fillOpacity: 1 },
      className: "geoloc-country",
      interactive: false,
    }).addTo(map).bringToBack();
    map.attributionControl.addAttribution("Natural Earth");
    requestAnimationFrame(() => requestAnimationFrame(() => { G.firstMapPaintMs = performance.now(); }));
  });

  // ---- probes (fleet) ----
  let fleet = {};
  function loadFleet() {
    return api("/api/probes").then((r) => r.json()).then((j) => {
      if (j.error) throw new Error(j.error);
      fleet = {};
      (j.probes || []).forEach((p) => (fleet[p.probe_id] = p));
      G.fleetNow = j.now_unix_ms;
      return j;
    });
  }
  function ago(ms) {
    if (!ms) return "never";
    const s = Math.max(0, Math.round(ms / 1000));
    return s < 120 ? s + " s ago" : s < 7200 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
  }
  function showFleet() {
    layers.fleet.clearLayers();
    loadFleet().then((j) => {
      const t = $("fleet-table");
      t.replaceChildren();
      row(t, ["probe", "status", "last seen", "vetting", "position", "version"], true);
      let healthy = 0;
      (j.probes || []).forEach((p) => {
        if (p.healthy) healthy++;
        const vet = p.flagged ? "flagged: " + (p.flag_reason || "?") : "vetted";
        const tr = row(t, [p.probe_id, p.status, p.last_seen_unix_ms ? ago(j.now_unix_ms - p.last_seen_unix_ms) : "never", vet, fmt(p.lat, 3) + ", " + fmt(p.lon, 3), p.agent_version]);
        tr.dataset.probeId = p.probe_id;
        tr.className = p.status;
        const color = p.flagged ? "#b00020" : p.healthy ? "#2e7d32" : "#8a6d00";
        L.circleMarker([p.lat, p.lon], { radius: 5, color, fillColor: color, fillOpacity: 0.8, className: "geoloc-fleet-probe" })
          .bindTooltip(p.probe_id + " (" + p.status + ")" + (p.flagged ? ": " + p.flag_reason : ""))
          .addTo(layers.fleet);
      });
      $("fleet-summary").textContent = j.probes.length + " probes, " + healthy + " healthy";
    }).catch((e) => { $("fleet-summary").textContent = "cannot list probes: " + e.message; });
  }

  // ---- locate ----
  // A locate streams server-sent events; read with fetch (EventSource cannot send the
  // Authorization header).
  let source = null;
  function streamEvents(path, on) {
    const ctl = new AbortController();
    const s = { closed: false, close() { this.closed = true; ctl.abort(); } };
    api(path, { signal: ctl.signal, headers: { accept: "text/event-stream" } }).then((r) => {
      if (!r.ok || !r.body) throw new Error("web server answered " + r.status);
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      const pump = () => reader.read().then(({ done, value }) => {
        if (done) { if (!s.closed) on.error("lost the connection to the web server"); return; }
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.search(/\r?\n\r?\n/)) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i).replace(/^\r?\n\r?\n/, "");
          let name = "message", data = [];
          block.split(/\r?\n/).forEach((line) => {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          });
          if (data.length && on[name] && !s.closed) on[name](JSON.parse(data.join("\n")));
        }
        if (!s.closed) return pump();
      });
      return pump();
    }).catch((e) => { if (!s.closed) on.error(e.message || String(e)); });
    return s;
  }
  function resetLocate() {
    if (source) source.close();
    layers.probes.clearLayers();
    layers.result.clearLayers();
    $("answer").hidden = true;
    $("locate-error").hidden = true;
    $("locate-progress").textContent = "";
    G.probeUpdates = {};
  }
  const probeMarkers = {};
  function drawProbes() {
    Object.keys(probeMarkers).forEach((k) => delete probeMarkers[k]);
    Object.values(fleet).forEach((p) => {
      probeMarkers[p.probe_id] = L.circleMarker([p.lat, p.lon], { radius: 4, color: "#888", fillOpacity: 0.4, className: "geoloc-probe" })
        .bindTooltip(p.probe_id).addTo(layers.probes);
    });
  }
  function onProgress(p) {
    const m = probeMarkers[p.probe_id];
    if (m) {
      const lit = p.rtt_ms !== null && p.rtt_ms !== undefined;
      m.setStyle({ color: lit ? "#e65100" : "#555", fillColor: lit ? "#ff9800" : "#999", fillOpacity: 0.9, radius: lit ? 6 : 4 });
      const e = m.getElement();
      if (e) e.classList.add(lit ? "lit" : "silent");
      m.setTooltipContent(p.probe_id + ": " + (lit ? fmt(p.rtt_ms, 2) + " ms" : p.outcome));
      if (lit && fleet[p.probe_id]) {
        // The disc this RTT allows (speed of light in fibre, 2/3 c: 100 km per ms of RTT).
        L.circle([fleet[p.probe_id].lat, fleet[p.probe_id].lon], { radius: Math.min(p.rtt_ms * 100, 20000) * 1000, color: "#ff9800", weight: 1, fill: false, opacity: 0.5, className: "geoloc-disc", interactive: false }).addTo(layers.probes);
      }
    }
    G.probeUpdates[p.probe_id] = { page_unix_ms: Date.now(), server_unix_ms: p.server_unix_ms };
    $("locate-progress").textContent = "probes " + p.done + "/" + p.total + " (stage " + p.stage + "), last: " + p.probe_id + " " + (p.rtt_ms != null ? fmt(p.rtt_ms, 2) + " ms" : p.outcome);
  }
  function locate(ip, mode) {
    resetLocate();
    loadFleet().catch(() => {}).then(() => {
      drawProbes();
      const q = new URLSearchParams({ ip });
      if (mode) q.set("mode", mode);
      // No automatic reconnection: that would start another locate.
      const s = (source = streamEvents("/api/locate?" + q.toString(), {
        progress: (p) => onProgress(p),
        result: (v) => { s.close(); showResult(v, true); },
        failure: (f) => {
          s.close();
          $("locate-error").textContent = f.code + ": " + f.message;
          $("locate-error").hidden = false;
        },
        error: (m) => {
          s.close();
          if ($("answer").hidden) {
            $("locate-error").textContent = m;
            $("locate-error").hidden = false;
          }
        },
      }));
    });
  }
  function showResult(view, live) {
    const r = view.located, s = r.solution;
    G.lastResult = view;
    if (!live) { layers.probes.clearLayers(); }
    layers.result.clearLayers();
    let bounds = null;
    if (s.region && s.region.type) {
      const g = L.geoJSON(s.region, { style: { color: "#1f5fbf", weight: 2, fillOpacity: 0.15 }, className: "geoloc-region" }).addTo(layers.result);
      bounds = g.getBounds();
    }
    L.circle([s.estimate.lat, s.estimate.lon], { radius: s.radius_km * 1000, color: "#1f5fbf", weight: 1, dashArray: "4 4", fill: false, className: "geoloc-radius", interactive: false }).addTo(layers.result);
    L.circleMarker([s.estimate.lat, s.estimate.lon], { radius: 7, color: "#0d3b7a", fillColor: "#1f5fbf", fillOpacity: 1, className: "geoloc-estimate" })
      .bindTooltip("estimate: " + s.place.city + ", " + s.place.country).addTo(layers.result);
    (view.probe_rtts || []).forEach((m) => {
      L.circleMarker([m.lat, m.lon], { radius: 3, color: "#e65100", className: "geoloc-used-probe" }).bindTooltip(m.probe_id + ": " + fmt(m.rtt_ms, 2) + " ms").addTo(layers.result);
    });
    const mm = s.maxmind;
    if (mm && typeof mm.lat === "number" && typeof mm.lon === "number") {
      const wrong = mm.verdict === "provably-wrong";
      L.circleMarker([mm.lat, mm.lon], { radius: 6, color: wrong ? "#b00020" : "#2e7d32", fillOpacity: 0.8, className: "geoloc-maxmind" })
        .bindTooltip("MaxMind: " + (mm.city || "") + " " + (mm.country || "") + " (" + mm.verdict + ")").addTo(layers.result);
      if (wrong && mm.ruled_out_by) {
        const p = (view.probe_rtts || []).find((m) => m.probe_id === mm.ruled_out_by) || fleet[mm.ruled_out_by];
        if (p) L.polyline([[p.lat, p.lon], [mm.lat, mm.lon]], { color: "#b00020", dashArray: "6 4", className: "geoloc-ruled-out" }).bindTooltip(mm.ruled_out_by + " rules this point out").addTo(layers.result);
      }
    }
    (s.instances || []).forEach((i) => {
      L.circle([i.lat, i.lon], { radius: i.radius_km * 1000, color: "#6a1b9a", className: "geoloc-instance" }).bindTooltip(i.city + ", " + i.country).addTo(layers.result);
    });
    if (bounds && bounds.isValid()) map.fitBounds(bounds.pad(0.3));
    else map.setView([s.estimate.lat, s.estimate.lon], 4);

    const a = $("answer");
    a.dataset.resultId = r.result_id;
    a.dataset.lat = s.estimate.lat;
    a.dataset.lon = s.estimate.lon;
    a.dataset.radiusKm = s.radius_km;
    $("answer-title").textContent = r.ip + ": " + s.place.city + ", " + s.place.country;
    const link = $("answer-link");
    link.href = "#/result/" + encodeURIComponent(r.result_id);
    link.textContent = location.origin + "/#/result/" + r.result_id;
    const t = $("answer-table");
    t.replaceChildren();
    row(t, ["estimate", fmt(s.estimate.lat, 4) + ", " + fmt(s.estimate.lon, 4)]).id = "answer-estimate";
    row(t, ["radius", fmt(s.radius_km, 0) + " km"]).id = "answer-radius";
    row(t, ["region", fmt(s.region_km2, 0) + " km²"]);
    row(t, ["nearest place", s.place.city + ", " + s.place.country + " (" + fmt(s.place.distance_km, 0) + " km)"]).id = "answer-place";
    row(t, ["country", s.place.country]);
    row(t, ["time zone", s.timezone.iana + " (UTC" + s.timezone.utc_offset + ")"]);
    row(t, ["time zones", (s.timezones || []).map((z) => z.iana + " " + fmt(z.share * 100, 0) + "%").join(", ")]);
    row(t, ["anycast", s.anycast ? "yes, " + s.instances.length + " instances" : "no"]);
    row(t, ["probes", r.probes_used + " used of " + r.probes_asked + " asked, " + r.packets_sent + " packets; min RTT " + fmt(r.min_rtt_ms, 2) + " ms (" + r.nearest_probe + ")"]);
    row(t, ["computed", new Date(r.created_at_unix_ms).toISOString() + (r.cached ? " (stored)" : "")]);
    zonesTable($("answer-times"), view.local_time_now || [], "now");
    $("answer-at").replaceChildren();
    const m = $("answer-maxmind");
    if (!mm || mm.verdict === "no-data") m.textContent = "no data for this address";
    else m.textContent = (mm.city || "?") + " " + (mm.country || "") + " (" + fmt(mm.lat, 4) + ", " + fmt(mm.lon, 4) + "), " + fmt(mm.distance_km, 0) + " km from the estimate: " + mm.verdict + (mm.ruled_out_by ? "; ruled out by " + mm.ruled_out_by + " (" + fmt(mm.excess_km, 0) + " km beyond its bound)" : "");
    $("instances-title").hidden = !s.anycast;
    const ul = $("answer-instances");
    ul.replaceChildren();
    (s.instances || []).forEach((i) => ul.appendChild(el("li", i.city + ", " + i.country + " (" + fmt(i.lat, 2) + ", " + fmt(i.lon, 2) + ") within " + fmt(i.radius_km, 0) + " km, seen by " + i.landmark)));
    const dl = $("answer-dropped");
    dl.replaceChildren();
    (s.dropped || []).forEach((d) => dl.appendChild(el("li", d.landmark + ": " + d.reason)));
    (s.loosened || []).forEach((d) => dl.appendChild(el("li", d.landmark + " (loosened): " + d.reason)));
    if (!dl.children.length) dl.appendChild(el("li", "none"));
    const pt = $("answer-probes");
    pt.replaceChildren();
    row(pt, ["probe", "RTT ms", "position"], true);
    (view.probe_rtts || []).slice().sort((x, y) => x.rtt_ms - y.rtt_ms).forEach((p) => row(pt, [p.probe_id, fmt(p.rtt_ms, 2), fmt(p.lat, 2) + ", " + fmt(p.lon, 2)]));
    a.hidden = false;
    $("locate-progress").textContent = live ? "done" : "stored result";
    showKnow(r.ip);
  }
  // ---- know fields: GET /api/know (404 when geoloc web runs without --asn-db/--know-config) ----
  let knowSeq = 0;
  function showKnow(ip) {
    const box = $("know");
    box.hidden = true;
    const seq = ++knowSeq;
    api("/api/know?" + new URLSearchParams({ ip: ip }).toString())
      .then((r) => (r.ok ? r.json() : null))
      .then((j) => {
        if (!j || seq !== knowSeq) return;
        const t = $("know-table");
        t.replaceChildren();
        (j.lines || []).forEach((l) => row(t, [l[0], l[1]]));
        const ul = $("know-links");
        ul.replaceChildren();
        (j.links || []).forEach((l) => {
          if (!/^https?:[/][/]/.test(l.url)) return;
          const li = el("li", l.source + ": ");
          const a = el("a", l.url);
          a.href = l.url;
          a.target = "_blank";
          a.rel = "noopener noreferrer";
          li.appendChild(a);
          ul.appendChild(li);
        });
        box.hidden = false;
      })
      .catch(() => {});
  }
  function zonesTable(t, zones, label) {
    t.replaceChildren();
    row(t, ["zone", "share", "local time (" + label + ")"], true);
    zones.forEach((z) => row(t, [z.iana + " (" + z.abbreviation + ")", fmt(z.share * 100, 0) + "%", z.local_time]));
  }
  $("locate-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const ip = $("locate-ip").value.trim();
    if (ip) locate(ip, $("locate-mode").value);
  });
  $("at-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if (!G.lastResult) return;
    const q = new URLSearchParams({ result_id: G.lastResult.located.result_id, at: $("at-input").value.trim() });
    api("/api/localtime?" + q).then((r) => r.json()).then((j) => {
      if (j.error) { $("answer-at").replaceChildren(el("tr", j.error, "error")); return; }
      zonesTable($("answer-at"), j.zones, "at " + j.at);
    });
  });
  function showStored(id) {
    resetLocate();
    loadFleet().catch(() => {}).then(() => api("/api/result/" + encodeURIComponent(id))).then((r) => r.json()).then((j) => {
      if (j.error) { $("locate-error").textContent = j.error; $("locate-error").hidden = false; return; }
      $("locate-ip").value = j.located.ip;
      showResult(j, false);
    });
  }

  // ---- audit ----
  let auditTimer = null;
  $("audit-file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    if (f) f.text().then((t) => ($("audit-input").value = t));
  });
  $("audit-form").addEventListener("submit", (e) => {
    e.preventDefault();
    $("audit-error").hidden = true;
    $("audit-result").hidden = true;
    api("/api/audit", { method: "POST", body: $("audit-input").value, headers: { "content-type": "text/plain" } })
      .then((r) => r.json()).then((j) => {
        if (j.error) throw new Error(j.error);
        G.auditId = j.id;
        pollAudit(j.id);
      }).catch((err) => { $("audit-error").textContent = err.message; $("audit-error").hidden = false; });
  });
  function svgInto(container, svgText) {
    // The server's own SVG (values escaped there), parsed as XML, never as HTML.
    const doc = new DOMParser().parseFromString(svgText, "image/svg+xml");
    container.replaceChildren(document.importNode(doc.documentElement, true));
  }
  function pollAudit(id) {
    if (auditTimer) clearTimeout(auditTimer);
    api("/api/audit/" + encodeURIComponent(id)).then((r) => r.json()).then((j) => {
      $("audit-progress").textContent = j.done + " of " + j.total + " done, " + j.failed + " failed" + (j.finished ? " — finished" : "") + (j.error ? " (" + j.error + ")" : "");
      $("audit-progress").dataset.finished = j.finished ? "true" : "false";
      const base = "/api/audit/" + encodeURIComponent(id) + "/";
      $("dl-csv").href = base + "audit.csv";
      $("dl-geojson").href = base + "audit.geojson";
      $("dl-html").href = base + "report.html";
      $("dl-md").href = base + "report.md";
      const s = j.summary;
      $("audit-summary").textContent = s.located + " located; distance to MaxMind median " + fmt(s.median_km, 0) + " km, p80 " + fmt(s.p80_km, 0) + " km; verdicts: " + Object.entries(s.verdicts).map(([k, v]) => k + " " + v).join(", ");
      svgInto($("audit-cdf"), j.charts.cdf);
      svgInto($("audit-map"), j.charts.map);
      const t = $("audit-table");
      t.replaceChildren();
      const cols = ["ip", "city", "country", "radius_km", "maxmind_city", "maxmind_distance_km", "maxmind_verdict", "error"];
      row(t, cols, true);
      layers.audit.clearLayers();
      j.rows.forEach((r) => {
        if (!r) return;
        row(t, cols.map((c) => r[c]));
        const lat = parseFloat(r.lat), lon = parseFloat(r.lon);
        if (isFinite(lat) && isFinite(lon)) {
          const wrong = r.maxmind_verdict === "provably-wrong";
          L.circleMarker([lat, lon], { radius: 5, color: "#1f5fbf", className: "geoloc-audit-estimate" }).bindTooltip(r.ip).addTo(layers.audit);
          const mlat = parseFloat(r.maxmind_lat), mlon = parseFloat(r.maxmind_lon);
          if (wrong && isFinite(mlat) && isFinite(mlon)) L.polyline([[lat, lon], [mlat, mlon]], { color: "#b00020", dashArray: "4 3" }).addTo(layers.audit);
        }
      });
      $("audit-result").hidden = false;
      if (!j.finished) auditTimer = setTimeout(() => pollAudit(id), 500);
    }).catch((err) => { $("audit-error").textContent = err.message; $("audit-error").hidden = false; });
  }

  // ---- history: the coordinator's stored results, newest first, filtered by address,
  // paged; every state is a URL (#/history?ip=...&page=...) and so can be shared ----
  function showHistory(params) {
    const ip = params.get("ip") || "";
    const page = params.get("page") || "";
    $("history-ip").value = ip;
    const q = new URLSearchParams({ limit: "50" });
    if (ip) q.set("ip", ip);
    if (page) q.set("page_token", page);
    const t = $("history-table");
    $("history-error").hidden = true;
    layers.history.clearLayers();
    api("/api/history?" + q.toString()).then((r) => r.json()).then((j) => {
      if (j.error) throw new Error(j.error);
      G.history = j;
      t.replaceChildren();
      row(t, ["when (UTC)", "address", "status", "place", "radius"], true);
      j.results.forEach((h) => {
        const tr = el("tr");
        tr.dataset.resultId = h.result_id;
        tr.className = h.status;
        tr.appendChild(el("td", new Date(h.created_at_unix_ms).toISOString().replace("T", " ").slice(0, 19)));
        const td = el("td");
        if (h.status === "done") {
          const a = el("a", h.ip);
          a.href = "#/result/" + encodeURIComponent(h.result_id);
          td.appendChild(a);
        } else {
          td.textContent = h.ip;
        }
        tr.appendChild(td);
        tr.appendChild(el("td", h.status));
        tr.appendChild(el("td", h.status === "done" ? h.city + ", " + h.country : h.error_code + ": " + h.error));
        tr.appendChild(el("td", h.radius_km != null ? fmt(h.radius_km, 0) + " km" : "-"));
        t.appendChild(tr);
        if (h.lat != null && h.lon != null) {
          L.circleMarker([h.lat, h.lon], { radius: 5, color: "#1f5fbf", className: "geoloc-history-estimate" })
            .bindTooltip(h.ip + " " + h.city + ", " + h.country).addTo(layers.history);
        }
      });
      $("history-summary").textContent = j.results.length + " results" + (page ? " (older page)" : "") + (ip ? " of " + ip : "");
      const more = $("history-more");
      if (j.next_page_token) {
        const n = new URLSearchParams({ page: j.next_page_token });
        if (ip) n.set("ip", ip);
        more.href = "#/history?" + n.toString();
        more.hidden = false;
      } else {
        more.hidden = true;
      }
    }).catch((e) => { $("history-error").textContent = "cannot list results: " + e.message; $("history-error").hidden = false; });
  }
  $("history-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const ip = $("history-ip").value.trim();
    location.hash = "#/history" + (ip ? "?" + new URLSearchParams({ ip }).toString() : "");
  });

  // ---- routing: #/locate, #/fleet, #/audit, #/history, #/result/<id> ----
  function route() {
    const full = location.hash || "#/locate";
    const qi = full.indexOf("?");
    const h = qi >= 0 ? full.slice(0, qi) : full;
    const params = new URLSearchParams(qi >= 0 ? full.slice(qi + 1) : "");
    const parts = h.slice(2).split("/");
    let page = parts[0] || "locate";
    if (page === "result") page = "locate";
    ["locate", "fleet", "audit", "history"].forEach((p) => {
      $("page-" + p).hidden = p !== page;
      $("nav-" + p).classList.toggle("active", p === page);
    });
    Object.entries({ locate: [layers.probes, layers.result], fleet: [layers.fleet], audit: [layers.audit], history: [layers.history] }).forEach(([p, ls]) =>
      ls.forEach((l) => (p === page ? l.addTo(map) : l.remove())));
    if (parts[0] === "result" && parts[1]) showStored(decodeURIComponent(parts[1]));
    if (page === "fleet") showFleet();
    if (page === "history") showHistory(params);
    setTimeout(() => map.invalidateSize(), 0);
  }
  window.addEventListener("hashchange", route);
  route();
})();
