// The Live page: one sample a second over server-sent events, drawn with uPlot (vendored).
// Tiles show the latest sample as text, so the figures are readable without the charts.
(function () {
  "use strict";
  var KEEP = 300;
  var STATUSES = ["HIT", "MISS", "EXPIRED", "REVALIDATED", "UPDATING", "STALE", "BYPASS", "DYNAMIC"];
  var COLOURS = ["#1a7f37", "#cf222e", "#bc4c00", "#8250df", "#0969da", "#9a6700", "#57606a", "#1b7c83"];
  var state = { samples: [], charts: {}, tiers: [] };
  window.edgecacheLive = state;

  function bytes(n) {
    if (n == null) return "–";
    var units = ["B", "KB", "MB", "GB", "TB"], i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
  }
  function num(n, digits) {
    if (n == null) return "–";
    return n >= 1000 ? Math.round(n).toLocaleString("en") : n.toFixed(digits);
  }

  function width(el) { return Math.max(240, el.clientWidth - 4); }

  function make(id, series, axes, scales) {
    var el = document.getElementById(id);
    var opts = {
      width: width(el), height: 190,
      series: [{}].concat(series),
      axes: axes || [{}, { size: 60 }],
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
      scales: Object.assign({ x: { time: true } }, scales || {}),
    };
    el.innerHTML = "";
    return new uPlot(opts, [[]].concat(series.map(function () { return []; })), el);
  }
  function line(label, colour, extra) {
    var s = { label: label, stroke: colour, width: 2, points: { show: false }, spanGaps: false };
    for (var k in extra || {}) s[k] = extra[k];
    return s;
  }

  function build() {
    state.charts.status = make("c-status", STATUSES.map(function (s, i) { return line(s, COLOURS[i]); }));
    state.charts.hit = make("c-hit", [line("HIT %", COLOURS[0], { fill: "rgba(26,127,55,0.12)" })],
      null, { y: { range: [0, 100] } });
    state.charts.bytes = make("c-bytes", [line("bytes/s", "#0969da", { fill: "rgba(9,105,218,0.10)", value: function (u, v) { return bytes(v); } })],
      [{}, { size: 70, values: function (u, vals) { return vals.map(bytes); } }]);
    state.charts.origin = make("c-origin", [line("ms", "#bc4c00")]);
    var storeSeries = [];
    state.tiers.forEach(function (t, i) {
      storeSeries.push(line(t + " objects", COLOURS[i % COLOURS.length]));
      storeSeries.push(line(t + " bytes", COLOURS[(i + 4) % COLOURS.length], { scale: "bytes", dash: [6, 4], value: function (u, v) { return bytes(v); } }));
    });
    state.charts.store = make("c-store", storeSeries,
      [{}, { size: 60 }, { side: 1, scale: "bytes", grid: { show: false }, size: 70, values: function (u, vals) { return vals.map(bytes); } }]);
    state.charts.purge = make("c-purge", [line("purges/s", "#8250df"), line("backlog", "#cf222e", { scale: "backlog" })],
      [{}, { size: 60 }, { side: 1, scale: "backlog", grid: { show: false }, size: 60 }]);
  }

  function columns() {
    var s = state.samples;
    var x = s.map(function (p) { return p.t; });
    function col(f) { return s.map(f); }
    var store = [x];
    state.tiers.forEach(function (t) {
      store.push(col(function (p) { return p.tiers[t] ? p.tiers[t].objects : null; }));
      store.push(col(function (p) { return p.tiers[t] ? p.tiers[t].bytes : null; }));
    });
    return {
      status: [x].concat(STATUSES.map(function (st) { return col(function (p) { return p.status[st] || 0; }); })),
      hit: [x, col(function (p) { return p.hit_ratio == null ? null : p.hit_ratio * 100; })],
      bytes: [x, col(function (p) { return p.bytes; })],
      origin: [x, col(function (p) { return p.origin_ms; })],
      store: store,
      purge: [x, col(function (p) { return p.purges; }), col(function (p) { return p.backlog; })],
    };
  }

  function tiles(p) {
    var tierNames = Object.keys(p.tiers);
    var objects = 0, stored = 0;
    tierNames.forEach(function (t) { objects += p.tiers[t].objects; stored += p.tiers[t].bytes; });
    document.getElementById("v-rps").textContent = num(p.rps, 1);
    document.getElementById("v-hit").textContent = p.hit_ratio == null ? "–" : (p.hit_ratio * 100).toFixed(1) + " %";
    document.getElementById("v-bytes").textContent = bytes(p.bytes) + "/s";
    document.getElementById("v-origin").textContent = p.origin_ms == null ? "–" : p.origin_ms.toFixed(1) + " ms";
    document.getElementById("v-objects").textContent = num(objects, 0);
    document.getElementById("v-stored").textContent = bytes(stored);
    document.getElementById("v-purges").textContent = num(p.purges, 1);
    document.getElementById("v-backlog").textContent = num(p.backlog, 0);
  }

  function redraw() {
    var last = state.samples[state.samples.length - 1];
    if (!last) return;
    var tiers = Object.keys(last.tiers).sort();
    if (tiers.join() !== state.tiers.join()) { state.tiers = tiers; build(); }
    var cols = columns();
    for (var name in state.charts) state.charts[name].setData(cols[name]);
    tiles(last);
  }

  function add(samples) {
    state.samples = state.samples.concat(samples).slice(-KEEP);
    redraw();
  }

  build();
  var live = document.getElementById("live-state");
  var source = new EventSource("/console/live/events");
  source.addEventListener("history", function (e) { state.samples = []; add(JSON.parse(e.data)); });
  source.addEventListener("sample", function (e) { add([JSON.parse(e.data)]); live.textContent = "Live · updated " + new Date().toLocaleTimeString(); });
  source.onerror = function () { live.textContent = "Disconnected; retrying…"; };
  window.addEventListener("resize", function () {
    for (var name in state.charts) {
      var c = state.charts[name];
      c.setSize({ width: width(c.root.parentNode), height: 190 });
    }
  });
})();
