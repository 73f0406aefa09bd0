// @ts-check
/**
 * The one reconnecting JSON WebSocket of the pages: the performer page's /api/v1/signal
 * (docs/signaling.md) and the console's /api/v1/operator (docs/console-protocol.md) speak the
 * same framing: `hello` first, a `ping` every 10 s, and one rule for close codes (docs/api.md,
 * "Close codes"): 1000 is the end; every 44xx is final (the server said why, and retrying cannot
 * help); any other code, or a connection lost without a close, means reconnect with backoff.
 *
 * Events (CustomEvent, payload in `detail`):
 * - `state`        {state}: connecting | open | reconnecting | closed
 * - `message`      {type, ...}: every server message
 * - `welcome`      {type: 'welcome', ...}: the server accepted the hello (after every (re)connect)
 * - `reconnecting` {code, attempt, delayMs}: the socket dropped, a retry is scheduled
 * - `fatal`        {code, reason}: the server closed with a 44xx code; no retry
 * - `closed`       {code, reason}: the server ended the socket normally (1000); no retry
 * - `unreachable`  retries exhausted (`retryForMs` after the outage began)
 *
 * With several nodes (docs/signaling.md) a reconnect follows the room: to where a `moved`
 * message said at once (close 4308), and after failed tries at the page's own node, round the
 * other nodes its last `welcome` named.
 */

/** A socket that has not opened by then is treated as dropped (SYN into the void). */
const CONNECT_TIMEOUT_MS = 5000;
const NORMAL_CLOSE = 1000;
/** Several nodes: the room is on the node a `moved` message named just before (docs/signaling.md). */
const MOVED_CLOSE = 4308;
/** Failed tries at one place before the next is tried (the page's own node first). */
const TRIES_PER_PLACE = 2;

/**
 * @typedef {{type: string, [key: string]: any}} Message
 * @typedef {'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'} SocketState
 */

/**
 * Is this close code one where the server told us why and retrying cannot help? The server's
 * rule (improv_capture/close_codes.py, CLIENT_FAULT): every 44xx code, for example 4401 a bad
 * invite or token, 4413 a message too large, 4420 a page that kept flooding, 4499 replaced.
 * @param {number} code
 * @returns {boolean}
 */
export function isFatalClose(code) {
  return code >= 4400 && code <= 4499;
}

/**
 * The WebSocket URL of a path on the page's own origin.
 * @param {string} path e.g. /api/v1/signal
 * @returns {string}
 */
export function socketUrl(path) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}${path}`;
}

/**
 * The WebSocket URL of the same path on another node (its public URL, from the server);
 * null for anything that is not an http(s) URL.
 * @param {string} base e.g. https://node-2.example.org
 * @param {string} url a socket URL whose path to keep
 * @returns {string | null}
 */
export function socketUrlAt(base, url) {
  let parsed;
  try {
    parsed = new URL(base);
  } catch {
    return null;
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') return null;
  const scheme = parsed.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${parsed.host}${new URL(url).pathname}`;
}

export class ReconnectingSocket extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.url
   * @param {() => Message} opts.hello the first message, built at every (re)connect (so a
   *   resume value the server handed out since is used)
   * @param {number[]} [opts.backoffMs] retry delays; the last one repeats
   * @param {number} [opts.retryForMs] keep retrying this long after a drop, then `unreachable`
   * @param {number} [opts.pingMs]
   */
  constructor({
    url, hello, backoffMs = [500, 1000, 2000], retryForMs = Infinity, pingMs = 10000,
  }) {
    super();
    this.url = url;
    /** the page's own node, tried first after a drop */
    this.home = url;
    /** @type {string[]} several nodes: the others the last welcome named */
    this.elsewhere = [];
    /** @type {string | null} where a `moved` message said the room is */
    this.movedTo = null;
    this.hello = hello;
    this.backoffMs = backoffMs;
    this.retryForMs = retryForMs;
    this.pingMs = pingMs;
    /** @type {SocketState} */
    this.state = 'idle';
    /** @type {WebSocket | null} */
    this.ws = null;
    /** Set once we stop for good (fatal, close()): no more reconnects. */
    this.stopped = false;
    /** The server sent `welcome` since the last (re)connect. */
    this.welcomed = false;
    this.attempt = 0;
    /** @type {number | null} when the current outage began */
    this.outageSince = null;
    this.lastRx = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.retryTimer = undefined;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.pingTimer = undefined;
  }

  /** True while the socket is open (the server may not have answered the hello yet). */
  get connected() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /** True while the socket is open and the server accepted the hello. */
  get open() {
    return this.connected && this.welcomed;
  }

  /** Open the socket (first connect). */
  start() {
    this.stopped = false;
    this._setState('connecting');
    this._connect();
  }

  /**
   * Send one message; dropped (returns false) while the socket is down, because the pages
   * re-send whatever state matters after the next `welcome`.
   * @param {Message} msg
   * @returns {boolean}
   */
  send(msg) {
    if (!this.ws || !this.connected) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /**
   * Close for good. With `lingerMs` the server gets that long to close first (it answers a
   * `leave` with a 1000 close); buffered frames are flushed before our close frame either way.
   * @param {number} [lingerMs]
   */
  close(lingerMs = 0) {
    const ws = this.ws;
    this._stop();
    this._setState('closed');
    if (!ws) return;
    const closeNow = () => { if (ws.readyState < WebSocket.CLOSING) ws.close(NORMAL_CLOSE); };
    if (lingerMs > 0) setTimeout(closeNow, lingerMs);
    else closeNow();
  }

  _stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
  }

  _connect() {
    clearTimeout(this.retryTimer);
    this.welcomed = false;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this._scheduleRetry(0);
      return;
    }
    this.ws = ws;
    const openTimer = setTimeout(() => {
      if (ws.readyState === WebSocket.CONNECTING) ws.close();
    }, CONNECT_TIMEOUT_MS);

    ws.onopen = () => {
      clearTimeout(openTimer);
      if (this.ws !== ws) return;
      this.lastRx = Date.now();
      ws.send(JSON.stringify(this.hello()));
      this._startPing(ws);
    };

    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastRx = Date.now();
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return; // the server only sends JSON; ignore anything else rather than crash
      }
      if (!msg || typeof msg.type !== 'string') return;
      if (msg.type === 'moved' && typeof msg.url === 'string') {
        this.movedTo = socketUrlAt(msg.url, this.url);
      }
      if (msg.type === 'welcome') {
        // Accepted: a later drop starts a fresh retry budget.
        if (Array.isArray(msg.nodes)) {
          this.elsewhere = msg.nodes.map((base) => socketUrlAt(String(base), this.url))
            .filter((u) => u !== null && u !== this.url);
        }
        this.welcomed = true;
        this.attempt = 0;
        this.outageSince = null;
        this._setState('open');
        this._emit('welcome', msg);
      }
      this._emit('message', msg);
    };

    // 'error' is always followed by 'close', which carries the code: handle it there.
    ws.onerror = () => {};

    ws.onclose = (ev) => {
      clearTimeout(openTimer);
      if (this.ws !== ws) return;
      clearInterval(this.pingTimer);
      this.ws = null;
      this.welcomed = false;
      if (this.stopped) return;
      if (isFatalClose(ev.code)) {
        this._end('fatal', ev);
      } else if (ev.code === NORMAL_CLOSE) {
        this._end('closed', ev);
      } else if (ev.code === MOVED_CLOSE && this.movedTo) {
        this.url = this.movedTo;
        this.movedTo = null;
        this._scheduleRetry(ev.code, 0);
      } else {
        this._nextPlace();
        this._scheduleRetry(ev.code);
      }
    };
  }

  /**
   * @param {'fatal' | 'closed'} event
   * @param {CloseEvent} ev
   */
  _end(event, ev) {
    this._stop();
    this._setState('closed');
    this._emit(event, { code: ev.code, reason: ev.reason });
  }

  /** @param {WebSocket} ws */
  _startPing(ws) {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (ws.readyState !== WebSocket.OPEN) return;
      // Two silent ping periods and a half mean a half-open socket: drop it and reconnect.
      if (Date.now() - this.lastRx > 2.5 * this.pingMs) {
        ws.close(4000, 'ping timeout');
        return;
      }
      ws.send(JSON.stringify({ type: 'ping' }));
    }, this.pingMs);
  }

  /**
   * After TRIES_PER_PLACE failed tries at one place, the next: the page's own node, then each
   * node the last welcome named (its node may have died and the room moved on).
   */
  _nextPlace() {
    if (this.elsewhere.length === 0 || (this.attempt + 1) % TRIES_PER_PLACE !== 0) return;
    const places = [this.home, ...this.elsewhere.filter((u) => u !== this.home)];
    const at = places.indexOf(this.url);
    this.url = places[(at + 1) % places.length];
  }

  /**
   * @param {number} code
   * @param {number} [delayOverrideMs] e.g. 0 to go at once where a `moved` said
   */
  _scheduleRetry(code, delayOverrideMs) {
    const now = Date.now();
    if (this.outageSince === null) this.outageSince = now;
    if (now - this.outageSince >= this.retryForMs) {
      this._stop();
      this._setState('closed');
      this._emit('unreachable');
      return;
    }
    const delayMs = delayOverrideMs ?? this.backoffMs[Math.min(this.attempt, this.backoffMs.length - 1)];
    this.attempt += 1;
    this._setState('reconnecting');
    this._emit('reconnecting', { code, attempt: this.attempt, delayMs });
    this.retryTimer = setTimeout(() => {
      if (!this.stopped) this._connect();
    }, delayMs);
  }

  /** @param {SocketState} state */
  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', { state });
  }

  /**
   * @param {string} type
   * @param {any} [detail]
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
