// @ts-check
/**
 * A studio room's high-quality uploads as the room description lists them (`uploads`: one per
 * performer of each studio session whose copy is not settled, or settled in the last minutes),
 * in the words the tiles and the room card use: "HQ: pending", "HQ: uploading 45 %",
 * "HQ: complete", "HQ: incomplete", "HQ: rejected".
 */

/**
 * @typedef {{session_id: string, performer_id: string, display_name?: string, state: string,
 *   percent?: number | null, chunks?: {acked?: number, recorded?: number | null}, bytes?: number}} Upload
 */

/**
 * @param {Upload} upload
 * @returns {string}
 */
export function hqText(upload) {
  if (upload.state === 'uploading') {
    return typeof upload.percent === 'number' ? `HQ: uploading ${Math.floor(upload.percent)} %` : 'HQ: uploading';
  }
  return `HQ: ${upload.state || 'unknown'}`;
}

/**
 * A tooltip with the counts behind the text.
 * @param {Upload} upload
 * @returns {string}
 */
export function hqTitle(upload) {
  const acked = upload.chunks?.acked ?? 0;
  const recorded = upload.chunks?.recorded;
  const mb = ((upload.bytes ?? 0) / 1e6).toFixed(1);
  const counts = recorded != null ? `${acked} of ${recorded} chunks` : `${acked} chunks`;
  return `High-quality copy of session ${upload.session_id}: ${counts}, ${mb} MB received`;
}

/**
 * Each performer's upload of the latest session (session ids sort by start time).
 * @param {any} uploads the room's `uploads`
 * @returns {Map<string, Upload>} performer id -> upload
 */
export function latestUploads(uploads) {
  /** @type {Map<string, Upload>} */
  const out = new Map();
  for (const u of Array.isArray(uploads) ? uploads : []) {
    if (!u || !u.performer_id) continue;
    const had = out.get(u.performer_id);
    if (!had || String(u.session_id) > String(had.session_id)) out.set(u.performer_id, u);
  }
  return out;
}
