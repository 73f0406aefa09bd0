// @ts-check
/**
 * Copy text: the async Clipboard API where the page may use it, else a selected <textarea> and
 * execCommand('copy') (plain http on a LAN address is not a secure context).
 */
import { h } from '../common/dom.js';

/**
 * @param {string} text
 * @returns {Promise<boolean>} whether the text reached the clipboard
 */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // denied or unfocused: try the old way
    }
  }
  const area = /** @type {HTMLTextAreaElement} */ (h('textarea', { value: text, attrs: { readonly: '' } }));
  area.style.position = 'fixed';
  area.style.top = '-1000px';
  area.style.opacity = '0';
  const active = /** @type {HTMLElement | null} */ (document.activeElement);
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  area.remove();
  active?.focus?.();
  return ok;
}

/**
 * Select an element's text so the operator can press Ctrl+C when copying failed.
 * @param {Element} el
 */
export function selectText(el) {
  const range = document.createRange();
  range.selectNodeContents(el);
  const sel = getSelection();
  sel?.removeAllRanges();
  sel?.addRange(range);
}
