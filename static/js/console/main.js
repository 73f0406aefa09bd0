// @ts-check
/**
 * Operator console: sign-in, the operator socket, and the wiring between the panels.
 * Protocol: docs/console-protocol.md; HTTP API: docs/api.md. The socket, the monitor's subscribe
 * side, the level meter and DOM building are the performer page's too (../common/).
 * Page state: document.body.dataset.console = signed-out | ready | reconnecting.
 */
import { ApiError, api, onUnauthorized, seg } from './api.js';
import { clearToken, initialToken, saveToken } from './auth.js';
import { InvitesPanel } from './invites.js';
import { MarkerControls } from './markers.js';
import { Monitor } from './monitor.js';
import { SessionPlayer } from './player.js';
import { PromptForm } from './prompt.js';
import { RecordBar } from './recording.js';
import { RoomsPanel } from './rooms.js';
import { SessionsPanel } from './sessions.js';
import { TakeList } from './takes.js';
import { TileGrid } from './tiles.js';
import { latestUploads } from './uploads.js';
import { items } from './util.js';
import { byId, h, hook } from '../common/dom.js';
import { resumeAudio } from '../common/meter.js';
import { ReconnectingSocket, socketUrl } from '../common/socket.js';

const SELECTED_KEY = 'improv.console.room';
/** Retry delays of the operator socket: 0.5 s, 1 s, 2 s, 4 s, then every 8 s for as long as it takes. */
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];

/** @typedef {import('./rooms.js').Room} Room */

const state = {
  /** @type {Room[]} */
  rooms: [],
  /** @type {string | null} */
  selectedId: sessionStorage.getItem(SELECTED_KEY),
  /** @type {Record<string, Record<string, any>>} room id -> performer id -> stats */
  stats: {},
  /** @type {RTCIceServer[]} */
  iceServers: [],
  /** @type {ReconnectingSocket | null} */
  socket: null,
  signingIn: false,
  rewatchPending: false,
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  rewatchTimer: undefined,
  /** @type {'live' | 'sessions'} */
  tab: 'live',
};

// ---- page state and notices

/** @param {'signed-out' | 'ready' | 'reconnecting'} value */
function setConsole(value) {
  document.body.dataset.console = value;
  const text = byId('conn-text');
  const socketState = state.socket?.state;
  if (value === 'signed-out') text.textContent = 'Signed out';
  else if (value === 'reconnecting') text.textContent = 'Reconnecting…';
  else text.textContent = socketState === 'open' ? 'Live' : 'Connecting…';
  document.body.dataset.ws = socketState ?? 'closed';
}

const toasts = byId('toasts');

/**
 * A short notice in the corner; errors stay a little longer.
 * @param {string} text
 * @param {string} [kind] ok | warn | error | info
 */
function notify(text, kind = 'info') {
  const el = h('div', { className: `toast toast-${kind}`, dataset: { testid: 'toast', kind }, role: kind === 'error' ? 'alert' : 'status' }, text);
  toasts.append(el);
  while (toasts.children.length > 4) toasts.firstElementChild?.remove();
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000);
}

// ---- panels

const tiles = new TileGrid(byId('tile-grid'), { onRemove: removePerformer });

const monitor = new Monitor({
  tiles,
  send: (msg) => state.socket?.send(msg) ?? false,
  iceServers: () => state.iceServers,
  onStatus: (text) => { byId('monitor-status').textContent = text; },
});

const roomsPanel = new RoomsPanel({
  list: byId('room-list'),
  form: /** @type {HTMLFormElement} */ (byId('room-form')),
  nameInput: /** @type {HTMLInputElement} */ (hook('room-create-name')),
  profileSelect: /** @type {HTMLSelectElement} */ (hook('room-create-profile')),
  createButton: /** @type {HTMLButtonElement} */ (hook('room-create')),
  onSelect: (id) => selectRoom(id),
  onChanged: () => { refreshRooms(); },
  notify,
});

const invites = new InvitesPanel({
  section: byId('invites'),
  title: byId('invites-title'),
  list: byId('invite-list'),
  form: /** @type {HTMLFormElement} */ (byId('invite-form')),
  nameInput: /** @type {HTMLInputElement} */ (hook('invite-name')),
  createButton: /** @type {HTMLButtonElement} */ (hook('invite-create')),
  notify,
});

const takes = new TakeList({ list: hook('take-list'), title: byId('takes-title'), count: byId('takes-count') });

const sessions = new SessionsPanel({
  list: byId('session-list'),
  refresh: /** @type {HTMLButtonElement} */ (byId('sessions-refresh')),
  onOpen: (id) => openSession(id),
  notify,
});

const player = new SessionPlayer({ root: byId('player'), notify });

/** @type {MarkerControls | null} */
let markers = null;
/** @type {PromptForm | null} */
let promptForm = null;

const recordBar = new RecordBar({
  toggle: /** @type {HTMLButtonElement} */ (hook('record-toggle')),
  state: hook('record-state'),
  elapsed: hook('record-elapsed'),
  session: byId('record-session'),
  bar: byId('record-bar'),
  notify,
  onStopped: () => { if (sessions.loaded || state.tab === 'sessions') sessions.load(); },
  onChange: () => markers?.update(),
});

markers = new MarkerControls({
  buttons: {
    scene: /** @type {HTMLButtonElement} */ (hook('marker-scene')),
    take: /** @type {HTMLButtonElement} */ (hook('marker-take')),
    cut: /** @type {HTMLButtonElement} */ (hook('marker-cut')),
    note: /** @type {HTMLButtonElement} */ (hook('marker-note')),
  },
  note: /** @type {HTMLInputElement} */ (hook('note-text')),
  roomId: () => state.selectedId,
  active: () => document.body.dataset.console !== 'signed-out' && state.tab === 'live',
  recorder: recordBar,
  takes,
  notify,
});

promptForm = new PromptForm({
  form: /** @type {HTMLFormElement} */ (byId('prompt-form')),
  text: /** @type {HTMLTextAreaElement} */ (hook('prompt-text')),
  emotion: /** @type {HTMLInputElement} */ (hook('prompt-emotion')),
  intensity: /** @type {HTMLInputElement} */ (hook('prompt-intensity')),
  intensityOut: byId('intensity-out'),
  send: /** @type {HTMLButtonElement} */ (hook('prompt-send')),
  roomId: () => state.selectedId,
  takes,
  notify,
});

// ---- rooms and selection

/** @returns {Room | null} */
function selectedRoom() {
  return state.rooms.find((r) => r.room_id === state.selectedId) ?? null;
}

/**
 * @param {Room[]} rooms
 * @param {boolean} fromServerPush
 */
function applyRooms(rooms, fromServerPush) {
  const before = new Map(state.rooms.map((r) => [r.room_id, r]));
  state.rooms = rooms.filter((r) => r && r.room_id);
  // A recording that ended anywhere means a new session in the list.
  const ended = [...before.values()].some((r) => r.recording
    && !state.rooms.find((x) => x.room_id === r.room_id)?.recording);
  if (ended && (sessions.loaded || state.tab === 'sessions')) sessions.load();

  if (state.selectedId && !selectedRoom()) {
    if (before.has(state.selectedId) || fromServerPush) {
      if (before.has(state.selectedId)) notify('The selected room was closed', 'warn');
    }
    selectRoom(null);
    return;
  }
  renderSelected();
  if (fromServerPush) invites.reloadSoon();
}

/** @param {string | null} id */
function selectRoom(id) {
  if (id && !state.rooms.some((r) => r.room_id === id)) {
    // Just created: it shows up with the next push; remember it meanwhile.
    state.rooms = [...state.rooms, { room_id: id, name: id, performers: [], recording: null }];
  }
  state.selectedId = id;
  if (id) sessionStorage.setItem(SELECTED_KEY, id);
  else sessionStorage.removeItem(SELECTED_KEY);
  monitor.watch(id);
  const s = id ? state.stats[id] : null;
  if (s) tiles.setStats(s);
  renderSelected();
}

function renderSelected() {
  const room = selectedRoom();
  roomsPanel.render(state.rooms, state.selectedId);
  invites.setRoom(room);
  recordBar.setRoom(room);
  takes.setRoom(room);
  monitor.setRoomPerformers(room?.performers ?? []);
  tiles.setUploads(latestUploads(room?.uploads));
  markers?.update();
  promptForm?.update();
  byId('live-room-name').textContent = room ? (room.name || room.room_id) : 'No room selected';
  byId('grid-empty').textContent = room
    ? 'Nobody is in this room yet. Create an invite on the left and send the link.'
    : 'Select or create a room on the left.';
  document.body.dataset.room = room ? room.room_id : '';
}

async function refreshRooms() {
  try {
    const res = await api('/api/v1/rooms');
    applyRooms(items(res), false);
  } catch {
    // the socket push covers it; a 401 signs out on its own
  }
}

/**
 * @param {string} performerId
 * @param {string} name
 */
async function removePerformer(performerId, name) {
  const roomId = state.selectedId;
  if (!roomId) return;
  if (!confirm(`Remove ${name} from the room? Their page is closed and this invite cannot rejoin.`)) return;
  try {
    await api(`/api/v1/rooms/${seg(roomId)}/performers/${seg(performerId)}`, { method: 'DELETE' });
    notify(`${name} was removed from the room`, 'ok');
    if (roomId === state.selectedId) invites.markRemoved(performerId);
  } catch (err) {
    notify(`Could not remove ${name}: ${/** @type {Error} */ (err).message}`, 'error');
  }
}

// ---- the operator socket

/** @param {string} token */
function startSocket(token) {
  state.socket?.close();
  const socket = new ReconnectingSocket({
    url: socketUrl('/api/v1/operator'),
    hello: () => ({ type: 'hello', token }),
    backoffMs: BACKOFF_MS,
  });
  state.socket = socket;
  socket.addEventListener('state', () => {
    if (state.socket !== socket || document.body.dataset.console === 'signed-out') return;
    setConsole(socket.state === 'reconnecting' ? 'reconnecting' : 'ready');
  });
  socket.addEventListener('welcome', (ev) => {
    const msg = /** @type {CustomEvent} */ (ev).detail;
    if (Array.isArray(msg?.ice_servers)) state.iceServers = msg.ice_servers;
    // The server forgot our monitor. Watch again once the `rooms` that follows the welcome
    // says whether the room still exists (a fallback timer in case it does not come).
    state.rewatchPending = true;
    clearTimeout(state.rewatchTimer);
    state.rewatchTimer = setTimeout(rewatchNow, 1500);
  });
  socket.addEventListener('message', (ev) => onMessage(/** @type {CustomEvent} */ (ev).detail));
  /** The server ended the socket for good (a 44xx code, or 1000): no retry. */
  const ended = (/** @type {Event} */ ev) => {
    const { code, reason } = /** @type {CustomEvent} */ (ev).detail;
    if (state.socket !== socket) return;
    if (code === 4401) signOut('The operator token was not accepted. Check it and sign in again.');
    else signOut(`The server closed the console connection (${code}${reason ? `: ${reason}` : ''}).`);
  };
  socket.addEventListener('fatal', ended);
  socket.addEventListener('closed', ended);
  socket.start();
}

function rewatchNow() {
  if (!state.rewatchPending) return;
  state.rewatchPending = false;
  clearTimeout(state.rewatchTimer);
  monitor.rewatch();
}

/** @param {any} msg */
function onMessage(msg) {
  switch (msg.type) {
    case 'welcome':
      if (Array.isArray(msg.ice_servers)) state.iceServers = msg.ice_servers;
      return;
    case 'rooms':
      applyRooms(items(msg.rooms), true);
      if (state.rewatchPending) rewatchNow();
      return;
    case 'stats':
      if (!msg.room_id) return;
      state.stats[msg.room_id] = msg.performers ?? {};
      if (msg.room_id === state.selectedId) tiles.setStats(state.stats[msg.room_id]);
      return;
    case 'subscribe_offer':
    case 'peers':
    case 'watch_ended':
      monitor.handle(msg);
      return;
    case 'error':
      notify(`Server: ${msg.message || msg.code || 'error'}`, 'error');
      return;
    default:
      return; // pong and anything newer
  }
}

// ---- sign in and out

const signin = {
  form: /** @type {HTMLFormElement} */ (byId('signin-form')),
  token: /** @type {HTMLInputElement} */ (hook('signin-token')),
  submit: /** @type {HTMLButtonElement} */ (hook('signin-submit')),
  error: hook('signin-error'),
};

/** @param {string} text */
function showSigninError(text) {
  signin.error.textContent = text;
  signin.error.hidden = !text;
}

/** @param {string} token */
async function signIn(token) {
  state.signingIn = true;
  signin.submit.disabled = true;
  signin.submit.textContent = 'Signing in…';
  showSigninError('');
  try {
    const res = await api('/api/v1/rooms', { token });
    saveToken(token);
    signin.token.value = '';
    setConsole('ready');
    // Back to the room this tab had open (applyRooms drops it if it was closed meanwhile).
    monitor.watch(state.selectedId);
    applyRooms(items(res), false);
    startSocket(token);
  } catch (err) {
    const e = /** @type {ApiError} */ (err);
    clearToken();
    if (e.status === 401 || e.status === 403) showSigninError('Wrong token: this is not the operator token.');
    else if (e.status === 0) showSigninError('The server is not reachable. Is it running?');
    else showSigninError(`Could not sign in: ${e.message}`);
    setConsole('signed-out');
    signin.token.focus();
  } finally {
    state.signingIn = false;
    signin.submit.disabled = false;
    signin.submit.textContent = 'Sign in';
  }
}

/** @param {string} [reason] shown on the sign-in card */
function signOut(reason = '') {
  const socket = state.socket;
  state.socket = null;
  socket?.close();
  clearToken();
  monitor.watch(null);
  player.close();
  state.rooms = [];
  state.stats = {};
  renderSelected();
  setConsole('signed-out');
  showSigninError(reason);
  signin.token.focus();
}

onUnauthorized(() => {
  if (state.signingIn || document.body.dataset.console === 'signed-out') return;
  signOut('The operator token is no longer accepted. Sign in again.');
});

signin.form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  resumeAudio();
  const token = signin.token.value.trim();
  if (!token) {
    showSigninError('Paste the operator token.');
    return;
  }
  signIn(token);
});

byId('signout').addEventListener('click', () => {
  const keep = state.selectedId;
  signOut('');
  if (keep) sessionStorage.removeItem(SELECTED_KEY);
  state.selectedId = null;
});

// ---- tabs

/** @param {'live' | 'sessions'} tab */
function setTab(tab) {
  state.tab = tab;
  document.body.dataset.tab = tab;
  for (const b of document.querySelectorAll('.tabs [role="tab"]')) {
    const btn = /** @type {HTMLElement} */ (b);
    btn.setAttribute('aria-selected', String(btn.dataset.tab === tab));
  }
  if (tab === 'sessions') sessions.load();
  else if (player.playing) player.pause();
}

for (const b of document.querySelectorAll('.tabs [role="tab"]')) {
  b.addEventListener('click', () => setTab(/** @type {'live' | 'sessions'} */ (/** @type {HTMLElement} */ (b).dataset.tab)));
}

/** @param {string} id */
function openSession(id) {
  sessions.setActive(id);
  player.open(id);
}

// Web Audio needs a gesture under strict autoplay policies: resume on the first one.
for (const type of ['pointerdown', 'keydown']) document.addEventListener(type, resumeAudio, { once: true, capture: true });

// ---- debugging surface

/** @type {any} */ (window).console_ = {
  get ws() { return state.socket?.state ?? 'closed'; },
  get socket() { return state.socket; },
  get rooms() { return state.rooms; },
  get selectedRoom() { return selectedRoom(); },
  /** stats of the selected room: performer id -> the last `stats` entry */
  get stats() { return (state.selectedId && state.stats[state.selectedId]) || {}; },
  get statsByRoom() { return state.stats; },
  get levels() { return tiles.levels(); },
  get monitor() {
    return { roomId: monitor.roomId, pc: monitor.pc, connectionState: monitor.connectionState, peers: monitor.peers };
  },
  get recording() { return { state: recordBar.state, elapsed_s: recordBar.elapsed(), ...(recordBar.recording ?? {}) }; },
  player,
};

// ---- start

setConsole('signed-out');
renderSelected();
const token = initialToken();
if (token) {
  // Signing in with a kept token: no flash of the sign-in card.
  document.body.dataset.pending = '1';
  signIn(token).finally(() => { delete document.body.dataset.pending; });
} else {
  signin.token.focus();
}

// A console link pasted into this tab changes only the fragment: no reload, so look here too.
window.addEventListener('hashchange', () => {
  if (!new URLSearchParams(location.hash.slice(1)).has('token')) return;
  const fresh = initialToken();
  if (!fresh) return;
  if (state.socket) {
    state.socket.close();
    state.socket = null;
  }
  signIn(fresh);
});
