// The officer's phone page: the hot spots tasked to one unit today, on a small
// map, each with its briefing note, the minutes recorded there and whether
// today's dose is met. Same server, same token scheme as the wall display
// (`/officer?token=…&unit=…`).

import { cellLabel, isoSeconds } from "./format.js";
import { fitTransform, polygonsOf, project, tilesFor, worldBounds } from "./map.js";

const REFRESH_MS = 60000;
const UNIT_KEY = "hotspots.officer.unit";
const SVG_NS = "http://www.w3.org/2000/svg";
// The map shows at least this much ground, so that one hot spot is not a
// screen-filling hexagon with no streets' worth of context around it.
const MIN_SPAN_M = 500;
const METRES_PER_WORLD_PX = 40075016.686 / 256; // Web Mercator zoom 0, at the equator

class AuthError extends Error {}
class DosageOff extends Error {}

const byId = (id) => document.getElementById(id);
const dom = {
  day: byId("day"),
  form: byId("unit-form"),
  unit: byId("unit"),
  notice: byId("notice"),
  summary: byId("summary"),
  map: byId("map"),
  tasks: byId("tasks"),
  updated: byId("updated"),
  refresh: byId("refresh"),
};

const params = new URLSearchParams(window.location.search);
const token = params.get("token") ?? "";

// Read by headless-browser tests; the same object is kept current.
const status = { unit: null, loads: 0, tasks: 0, error: null };
window.hotspotsOfficer = status;

const state = {
  config: null,
  boundary: null,
  view: null,
  unit: null,
  requestId: 0,
  timeZone: undefined,
};

// --- HTTP ------------------------------------------------------------------

async function api(path) {
  const response = await fetch(new URL(path, document.baseURI), {
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
    cache: "no-store",
  });
  if (response.status === 401 || response.status === 403) throw new AuthError(path);
  if (response.status === 404 && path.startsWith("v1/dosage")) {
    let detail = "";
    try {
      detail = (await response.json()).detail ?? "";
    } catch {
      // (not JSON: a proxy's page)
    }
    throw new DosageOff(detail);
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function setNotice(text, kind = "info") {
  dom.notice.textContent = text ?? "";
  dom.notice.hidden = !text;
  dom.notice.dataset.kind = kind;
}

// --- Formats -----------------------------------------------------------------

function formatter(options) {
  try {
    return new Intl.DateTimeFormat("en-GB", { ...options, timeZone: state.timeZone });
  } catch {
    return new Intl.DateTimeFormat("en-GB", options);
  }
}

/** "2025-03-14" -> "Friday 14 March" (a calendar day: no time zone involved). */
function dayLabel(day) {
  const [y, m, d] = String(day).split("-").map(Number);
  if (!y || !m || !d) return String(day ?? "");
  const format = new Intl.DateTimeFormat("en-GB", {
    weekday: "long",
    day: "numeric",
    month: "long",
    timeZone: "UTC",
  });
  return format.format(new Date(Date.UTC(y, m - 1, d)));
}

/** The local day (YYYY-MM-DD, area's zone) of POSIX seconds. */
function localDay(seconds) {
  const parts = formatter({ year: "numeric", month: "2-digit", day: "2-digit" }).formatToParts(
    new Date(seconds * 1000),
  );
  const get = (type) => parts.find((p) => p.type === type)?.value ?? "";
  return `${get("year")}-${get("month")}-${get("day")}`;
}

/** A visit time: "14:32" today, "Thu 13 Mar 14:32" on another day. */
function visitTime(iso, today) {
  const seconds = isoSeconds(iso);
  if (seconds === null) return null;
  const time = formatter({ hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).format(
    new Date(seconds * 1000),
  );
  if (localDay(seconds) === today) return `today ${time}`;
  const day = formatter({ weekday: "short", day: "numeric", month: "short" }).format(
    new Date(seconds * 1000),
  );
  return `${day} ${time}`;
}

function minutes(value) {
  const m = Number(value);
  if (!Number.isFinite(m) || m <= 0) return "0 min";
  if (m < 1) return "<1 min";
  return `${Math.round(m)} min`;
}

/** Local hours [14, 15, 16, 20] -> "14–17h, 20–21h" (each hour runs to the next). */
function hoursLabel(hours) {
  if (!Array.isArray(hours) || hours.length === 0) return "";
  const sorted = [...new Set(hours.map(Number))].sort((a, b) => a - b);
  const spans = [];
  for (const h of sorted) {
    const last = spans[spans.length - 1];
    if (last && last[1] === h) last[1] = h + 1;
    else spans.push([h, h + 1]);
  }
  const pad = (h) => String(h % 24).padStart(2, "0");
  return spans.map(([a, b]) => `${pad(a)}–${pad(b)}h`).join(", ");
}

function requiredLabel(required) {
  if (!required) return "";
  const visits = Number(required.visits ?? 1);
  const parts = [`${visits} visit${visits === 1 ? "" : "s"} of ${minutes(required.minutes)}`];
  const hours = hoursLabel(required.hours);
  if (hours) parts.push(`starting ${hours}`);
  return parts.join(", ");
}

// --- Map ---------------------------------------------------------------------

function el(name, attributes = {}, parent = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

/** World bounds grown to at least MIN_SPAN_M across, around their middle. */
function withMinimumSpan([x0, y0, x1, y1]) {
  const midY = (y0 + y1) / 2;
  const lat = (Math.atan(Math.sinh(Math.PI * (1 - (2 * midY) / 256))) * 180) / Math.PI;
  const span = MIN_SPAN_M / (METRES_PER_WORLD_PX * Math.cos((lat * Math.PI) / 180));
  const grow = (lo, hi) => {
    const extra = Math.max(0, span - (hi - lo)) / 2;
    return [lo - extra, hi + extra];
  };
  const [a, c] = grow(x0, x1);
  const [b, d] = grow(y0, y1);
  return [a, b, c, d];
}

function drawMap(tasks) {
  const svg = dom.map;
  const drawable = tasks.filter((t) => Array.isArray(t.polygon) && t.polygon.length >= 3);
  // (an <svg> has no `hidden` property: the attribute itself is switched)
  svg.toggleAttribute("hidden", drawable.length === 0);
  svg.replaceChildren();
  if (drawable.length === 0) return;
  const { width, height } = svg.getBoundingClientRect();
  if (width < 10 || height < 10) return;
  svg.setAttribute("viewBox", `0 0 ${Math.round(width)} ${Math.round(height)}`);
  const bounds = withMinimumSpan(worldBounds(drawable.map((t) => t.polygon)));
  const { k, tx, ty } = fitTransform(bounds, width, height, Math.min(width, height) * 0.12);
  const toScreen = (point) => {
    const [x, y] = project(point);
    return [x * k + tx, y * k + ty];
  };
  const path = (ring) =>
    `M${ring.map((p) => toScreen(p).map((v) => v.toFixed(1)).join(",")).join("L")}Z`;

  // Streets underneath only when the server names a tile source (api.tile_url).
  const tiles = el("g", { class: "tiles" }, svg);
  const template = state.config?.tile_url;
  for (const tile of template ? tilesFor(template, { k, tx, ty }, width, height) : []) {
    const size = (tile.size + 0.5).toFixed(2); // half a pixel of overlap hides the seams
    const image = el(
      "image",
      { href: tile.url, x: tile.x.toFixed(2), y: tile.y.toFixed(2), width: size, height: size },
      tiles,
    );
    image.addEventListener("error", () => image.remove(), { once: true });
  }
  const area = el("g", { class: "area" }, svg);
  for (const polygon of polygonsOf(state.boundary)) {
    const d = polygon.filter((ring) => Array.isArray(ring) && ring.length >= 3).map(path).join("");
    if (d) el("path", { d, class: "district", "fill-rule": "evenodd" }, area);
  }
  const cells = el("g", { class: "cells" }, svg);
  const labels = el("g", { class: "labels" }, svg);
  drawable.forEach((task, i) => {
    const points = task.polygon.map(toScreen);
    const cx = points.reduce((s, p) => s + p[0], 0) / points.length;
    const cy = points.reduce((s, p) => s + p[1], 0) / points.length;
    const hex = el(
      "path",
      {
        d: path(task.polygon),
        class: `cell ${task.compliant ? "met" : "due"}`,
        "data-testid": "task-hex",
        "data-cell": task.cell,
      },
      cells,
    );
    el("title", {}, hex).textContent = `${i + 1}: ${cellLabel(task.cell)}`;
    hex.addEventListener("click", () => focusTask(task.cell));
    const label = el("text", { x: cx.toFixed(1), y: cy.toFixed(1), class: "label" }, labels);
    label.textContent = String(i + 1);
  });
}

function focusTask(cell) {
  const card = dom.tasks.querySelector(`[data-cell="${CSS.escape(cell)}"]`);
  if (!card) return;
  card.scrollIntoView({ behavior: "smooth", block: "center" });
  card.classList.remove("focus");
  void card.offsetWidth; // restart the animation
  card.classList.add("focus");
}

// --- Tasks -------------------------------------------------------------------

function div(className, text, testid) {
  const node = document.createElement("div");
  node.className = className;
  if (text !== undefined) node.textContent = text;
  if (testid) node.dataset.testid = testid;
  return node;
}

function taskCard(task, index, today) {
  const card = document.createElement("li");
  card.className = `task ${task.compliant ? "met" : "due"}`;
  card.dataset.testid = "task";
  card.dataset.cell = task.cell;

  const head = div("task-head");
  const number = document.createElement("span");
  number.className = "task-no";
  number.textContent = String(index + 1);
  const place = document.createElement("span");
  place.className = "task-place";
  place.textContent = `Hot spot ${cellLabel(task.cell)}`;
  const badge = document.createElement("span");
  badge.className = "task-state";
  badge.dataset.testid = "task-state";
  badge.textContent = task.compliant ? "✓ Dose met" : "Not yet";
  head.append(number, place, badge);

  const figures = div("task-minutes", undefined, "task-minutes");
  const mine = document.createElement("strong");
  mine.textContent = minutes(task.minutes_by_you);
  figures.append(mine, ` by you · ${minutes(task.minutes)} by all units today`);

  const last = visitTime(task.last_visit_at, today);
  const facts = div("task-facts");
  facts.textContent = [
    last ? `Last visit ${last}` : "No visit on record",
    task.compliant ? null : `Needed: ${requiredLabel(task.required)}`,
  ]
    .filter(Boolean)
    .join(" · ");

  const note = div("task-note", undefined, "task-note");
  const text = task.note?.text?.trim();
  if (text) {
    const body = div("note-text", text);
    const by = div("note-by");
    const when = visitTime(task.note.updated_at, today);
    by.textContent = [task.note.author, when].filter(Boolean).join(", ");
    note.append(body, by);
  } else {
    note.classList.add("empty");
    note.textContent = "No briefing note";
  }

  const actions = div("task-actions");
  if (Array.isArray(task.center) && task.center.length === 2) {
    const [lat, lon] = task.center.map((v) => Number(v).toFixed(5));
    const go = document.createElement("a");
    go.className = "button";
    go.href = `geo:${lat},${lon}?q=${lat},${lon}`;
    go.textContent = "Open in maps";
    actions.append(go);
  }
  card.append(head, figures, facts, note, actions);
  return card;
}

function render() {
  const view = state.view;
  const tasks = Array.isArray(view?.tasks) ? view.tasks : [];
  status.tasks = tasks.length;
  dom.day.textContent = view ? dayLabel(view.date) : "";
  if (!view) {
    dom.summary.hidden = true;
    dom.tasks.replaceChildren();
    drawMap([]);
    return;
  }
  const met = tasks.filter((t) => t.compliant).length;
  const mine = tasks.reduce((sum, t) => sum + (Number(t.minutes_by_you) || 0), 0);
  dom.summary.textContent =
    tasks.length === 0
      ? `No hot spots tasked to ${view.unit} today.`
      : `${view.unit}: ${tasks.length} hot spot${tasks.length === 1 ? "" : "s"}, ` +
        `${met} with today's dose met · ${minutes(mine)} there by you`;
  dom.summary.hidden = false;
  dom.tasks.replaceChildren(...tasks.map((t, i) => taskCard(t, i, view.date)));
  drawMap(tasks);
}

// --- Loading -----------------------------------------------------------------

async function loadOnce() {
  if (!state.config) {
    state.config = await api("v1/config");
    state.timeZone = state.config.timezone || undefined;
    document.title = `My hot spots · ${state.config.name ?? ""}`.replace(/ · $/, "");
  }
  if (!state.boundary) {
    // The outline is context only: the page works without it.
    api("v1/boundary")
      .then((geojson) => {
        state.boundary = geojson;
        if (state.view) drawMap(state.view.tasks ?? []);
      })
      .catch(() => {});
    state.boundary = { type: "FeatureCollection", features: [] };
  }
}

async function load() {
  if (!token) {
    setNotice("This page's address has no token: open it as /officer?token=…", "error");
    return;
  }
  const unit = state.unit;
  if (!unit) {
    setNotice("Enter your unit to see your hot spots.");
    return;
  }
  const requestId = ++state.requestId;
  dom.refresh.disabled = true;
  try {
    await loadOnce();
    const view = await api(`v1/dosage/unit/${encodeURIComponent(unit)}`);
    if (requestId !== state.requestId) return; // another unit asked for meanwhile
    state.view = view;
    status.loads += 1;
    status.error = null;
    setNotice(null);
    render();
    dom.updated.textContent = formatter({ hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).format(
      new Date(),
    );
  } catch (error) {
    if (requestId !== state.requestId) return;
    status.error = error instanceof AuthError ? "auth" : error instanceof DosageOff ? "off" : "network";
    if (error instanceof AuthError) {
      setNotice("The server refused this page's token. Ask your supervisor for a new link.", "error");
    } else if (error instanceof DosageOff) {
      state.view = null;
      render();
      setNotice("Patrol dosage is not switched on for this server.", "error");
    } else {
      // Keep what is shown: an officer out of coverage still needs the briefing.
      setNotice("Cannot reach the server; showing the last figures. Retrying every minute.", "warn");
    }
  } finally {
    if (requestId === state.requestId) dom.refresh.disabled = false;
  }
}

function setUnit(unit) {
  const name = String(unit ?? "").trim();
  state.unit = name || null;
  status.unit = state.unit;
  dom.unit.value = name;
  if (!name) return;
  try {
    localStorage.setItem(UNIT_KEY, name);
  } catch {
    // (private mode: the address keeps it instead)
  }
  const url = new URL(window.location.href);
  url.searchParams.set("unit", name);
  window.history.replaceState(null, "", url);
}

function savedUnit() {
  try {
    return localStorage.getItem(UNIT_KEY);
  } catch {
    return null;
  }
}

function boot() {
  setUnit(params.get("unit") || savedUnit());
  dom.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const changed = dom.unit.value.trim() !== state.unit;
    setUnit(dom.unit.value);
    if (changed) {
      state.view = null;
      render();
    }
    dom.unit.blur(); // close the phone's keyboard
    load();
  });
  dom.refresh.addEventListener("click", () => load());
  // A phone wakes from the pocket with a stale page: refresh at once.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") load();
  });
  let width = 0;
  new ResizeObserver(() => {
    const now = Math.round(dom.map.getBoundingClientRect().width);
    if (now !== width && state.view) requestAnimationFrame(() => drawMap(state.view.tasks ?? []));
    width = now;
  }).observe(document.body);
  render();
  load();
  if (!state.unit) dom.unit.focus(); // (once: a timer must not pop the keyboard up)
  setInterval(load, REFRESH_MS);
}

boot();
