// @ts-check
/**
 * Formatting and input helpers of the console modules (DOM building: ../common/dom.js).
 */

/**
 * A position on a session timeline as mm:ss.s (minutes keep counting past 59).
 * @param {number | null | undefined} t seconds
 * @returns {string}
 */
export function fmtTimeline(t) {
  if (t == null || !Number.isFinite(t)) return '--:--.-';
  const tenths = Math.max(0, Math.floor(t * 10 + 1e-6));
  const m = Math.floor(tenths / 600);
  const s = (tenths % 600) / 10;
  return `${String(m).padStart(2, '0')}:${s.toFixed(1).padStart(4, '0')}`;
}

/**
 * An elapsed time as mm:ss, or h:mm:ss from an hour on.
 * @param {number | null | undefined} t seconds
 * @returns {string}
 */
export function fmtClock(t) {
  if (t == null || !Number.isFinite(t)) return '00:00';
  const total = Math.max(0, Math.floor(t));
  const hh = Math.floor(total / 3600);
  const mm = Math.floor((total % 3600) / 60);
  const ss = total % 60;
  const mmss = `${String(mm).padStart(2, '0')}:${String(ss).padStart(2, '0')}`;
  return hh ? `${hh}:${mmss}` : mmss;
}

/**
 * A local date and time, short.
 * @param {string | null | undefined} iso
 * @returns {string}
 */
export function fmtDateTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
}

/**
 * "in 6 d", "in 3 h", "expired" for an ISO time.
 * @param {string | null | undefined} iso
 * @returns {{text: string, expired: boolean}}
 */
export function fmtExpiry(iso) {
  const when = iso ? Date.parse(iso) : NaN;
  if (Number.isNaN(when)) return { text: 'no expiry', expired: false };
  const s = (when - Date.now()) / 1000;
  if (s <= 0) return { text: 'expired', expired: true };
  if (s < 3600) return { text: `expires in ${Math.max(1, Math.round(s / 60))} min`, expired: false };
  if (s < 48 * 3600) return { text: `expires in ${Math.round(s / 3600)} h`, expired: false };
  return { text: `expires in ${Math.round(s / 86400)} d`, expired: false };
}

/**
 * Is the key event aimed at a field where the operator types text?
 * (Sliders, checkboxes and buttons are not: shortcuts still work there.)
 * @param {EventTarget | null} target
 * @returns {boolean}
 */
export function isTyping(target) {
  const el = /** @type {HTMLElement | null} */ (target instanceof HTMLElement ? target : document.activeElement);
  if (!el) return false;
  if (el.isContentEditable) return true;
  if (el instanceof HTMLTextAreaElement || el instanceof HTMLSelectElement) return true;
  if (el instanceof HTMLInputElement) {
    return !['range', 'checkbox', 'radio', 'button', 'submit', 'reset', 'color', 'file', 'image'].includes(el.type);
  }
  return false;
}

/**
 * Normalise a list response: a bare array or `{items: [...]}`.
 * @param {any} value
 * @returns {any[]}
 */
export function items(value) {
  if (Array.isArray(value)) return value;
  if (value && Array.isArray(value.items)) return value.items;
  return [];
}
