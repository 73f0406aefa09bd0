// @ts-check
/**
 * The high-quality copy's HTTP upload (docs/signaling.md, "High-quality upload"): per part, PUT
 * its info, PUT every chunk with its SHA-256, POST its end once every chunk is acknowledged.
 * Everything the page recorded waits in the ChunkStore until the server answered 2xx, so:
 *
 * - network errors, 5xx and 507 (the server's disk is full): keep the chunk, retry with backoff
 *   (1 s, 2 s, 4 s, 8 s, then every 15 s);
 * - 410 (consent revoked): delete every chunk of that session and stop;
 * - other 4xx: keep the chunks, stop uploading that part and show the server's detail (a 403
 *   or 404 is retried a few times first: a performer who just joined may not be recorded yet);
 *   the next `resume` (a welcome, a reload) tries again;
 * - resume (every welcome, and so every load): chunks an earlier page left in the store are
 *   matched against the server's status (GET), the acknowledged ones deleted, the rest sent,
 *   and parts the earlier page never ended are ended with the count it recorded.
 *
 * Pacing: while the take runs and the page is in the call, one request at a time and the
 * average under the CallBudget; after the stop (or out of the call), PARALLEL at once.
 */
import { sha256Hex } from '../../common/digest.js';
import { MIN_BUDGET_BPS } from './budget.js';
import { StoreFullError } from './chunk_store.js';

/** Retry delays after a failure that may pass; the last one repeats. */
const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000];
/** 403/404 are retried this many times (about 30 s with the backoff) before the part stops. */
const NOT_YET_RETRIES = 5;
/** Chunks are cut from the recorder's timeslices: about this much of the stream each, and at
 * least PIECE_BYTES. Small, because a request goes out as one burst at the link's speed and
 * queues the call's packets behind it (32 KiB is 44 ms of a 6 Mbit/s uplink; a whole 2 s
 * timeslice, 1 MB, delayed the call by hundreds of ms: scripts/bench_studio.py), and paced
 * one at a time under the CallBudget during the take; a part's indices still last (the server
 * takes 1,000,000 a part: 17 h at 4 Mbit/s). */
const PIECE_S = 1 / 16;
export const PIECE_BYTES = 32 * 1024;

/**
 * The size of the chunks cut from a recording with these bitrates.
 * @param {{video_bitrate?: number, audio_bitrate?: number, max_chunk_bytes?: number}} hq
 * @returns {number}
 */
export function pieceBytes(hq) {
  const perSecond = ((hq.video_bitrate || 0) + (hq.audio_bitrate || 0)) / 8;
  const size = Math.max(PIECE_BYTES, Math.round(perSecond * PIECE_S));
  return Math.max(1, Math.min(size, hq.max_chunk_bytes || size));
}
/** A part's first chunk is at least this long: Chromium's recorder may hand out the first byte
 * of the EBML header alone, and the server checks that chunk 0 begins with the whole magic. */
const MIN_FIRST_CHUNK_BYTES = 1024;
/** Requests at once when not pacing (after the stop). */
const PARALLEL = 3;
const REQUEST_TIMEOUT_MS = 60000;
const STATUS_TIMEOUT_MS = 10000;
/** States of the server's status in which the upload takes nothing more. */
const CLOSED_STATES = new Set(['complete', 'incomplete', 'rejected', 'withdrawn']);

/**
 * @typedef {import('./chunk_store.js').ChunkStore} ChunkStore
 * @typedef {import('./chunk_store.js').PartRecord} PartRecord
 * @typedef {import('./budget.js').CallBudget} CallBudget
 * @typedef {{
 *   rec: PartRecord, pending: number[], acked: Set<number>, inFlight: Set<number>,
 *   infoSent: boolean, infoBusy: boolean, endSent: boolean, endBusy: boolean,
 *   recording: boolean, serverChunks: number | null, blocked: string | null, refusals: number,
 *   pieceBytes: number, carry: Blob | null,
 * }} PartState `recording`: this page's recorder still adds chunks; `carry`: a first blob too
 *   short to be chunk 0, held (in memory) until the next one
 * @typedef {{id: string, performer: string, url: string, parts: Map<number, PartState>,
 *   synced: Promise<void> | null, closed: string | null, revoked: boolean, done: boolean,
 *   reserved: number}} SessionState
 * @typedef {{state: string, acked: number, recorded: number, pending: number, error: string | null,
 *   session_id: string | null, budget_bps: number | null,
 *   call: {available_bps: number | null, outbound_bps: number | null},
 *   parts: {session_id: string, part: number, reason: string | null, recorded: number, acked: number,
 *     pending: number, ended: boolean, blocked: string | null}[]}} Summary
 * @typedef {{status: number, body: any, detail: string}} Answer status 0: no answer (network)
 */

/** A random id per page load: parts of earlier loads are the ones to end on resume. */
const PAGE_ID = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');

/**
 * Acknowledged indices from the status: [first, last] ranges, inclusive (the server's form), or
 * plain indices, or {start, end} ranges (end exclusive).
 * @param {any} acked
 * @returns {number[]}
 */
export function ackedIndices(acked) {
  /** @type {number[]} */
  const out = [];
  for (const item of Array.isArray(acked) ? acked : []) {
    if (Number.isInteger(item)) out.push(item);
    else if (Array.isArray(item) && item.length === 2) for (let i = item[0]; i <= item[1]; i++) out.push(i);
    else if (item && Number.isInteger(item.start) && Number.isInteger(item.end)) for (let i = item.start; i < item.end; i++) out.push(i);
  }
  return out;
}

/**
 * @param {number} ms
 * @returns {Promise<void>}
 */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** @param {PartState} p @returns {number} chunks this part has, as far as anyone knows */
function recordedOf(p) {
  const top = Math.max(-1, ...p.acked, ...p.pending) + 1;
  return Math.max(p.rec.recorded, p.rec.ended?.chunks ?? 0, p.serverChunks ?? 0, top);
}

/** @param {PartState} p @returns {boolean} nothing left to do for this part */
function partDone(p) {
  return !p.recording && !!p.rec.ended && p.endSent && p.pending.length === 0;
}

export class Uploader {
  /**
   * @param {object} opts
   * @param {ChunkStore} opts.store
   * @param {() => string | null} opts.token the invite token (Authorization: Bearer)
   * @param {CallBudget} opts.budget
   * @param {() => void} opts.onChange progress or state changed
   * @param {(sessionId: string) => void} opts.onRevoked the server said 410 for this session
   */
  constructor({ store, token, budget, onChange, onRevoked }) {
    this.store = store;
    this.token = token;
    this.budget = budget;
    this.onChange = onChange;
    this.onRevoked = onRevoked;
    this.pageId = PAGE_ID;
    /** @type {Map<string, SessionState>} */
    this.sessions = new Map();
    /** @type {string | null} the performer this page is */
    this.performer = null;
    /** @type {Promise<void>} the latest resume scan */
    this.resuming = Promise.resolve();
    this.paced = false;
    this.busy = 0;
    this.nextSendAt = 0;
    this.retryAt = 0;
    this.failures = 0;
    /** @type {string | null} the last failure being retried */
    this.error = null;
    /** @type {string | null} the session of the current (or last) take */
    this.current = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
  }

  // ---- what the recorder side calls

  /**
   * Pace under the call's budget (the take runs and the page is in the call), or not.
   * @param {boolean} on
   */
  setPaced(on) {
    if (on === this.paced) return;
    this.paced = on;
    if (on) this.budget.start();
    else {
      this.budget.stop();
      this.nextSendAt = 0;
    }
    this._kick();
  }

  /**
   * The state of a session, once what the store and the server know of it was read: the part
   * numbers already used, and what is acknowledged.
   * @param {string} sessionId
   * @param {string} url the session's hq upload URL
   * @returns {Promise<SessionState>}
   */
  async session(sessionId, url) {
    await this.resuming;
    const performer = /** @type {string} */ (this.performer);
    let session = this.sessions.get(sessionId);
    if (!session) {
      session = this._newSession(sessionId, performer, url);
      session.synced = this._sync(session);
    }
    this.current = sessionId;
    // Settled sessions of earlier takes leave the progress display.
    for (const [id, s] of this.sessions) if (id !== sessionId && s.done) this.sessions.delete(id);
    await session.synced;
    this._changed();
    return session;
  }

  /**
   * The next part number of a session (never one the store, the server or this page used).
   * @param {SessionState} session
   * @returns {number}
   */
  reservePart(session) {
    const used = Math.max(session.reserved, ...[...session.parts.keys()].map((n) => n + 1));
    session.reserved = used + 1;
    return used;
  }

  /** @param {SessionState} session @returns {boolean} some part of it exists already */
  hasParts(session) {
    return session.parts.size > 0 || session.reserved > 0;
  }

  /**
   * The recorder started a part: keep its record, then PUT its info.
   * @param {SessionState} session
   * @param {number} number
   * @param {Record<string, any>} info the part info (mime_type, started_at_ms, reason, video, audio)
   * @param {number} chunkBytes the size of its chunks (pieceBytes)
   * @returns {Promise<PartState>}
   */
  async startPart(session, number, info, chunkBytes) {
    /** @type {PartRecord} */
    const rec = {
      session_id: session.id, performer_id: session.performer, part: number, upload_url: session.url,
      info, recorded: 0, ended: null, page_id: this.pageId,
    };
    const part = this._partState(rec, [], true);
    part.pieceBytes = chunkBytes;
    session.parts.set(number, part);
    session.done = false;
    await this.store.putPart(rec);
    this._changed();
    this._kick();
    return part;
  }

  /**
   * A timeslice of the recorder: cut into chunks of the part's size (pieceBytes), each hashed
   * and stored before it is queued for upload.
   * @param {PartState} part
   * @param {Blob} data
   * @param {boolean} [last] the recorder stopped: nothing is held back
   * @returns {Promise<'disk' | 'memory' | 'held' | 'dropped'>} where the last piece went
   * @throws {StoreFullError} nowhere left to keep it: the caller stops recording
   */
  async addRecorded(part, data, last = false) {
    const session = this.sessions.get(part.rec.session_id);
    if (!session || session.revoked || session.closed) return 'dropped';
    let blob = data;
    if (part.carry) {
      blob = new Blob([part.carry, data], { type: data.type || part.carry.type });
      part.carry = null;
    }
    if (!last && part.rec.recorded === 0 && blob.size < MIN_FIRST_CHUNK_BYTES) {
      part.carry = blob;
      return 'held';
    }
    const size = part.pieceBytes;
    /** @type {'disk' | 'memory' | 'held' | 'dropped'} */
    let where = 'dropped';
    for (let offset = 0; offset < blob.size; offset += size) {
      const piece = blob.slice(offset, offset + size);
      const sha256 = await sha256Hex(await piece.arrayBuffer());
      const index = part.rec.recorded;
      const rec = { ...part.rec, recorded: index + 1 };
      where = await this.store.addChunk({
        session_id: rec.session_id, performer_id: rec.performer_id, part: rec.part, index,
        blob: piece, sha256, bytes: piece.size,
      }, rec);
      if (session.revoked) {
        // revoked while this piece was hashed and stored: it must not outlive the deletion
        await this.store.deleteSession(session.id, session.performer);
        return 'dropped';
      }
      part.rec = rec;
      part.pending.push(index);
      this._kick();
    }
    this._changed();
    return where;
  }

  /**
   * The recorder of a part stopped and its last chunk is stored: the part has exactly the chunks
   * recorded; the end goes out once they are all acknowledged.
   * @param {PartState} part
   */
  async endPart(part) {
    if (part.carry) {
      try {
        await this.addRecorded(part, new Blob([]), true);
      } catch (err) {
        if (!(err instanceof StoreFullError)) throw err; // no room: it ends without it
      }
    }
    part.recording = false;
    if (!part.rec.ended) {
      part.rec = { ...part.rec, ended: { chunks: part.rec.recorded } };
      await this.store.putPart(part.rec);
    }
    this._changed();
    this._kick();
  }

  /**
   * Forget a session for good: the server answered 410 (consent revoked).
   * @param {string} sessionId
   */
  async revoke(sessionId) {
    const session = this.sessions.get(sessionId);
    if (!session || session.revoked) return;
    session.revoked = true;
    for (const p of session.parts.values()) p.pending = [];
    await this.store.deleteSession(sessionId, session.performer);
    this._changed();
    this.onRevoked(sessionId);
  }

  // ---- resume

  /**
   * Take up what earlier pages of this performer left (the store) and what the server has
   * (GET status), and retry parts that stopped on an error. Called after every welcome.
   * @param {string} performerId
   * @returns {Promise<void>}
   */
  resume(performerId) {
    this.performer = performerId;
    this.resuming = this.resuming.then(() => this._resume(performerId)).catch(() => {});
    return this.resuming;
  }

  /** @param {string} performerId */
  async _resume(performerId) {
    const records = await this.store.parts(performerId);
    for (const rec of records) {
      let session = this.sessions.get(rec.session_id);
      if (!session) session = this._newSession(rec.session_id, performerId, rec.upload_url);
      if (session.parts.has(rec.part)) continue; // this page's own, or read already
      const pending = await this.store.indices(rec.session_id, performerId, rec.part);
      session.parts.set(rec.part, this._partState(rec, pending, false));
      session.done = false;
    }
    const sessions = [...this.sessions.values()].filter((s) => s.performer === performerId && !s.revoked && !s.closed && !s.done);
    for (const session of sessions) {
      for (const p of session.parts.values()) { p.blocked = null; p.refusals = 0; }
      session.synced = this._sync(session);
    }
    await Promise.all(sessions.map((s) => s.synced));
    for (const session of sessions) {
      // Parts an earlier page recorded and never ended end with what it stored.
      for (const p of session.parts.values()) {
        if (p.recording || p.rec.ended) continue;
        p.rec = { ...p.rec, ended: { chunks: recordedOf(p) } };
        await this.store.putPart(p.rec);
      }
    }
    this.retryAt = 0;
    this._changed();
    this._kick();
  }

  /**
   * GET the session's status and merge it: acknowledged chunks are deleted here, parts the
   * server knows are not announced again.
   * @param {SessionState} session
   */
  async _sync(session) {
    const answer = await this._request('GET', session.url, { timeoutMs: STATUS_TIMEOUT_MS });
    if (answer.status === 410) {
      await this.revoke(session.id);
      return;
    }
    if (answer.status !== 200 || !answer.body || typeof answer.body !== 'object') {
      if (answer.status >= 400 && answer.status < 500) {
        for (const p of session.parts.values()) p.blocked = answer.detail;
      }
      return; // unreachable: the info PUTs are idempotent, chunks too; go on without it
    }
    for (const sp of Array.isArray(answer.body.parts) ? answer.body.parts : []) {
      const number = Number(sp?.part);
      if (!Number.isInteger(number) || number < 0) continue;
      let p = session.parts.get(number);
      if (!p) {
        // Known to the server only (the store lost it, or it was settled): count it, end it.
        p = this._partState({
          session_id: session.id, performer_id: session.performer, part: number, upload_url: session.url,
          info: {}, recorded: 0, ended: null, page_id: 'server',
        }, [], false);
        session.parts.set(number, p);
      }
      p.infoSent = true;
      // The server's count: the end, or the most any acknowledged chunk said was recorded.
      const known = [sp.chunks, sp.recorded].filter(Number.isInteger);
      if (known.length) p.serverChunks = Math.max(p.serverChunks ?? 0, ...known);
      if (sp.ended) {
        p.endSent = true;
        if (!p.rec.ended) p.rec = { ...p.rec, ended: { chunks: sp.chunks ?? recordedOf(p) } };
      }
      for (const index of ackedIndices(sp.acked)) {
        p.acked.add(index);
        if (p.pending.includes(index)) {
          p.pending = p.pending.filter((i) => i !== index);
          await this.store.deleteChunk(session.id, session.performer, number, index);
        }
      }
    }
    const state = String(answer.body.state ?? '');
    if (state === 'revoked') await this.revoke(session.id);
    else if (CLOSED_STATES.has(state)) await this._close(session, state);
  }

  /**
   * The server takes nothing more for this session: forget what is kept, saying so if anything
   * was still unsent.
   * @param {SessionState} session
   * @param {string} state
   */
  async _close(session, state) {
    const unsent = [...session.parts.values()].reduce((n, p) => n + p.pending.length, 0);
    session.closed = state;
    for (const p of session.parts.values()) p.pending = [];
    await this.store.deleteSession(session.id, session.performer);
    if (unsent || state !== 'complete') {
      this.error = `the server closed the upload (${state})${unsent ? `: ${unsent} chunks were not sent` : ''}`;
    }
    this._settle(session);
  }

  // ---- the request loop

  /** Start whatever may start now; called after every change. */
  _kick() {
    clearTimeout(this.timer);
    this.timer = undefined;
    const now = performance.now();
    if (now < this.retryAt) {
      this._wake(this.retryAt - now);
      return;
    }
    const limit = this.paced ? 1 : PARALLEL;
    while (this.busy < limit) {
      const task = this._next(now);
      if (!task) break;
      if (typeof task === 'number') {
        this._wake(task);
        break;
      }
      this.busy += 1;
      task().catch((err) => this._backOff(String(err?.message ?? err))).finally(() => {
        this.busy -= 1;
        this._changed();
        this._kick();
      });
    }
  }

  /** @param {number} ms */
  _wake(ms) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._kick(), Math.max(10, ms));
  }

  /**
   * The next request to make: a function, or how long to wait (pacing), or null for nothing.
   * @param {number} now
   * @returns {(() => Promise<void>) | number | null}
   */
  _next(now) {
    for (const session of this.sessions.values()) {
      if (session.revoked || session.closed || session.done) continue;
      const parts = [...session.parts.values()].sort((a, b) => a.rec.part - b.rec.part);
      for (const p of parts) {
        if (p.blocked) continue;
        if (!p.infoSent) {
          if (!p.infoBusy) return () => this._sendInfo(session, p);
          continue; // chunks wait for their part's info
        }
        const index = p.pending.find((i) => !p.inFlight.has(i));
        if (index !== undefined) {
          if (this.paced && now < this.nextSendAt) return this.nextSendAt - now;
          return () => this._sendChunk(session, p, index);
        }
        if (p.rec.ended && !p.recording && p.inFlight.size === 0 && !p.endSent && !p.endBusy) {
          return () => this._sendEnd(session, p);
        }
      }
    }
    return null;
  }

  /** @param {SessionState} session @param {PartState} p */
  async _sendInfo(session, p) {
    p.infoBusy = true;
    try {
      const answer = await this._request('PUT', `${session.url}/parts/${p.rec.part}`, { json: p.rec.info });
      if (answer.status === 200 || answer.status === 201) {
        p.infoSent = true;
        this._succeeded();
      } else {
        await this._failed(session, p, answer);
      }
    } finally {
      p.infoBusy = false;
    }
  }

  /** @param {SessionState} session @param {PartState} p @param {number} index */
  async _sendChunk(session, p, index) {
    p.inFlight.add(index);
    const started = performance.now();
    let bytes = 0;
    try {
      const chunk = await this.store.chunk(session.id, session.performer, p.rec.part, index);
      if (!chunk) {
        // Not kept anywhere (memory lost): nothing to send, and the part will show the gap.
        p.pending = p.pending.filter((i) => i !== index);
        this.error = `chunk ${index} of part ${p.rec.part} was lost before it was sent`;
        return;
      }
      bytes = chunk.bytes;
      const answer = await this._request('PUT', `${session.url}/parts/${p.rec.part}/chunks/${index}`, {
        body: chunk.blob,
        headers: {
          'Content-Type': 'application/octet-stream',
          'X-Chunk-Sha256': chunk.sha256,
          'X-Recorded-Chunks': String(p.rec.recorded),
        },
      });
      if ((answer.status === 200 || answer.status === 201)
          && (!answer.body?.sha256 || answer.body.sha256 === chunk.sha256)) {
        p.acked.add(index);
        p.pending = p.pending.filter((i) => i !== index);
        await this.store.deleteChunk(session.id, session.performer, p.rec.part, index);
        this._succeeded();
        this._settle(session);
      } else if (answer.status === 200 || answer.status === 201) {
        p.blocked = `the server stored another body under chunk ${index} of part ${p.rec.part}`;
      } else {
        await this._failed(session, p, answer);
      }
    } finally {
      p.inFlight.delete(index);
      if (this.paced && bytes) {
        const bps = Math.max(MIN_BUDGET_BPS, this.budget.bps);
        this.nextSendAt = Math.max(this.nextSendAt, started) + (bytes * 8000) / bps;
      }
    }
  }

  /** @param {SessionState} session @param {PartState} p */
  async _sendEnd(session, p) {
    p.endBusy = true;
    try {
      const chunks = /** @type {{chunks: number}} */ (p.rec.ended).chunks;
      const answer = await this._request('POST', `${session.url}/parts/${p.rec.part}/end`, { json: { chunks } });
      if (answer.status === 200 || answer.status === 201 || answer.status === 204) {
        p.endSent = true;
        this._succeeded();
        this._settle(session);
      } else {
        await this._failed(session, p, answer);
      }
    } finally {
      p.endBusy = false;
    }
  }

  /**
   * Wait before the next request (1 s, 2 s, 4 s, 8 s, then 15 s while failures go on).
   * @param {string} detail what failed, shown meanwhile
   */
  _backOff(detail) {
    this.error = detail;
    const delay = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
    this.failures += 1;
    this.retryAt = performance.now() + delay;
  }

  _succeeded() {
    this.failures = 0;
    this.error = null;
  }

  /**
   * @param {SessionState} session
   * @param {PartState} p
   * @param {Answer} answer
   */
  async _failed(session, p, answer) {
    const { status, detail } = answer;
    if (status === 410) {
      await this.revoke(session.id);
      return;
    }
    const transient = status === 0 || status >= 500 || status === 408 || status === 429;
    const notYet = (status === 403 || status === 404) && p.refusals < NOT_YET_RETRIES;
    if (transient || notYet) {
      if (notYet) p.refusals += 1;
      this._backOff(detail);
      return;
    }
    // Refused for a reason retrying cannot fix: keep the chunks, stop this part, say why.
    p.blocked = detail;
  }

  /**
   * @param {string} method
   * @param {string} url
   * @param {{json?: any, body?: Blob, headers?: Record<string, string>, timeoutMs?: number}} [opts]
   * @returns {Promise<Answer>}
   */
  async _request(method, url, opts = {}) {
    const headers = new Headers(opts.headers);
    headers.set('Authorization', `Bearer ${this.token() ?? ''}`);
    /** @type {BodyInit | undefined} */
    let body = opts.body;
    if (opts.json !== undefined) {
      headers.set('Content-Type', 'application/json');
      body = JSON.stringify(opts.json);
    }
    let res;
    try {
      res = await fetch(url, {
        method, headers, body, cache: 'no-store', signal: AbortSignal.timeout(opts.timeoutMs ?? REQUEST_TIMEOUT_MS),
      });
    } catch (err) {
      return { status: 0, body: null, detail: `the server is not reachable (${/** @type {Error} */ (err)?.name ?? 'network'})` };
    }
    const text = await res.text().catch(() => '');
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: the detail is the status
    }
    const detail = typeof parsed?.detail === 'string' ? parsed.detail : `HTTP ${res.status}`;
    return { status: res.status, body: parsed, detail };
  }

  // ---- state

  /**
   * @param {string} id
   * @param {string} performer
   * @param {string} url
   * @returns {SessionState}
   */
  _newSession(id, performer, url) {
    /** @type {SessionState} */
    const session = { id, performer, url, parts: new Map(), synced: null, closed: null, revoked: false, done: false, reserved: 0 };
    this.sessions.set(id, session);
    return session;
  }

  /**
   * @param {PartRecord} rec
   * @param {number[]} pending
   * @param {boolean} recording
   * @returns {PartState}
   */
  _partState(rec, pending, recording) {
    return {
      rec, pending, acked: new Set(), inFlight: new Set(), infoSent: false, infoBusy: false,
      endSent: false, endBusy: false, recording, serverChunks: null, blocked: null, refusals: 0,
      pieceBytes: PIECE_BYTES, carry: null,
    };
  }

  /**
   * A session whose every part is ended and acknowledged is done: its records go.
   * @param {SessionState} session
   */
  _settle(session) {
    if (session.done || session.revoked) return;
    const parts = [...session.parts.values()];
    if (!session.closed && (parts.length === 0 || !parts.every(partDone))) return;
    session.done = true;
    this.store.deleteSession(session.id, session.performer).catch(() => {});
  }

  _changed() {
    this.onChange();
  }

  /** @returns {Summary} what the page shows, and `window.improv.upload` */
  summary() {
    const sessions = [...this.sessions.values()];
    /** @type {Summary['parts']} */
    const parts = [];
    let recording = false;
    let blocked = null;
    let working = false;
    for (const s of sessions) {
      for (const p of [...s.parts.values()].sort((a, b) => a.rec.part - b.rec.part)) {
        parts.push({
          session_id: s.id, part: p.rec.part, reason: p.rec.info?.reason ?? null, recorded: recordedOf(p),
          acked: p.acked.size, pending: p.pending.length, ended: !!p.rec.ended, blocked: p.blocked,
        });
        if (s.revoked || s.closed) continue;
        if (p.recording) recording = true;
        if (p.blocked) blocked = blocked ?? p.blocked;
        if (!partDone(p)) working = true;
      }
    }
    const current = this.current ? this.sessions.get(this.current) : null;
    let state = 'idle';
    if (recording) state = 'recording';
    else if (blocked) state = 'failed';
    else if (working) state = 'uploading';
    else if (current?.revoked) state = 'revoked';
    else if (sessions.some((s) => s.closed && s.closed !== 'complete')) state = 'failed';
    else if (sessions.length) state = 'complete';
    const live = parts.filter((p) => {
      const s = this.sessions.get(p.session_id);
      return s && !s.revoked;
    });
    return {
      state,
      acked: live.reduce((n, p) => n + p.acked, 0),
      recorded: live.reduce((n, p) => n + p.recorded, 0),
      pending: live.reduce((n, p) => n + p.pending, 0),
      parts,
      error: blocked ?? this.error,
      session_id: this.current,
      budget_bps: this.paced ? Math.round(Math.max(MIN_BUDGET_BPS, this.budget.bps)) : null,
      call: this.budget.measured,
    };
  }
}

export { StoreFullError };
