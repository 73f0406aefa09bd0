// @ts-check
/**
 * What the performer reads about the high-quality copy: one line in #upload (recording, uploading
 * N %, complete, failed and why) and, when it matters, the storage notice under it.
 */

/** @typedef {import('./uploader.js').Summary} Summary */

/**
 * @param {Summary} s
 * @returns {string} the percentage of recorded chunks the server acknowledged
 */
function percent(s) {
  return s.recorded ? String(Math.floor((100 * s.acked) / s.recorded)) : '0';
}

/**
 * The #upload line for a summary; '' when there is nothing to say.
 * @param {Summary} s
 * @returns {string}
 */
export function uploadText(s) {
  const prefix = 'High-quality copy: ';
  switch (s.state) {
    case 'idle': return '';
    case 'recording':
      if (s.error) return `${prefix}recording · upload failed: ${s.error} (retrying)`;
      return `${prefix}recording · ${s.acked} of ${s.recorded} sent`;
    case 'uploading':
      if (s.error) return `${prefix}upload failed: ${s.error} (retrying)`;
      return `${prefix}uploading ${percent(s)} % (${s.acked} of ${s.recorded})`;
    case 'complete': return `${prefix}complete`;
    case 'revoked': return `${prefix}deleted (consent withdrawn)`;
    case 'failed': return `${prefix}upload stopped: ${s.error ?? 'refused by the server'}. Keep this tab open; it retries when you reconnect.`;
    default: return `${prefix}${s.state}`;
  }
}

/**
 * @param {{line: HTMLElement, warning: HTMLElement}} els
 * @param {Summary} s
 * @param {string | null} notice about the browser's storage, if any
 */
export function showUpload(els, s, notice) {
  const text = uploadText(s);
  els.line.textContent = text;
  els.line.hidden = !text;
  els.line.dataset.state = s.state;
  els.warning.textContent = notice ?? '';
  els.warning.hidden = !notice;
}
