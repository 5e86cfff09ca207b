// The live push feed: one EventSource, sequence tracking, gap re-sync,
// reconnect with backoff, and a watchdog for silently dead connections.
// Timers and the EventSource constructor are injectable so node can drive it.

const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const RESYNC_MIN_INTERVAL_MS = 2000;

/**
 * Calls fn at most once per intervalMs; a call inside the interval is not lost
 * but deferred to its end (trailing edge), so the last change is always shown.
 */
export function throttle(fn, intervalMs, timers = globalThis) {
  let lastRun = -Infinity;
  let timer = null;
  const run = () => {
    timer = null;
    lastRun = Date.now();
    fn();
  };
  const throttled = () => {
    if (timer !== null) return;
    const wait = lastRun + intervalMs - Date.now();
    if (wait <= 0) run();
    else timer = timers.setTimeout(run, wait);
  };
  throttled.cancel = () => {
    if (timer !== null) timers.clearTimeout(timer);
    timer = null;
  };
  return throttled;
}

export class LiveFeed {
  /**
   * @param {object} options
   * @param {string} options.url          the stream URL, token included
   * @param {string} options.key          the "HORIZON:RESOLUTION" list shown
   * @param {() => void} options.onRefresh       the shown ranking may have changed
   * @param {(message: object, sequence: number|null) => void} options.onMessage
   *        any valid ranking message (liveness), with the sequence now applied
   * @param {(message: object) => void} [options.onAlert]
   *        an alert notice ({type: "alert", kind, stream_id, alert}); not sequenced
   * @param {(connected: boolean) => void} [options.onConnection]
   * @param {(url: string) => EventSource} [options.openSource]
   * @param {number} [options.silenceMs]  reconnect when nothing arrives for this long
   */
  constructor({
    url,
    key,
    onRefresh,
    onMessage,
    onAlert = () => {},
    onConnection = () => {},
    openSource = (u) => new EventSource(u),
    silenceMs = 45000,
    timers = globalThis,
    now = () => Date.now(),
  }) {
    Object.assign(this, { url, key, onRefresh, onMessage, onAlert, onConnection, openSource, silenceMs });
    this.timers = timers;
    this.now = now;
    this.source = null;
    this.sequence = null; // last snapshot/update sequence applied
    this.synced = false; // a snapshot arrived on the current connection
    this.failures = 0;
    this.heartbeatsAhead = 0;
    this.lastResyncAt = -Infinity;
    this.reconnectTimer = null;
    this.watchdogTimer = null;
    this.stopped = true;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    this.close();
    this.clearTimer("reconnectTimer");
    this.clearTimer("watchdogTimer");
  }

  setKey(key) {
    this.key = key;
  }

  open() {
    this.close();
    this.clearTimer("reconnectTimer");
    if (this.stopped) return;
    this.synced = false;
    this.heartbeatsAhead = 0;
    const source = this.openSource(this.url);
    this.source = source;
    source.onopen = () => {
      if (this.source === source) this.onConnection(true);
    };
    source.onmessage = (event) => {
      if (this.source === source) this.handle(event.data);
    };
    source.onerror = () => {
      if (this.source === source) this.fail();
    };
    this.armWatchdog();
  }

  close() {
    if (this.source) {
      this.source.onopen = this.source.onmessage = this.source.onerror = null;
      this.source.close();
      this.source = null;
    }
  }

  /** The stream dropped: reconnect ourselves, with exponential backoff and jitter. */
  fail() {
    this.close();
    this.onConnection(false);
    if (this.stopped || this.reconnectTimer !== null) return;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.failures);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.failures += 1;
    this.reconnectTimer = this.timers.setTimeout(() => {
      this.reconnectTimer = null;
      this.open();
    }, delay);
  }

  /** A sequence gap: start over with a fresh connection (and so a fresh snapshot). */
  resync() {
    const wait = this.lastResyncAt + RESYNC_MIN_INTERVAL_MS - this.now();
    if (wait > 0) {
      // Re-syncing in a tight loop would hammer a server that is already unwell.
      this.close();
      if (this.reconnectTimer === null) {
        this.reconnectTimer = this.timers.setTimeout(() => {
          this.reconnectTimer = null;
          this.resync();
        }, wait);
      }
      return;
    }
    this.lastResyncAt = this.now();
    this.open();
    this.onRefresh();
  }

  handle(raw) {
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      return;
    }
    if (!message || typeof message !== "object") return;
    const { type } = message;
    if (type === "alert") {
      // Notices carry no sequence: they neither move it nor reveal a gap. One
      // that came before this connection's snapshot is already in it.
      this.failures = 0;
      this.armWatchdog();
      if (this.synced) this.onAlert(message);
      return;
    }
    if (type !== "snapshot" && type !== "update" && type !== "heartbeat") return;
    this.failures = 0;
    this.armWatchdog();
    let changed = false;
    let gap = false;
    if (type === "snapshot") {
      this.sequence = message.sequence;
      this.synced = true;
      this.heartbeatsAhead = 0;
      changed = true;
    } else if (type === "update") {
      // Before this connection's snapshot, queued updates are superseded by it.
      if (this.synced && message.previous !== this.sequence) {
        gap = true;
      } else if (this.synced) {
        this.sequence = message.sequence;
        this.heartbeatsAhead = 0;
        changed = Boolean(message.lists) && Object.prototype.hasOwnProperty.call(message.lists, this.key);
      }
    } else if (this.synced && Number.isFinite(message.sequence) && message.sequence !== this.sequence) {
      // A heartbeat may overtake the update it counts; two in a row ahead is a lost update.
      this.heartbeatsAhead += 1;
      gap = this.heartbeatsAhead >= 2;
    } else {
      this.heartbeatsAhead = 0;
    }
    this.onMessage(message, this.sequence);
    if (gap) this.resync();
    else if (changed) this.onRefresh();
  }

  armWatchdog() {
    this.clearTimer("watchdogTimer");
    if (this.stopped) return;
    this.watchdogTimer = this.timers.setTimeout(() => {
      this.watchdogTimer = null;
      this.fail();
    }, this.silenceMs);
  }

  clearTimer(name) {
    if (this[name] !== null) this.timers.clearTimeout(this[name]);
    this[name] = null;
  }
}
