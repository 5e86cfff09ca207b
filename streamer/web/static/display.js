// The control-room wall display: wiring of the API, the live feed, the map,
// the ranked list, the alert ticker, the clock and the staleness warning.

import {
  alertAge,
  cellLabel,
  clockFormatter,
  familyLabel,
  formatAge,
  formatScore,
  formatShare,
  horizonLabel,
  horizonShort,
  isoSeconds,
  patternLabel,
  peakLabel,
  scoreColour,
  scoreScale,
  severityOf,
  trendArrow,
} from "./format.js";
import { MapView } from "./map.js";
import { LiveFeed, throttle } from "./stream.js";

const LIST_LENGTH = 15;
const REFRESH_MIN_INTERVAL_MS = 1000;
const HOTSPOTS_POLL_MS = 60000; // safety net when updates for our list are rare
// Alerts arrive with snapshots and as push notices; polling is only the fallback.
const ALERTS_POLL_MS = 120000;
// Patrol coverage moves by the minute at most (visits last 15 minutes).
const DOSAGE_POLL_MS = 60000;
const AUTH_RETRY_MS = 60000;
const TICKER_SPEED_PX_S = 110;
const CURSOR_IDLE_MS = 3000;

class AuthError extends Error {}

class HttpError extends Error {
  constructor(path, status) {
    super(`${path}: HTTP ${status}`);
    this.status = status;
  }
}

const byId = (id) => document.getElementById(id);
const dom = {
  title: byId("title"),
  subtitle: byId("subtitle"),
  horizonSwitch: byId("horizon-switch"),
  familySwitch: byId("family-switch"),
  resolutionSwitch: byId("resolution-switch"),
  clock: byId("clock"),
  updatedAt: byId("updated-at"),
  sequence: byId("sequence"),
  connection: byId("connection"),
  staleBanner: byId("stale-banner"),
  staleDetail: byId("stale-detail"),
  map: byId("map"),
  legend: byId("legend"),
  coverage: byId("coverage"),
  coverageCount: byId("coverage-count"),
  list: byId("ranked-list"),
  listSummary: byId("list-summary"),
  notice: byId("notice"),
  alerts: byId("alerts"),
  alertsTrack: byId("alerts-track"),
  authError: byId("auth-error"),
  authDetail: byId("auth-detail"),
};

const params = new URLSearchParams(window.location.search);
const token = params.get("token") ?? "";

// Read by headless-browser tests; the same object is kept current.
const status = {
  sequence: null,
  lastMessageAt: null, // POSIX seconds (display clock) of the last stream message
  hexCount: 0,
  snapshots: 0, // snapshots received: the first, then one per re-sync or reconnect
  stale: false,
  connected: false,
  horizon: null,
  resolution: null,
  family: null,
  alerts: 0, // open alerts shown in the ticker
  lastAlertId: null, // the alert id of the last push notice applied
  coverage: null, // {covered, planned, date} of today's patrol plan; null: no plan or dosage off
  plannedCells: 0, // planned patrol cells outlined on the map
};
window.hotspotsDisplay = status;

const state = {
  config: null,
  view: { horizon: null, resolution: null, family: null },
  formatTime: clockFormatter(null),
  openedAt: Date.now() / 1000,
  openedMono: performance.now(),
  lastMessageMono: null,
  lastDataAt: null, // server time ("at") of the last stream message
  pipelineAgeS: null, // seconds since the publisher last ticked, as the server last said
  ranking: null,
  ranks: new Map(), // cell -> rank in the previous render, to flag movers
  alerts: [], // open alerts, newest updated_at first
  alertsKey: "",
  alertsVersion: 0, // moves with every change from a snapshot or notice
  dosage: null, // the last /v1/dosage answer (null: dosage is off)
  requestId: 0,
  unauthorised: false,
  feed: null,
  map: new MapView(dom.map, dom.legend),
};

// --- HTTP ------------------------------------------------------------------

async function api(path, query = {}) {
  const url = new URL(path, document.baseURI);
  for (const [key, value] of Object.entries(query)) url.searchParams.set(key, String(value));
  const response = await fetch(url, {
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
    cache: "no-store",
  });
  if (response.status === 401 || response.status === 403) {
    throw new AuthError(`${path}: HTTP ${response.status}`);
  }
  if (!response.ok) throw new HttpError(path, response.status);
  return response.json();
}

function streamUrl() {
  const url = new URL("v1/stream", document.baseURI);
  url.searchParams.set("access_token", token);
  return url.toString();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function showAuthError(detail) {
  dom.authDetail.textContent = detail;
  dom.authError.hidden = false;
  document.body.classList.add("unauthorised");
}

/** A 401/403 anywhere: stop everything and say so; try again later. */
function authFailed() {
  if (state.unauthorised) return;
  state.unauthorised = true;
  state.feed?.stop();
  showAuthError("The server refused this display's token.");
  // The token may be re-issued server-side; a reload picks it up without a visit.
  setTimeout(() => window.location.reload(), AUTH_RETRY_MS);
}

function setNotice(text) {
  dom.notice.textContent = text ?? "";
  dom.notice.hidden = !text;
}

// --- View selection ----------------------------------------------------------

function viewKey() {
  return `${state.view.horizon}:${state.view.resolution}`;
}

function chooseView(config) {
  const horizons = config.horizons ?? [];
  const resolutions = (config.resolutions ?? []).map(Number);
  const families = config.families ?? [];
  const defaults = config.default ?? {};
  const wantedHorizon = params.get("horizon") ?? defaults.horizon;
  const wantedResolution = Number(params.get("resolution") ?? defaults.resolution);
  const wantedFamily = params.get("family") || null;
  state.view = {
    horizon: horizons.includes(wantedHorizon) ? wantedHorizon : defaults.horizon ?? horizons[0],
    resolution: resolutions.includes(wantedResolution)
      ? wantedResolution
      : Number(defaults.resolution ?? resolutions[0]),
    family: families.includes(wantedFamily) ? wantedFamily : null,
  };
}

function setView(change) {
  const next = { ...state.view, ...change };
  if (
    next.horizon === state.view.horizon &&
    next.resolution === state.view.resolution &&
    next.family === state.view.family
  ) {
    return;
  }
  state.view = next;
  // Keep the choice in the address so that a reload shows the same view.
  const url = new URL(window.location.href);
  url.searchParams.set("horizon", next.horizon);
  url.searchParams.set("resolution", String(next.resolution));
  url.searchParams.set("family", next.family ?? "");
  window.history.replaceState(null, "", url);
  state.feed?.setKey(viewKey());
  state.ranks = new Map();
  renderHeading();
  renderSwitches();
  loadHotspots();
}

function makeButton(label, pressed, onClick, hint) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.setAttribute("aria-pressed", String(pressed));
  if (hint) button.title = hint;
  button.addEventListener("click", onClick);
  return button;
}

function renderSwitches() {
  const { config, view } = state;
  dom.horizonSwitch.replaceChildren(
    ...config.horizons.map((horizon, i) =>
      makeButton(
        horizonShort(horizon),
        horizon === view.horizon,
        () => setView({ horizon }),
        i < 9 ? `${horizonLabel(horizon)} (key ${i + 1})` : horizonLabel(horizon),
      ),
    ),
  );
  dom.horizonSwitch.querySelectorAll("button").forEach((b, i) => {
    b.dataset.testid = "horizon-button";
    b.dataset.horizon = config.horizons[i];
  });
  const families = [null, ...(config.families ?? [])];
  dom.familySwitch.replaceChildren(
    ...families.map((family) => {
      const button = makeButton(
        family ? familyLabel(family) : "All",
        family === view.family,
        () => setView({ family }),
        "key F cycles",
      );
      button.dataset.testid = "family-button";
      button.dataset.family = family ?? "";
      return button;
    }),
  );
  const resolutions = (config.resolutions ?? []).map(Number);
  dom.resolutionSwitch.replaceChildren(
    ...resolutions.map((resolution) => {
      const button = makeButton(
        `R${resolution}`,
        resolution === view.resolution,
        () => setView({ resolution }),
        "H3 resolution (key R cycles)",
      );
      button.dataset.testid = "resolution-button";
      return button;
    }),
  );
  dom.resolutionSwitch.hidden = resolutions.length < 2;
}

function renderHeading() {
  const { config, view } = state;
  dom.title.textContent = `Hot spots · ${horizonLabel(view.horizon)}`;
  dom.subtitle.textContent = [config.name, familyLabel(view.family), `H3 resolution ${view.resolution}`]
    .filter(Boolean)
    .join(" · ");
  document.title = `Hot spots · ${config.name ?? ""}`.trim();
  status.horizon = view.horizon;
  status.resolution = view.resolution;
  status.family = view.family;
}

function cycle(list, current, step = 1) {
  if (list.length === 0) return current;
  const i = list.indexOf(current);
  return list[(i + step + list.length) % list.length];
}

function onKey(event) {
  if (!state.config || event.ctrlKey || event.metaKey || event.altKey) return;
  const { horizons = [], families = [], resolutions = [] } = state.config;
  if (/^[1-9]$/.test(event.key)) {
    const horizon = horizons[Number(event.key) - 1];
    if (horizon) setView({ horizon });
  } else if (event.key === "f" || event.key === "F") {
    setView({ family: cycle([null, ...families], state.view.family, event.shiftKey ? -1 : 1) });
  } else if (event.key === "r" || event.key === "R") {
    const numbers = resolutions.map(Number);
    setView({ resolution: cycle(numbers, state.view.resolution, event.shiftKey ? -1 : 1) });
  } else if (event.key === "0" || event.key === "a" || event.key === "A") {
    setView({ family: null });
  }
}

// --- Ranking -----------------------------------------------------------------

async function loadHotspots() {
  if (!state.config) return;
  const view = { ...state.view };
  const requestId = ++state.requestId;
  const query = {
    horizon: view.horizon,
    resolution: view.resolution,
    limit: state.config.top_n ?? 50,
    format: "json",
  };
  if (view.family) query.family = view.family;
  try {
    const ranking = await api("v1/hotspots", query);
    // A newer request (another view, or a later update) owns the screen.
    if (requestId !== state.requestId) return;
    state.ranking = ranking;
    setNotice(null);
    renderRanking();
  } catch (error) {
    if (error instanceof AuthError) return authFailed();
    console.error("hot spots not loaded:", error);
    if (requestId === state.requestId) setNotice("Cannot load hot spots; retrying");
  }
}

const refresh = throttle(loadHotspots, REFRESH_MIN_INTERVAL_MS);

function alertCells() {
  return state.alerts.flatMap((alert) => (Array.isArray(alert.cells) ? alert.cells : []));
}

function renderRanking() {
  const hotspots = Array.isArray(state.ranking?.hotspots) ? state.ranking.hotspots : [];
  status.hexCount = state.map.setHotspots(hotspots, alertCells());
  const toUnit = scoreScale(hotspots.filter((h) => Array.isArray(h.polygon)).map((h) => h.score));
  const shown = hotspots.slice(0, LIST_LENGTH);
  const previous = state.ranks;
  const rows = shown.map((hotspot) => {
    const row = document.createElement("li");
    row.className = "entry";
    row.dataset.testid = "rank-entry";
    row.dataset.cell = hotspot.cell;
    row.dataset.rank = String(hotspot.rank);
    const before = previous.get(hotspot.cell);
    if (previous.size > 0 && before === undefined) row.classList.add("entered");
    else if (before !== undefined && hotspot.rank < before) row.classList.add("climbed");
    if (hotspot.rank <= 3) row.classList.add("top");

    const trend = trendArrow(hotspot.trend);
    const cells = [
      ["rank", String(hotspot.rank)],
      ["swatch", ""],
      ["cell", cellLabel(hotspot.cell)],
      ["share", formatShare(hotspot.share)],
      ["peak", peakLabel(hotspot.peak_hours)],
      ["score", formatScore(hotspot.score)],
      [`trend ${trend.kind}`, trend.glyph],
    ];
    for (const [name, text] of cells) {
      const span = document.createElement("span");
      span.className = name;
      span.textContent = text;
      row.appendChild(span);
    }
    row.querySelector(".swatch").style.background = scoreColour(toUnit(hotspot.score));
    if (trend.text) row.querySelector(".trend").title = trend.text;
    return row;
  });
  if (rows.length === 0) {
    const empty = document.createElement("li");
    empty.className = "empty";
    empty.textContent = state.ranking ? "No hot spots in this view" : "Waiting for data…";
    rows.push(empty);
  }
  dom.list.replaceChildren(...rows);
  state.ranks = new Map(hotspots.map((h) => [h.cell, h.rank]));
  fitList();
}

/** Hides the entries that would be cut off at the bottom; a half row misleads. */
function fitList() {
  const height = dom.list.clientHeight;
  const byCell = new Map((state.ranking?.hotspots ?? []).map((h) => [h.cell, h]));
  let visible = 0;
  let share = 0;
  for (const row of dom.list.querySelectorAll(".entry")) {
    row.hidden = false;
    const fits = row.offsetTop + row.offsetHeight <= height + 1;
    row.hidden = !fits;
    if (!fits) continue;
    visible += 1;
    const hotspot = byCell.get(row.dataset.cell);
    share += Number.isFinite(hotspot?.share) ? hotspot.share : 0;
  }
  dom.listSummary.textContent =
    visible > 0 ? `Top ${visible} hold ${formatShare(share)} of the score` : "";
}

// --- Alerts ------------------------------------------------------------------

const OPENING = new Set(["opened", "escalated"]);
const CLOSING = new Set(["cleared", "merged"]);

function updatedS(alert) {
  return isoSeconds(alert.updated_at) ?? 0;
}

function newestFirst(alerts) {
  return alerts
    .filter((alert) => alert && typeof alert === "object" && alert.id !== undefined)
    .sort((a, b) => updatedS(b) - updatedS(a) || String(a.id).localeCompare(String(b.id)));
}

/** The whole set of open alerts (a snapshot or a poll): replaces what the page holds. */
function setAlerts(alerts) {
  state.alertsVersion += 1;
  state.alerts = newestFirst(alerts);
  renderAlerts();
}

/** The fallback poll, and the source for a server that sends no alerts in its snapshots. */
async function loadAlerts() {
  const version = state.alertsVersion;
  try {
    const body = await api("v1/alerts", { status: "open" });
    // A snapshot or notice that arrived meanwhile is newer than this answer.
    if (version !== state.alertsVersion) return;
    setAlerts(Array.isArray(body.alerts) ? body.alerts : []);
  } catch (error) {
    if (error instanceof AuthError) authFailed();
  }
}

/** A push notice: opened/escalated add or replace the alert; cleared/merged remove it. */
function onAlert(message) {
  const alert = message.alert;
  if (!alert || typeof alert !== "object" || alert.id === undefined) return;
  const id = String(alert.id);
  const kind = message.kind ?? alert.kind;
  const open = OPENING.has(kind) || (!CLOSING.has(kind) && alert.status === "open");
  const others = state.alerts.filter((a) => String(a.id) !== id);
  state.alertsVersion += 1;
  state.alerts = open ? newestFirst([alert, ...others]) : others;
  status.lastAlertId = id;
  if (open) flashTicker();
  renderAlerts();
}

function flashTicker() {
  dom.alerts.classList.remove("flash");
  void dom.alerts.offsetWidth; // restart the animation
  dom.alerts.classList.add("flash");
}

/** Engine time, as the server last said ("at"): alert times are on the engine's clock. */
function engineNow() {
  return state.lastDataAt ?? Date.now() / 1000;
}

function alertItem(alert) {
  const severity = severityOf(alert.severity);
  const item = document.createElement("span");
  item.className = `alert severity-${severity}`;
  item.dataset.testid = "alert-item";
  item.dataset.alertId = String(alert.id);
  item.dataset.updatedAt = String(alert.updated_at ?? "");
  const parts = [
    ["alert-severity", severity.toUpperCase()],
    ["alert-title", String(alert.title ?? alert.id)],
    ["alert-pattern", patternLabel(alert.pattern)],
    ["alert-age", ""],
  ];
  for (const [name, text] of parts) {
    if (name === "alert-pattern" && !text) continue;
    const span = document.createElement("span");
    span.className = name;
    span.textContent = text;
    item.appendChild(span);
  }
  return item;
}

/** Ages change every minute; they are rewritten in place so the ticker does not restart. */
function renderAlertAges() {
  const now = engineNow();
  for (const age of dom.alertsTrack.querySelectorAll(".alert-age")) {
    const updated = isoSeconds(age.parentElement.dataset.updatedAt);
    const text = updated === null ? "" : alertAge(now - updated);
    if (age.textContent !== text) age.textContent = text;
  }
}

function renderAlerts() {
  status.alerts = state.alerts.length;
  const key = JSON.stringify(
    state.alerts.map((a) => [a.id, a.title, a.severity, a.pattern, a.updated_at]),
  );
  if (key === state.alertsKey) return;
  state.alertsKey = key;
  const track = dom.alertsTrack;
  track.style.animation = "none";
  dom.alerts.classList.toggle("has-alerts", state.alerts.length > 0);
  redrawAlertedCells();
  if (state.alerts.length === 0) {
    dom.alerts.classList.remove("flash");
    track.replaceChildren(document.createTextNode("No open alerts"));
    return;
  }
  const copy = document.createElement("span");
  copy.className = "ticker-copy";
  copy.append(...state.alerts.map(alertItem));
  track.replaceChildren(copy);
  renderAlertAges();
  requestAnimationFrame(() => {
    if (track.firstChild !== copy) return; // re-rendered meanwhile
    // Still text reads best from across a room: scroll only what does not fit.
    const distance = copy.getBoundingClientRect().width;
    if (distance <= track.parentElement.clientWidth) return;
    // Two copies side by side scroll seamlessly: the animation moves by one copy.
    const copy2 = copy.cloneNode(true);
    copy2.setAttribute("aria-hidden", "true");
    copy2.querySelectorAll("[data-testid]").forEach((e) => e.removeAttribute("data-testid"));
    track.append(copy2);
    track.style.setProperty("--ticker-distance", `${-distance}px`);
    track.style.animation = `ticker ${Math.max(10, distance / TICKER_SPEED_PX_S)}s linear infinite`;
  });
}

function redrawAlertedCells() {
  if (state.ranking) status.hexCount = state.map.setHotspots(state.ranking.hotspots ?? [], alertCells());
}

// --- Patrol coverage -----------------------------------------------------------

async function loadDosage() {
  try {
    state.dosage = await api("v1/dosage");
  } catch (error) {
    if (error instanceof AuthError) return authFailed();
    // 404: the server has patrol dosage switched off; anything else: keep the last figures.
    if (!(error instanceof HttpError && error.status === 404)) return;
    state.dosage = null;
  }
  renderCoverage();
}

function renderCoverage() {
  const cells = Array.isArray(state.dosage?.cells) ? state.dosage.cells : [];
  status.plannedCells = state.map.setPlanned(
    cells.map((c) => ({ cell: c.cell, polygon: c.polygon, covered: Boolean(c.compliant) })),
  );
  if (cells.length === 0) {
    dom.coverage.hidden = true;
    status.coverage = null;
    return;
  }
  const covered = cells.filter((c) => c.compliant).length;
  dom.coverageCount.textContent = `${covered}/${cells.length}`;
  dom.coverage.classList.toggle("all-covered", covered === cells.length);
  dom.coverage.hidden = false;
  status.coverage = { covered, planned: cells.length, date: state.dosage.date };
}

// --- Live feed, clock, staleness ---------------------------------------------

function onMessage(message, sequence) {
  // The server says how long ago the publisher last ticked: a quiet city
  // still ticks; a stopped pipeline does not.
  if (message.type === "update") state.pipelineAgeS = 0;
  else if (typeof message.pipeline_age_s === "number") state.pipelineAgeS = message.pipeline_age_s;
  state.lastMessageMono = performance.now();
  status.lastMessageAt = Date.now() / 1000;
  state.lastDataAt = Number.isFinite(message.at) ? message.at : status.lastMessageAt;
  status.sequence = sequence;
  if (message.type === "snapshot") status.snapshots += 1;
  dom.sequence.textContent = Number.isInteger(sequence) ? String(sequence) : "";
  dom.updatedAt.textContent = state.formatTime(state.lastDataAt);
  if (message.type === "snapshot") {
    if (Array.isArray(message.alerts)) setAlerts(message.alerts);
    else loadAlerts();
  }
  checkStale();
}

function renderConnection() {
  const live = status.connected && !status.stale;
  dom.connection.textContent = live ? "● LIVE" : status.connected ? "● NO DATA" : "● OFFLINE";
  dom.connection.classList.toggle("live", live);
}

function onConnection(connected) {
  status.connected = connected;
  renderConnection();
  // EventSource hides the HTTP status; a refused token shows up on a plain fetch.
  if (!connected && state.config) {
    api("v1/config").catch((error) => {
      if (error instanceof AuthError) authFailed();
    });
  }
}

function checkStale() {
  const staleAfterS = state.config?.stale_after_s ?? 15;
  const since = state.lastMessageMono ?? state.openedMono;
  const silentS = (performance.now() - since) / 1000;
  const stopped = typeof state.pipelineAgeS === "number" && state.pipelineAgeS > staleAfterS;
  const stale = silentS > staleAfterS || stopped;
  if (stale) {
    dom.staleDetail.textContent = stopped && silentS <= staleAfterS
      ? `the engine stopped publishing ${formatAge(state.pipelineAgeS)}`
      : state.lastDataAt !== null
        ? `last update ${state.formatTime(state.lastDataAt)} (${formatAge(silentS)})`
        : `no data since the display opened at ${state.formatTime(state.openedAt)}`;
  }
  if (stale !== status.stale || dom.staleBanner.hidden === stale) {
    dom.staleBanner.hidden = !stale;
    document.body.classList.toggle("is-stale", stale);
    status.stale = stale;
    renderConnection();
  }
}

function tick() {
  const now = Date.now();
  dom.clock.textContent = state.formatTime(now / 1000);
  checkStale();
  renderAlertAges();
  // Wake just after the next whole second so the clock never skips one.
  setTimeout(tick, 1000 - (now % 1000) + 5);
}

function hideIdleCursor() {
  let timer = null;
  const wake = () => {
    document.body.classList.remove("idle");
    clearTimeout(timer);
    timer = setTimeout(() => document.body.classList.add("idle"), CURSOR_IDLE_MS);
  };
  window.addEventListener("mousemove", wake, { passive: true });
  wake();
}

// --- Start-up ----------------------------------------------------------------

async function loadBoundary() {
  for (let attempt = 0; ; attempt++) {
    try {
      state.map.setBoundary(await api("v1/boundary"));
      status.hexCount = state.map.setHotspots(state.ranking?.hotspots ?? [], alertCells());
      return;
    } catch (error) {
      if (error instanceof AuthError) return authFailed();
      await sleep(Math.min(60000, 2000 * 2 ** attempt));
    }
  }
}

async function loadConfig() {
  for (let attempt = 0; ; attempt++) {
    try {
      return await api("v1/config");
    } catch (error) {
      if (error instanceof AuthError) throw error;
      setNotice("Cannot reach the hot spot server; retrying");
      await sleep(Math.min(30000, 1000 * 2 ** attempt));
    }
  }
}

async function boot() {
  tick();
  hideIdleCursor();
  onConnection(false);
  renderRanking();
  if (!token) {
    showAuthError("This display's address has no token: open it as /?token=…");
    return;
  }
  let config;
  try {
    config = await loadConfig();
  } catch (error) {
    if (error instanceof AuthError) authFailed();
    return;
  }
  setNotice(null);
  state.config = config;
  state.formatTime = clockFormatter(config.timezone);
  dom.clock.textContent = state.formatTime(Date.now() / 1000); // now in the area's zone
  chooseView(config);
  renderHeading();
  renderSwitches();
  state.map.setTileUrl(config.tile_url);
  window.addEventListener("keydown", onKey);
  new ResizeObserver(() => requestAnimationFrame(() => state.map.resize())).observe(dom.map);
  new ResizeObserver(() => requestAnimationFrame(fitList)).observe(dom.list);

  loadBoundary();
  loadHotspots();
  loadAlerts();
  loadDosage();
  setInterval(refresh, HOTSPOTS_POLL_MS);
  setInterval(loadAlerts, ALERTS_POLL_MS);
  setInterval(loadDosage, DOSAGE_POLL_MS);

  const staleAfterMs = (config.stale_after_s ?? 15) * 1000;
  state.feed = new LiveFeed({
    url: streamUrl(),
    key: viewKey(),
    onRefresh: refresh,
    onMessage,
    onAlert,
    onConnection,
    // Well past the staleness warning: the banner shows first, then we reconnect.
    silenceMs: Math.max(30000, 3 * staleAfterMs),
  });
  state.feed.start();
}

boot();
