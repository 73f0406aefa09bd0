// @ts-check
/**
 * Rooms column: the list (select, close with confirm) and the create form (name and capture
 * profile). Each room's card shows its profile and, in a studio room, every performer's
 * high-quality upload.
 */
import { api, seg } from './api.js';
import { hqText, hqTitle, latestUploads } from './uploads.js';
import { h } from '../common/dom.js';

/**
 * @typedef {{room_id: string, name?: string, created_at?: string, performers?: any[],
 *   recording?: null | {session_id: string, started_at?: string, elapsed_s?: number},
 *   profile?: {name?: string} | null, uploads?: import('./uploads.js').Upload[]}} Room
 */

export class RoomsPanel {
  /**
   * @param {{list: HTMLElement, form: HTMLFormElement, nameInput: HTMLInputElement,
   *   profileSelect: HTMLSelectElement, createButton: HTMLButtonElement,
   *   onSelect: (roomId: string | null) => void, onChanged: () => void,
   *   notify: (text: string, kind?: string) => void}} opts
   */
  constructor({ list, form, nameInput, profileSelect, createButton, onSelect, onChanged, notify }) {
    this.list = list;
    this.nameInput = nameInput;
    this.profileSelect = profileSelect;
    this.createButton = createButton;
    this.onSelect = onSelect;
    this.onChanged = onChanged;
    this.notify = notify;
    /** @type {string | null | undefined} the selection last scrolled into view */
    this.shownSelected = undefined;
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.create();
    });
  }

  async create() {
    const name = this.nameInput.value.trim();
    // Empty: the server's default profile.
    const profile = this.profileSelect.value;
    this.createButton.disabled = true;
    try {
      /** @type {Record<string, string>} */
      const body = {};
      if (name) body.name = name;
      if (profile) body.profile = profile;
      const room = await api('/api/v1/rooms', { method: 'POST', body });
      this.nameInput.value = '';
      this.onChanged();
      this.onSelect(room.room_id);
    } catch (err) {
      this.notify(`Could not create the room: ${/** @type {Error} */ (err).message}`, 'error');
    } finally {
      this.createButton.disabled = false;
    }
  }

  /** @param {Room} room */
  async close(room) {
    const label = room.name || room.room_id;
    const recording = room.recording ? ' The running recording will be stopped first.' : '';
    if (!confirm(`Close room “${label}”? Everyone in it is disconnected.${recording}`)) return;
    try {
      await api(`/api/v1/rooms/${seg(room.room_id)}`, { method: 'DELETE' });
      this.notify(`Room “${label}” closed`, 'ok');
      this.onChanged();
    } catch (err) {
      this.notify(`Could not close the room: ${/** @type {Error} */ (err).message}`, 'error');
    }
  }

  /**
   * @param {Room[]} rooms
   * @param {string | null} selectedId
   */
  render(rooms, selectedId) {
    if (!rooms.length) {
      this.list.replaceChildren(h('li', { className: 'empty' }, 'No rooms yet. Create one above.'));
      return;
    }
    this.list.replaceChildren(...rooms.map((room) => this._item(room, room.room_id === selectedId)));
    if (selectedId !== this.shownSelected) {
      // A newly selected (or created) room may sit below the fold of the list.
      this.shownSelected = selectedId;
      this.list.querySelector('.room-item.selected')?.scrollIntoView({ block: 'nearest' });
    }
  }

  /**
   * @param {Room} room
   * @param {boolean} selected
   */
  _item(room, selected) {
    const performers = Array.isArray(room.performers) ? room.performers : [];
    const joined = performers.filter((p) => p.state !== 'reconnecting').length;
    const meta = [`${performers.length} performer${performers.length === 1 ? '' : 's'}`];
    if (performers.length && joined !== performers.length) meta.push(`${performers.length - joined} reconnecting`);
    const rec = room.recording
      ? h('span', { className: 'rec-chip', title: `Recording ${room.recording.session_id ?? ''}` }, h('span', { className: 'rec-dot' }), 'REC')
      : null;
    const profileName = room.profile?.name;
    const profile = profileName
      ? h('span', { className: `profile-chip profile-${profileName}`, dataset: { testid: 'room-profile' }, title: 'Capture profile' }, profileName)
      : null;
    const uploads = [...latestUploads(room.uploads).values()];
    const hq = uploads.length
      ? h('ul', { className: 'room-uploads', dataset: { testid: 'room-uploads' } }, ...uploads.map((u) => h('li', {
        className: 'room-upload', title: hqTitle(u), dataset: { testid: 'room-upload', performerId: u.performer_id, state: u.state },
      }, h('span', { className: 'room-upload-name' }, u.display_name || u.performer_id), ` ${hqText(u)}`)))
      : null;
    const select = h('button', {
      type: 'button', className: 'room-select', onclick: () => this.onSelect(room.room_id), title: room.room_id,
      attrs: selected ? { 'aria-current': 'true' } : {},
    },
    h('span', { className: 'room-name' }, room.name || room.room_id),
    h('span', { className: 'room-meta' }, meta.join(' · '), profile, rec),
    hq);
    const close = h('button', {
      type: 'button', className: 'icon danger', title: 'Close this room',
      dataset: { testid: 'room-close', roomId: room.room_id },
      attrs: { 'aria-label': `Close room ${room.name || room.room_id}` },
      onclick: () => this.close(room),
    }, '×');
    return h('li', {
      className: `room-item${selected ? ' selected' : ''}${room.recording ? ' recording' : ''}`,
      dataset: { testid: 'room-item', roomId: room.room_id },
    }, select, close);
  }
}
