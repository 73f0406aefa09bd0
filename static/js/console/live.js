// @ts-check
/**
 * The operator WebSocket (/api/v1/operator, docs/console-protocol.md): `hello` with the token
 * first, a `ping` every 10 s, and reconnect with backoff until stopped.
 *
 * Events (CustomEvent, payload in `detail`):
 * - `state`    {state}: connecting | open | reconnecting | closed
 * - `message`  {type, ...}: every server message
 * - `welcome`  the server accepted the token (after every (re)connect)
 * - `fatal`    {code, reason}: the server refused us (4401 bad token ...); no retry
 */

/** Retry delays: 0.5 s, 1 s, 2 s, 4 s, then every 8 s for as long as it takes. */
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];
const CONNECT_TIMEOUT_MS = 5000;
const PING_MS = 10000;
/** Nothing received for this long (stats arrive every second, pongs every 10 s): reconnect. */
const SILENCE_MS = 25000;
/** Close codes where retrying cannot help (4420: the console flooded the server). */
const FATAL = new Set([4401, 4403, 4420, 4499]);

/** @returns {string} */
export function operatorUrl() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}/api/v1/operator`;
}

export class OperatorSocket extends EventTarget {
  /**
   * @param {{url: string, token: string}} opts
   */
  constructor({ url, token }) {
    super();
    this.url = url;
    this.token = token;
    /** @type {'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'} */
    this.state = 'idle';
    /** @type {WebSocket | null} */
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.lastRx = 0;
    /** Accepted by the server since the last (re)connect. */
    this.welcomed = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.retryTimer = undefined;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.pingTimer = undefined;
  }

  get open() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN && this.welcomed;
  }

  start() {
    this.stopped = false;
    this._setState('connecting');
    this._connect();
  }

  /** Close for good (sign out). */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState < WebSocket.CLOSING) ws.close(1000);
    this._setState('closed');
  }

  /**
   * Send a message; false while the socket is down (state is re-sent after reconnecting).
   * @param {{type: string, [k: string]: any}} msg
   * @returns {boolean}
   */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  _connect() {
    clearTimeout(this.retryTimer);
    this.welcomed = false;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this._retry();
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
      ws.send(JSON.stringify({ type: 'hello', token: this.token }));
      this._startPing(ws);
    };

    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastRx = Date.now();
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!msg || typeof msg.type !== 'string') return;
      if (msg.type === 'welcome' || (!this.welcomed && msg.type === 'rooms')) {
        // Accepted: a later drop starts the backoff afresh.
        const first = !this.welcomed;
        this.welcomed = true;
        this.attempt = 0;
        this._setState('open');
        if (first) this._emit('welcome', msg);
      }
      this._emit('message', msg);
    };

    ws.onerror = () => {}; // the close event that follows carries the code

    ws.onclose = (ev) => {
      clearTimeout(openTimer);
      if (this.ws !== ws) return;
      clearInterval(this.pingTimer);
      this.ws = null;
      this.welcomed = false;
      if (this.stopped) return;
      if (FATAL.has(ev.code)) {
        this.stopped = true;
        this._setState('closed');
        this._emit('fatal', { code: ev.code, reason: ev.reason });
        return;
      }
      this._retry();
    };
  }

  _retry() {
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this._setState('reconnecting');
    this.retryTimer = setTimeout(() => {
      if (!this.stopped) this._connect();
    }, delay);
  }

  /** @param {WebSocket} ws */
  _startPing(ws) {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (ws.readyState !== WebSocket.OPEN) return;
      if (Date.now() - this.lastRx > SILENCE_MS) {
        ws.close(4000, 'no answer'); // half-open: drop it, onclose reconnects
        return;
      }
      ws.send(JSON.stringify({ type: 'ping' }));
    }, PING_MS);
  }

  /** @param {'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'} state */
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
