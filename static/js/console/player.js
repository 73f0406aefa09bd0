// @ts-check
/**
 * Side-by-side playback of one session: every performer's file is fetched with the bearer
 * header into a Blob URL (a <video> cannot send headers), one <video data-testid="session-video">
 * each, and one play/pause control for all.
 *
 * The files share one timeline and the browser honours their timestamps: a performer who
 * joined 12 s in has a file starting at 12 s (currentTime cannot go below it). So playback runs
 * on a timeline clock: Play waits until every video can play, sets currentTime 0 (which lands
 * each file on its own first frame), then starts the clock at 0; a video plays while the clock
 * is inside its range, holds its first frame before, and is nudged back when it drifts.
 */
import { api, apiBlob, filePath, seg } from './api.js';
import { h } from '../common/dom.js';
import { fmtClock, fmtDateTime, fmtTimeline } from './util.js';

const TICK_MS = 100;
/** Drift (s) after which a video is re-seeked to the clock. */
const MAX_DRIFT_S = 0.5;
/** Drift (s) above which a video is nudged by its playback rate, and by how much. */
const NUDGE_S = 0.03;
const NUDGE_RATE = 0.1;

/**
 * @typedef {{id: string, name: string, video: HTMLVideoElement, status: HTMLElement,
 *   el: HTMLElement, url: string | null, start: number, end: number, ready: boolean,
 *   failed: boolean}} Track
 */

/** @param {HTMLVideoElement} v */
function canPlay(v) {
  if (v.readyState >= HTMLMediaElement.HAVE_FUTURE_DATA) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      v.removeEventListener('canplay', done);
      v.removeEventListener('error', done);
      resolve(undefined);
    };
    v.addEventListener('canplay', done);
    v.addEventListener('error', done);
  });
}

/** @param {HTMLVideoElement} v */
function seeked(v) {
  if (!v.seeking) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, 1500);
    v.addEventListener('seeked', () => { clearTimeout(t); resolve(undefined); }, { once: true });
  });
}

export class SessionPlayer {
  /**
   * @param {{root: HTMLElement, notify: (text: string, kind?: string) => void}} opts
   */
  constructor({ root, notify }) {
    this.root = root;
    this.notify = notify;
    /** @type {string | null} */
    this.sessionId = null;
    /** @type {any} */
    this.manifest = null;
    /** @type {Track[]} */
    this.tracks = [];
    /** @type {AbortController | null} */
    this.abort = null;
    this.playing = false;
    /** The timeline position while paused, and the wall-clock base while playing. */
    this.pos = 0;
    this.base = 0;
    this.length = 0;
    this.prepared = false;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.timer = undefined;
    /** @type {Record<string, HTMLElement>} */
    this.ui = {};
  }

  /** @param {string} sessionId */
  async open(sessionId) {
    this.close();
    this.sessionId = sessionId;
    const abort = new AbortController();
    this.abort = abort;
    this.root.replaceChildren(h('p', { className: 'player-empty' }, 'Loading the session…'));
    let manifest;
    try {
      manifest = await api(`/api/v1/sessions/${seg(sessionId)}`);
    } catch (err) {
      if (abort.signal.aborted) return;
      this.root.replaceChildren(h('p', { className: 'player-empty' }, `Could not load the session: ${/** @type {Error} */ (err).message}`));
      return;
    }
    if (abort.signal.aborted) return;
    this.manifest = manifest;
    this._build(manifest);
    await Promise.all(this.tracks.map((t) => this._load(t, abort.signal)));
  }

  close() {
    this.abort?.abort();
    this.abort = null;
    this._stopClock();
    this.playing = false;
    this.prepared = false;
    this.pos = 0;
    for (const t of this.tracks) {
      t.video.pause();
      t.video.removeAttribute('src');
      t.video.load();
      if (t.url) URL.revokeObjectURL(t.url);
    }
    this.tracks = [];
    this.manifest = null;
    this.sessionId = null;
    this.root.replaceChildren(h('p', { className: 'player-empty' }, 'Open a session to play its performers side by side.'));
  }

  /** The current timeline position in seconds. */
  position() {
    return this.playing ? (performance.now() - this.base) / 1000 : this.pos;
  }

  /** @param {any} m */
  _build(m) {
    const performers = Array.isArray(m.performers) ? m.performers : [];
    const files = Array.isArray(m.files) ? m.files : [];
    this.length = typeof m.duration_s === 'number' && m.duration_s > 0 ? m.duration_s : 0;

    const play = /** @type {HTMLButtonElement} */ (h('button', {
      type: 'button', className: 'primary small', dataset: { testid: 'session-play' }, disabled: true,
      onclick: () => { this.toggle(); },
    }, 'Play'));
    const time = h('span', { className: 'player-time', dataset: { testid: 'session-time' } }, '00:00.0');
    const seek = /** @type {HTMLInputElement} */ (h('input', {
      type: 'range', min: '0', step: '0.1', value: '0', max: String(this.length || 0),
      className: 'player-seek', dataset: { testid: 'session-seek' }, attrs: { 'aria-label': 'Position' },
    }));
    seek.addEventListener('input', () => this.seek(Number(seek.value)));
    this.ui = { play, time, seek };

    const grid = h('div', { className: 'player-grid', dataset: { count: String(Math.max(1, performers.length)) } });
    this.tracks = [];
    for (const p of performers) {
      const id = String(p.performer_id);
      const path = p.file?.path
        ?? files.map((f) => f.path).find((f) => typeof f === 'string' && f.startsWith(`performers/${id}.`));
      const video = /** @type {HTMLVideoElement} */ (h('video', {
        className: 'ptile-video', preload: 'auto', playsInline: true,
        dataset: { testid: 'session-video', performerId: id },
      }));
      const status = h('span', { className: 'ptile-status' }, path ? 'loading…' : 'no file');
      const mute = h('button', { type: 'button', className: 'small', title: 'Mute this performer' }, 'Mute');
      mute.addEventListener('click', () => {
        video.muted = !video.muted;
        mute.textContent = video.muted ? 'Unmute' : 'Mute';
        mute.classList.toggle('on', video.muted);
      });
      const el = h('figure', { className: 'ptile', dataset: { performerId: id } },
        h('div', { className: 'ptile-media' }, video, status),
        h('figcaption', {}, h('span', { className: 'ptile-name' }, p.display_name || id), mute));
      grid.append(el);
      this.tracks.push({
        id, name: p.display_name || id, video, status, el, url: null, start: 0, end: 0, ready: false,
        failed: !path, ...(path ? { path } : {}),
      });
    }

    const entries = [
      ...(Array.isArray(m.markers) ? m.markers : []).map((x) => ({ t: x.t_s, kind: x.kind, label: x.label })),
      ...(Array.isArray(m.prompts) ? m.prompts : []).map((x) => ({
        t: x.t_s, kind: 'prompt',
        label: [x.text, x.target_emotion, x.intensity != null ? `intensity ${Number(x.intensity).toFixed(2)}` : null]
          .filter(Boolean).join(' · '),
      })),
    ].sort((a, b) => (a.t ?? 0) - (b.t ?? 0));
    const markers = h('ol', { className: 'take-list', dataset: { testid: 'session-markers' } },
      ...(entries.length ? entries.map((e) => h('li', {
        className: `take take-${e.kind} seekable`, dataset: { kind: e.kind, tS: String(e.t ?? '') },
        title: 'Jump here', onclick: () => this.seek(Number(e.t) || 0),
      }, h('time', { className: 'take-time' }, fmtTimeline(e.t)),
      h('span', { className: `kind kind-${e.kind}` }, e.kind),
      h('span', { className: 'take-label' }, e.label || '—'))) : [h('li', { className: 'empty' }, 'No markers in this session.')]));

    const state = String(m.state ?? 'unknown');
    this.root.replaceChildren(
      h('div', { className: 'player-head' },
        h('h2', { className: 'player-title' }, m.room_name || m.room_id || 'Session'),
        h('span', { className: `chip state-${state}` }, state),
        h('span', { className: 'muted' }, fmtDateTime(m.started_at)),
        h('span', { className: 'muted' }, this.length ? fmtClock(this.length) : ''),
        h('code', { className: 'muted player-id' }, m.session_id ?? this.sessionId),
        m.reason ? h('span', { className: 'player-reason', title: String(m.reason) }, String(m.reason)) : null),
      h('div', { className: 'player-controls' }, play, time, seek),
      h('div', { className: 'player-body' },
        this.tracks.length ? grid : h('p', { className: 'player-empty' }, 'This session has no performer files.'),
        h('div', { className: 'player-markers' }, h('h3', { className: 'panel-title' }, 'Markers'), markers)));
  }

  /**
   * @param {Track & {path?: string}} t
   * @param {AbortSignal} signal
   */
  async _load(t, signal) {
    if (!t.path) return;
    try {
      const blob = await apiBlob(
        `/api/v1/sessions/${seg(String(this.sessionId))}/files/${filePath(t.path)}`,
        (loaded, total) => {
          t.status.textContent = total ? `loading ${Math.round((100 * loaded) / total)}%` : `loading ${(loaded / 1e6).toFixed(1)} MB`;
        },
        signal,
      );
      if (signal.aborted) return;
      t.url = URL.createObjectURL(blob);
      t.video.src = t.url;
      await canPlay(t.video);
      if (signal.aborted) return;
      if (t.video.error) throw new Error(`cannot decode (${t.video.error.message || t.video.error.code})`);
      // Its first frame's place on the timeline: currentTime cannot go below it.
      t.start = Math.max(0, t.video.currentTime || 0);
      t.end = Number.isFinite(t.video.duration) ? t.video.duration : this._trackEnd(t.id);
      t.ready = true;
      t.status.textContent = t.start > 0.05 ? `joins at ${fmtTimeline(t.start)}` : '';
      t.status.hidden = !t.status.textContent;
      this.length = Math.max(this.length, t.end);
      this.ui.seek.max = String(this.length);
    } catch (err) {
      if (signal.aborted) return;
      t.failed = true;
      t.status.hidden = false;
      t.status.textContent = `could not load: ${/** @type {Error} */ (err).message}`;
      t.el.classList.add('failed');
    }
    this._updateControls();
  }

  /** @param {string} id */
  _trackEnd(id) {
    const p = (this.manifest?.performers ?? []).find((x) => x.performer_id === id);
    const ends = (p?.tracks ?? []).map((tr) => (tr.start_s ?? 0) + (tr.duration_s ?? 0));
    return ends.length ? Math.max(...ends) : this.length;
  }

  _updateControls() {
    const usable = this.tracks.filter((t) => !t.failed);
    const ready = usable.length > 0 && usable.every((t) => t.ready);
    this.ui.play.disabled = !ready;
    this.ui.play.textContent = this.playing ? 'Pause' : 'Play';
    this.ui.play.setAttribute('aria-pressed', String(this.playing));
    this.root.dataset.playing = String(this.playing);
  }

  async toggle() {
    if (this.playing) this.pause();
    else await this.play();
  }

  /** Start every video together (from 0 the first time or after the end). */
  async play() {
    const usable = this.tracks.filter((t) => t.ready && !t.failed);
    if (!usable.length) return;
    this.ui.play.disabled = true;
    await Promise.all(usable.map((t) => canPlay(t.video)));
    let from = this.pos;
    if (!this.prepared || from >= this.length - 0.05) {
      from = 0;
      for (const t of usable) t.video.currentTime = 0; // lands on each file's first frame
      await Promise.all(usable.map((t) => seeked(t.video)));
      this.prepared = true;
    }
    this.pos = from;
    this.base = performance.now() - from * 1000;
    this.playing = true;
    await Promise.all(usable.map((t) => this._sync(t, from, true)));
    this._startClock();
    this._updateControls();
  }

  pause() {
    this.pos = this.position();
    this.playing = false;
    this._stopClock();
    for (const t of this.tracks) {
      t.video.pause();
      t.video.playbackRate = 1;
    }
    this._draw();
    this._updateControls();
  }

  /** @param {number} t timeline seconds */
  seek(t) {
    const to = Math.max(0, Math.min(this.length || 0, t));
    this.prepared = true;
    this.pos = to;
    this.base = performance.now() - to * 1000;
    for (const tr of this.tracks) if (tr.ready) this._sync(tr, to, true);
    this._draw();
  }

  _startClock() {
    this._stopClock();
    this.timer = setInterval(() => this._tick(), TICK_MS);
  }

  _stopClock() {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  _tick() {
    if (!this.playing) return;
    // Follow a playing video, so the reference never needs re-seeking; else the wall clock.
    const ref = this.tracks.find((t) => t.ready && !t.video.paused && !t.video.seeking && !t.video.ended
      && t.video.currentTime > t.start - 0.01 && t.video.currentTime < t.end);
    if (ref) {
      this.base = performance.now() - ref.video.currentTime * 1000;
      if (ref.video.playbackRate !== 1) ref.video.playbackRate = 1; // the clock runs at 1x
    }
    const now = this.position();
    if (now >= this.length) {
      this.pos = this.length;
      this.playing = false;
      this._stopClock();
      for (const t of this.tracks) t.video.pause();
      this._draw();
      this._updateControls();
      return;
    }
    for (const t of this.tracks) if (t.ready && t !== ref) this._sync(t, now, false);
    this._draw();
  }

  /**
   * Put one video where the clock is: hold before its start, play inside its range.
   * @param {Track} t
   * @param {number} now timeline seconds
   * @param {boolean} force seek even when close
   */
  async _sync(t, now, force) {
    const v = t.video;
    if (now < t.start - 0.02) {
      if (!v.paused) v.pause();
      if (Math.abs(v.currentTime - t.start) > 0.05) v.currentTime = t.start;
      t.el.classList.add('waiting');
      return;
    }
    t.el.classList.remove('waiting');
    if (now >= t.end) {
      if (!v.paused) v.pause();
      return;
    }
    if (v.ended && !force) return; // finished a little early: do not restart it
    // Far off: seek. A little off: play slightly faster or slower until level (no stutter).
    const drift = v.currentTime - now;
    if (force || Math.abs(drift) > MAX_DRIFT_S) {
      v.currentTime = now;
      v.playbackRate = 1;
    } else if (Math.abs(drift) > NUDGE_S) {
      v.playbackRate = drift > 0 ? 1 - NUDGE_RATE : 1 + NUDGE_RATE;
    } else if (v.playbackRate !== 1) {
      v.playbackRate = 1;
    }
    if (this.playing && v.paused) {
      try {
        await v.play();
      } catch (err) {
        if (/** @type {Error} */ (err)?.name === 'NotAllowedError') {
          v.muted = true; // autoplay with sound refused: play muted rather than not at all
          await v.play().catch(() => {});
        }
      }
    } else if (!this.playing && !v.paused) {
      v.pause();
    }
  }

  _draw() {
    const t = this.position();
    this.ui.time.textContent = `${fmtTimeline(t)} / ${fmtTimeline(this.length)}`;
    if (document.activeElement !== this.ui.seek) this.ui.seek.value = String(t);
  }
}
