// @ts-check
/**
 * The audio level meter of both pages: the RMS level of a stream's first audio track (Web Audio
 * AnalyserNode), on local and remote streams, optionally drawn into a meter element.
 */

/** @type {AudioContext | null} */
let audioCtx = null;

/**
 * The page's one AudioContext (Chrome limits how many may exist).
 * @returns {AudioContext}
 */
export function sharedAudioContext() {
  if (!audioCtx) audioCtx = new AudioContext();
  return audioCtx;
}

/**
 * Resume the AudioContext; call from a user gesture, where autoplay policy allows it.
 * @returns {Promise<void>}
 */
export async function resumeAudio() {
  const ctx = sharedAudioContext();
  if (ctx.state !== 'running') await ctx.resume().catch(() => {});
}

/** Sampling period; the analyser window (4096 samples, 85 ms at 48 kHz) covers it fully. */
const TICK_MS = 50;
/** Release time constant: short sounds stay visible between samples. */
const RELEASE_S = 0.4;

/**
 * Map an RMS level to 0..1 on a -60..0 dBFS scale, which reads like a real meter.
 * @param {number} level
 * @returns {number}
 */
export function meterFraction(level) {
  if (level <= 0) return 0;
  const db = 20 * Math.log10(level);
  return Math.max(0, Math.min(1, (db + 60) / 60));
}

/**
 * RMS level of a stream's first audio track, 0..1, with instant attack and a short release
 * (so a 20 ms beep still reads as sound between ticks). With an element, every tick writes the
 * level to its `data-level` and reveals that much of its first child, the bar, with a clip
 * (the bar's colours belong to the scale, not to the lit part).
 */
export class LevelMeter {
  /**
   * @param {HTMLElement | null} [el] meter element: gets data-level; its first child is the bar
   */
  constructor(el = null) {
    this.el = el;
    this.bar = /** @type {HTMLElement | null} */ (el?.firstElementChild ?? null);
    this.level = 0;
    /** @type {MediaStreamAudioSourceNode | null} */
    this.source = null;
    /** @type {AnalyserNode | null} */
    this.analyser = null;
    /** @type {MediaStreamTrack | null} */
    this.track = null;
    this.buf = new Float32Array(4096);
    this.last = performance.now();
    this._draw();
    this.timer = setInterval(() => this._tick(), TICK_MS);
  }

  /**
   * Measure this stream's audio (re-wires only if its audio track changed). Chrome feeds Web
   * Audio from a remote track only while a media element plays its stream, so set the element's
   * srcObject first (muted is fine).
   * @param {MediaStream | null} stream
   */
  setStream(stream) {
    const track = stream?.getAudioTracks()[0] ?? null;
    if (track === this.track) return;
    this._disconnect();
    this.track = track;
    if (!track) return;
    const ctx = sharedAudioContext();
    // A stream with only this track, so the source follows this exact track.
    this.source = ctx.createMediaStreamSource(new MediaStream([track]));
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = this.buf.length;
    // Analysers are pulled without reaching the destination, so nothing is played here.
    this.source.connect(this.analyser);
  }

  stop() {
    clearInterval(this.timer);
    this._disconnect();
    this.level = 0;
    this._draw();
  }

  _disconnect() {
    this.source?.disconnect();
    this.analyser?.disconnect();
    this.source = null;
    this.analyser = null;
    this.track = null;
  }

  _tick() {
    const now = performance.now();
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
    if (!this.el) return;
    this.el.dataset.level = this.level.toFixed(4);
    if (this.bar) this.bar.style.clipPath = `inset(0 ${100 - Math.round(meterFraction(this.level) * 100)}% 0 0)`;
  }
}
