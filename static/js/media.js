// @ts-check
/**
 * Local media: getUserMedia with the server's capture settings, device lists, the `capture`
 * report, and an RMS level meter (Web Audio AnalyserNode) usable on local and remote streams.
 */

/**
 * @typedef {{width: number, height: number, frame_rate: number, max_video_bitrate: number}} MediaConfig
 */

/** @type {MediaConfig} */
export const DEFAULT_MEDIA = { width: 640, height: 480, frame_rate: 30, max_video_bitrate: 1_200_000 };

/**
 * Merge the server's `welcome.media` over the defaults.
 * @param {Partial<MediaConfig> | undefined} media
 * @returns {MediaConfig}
 */
export function mediaConfig(media) {
  const out = { ...DEFAULT_MEDIA };
  for (const key of /** @type {(keyof MediaConfig)[]} */ (Object.keys(DEFAULT_MEDIA))) {
    const v = media?.[key];
    if (typeof v === 'number' && v > 0) out[key] = v;
  }
  return out;
}

/**
 * @param {string} [deviceId]
 * @returns {MediaTrackConstraints}
 */
function audioConstraints(deviceId) {
  /** @type {MediaTrackConstraints} */
  const c = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  if (deviceId) c.deviceId = { exact: deviceId };
  return c;
}

/**
 * @param {MediaConfig} media
 * @param {string} [deviceId]
 * @returns {MediaTrackConstraints}
 */
function videoConstraints(media, deviceId) {
  /** @type {MediaTrackConstraints} */
  const c = {
    width: { ideal: media.width },
    height: { ideal: media.height },
    frameRate: { ideal: media.frame_rate },
  };
  if (deviceId) c.deviceId = { exact: deviceId };
  return c;
}

/**
 * Camera and microphone in one stream.
 * @param {MediaConfig} media
 * @param {{audioDeviceId?: string, videoDeviceId?: string}} [devices]
 * @returns {Promise<MediaStream>}
 */
export function getLocalMedia(media, devices = {}) {
  return navigator.mediaDevices.getUserMedia({
    audio: audioConstraints(devices.audioDeviceId),
    video: videoConstraints(media, devices.videoDeviceId),
  });
}

/**
 * One new track of `kind` from a given device (for a device switch).
 * @param {'audio' | 'video'} kind
 * @param {MediaConfig} media
 * @param {string} deviceId
 * @returns {Promise<MediaStreamTrack>}
 */
export async function getTrack(kind, media, deviceId) {
  const stream = await navigator.mediaDevices.getUserMedia(
    kind === 'audio' ? { audio: audioConstraints(deviceId) } : { video: videoConstraints(media, deviceId) },
  );
  return stream.getTracks()[0];
}

/**
 * Cameras and microphones (labels are only filled once permission was granted).
 * @returns {Promise<{cameras: MediaDeviceInfo[], microphones: MediaDeviceInfo[]}>}
 */
export async function listDevices() {
  const all = await navigator.mediaDevices.enumerateDevices();
  return {
    cameras: all.filter((d) => d.kind === 'videoinput'),
    microphones: all.filter((d) => d.kind === 'audioinput'),
  };
}

/**
 * The body of a `capture` message: what the browser actually applied, for the recorder.
 * @param {MediaStream} stream
 * @returns {{type: 'capture', user_agent: string, audio_processing: object, video_settings: object}}
 */
export function captureReport(stream) {
  const a = stream.getAudioTracks()[0]?.getSettings() ?? {};
  const v = stream.getVideoTracks()[0]?.getSettings() ?? {};
  return {
    type: 'capture',
    user_agent: navigator.userAgent,
    audio_processing: {
      echoCancellation: a.echoCancellation ?? null,
      noiseSuppression: a.noiseSuppression ?? null,
      autoGainControl: a.autoGainControl ?? null,
      sampleRate: a.sampleRate ?? null,
      channelCount: a.channelCount ?? null,
      deviceId: a.deviceId ?? null,
    },
    // Copy the plain fields: MediaTrackSettings is a dictionary, but be explicit about what goes out.
    video_settings: Object.fromEntries(
      Object.entries(v).filter(([, val]) => ['string', 'number', 'boolean'].includes(typeof val)),
    ),
  };
}

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
 * RMS level of a stream's first audio track, 0..1, with instant attack and a short release
 * (so a 20 ms beep still reads as sound between ticks).
 */
export class LevelMeter {
  /**
   * @param {(level: number) => void} [onLevel] called every tick, e.g. to draw a bar
   */
  constructor(onLevel) {
    this.onLevel = onLevel;
    this.level = 0;
    /** @type {MediaStreamAudioSourceNode | null} */
    this.source = null;
    /** @type {AnalyserNode | null} */
    this.analyser = null;
    /** @type {MediaStreamTrack | null} */
    this.track = null;
    this.buf = new Float32Array(4096);
    this.last = performance.now();
    this.timer = setInterval(() => this._tick(), TICK_MS);
  }

  /**
   * Measure this stream's audio (re-wires only if its audio track changed).
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
    this.onLevel?.(this.level);
  }

  stop() {
    clearInterval(this.timer);
    this._disconnect();
    this.level = 0;
    this.onLevel?.(0);
  }
}

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
