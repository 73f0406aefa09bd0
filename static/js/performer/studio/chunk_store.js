// @ts-check
/**
 * The chunks of the high-quality copy that the server has not acknowledged yet, in IndexedDB so
 * that a reload, a crash or a closed tab loses none: a chunk is stored before its upload starts
 * and deleted only after the server's 2xx. Each part has a record too (its info, how many chunks
 * were recorded, whether it ended), written in the same transaction as its chunks, so that a page
 * loaded later can finish what an earlier one began.
 *
 * Bounds: where IndexedDB refuses a chunk (quota, a broken database, or no IndexedDB at all) the
 * chunk is kept in memory instead, up to `memoryBound` (the profile's hq.page_memory_bytes); past
 * that `addChunk` throws StoreFullError and the caller stops recording (the live copy remains).
 * `nearlyFull` says when the browser's storage is over STORAGE_WARN_FRACTION of its quota, for
 * the performer's notice.
 */

const DB_NAME = 'improv-hq';
const DB_VERSION = 1;
/** Unacknowledged chunks kept in memory once IndexedDB refuses them (lost on reload: said so),
 * where the profile does not say (a server older than hq.page_memory_bytes; the server's own
 * default is the same, improv_capture/rooms/profiles.py PAGE_MEMORY_BYTES). */
export const MEMORY_BOUND_BYTES = 256 * 1024 * 1024;
/** Warn the performer past this share of the browser's storage quota. */
export const STORAGE_WARN_FRACTION = 0.8;

/**
 * @typedef {{session_id: string, performer_id: string, part: number, index: number, blob: Blob,
 *   sha256: string, bytes: number}} Chunk
 * @typedef {{session_id: string, performer_id: string, part: number, upload_url: string,
 *   info: Record<string, any>, recorded: number, ended: null | {chunks: number}, page_id: string}} PartRecord
 */

/** The store could keep no more chunks, on disk or in memory. */
export class StoreFullError extends Error {}

/**
 * @template T
 * @param {IDBRequest<T>} request
 * @returns {Promise<T>}
 */
function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/**
 * @param {IDBTransaction} tx
 * @returns {Promise<void>}
 */
function committed(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new DOMException('transaction aborted', 'AbortError'));
  });
}

/** @param {string} session @param {string} performer @param {number} part @param {number} index */
function chunkKey(session, performer, part, index) {
  return JSON.stringify([session, performer, part, index]);
}

export class ChunkStore {
  constructor() {
    /** @type {Promise<IDBDatabase | null> | null} */
    this.db = null;
    /** @type {Map<string, Chunk>} chunks IndexedDB refused */
    this.memory = new Map();
    this.memoryBytes = 0;
    /** Bytes `memory` may hold. */
    this.memoryBound = MEMORY_BOUND_BYTES;
    /** @type {string | null} why IndexedDB refused the last chunk it refused (an error's name) */
    this.refusal = null;
  }

  /**
   * The room's bound on chunks held in memory (the profile's hq.page_memory_bytes).
   * @param {unknown} bytes anything but a positive number: the default
   */
  setMemoryBound(bytes) {
    this.memoryBound = typeof bytes === 'number' && Number.isFinite(bytes) && bytes > 0 ? bytes : MEMORY_BOUND_BYTES;
  }

  /** @returns {Promise<IDBDatabase | null>} null where the browser has no usable IndexedDB */
  open() {
    if (!this.db) {
      this.db = new Promise((resolve) => {
        let request;
        try {
          request = indexedDB.open(DB_NAME, DB_VERSION);
        } catch {
          resolve(null);
          return;
        }
        request.onupgradeneeded = () => {
          const db = request.result;
          db.createObjectStore('parts', { keyPath: ['session_id', 'performer_id', 'part'] });
          db.createObjectStore('chunks', { keyPath: ['session_id', 'performer_id', 'part', 'index'] });
        };
        request.onsuccess = () => resolve(request.result);
        request.onerror = () => resolve(null);
        request.onblocked = () => resolve(null);
      });
    }
    return this.db;
  }

  /**
   * Write a part's record (its info, counts, end).
   * @param {PartRecord} part
   */
  async putPart(part) {
    const db = await this.open();
    if (!db) return;
    const tx = db.transaction('parts', 'readwrite');
    tx.objectStore('parts').put(part);
    await committed(tx).catch(() => {}); // the page keeps the record in memory too
  }

  /**
   * Keep a chunk (and its part's new count) until the server acknowledges it.
   * @param {Chunk} chunk
   * @param {PartRecord} part
   * @returns {Promise<'disk' | 'memory'>} where it went
   * @throws {StoreFullError} when neither IndexedDB nor the memory bound has room
   */
  async addChunk(chunk, part) {
    const db = await this.open();
    if (db) {
      try {
        const tx = db.transaction(['chunks', 'parts'], 'readwrite');
        tx.objectStore('chunks').put(chunk);
        tx.objectStore('parts').put(part);
        await committed(tx);
        return 'disk';
      } catch (err) {
        // QuotaExceededError most often; whatever it was, the chunk must live somewhere
        this.refusal = /** @type {Error | null} */ (err)?.name || 'Error';
      }
    } else {
      this.refusal = 'no IndexedDB';
    }
    if (this.memoryBytes + chunk.bytes > this.memoryBound) {
      throw new StoreFullError('no room left for the high-quality copy in this browser');
    }
    this.memory.set(chunkKey(chunk.session_id, chunk.performer_id, chunk.part, chunk.index), chunk);
    this.memoryBytes += chunk.bytes;
    await this.putPart(part);
    return 'memory';
  }

  /**
   * Every part record of a performer, any session.
   * @param {string} performerId
   * @returns {Promise<PartRecord[]>}
   */
  async parts(performerId) {
    const db = await this.open();
    if (!db) return [];
    try {
      const all = await done(db.transaction('parts').objectStore('parts').getAll());
      return /** @type {PartRecord[]} */ (all).filter((p) => p.performer_id === performerId);
    } catch {
      return [];
    }
  }

  /**
   * Indices of the chunks of a part still kept (not yet acknowledged).
   * @param {string} session
   * @param {string} performer
   * @param {number} part
   * @returns {Promise<number[]>} ascending
   */
  async indices(session, performer, part) {
    /** @type {Set<number>} */
    const out = new Set();
    for (const c of this.memory.values()) {
      if (c.session_id === session && c.performer_id === performer && c.part === part) out.add(c.index);
    }
    const db = await this.open();
    if (db) {
      const range = IDBKeyRange.bound([session, performer, part, -Infinity], [session, performer, part, Infinity]);
      try {
        const keys = await done(db.transaction('chunks').objectStore('chunks').getAllKeys(range));
        for (const key of keys) out.add(Number(/** @type {any[]} */ (key)[3]));
      } catch {
        // unreadable: what memory holds is what we have
      }
    }
    return [...out].sort((a, b) => a - b);
  }

  /**
   * @param {string} session
   * @param {string} performer
   * @param {number} part
   * @param {number} index
   * @returns {Promise<Chunk | null>}
   */
  async chunk(session, performer, part, index) {
    const kept = this.memory.get(chunkKey(session, performer, part, index));
    if (kept) return kept;
    const db = await this.open();
    if (!db) return null;
    const found = await done(db.transaction('chunks').objectStore('chunks').get([session, performer, part, index]));
    return /** @type {Chunk | undefined} */ (found) ?? null;
  }

  /**
   * Forget an acknowledged chunk.
   * @param {string} session
   * @param {string} performer
   * @param {number} part
   * @param {number} index
   */
  async deleteChunk(session, performer, part, index) {
    const key = chunkKey(session, performer, part, index);
    const kept = this.memory.get(key);
    if (kept) {
      this.memory.delete(key);
      this.memoryBytes -= kept.bytes;
    }
    const db = await this.open();
    if (!db) return;
    const tx = db.transaction('chunks', 'readwrite');
    tx.objectStore('chunks').delete([session, performer, part, index]);
    await committed(tx).catch(() => {});
  }

  /**
   * Forget everything of a performer's session: done, revoked, or closed by the server.
   * @param {string} session
   * @param {string} performer
   */
  async deleteSession(session, performer) {
    for (const [key, c] of this.memory) {
      if (c.session_id === session && c.performer_id === performer) {
        this.memory.delete(key);
        this.memoryBytes -= c.bytes;
      }
    }
    const db = await this.open();
    if (!db) return;
    const tx = db.transaction(['chunks', 'parts'], 'readwrite');
    tx.objectStore('chunks').delete(IDBKeyRange.bound(
      [session, performer, -Infinity, -Infinity], [session, performer, Infinity, Infinity]));
    tx.objectStore('parts').delete(IDBKeyRange.bound([session, performer, -Infinity], [session, performer, Infinity]));
    await committed(tx).catch(() => {});
  }

  /** @returns {boolean} some chunks live only in this tab's memory */
  get inMemory() {
    return this.memory.size > 0;
  }

  /** @returns {Promise<boolean>} the browser's storage is over STORAGE_WARN_FRACTION of its quota */
  async nearlyFull() {
    try {
      const { usage = 0, quota = 0 } = await navigator.storage.estimate();
      return quota > 0 && usage / quota > STORAGE_WARN_FRACTION;
    } catch {
      return false;
    }
  }
}
