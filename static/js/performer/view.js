// @ts-check
/**
 * What the performer sees outside the tiles: the page state in document.body.dataset.state
 * (lobby, joining, joined, left, error), the status line, the error banner, the room header,
 * the REC indicator, the prompt, the Join/Leave buttons, a studio room's headphones notice and
 * the high-quality upload's line (written by studio/progress.js).
 */
import { byId, hook } from '../common/dom.js';

/** @typedef {'lobby' | 'joining' | 'joined' | 'left' | 'error'} PageState */

export const ui = {
  join: /** @type {HTMLButtonElement} */ (hook('join')),
  leave: /** @type {HTMLButtonElement} */ (hook('leave')),
  accept: /** @type {HTMLButtonElement} */ (hook('consent-accept')),
  prompt: hook('prompt'),
  promptMeta: byId('prompt-meta'),
  rec: hook('rec-indicator'),
  status: hook('status'),
  error: hook('error'),
  localVideo: /** @type {HTMLVideoElement} */ (hook('local-video')),
  levelMeter: hook('level-meter'),
  consent: byId('consent'),
  consentVersion: byId('consent-version'),
  consentText: byId('consent-text'),
  roomName: byId('room-name'),
  selfName: byId('self-name'),
  camera: /** @type {HTMLSelectElement} */ (byId('camera-select')),
  mic: /** @type {HTMLSelectElement} */ (byId('mic-select')),
  grid: byId('remote-grid'),
  headphones: hook('headphones'),
  upload: hook('upload'),
  uploadWarning: hook('upload-warning'),
};

/** @param {PageState} state */
export function setPageState(state) {
  document.body.dataset.state = state;
}

/** @returns {PageState} */
export function pageState() {
  return /** @type {PageState} */ (document.body.dataset.state);
}

/** @param {string} text */
export function setStatus(text) {
  ui.status.textContent = text;
}

/** @returns {string} */
export function statusText() {
  return ui.status.textContent ?? '';
}

/** @param {boolean} on the socket dropped and is coming back */
export function setReconnecting(on) {
  document.body.dataset.reconnecting = on ? '1' : '';
}

/** @param {string} text */
export function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = false;
}

export function clearError() {
  ui.error.hidden = true;
  ui.error.textContent = '';
}

/** @param {boolean} on a studio room: the microphone is recorded without echo cancellation */
export function showHeadphones(on) {
  ui.headphones.hidden = !on;
}

/** @param {boolean} active */
export function setRecording(active) {
  ui.rec.hidden = !active;
}

/**
 * The room header from a `welcome`.
 * @param {{room_name?: string, room_id?: string, display_name?: string}} welcome
 */
export function showRoom(welcome) {
  ui.roomName.textContent = welcome.room_name || welcome.room_id || 'Room';
  ui.selfName.textContent = welcome.display_name ? `You are ${welcome.display_name}` : '';
}

/**
 * Join is offered in the lobby once everything is ready, and after leaving (as Rejoin).
 * @param {boolean} ready consent confirmed, media live, socket open
 */
export function updateButtons(ready) {
  const state = pageState();
  ui.join.disabled = !(state === 'left' || (state === 'lobby' && ready));
  ui.join.textContent = state === 'left' ? 'Rejoin' : 'Join';
  ui.leave.disabled = !(state === 'joining' || state === 'joined');
}

/** @param {{text?: string, target_emotion?: string, intensity?: number | string | null}} msg */
export function showPrompt(msg) {
  ui.prompt.textContent = msg.text ?? '';
  const parts = [];
  if (msg.target_emotion) parts.push(String(msg.target_emotion));
  if (msg.intensity != null && msg.intensity !== '') parts.push(`intensity ${msg.intensity}`);
  ui.promptMeta.textContent = parts.join(' · ');
  ui.promptMeta.hidden = parts.length === 0;
  // Restart the highlight animation so a new prompt is noticed.
  const banner = /** @type {HTMLElement | null} */ (ui.prompt.closest('.prompt'));
  banner?.classList.remove('fresh');
  void banner?.offsetWidth;
  banner?.classList.add('fresh');
}
