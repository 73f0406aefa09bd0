// @ts-check
/**
 * Signaling client for /api/v1/signal (docs/signaling.md): one WebSocket, JSON frames,
 * `hello` first, a `ping` every 10 s, and automatic reconnect with `resume` after a drop.
 *
 * Events (CustomEvent, payload in `detail`):
 * - `message`      {type, ...}: every server message
 * - `open`         the socket is open and `hello` was sent
 * - `reconnecting` {code, attempt, delayMs}: the socket dropped, a retry is scheduled
 * - `fatal`        {code, reason}: the server closed with a 44xx code; no retry
 * - `closed`       {code, reason}: a normal close (1000); no retry
 * - `unreachable`  retries exhausted
 */

/** Retry delays grow 0.5 s, 1 s, 2 s and then stay at 2 s. */
const BACKOFF_MS = [500, 1000, 2000];
/** A socket that has not opened by then is treated as dropped (SYN into the void). */
const CONNECT_TIMEOUT_MS = 5000;

/**
 * @typedef {{type: string, [key: string]: any}} Message
 */

/**
 * Is this close code one where the server told us why and retrying cannot help?
 * @param {number} code
 * @returns {boolean}
 */
export function isFatalClose(code) {
  return code >= 4400 && code <= 4499;
}

/**
 * The signaling URL for the page's own origin.
 * @returns {string}
 */
export function signalUrl() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}/api/v1/signal`;
}

export class SignalingClient extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.url
   * @param {string} opts.token invite token, sent only inside `hello`
   * @param {() => (string | null)} opts.getResume read at every (re)connect, so the latest
   *   `welcome.resume` is used
   * @param {number} [opts.retryForMs] keep retrying at least this long after a drop
   * @param {number} [opts.pingMs]
   */
  constructor({ url, token, getResume, retryForMs = 30000, pingMs = 10000 }) {
    super();
    this.url = url;
    this.token = token;
    this.getResume = getResume;
    this.retryForMs = retryForMs;
    this.pingMs = pingMs;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** Set once we stop for good (leave, fatal, close()): no more reconnects. */
    this.stopped = false;
    this.attempt = 0;
    /** @type {number | null} when the current outage began */
    this.outageSince = null;
    this.lastRx = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.retryTimer = undefined;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.pingTimer = undefined;
  }

  /** True while the socket is open. */
  get connected() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /** Open the socket (first connect). */
  start() {
    this.stopped = false;
    this._connect();
  }

  /**
   * Send one message; dropped (returns false) while the socket is down, because the page
   * re-sends whatever state matters after the next `welcome`.
   * @param {Message} msg
   * @returns {boolean}
   */
  send(msg) {
    if (!this.connected || !this.ws) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /**
   * Send `leave` and close. The server answers with a 1000 close; we close ourselves after
   * a second in case that never comes. Buffered frames are flushed before the close frame.
   */
  leave() {
    const ws = this.ws;
    this.send({ type: 'leave' });
    this._stop();
    if (ws) setTimeout(() => ws.readyState < WebSocket.CLOSING && ws.close(1000), 1000);
  }

  /** Close without `leave` (the seat stays reserved for the grace period). */
  close() {
    const ws = this.ws;
    this._stop();
    if (ws && ws.readyState < WebSocket.CLOSING) ws.close(1000);
  }

  _stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
  }

  _connect() {
    clearTimeout(this.retryTimer);
    const ws = new WebSocket(this.url);
    this.ws = ws;
    const openTimer = setTimeout(() => {
      if (ws.readyState === WebSocket.CONNECTING) ws.close();
    }, CONNECT_TIMEOUT_MS);

    ws.onopen = () => {
      clearTimeout(openTimer);
      if (this.ws !== ws) return;
      this.lastRx = Date.now();
      const resume = this.getResume();
      /** @type {Message} */
      const hello = { type: 'hello', token: this.token };
      if (resume) hello.resume = resume;
      ws.send(JSON.stringify(hello));
      this._startPing(ws);
      this._emit('open');
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
      // The server accepted us: a later drop starts a fresh retry budget.
      if (msg.type === 'welcome') {
        this.attempt = 0;
        this.outageSince = null;
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
      if (this.stopped) return;
      if (isFatalClose(ev.code)) {
        this._stop();
        this._emit('fatal', { code: ev.code, reason: ev.reason });
      } else if (ev.code === 1000) {
        this._stop();
        this._emit('closed', { code: ev.code, reason: ev.reason });
      } else {
        this._scheduleRetry(ev.code);
      }
    };
  }

  /** @param {WebSocket} ws */
  _startPing(ws) {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (ws.readyState !== WebSocket.OPEN) return;
      // Two silent ping periods mean a half-open socket: drop it and reconnect.
      if (Date.now() - this.lastRx > 2.5 * this.pingMs) {
        ws.close(4000, 'ping timeout');
        return;
      }
      ws.send(JSON.stringify({ type: 'ping' }));
    }, this.pingMs);
  }

  /** @param {number} code */
  _scheduleRetry(code) {
    const now = Date.now();
    if (this.outageSince === null) this.outageSince = now;
    if (now - this.outageSince >= this.retryForMs) {
      this._stop();
      this._emit('unreachable');
      return;
    }
    const delayMs = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this._emit('reconnecting', { code, attempt: this.attempt, delayMs });
    this.retryTimer = setTimeout(() => this._connect(), delayMs);
  }

  /**
   * @param {string} type
   * @param {any} [detail]
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
