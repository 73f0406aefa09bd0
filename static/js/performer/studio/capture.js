// @ts-check
/**
 * The high-quality copy of a studio take, on the performer's side: while the server records
 * (`recording` with `hq`) and the performer is in the call with a live camera and microphone,
 * one PartRecorder runs; everything it records goes through the Uploader. A new part starts
 * after a device change, a reload (the earlier page's part is ended by the resume) and a rejoin.
 *
 * One `update()` decides, serialized, whether a recorder should run and on which tracks; every
 * event that may change the answer calls it (recording messages, page state, device changes).
 */
import { StoreFullError } from './chunk_store.js';
import { studioProfile } from './profile.js';
import { PartRecorder } from './recorder.js';
import { pieceBytes } from './uploader.js';

/** After a welcome, the server sends `recording` at once if the room still records. */
const TAKE_CHECK_MS = 5000;
/** How often the storage estimate is looked at while recording. */
const STORAGE_CHECK_MS = 10000;
/** A recorder that does not stop within this long is given up on (its part still ends). */
const STOP_TIMEOUT_MS = 5000;
/** Recorders in a row that stopped by themselves before recording anything: then give up. */
const MAX_FAILED_STARTS = 3;

export const STORAGE_NEARLY_FULL = 'Browser storage is nearly full: keep this tab open until the upload finishes';

/**
 * What the browser's storage did to the chunks it refused, in the performer's words.
 * @param {ChunkStore} store
 */
function refused(store) {
  return store.refusal === 'QuotaExceededError' ? 'Browser storage is full' : 'Browser storage is unavailable';
}

/** @param {ChunkStore} store @returns {string} IndexedDB refuses chunks: they wait in this tab */
function inMemoryNotice(store) {
  return `${refused(store)}: the high-quality copy is kept in this tab's memory (up to `
    + `${Math.round(store.memoryBound / 1024 / 1024)} MB). Keep this tab open until the upload finishes.`;
}

/** @param {ChunkStore} store @returns {string} and the memory bound is reached too */
function storageFullNotice(store) {
  return `${refused(store)} and this tab holds ${Math.round(store.memoryBound / 1024 / 1024)} MB `
    + 'of the high-quality copy: its recording stopped (what it recorded is still sent). '
    + 'The live recording goes on.';
}

/**
 * @typedef {import('./uploader.js').Uploader} Uploader
 * @typedef {import('./uploader.js').PartState} PartState
 * @typedef {import('./uploader.js').SessionState} SessionState
 * @typedef {import('./chunk_store.js').ChunkStore} ChunkStore
 * @typedef {import('./profile.js').HqSection} HqSection
 * @typedef {{session_id: string, url: string, hq: HqSection}} Take
 * @typedef {{rec: PartRecorder, take: Take, part: PartState | null}} Running
 */

/**
 * @param {number} ms
 * @returns {Promise<void>}
 */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class StudioCapture {
  /**
   * @param {object} opts
   * @param {Uploader} opts.uploader
   * @param {ChunkStore} opts.store
   * @param {() => MediaStream | null} opts.stream the page's raw camera and microphone
   * @param {() => boolean} opts.inCall the performer wants to be and is (or is getting) in the call
   * @param {() => void} opts.onChange what the page shows may have changed
   */
  constructor({ uploader, store, stream, inCall, onChange }) {
    this.uploader = uploader;
    this.store = store;
    this.stream = stream;
    this.inCall = inCall;
    this.onChange = onChange;
    /** @type {Take | null} the take the server records now, with an hq section */
    this.take = null;
    /** @type {Running | null} */
    this.running = null;
    /** Parts this page load started (a later one is a rejoin: reason `resume`). */
    this.pageParts = 0;
    /** This page load took its seat back with a resume value (a reload). */
    this.reloaded = false;
    /** @type {string | null} the reason of the next part, when not the default */
    this.nextReason = null;
    /** No room left to keep chunks: no more parts this take. */
    this.storageFull = false;
    /** Recorders in a row that stopped by themselves with nothing recorded. */
    this.failedStarts = 0;
    /** @type {string | null} */
    this._warning = null;
    /** @type {string | null} a storage notice that goes once storage is no longer short, while
     * it is the `warning` shown */
    this.passing = null;
    this.lastStorageCheck = 0;
    /** @type {Promise<void>} */
    this.ops = Promise.resolve();
    this.queued = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.takeCheck = undefined;
  }

  /** @returns {string | null} a notice about storage for the performer; the one that chunks
   * wait in this tab's memory goes once none does */
  get warning() {
    if (this._warning !== null && this._warning === this.passing
        && this._warning !== STORAGE_NEARLY_FULL && !this.store.inMemory) {
      this._warning = this.passing = null;
    }
    return this._warning;
  }

  /** @param {string | null} notice */
  set warning(notice) { this._warning = notice; }

  /**
   * Every welcome: resume earlier uploads; if we are recording, expect the server to confirm the
   * take right away (it sends `recording` after the welcome), else it ended while we were away.
   * @param {any} welcome
   * @param {boolean} resumed the hello carried a resume value
   * @param {boolean} first the first welcome of this page load
   */
  onWelcome(welcome, resumed, first) {
    if (first) this.reloaded = resumed;
    const hq = /** @type {Record<string, any> | null | undefined} */ (studioProfile(welcome)?.hq);
    this.store.setMemoryBound(hq?.page_memory_bytes);
    this.uploader.resume(String(welcome.performer_id));
    clearTimeout(this.takeCheck);
    if (this.take) {
      const take = this.take;
      this.takeCheck = setTimeout(() => {
        if (this.take === take) this.endTake(take.session_id);
      }, TAKE_CHECK_MS);
    }
  }

  /**
   * The server's `recording` message.
   * @param {any} msg
   */
  onRecording(msg) {
    clearTimeout(this.takeCheck);
    if (msg.active) {
      const hq = msg.hq;
      if (!hq || typeof hq !== 'object' || !msg.session_id || !hq.upload_url) return; // standard
      if (this.take?.session_id !== msg.session_id) {
        this.take = { session_id: String(msg.session_id), url: String(hq.upload_url), hq };
        this.storageFull = false;
        this.failedStarts = 0;
        this.warning = null;
        navigator.storage?.persist?.().catch(() => {});
      }
    } else {
      this.endTake(msg.session_id ?? null);
      return;
    }
    this.update();
  }

  /**
   * The take is over (or went away): stop recording, send the rest at full speed.
   * @param {string | null} sessionId null: whichever runs
   */
  endTake(sessionId) {
    if (!this.take || (sessionId && this.take.session_id !== sessionId)) return;
    this.take = null;
    this.update();
  }

  /**
   * The server revoked consent (410): no more recording for that session.
   * @param {string} sessionId
   */
  revoked(sessionId) {
    if (this.take?.session_id === sessionId) this.take = null;
    this.update();
  }

  /** Reconsider whether to record, and what (serialized; repeated calls coalesce). */
  update() {
    this.uploader.setPaced(!!this.take && this.inCall());
    if (this.queued) return;
    this.queued = true;
    this.ops = this.ops.then(() => {
      this.queued = false;
      return this._reconcile();
    }).catch((err) => {
      this.warning = `High-quality recording: ${err?.message ?? err}`;
    }).finally(() => this.onChange());
  }

  /** @returns {{video: MediaStreamTrack, audio: MediaStreamTrack} | null} what to record now */
  _wanted() {
    if (!this.take || this.storageFull || this.failedStarts >= MAX_FAILED_STARTS || !this.inCall()) return null;
    const stream = this.stream();
    const video = stream?.getVideoTracks()[0];
    const audio = stream?.getAudioTracks()[0];
    if (!video || !audio || video.readyState !== 'live' || audio.readyState !== 'live') return null;
    return { video, audio };
  }

  async _reconcile() {
    const want = this._wanted();
    const run = this.running;
    if (run) {
      const same = !!want && run.take === this.take && run.rec.active && run.rec.records(want.video, want.audio);
      if (same) return;
      // Same take, other tracks (or the recorder gave up): the next part says why.
      if (run.take === this.take && want) this.nextReason = 'device_change';
      await this._stopPart(run);
    }
    const again = this._wanted(); // things may have moved while the recorder stopped
    if (again && !this.running) await this._startPart(again);
  }

  /**
   * @param {{video: MediaStreamTrack, audio: MediaStreamTrack}} tracks
   */
  async _startPart({ video, audio }) {
    const take = /** @type {Take} */ (this.take);
    const session = await this.uploader.session(take.session_id, take.url);
    if (this.take !== take || session.revoked || session.closed) return;
    let reason = this.nextReason;
    if (!reason) {
      if (this.pageParts > 0) reason = 'resume';
      else if (this.uploader.hasParts(session)) reason = this.reloaded ? 'reload' : 'resume';
      else reason = 'start';
    }
    this.nextReason = null;
    const number = this.uploader.reservePart(session);
    const chunkBytes = pieceBytes(take.hq);
    /** @type {Running} */
    const run = { rec: /** @type {any} */ (null), take, part: null };
    run.rec = new PartRecorder({
      video,
      audio,
      hq: take.hq,
      onStart: async (started) => {
        run.part = await this.uploader.startPart(session, number, { ...started, reason }, chunkBytes);
      },
      onData: async (blob) => {
        if (!run.part || this.storageFull) return;
        try {
          const where = await this.uploader.addRecorded(run.part, blob);
          this.failedStarts = 0;
          await this._checkStorage(where);
        } catch (err) {
          if (!(err instanceof StoreFullError)) throw err;
          this.storageFull = true;
          this.warning = storageFullNotice(this.store);
          this.update();
        }
      },
      onStop: (why) => {
        // Stopped by itself: its tracks ended, or the browser's recorder failed.
        if (run.rec.chunks === 0) this.failedStarts += 1;
        if (this.failedStarts >= MAX_FAILED_STARTS) {
          this.warning = `The high-quality recording keeps failing${why ? ` (${why})` : ''}: the live recording goes on.`;
        }
        this.update();
      },
    });
    try {
      run.rec.start();
    } catch (err) {
      this.warning = `The high-quality recording could not start: ${/** @type {Error} */ (err)?.message ?? err}`;
      return;
    }
    this.running = run;
    this.pageParts += 1;
  }

  /** @param {Running} run */
  async _stopPart(run) {
    this.running = null;
    await Promise.race([run.rec.stop(), sleep(STOP_TIMEOUT_MS)]);
    if (run.part) await this.uploader.endPart(run.part);
  }

  /**
   * Warn when the browser's storage is nearly full, or chunks had to stay in memory.
   * @param {'disk' | 'memory' | 'held' | 'dropped'} where the last chunk went
   */
  async _checkStorage(where) {
    if (this.storageFull) return;
    const passing = this.warning !== null && this.warning === this.passing;
    if (where === 'memory') {
      this.warning = this.passing = inMemoryNotice(this.store);
      return;
    }
    if (this.store.inMemory) return; // earlier chunks still wait in this tab: the notice stays
    const now = performance.now();
    if (now - this.lastStorageCheck < STORAGE_CHECK_MS) return;
    this.lastStorageCheck = now;
    const full = await this.store.nearlyFull();
    if (full && (!this.warning || passing)) this.warning = this.passing = STORAGE_NEARLY_FULL;
    else if (!full && passing) this.warning = this.passing = null;
  }
}
