// @ts-check
/**
 * The running take list of the selected room: one <li> per marker and prompt, by time on the
 * session timeline (mm:ss.s). Fed by the room description (`recording.markers`, `.prompts`)
 * and by the answers to the console's own POSTs, de-duplicated. A new session starts a new
 * list; after a stop the last session's list stays until the next start.
 */
import { h } from '../common/dom.js';
import { fmtTimeline } from './util.js';

/**
 * @typedef {{type: 'marker' | 'prompt', t_s: number | null, kind: string, label: string,
 *   target_emotion?: string | null, intensity?: number | null, seq: number}} Entry
 */

let seq = 0;

/**
 * @param {any} m
 * @returns {Entry}
 */
function markerEntry(m) {
  return { type: 'marker', t_s: typeof m.t_s === 'number' ? m.t_s : null, kind: String(m.kind ?? 'note'), label: String(m.label ?? ''), seq: seq++ };
}

/**
 * @param {any} p
 * @returns {Entry}
 */
function promptEntry(p) {
  return {
    type: 'prompt', t_s: typeof p.t_s === 'number' ? p.t_s : null, kind: 'prompt', label: String(p.text ?? ''),
    target_emotion: p.target_emotion ?? null, intensity: typeof p.intensity === 'number' ? p.intensity : null, seq: seq++,
  };
}

/** @param {Entry} e */
function key(e) {
  // Times are rounded: the same marker may come back from the POST and the push.
  return `${e.type}|${e.t_s == null ? `n${e.seq}` : e.t_s.toFixed(3)}|${e.kind}|${e.label}`;
}

export class TakeList {
  /**
   * @param {{list: HTMLElement, title: HTMLElement, count: HTMLElement}} opts
   */
  constructor({ list, title, count }) {
    this.list = list;
    this.title = title;
    this.count = count;
    /** @type {string | null} */
    this.roomId = null;
    /** @type {string | null} session the list belongs to */
    this.sessionId = null;
    this.live = false;
    /** @type {Map<string, Entry>} */
    this.entries = new Map();
  }

  /** @param {import('./rooms.js').Room | null} room */
  setRoom(room) {
    const id = room?.room_id ?? null;
    if (id !== this.roomId) {
      this.roomId = id;
      this.sessionId = null;
      this.entries.clear();
    }
    const rec = /** @type {any} */ (room?.recording);
    this.live = !!rec;
    if (rec?.session_id) {
      if (rec.session_id !== this.sessionId) {
        this.sessionId = rec.session_id;
        // Prompts pushed before the start have no time: keep them, drop the old session's items.
        for (const [k, e] of this.entries) if (e.t_s != null) this.entries.delete(k);
      }
      for (const m of Array.isArray(rec.markers) ? rec.markers : []) this._put(markerEntry(m));
      for (const p of Array.isArray(rec.prompts) ? rec.prompts : []) this._put(promptEntry(p));
    }
    this.render();
  }

  /** @param {any} marker the POST answer `{t_s, kind, label}` */
  addMarker(marker) {
    this._put(markerEntry(marker));
    this.render();
  }

  /** @param {any} prompt the POST answer (or what was sent, with `t_s`) */
  addPrompt(prompt) {
    this._put(promptEntry(prompt));
    this.render();
  }

  /**
   * A label for the next scene or take marker: "Scene 2", "Take 3" (takes count within a scene).
   * @param {'scene' | 'take'} kind
   * @returns {string}
   */
  nextLabel(kind) {
    const markers = this._sorted().filter((e) => e.type === 'marker');
    const scenes = markers.filter((e) => e.kind === 'scene').length;
    if (kind === 'scene') return `Scene ${scenes + 1}`;
    let takes = 0;
    for (const e of markers) {
      if (e.kind === 'scene') takes = 0;
      else if (e.kind === 'take') takes += 1;
    }
    return scenes ? `Scene ${scenes} · Take ${takes + 1}` : `Take ${takes + 1}`;
  }

  /** @param {Entry} e */
  _put(e) {
    const k = key(e);
    if (this.entries.has(k)) return;
    // An untimed local prompt and its timed twin from the server: keep the timed one.
    this.entries.set(k, e);
  }

  /** @returns {Entry[]} */
  _sorted() {
    return [...this.entries.values()].sort((a, b) => {
      if (a.t_s == null && b.t_s == null) return a.seq - b.seq;
      if (a.t_s == null) return 1;
      if (b.t_s == null) return -1;
      return a.t_s - b.t_s || a.seq - b.seq;
    });
  }

  render() {
    const sorted = this._sorted();
    this.title.textContent = this.sessionId ? (this.live ? 'Take list' : 'Take list · last session') : 'Take list';
    this.title.title = this.sessionId ?? '';
    this.count.textContent = sorted.length ? String(sorted.length) : '';
    const stick = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 24;
    if (!sorted.length) {
      this.list.replaceChildren(h('li', { className: 'empty' },
        this.roomId ? 'Markers and prompts show up here.' : 'Select a room.'));
      return;
    }
    this.list.replaceChildren(...sorted.map((e) => {
      const meta = [];
      if (e.target_emotion) meta.push(e.target_emotion);
      if (e.intensity != null) meta.push(`intensity ${e.intensity.toFixed(2)}`);
      return h('li', {
        className: `take take-${e.kind}`,
        dataset: { kind: e.kind, type: e.type, tS: e.t_s == null ? '' : String(e.t_s) },
      },
      h('time', { className: 'take-time', title: e.t_s == null ? 'not recording' : `${e.t_s.toFixed(3)} s` }, fmtTimeline(e.t_s)),
      h('span', { className: `kind kind-${e.kind}` }, e.kind),
      h('span', { className: 'take-label' }, e.label || '—',
        meta.length ? h('span', { className: 'take-meta' }, ` ${meta.join(' · ')}`) : null));
    }));
    if (stick) this.list.scrollTop = this.list.scrollHeight;
  }
}
