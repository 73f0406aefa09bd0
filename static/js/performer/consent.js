// @ts-check
/**
 * Consent: the text the server sends in `welcome.consent`, shown before anything is captured,
 * and agreed to only as shown (its SHA-256 is checked here before the `consent` message goes out).
 */
import { sha256Hex } from '../common/digest.js';
import { ui } from './view.js';

/**
 * @typedef {{version?: any, text?: string, text_sha256?: string, accepted?: boolean}} Consent
 * @typedef {{version: any, text_sha256: string}} Accepted what the performer agreed to
 */

/**
 * Is the text the one the server's hash names? Never agree to a text other than the one shown.
 * @param {Consent} consent
 * @returns {Promise<boolean>}
 */
export async function textVerified(consent) {
  const digest = await sha256Hex(consent.text ?? '');
  return digest === String(consent.text_sha256).toLowerCase();
}

/**
 * @param {Consent} consent
 * @returns {Accepted}
 */
export function acceptance(consent) {
  return { version: consent.version, text_sha256: /** @type {string} */ (consent.text_sha256) };
}

/**
 * Was this exact text accepted on this page already?
 * @param {Accepted | null} accepted
 * @param {Consent} consent
 * @returns {boolean}
 */
export function sameText(accepted, consent) {
  return !!accepted && accepted.version === consent.version && accepted.text_sha256 === consent.text_sha256;
}

/**
 * The `consent` message for a text.
 * @param {Consent} consent
 */
export function consentMessage(consent) {
  return { type: 'consent', version: consent.version, text_sha256: consent.text_sha256 };
}

/** @param {Consent} consent */
export function showConsent(consent) {
  ui.consentVersion.textContent = consent.version != null ? `version ${consent.version}` : '';
  ui.consentText.textContent = consent.text ?? '';
  ui.consent.hidden = false;
  ui.accept.disabled = false;
}

export function hideConsent() {
  ui.consent.hidden = true;
}
