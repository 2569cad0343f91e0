// Building the page node by node: no markup strings anywhere, so text from a receiver (a
// response excerpt, a URL) is always text. The page's CSP enforces this with Trusted Types.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(element, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (value === true) {
      element.setAttribute(name, '');
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else if (child instanceof Node) element.append(child);
    else element.append(document.createTextNode(String(child)));
  }
}

/** An HTML element: `h('a', {href: '/ui/'}, 'Endpoints')`. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/**
 * Replaces a container's content, keeping keyboard focus on the "same" control when the new
 * content has one with the same `data-key` or id: a page that refreshes by itself must not
 * throw a keyboard user back to the top.
 */
export function replaceContent(container, ...nodes) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.key || active.id : null;
  container.replaceChildren(...nodes.flat().filter(Boolean));
  if (key) {
    const escaped = CSS.escape(key);
    const again = container.querySelector(`[data-key="${escaped}"], #${escaped}`);
    if (again) again.focus({ preventScroll: true });
  }
}

/** Says something to screen readers through the page's one polite live region. */
export function announce(text) {
  const region = document.getElementById('announcer');
  if (!region) return;
  region.textContent = '';
  // A new text node in a later frame: repeated messages are announced again.
  requestAnimationFrame(() => {
    region.textContent = text;
  });
}

/** A "loading" placeholder that says so to everyone. */
export function loading(what = 'Loading') {
  return h('p', { class: 'loading', 'aria-busy': 'true' }, `${what}…`);
}

/** An error box for a failed load or action. */
export function errorBox(title, error) {
  return h(
    'div',
    { class: 'callout error', role: 'alert' },
    h('strong', {}, title),
    ' ',
    error && error.message ? error.message : String(error || ''),
  );
}

/** One term and its value in a `dl.facts` grid; `wide` ones take a whole row. */
export function fact(term, value, { wide = false } = {}) {
  return h('div', { class: wide ? 'fact wide' : 'fact' }, h('dt', {}, term), h('dd', {}, value));
}

/**
 * Asks before something that cannot be undone: a modal `<dialog>` (focus stays inside, Escape
 * cancels, Cancel has the focus first). Resolves to whether the operator confirmed.
 */
export function confirmAction({ title, text, confirm, confirmId, dismiss = 'Cancel' }) {
  const dialog = h(
    'dialog',
    { class: 'confirm', 'aria-labelledby': 'confirm-title', 'aria-describedby': 'confirm-text' },
    h(
      'form',
      { method: 'dialog' },
      h('h2', { id: 'confirm-title' }, title),
      h('p', { id: 'confirm-text' }, text),
      h(
        'div',
        { class: 'toolbar end' },
        h('button', { class: 'button', value: 'cancel', autofocus: true }, dismiss),
        h('button', { class: 'button danger', value: 'confirm', id: confirmId }, confirm),
      ),
    ),
  );
  const opener = document.activeElement;
  document.body.append(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      const confirmed = dialog.returnValue === 'confirm';
      dialog.remove();
      if (!confirmed && opener && opener.isConnected) opener.focus();
      resolve(confirmed);
    });
    dialog.showModal();
  });
}
