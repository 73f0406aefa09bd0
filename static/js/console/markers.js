// @ts-check
/**
 * Marker buttons and keyboard shortcuts: S scene, T take, C cut, N note (focuses the note field;
 * Enter sends it with its text as the label). Shortcuts never fire while typing in a text field.
 * POST /api/v1/rooms/{id}/markers {kind, label}; each answer goes into the take list.
 */
import { api, seg } from './api.js';
import { isTyping } from './util.js';

/** @typedef {'scene' | 'take' | 'cut' | 'note'} Kind */

const KEYS = /** @type {Record<string, Kind>} */ ({ s: 'scene', t: 'take', c: 'cut', n: 'note' });

export class MarkerControls {
  /**
   * @param {{buttons: Record<Kind, HTMLButtonElement>, note: HTMLInputElement,
   *   roomId: () => string | null, active: () => boolean,
   *   recorder: import('./recording.js').RecordBar, takes: import('./takes.js').TakeList,
   *   notify: (text: string, kind?: string) => void}} opts
   */
  constructor({ buttons, note, roomId, active, recorder, takes, notify }) {
    this.buttons = buttons;
    this.note = note;
    this.roomId = roomId;
    this.active = active;
    this.recorder = recorder;
    this.takes = takes;
    this.notify = notify;

    for (const kind of /** @type {Kind[]} */ (['scene', 'take', 'cut'])) {
      buttons[kind].addEventListener('click', () => { this.drop(kind); });
    }
    buttons.note.addEventListener('click', () => {
      if (note.value.trim()) this.sendNote();
      else note.focus();
    });
    note.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.isComposing) {
        ev.preventDefault();
        this.sendNote();
      } else if (ev.key === 'Escape') {
        note.blur();
      }
    });
    document.addEventListener('keydown', (ev) => this._onKey(ev));
  }

  /** Enable the controls while the room records (or is starting to). */
  update() {
    const state = this.recorder.state;
    const on = state === 'recording' || state === 'starting';
    for (const b of Object.values(this.buttons)) b.disabled = !on;
    this.note.disabled = !this.roomId();
    this.note.placeholder = on ? 'Note text, Enter to drop' : 'Notes need a running recording';
  }

  /** @param {KeyboardEvent} ev */
  _onKey(ev) {
    if (ev.defaultPrevented || ev.repeat || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (isTyping(ev.target)) return;
    const kind = KEYS[ev.key.toLowerCase()];
    if (!kind || !this.active() || !this.roomId()) return;
    ev.preventDefault();
    if (kind === 'note') {
      this.note.focus();
      this.note.select();
      return;
    }
    this._flash(this.buttons[kind]);
    this.drop(kind);
  }

  sendNote() {
    const text = this.note.value.trim();
    if (!text) {
      this.note.focus();
      return;
    }
    this._flash(this.buttons.note);
    // Back to the shortcuts once the note is on its way.
    if (document.activeElement === this.note) this.note.blur();
    this.drop('note', text).then((ok) => {
      if (ok && this.note.value.trim() === text) this.note.value = '';
    });
  }

  /**
   * @param {Kind} kind
   * @param {string} [label]
   * @returns {Promise<boolean>}
   */
  async drop(kind, label) {
    const roomId = this.roomId();
    if (!roomId) return false;
    // A shortcut pressed right after Start waits for the start to land.
    if (!(await this.recorder.ready())) {
      this.notify('Markers need a running recording: start recording first', 'error');
      return false;
    }
    const text = label ?? (kind === 'scene' || kind === 'take' ? this.takes.nextLabel(kind) : kind === 'cut' ? 'Cut' : '');
    try {
      const res = await api(`/api/v1/rooms/${seg(roomId)}/markers`, { method: 'POST', body: { kind, label: text } });
      if (roomId === this.roomId()) this.takes.addMarker({ kind, label: text, ...res });
      return true;
    } catch (err) {
      this.notify(`Could not drop the ${kind} marker: ${/** @type {Error} */ (err).message}`, 'error');
      return false;
    }
  }

  /** @param {HTMLElement} el */
  _flash(el) {
    el.classList.remove('flash');
    void el.offsetWidth;
    el.classList.add('flash');
  }
}
