// Sign-in: the admin token is checked against the daemon, then kept in this tab only.

import { api, session } from '../api.js';
import { announce, h } from '../dom.js';

export function signInView(context, { message, onSignedIn }) {
  context.title('Sign in');
  const input = h('input', {
    id: 'token',
    name: 'token',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    'aria-describedby': 'token-help',
  });
  const error = h('p', { id: 'sign-in-error', class: 'callout error', role: 'alert', hidden: true });
  const button = h('button', { type: 'submit', class: 'button primary' }, 'Sign in');
  const form = h(
    'form',
    { class: 'stack', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'token' }, 'Admin token'), input),
    h(
      'p',
      { id: 'token-help', class: 'help' },
      'The value of HERALD_ADMIN_TOKEN. It stays in this browser tab only and is sent to this ' +
        'daemon’s admin API. Leave it empty if the daemon runs without tokens.',
    ),
    error,
    h('div', {}, button),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    button.disabled = true;
    button.textContent = 'Checking…';
    error.hidden = true;
    try {
      await api.checkToken(token);
      session.signIn(token);
      announce('Signed in');
      onSignedIn();
    } catch (failure) {
      error.textContent = reason(failure);
      error.hidden = false;
      input.setAttribute('aria-invalid', 'true');
      input.setAttribute('aria-describedby', 'token-help sign-in-error');
      input.focus();
      input.select();
    } finally {
      button.disabled = false;
      button.textContent = 'Sign in';
    }
  });
  context.main.append(
    h(
      'section',
      { class: 'card sign-in', 'aria-labelledby': 'sign-in-title' },
      h('h1', { id: 'sign-in-title' }, 'Sign in to herald'),
      message ? h('p', { class: 'callout info' }, message) : null,
      form,
    ),
  );
  // A deep link opened in a fresh tab lands here first; the token field is what to do next.
  if (!message) queueMicrotask(() => input.focus());
  return { every: 0 };
}

function reason(failure) {
  if (failure.status === 401) return 'This token was not accepted. Check HERALD_ADMIN_TOKEN and try again.';
  if (failure.status === 403) return 'This is the producer token. The console needs the admin token.';
  if (failure.status === 0) return 'The daemon could not be reached. Is herald running?';
  return `Sign-in failed: ${failure.message}`;
}
