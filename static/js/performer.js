// @ts-check
/**
 * Performer page controller: consent, local media, publish and subscribe peer connections,
 * and the page state in document.body.dataset.state (lobby, joining, joined, left, error).
 * Protocol: docs/signaling.md. Hooks: SPEC.md "Performer page".
 */
import { SignalingClient, signalUrl } from './signaling.js';
import {
  captureReport, getLocalMedia, getTrack, listDevices, LevelMeter, mediaConfig, meterFraction,
  resumeAudio,
} from './media.js';
import { TileManager } from './subscriber.js';

/** @typedef {'lobby' | 'joining' | 'joined' | 'left' | 'error'} PageState */

const GATHER_TIMEOUT_MS = 3000;
/** After this long in `joining`, say so instead of spinning silently. */
const JOIN_SLOW_MS = 15000;

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

/** @param {string} testid */
function hook(testid) {
  const el = document.querySelector(`[data-testid="${testid}"]`);
  if (!el) throw new Error(`missing element ${testid}`);
  return /** @type {HTMLElement} */ (el);
}

/** @param {string} id */
function byId(id) {
  return /** @type {HTMLElement} */ (document.getElementById(id));
}

const ui = {
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
  levelFill: byId('level-fill'),
  consent: byId('consent'),
  consentVersion: byId('consent-version'),
  consentText: byId('consent-text'),
  roomName: byId('room-name'),
  selfName: byId('self-name'),
  camera: /** @type {HTMLSelectElement} */ (byId('camera-select')),
  mic: /** @type {HTMLSelectElement} */ (byId('mic-select')),
  grid: byId('remote-grid'),
};

// ---- session storage: the invite survives a reload (the fragment is removed), and so does
// the resume value, keyed by performer id as the server hands it out.

const store = {
  /** @returns {string | null} */
  readInvite() {
    const params = new URLSearchParams(location.hash.slice(1));
    const fromLink = params.get('invite');
    if (fromLink) {
      // A new link replaces whatever this tab held before.
      if (fromLink !== sessionStorage.getItem('improv.invite')) {
        sessionStorage.removeItem('improv.performer');
        sessionStorage.removeItem('improv.joined');
      }
      sessionStorage.setItem('improv.invite', fromLink);
      history.replaceState(null, '', location.pathname + location.search);
      return fromLink;
    }
    return sessionStorage.getItem('improv.invite');
  },
  /** @returns {string | null} */
  resume() {
    const pid = sessionStorage.getItem('improv.performer');
    return pid ? sessionStorage.getItem(`improv.resume.${pid}`) : null;
  },
  /** @param {string} performerId @param {string | null | undefined} resume */
  saveResume(performerId, resume) {
    sessionStorage.setItem('improv.performer', performerId);
    if (resume) sessionStorage.setItem(`improv.resume.${performerId}`, resume);
  },
  forgetResume() {
    const pid = sessionStorage.getItem('improv.performer');
    if (pid) sessionStorage.removeItem(`improv.resume.${pid}`);
    sessionStorage.removeItem('improv.joined');
  },
  /** @param {boolean} on */
  setJoined(on) {
    if (on) sessionStorage.setItem('improv.joined', '1');
    else sessionStorage.removeItem('improv.joined');
  },
  wasJoined() {
    return sessionStorage.getItem('improv.joined') === '1';
  },
};

// ---- page state

const app = {
  /** @type {string | null} */
  token: null,
  /** @type {any} the latest `welcome` */
  welcome: null,
  /** @type {SignalingClient | null} */
  signaling: null,
  /** Whether the current socket sent `resume` (a reload or reconnect). */
  resumed: false,
  /** @type {{version: any, text_sha256: string} | null} what the performer accepted on this page */
  accepted: null,
  /** The server has this performer's consent (consent_ok, or welcome said so). */
  consentConfirmed: false,
  /** @type {MediaStream | null} */
  stream: null,
  /** @type {Promise<void> | null} a getUserMedia in flight */
  mediaPending: null,
  /** @type {LevelMeter | null} */
  localMeter: null,
  /** @type {{audio?: string, video?: string}} chosen device ids */
  devices: {},
  /** The performer wants to be in the room: publish whenever everything is ready. */
  wantJoin: false,
  /** @type {{publish: RTCPeerConnection | null, subscribe: RTCPeerConnection | null}} */
  pcs: { publish: null, subscribe: null },
  /** Bumped on teardown so late async steps of an old negotiation drop their result. */
  generation: 0,
  /** @type {Promise<void>} subscribe negotiations run one after another */
  subChain: Promise.resolve(),
};

const tiles = new TileManager(ui.grid);

/** The test/automation surface. */
const improv = {
  pcs: app.pcs,
  /** @type {import('./subscriber.js').Peer[]} */
  peers: [],
  /**
   * RMS level (0..1) of a remote performer's received audio; 0 without a tile.
   * @param {string} performerId
   * @returns {number}
   */
  analyserLevel: (performerId) => tiles.level(performerId),
  /** @returns {number} local microphone RMS level 0..1 */
  localLevel: () => app.localMeter?.level ?? 0,
  get state() { return document.body.dataset.state; },
  get performerId() { return app.welcome?.performer_id ?? null; },
};
/** @type {any} */ (window).improv = improv;

/** @param {PageState} state */
function setState(state) {
  document.body.dataset.state = state;
  updateControls();
}

/** @returns {PageState} */
function getState() {
  return /** @type {PageState} */ (document.body.dataset.state);
}

/** @param {string} text */
function setStatus(text) {
  ui.status.textContent = text;
}

/** @param {string} text */
function fail(text) {
  ui.error.textContent = text;
  ui.error.hidden = false;
  setStatus('');
  document.body.dataset.reconnecting = '';
  app.wantJoin = false;
  store.setJoined(false);
  teardownPcs();
  stopLocalMedia();
  app.signaling?.close();
  setState('error');
}

function clearError() {
  ui.error.hidden = true;
  ui.error.textContent = '';
}

function mediaReady() {
  const s = app.stream;
  return !!s && s.getAudioTracks().length > 0 && s.getVideoTracks().length > 0
    && s.getTracks().every((t) => t.readyState === 'live');
}

function updateControls() {
  const state = getState();
  const ready = app.consentConfirmed && mediaReady() && !!app.signaling?.connected;
  ui.join.disabled = !(state === 'left' || (state === 'lobby' && ready));
  ui.join.textContent = state === 'left' ? 'Rejoin' : 'Join';
  ui.leave.disabled = !(state === 'joining' || state === 'joined');
}

// ---- signaling

function connect() {
  if (!app.token) return;
  app.signaling?.close();
  const client = new SignalingClient({
    url: signalUrl(),
    token: app.token,
    getResume: () => {
      const resume = store.resume();
      app.resumed = !!resume;
      return resume;
    },
  });
  app.signaling = client;
  client.addEventListener('message', (ev) => {
    const msg = /** @type {CustomEvent} */ (ev).detail;
    handleMessage(msg).catch((err) => setStatus(`Error: ${err?.message ?? err}`));
  });
  client.addEventListener('reconnecting', () => {
    document.body.dataset.reconnecting = '1';
    setStatus('reconnecting…');
    updateControls();
  });
  client.addEventListener('fatal', (ev) => {
    const { code } = /** @type {CustomEvent} */ (ev).detail;
    if (code === 4401 || code === 4403 || code === 4404 || code === 4410) store.forgetResume();
    fail(CLOSE_MESSAGES[code] ?? `The server closed the connection (${code})`);
  });
  client.addEventListener('unreachable', () => fail('The server is not reachable'));
  client.addEventListener('closed', () => {
    // The server closed normally without us leaving: treat it as having left.
    if (getState() === 'left') return;
    leave('The server ended the session');
  });
  client.start();
}

/** @param {any} msg */
function send(msg) {
  return app.signaling?.send(msg) ?? false;
}

/** @param {any} msg */
async function handleMessage(msg) {
  switch (msg.type) {
    case 'welcome': return onWelcome(msg);
    case 'consent_ok':
      app.consentConfirmed = true;
      updateControls();
      return maybePublish();
    case 'publish_answer': return onPublishAnswer(msg);
    case 'subscribe_offer': return onSubscribeOffer(msg);
    case 'peers': return onPeers(msg.peers);
    case 'recording':
      ui.rec.hidden = !msg.active;
      return;
    case 'prompt': return showPrompt(msg);
    case 'error':
      // Non-fatal: the connection stays open, and so does the page state.
      setStatus(`Server: ${msg.message || msg.code}`);
      return;
    default: return; // pong and anything newer
  }
}

/** @param {any} msg */
async function onWelcome(msg) {
  const first = !app.welcome;
  const wasInRoom = app.wantJoin && (getState() === 'joined' || getState() === 'joining');
  app.welcome = msg;
  store.saveResume(msg.performer_id, msg.resume);
  tiles.selfId = msg.performer_id;
  ui.roomName.textContent = msg.room_name || msg.room_id || 'Room';
  ui.selfName.textContent = msg.display_name ? `You are ${msg.display_name}` : '';
  document.body.dataset.reconnecting = '';
  clearError();
  setStatus('Connected');

  if (wasInRoom) {
    // Back after a drop: the server expects a fresh publish and will send a new subscribe_offer.
    teardownPcs();
    setState('joining');
  }

  const consent = msg.consent ?? {};
  const sameText = !!app.accepted && app.accepted.version === consent.version
    && app.accepted.text_sha256 === consent.text_sha256;
  if (sameText) {
    // Accepted on this page already (reconnect or rejoin): re-send if the server lost it.
    app.consentConfirmed = !!consent.accepted;
    if (!consent.accepted) send({ type: 'consent', version: consent.version, text_sha256: consent.text_sha256 });
  } else if (first && app.resumed && consent.accepted && store.wasJoined()) {
    // A reload while in the room: the seat is ours again, carry on without asking twice.
    app.accepted = { version: consent.version, text_sha256: consent.text_sha256 };
    app.consentConfirmed = true;
    app.wantJoin = true;
    setState('joining');
  } else {
    app.accepted = null;
    app.consentConfirmed = false;
    showConsent(consent);
  }

  if (app.accepted && !app.stream) await startMedia();
  else if (app.stream) send(captureReport(app.stream));
  updateControls();
  await maybePublish();
}

/** @param {any} consent */
function showConsent(consent) {
  ui.consentVersion.textContent = consent.version != null ? `version ${consent.version}` : '';
  ui.consentText.textContent = consent.text ?? '';
  ui.consent.hidden = false;
  ui.accept.disabled = false;
  if (getState() === 'joining') setState('lobby');
}

/**
 * Hex SHA-256 of a string's UTF-8 bytes.
 * @param {string} text
 * @returns {Promise<string>}
 */
async function sha256Hex(text) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

async function onAccept() {
  const consent = app.welcome?.consent;
  if (!consent) return;
  ui.accept.disabled = true;
  resumeAudio();
  // Never agree to a text other than the one shown: check the server's hash ourselves.
  const digest = await sha256Hex(consent.text ?? '');
  if (digest !== String(consent.text_sha256).toLowerCase()) {
    fail('The consent text could not be verified. Please contact the organiser.');
    return;
  }
  app.accepted = { version: consent.version, text_sha256: consent.text_sha256 };
  send({ type: 'consent', version: consent.version, text_sha256: consent.text_sha256 });
  if (consent.accepted) app.consentConfirmed = true;
  ui.consent.hidden = true;
  setStatus('Starting camera and microphone…');
  await startMedia();
  updateControls();
  await maybePublish();
}

// ---- local media

function startMedia() {
  if (!app.mediaPending) {
    app.mediaPending = acquireMedia().finally(() => { app.mediaPending = null; });
  }
  return app.mediaPending;
}

async function acquireMedia() {
  const media = mediaConfig(app.welcome?.media);
  let stream;
  try {
    stream = await getLocalMedia(media, { audioDeviceId: app.devices.audio, videoDeviceId: app.devices.video });
  } catch (err) {
    const e = /** @type {DOMException} */ (err);
    if (e.name === 'OverconstrainedError' && (app.devices.audio || app.devices.video)) {
      // A remembered device went away: fall back to the defaults once.
      app.devices = {};
      return acquireMedia();
    }
    if (e.name === 'NotAllowedError' || e.name === 'SecurityError') fail('Camera or microphone access was denied');
    else if (e.name === 'NotFoundError') fail('No camera or microphone was found');
    else if (e.name === 'NotReadableError') fail('The camera or microphone is in use by another application');
    else fail(`Could not start camera or microphone: ${e.message || e.name}`);
    return;
  }
  if (getState() === 'error' || getState() === 'left') {
    stream.getTracks().forEach((t) => t.stop()); // the page moved on while we waited
    return;
  }
  app.stream = stream;
  ui.localVideo.srcObject = stream;
  watchTracks(stream);
  if (!app.localMeter) {
    app.localMeter = new LevelMeter((level) => {
      ui.levelMeter.dataset.level = level.toFixed(4);
      ui.levelFill.style.width = `${Math.round(meterFraction(level) * 100)}%`;
    });
  }
  app.localMeter.setStream(stream);
  await fillDeviceLists();
  send(captureReport(stream));
  setStatus(getState() === 'lobby' ? 'Camera and microphone ready' : ui.status.textContent ?? '');
  updateControls();
}

/** @param {MediaStream} stream */
function watchTracks(stream) {
  for (const track of stream.getTracks()) {
    track.onended = () => {
      if (app.stream?.getTracks().includes(track)) {
        setStatus(`Your ${track.kind === 'audio' ? 'microphone' : 'camera'} stopped. Pick another device.`);
        updateControls();
      }
    };
  }
}

function stopLocalMedia() {
  app.stream?.getTracks().forEach((t) => t.stop());
  app.stream = null;
  ui.localVideo.srcObject = null;
  app.localMeter?.setStream(null);
}

async function fillDeviceLists() {
  let lists;
  try {
    lists = await listDevices();
  } catch {
    return;
  }
  const current = {
    audio: app.stream?.getAudioTracks()[0]?.getSettings().deviceId,
    video: app.stream?.getVideoTracks()[0]?.getSettings().deviceId,
  };
  fillSelect(ui.camera, lists.cameras, current.video, 'Camera');
  fillSelect(ui.mic, lists.microphones, current.audio, 'Microphone');
}

/**
 * @param {HTMLSelectElement} select
 * @param {MediaDeviceInfo[]} devices
 * @param {string | undefined} selected
 * @param {string} fallback label prefix when the browser hides labels
 */
function fillSelect(select, devices, selected, fallback) {
  select.replaceChildren(...devices.map((d, i) => {
    const opt = document.createElement('option');
    opt.value = d.deviceId;
    opt.textContent = d.label || `${fallback} ${i + 1}`;
    opt.selected = d.deviceId === selected;
    return opt;
  }));
  select.disabled = devices.length === 0;
}

/**
 * Switch one device; when already publishing, swap the track on the live sender.
 * @param {'audio' | 'video'} kind
 * @param {string} deviceId
 */
async function switchDevice(kind, deviceId) {
  const stream = app.stream;
  if (!stream || !deviceId) return;
  app.devices[kind] = deviceId;
  const old = kind === 'audio' ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
  // Many cameras cannot be opened twice: release the old one first.
  if (kind === 'video') old?.stop();
  let track;
  try {
    track = await getTrack(kind, mediaConfig(app.welcome?.media), deviceId);
  } catch (err) {
    setStatus(`Could not switch ${kind === 'audio' ? 'microphone' : 'camera'}: ${/** @type {Error} */ (err).message}`);
    delete app.devices[kind];
    if (kind === 'video') track = await getTrack(kind, mediaConfig(app.welcome?.media), '').catch(() => undefined);
    if (!track) { updateControls(); return; }
  }
  if (app.stream !== stream) { track.stop(); return; } // left meanwhile
  if (old) { old.stop(); stream.removeTrack(old); }
  stream.addTrack(track);
  watchTracks(stream);
  if (kind === 'audio') app.localMeter?.setStream(stream);
  else ui.localVideo.srcObject = stream;
  const sender = app.pcs.publish?.getSenders().find((s) => s.track === old || s.track?.kind === kind);
  await sender?.replaceTrack(track);
  send(captureReport(stream));
  updateControls();
}

// ---- publish

/** @returns {RTCConfiguration} */
function pcConfig() {
  return { iceServers: app.welcome?.ice_servers ?? [], bundlePolicy: 'max-bundle' };
}

/**
 * Limit a transceiver to the codecs the server accepts, where the browser lets us.
 * @param {RTCRtpTransceiver} transceiver
 * @param {'audio' | 'video'} kind
 * @param {string[]} mimeTypes lower case
 */
function preferCodecs(transceiver, kind, mimeTypes) {
  if (!transceiver.setCodecPreferences) return;
  // Chrome validates preferences against receiver capabilities, older ones against sender's.
  for (const caps of [RTCRtpReceiver.getCapabilities(kind), RTCRtpSender.getCapabilities(kind)]) {
    const codecs = (caps?.codecs ?? []).filter((c) => mimeTypes.includes(c.mimeType.toLowerCase()));
    if (!codecs.some((c) => !c.mimeType.toLowerCase().endsWith('/rtx'))) continue;
    try {
      transceiver.setCodecPreferences(codecs);
      return;
    } catch {
      // try the next capability list; the server drops other codecs anyway
    }
  }
}

/**
 * Resolve when ICE gathering is complete, or after `ms` (we send what we have).
 * @param {RTCPeerConnection} pc
 * @param {number} ms
 */
function gatheringDone(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== 'complete') return;
      pc.removeEventListener('icegatheringstatechange', done);
      clearTimeout(timer);
      resolve(undefined);
    };
    const timer = setTimeout(() => {
      pc.removeEventListener('icegatheringstatechange', done);
      resolve(undefined);
    }, ms);
    pc.addEventListener('icegatheringstatechange', done);
  });
}

function maxVideoBitrate() {
  return mediaConfig(app.welcome?.media).max_video_bitrate;
}

async function maybePublish() {
  if (!app.wantJoin || app.pcs.publish || !app.consentConfirmed || !mediaReady()) return;
  if (!app.signaling?.connected || !app.welcome) return;
  await publish();
}

async function publish() {
  const stream = /** @type {MediaStream} */ (app.stream);
  const gen = app.generation;
  const pc = new RTCPeerConnection(pcConfig());
  app.pcs.publish = pc;
  setState('joining');
  setStatus('Joining…');

  const audio = pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly', streams: [stream] });
  const video = pc.addTransceiver(stream.getVideoTracks()[0], {
    direction: 'sendonly',
    streams: [stream],
    sendEncodings: [{ maxBitrate: maxVideoBitrate() }],
  });
  preferCodecs(audio, 'audio', ['audio/opus']);
  preferCodecs(video, 'video', ['video/vp8', 'video/rtx']);

  const onChange = () => checkPublishState(pc);
  pc.addEventListener('connectionstatechange', onChange);
  pc.addEventListener('iceconnectionstatechange', onChange);

  await pc.setLocalDescription(await pc.createOffer());
  await gatheringDone(pc, GATHER_TIMEOUT_MS);
  if (gen !== app.generation || app.pcs.publish !== pc) return; // torn down while gathering
  send({ type: 'publish', sdp: pc.localDescription?.sdp });
  setTimeout(() => {
    if (app.pcs.publish === pc && getState() === 'joining') {
      setStatus('Still connecting… (a firewall may be blocking the media connection)');
    }
  }, JOIN_SLOW_MS);
}

/**
 * Joined once the publish PC is connected (or its ICE is, after the answer was applied).
 * @param {RTCPeerConnection} pc
 */
function checkPublishState(pc) {
  if (app.pcs.publish !== pc) return;
  const ice = pc.iceConnectionState;
  if (pc.connectionState === 'connected' || (pc.remoteDescription && (ice === 'connected' || ice === 'completed'))) {
    if (getState() !== 'joined') {
      setState('joined');
      store.setJoined(true);
      setStatus('You are live');
    }
  } else if (pc.connectionState === 'failed') {
    republishAfterFailure(pc);
  } else if (pc.connectionState === 'disconnected') {
    setStatus('Connection unstable…');
  }
}

/** @param {RTCPeerConnection} pc */
function republishAfterFailure(pc) {
  if (app.pcs.publish !== pc || !app.wantJoin) return;
  setStatus('Connection lost, rejoining…');
  pc.close();
  app.pcs.publish = null;
  setState('joining');
  // Give the network a moment; the socket's own reconnect handles longer outages.
  setTimeout(() => maybePublish().catch((err) => setStatus(`Error: ${err?.message ?? err}`)), 1000);
}

/** @param {any} msg */
async function onPublishAnswer(msg) {
  const pc = app.pcs.publish;
  if (!pc || pc.signalingState !== 'have-local-offer') return;
  await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
  // The relay forwards our packets as they are, so the cap must be set here, at the source.
  const sender = pc.getSenders().find((s) => s.track?.kind === 'video');
  if (sender) {
    const params = sender.getParameters();
    if (!params.encodings?.length) params.encodings = [{}];
    params.encodings[0].maxBitrate = maxVideoBitrate();
    await sender.setParameters(params).catch(() => {});
  }
  checkPublishState(pc); // ICE may already be up
}

// ---- subscribe

/** @param {any[]} peers */
function onPeers(peers) {
  improv.peers = Array.isArray(peers) ? peers : [];
  tiles.setPeers(improv.peers);
}

/** @param {any} msg */
function onSubscribeOffer(msg) {
  if (Array.isArray(msg.peers)) onPeers(msg.peers);
  const gen = app.generation;
  // Offers are answered strictly in order: a re-offer waits for the previous answer.
  app.subChain = app.subChain
    .then(() => answerSubscribe(msg.sdp, gen))
    .catch((err) => setStatus(`Could not receive the others: ${err?.message ?? err}`));
  return app.subChain;
}

/**
 * @param {string} sdp
 * @param {number} gen
 */
async function answerSubscribe(sdp, gen) {
  if (gen !== app.generation) return;
  let pc = app.pcs.subscribe;
  if (!pc) {
    pc = new RTCPeerConnection(pcConfig());
    pc.addEventListener('track', (ev) => tiles.addTrack(ev));
    app.pcs.subscribe = pc;
  }
  await pc.setRemoteDescription({ type: 'offer', sdp });
  await pc.setLocalDescription(await pc.createAnswer());
  await gatheringDone(pc, GATHER_TIMEOUT_MS);
  if (gen !== app.generation || app.pcs.subscribe !== pc) return;
  send({ type: 'subscribe_answer', sdp: pc.localDescription?.sdp });
}

function teardownPcs() {
  app.generation += 1;
  app.pcs.publish?.close();
  app.pcs.subscribe?.close();
  app.pcs.publish = null;
  app.pcs.subscribe = null;
  app.subChain = Promise.resolve();
  tiles.clear();
}

// ---- prompt

/** @param {any} msg */
function showPrompt(msg) {
  ui.prompt.textContent = msg.text ?? '';
  const parts = [];
  if (msg.target_emotion) parts.push(String(msg.target_emotion));
  if (msg.intensity != null && msg.intensity !== '') parts.push(`intensity ${msg.intensity}`);
  ui.promptMeta.textContent = parts.join(' · ');
  ui.promptMeta.hidden = parts.length === 0;
  // Restart the highlight animation so a new prompt is noticed.
  const banner = ui.prompt.closest('.prompt');
  banner?.classList.remove('fresh');
  void (/** @type {HTMLElement | null} */ (banner))?.offsetWidth;
  banner?.classList.add('fresh');
}

// ---- join / leave

async function onJoinClick() {
  resumeAudio();
  clearError();
  app.wantJoin = true;
  if (getState() === 'left') {
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
  app.signaling?.leave();
  store.forgetResume();
  teardownPcs();
  stopLocalMedia();
  improv.peers = [];
  ui.rec.hidden = true;
  document.body.dataset.reconnecting = '';
  setState('left');
  setStatus(reason ?? 'You left the room');
}

// ---- start

function init() {
  setState('lobby');
  ui.accept.addEventListener('click', () => { onAccept().catch((e) => fail(String(e?.message ?? e))); });
  ui.join.addEventListener('click', () => { onJoinClick().catch((e) => setStatus(`Error: ${e?.message ?? e}`)); });
  ui.leave.addEventListener('click', () => leave());
  ui.camera.addEventListener('change', () => { switchDevice('video', ui.camera.value); });
  ui.mic.addEventListener('change', () => { switchDevice('audio', ui.mic.value); });
  navigator.mediaDevices?.addEventListener('devicechange', () => { if (app.stream) fillDeviceLists(); });

  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    fail('This page needs HTTPS (or localhost) to use the camera and microphone');
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
