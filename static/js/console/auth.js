// @ts-check
/**
 * The operator token: kept in sessionStorage (this tab only), taken from `#token=...` once.
 */

const KEY = 'improv.console.token';

/**
 * Take a token from the URL fragment (then strip it from the address bar), else the stored one.
 * @returns {string | null}
 */
export function initialToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const fromUrl = params.get('token');
  if (params.has('token')) {
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
  }
  if (fromUrl && fromUrl.trim()) {
    saveToken(fromUrl.trim());
    return fromUrl.trim();
  }
  return sessionStorage.getItem(KEY);
}

/** @param {string} token */
export function saveToken(token) {
  sessionStorage.setItem(KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
}

/** @returns {string | null} */
export function currentToken() {
  return sessionStorage.getItem(KEY);
}
