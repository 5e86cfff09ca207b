// Pure helpers for the wall display: labels, number formats, colours, clocks.
// No DOM access here, so node can import this module on its own.

const HORIZON_LONG = {
  day: "last 24 hours",
  week: "last 7 days",
  month: "last 28 days",
  year: "last 12 months",
};

const HORIZON_SHORT = { day: "24 h", week: "7 d", month: "28 d", year: "12 mo" };

const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/** "week" -> "last 7 days"; unknown horizons are shown by name. */
export function horizonLabel(name) {
  return HORIZON_LONG[name] ?? String(name);
}

/** Button caption for a horizon: "week" -> "7 d". */
export function horizonShort(name) {
  return HORIZON_SHORT[name] ?? String(name);
}

/** "serious_violence" -> "Serious violence"; null -> "All crime". */
export function familyLabel(name) {
  if (!name) return "All crime";
  const words = String(name).replace(/[_-]+/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/**
 * A short place label for a cell: the last 6 hex digits of its id once the
 * unused resolution digits are dropped. The plain last 6 digits would not do:
 * H3 pads the digits below the cell's resolution with 1 bits, so at resolution
 * 9 they are "..ffff" and neighbouring cells share a label.
 */
export function cellLabel(cell) {
  const hex = String(cell);
  if (!/^[0-9a-f]{15,16}$/i.test(hex)) return hex.slice(-6);
  const id = BigInt(`0x${hex}`);
  const resolution = Number((id >> 52n) & 0xfn);
  const significant = id >> BigInt(3 * (15 - resolution));
  return significant.toString(16).padStart(6, "0").slice(-6);
}

/** Scores span orders of magnitude across horizons; keep three significant figures. */
export function formatScore(score) {
  if (!Number.isFinite(score)) return "–";
  const magnitude = Math.abs(score);
  if (magnitude >= 100) return Math.round(score).toLocaleString("en-US");
  if (magnitude >= 10) return score.toFixed(1);
  return score.toFixed(2);
}

/** 0.0423 -> "4.2%". */
export function formatShare(share) {
  if (!Number.isFinite(share)) return "–";
  return `${(share * 100).toFixed(1)}%`;
}

/**
 * Trend arrow for a cell: rising above 1.2, falling below 0.8, steady between;
 * no arrow when the horizon has no shorter one to compare with.
 */
export function trendArrow(trend) {
  if (trend === null || trend === undefined || !Number.isFinite(trend)) {
    return { glyph: "", kind: "none", text: "" };
  }
  if (trend > 1.2) return { glyph: "▲", kind: "rising", text: "rising" };
  if (trend < 0.8) return { glyph: "▼", kind: "falling", text: "falling" };
  return { glyph: "▶", kind: "steady", text: "steady" };
}

/** Hour of the week (Monday 00h = 0) -> "Fri 22h"; the first listed peak only. */
export function peakLabel(peakHours) {
  if (!Array.isArray(peakHours) || peakHours.length === 0) return "";
  const hour = Number(peakHours[0]);
  if (!Number.isInteger(hour) || hour < 0 || hour > 167) return "";
  return `${WEEKDAYS[Math.floor(hour / 24)]} ${String(hour % 24).padStart(2, "0")}h`;
}

/**
 * A formatter of POSIX seconds as HH:MM:SS in the area's time zone; falls back
 * to the display's own zone when the configured zone is unknown to the browser.
 */
export function clockFormatter(timeZone) {
  const options = { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
  let format;
  try {
    format = new Intl.DateTimeFormat("en-GB", { ...options, timeZone: timeZone || undefined });
  } catch {
    format = new Intl.DateTimeFormat("en-GB", options);
  }
  return (posixSeconds) => format.format(new Date(posixSeconds * 1000));
}

/** "3 min ago" style age of a duration in seconds. */
export function formatAge(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 90) return `${s} s ago`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
  if (s < 48 * 3600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

// Colour scale: OKLCH stops with lightness and chroma both rising, so that on a
// dark background a higher score is always brighter and more saturated.
const SCALE_STOPS = [
  [0.52, 0.11, 95], // dark mustard
  [0.6, 0.17, 60], // burnt orange
  [0.66, 0.24, 29], // bright red
];

function oklchToOklab([l, c, hDeg]) {
  const h = (hDeg * Math.PI) / 180;
  return [l, c * Math.cos(h), c * Math.sin(h)];
}

function linearToSrgb(x) {
  const v = Math.min(1, Math.max(0, x));
  return v <= 0.0031308 ? 12.92 * v : 1.055 * v ** (1 / 2.4) - 0.055;
}

/** OKLab -> [r, g, b] in 0..255 (clipped to the sRGB gamut). */
export function oklabToRgb([l, a, b]) {
  const l1 = (l + 0.3963377774 * a + 0.2158037573 * b) ** 3;
  const m1 = (l - 0.1055613458 * a - 0.0638541728 * b) ** 3;
  const s1 = (l - 0.0894841775 * a - 1.291485548 * b) ** 3;
  const r = 4.0767416621 * l1 - 3.3077115913 * m1 + 0.2309699292 * s1;
  const g = -1.2684380046 * l1 + 2.6097574011 * m1 - 0.3413193965 * s1;
  const bl = -0.0041960863 * l1 - 0.7034186147 * m1 + 1.707614701 * s1;
  return [r, g, bl].map((x) => Math.round(linearToSrgb(x) * 255));
}

const SCALE_LAB = SCALE_STOPS.map(oklchToOklab);

/** Colour of a position t in [0, 1] on the score scale, as a CSS rgb() string. */
export function scoreColour(t) {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (SCALE_LAB.length - 1);
  const i = Math.min(SCALE_LAB.length - 2, Math.floor(x));
  const f = x - i;
  const lab = SCALE_LAB[i].map((v, k) => v + (SCALE_LAB[i + 1][k] - v) * f);
  const [r, g, b] = oklabToRgb(lab);
  return `rgb(${r}, ${g}, ${b})`;
}

/**
 * Maps scores to [0, 1] for colouring: square root between the smallest and the
 * largest shown, because hot spot scores are heavily skewed towards the top.
 */
export function scoreScale(scores) {
  const finite = scores.filter(Number.isFinite);
  if (finite.length === 0) return () => 1;
  const lo = Math.sqrt(Math.max(0, Math.min(...finite)));
  const hi = Math.sqrt(Math.max(0, Math.max(...finite)));
  if (hi - lo < 1e-12) return () => 1;
  return (score) => (Math.sqrt(Math.max(0, score)) - lo) / (hi - lo);
}

const SEVERITIES = ["low", "medium", "high"];

/** An alert's severity as a class-safe word: "low", "medium" or "high" (unknown -> "low"). */
export function severityOf(severity) {
  const word = String(severity ?? "").toLowerCase();
  return SEVERITIES.includes(word) ? word : "low";
}

/** An alert's pattern as read aloud: "intensifying" -> "Intensifying hot spot". */
export function patternLabel(pattern) {
  if (!pattern) return "";
  const word = String(pattern).replace(/[_-]+/g, " ").trim();
  return `${word.charAt(0).toUpperCase()}${word.slice(1)} hot spot`;
}

/** ISO 8601 text -> POSIX seconds; null when missing or unreadable. */
export function isoSeconds(text) {
  if (typeof text !== "string" || text === "") return null;
  const ms = Date.parse(text);
  return Number.isFinite(ms) ? ms / 1000 : null;
}

/** An alert's age: "just now" under a minute (clocks differ by seconds), then as formatAge. */
export function alertAge(seconds) {
  if (!Number.isFinite(seconds)) return "";
  return seconds < 60 ? "just now" : formatAge(seconds);
}
