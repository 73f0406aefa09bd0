// @ts-check
/**
 * Recent sessions: GET /api/v1/sessions (cursor pages, oldest first), shown newest first with
 * state, duration, performers and the number of markers. Loaded when the tab opens, when a
 * recording stops, and on Refresh (never on a timer).
 */
import { api } from './api.js';
import { h } from '../common/dom.js';
import { fmtClock, fmtDateTime, items } from './util.js';

const PAGE = 200;
const MAX_PAGES = 25;

/**
 * @typedef {{session_id: string, room_id?: string, room_name?: string, state?: string,
 *   started_at?: string, ended_at?: string | null, duration_s?: number | null,
 *   performers?: {performer_id: string, display_name?: string}[], markers?: number | any[],
 *   prompts?: number | any[]}} Summary
 */

/** @param {number | any[] | undefined} v */
function count(v) {
  return Array.isArray(v) ? v.length : typeof v === 'number' ? v : 0;
}

export class SessionsPanel {
  /**
   * @param {{list: HTMLElement, refresh: HTMLButtonElement, onOpen: (id: string) => void,
   *   notify: (text: string, kind?: string) => void}} opts
   */
  constructor({ list, refresh, onOpen, notify }) {
    this.list = list;
    this.onOpen = onOpen;
    this.notify = notify;
    /** @type {Summary[]} newest first */
    this.sessions = [];
    /** @type {string | null} */
    this.active = null;
    this.loaded = false;
    this.seq = 0;
    refresh.addEventListener('click', () => { this.load(); });
  }

  async load() {
    const seq = ++this.seq;
    if (!this.loaded) this.list.replaceChildren(h('li', { className: 'empty' }, 'Loading…'));
    /** @type {Summary[]} */
    const all = [];
    let after = null;
    try {
      for (let page = 0; page < MAX_PAGES; page++) {
        const q = new URLSearchParams({ limit: String(PAGE) });
        if (after) q.set('after', after);
        const res = await api(`/api/v1/sessions?${q}`);
        all.push(...items(res));
        after = res?.next ?? null;
        if (!after || !items(res).length) break;
      }
    } catch (err) {
      if (seq !== this.seq) return;
      this.notify(`Could not load sessions: ${/** @type {Error} */ (err).message}`, 'error');
      if (!this.loaded) this.list.replaceChildren(h('li', { className: 'empty' }, 'Could not load sessions.'));
      return;
    }
    if (seq !== this.seq) return;
    this.loaded = true;
    this.sessions = all.reverse();
    this.render();
  }

  /** @param {string | null} id */
  setActive(id) {
    this.active = id;
    for (const row of this.list.querySelectorAll('[data-testid="session-row"]')) {
      const el = /** @type {HTMLElement} */ (row);
      el.classList.toggle('selected', el.dataset.sessionId === id);
    }
  }

  render() {
    if (!this.sessions.length) {
      this.list.replaceChildren(h('li', { className: 'empty' }, 'No recorded sessions yet.'));
      return;
    }
    this.list.replaceChildren(...this.sessions.map((s) => this._row(s)));
  }

  /** @param {Summary} s */
  _row(s) {
    const names = (s.performers ?? []).map((p) => p.display_name || p.performer_id);
    const markers = count(s.markers);
    const prompts = count(s.prompts);
    const state = s.state ?? 'unknown';
    const duration = typeof s.duration_s === 'number' ? fmtClock(s.duration_s) : state === 'recording' ? 'running' : '—';
    return h('li', {
      className: `session-row${s.session_id === this.active ? ' selected' : ''}`,
      dataset: { testid: 'session-row', sessionId: s.session_id, state },
    }, h('button', { type: 'button', className: 'session-open', onclick: () => this.onOpen(s.session_id) },
      h('span', { className: 'session-line' },
        h('span', { className: 'session-room' }, s.room_name || s.room_id || 'room'),
        h('span', { className: `chip state-${state}`, dataset: { testid: 'session-state' } }, state)),
      h('span', { className: 'session-line muted' },
        h('span', {}, fmtDateTime(s.started_at)),
        h('span', { dataset: { testid: 'session-duration' } }, duration)),
      h('span', { className: 'session-line session-perf' },
        names.length ? names.join(', ') : 'no performers'),
      h('span', { className: 'session-line muted' },
        h('span', { dataset: { testid: 'session-markers-count' } }, `${markers} marker${markers === 1 ? '' : 's'}`),
        h('span', {}, `${prompts} prompt${prompts === 1 ? '' : 's'}`))));
  }
}
