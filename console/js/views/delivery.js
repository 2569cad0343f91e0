// /ui/deliveries/{id} — one delivery with every attempt, and Replay.

import { api } from '../api.js';
import { announce, confirmAction, errorBox, fact, h, loading, replaceContent } from '../dom.js';
import { badge, bareUrl, breakableUrl, count, duration, timeAgo } from '../format.js';

const FINAL = ['succeeded', 'failed', 'skipped'];
/** Excerpts longer than this start folded. */
const LONG_EXCERPT = 240;

export function deliveryView(context) {
  const [id] = context.args;
  context.title(`Delivery ${id.slice(-8)}`);
  let delivery = null;
  let endpoint = null;
  let gone = false;
  let shownSignature = '';

  const statusSlot = h('span', { class: 'heading-status' });
  const facts = h('dl', { class: 'facts' });
  // Which buttons show depends on the status: a finished delivery can be replayed, a pending
  // one attempted now or cancelled, a held one (its endpoint is disabled) cancelled.
  const replayButton = h('button', { type: 'button', class: 'button primary', id: 'replay', hidden: true }, 'Replay');
  const retryButton = h('button', { type: 'button', class: 'button', id: 'retry-now', hidden: true }, 'Retry now');
  const cancelButton = h('button', { type: 'button', class: 'button danger', id: 'cancel', hidden: true }, 'Cancel…');
  const heldNote = h('p', { class: 'help', hidden: true }, 'Held: its endpoint is disabled.');
  const result = h('div', { class: 'action-result', 'aria-live': 'polite' });
  const problem = h('div', { class: 'refresh-problem' });
  const attempts = h('div', {}, loading('Loading attempts'));
  const attemptsTitle = h('h2', { id: 'attempts-title' }, 'Attempts');
  context.main.append(
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '/ui/deliveries' }, 'Deliveries'), h('span', { 'aria-hidden': 'true' }, ' / '), h('span', { class: 'mono' }, id.slice(-8))),
    h(
      'div',
      { class: 'page-head' },
      h('div', { class: 'title-row' }, h('h1', {}, 'Delivery'), statusSlot),
      h('div', { class: 'toolbar' }, heldNote, retryButton, cancelButton, replayButton),
    ),
    problem,
    result,
    h('section', { class: 'card', 'aria-label': 'Details' }, facts),
    h('section', { class: 'card', 'aria-labelledby': 'attempts-title' }, h('div', { class: 'section-head' }, attemptsTitle), attempts),
  );

  async function refresh() {
    if (gone) return;
    let fresh;
    try {
      fresh = await api.delivery(id);
    } catch (error) {
      if (!context.alive()) return;
      if (error.status === 404) return showGone();
      replaceContent(problem, errorBox('Could not refresh this delivery.', error));
      return;
    }
    if (!context.alive()) return;
    problem.replaceChildren();
    if (delivery && delivery.status !== fresh.status) announce(`Delivery ${fresh.status}`);
    delivery = fresh;
    if (!endpoint || endpoint.id !== delivery.endpoint_id) {
      endpoint = await api.endpoint(delivery.endpoint_id).catch(() => null);
      if (!context.alive()) return;
    }
    show();
  }

  function show() {
    // Redraw only what changed: an open excerpt stays open, a screen reader is not re-read.
    const signature = JSON.stringify([delivery, endpoint]);
    if (signature === shownSignature) return;
    shownSignature = signature;
    statusSlot.replaceChildren(badge(delivery.status, { id: 'delivery-status' }));
    replaceContent(
      facts,
      fact(
        'Endpoint',
        h('a', { href: `/ui/endpoints/${encodeURIComponent(delivery.endpoint_id)}` }, endpoint ? breakableUrl(bareUrl(endpoint.url)) : delivery.endpoint_id),
        { wide: true },
      ),
      endpoint ? fact('Tenant', endpoint.tenant) : null,
      fact('Created', timeAgo(delivery.created_at)),
      fact('Updated', timeAgo(delivery.updated_at)),
      fact('Next attempt', delivery.next_attempt_at ? timeAgo(delivery.next_attempt_at) : h('span', { class: 'muted' }, 'none')),
      fact('Attempts', `${count(delivery.attempt_count)} in ${count(delivery.cycle)} cycle${delivery.cycle === 1 ? '' : 's'}`),
      delivery.held_reason ? fact('Held', delivery.held_reason) : null,
      delivery.last_error ? fact('Last error', delivery.last_error) : null,
      delivery.url !== (endpoint && endpoint.url) ? fact('Sent to', h('span', { class: 'mono' }, breakableUrl(delivery.url)), { wide: true }) : null,
      fact('Delivery id', h('span', { class: 'mono break' }, delivery.id), { wide: true }),
      fact('Message id', h('span', { class: 'mono break' }, delivery.message_id), { wide: true }),
    );
    const replayable = FINAL.includes(delivery.status);
    replayButton.hidden = !replayable;
    retryButton.hidden = delivery.status !== 'pending';
    cancelButton.hidden = !['pending', 'held'].includes(delivery.status);
    heldNote.hidden = delivery.status !== 'held';
    const list = delivery.attempts || [];
    attemptsTitle.textContent = list.length ? `Attempts (${count(list.length)})` : 'Attempts';
    replaceContent(attempts, list.length ? attemptTable(list) : h('p', { class: 'muted' }, 'No attempt yet.'));
  }

  function showGone() {
    gone = true;
    replaceContent(
      context.main,
      h(
        'section',
        { class: 'card empty-state' },
        h('h1', {}, 'Delivery not found'),
        h('p', {}, 'There is no delivery ', h('code', {}, id), '. Finished deliveries are removed after the retention period.'),
        h('p', {}, h('a', { href: '/ui/deliveries' }, '← All deliveries')),
      ),
    );
  }

  /** Runs an action with its button busy; says what happened in the result panel. */
  async function act(button, work, done, failed) {
    if (button.disabled) return;
    button.disabled = true;
    try {
      await work();
      if (!context.alive()) return;
      replaceContent(result, h('p', { class: 'callout ok' }, done));
      announce(done);
      context.refreshNow();
    } catch (error) {
      if (context.alive()) replaceContent(result, errorBox(failed, error));
    } finally {
      button.disabled = false;
    }
  }

  replayButton.addEventListener('click', () =>
    act(
      replayButton,
      () => api.replay(id),
      'Replay started: a fresh attempt cycle begins; earlier attempts stay in the list.',
      'Replay did not start.',
    ),
  );
  retryButton.addEventListener('click', () =>
    act(retryButton, () => api.retryNow(id), 'Attempting now instead of at the scheduled time.', 'Retry did not start.'),
  );
  cancelButton.addEventListener('click', async () => {
    const confirmed = await confirmAction({
      title: 'Cancel this delivery?',
      text: 'No more attempts are made; it becomes failed (cancelled by an operator) and can be replayed later.',
      confirm: 'Cancel delivery',
      confirmId: 'confirm-cancel',
      dismiss: 'Keep it',
    });
    if (!confirmed || !context.alive()) return;
    await act(cancelButton, () => api.cancel(id), 'Delivery cancelled.', 'The delivery could not be cancelled.');
  });

  // Fast while something is happening; a finished delivery changes only when replayed.
  const controller = {
    refresh: async () => {
      await refresh();
      controller.every = delivery && FINAL.includes(delivery.status) ? 10000 : 2000;
    },
    every: 2000,
  };
  return controller;
}

function attemptTable(attempts) {
  // Newest first: with dozens of retries, the latest is what an operator is after.
  const rows = [...attempts].reverse();
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'data responsive attempts', id: 'attempts' },
      h('caption', { class: 'visually-hidden' }, 'Attempts, newest first'),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', { scope: 'col', class: 'num' }, 'Attempt'),
          h('th', { scope: 'col' }, 'Started'),
          h('th', { scope: 'col', class: 'num' }, 'Duration'),
          h('th', { scope: 'col' }, 'Result'),
          h('th', { scope: 'col' }, 'Response'),
        ),
      ),
      h(
        'tbody',
        {},
        rows.map((a) =>
          h(
            'tr',
            { 'data-attempt': a.attempt },
            h('td', { 'data-label': 'Attempt', class: 'num' }, `#${a.attempt}`, a.cycle > 1 ? h('span', { class: 'muted cycle' }, ` cycle ${a.cycle}`) : null),
            h('td', { 'data-label': 'Started' }, timeAgo(a.started_at)),
            h('td', { 'data-label': 'Duration', class: 'num' }, duration(a.duration_ms)),
            h(
              'td',
              { 'data-label': 'Result' },
              badge(a.success ? 'succeeded' : 'failed'),
              ' ',
              h('span', { class: 'result-text' }, a.status_code ? `HTTP ${a.status_code}` : a.error || '—'),
              a.error_detail ? h('div', { class: 'muted detail' }, a.error_detail) : null,
            ),
            h('td', { 'data-label': 'Response', class: 'excerpt-cell' }, excerpt(a.response_excerpt)),
          ),
        ),
      ),
    ),
  );
}

function excerpt(text) {
  if (!text) return h('span', { class: 'muted' }, 'empty');
  if (text.length <= LONG_EXCERPT) return h('pre', { class: 'excerpt' }, text);
  return h(
    'details',
    { class: 'excerpt-more' },
    h('summary', {}, h('code', {}, `${text.slice(0, 80)}…`), h('span', { class: 'muted' }, ` (${count(text.length)} characters)`)),
    h('pre', { class: 'excerpt' }, text),
  );
}
