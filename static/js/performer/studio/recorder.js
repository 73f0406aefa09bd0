// @ts-check
/**
 * One part of the high-quality copy: a MediaRecorder on the raw camera and microphone tracks
 * (never the scaled-down live sender), WebM in timeslices of the profile's chunk_s. The recorder
 * gets a MediaStream of its own holding those two tracks, so a device switch on the page's stream
 * does not change what it records: the page ends this part and starts the next one instead
 * (a MediaRecorder cannot take a new track mid-file).
 *
 * Data is handed on strictly in order, one blob at a time; `stopped` settles after the last one
 * was handled, so the caller knows the part's exact chunk count when it ends it.
 */

/** Used when the profile names a type this browser cannot record. */
const FALLBACK_MIME = 'video/webm';

/**
 * @typedef {import('./profile.js').HqSection} HqSection
 * @typedef {{mime_type: string, started_at_ms: number, start_event_at_ms: number,
 *   video: Record<string, any>, audio: Record<string, any>}} Started what the part info needs
 *   from the recorder
 */

/**
 * The part info's `video` and `audio` from the tracks' settings as the browser applied them.
 * @param {MediaStreamTrack} video
 * @param {MediaStreamTrack} audio
 */
function trackInfo(video, audio) {
  const v = video.getSettings();
  const a = audio.getSettings();
  return {
    video: { width: v.width ?? null, height: v.height ?? null, frame_rate: v.frameRate ?? null, device_id: v.deviceId ?? null },
    audio: {
      sample_rate: a.sampleRate ?? null,
      channel_count: a.channelCount ?? null,
      device_id: a.deviceId ?? null,
      echo_cancellation: a.echoCancellation ?? null,
      noise_suppression: a.noiseSuppression ?? null,
      auto_gain_control: a.autoGainControl ?? null,
    },
  };
}

export class PartRecorder {
  /**
   * @param {object} opts
   * @param {MediaStreamTrack} opts.video
   * @param {MediaStreamTrack} opts.audio
   * @param {HqSection} opts.hq the `recording` message's hq section
   * @param {(started: Started) => Promise<void>} opts.onStart the recorder's `start` event
   * @param {(blob: Blob) => Promise<void>} opts.onData each non-empty timeslice, in order
   * @param {(reason: string | null) => void} opts.onStop the recorder stopped by itself (an error,
   *   its tracks ended); `stopped` settles after the last data as usual
   */
  constructor({ video, audio, hq, onStart, onData, onStop }) {
    this.video = video;
    this.audio = audio;
    this.onStop = onStop;
    const mimeType = hq.mime_type && MediaRecorder.isTypeSupported(hq.mime_type) ? hq.mime_type : FALLBACK_MIME;
    /** @type {MediaRecorderOptions} */
    const options = { mimeType };
    if (hq.video_bitrate) options.videoBitsPerSecond = hq.video_bitrate;
    if (hq.audio_bitrate) options.audioBitsPerSecond = hq.audio_bitrate;
    this.recorder = new MediaRecorder(new MediaStream([video, audio]), options);
    this.timesliceMs = Math.max(250, Math.round((hq.chunk_s || 2) * 1000));
    /** @type {Promise<void>} data and start are handled one after another */
    this.chain = Promise.resolve();
    this.stopRequested = false;
    /** @type {number | null} the page clock (epoch ms) when start() was called */
    this.startedAtMs = null;
    /** Timeslices handed on so far. */
    this.chunks = 0;
    /** @type {string | null} the last error of a handler (the next blob is still handled) */
    this.error = null;
    /** @type {(value: void) => void} */
    let resolveStopped = () => {};
    /** Settles once the recorder stopped and every blob it produced was handled. */
    this.stopped = new Promise((resolve) => { resolveStopped = resolve; });

    this.recorder.addEventListener('start', () => {
      // The page clock at the first sample, for the server's coarse placement.
      // The file's first timestamp follows the start() call; the event comes after the encoders
      // are set up (measured: 0.5 s later on a busy machine), so the call's time is the start.
      const eventAtMs = performance.timeOrigin + performance.now();
      const started = {
        mime_type: this.recorder.mimeType || mimeType,
        started_at_ms: this.startedAtMs ?? eventAtMs,
        start_event_at_ms: eventAtMs,
        ...trackInfo(video, audio),
      };
      this.chain = this.chain.then(() => onStart(started)).catch((err) => this._failed(err));
    });
    this.recorder.addEventListener('dataavailable', (ev) => {
      const blob = /** @type {BlobEvent} */ (ev).data;
      if (!blob || blob.size === 0) return;
      this.chain = this.chain.then(() => onData(blob)).catch((err) => this._failed(err));
      this.chunks += 1;
    });
    this.recorder.addEventListener('error', (ev) => {
      const err = /** @type {any} */ (ev).error;
      if (!this.stopRequested) this.onStop(err?.message || err?.name || 'the recorder failed');
    });
    this.recorder.addEventListener('stop', () => {
      if (!this.stopRequested) this.onStop(null);
      this.stopRequested = true;
      this.chain.finally(() => resolveStopped());
    });
  }

  /** @param {any} err */
  _failed(err) {
    this.error = String(err?.message ?? err);
  }

  /** Start recording (the `start` event follows). */
  start() {
    this.startedAtMs = performance.timeOrigin + performance.now();
    this.recorder.start(this.timesliceMs);
  }

  /** @returns {boolean} still recording */
  get active() {
    return this.recorder.state !== 'inactive';
  }

  /**
   * Is this recorder recording exactly these tracks, both still live?
   * @param {MediaStreamTrack | undefined} video
   * @param {MediaStreamTrack | undefined} audio
   */
  records(video, audio) {
    return this.video === video && this.audio === audio
      && video.readyState === 'live' && audio.readyState === 'live';
  }

  /**
   * Stop; the last timeslice is handed on before `stopped` settles.
   * @returns {Promise<void>}
   */
  stop() {
    this.stopRequested = true;
    if (this.recorder.state !== 'inactive') {
      try {
        this.recorder.stop();
      } catch {
        // already stopping
      }
    }
    return this.stopped;
  }
}
