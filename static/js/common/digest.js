// @ts-check
/**
 * SHA-256 in hex, the one digest both the consent check (the text shown) and the high-quality
 * upload (each chunk's X-Chunk-Sha256) use. crypto.subtle exists in secure contexts only, which
 * the performer page requires anyway (camera and microphone).
 */

/**
 * @param {BufferSource | string} data a string is hashed as its UTF-8 bytes
 * @returns {Promise<string>} 64 lower-case hex digits
 */
export async function sha256Hex(data) {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}
