// @ts-check
/**
 * Performer page: the join flow. Consent, then camera and microphone, then the publish and
 * subscribe connections, over one signaling socket that survives drops and reloads. In a studio
 * room also the high-quality copy, recorded here and uploaded over HTTP (./studio/).
 * Protocol: docs/signaling.md. Test surface: `window.improv`.
 */
import { captureReport } from '../common/media.js';
import { resumeAudio } from '../common/meter.js';
import { ReconnectingSocket, socketUrl } from '../common/socket.js';
import { RemoteMedia } from '../common/subscribe.js';
import { acceptance, consentMessage, hideConsent, sameText, showConsent, textVerified } from './consent.js';
import { blocking, browserProblems, showBrowserProblems } from './browser_support.js';
import { LocalMedia } from './devices.js';
import { NetworkCheck } from './network_check.js';
import { PublishConnection } from './publish.js';
import { store } from './store.js';
import { CallBudget } from './studio/budget.js';
import { StudioCapture } from './studio/capture.js';
import { ChunkStore } from './studio/chunk_store.js';
import { captureConfig, liveEncoding, needsHeadphones, studioProfile } from './studio/profile.js';
import { showUpload } from './studio/progress.js';
import { Uploader } from './studio/uploader.js';
import { RemoteTiles } from './tiles.js';
import {
  clearError, pageState, setPageState, setReconnecting, setRecording, setStatus, showError,
  showHeadphones, showPrompt, showRoom, ui, updateButtons,
} from './view.js';

/** @typedef {import('./view.js').PageState} PageState */

/** After this long in `joining`, say so instead of spinning silently. */
const JOIN_SLOW_MS = 15000;
/** Signaling retries: 0.5 s, 1 s, then every 2 s, for 30 s after a drop. */
const SIGNAL_BACKOFF_MS = [500, 1000, 2000];
const SIGNAL_RETRY_FOR_MS = 30000;
/** After `leave`, the server closes the socket; we do after this long if it does not. */
const LEAVE_LINGER_MS = 1000;

/** Messages for the server's 44xx close codes. */
const CLOSE_MESSAGES = /** @type {Record<number, string>} */ ({
  4400: 'Protocol error: the server could not understand this page. Reload to try again.',
  4401: 'This invite link is not valid',
  4403: 'The operator removed you from this room',
  4404: 'This room no longer exists',
  4408: 'The connection timed out before joining. Reload to try again.',
  4409: 'This invite is already in use in another window',
  4410: 'This invite has expired',
  4413: 'Protocol error: a message was too large. Reload to try again.',
  4420: 'This page sent the server too many messages. Reload to try again.',
  4429: 'The room is full',
  4499: 'This seat was taken over by another window',
});
/** Close codes after which the seat cannot come back: the resume value is useless. */
const SEAT_GONE = new Set([4401, 4403, 4404, 4410]);

const app = {
  /** @type {string | null} */
  token: null,
  /** @type {any} the latest `welcome` */
  welcome: null,
  /** @type {ReconnectingSocket | null} */
  socket: null,
  /** Whether the current socket sent `resume` (a reload or reconnect). */
  resumed: false,
  /** @type {import('./consent.js').Accepted | null} what the performer accepted on this page */
  accepted: null,
  /** The server has this performer's consent (consent_ok, or welcome said so). */
  consentConfirmed: false,
  /** The performer wants to be in the room: publish whenever everything is ready. */
  wantJoin: false,
};

/** @param {any} msg */
function send(msg) {
  return app.socket?.send(msg) ?? false;
}

/** @returns {RTCIceServer[]} */
function iceServers() {
  return app.welcome?.ice_servers ?? [];
}

const tiles = new RemoteTiles(ui.grid);

const networkCheck = new NetworkCheck({
  send,
  iceServers,
  videoBitrate: () => app.welcome?.media?.max_video_bitrate ?? null,
});

const remote = new RemoteMedia({
  send,
  iceServers,
  onChange: () => tiles.render(remote.peers ?? [], (peer) => remote.streamOf(peer)),
  onError: (err) => setStatus(`Could not receive the others: ${err?.message ?? err}`),
});

const publisher = new PublishConnection({
  send,
  iceServers,
  videoEncoding: (track) => liveEncoding(app.welcome, track),
  onConnected: () => {
    if (pageState() === 'joined') return;
    setState('joined');
    store.setJoined(true);
    setStatus('You are live');
  },
  onFailed: republishAfterFailure,
  onUnstable: () => setStatus('Connection unstable…'),
});

const local = new LocalMedia({
  config: () => captureConfig(app.welcome),
  wanted: () => pageState() !== 'error' && pageState() !== 'left',
  senders: () => publisher.senders(),
  onCapture: (stream, started) => {
    send(captureReport(stream));
    if (!started) publisher.applyEncoding(); // another camera may have another size
    if (started && pageState() === 'lobby') setStatus('Camera and microphone ready');
    updateControls();
  },
  onStatus: setStatus,
  onError: fail,
  onChange: updateControls,
});

// ---- studio rooms: the high-quality copy

const chunkStore = new ChunkStore();

const uploader = new Uploader({
  store: chunkStore,
  token: () => app.token,
  budget: new CallBudget(() => publisher.pc),  // the ceiling: budget.js's default (8 Mbit/s)
  onChange: renderUpload,
  onRevoked: (sessionId) => studio.revoked(sessionId),
});

const studio = new StudioCapture({
  uploader,
  store: chunkStore,
  stream: () => local.stream,
  inCall: () => app.wantJoin && app.consentConfirmed && (pageState() === 'joined' || pageState() === 'joining'),
  onChange: renderUpload,
});

function renderUpload() {
  showUpload({ line: ui.upload, warning: ui.uploadWarning }, uploader.summary(), studio.warning);
}

/** The test/automation surface. */
const improv = {
  get pcs() { return { publish: publisher.pc, subscribe: remote.pc }; },
  /** @returns {import('../common/subscribe.js').Peer[]} */
  get peers() { return remote.peers ?? []; },
  /**
   * RMS level (0..1) of a remote performer's received audio; 0 without a tile.
   * @param {string} performerId
   * @returns {number}
   */
  analyserLevel: (performerId) => tiles.level(performerId),
  /** @returns {number} local microphone RMS level 0..1 */
  localLevel: () => local.level,
  get state() { return document.body.dataset.state; },
  get performerId() { return app.welcome?.performer_id ?? null; },
  /**
   * The high-quality copy: state (idle, recording, uploading, complete, failed, revoked), chunk
   * counts over its parts, each part, the error being retried or that stopped a part.
   */
  get upload() { return { ...uploader.summary(), warning: studio.warning }; },
  /** The pre-join network check: state, path (udp, relay, none), uplinkKbps, verdict, advice. */
  get networkCheck() { return networkCheck.result; },
};
/** @type {any} */ (window).improv = improv;

// ---- page state

/** @param {PageState} state */
function setState(state) {
  setPageState(state);
  updateControls();
}

function updateControls() {
  updateButtons(app.consentConfirmed && local.ready() && !!app.socket?.connected);
  studio.update(); // joined, left, a device changed: maybe start or end a part
}

/** @param {string} text */
function fail(text) {
  showError(text);
  setStatus('');
  setReconnecting(false);
  app.wantJoin = false;
  store.setJoined(false);
  networkCheck.cancel();
  teardownConnections();
  local.stop();
  app.socket?.close();
  setState('error');
}

// ---- signaling

function connect() {
  if (!app.token) return;
  app.socket?.close();
  const token = app.token;
  const socket = new ReconnectingSocket({
    url: socketUrl('/api/v1/signal'),
    hello: () => {
      const resume = store.resume();
      app.resumed = !!resume;
      return resume ? { type: 'hello', token, resume } : { type: 'hello', token };
    },
    backoffMs: SIGNAL_BACKOFF_MS,
    retryForMs: SIGNAL_RETRY_FOR_MS,
  });
  app.socket = socket;
  socket.addEventListener('message', (ev) => {
    const msg = /** @type {CustomEvent} */ (ev).detail;
    handleMessage(msg).catch((err) => setStatus(`Error: ${err?.message ?? err}`));
  });
  socket.addEventListener('reconnecting', () => {
    setReconnecting(true);
    setStatus('reconnecting…');
    updateControls();
  });
  socket.addEventListener('fatal', (ev) => {
    const { code } = /** @type {CustomEvent} */ (ev).detail;
    if (SEAT_GONE.has(code)) store.forgetResume();
    fail(CLOSE_MESSAGES[code] ?? `The server closed the connection (${code})`);
  });
  socket.addEventListener('unreachable', () => fail('The server is not reachable'));
  socket.addEventListener('closed', () => {
    // The server closed normally without us leaving: treat it as having left.
    if (pageState() === 'left') return;
    leave('The server ended the session');
  });
  socket.start();
}

/** @param {any} msg */
async function handleMessage(msg) {
  switch (msg.type) {
    case 'welcome': return onWelcome(msg);
    case 'consent_ok':
      app.consentConfirmed = true;
      updateControls();
      return maybePublish();
    case 'publish_answer': return publisher.answer(msg.sdp);
    case 'probe_answer': return networkCheck.onAnswer(msg);
    case 'subscribe_offer':
    case 'peers':
      return remote.handle(msg);
    case 'recording':
      setRecording(!!msg.active);
      studio.onRecording(msg);
      return;
    case 'prompt': return showPrompt(msg);
    case 'error':
      if (networkCheck.onError(msg)) return; // the network check says it itself
      // Non-fatal: the connection stays open, and so does the page state.
      setStatus(`Server: ${msg.message || msg.code}`);
      return;
    default: return; // pong and anything newer
  }
}

/** @param {any} msg */
async function onWelcome(msg) {
  const first = !app.welcome;
  const wasInRoom = app.wantJoin && (pageState() === 'joined' || pageState() === 'joining');
  app.welcome = msg;
  store.saveResume(msg.performer_id, msg.resume);
  tiles.selfId = msg.performer_id;
  showRoom(msg);
  showHeadphones(needsHeadphones(msg));
  showBrowserProblems(browserProblems({ studio: !!studioProfile(msg) }));
  studio.onWelcome(msg, app.resumed, first);
  setReconnecting(false);
  clearError();
  setStatus('Connected');

  if (wasInRoom) {
    // Back after a drop: the server expects a fresh publish and will send a new subscribe_offer.
    teardownConnections();
    setState('joining');
  }

  const consent = msg.consent ?? {};
  if (sameText(app.accepted, consent)) {
    // Accepted on this page already (reconnect or rejoin): re-send if the server lost it.
    app.consentConfirmed = !!consent.accepted;
    if (!consent.accepted) send(consentMessage(consent));
  } else if (first && app.resumed && consent.accepted && store.wasJoined()) {
    // A reload while in the room: the seat is ours again, carry on without asking twice.
    app.accepted = acceptance(consent);
    app.consentConfirmed = true;
    app.wantJoin = true;
    setState('joining');
  } else {
    app.accepted = null;
    app.consentConfirmed = false;
    showConsent(consent);
    if (pageState() === 'joining') setState('lobby');
  }

  // before the camera and the join: does media reach the server, and how fast can we send
  if (first && pageState() === 'lobby') networkCheck.start();
  if (app.accepted && !local.stream) await local.start();
  else if (local.stream) send(captureReport(local.stream));
  updateControls();
  await maybePublish();
}

async function onAccept() {
  const consent = app.welcome?.consent;
  if (!consent) return;
  ui.accept.disabled = true;
  resumeAudio();
  if (!(await textVerified(consent))) {
    fail('The consent text could not be verified. Please contact the organiser.');
    return;
  }
  app.accepted = acceptance(consent);
  send(consentMessage(consent));
  if (consent.accepted) app.consentConfirmed = true;
  hideConsent();
  setStatus('Starting camera and microphone…');
  await local.start();
  updateControls();
  await maybePublish();
}

// ---- connections

async function maybePublish() {
  if (!app.wantJoin || publisher.pc || !app.consentConfirmed || !local.ready()) return;
  if (!app.socket?.connected || !app.welcome) return;
  setState('joining');
  setStatus('Joining…');
  const pc = await publisher.start(/** @type {MediaStream} */ (local.stream));
  if (!pc) return; // torn down while gathering
  setTimeout(() => {
    if (publisher.pc === pc && pageState() === 'joining') {
      setStatus('Still connecting… (a firewall may be blocking the media connection)');
    }
  }, JOIN_SLOW_MS);
}

function republishAfterFailure() {
  if (!app.wantJoin) return;
  setStatus('Connection lost, rejoining…');
  publisher.close();
  setState('joining');
  // Give the network a moment; the socket's own reconnect handles longer outages.
  setTimeout(() => maybePublish().catch((err) => setStatus(`Error: ${err?.message ?? err}`)), 1000);
}

function teardownConnections() {
  publisher.close();
  remote.reset();
  tiles.clear();
}

// ---- join / leave

async function onJoinClick() {
  resumeAudio();
  clearError();
  networkCheck.cancel(); // its bytes would compete with the call's
  app.wantJoin = true;
  if (pageState() === 'left') {
    // Rejoin: a fresh socket and seat; consent and media follow from the new welcome.
    app.welcome = null;
    app.consentConfirmed = false;
    setState('joining');
    setStatus('Connecting…');
    connect();
    return;
  }
  setState('joining');
  await maybePublish();
}

/** @param {string} [reason] */
function leave(reason) {
  app.wantJoin = false;
  send({ type: 'leave' });
  app.socket?.close(LEAVE_LINGER_MS);
  store.forgetResume();
  teardownConnections();
  local.stop();
  remote.forgetPeers();
  setRecording(false);
  setReconnecting(false);
  setState('left');
  setStatus(reason ?? 'You left the room');
}

// ---- start

function init() {
  setState('lobby');
  ui.accept.addEventListener('click', () => { onAccept().catch((e) => fail(String(e?.message ?? e))); });
  ui.join.addEventListener('click', () => { onJoinClick().catch((e) => setStatus(`Error: ${e?.message ?? e}`)); });
  ui.leave.addEventListener('click', () => leave());
  ui.camera.addEventListener('change', () => { local.switchDevice('video', ui.camera.value); });
  ui.mic.addEventListener('change', () => { local.switchDevice('audio', ui.mic.value); });
  navigator.mediaDevices?.addEventListener('devicechange', () => { if (local.stream) local.fillDeviceLists(); });

  const problems = browserProblems();
  const stop = blocking(problems);
  showBrowserProblems(problems.filter((p) => p !== stop));
  if (stop) {
    fail(stop.message);
    return;
  }
  app.token = store.readInvite();
  if (!app.token) {
    fail('This invite link is not valid');
    return;
  }
  setStatus('Connecting…');
  connect();
}

init();
