// The map: Web Mercator projection, fit to the area's boundary, optional raster
// tiles underneath, hot spot hexagons coloured by score on top.
// The projection helpers are pure; MapView owns one <svg> element.

import { scoreColour, scoreScale, formatScore } from "./format.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const WORLD = 256; // Web Mercator world size at zoom 0, in tile pixels
const MAX_LAT = 85.05112878;
const MAX_TILES = 400;
const OUTLINED_TOP = 3;

/** [lon, lat] in degrees -> [x, y] in zoom-0 Web Mercator pixels (y down). */
export function project([lon, lat]) {
  const clamped = Math.max(-MAX_LAT, Math.min(MAX_LAT, lat));
  const phi = (clamped * Math.PI) / 180;
  const x = ((lon + 180) / 360) * WORLD;
  const y = (0.5 - Math.log(Math.tan(Math.PI / 4 + phi / 2)) / (2 * Math.PI)) * WORLD;
  return [x, y];
}

/** The polygons of a GeoJSON object as lists of rings of [lon, lat]. */
export function polygonsOf(geojson) {
  const out = [];
  const visit = (node) => {
    if (!node) return;
    if (node.type === "FeatureCollection") node.features?.forEach(visit);
    else if (node.type === "Feature") visit(node.geometry);
    else if (node.type === "GeometryCollection") node.geometries?.forEach(visit);
    else if (node.type === "Polygon") out.push(node.coordinates);
    else if (node.type === "MultiPolygon") node.coordinates.forEach((p) => out.push(p));
  };
  visit(geojson);
  return out;
}

/** Bounding box [x0, y0, x1, y1] in world pixels of some rings of [lon, lat]. */
export function worldBounds(rings) {
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (const ring of rings) {
    for (const point of ring) {
      const [x, y] = project(point);
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
  }
  return Number.isFinite(x0) ? [x0, y0, x1, y1] : null;
}

/**
 * The scale k and offset (tx, ty) that fit world bounds into a width x height
 * box with some padding: screen = world * k + t.
 */
export function fitTransform(bounds, width, height, padding) {
  const [x0, y0, x1, y1] = bounds;
  const spanX = Math.max(x1 - x0, 1e-9);
  const spanY = Math.max(y1 - y0, 1e-9);
  const k = Math.min((width - 2 * padding) / spanX, (height - 2 * padding) / spanY);
  return {
    k,
    tx: (width - spanX * k) / 2 - x0 * k,
    ty: (height - spanY * k) / 2 - y0 * k,
  };
}

/**
 * The raster tiles covering a width x height view: zoom chosen so that one tile
 * pixel is about one screen pixel. Returns [{url, x, y, size}] in screen pixels.
 */
export function tilesFor(template, transform, width, height, maxZoom = 19) {
  const { k, tx, ty } = transform;
  const zoom = Math.max(0, Math.min(maxZoom, Math.round(Math.log2(k))));
  const n = 2 ** zoom;
  const tileWorld = WORLD / n;
  const size = tileWorld * k;
  // Tile index under a screen coordinate, given the offset along that axis.
  const index = (screen, offset) => Math.floor((screen - offset) / size);
  const tiles = [];
  for (let row = Math.max(0, index(0, ty)); row <= Math.min(n - 1, index(height, ty)); row++) {
    for (let col = index(0, tx); col <= index(width, tx); col++) {
      if (tiles.length >= MAX_TILES) return tiles;
      const wrapped = ((col % n) + n) % n;
      const values = { z: zoom, x: wrapped, y: row, s: "abc"[(wrapped + row) % 3], r: "" };
      const url = template.replace(/\{([zxysr])\}/g, (_, name) => String(values[name]));
      tiles.push({ url, x: col * size + tx, y: row * size + ty, size });
    }
  }
  return tiles;
}

/** Area-weighted centroid of a ring in screen pixels, and its absolute area. */
function ringCentroid(points) {
  let area = 0;
  let cx = 0;
  let cy = 0;
  for (let i = 0, j = points.length - 1; i < points.length; j = i++) {
    const cross = points[j][0] * points[i][1] - points[i][0] * points[j][1];
    area += cross;
    cx += (points[j][0] + points[i][0]) * cross;
    cy += (points[j][1] + points[i][1]) * cross;
  }
  if (Math.abs(area) < 1e-9) return { x: points[0][0], y: points[0][1], area: 0 };
  return { x: cx / (3 * area), y: cy / (3 * area), area: Math.abs(area / 2) };
}

// Screen radius below which a cell is drawn enlarged: a 4-pixel hexagon is
// invisible from across a control room.
const MIN_HEX_RADIUS_PX = 7;
// Planned patrol cells: large enough that solid and dashed tell apart at a distance.
const MIN_PLANNED_RADIUS_PX = 11;
const TOP_RING_GAP_PX = 3;
// Label positions tried around a cell: above first, then the sides, then below.
const LABEL_ANGLES = [-90, -35, -145, 0, 180, 35, 145, 90].map((deg) => (deg * Math.PI) / 180);

/** A cell's screen outline, its centre and radius, enlarged to the minimum size. */
export function hexShape(points, minRadiusPx = MIN_HEX_RADIUS_PX) {
  const last = points[points.length - 1];
  const closed = points.length > 1 && points[0][0] === last[0] && points[0][1] === last[1];
  const ring = closed ? points.slice(0, -1) : points;
  const cx = ring.reduce((sum, p) => sum + p[0], 0) / ring.length;
  const cy = ring.reduce((sum, p) => sum + p[1], 0) / ring.length;
  const r = Math.max(...ring.map(([x, y]) => Math.hypot(x - cx, y - cy)));
  if (r >= minRadiusPx || r === 0) return { points: ring, cx, cy, r };
  const grow = minRadiusPx / r;
  return {
    points: ring.map(([x, y]) => [cx + (x - cx) * grow, cy + (y - cy) * grow]),
    cx,
    cy,
    r: minRadiusPx,
  };
}

function box(cx, cy, width, height) {
  return { x0: cx - width / 2, y0: cy - height / 2, x1: cx + width / 2, y1: cy + height / 2 };
}

function overlaps(a, b) {
  return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
}

function el(name, attributes = {}, parent = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

// Boundary files come from GIS exports with whatever column names they had.
const LABEL_KEYS = ["label", "name", "dist_numc", "dist_num", "district", "DISTRICT"];

function featureLabel(feature) {
  const props = feature?.properties ?? {};
  for (const key of LABEL_KEYS) {
    const value = props[key];
    if (value !== undefined && value !== null && String(value).length <= 12) return String(value);
  }
  return null;
}

export class MapView {
  constructor(svg, legend) {
    this.svg = svg;
    this.legend = legend;
    this.boundary = null;
    this.boundaryBounds = null;
    this.tileUrl = null;
    this.hotspots = [];
    this.alertCells = new Set();
    this.planned = [];
    this.width = 0;
    this.height = 0;
    this.transform = null;
    svg.replaceChildren();
    const defs = el("defs", {}, svg);
    this.blur = el("feGaussianBlur", { stdDeviation: 6 }, el("filter", { id: "hex-glow" }, defs));
    this.layers = {
      tiles: el("g", { class: "tiles" }, svg),
      area: el("g", { class: "area" }, svg),
      districtLabels: el("g", { class: "district-labels" }, svg),
      // A blurred copy of the cells: hot clusters read as a glow from across the room.
      glow: el("g", { class: "glow", filter: "url(#hex-glow)" }, svg),
      hexes: el("g", { class: "hexes" }, svg),
      // Planned patrol cells: outlines over the scores, under the rank labels.
      planned: el("g", { class: "planned-cells" }, svg),
      marks: el("g", { class: "marks" }, svg),
    };
  }

  setBoundary(geojson) {
    this.boundary = geojson;
    const rings = polygonsOf(geojson).flatMap((polygon) => polygon.slice(0, 1));
    this.boundaryBounds = worldBounds(rings);
    this.redraw();
  }

  setTileUrl(url) {
    this.tileUrl = url || null;
    this.redraw();
  }

  /** Draws the ranking's cells; returns how many hexagons are on the map. */
  setHotspots(hotspots, alertCells = []) {
    this.hotspots = Array.isArray(hotspots) ? hotspots : [];
    this.alertCells = new Set(alertCells);
    if (!this.transform) this.redraw();
    else this.drawHexes();
    return this.layers.hexes.childElementCount;
  }

  /**
   * Outlines the planned patrol cells ([{cell, polygon, covered}]): solid when
   * today's dose is met, dashed when not yet. Returns how many are drawn.
   */
  setPlanned(cells) {
    this.planned = Array.isArray(cells) ? cells : [];
    if (!this.transform) this.redraw();
    else this.drawPlanned();
    return this.layers.planned.querySelectorAll('[data-testid="planned-cell"]').length;
  }

  /** Re-measures the element; redraws everything when its size changed. */
  resize() {
    const { width, height } = this.svg.getBoundingClientRect();
    if (Math.round(width) === this.width && Math.round(height) === this.height) return;
    this.redraw();
  }

  redraw() {
    const rect = this.svg.getBoundingClientRect();
    this.width = Math.round(rect.width);
    this.height = Math.round(rect.height);
    if (this.width < 10 || this.height < 10) return;
    this.svg.setAttribute("viewBox", `0 0 ${this.width} ${this.height}`);
    const bounds =
      this.boundaryBounds ??
      worldBounds([...this.hotspots, ...this.planned].map((h) => h.polygon ?? []));
    if (!bounds) {
      this.transform = null;
      return;
    }
    const padding = Math.round(Math.min(this.width, this.height) * 0.03);
    this.transform = fitTransform(bounds, this.width, this.height, padding);
    this.drawTiles();
    this.drawBoundary();
    this.drawHexes();
    this.drawPlanned();
  }

  toScreen(point) {
    const [x, y] = project(point);
    const { k, tx, ty } = this.transform;
    return [x * k + tx, y * k + ty];
  }

  /** SVG path data of rings; drops vertices closer than minStep pixels apart. */
  pathData(rings, minStep = 0) {
    const parts = [];
    for (const ring of rings) {
      if (!Array.isArray(ring) || ring.length < 3) continue;
      let last = null;
      const points = [];
      for (const point of ring) {
        const [x, y] = this.toScreen(point);
        if (last && Math.abs(x - last[0]) < minStep && Math.abs(y - last[1]) < minStep) continue;
        points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
        last = [x, y];
      }
      if (points.length >= 3) parts.push(`M${points.join("L")}Z`);
    }
    return parts.join("");
  }

  drawTiles() {
    const layer = this.layers.tiles;
    layer.replaceChildren();
    if (!this.tileUrl) return;
    for (const tile of tilesFor(this.tileUrl, this.transform, this.width, this.height)) {
      const image = el(
        "image",
        {
          href: tile.url,
          x: tile.x.toFixed(2),
          y: tile.y.toFixed(2),
          // Half a pixel of overlap hides the seams between tiles.
          width: (tile.size + 0.5).toFixed(2),
          height: (tile.size + 0.5).toFixed(2),
          preserveAspectRatio: "none",
        },
        layer,
      );
      image.addEventListener("error", () => image.remove(), { once: true });
    }
  }

  drawBoundary() {
    const area = this.layers.area;
    const labels = this.layers.districtLabels;
    area.replaceChildren();
    labels.replaceChildren();
    if (!this.boundary) return;
    const features =
      this.boundary.type === "FeatureCollection" ? this.boundary.features ?? [] : [this.boundary];
    for (const feature of features) {
      const polygons = polygonsOf(feature);
      const d = polygons.map((polygon) => this.pathData(polygon, 0.75)).join("");
      if (!d) continue;
      el("path", { d, class: "district", "fill-rule": "evenodd" }, area);
      const label = featureLabel(feature);
      if (label === null) continue;
      // Label the largest outer ring at its centroid.
      let best = null;
      for (const polygon of polygons) {
        const outer = (polygon[0] ?? []).map((p) => this.toScreen(p));
        if (outer.length < 3) continue;
        const centroid = ringCentroid(outer);
        if (!best || centroid.area > best.area) best = centroid;
      }
      if (best && best.area > 2500) {
        const text = el("text", { x: best.x.toFixed(1), y: best.y.toFixed(1), class: "district-label" }, labels);
        text.textContent = label;
      }
    }
  }

  drawHexes() {
    const { hexes, glow, marks } = this.layers;
    hexes.replaceChildren();
    glow.replaceChildren();
    marks.replaceChildren();
    if (!this.transform) return;
    const drawable = this.hotspots.filter((h) => Array.isArray(h.polygon) && h.polygon.length >= 3);
    const toUnit = scoreScale(drawable.map((h) => h.score));
    // Lowest first so that the hottest cells are painted on top.
    const ordered = [...drawable].sort((a, b) => b.rank - a.rank);
    const outlined = [];
    let radius = 0;
    for (const hotspot of ordered) {
      const shape = hexShape(hotspot.polygon.map((p) => this.toScreen(p)));
      radius = Math.max(radius, shape.r);
      const top = hotspot.rank <= OUTLINED_TOP;
      const classes = ["hex"];
      if (top) classes.push("top");
      if (this.alertCells.has(hotspot.cell)) classes.push("alerted");
      const d = `M${shape.points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join("L")}Z`;
      const fill = scoreColour(toUnit(hotspot.score));
      el("path", { d, fill }, glow);
      const path = el(
        "path",
        {
          d,
          class: classes.join(" "),
          fill,
          "data-testid": "hex",
          "data-cell": hotspot.cell,
          "data-rank": hotspot.rank,
        },
        hexes,
      );
      el("title", {}, path).textContent = `#${hotspot.rank} ${hotspot.cell}`;
      if (top) outlined.push({ hotspot, shape });
    }
    // Rings drawn just outside the top cells, so that their colour stays visible.
    for (const { shape } of outlined) {
      const grow = (shape.r + TOP_RING_GAP_PX) / shape.r;
      const ring = shape.points.map(([x, y]) => [shape.cx + (x - shape.cx) * grow, shape.cy + (y - shape.cy) * grow]);
      const d = `M${ring.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join("L")}Z`;
      el("path", { d, class: "top-ring" }, marks);
    }
    this.blur.setAttribute("stdDeviation", Math.max(4, radius * 0.9).toFixed(1));
    this.drawRankLabels(outlined.sort((a, b) => a.hotspot.rank - b.hotspot.rank));
    this.drawLegend(drawable);
  }

  drawPlanned() {
    const layer = this.layers.planned;
    layer.replaceChildren();
    if (!this.transform) return;
    // Not yet covered last, so that their dashes are never hidden under a neighbour's line.
    const ordered = [...this.planned].sort((a, b) => Number(Boolean(b.covered)) - Number(Boolean(a.covered)));
    for (const cell of ordered) {
      if (!Array.isArray(cell.polygon) || cell.polygon.length < 3) continue;
      // Enlarged like the hexagons: a patrol-sized cell is a few pixels on a city map.
      const shape = hexShape(cell.polygon.map((p) => this.toScreen(p)), MIN_PLANNED_RADIUS_PX);
      const d = `M${shape.points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join("L")}Z`;
      el("path", { d, class: "planned-halo" }, layer);
      const path = el(
        "path",
        {
          d,
          class: `planned ${cell.covered ? "covered" : "pending"}`,
          "data-testid": "planned-cell",
          "data-cell": cell.cell,
          "data-covered": cell.covered ? "true" : "false",
        },
        layer,
      );
      el("title", {}, path).textContent = `${cell.cell}: ${cell.covered ? "covered today" : "not yet covered today"}`;
    }
  }

  /** Rank numbers next to the outlined cells, placed so that they do not collide. */
  drawRankLabels(outlined) {
    const marks = this.layers.marks;
    const fontPx = 2.2 * (parseFloat(getComputedStyle(this.svg).fontSize) || 16);
    const taken = outlined.map(({ shape }) => box(shape.cx, shape.cy, 2 * shape.r, 2 * shape.r));
    for (const { hotspot, shape } of outlined) {
      const text = String(hotspot.rank);
      const width = 0.7 * fontPx * text.length + 6;
      const height = fontPx;
      let chosen = null;
      for (const distance of [1, 2, 3.2]) {
        for (const angle of LABEL_ANGLES) {
          const reach = shape.r + distance * 0.55 * fontPx;
          const x = shape.cx + reach * Math.cos(angle);
          const y = shape.cy + reach * Math.sin(angle);
          const candidate = box(x, y, width, height);
          const inside = x - width / 2 >= 0 && x + width / 2 <= this.width && y - height / 2 >= 0;
          if (inside && y + height / 2 <= this.height && !taken.some((t) => overlaps(t, candidate))) {
            chosen = { x, y, candidate, far: distance > 1 };
            break;
          }
        }
        if (chosen) break;
      }
      if (!chosen) {
        const y = shape.cy - shape.r - 0.55 * fontPx;
        chosen = { x: shape.cx, y, candidate: box(shape.cx, y, width, height), far: false };
      }
      taken.push(chosen.candidate);
      if (chosen.far) {
        const length = Math.hypot(chosen.x - shape.cx, chosen.y - shape.cy);
        const [ux, uy] = [(chosen.x - shape.cx) / length, (chosen.y - shape.cy) / length];
        const start = { x1: shape.cx + ux * shape.r, y1: shape.cy + uy * shape.r };
        el("line", { ...start, x2: chosen.x, y2: chosen.y, class: "leader" }, marks);
      }
      const label = el(
        "text",
        { x: chosen.x.toFixed(1), y: chosen.y.toFixed(1), class: "rank-label", "data-rank": hotspot.rank },
        marks,
      );
      label.textContent = text;
    }
    // Leaders go under every label.
    for (const line of marks.querySelectorAll("line")) marks.prepend(line);
  }

  drawLegend(drawable) {
    if (!this.legend) return;
    if (drawable.length === 0) {
      this.legend.hidden = true;
      return;
    }
    const scores = drawable.map((h) => h.score);
    const lo = Math.min(...scores);
    const hi = Math.max(...scores);
    const stops = [0, 0.25, 0.5, 0.75, 1].map((t) => `${scoreColour(t)} ${t * 100}%`);
    this.legend.querySelector(".legend-bar").style.background = `linear-gradient(90deg, ${stops.join(", ")})`;
    this.legend.querySelector(".legend-lo").textContent = formatScore(lo);
    this.legend.querySelector(".legend-hi").textContent = formatScore(hi);
    this.legend.hidden = false;
  }
}
