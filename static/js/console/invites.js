// @ts-check
/**
 * Invites of the selected room: the list (URL, expiry, who is on stage, copy button) and the
 * create form. Reloaded when the room changes and whenever the server says something changed.
 */
import { api, seg } from './api.js';
import { copyText, selectText } from './clipboard.js';
import { h } from '../common/dom.js';
import { fmtDateTime, fmtExpiry, items } from './util.js';

/**
 * @typedef {{performer_id: string, display_name?: string, token?: string, url: string,
 *   expires_at?: string}} Invite
 */

export class InvitesPanel {
  /**
   * @param {{section: HTMLElement, title: HTMLElement, list: HTMLElement, form: HTMLFormElement,
   *   nameInput: HTMLInputElement, createButton: HTMLButtonElement,
   *   notify: (text: string, kind?: string) => void}} opts
   */
  constructor({ section, title, list, form, nameInput, createButton, notify }) {
    this.section = section;
    this.title = title;
    this.list = list;
    this.nameInput = nameInput;
    this.createButton = createButton;
    this.notify = notify;
    /** @type {string | null} */
    this.roomId = null;
    /** @type {Invite[]} */
    this.invites = [];
    /** @type {Map<string, string>} performer id -> state, from the room description */
    this.onStage = new Map();
    /** @type {Set<string>} performers removed from the room from this console */
    this.removed = new Set();
    /** @type {string | null} the invite just created, highlighted */
    this.fresh = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.reloadTimer = undefined;
    this.loadSeq = 0;
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.create();
    });
  }

  /**
   * The selected room (or null); reloads when it changes, else only refreshes who is on stage.
   * @param {import('./rooms.js').Room | null} room
   */
  setRoom(room) {
    const id = room?.room_id ?? null;
    this.onStage = new Map((room?.performers ?? []).map((p) => [p.performer_id, p.state || 'joined']));
    this.section.hidden = !id;
    this.title.textContent = room ? `Invites · ${room.name || room.room_id}` : 'Invites';
    if (id !== this.roomId) {
      this.roomId = id;
      this.invites = [];
      this.fresh = null;
      this.render();
      if (id) this.load();
    } else {
      this.render();
    }
  }

  /**
   * Remember that a performer was removed (the invite list does not say so).
   * @param {string} performerId
   */
  markRemoved(performerId) {
    this.removed.add(performerId);
    this.render();
  }

  /** Reload soon (coalesces bursts of `rooms` pushes). */
  reloadSoon() {
    if (!this.roomId) return;
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => this.load(), 300);
  }

  async load() {
    const roomId = this.roomId;
    if (!roomId) return;
    const seq = ++this.loadSeq;
    try {
      const res = await api(`/api/v1/rooms/${seg(roomId)}/invites`);
      if (seq !== this.loadSeq || roomId !== this.roomId) return;
      this.invites = items(res);
      this.render();
    } catch (err) {
      // 0: the server is away (the reconnecting banner says so); 404: the room just closed.
      const status = /** @type {any} */ (err).status;
      if (roomId === this.roomId && status !== 404 && status !== 0) {
        this.notify(`Could not load invites: ${/** @type {Error} */ (err).message}`, 'error');
      }
    }
  }

  async create() {
    const roomId = this.roomId;
    const name = this.nameInput.value.trim();
    if (!roomId) return;
    if (!name) {
      this.nameInput.focus();
      this.notify('Type the performer’s name first', 'error');
      return;
    }
    this.createButton.disabled = true;
    try {
      const invite = await api(`/api/v1/rooms/${seg(roomId)}/invites`, {
        method: 'POST', body: { display_name: name },
      });
      if (roomId !== this.roomId) return;
      this.nameInput.value = '';
      this.fresh = invite.performer_id;
      if (!this.invites.some((i) => i.performer_id === invite.performer_id)) {
        this.invites = [...this.invites, { display_name: name, ...invite }];
      }
      this.render();
    } catch (err) {
      this.notify(`Could not create the invite: ${/** @type {Error} */ (err).message}`, 'error');
    } finally {
      this.createButton.disabled = false;
    }
  }

  render() {
    if (!this.roomId) {
      this.list.replaceChildren();
      return;
    }
    if (!this.invites.length) {
      this.list.replaceChildren(h('li', { className: 'empty' }, 'No invites yet.'));
      return;
    }
    // Newest first: the link just made is where the eye is.
    const ordered = [...this.invites].reverse();
    this.list.replaceChildren(...ordered.map((inv) => this._item(inv)));
  }

  /** @param {Invite} inv */
  _item(inv) {
    const expiry = fmtExpiry(inv.expires_at);
    const state = this.onStage.get(inv.performer_id);
    const removed = /** @type {any} */ (inv).removed === true || this.removed.has(inv.performer_id);
    const status = state
      ? h('span', { className: `chip ${state === 'joined' ? 'ok' : 'warn'}` }, state === 'joined' ? 'on stage' : state)
      : removed ? h('span', { className: 'chip bad' }, 'removed') : null;
    const url = h('code', { className: 'invite-url', dataset: { testid: 'invite-url' }, title: inv.url }, inv.url);
    const copy = /** @type {HTMLButtonElement} */ (h('button', {
      type: 'button', className: 'small', dataset: { testid: 'invite-copy', performerId: inv.performer_id },
      title: 'Copy the invite link',
    }, 'Copy'));
    copy.addEventListener('click', async () => {
      const ok = await copyText(inv.url);
      if (ok) {
        copy.textContent = 'Copied';
        copy.classList.add('on');
      } else {
        selectText(url);
        copy.textContent = 'Ctrl+C';
        this.notify('Copying was blocked: the link is selected, press Ctrl+C', 'error');
      }
      setTimeout(() => {
        copy.textContent = 'Copy';
        copy.classList.remove('on');
      }, 1600);
    });
    return h('li', {
      className: `invite-item${expiry.expired ? ' expired' : ''}${inv.performer_id === this.fresh ? ' fresh' : ''}`,
      dataset: { testid: 'invite-item', performerId: inv.performer_id },
    },
    h('div', { className: 'invite-head' },
      h('span', { className: 'invite-name' }, inv.display_name || inv.performer_id), status, copy),
    url,
    h('div', {
      className: `invite-expiry${expiry.expired ? ' bad' : ''}`, dataset: { testid: 'invite-expiry' },
      title: inv.expires_at ? `Expires ${fmtDateTime(inv.expires_at)}` : '',
    }, expiry.text));
  }
}
