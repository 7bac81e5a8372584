// GridToken dashboard: a small WebSocket client, no framework, no build step.
// Live state arrives as events; after every (re)connect the readings are fetched once more, because events
// are best effort and the database is the truth. Event data is only ever inserted as text, never as HTML.
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("dashboard-config").textContent);
  const connection = document.getElementById("connection");
  const readingsBody = document.querySelector("#readings tbody");
  const feed = document.getElementById("feed");
  const FEED_MAX = 100;
  const READINGS_MAX = 50;
  const PING_EVERY_MS = 25000;
  const STATS_EVERY_MS = 5000;
  const readings = new Map();
  let socket = null;
  let retryDelay = 1000;
  let pingTimer = null;

  // ---- formatting -------------------------------------------------------------------------------------
  // Token amounts are integers of base units and may pass 2^53, where a JS number stops being exact: every
  // JSON body is parsed keeping the digits of these fields as the server sent them (a string).
  const BASE_UNIT_FIELDS = new Set(["tokens_minted", "total_token_amount", "base_units", "minted_base_units_per_minute"]);

  function parseExact(text) {
    return JSON.parse(text, function (key, value, context) {
      if (typeof value === "number" && BASE_UNIT_FIELDS.has(key)) {
        // context.source is the number's own text (Chromium 114+); elsewhere only safe integers are trusted.
        if (context && typeof context.source === "string") return context.source;
        return Number.isSafeInteger(value) ? String(value) : null;
      }
      return value;
    });
  }

  function formatUnits(raw) {
    // Integer base units (a string of digits) -> decimal string with the token's decimals, digit by digit.
    const digits = String(raw);
    if (!/^-?\d+$/.test(digits)) return "";
    const places = config.decimals;
    if (places === 0) return digits;
    const padded = digits.padStart(places + 1, "0");
    return padded.slice(0, -places) + "." + padded.slice(-places);
  }

  function shortTime(rfc3339) {
    // "2026-12-07T05:01:02.123456Z" -> "2026-12-07 05:01:02" (UTC, as the column says); the title keeps it all.
    return rfc3339 ? rfc3339.replace("T", " ").replace(/\.\d+Z$|Z$/, "") : "";
  }

  function abbreviated(text) {
    return text.length > 20 ? text.slice(0, 8) + "…" + text.slice(-8) : text;
  }

  function signatureParts(signature) {
    // An abbreviated link to the explorer (the full signature in its title) and a button copying it whole.
    const link = element("a", { class: "mono", href: explorerUrl(signature), target: "_blank", rel: "noopener", title: signature, "data-signature": signature }, abbreviated(signature));
    const copy = element("button", { type: "button", class: "copy", "data-copy": signature, title: "Copy the full signature", "aria-label": "Copy the full signature" }, "copy");
    return [link, copy];
  }

  async function copyText(event) {
    const button = event.target.closest("button[data-copy]");
    if (!button) return;
    try {
      await navigator.clipboard.writeText(button.dataset.copy);
      button.textContent = "copied";
    } catch (error) {
      button.textContent = "select it";
      window.getSelection().selectAllChildren(button.previousElementSibling);
    }
    setTimeout(() => (button.textContent = "copy"), 1500);
  }

  function explorerUrl(signature) {
    return config.explorer_tx.replace("{signature}", encodeURIComponent(signature));
  }

  function element(tag, attributes, text) {
    const node = document.createElement(tag);
    Object.entries(attributes || {}).forEach(([name, value]) => node.setAttribute(name, value));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function cookie(name) {
    const found = document.cookie.split("; ").find((part) => part.startsWith(name + "="));
    return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
  }

  function setConnection(text, live) {
    connection.textContent = text;
    connection.className = "badge " + (live ? "badge-on" : "badge-off");
  }

  // ---- readings table ---------------------------------------------------------------------------------
  function readingRow(reading) {
    const row = element("tr", { "data-reading-id": reading.reading_id });
    const submitted = element("td", { class: "when" });
    submitted.append(element("time", { datetime: reading.submitted_at || "", title: reading.submitted_at || "" }, shortTime(reading.submitted_at)));
    row.append(submitted);
    row.append(element("td", {}, reading.meter_serial || ""));
    row.append(element("td", { class: "num" }, reading.kwh_amount || ""));
    const status = element("span", { class: "status status-" + reading.status }, reading.status);
    const statusCell = element("td");
    statusCell.append(status);
    row.append(statusCell);
    const minted = reading.tokens_minted !== null && reading.tokens_minted !== undefined;
    const tokensCell = element("td", minted ? { class: "num tokens", title: reading.tokens_minted + " base units" } : { class: "num tokens" });
    tokensCell.textContent = minted ? formatUnits(reading.tokens_minted) : "";
    row.append(tokensCell);
    const signatureCell = element("td", { class: "signature" });
    if (reading.transaction_signature) signatureCell.append(...signatureParts(reading.transaction_signature));
    row.append(signatureCell);
    return row;
  }

  function findRow(readingId) {
    return Array.from(readingsBody.rows).find((row) => row.dataset.readingId === readingId) || null;
  }

  function upsertReading(update, { fromServer = false } = {}) {
    if (!readingsBody) return; // an operator without meters of their own has no readings table
    const known = readings.get(update.reading_id);
    // A snapshot fetched before a mint must not turn a minted row back into pending.
    if (fromServer && known && known.status === "minted" && update.status !== "minted") return;
    const merged = Object.assign({}, known || {}, update);
    readings.set(merged.reading_id, merged);
    const fresh = readingRow(merged);
    const existing = findRow(merged.reading_id);
    if (existing) {
      existing.replaceWith(fresh);
    } else {
      readingsBody.prepend(fresh);
      while (readingsBody.rows.length > READINGS_MAX) readingsBody.deleteRow(-1);
    }
  }

  function adoptServerRows() {
    // The server rendered the first rows; remember their data so events can update them in place.
    parseExact(document.getElementById("dashboard-readings").textContent).forEach((r) => readings.set(r.reading_id, r));
  }

  async function fetchJson(url, options) {
    const response = await fetch(url, Object.assign({ credentials: "same-origin", headers: { Accept: "application/json" } }, options || {}));
    if (!response.ok) throw new Error(url + " answered " + response.status);
    return parseExact(await response.text());
  }

  async function resyncReadings() {
    if (!readingsBody) return;
    try {
      const body = await fetchJson(config.readings_url);
      body.readings.slice().reverse().forEach((reading) => upsertReading(reading, { fromServer: true }));
    } catch (error) {
      console.warn("readings refresh failed", error);
    }
  }

  // ---- balance and operator figures -------------------------------------------------------------------
  let balanceTimer = null;
  function scheduleBalance() {
    clearTimeout(balanceTimer);
    balanceTimer = setTimeout(refreshBalance, 500);
  }

  async function refreshBalance() {
    if (!document.querySelector("#balances tr[data-wallet]")) return;
    let wallets = [];
    try {
      wallets = (await fetchJson(config.balance_url)).wallets;
    } catch (error) {
      console.warn("balance refresh failed", error);
    }
    document.querySelectorAll("#balances tr[data-wallet]").forEach((row) => {
      const found = wallets.find((w) => w.wallet === row.dataset.wallet);
      const cell = row.querySelector(".balance");
      const ok = found && found.status === "ok";
      cell.textContent = ok ? found.balance : "unavailable";
      if (ok) cell.title = found.base_units + " base units";
      else cell.removeAttribute("title");
    });
  }

  function setText(id, value) {
    const node = document.getElementById(id);
    if (node) node.textContent = String(value);
  }

  function showLastBatch(last) {
    const cell = document.getElementById("fig-last-batch");
    if (!cell) return;
    cell.replaceChildren();
    if (!last) {
      cell.textContent = "none yet";
      return;
    }
    cell.append(element("span", { class: "status status-" + last.status, id: "fig-last-batch-status" }, last.status));
    cell.append(" at ", element("time", { id: "fig-last-batch-time" }, last.created_at), " · ");
    cell.append(element("span", { id: "fig-last-batch-readings" }, last.reading_count), " readings · ");
    cell.append(element("span", { id: "fig-last-batch-tokens", title: last.total_token_amount + " base units" }, last.total_tokens + " tokens"));
    const signature = element("div", { class: "signature" });
    const [link, copy] = signatureParts(last.signature);
    link.id = "fig-last-batch-signature";
    signature.append(link, copy);
    cell.append(signature);
  }

  let statsTimer = null;
  function scheduleStats() {
    if (!config.is_operator) return;
    clearTimeout(statsTimer);
    statsTimer = setTimeout(refreshStats, 300);
  }

  async function refreshStats() {
    try {
      const figures = await fetchJson(config.stats_url);
      setText("fig-readings-total", figures.readings_total);
      setText("fig-meters-total", figures.meters_total);
      setText("fig-held", figures.held);
      setText("fig-pending", figures.pending);
      setText("fig-recorded", figures.recorded_readings);
      setText("fig-in-flight", figures.in_flight_batches);
      setText("fig-in-flight-readings", figures.in_flight_readings);
      setText("fig-minted-per-minute", figures.minted_tokens_per_minute + " tokens/min");
      const perMinute = document.getElementById("fig-minted-per-minute");
      if (perMinute) perMinute.title = figures.minted_base_units_per_minute + " base units/min";
      setText("fig-minted-readings-per-minute", figures.minted_readings_per_minute);
      setText("fig-failed", figures.failed_readings);
      setText("fig-failed-batches", figures.failed_batches_last_hour);
      const cost = figures.chain_cost_today;
      setText("fig-cost-per-kwh", cost.lamports_per_kwh ?? "-");
      setText("fig-cost-per-reading", cost.lamports_per_reading ?? "-");
      setText("fig-cost-lamports", cost.lamports);
      showLastBatch(figures.last_batch);
      showAutoMint(figures.auto_mint_enabled);
      showChain(figures.chain);
    } catch (error) {
      console.warn("stats refresh failed", error);
    }
  }

  function showBanner(id, visible) {
    const banner = document.getElementById(id);
    if (banner) banner.hidden = !visible;
  }

  function showChain(chain) {
    if (!chain) return;
    showBanner("minting-paused-banner", chain.paused);
    setText("paused-reason", chain.reason_code || "");
    setText("paused-until", chain.paused_until || "");
    setText("paused-failures", chain.failures);
    setText("paused-message", chain.message || "");
    showBanner("decisions-blocked-banner", chain.decisions_blocked);
    setText("blocked-code", chain.decisions_blocked_code || "");
    setText("blocked-at", chain.decisions_blocked_at || "");
    setText("blocked-reason", chain.decisions_blocked_reason || "");
    showBanner("fee-payer-banner", chain.fee_payer_low);
    setText("low-fee-payer-sol", chain.fee_payer_sol || "");
    setText("low-fee-payer-address", chain.fee_payer_address || "the mint authority");
    const sol = chain.fee_payer_sol === null || chain.fee_payer_sol === undefined ? "unknown" : chain.fee_payer_sol + " SOL";
    setText("fig-fee-payer-sol", sol);
    const balance = document.getElementById("fig-fee-payer-sol");
    if (balance) balance.dataset.low = String(Boolean(chain.fee_payer_low));
    setText("fig-fee-payer-address", chain.fee_payer_address || "");
  }

  function showAutoMint(enabled) {
    setText("fig-auto-mint", enabled ? "on" : "off");
    const button = document.getElementById("toggle-auto-mint");
    button.dataset.enabled = String(enabled);
    button.textContent = enabled ? "Turn off" : "Turn on";
  }

  async function toggleAutoMint(event) {
    const button = event.currentTarget;
    const wanted = button.dataset.enabled !== "true";
    button.disabled = true;
    try {
      const response = await fetch(config.toggle_url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": cookie("csrftoken") },
        body: JSON.stringify({ enabled: wanted }),
      });
      setText("toggle-message", response.ok ? "" : "toggle failed (" + response.status + ")");
      await refreshStats();
    } catch (error) {
      setText("toggle-message", "toggle failed");
    } finally {
      button.disabled = false;
    }
  }

  // ---- events -----------------------------------------------------------------------------------------
  function describe(event) {
    const meter = event.meter_serial ? event.meter_serial + " " : "";
    switch (event.type) {
      case "meter_reading_received":
        return meter + event.kwh_amount + " kWh received";
      case "tokens_minted":
        return meter + event.kwh_amount + " kWh minted as " + formatUnits(event.tokens_minted) + " tokens";
      case "meter_reading_validation_failed":
        return meter + "reading rejected: " + event.error_reason;
      case "mint_failed":
        return meter + "mint failed" + (event.final ? " (final)" : ", will retry") + ": " + event.error;
      case "batch_minting_completed":
        return "batch: " + event.successful_mints + "/" + event.total_readings + " minted";
      default:
        return event.type;
    }
  }

  function addToFeed(event) {
    const item = element("li", { "data-event-type": event.type });
    item.append(element("time", {}, event.timestamp || new Date().toISOString()));
    item.append(element("span", { class: "event-type" }, event.type));
    item.append(element("span", {}, describe(event)));
    feed.prepend(item);
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  }

  function applyEvent(event) {
    const mine = event.user_id === config.user_id;
    if (mine && event.type === "meter_reading_received") {
      upsertReading(Object.assign({}, event, { submitted_at: event.timestamp }));
    } else if (mine && event.type === "tokens_minted") {
      upsertReading({
        reading_id: event.reading_id, meter_serial: event.meter_serial, kwh_amount: event.kwh_amount,
        status: "minted", tokens_minted: event.tokens_minted, transaction_signature: event.transaction_signature,
      });
      scheduleBalance();
    } else if (mine && event.type === "mint_failed" && readings.has(event.reading_id)) {
      upsertReading({ reading_id: event.reading_id, status: event.final ? "failed" : "pending" });
    }
    addToFeed(event);
    scheduleStats();
    if (mine || config.is_operator) window.GridTokenCharts.refresh();
  }

  function onMessage(message) {
    let data;
    try {
      data = parseExact(message.data);
    } catch (error) {
      return;
    }
    if (data.type === "connected") {
      retryDelay = 1000;
      setConnection("live", true);
      resyncReadings();
      window.GridTokenCharts.refresh();
    } else if (data.type === "error") {
      console.warn("server says", data.code, data.message);
    } else if (data.type !== "pong" && data.type !== "subscribed") {
      applyEvent(data);
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + config.ws_path);
    socket.addEventListener("message", onMessage);
    socket.addEventListener("open", () => {
      clearInterval(pingTimer);
      pingTimer = setInterval(() => socket.readyState === WebSocket.OPEN && socket.send('{"type":"ping"}'), PING_EVERY_MS);
    });
    socket.addEventListener("close", (closed) => {
      clearInterval(pingTimer);
      if (closed.code === 4001) return setConnection("signed out: reload to sign in", false);
      if (closed.code === 4003) return setConnection("refused: origin not allowed", false);
      setConnection("reconnecting…", false);
      setTimeout(connect, retryDelay + Math.random() * 250);
      retryDelay = Math.min(retryDelay * 2, 30000);
    });
  }

  adoptServerRows();
  refreshBalance();
  window.GridTokenCharts.init(config, fetchJson);
  document.addEventListener("click", copyText);
  if (config.is_operator) {
    document.getElementById("toggle-auto-mint").addEventListener("click", toggleAutoMint);
    setInterval(refreshStats, STATS_EVERY_MS);
  }
  connect();
})();
