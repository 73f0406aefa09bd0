// @ts-check
/**
 * HTTP API client: JSON in and out, `Authorization: Bearer <operator token>`.
 * A 401 anywhere means the token is no longer good: `onUnauthorized` is called once per failure.
 */
import { currentToken } from './auth.js';

export class ApiError extends Error {
  /**
   * @param {number} status 0 for a network failure
   * @param {string} message
   */
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

/** @type {(err: ApiError) => void} */
let unauthorizedHandler = () => {};

/** @param {(err: ApiError) => void} fn */
export function onUnauthorized(fn) {
  unauthorizedHandler = fn;
}

/**
 * The readable message of an error body `{"detail": ...}` (a string or a validation list).
 * @param {any} body
 * @param {number} status
 * @returns {string}
 */
function detailText(body, status) {
  const detail = body?.detail;
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).slice(1).join('.') || 'input'}: ${d.msg}`).join('; ');
  }
  return `HTTP ${status}`;
}

/**
 * @param {string} path
 * @param {RequestInit & {token?: string}} [init]
 * @returns {Promise<Response>}
 */
async function send(path, init = {}) {
  const token = init.token ?? currentToken() ?? '';
  const headers = new Headers(init.headers);
  headers.set('Authorization', `Bearer ${token}`);
  let res;
  try {
    res = await fetch(path, { ...init, headers, cache: 'no-store' });
  } catch (err) {
    if (/** @type {Error} */ (err)?.name === 'AbortError') throw err;
    throw new ApiError(0, 'The server is not reachable');
  }
  if (!res.ok) {
    const body = await res.json().catch(() => null);
    const err = new ApiError(res.status, detailText(body, res.status));
    if (res.status === 401) unauthorizedHandler(err);
    throw err;
  }
  return res;
}

/**
 * A JSON request.
 * @param {string} path e.g. /api/v1/rooms
 * @param {{method?: string, body?: any, token?: string}} [opts]
 * @returns {Promise<any>}
 */
export async function api(path, opts = {}) {
  /** @type {RequestInit & {token?: string}} */
  const init = { method: opts.method ?? 'GET', token: opts.token };
  if (opts.body !== undefined) {
    init.body = JSON.stringify(opts.body);
    init.headers = { 'Content-Type': 'application/json' };
  }
  const res = await send(path, init);
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

/**
 * A file as a Blob (a <video> cannot send the bearer header itself).
 * @param {string} path
 * @param {(loaded: number, total: number) => void} [onProgress]
 * @param {AbortSignal} [signal]
 * @returns {Promise<Blob>}
 */
export async function apiBlob(path, onProgress, signal) {
  const res = await send(path, { signal });
  const total = Number(res.headers.get('content-length')) || 0;
  const type = res.headers.get('content-type') || 'application/octet-stream';
  if (!res.body || !onProgress) return res.blob();
  const reader = res.body.getReader();
  /** @type {Uint8Array[]} */
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.byteLength;
    onProgress(loaded, total);
  }
  return new Blob(chunks, { type });
}

/** Path segment encoder (ids and file paths; a file path keeps its slashes). */
export const seg = encodeURIComponent;

/** @param {string} path */
export function filePath(path) {
  return path.split('/').map(encodeURIComponent).join('/');
}
