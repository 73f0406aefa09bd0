// @ts-check
/**
 * What this browser can do, checked before the performer joins, so that a browser the server
 * cannot serve is named with what to use instead, rather than failing later with a bare error
 * (a refused offer, a black tile). The server takes Opus audio and VP8 video only
 * (improv_capture/media/sdp_policy.py); a browser shares camera and microphone only in a
 * secure context (HTTPS, or localhost); a studio room's high-quality copy is WebM recorded with
 * MediaRecorder (./studio/recorder.js). What is known of each browser: docs/deploy.md.
 */

/**
 * @typedef {{code: string, message: string, fatal: boolean}} Problem `fatal`: the performer
 *   cannot join from this browser; otherwise the call works and something less is missing
 */

const USE_INSTEAD = 'use a recent Chrome, Edge or Firefox';
/** What a studio room records; ./studio/recorder.js falls back to this type. */
const STUDIO_RECORDING = 'video/webm';

/**
 * Whether the browser offers to send this codec; null when it cannot say (no
 * RTCRtpSender.getCapabilities: the server's refusal of the offer is the answer then).
 * @param {'audio' | 'video'} kind
 * @param {string} mimeType lower case, e.g. 'video/vp8'
 * @returns {boolean | null}
 */
function sends(kind, mimeType) {
  const sender = /** @type {any} */ (globalThis).RTCRtpSender;
  if (typeof sender?.getCapabilities !== 'function') return null;
  const codecs = sender.getCapabilities(kind)?.codecs ?? [];
  return codecs.some((/** @type {{mimeType: string}} */ c) => c.mimeType.toLowerCase() === mimeType);
}

/**
 * Whether this browser can record WebM with MediaRecorder.
 * @returns {boolean}
 */
function recordsWebm() {
  const recorder = /** @type {any} */ (globalThis).MediaRecorder;
  if (typeof recorder !== 'function') return false;
  try {
    return recorder.isTypeSupported(STUDIO_RECORDING);
  } catch {
    return false;
  }
}

/**
 * What stops (or limits) a performer on this browser, each with a plain-language fix; empty
 * when it can do all the page needs.
 * @param {{studio?: boolean}} [room] `studio`: the room records a high-quality copy
 * @returns {Problem[]}
 */
export function browserProblems({ studio = false } = {}) {
  /** @type {Problem[]} */
  const problems = [];
  if (!globalThis.isSecureContext) {
    // Without HTTPS there is no navigator.mediaDevices at all: the cause is this, not the browser.
    problems.push({
      code: 'insecure',
      message: 'This page was not opened over HTTPS, so the browser will not share your camera '
        + 'and microphone: open the invite link exactly as you received it (https://…)',
      fatal: true,
    });
  } else if (typeof navigator.mediaDevices?.getUserMedia !== 'function') {
    problems.push({
      code: 'getusermedia',
      message: `This browser cannot use a camera and microphone on a web page: ${USE_INSTEAD}`,
      fatal: true,
    });
  }
  if (typeof globalThis.RTCPeerConnection !== 'function') {
    problems.push({
      code: 'webrtc',
      message: `This browser cannot make video calls (WebRTC is missing or turned off): ${USE_INSTEAD}`,
      fatal: true,
    });
  } else {
    if (sends('video', 'video/vp8') === false) {
      problems.push({ code: 'vp8', message: `This browser cannot send VP8 video: ${USE_INSTEAD}`, fatal: true });
    }
    if (sends('audio', 'audio/opus') === false) {
      problems.push({ code: 'opus', message: `This browser cannot send Opus audio: ${USE_INSTEAD}`, fatal: true });
    }
  }
  if (studio && !recordsWebm()) {
    problems.push({
      code: 'webm',
      message: 'This browser cannot record WebM video, which this studio room keeps as your '
        + 'high-quality copy: you can still join, and the live call is recorded, but for the '
        + `high-quality copy ${USE_INSTEAD}`,
      fatal: false,
    });
  }
  return problems;
}

/**
 * Show the problems in the page's `browser-problems` element, one line each (hidden when
 * there are none).
 * @param {Problem[]} problems
 * @param {HTMLElement | null} [el]
 */
export function showBrowserProblems(problems, el = document.querySelector('[data-testid="browser-problems"]')) {
  if (!el) return;
  el.replaceChildren(...problems.map((p) => {
    const line = document.createElement('div');
    line.dataset.code = p.code;
    line.textContent = p.message;
    return line;
  }));
  el.hidden = problems.length === 0;
}

/**
 * The first problem that stops the performer joining, if any.
 * @param {Problem[]} problems
 * @returns {Problem | undefined}
 */
export function blocking(problems) {
  return problems.find((p) => p.fatal);
}
