// @ts-check
/**
 * Record bar: start and stop the selected room's recording, its state and an elapsed timer.
 * The state comes from the server's room description (`recording.started_at`, `elapsed_s`), so
 * it survives a console reload; the timer runs locally between pushes.
 */
import { api, seg } from './api.js';
import { fmtClock } from './util.js';

/**
 * @typedef {{session_id: string, started_at?: string, elapsed_s?: number}} RecordingInfo
 * @typedef {'none' | 'stopped' | 'starting' | 'recording' | 'stopping'} RecState
 */

export class RecordBar {
  /**
   * @param {{toggle: HTMLButtonElement, state: HTMLElement, elapsed: HTMLElement,
   *   session: HTMLElement, bar: HTMLElement, notify: (text: string, kind?: string) => void,
   *   onStopped: (sessionId: string) => void, onChange?: () => void}} opts
   */
  constructor({ toggle, state, elapsed, session, bar, notify, onStopped, onChange }) {
    this.onChange = onChange;
    this.toggleBtn = toggle;
    this.stateEl = state;
    this.elapsedEl = elapsed;
    this.sessionEl = session;
    this.bar = bar;
    this.notify = notify;
    this.onStopped = onStopped;
    /** @type {string | null} */
    this.roomId = null;
    /** @type {RecordingInfo | null} */
    this.recording = null;
    /** performance.now() at t = 0 of the running recording */
    this.t0 = 0;
    /** @type {'starting' | 'stopping' | null} */
    this.pending = null;
    /** @type {Promise<boolean> | null} resolves to whether a start succeeded */
    this.starting = null;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.timer = undefined;
    toggle.addEventListener('click', () => { this.toggle(); });
    this._render();
  }

  /** @returns {RecState} */
  get state() {
    if (!this.roomId) return 'none';
    if (this.pending) return this.pending;
    return this.recording ? 'recording' : 'stopped';
  }

  /** @returns {number | null} seconds since t = 0 of the running recording */
  elapsed() {
    return this.recording ? Math.max(0, (performance.now() - this.t0) / 1000) : null;
  }

  /**
   * The selected room as the server describes it (or null).
   * @param {import('./rooms.js').Room | null} room
   */
  setRoom(room) {
    const id = room?.room_id ?? null;
    if (id !== this.roomId) {
      this.roomId = id;
      this.pending = null;
      this.starting = null;
      this.recording = null;
    }
    this._apply(room?.recording ?? null);
  }

  /**
   * Wait for a start in flight (markers pressed right after the record button).
   * @returns {Promise<boolean>} whether the room is recording
   */
  async ready() {
    if (this.starting) await this.starting;
    return !!this.recording;
  }

  async toggle() {
    if (!this.roomId || this.pending) return;
    if (this.recording) await this.stop();
    else await this.start();
  }

  async start() {
    const roomId = this.roomId;
    if (!roomId) return;
    this.pending = 'starting';
    this._render();
    this.starting = (async () => {
      try {
        const res = await api(`/api/v1/rooms/${seg(roomId)}/recording`, { method: 'POST' });
        if (roomId !== this.roomId) return false;
        this.pending = null;
        if (!this.recording || this.recording.session_id !== res.session_id) {
          this._apply({ session_id: res.session_id, started_at: res.started_at, elapsed_s: 0 });
        }
        return true;
      } catch (err) {
        if (roomId !== this.roomId) return false;
        this.pending = null;
        const e = /** @type {any} */ (err);
        // 409: someone else started it; the next `rooms` push shows it.
        if (e.status !== 409) this.notify(`Could not start recording: ${e.message}`, 'error');
        this._render();
        return e.status === 409;
      } finally {
        this.starting = null;
      }
    })();
    await this.starting;
  }

  async stop() {
    const roomId = this.roomId;
    if (!roomId) return;
    this.pending = 'stopping';
    this._render();
    try {
      const res = await api(`/api/v1/rooms/${seg(roomId)}/recording`, { method: 'DELETE' });
      if (roomId !== this.roomId) return;
      this.pending = null;
      this._apply(null);
      const reason = res?.reason ? ` (${res.reason})` : '';
      this.notify(`Recording saved: ${res?.session_id ?? ''} — ${res?.state ?? 'done'}${reason}`,
        res?.state === 'complete' ? 'ok' : 'warn');
      if (res?.session_id) this.onStopped(res.session_id);
    } catch (err) {
      if (roomId !== this.roomId) return;
      this.pending = null;
      const e = /** @type {any} */ (err);
      if (e.status === 409) this._apply(null);
      else this.notify(`Could not stop recording: ${e.message}`, 'error');
      this._render();
    }
  }

  /** @param {RecordingInfo | null} rec */
  _apply(rec) {
    if (rec && rec.session_id) {
      const now = performance.now();
      let t0;
      if (typeof rec.elapsed_s === 'number' && Number.isFinite(rec.elapsed_s)) t0 = now - rec.elapsed_s * 1000;
      else if (rec.started_at && !Number.isNaN(Date.parse(rec.started_at))) t0 = now - (Date.now() - Date.parse(rec.started_at));
      else t0 = now;
      const same = this.recording?.session_id === rec.session_id;
      // Within one session keep the running clock unless the server's differs noticeably.
      if (!same || Math.abs(t0 - this.t0) > 750) this.t0 = t0;
      this.recording = { ...rec };
      if (this.pending === 'starting') this.pending = null;
    } else if (this.pending !== 'starting') {
      this.recording = null;
      if (this.pending === 'stopping') this.pending = null;
    }
    this._render();
  }

  _render() {
    const state = this.state;
    const recording = state === 'recording' || state === 'stopping';
    this.bar.dataset.rec = state;
    this.stateEl.dataset.state = state;
    this.stateEl.textContent = {
      none: 'No room selected', stopped: 'Not recording', starting: 'Starting…',
      recording: 'Recording', stopping: 'Stopping…',
    }[state];
    this.toggleBtn.disabled = state === 'none' || state === 'starting' || state === 'stopping';
    this.toggleBtn.textContent = recording ? 'Stop recording' : 'Start recording';
    this.toggleBtn.classList.toggle('recording', recording);
    this.toggleBtn.setAttribute('aria-pressed', String(recording));
    this.sessionEl.textContent = this.recording?.session_id ?? '';
    clearInterval(this.timer);
    this.timer = undefined;
    if (this.recording) this.timer = setInterval(() => this._drawElapsed(), 200);
    this._drawElapsed();
    this.onChange?.();
  }

  _drawElapsed() {
    const t = this.elapsed();
    this.elapsedEl.textContent = fmtClock(t ?? 0);
    this.elapsedEl.dataset.elapsedS = t == null ? '' : t.toFixed(1);
  }
}
