// @ts-check
/**
 * Audio level meters on remote streams: Web Audio AnalyserNode, RMS 0..1 with a short release,
 * drawn as a bar and exposed as `data-level` on the meter element. One AudioContext and one
 * timer for all meters.
 */

const TICK_MS = 50;
const RELEASE_S = 0.35;

/** @type {AudioContext | null} */
let ctx = null;
/** @type {Set<LevelMeter>} */
const meters = new Set();
/** @type {ReturnType<typeof setInterval> | undefined} */
let timer;

/** @returns {AudioContext} */
function audioContext() {
  if (!ctx) ctx = new AudioContext();
  return ctx;
}

/** Resume audio processing; call from a user gesture where the autoplay policy needs one. */
export function resumeAudio() {
  const c = audioContext();
  if (c.state !== 'running') c.resume().catch(() => {});
}

/**
 * An RMS level as a 0..1 bar on a -60..0 dBFS scale.
 * @param {number} level
 * @returns {number}
 */
export function meterFraction(level) {
  if (level <= 0) return 0;
  return Math.max(0, Math.min(1, (20 * Math.log10(level) + 60) / 60));
}

function tickAll() {
  const now = performance.now();
  for (const m of meters) m._tick(now);
}

export class LevelMeter {
  /**
   * @param {HTMLElement} el meter element: gets data-level; its first child is the bar
   */
  constructor(el) {
    this.el = el;
    this.bar = /** @type {HTMLElement | null} */ (el.firstElementChild);
    this.level = 0;
    this.last = performance.now();
    /** @type {MediaStreamTrack | null} */
    this.track = null;
    /** @type {MediaStreamAudioSourceNode | null} */
    this.source = null;
    /** @type {AnalyserNode | null} */
    this.analyser = null;
    this.buf = new Float32Array(2048);
    meters.add(this);
    if (!timer) timer = setInterval(tickAll, TICK_MS);
    this._draw();
  }

  /**
   * Measure this stream's first audio track (re-wired only when the track changes).
   * Chrome feeds Web Audio from a remote track only while a media element plays its stream,
   * so set the element's srcObject first (muted is fine).
   * @param {MediaStream | null} stream
   */
  setStream(stream) {
    const track = stream?.getAudioTracks()[0] ?? null;
    if (track === this.track) return;
    this._disconnect();
    this.track = track;
    if (!track) return;
    const c = audioContext();
    this.source = c.createMediaStreamSource(new MediaStream([track]));
    this.analyser = c.createAnalyser();
    this.analyser.fftSize = this.buf.length;
    this.source.connect(this.analyser); // never reaches the speakers
  }

  /** @param {number} now */
  _tick(now) {
    const dt = (now - this.last) / 1000;
    this.last = now;
    let rms = 0;
    if (this.analyser && this.track?.readyState === 'live') {
      this.analyser.getFloatTimeDomainData(this.buf);
      let sum = 0;
      for (let i = 0; i < this.buf.length; i++) sum += this.buf[i] * this.buf[i];
      rms = Math.min(1, Math.sqrt(sum / this.buf.length));
    }
    this.level = Math.max(rms, this.level * Math.exp(-dt / RELEASE_S));
    if (this.level < 1e-5) this.level = 0;
    this._draw();
  }

  _draw() {
    this.el.dataset.level = this.level.toFixed(4);
    if (this.bar) this.bar.style.clipPath = `inset(0 ${100 - Math.round(meterFraction(this.level) * 100)}% 0 0)`;
  }

  _disconnect() {
    this.source?.disconnect();
    this.analyser?.disconnect();
    this.source = null;
    this.analyser = null;
    this.track = null;
  }

  stop() {
    this._disconnect();
    meters.delete(this);
    if (!meters.size) {
      clearInterval(timer);
      timer = undefined;
    }
    this.level = 0;
    this._draw();
  }
}
