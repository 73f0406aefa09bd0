// @ts-check
/**
 * The one way the pages find and build DOM. Text is always set as text, never parsed as HTML
 * (the pages run under a strict Content-Security-Policy: no inline script or style).
 */

/**
 * The element with this data-testid (throws if the page lacks it: a broken page should say so).
 * @param {string} testid
 * @param {ParentNode} [root]
 * @returns {HTMLElement}
 */
export function hook(testid, root = document) {
  const el = root.querySelector(`[data-testid="${testid}"]`);
  if (!el) throw new Error(`missing element ${testid}`);
  return /** @type {HTMLElement} */ (el);
}

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing element #${id}`);
  return el;
}

/**
 * Create an element: h('span', {className: 'x', dataset: {testid: 'y'}}, 'text', child).
 * `dataset` and `attrs` are objects; an `on...` function is an event listener; any other key is
 * set as a property.
 * @param {string} tag
 * @param {Record<string, any>} [props]
 * @param {...(Node | string | null | undefined | false)} children
 * @returns {HTMLElement}
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'attrs') for (const [a, v] of Object.entries(value)) el.setAttribute(a, String(v));
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else /** @type {any} */ (el)[key] = value;
  }
  for (const child of children) {
    if (child == null || child === false) continue;
    el.append(child);
  }
  return el;
}
