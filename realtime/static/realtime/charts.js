// GridToken dashboard charts: uPlot (vendor/uplot, MIT), fed by energy.json and fleet.json.
// The server sends exact decimal strings; they become numbers here for drawing only, and the legend (what
// hover shows) prints the server's own strings. Every series differs by its dash as well as its colour, and
// every axis names its unit. dashboard.js calls refresh() when a WebSocket event says the figures moved.
(function () {
  "use strict";

  // One look per role: colour, dash pattern (canvas) and the legend marker's border style, which repeats it.
  const LOOKS = {
    solid: { dash: [], border: "solid", width: 2 },
    dashed: { dash: [8, 4], border: "dashed", width: 2 },
    dotted: { dash: [2, 3], border: "dotted", width: 2.5 },
    double: { dash: [12, 3, 2, 3], border: "double", width: 2 },
  };
  const INK = "#1d2330";
  const GRID = "#e4e7ec";
  const REFRESH_GAP_MS = 2000;
  const FLEET_EVERY_MS = 30000;
  const MARKERS_UP_TO = 120; // points in view

  const charts = {}; // name -> { plot, source, exact }: what tests and people read
  let config = null;
  let fetchJson = null;
  const spans = { energy: "48h", fleet: "1h" };
  let lastEnergy = null;

  function seconds(rfc3339) {
    return Date.parse(rfc3339) / 1000;
  }

  function tokens(baseUnits) {
    // Integer base units (a string of digits) -> exact decimal string with the token's decimals.
    const places = config.decimals;
    const digits = String(baseUnits).padStart(places + 1, "0");
    return places ? digits.slice(0, -places) + "." + digits.slice(-places) : digits;
  }

  function utcLabel(stepSeconds) {
    return stepSeconds >= 86400 ? "day (UTC)" : stepSeconds >= 3600 ? "hour (UTC)" : "minute (UTC)";
  }

  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  function tickLabels(stepSeconds) {
    // 24-hour UTC times; the date under the first tick and under each midnight, days as "Dec 7".
    return (u, splits) =>
      splits.map((ts, i) => {
        const d = new Date(ts * 1000);
        const day = MONTHS[d.getUTCMonth()] + " " + d.getUTCDate();
        if (stepSeconds >= 86400) return day;
        const time = String(d.getUTCHours()).padStart(2, "0") + ":" + String(d.getUTCMinutes()).padStart(2, "0");
        return i === 0 || (d.getUTCHours() === 0 && d.getUTCMinutes() === 0) ? time + "\n" + day : time;
      });
  }

  function latest(values) {
    for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null && values[i] !== undefined) return i;
    return null;
  }

  function seriesSpec(label, color, look, unit) {
    const style = LOOKS[look];
    return {
      label: label,
      stroke: color,
      width: style.width,
      dash: style.dash,
      // Markers where something happened (not on every empty bucket), and on points a gap leaves alone; none
      // once the points crowd (a day of minutes), where the dashes alone tell the series apart.
      points: {
        show: (u, seriesIndex, first, last) => last - first <= MARKERS_UP_TO, size: 6, stroke: color, fill: "#fff",
        filter: (u, seriesIndex, show) => (show ? u.data[seriesIndex].flatMap((v, i) => (v === null || v === 0 ? [] : [i])) : null),
      },
      spanGaps: false,
      unit: unit,
      border: style.border,
    };
  }

  function buildPlot(name, target, title, unit, stepSeconds, specs) {
    const width = Math.max(320, target.clientWidth || target.parentElement.clientWidth || 600);
    const options = {
      width: width,
      height: 240,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      legend: {
        live: true,
        markers: { width: 3, dash: (u, i) => u.series[i].border || "solid" },
      },
      cursor: { points: { size: 7 } },
      scales: { x: { time: true } },
      axes: [
        { label: utcLabel(stepSeconds), values: tickLabels(stepSeconds), stroke: INK, grid: { stroke: GRID }, size: 54, labelSize: 20, font: "12px system-ui", labelFont: "12px system-ui" },
        { label: unit, stroke: INK, grid: { stroke: GRID }, labelSize: 20, size: 70, font: "12px system-ui", labelFont: "12px system-ui" },
      ],
      series: [
        {
          label: "UTC",
          value: (u, v, seriesIndex, index) => {
            const at = index === null || index === undefined ? u.data[0].length - 1 : index;
            return at < 0 ? "—" : new Date(u.data[0][at] * 1000).toISOString().replace(/:00\.000Z$/, "Z").replace("T", " ");
          },
        },
      ].concat(
        specs.map((spec, i) =>
          Object.assign(spec, {
            // Hover shows the server's exact text with the series' unit, never the float drawn; away from the
            // chart, the latest value.
            value: (u, v, seriesIndex, index) => {
              const exact = charts[name].exact[i];
              const at = index === null || index === undefined ? latest(exact) : index;
              const text = at === null ? null : exact[at];
              return text === null || text === undefined ? "—" : text + " " + spec.unit;
            },
          })
        )
      ),
    };
    target.replaceChildren();
    const plot = new uPlot(options, [[]].concat(specs.map(() => [])), target);
    plot.root.setAttribute("aria-label", title);
    return plot;
  }

  // name -> (source) -> { stepSeconds, x, exact: [[text]], specs }
  function draw(name, targetId, title, unit, shaped) {
    const target = document.getElementById(targetId);
    if (!target) return;
    const entry = charts[name];
    if (!entry || entry.step !== shaped.stepSeconds || entry.labels !== shaped.specs.map((s) => s.label).join("|")) {
      if (entry) entry.plot.destroy();
      charts[name] = { exact: shaped.exact, step: shaped.stepSeconds, labels: shaped.specs.map((s) => s.label).join("|") };
      charts[name].plot = buildPlot(name, target, title, unit, shaped.stepSeconds, shaped.specs);
    }
    charts[name].exact = shaped.exact;
    charts[name].source = shaped.source;
    const numbers = shaped.exact.map((texts) => texts.map((text) => (text === null ? null : Number(text))));
    charts[name].plot.setData([shaped.x].concat(numbers));
  }

  function energyShapes(body, meterId) {
    const x = body.buckets.map(seconds);
    const chosen = meterId ? body.meters.find((m) => m.meter_id === meterId) : null;
    const energy = chosen || body.total;
    const step = body.step_seconds;
    return {
      energy: {
        stepSeconds: step, x: x, source: energy,
        exact: [energy.generated, energy.consumed, energy.net, energy.minted],
        specs: [
          seriesSpec("Generated", "#067647", "solid", "kWh"),
          seriesSpec("Consumed", "#b54708", "dashed", "kWh"),
          seriesSpec("Net", "#1d4ed8", "dotted", "kWh"),
          seriesSpec("Minted", "#7a2e9e", "double", "kWh"),
        ],
      },
      tokens: {
        stepSeconds: step, x: x, source: body,
        exact: [body.tokens_held_base_units.map(tokens), body.tokens_minted_base_units.map(tokens)],
        specs: [seriesSpec("Held", "#0f3d2e", "solid", "tokens"), seriesSpec("Minted", "#7a2e9e", "dashed", "tokens")],
      },
      certificates: {
        stepSeconds: step, x: x, source: body.certificates_wh,
        exact: [body.certificates_wh.held.map(String), body.certificates_wh.claimed.map(String)],
        specs: [seriesSpec("Held", "#0f3d2e", "solid", "Wh"), seriesSpec("Claimed", "#b42318", "dashed", "Wh")],
      },
    };
  }

  function showEnergy(body) {
    lastEnergy = body;
    const select = document.getElementById("energy-meter");
    const chosen = select.value;
    const known = new Set(Array.from(select.options).map((o) => o.value));
    body.meters.forEach((meter) => {
      if (!known.has(meter.meter_id)) select.append(new Option(meter.serial, meter.meter_id));
    });
    const note = document.getElementById("energy-note");
    const shown = body.meters.length;
    note.textContent = "UTC, by the time each reading was measured; hover a chart for exact values." +
      (body.meters_total > shown ? " The total adds up the first " + shown + " of your " + body.meters_total + " meters (by serial)." : "");
    document.querySelectorAll("#energy-card .step-name").forEach((node) => (node.textContent = body.step_seconds >= 86400 ? "day" : "hour"));
    const shapes = energyShapes(body, chosen);
    draw("energy", "chart-energy", "Energy per bucket", "kWh", shapes.energy);
    draw("tokens", "chart-tokens", "Tokens", "tokens", shapes.tokens);
    draw("certificates", "chart-certificates", "Certificates", "Wh", shapes.certificates);
    const none = body.certificates_wh.held.concat(body.certificates_wh.claimed).every((wh) => wh === 0);
    document.getElementById("certificates-empty").hidden = !none;
  }

  function text(values) {
    return values.map((v) => (v === null ? null : String(v)));
  }

  // The operator's charts: [name, element, unit, [[field, label, colour, look]...]].
  const FLEET_CHARTS = [
    ["throughput", "chart-throughput", "readings/min", [
      ["readings_in", "Stored", "#1d4ed8", "solid"],
      ["minted", "Minted", "#067647", "dashed"],
      ["flagged", "Flagged", "#b54708", "dotted"],
    ]],
    ["waiting", "chart-waiting", "readings", [
      ["backlog", "Backlog (pending, minting, awaiting window)", "#1d4ed8", "solid"],
      ["held", "Held for review", "#b54708", "dashed"],
      ["failed", "Failed", "#b42318", "dotted"],
    ]],
  ];

  function showFleet(body) {
    const x = body.buckets.map(seconds);
    FLEET_CHARTS.forEach(([name, targetId, unit, fields]) =>
      draw(name, targetId, name, unit, {
        stepSeconds: body.step_seconds, x: x, source: body,
        exact: fields.map(([field]) => text(body[field])),
        specs: fields.map(([, label, colour, look]) => seriesSpec(label, colour, look, unit)),
      })
    );
  }

  // 24/7 matching: a consumer's month from its report (the same JSON the API answers), hour by hour.
  function percent(ratio) {
    return ratio === null ? "—" : (Number(ratio) * 100).toFixed(1) + " %";
  }

  async function loadMatching() {
    const select = document.getElementById("matching-consumer");
    if (!select || typeof uPlot === "undefined") return;
    const consumer = config.matching_consumers.find((c) => c.id === select.value);
    const month = document.getElementById("matching-month").value;
    const query = month ? "?month=" + encodeURIComponent(month) : "";
    document.getElementById("matching-page").href = consumer.page_url + query;
    document.getElementById("matching-csv").href = consumer.csv_url + query;
    let body;
    try {
      body = await fetchJson(consumer.report_url + query);
    } catch (error) {
      console.warn("matching report refresh failed", error);
      return;
    }
    const score = document.getElementById("matching-score");
    score.textContent = percent(body.score);
    score.title = body.covered_wh + " / " + body.demand_wh + " Wh = " + body.score;
    document.getElementById("matching-annual").textContent = percent(body.annual.score);
    document.getElementById("matching-wh").textContent = body.matched_wh + " of " + body.demand_wh + " Wh";
    document.getElementById("matching-unmatched").textContent = body.unmatched_hours + " of " + body.hours.length;
    draw("matching", "chart-matching", "24/7 matching", "Wh", {
      stepSeconds: 3600, x: body.hours.map((h) => seconds(h.hour)), source: body,
      exact: [body.hours.map((h) => h.demand_wh), body.hours.map((h) => String(h.matched_wh))],
      // Stepped: each value holds for its whole hour.
      specs: [seriesSpec("Demand", "#b54708", "solid", "Wh"), seriesSpec("Matched", "#067647", "dashed", "Wh")]
        .map((spec) => Object.assign(spec, { paths: uPlot.paths.stepped({ align: 1 }) })),
    });
  }

  async function load(kind) {
    const url = kind === "energy" ? config.energy_url : config.fleet_url;
    if (!url || typeof uPlot === "undefined") return;
    try {
      const body = await fetchJson(url + "?span=" + encodeURIComponent(spans[kind]));
      if (kind === "energy") showEnergy(body);
      else showFleet(body);
    } catch (error) {
      console.warn(kind + " chart refresh failed", error);
    }
  }

  let refreshTimer = null;
  let lastRefresh = 0;
  function refresh() {
    // At most one refresh per REFRESH_GAP_MS, however many events arrive: the JSON is the truth, events the nudge.
    if (refreshTimer) return;
    const wait = Math.max(0, lastRefresh + REFRESH_GAP_MS - Date.now());
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      lastRefresh = Date.now();
      load("energy");
      load("fleet");
      loadMatching();
    }, wait);
  }

  function fit() {
    Object.values(charts).forEach((entry) => {
      const width = entry.plot.root.parentElement.clientWidth;
      if (width && Math.abs(width - entry.plot.width) > 4) entry.plot.setSize({ width: width, height: entry.plot.height });
    });
  }

  function init(pageConfig, fetcher) {
    config = pageConfig;
    fetchJson = fetcher;
    document.querySelectorAll("[data-chart-span]").forEach((button) => {
      button.addEventListener("click", () => {
        const kind = button.dataset.chartSpan;
        spans[kind] = button.value;
        document.querySelectorAll('[data-chart-span="' + kind + '"]').forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
        load(kind);
      });
    });
    const select = document.getElementById("energy-meter");
    if (select) select.addEventListener("change", () => lastEnergy && showEnergy(lastEnergy));
    ["matching-consumer", "matching-month"].forEach((id) => {
      const control = document.getElementById(id);
      if (control) control.addEventListener("change", loadMatching);
    });
    window.addEventListener("resize", fit);
    load("energy");
    load("fleet");
    loadMatching();
    if (config.fleet_url) setInterval(() => load("fleet"), FLEET_EVERY_MS);
  }

  window.GridTokenCharts = { init: init, refresh: refresh, charts: charts };
})();
