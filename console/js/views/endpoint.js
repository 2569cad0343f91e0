// /ui/endpoints/{id} — one endpoint: its 14-day chart, recent deliveries, and what an operator
// can do to it (enable, disable, send a test, replay what failed, delete).

import { api } from '../api.js';
import { dayChart, dayTable, legend, summary } from '../chart.js';
import { announce, confirmAction, errorBox, fact, h, loading, replaceContent } from '../dom.js';
import { badge, bareUrl, breakableUrl, count, duration, outcome, timeAgo } from '../format.js';
import { deliveryTable } from './deliveries.js';

const RECENT = 10;
/** How often a running bulk replay's progress is read. */
const REPLAY_POLL_MS = 1000;

export function endpointView(context) {
  const [id] = context.args;
  context.title('Endpoint');
  let endpoint = null;
  let days = null;
  let gone = false;
  // What is on screen, to redraw only what changed (an open table stays open, focus stays).
  const onScreen = { endpoint: '', days: '', recent: '' };

  const heading = h('h1', { class: 'url-heading' }, 'Endpoint');
  const statusSlot = h('span', { class: 'heading-status' });
  const facts = h('dl', { class: 'facts' });
  const problem = h('div', { class: 'refresh-problem' });

  const toggleButton = h('button', { type: 'button', class: 'button', id: 'toggle-enabled', hidden: true });
  const testButton = h('button', { type: 'button', class: 'button', id: 'send-test' }, 'Send test');
  const replayButton = h('button', { type: 'button', class: 'button', id: 'replay-failed' }, 'Replay failed');
  const deleteButton = h('button', { type: 'button', class: 'button danger', id: 'delete-endpoint' }, 'Delete…');
  const result = h('div', { class: 'action-result', id: 'action-result', 'aria-live': 'polite' });
  const actions = h(
    'div',
    { class: 'toolbar', role: 'group', 'aria-label': 'Endpoint actions' },
    toggleButton,
    testButton,
    replayButton,
    deleteButton,
  );

  const chartBox = h('div', { class: 'chart-box', id: 'chart' }, loading('Loading the chart'));
  const chartSummary = h('p', { class: 'muted chart-summary' }, '');
  const tableBox = h('div', {});
  const recent = h('div', {}, loading('Loading deliveries'));
  const allLink = h(
    'a',
    { href: `/ui/deliveries?endpoint_id=${encodeURIComponent(id)}` },
    'All deliveries of this endpoint →',
  );
  const failedLink = h(
    'a',
    { href: `/ui/deliveries?endpoint_id=${encodeURIComponent(id)}&status=failed` },
    'Failed ones →',
  );

  const body = h(
    'div',
    { class: 'page' },
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '/ui/' }, 'Endpoints'), h('span', { 'aria-hidden': 'true' }, ' / '), h('span', { class: 'mono' }, id.slice(-8))),
    h('div', { class: 'page-head' }, h('div', { class: 'title-row' }, heading, statusSlot), actions),
    problem,
    result,
    h('section', { class: 'card', 'aria-label': 'Details' }, facts),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'chart-title' },
      h('div', { class: 'section-head' }, h('h2', { id: 'chart-title' }, 'Last 14 days'), legend()),
      chartSummary,
      chartBox,
      h('details', { class: 'as-table' }, h('summary', {}, 'Show as a table'), tableBox),
    ),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'recent-title' },
      h('div', { class: 'section-head' }, h('h2', { id: 'recent-title' }, 'Recent deliveries'), h('p', { class: 'links' }, failedLink, ' ', allLink)),
      recent,
    ),
  );
  context.main.append(body);

  // The chart follows the card's width (readable labels on a phone); redrawn when it changes.
  let drawnWidth = 0;
  const drawChart = () => {
    if (!days) return;
    const width = Math.floor(chartBox.clientWidth);
    if (width <= 0 || width === drawnWidth) return;
    drawnWidth = width;
    chartBox.replaceChildren(dayChart(days, width));
  };
  const resize = new ResizeObserver(() => {
    if (context.alive()) drawChart();
    else resize.disconnect();
  });
  resize.observe(chartBox);

  async function refresh() {
    if (gone) return;
    let fresh;
    try {
      [fresh, { days }] = await Promise.all([api.endpoint(id), api.stats(id, 14)]);
    } catch (error) {
      if (!context.alive()) return;
      if (error.status === 404) return showGone();
      replaceContent(problem, errorBox('Could not refresh this endpoint.', error));
      return;
    }
    if (!context.alive()) return;
    problem.replaceChildren();
    if (endpoint && endpoint.enabled !== fresh.enabled) {
      announce(`Endpoint ${fresh.enabled ? 'enabled' : 'disabled'}`);
    }
    endpoint = fresh;
    if (changed('endpoint', endpoint)) showEndpoint();
    if (changed('days', days)) {
      chartSummary.textContent = summary(days);
      drawnWidth = 0;
      drawChart();
      tableBox.replaceChildren(dayTable(days));
    }
    try {
      const page = await api.deliveries({ endpoint_id: id, limit: RECENT });
      if (!context.alive() || !changed('recent', page)) return;
      replaceContent(
        recent,
        page.deliveries.length
          ? deliveryTable(page.deliveries, { showEndpoint: false })
          : h('p', { class: 'muted' }, 'No deliveries yet.'),
      );
    } catch (error) {
      replaceContent(recent, errorBox('Could not load the deliveries.', error));
    }
  }

  function changed(part, value) {
    const signature = JSON.stringify(value);
    if (onScreen[part] === signature) return false;
    onScreen[part] = signature;
    return true;
  }

  function showEndpoint() {
    context.title(`${endpoint.tenant} · ${bareUrl(endpoint.url)}`);
    heading.replaceChildren(...breakableUrl(endpoint.url));
    statusSlot.replaceChildren(badge(endpoint.enabled ? 'enabled' : 'disabled', { id: 'endpoint-status' }));
    toggleButton.hidden = false;
    toggleButton.textContent = endpoint.enabled ? 'Disable' : 'Enable';
    toggleButton.dataset.action = endpoint.enabled ? 'disable' : 'enable';
    const signing = [endpoint.has_secret ? 'secret' : null, endpoint.has_token ? 'token' : null].filter(Boolean);
    replaceContent(
      facts,
      fact('Tenant', [
        h('a', { href: `/ui/?tenant=${encodeURIComponent(endpoint.tenant)}` }, endpoint.tenant),
        endpoint.default ? h('span', { class: 'muted' }, ' (default)') : null,
      ]),
      fact('Policy', endpoint.policy),
      endpoint.disabled_reason
        ? fact('Disabled', [endpoint.disabled_reason, ' · ', timeAgo(endpoint.disabled_at)], { wide: true })
        : null,
      fact(
        'Failures in a row',
        h('span', { class: endpoint.consecutive_failures ? 'warn' : '' }, count(endpoint.consecutive_failures)),
      ),
      fact('Events', endpoint.event_types.length ? endpoint.event_types.join(', ') : 'all'),
      fact('Signing', signing.length ? `${signing.join(' and ')} set` : 'none'),
      fact('Created', timeAgo(endpoint.created_at)),
      fact('Endpoint id', h('span', { class: 'mono break' }, endpoint.id), { wide: true }),
    );
  }

  function showGone() {
    gone = true;
    replaceContent(
      context.main,
      h(
        'section',
        { class: 'card empty-state' },
        h('h1', {}, 'Endpoint not found'),
        h('p', {}, 'There is no endpoint ', h('code', {}, id), '. It may have been deleted.'),
        h('p', {}, h('a', { href: '/ui/' }, '← All endpoints')),
      ),
    );
  }

  /** Runs an action with its button busy; the result goes to the result panel. */
  async function act(button, work) {
    if (button.disabled) return;
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    try {
      await work();
    } catch (error) {
      if (context.alive()) replaceContent(result, errorBox('That did not work.', error));
    } finally {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  }

  toggleButton.addEventListener('click', () =>
    act(toggleButton, async () => {
      const enable = toggleButton.dataset.action === 'enable';
      endpoint = await api.setEnabled(id, enable);
      if (!context.alive()) return;
      if (changed('endpoint', endpoint)) showEndpoint();
      const text = enable
        ? 'Endpoint enabled: held deliveries are released and the failure count starts again at 0.'
        : 'Endpoint disabled: nothing is sent to it; its pending deliveries are held.';
      replaceContent(result, h('p', { class: 'callout ok' }, text));
      toggleButton.focus();
      context.refreshNow();
    }),
  );

  testButton.addEventListener('click', () =>
    act(testButton, async () => {
      replaceContent(result, h('p', { class: 'loading', 'aria-busy': 'true' }, 'Sending a test event…'));
      const test = await api.sendTest(id);
      if (!context.alive()) return;
      replaceContent(result, testResult(test));
    }),
  );

  replayButton.addEventListener('click', () =>
    act(replayButton, async () => {
      const job = await api.bulkReplay({ endpoint_id: id, status: 'failed' });
      if (!context.alive()) return;
      if (job.matched === 0) {
        replaceContent(result, h('p', { class: 'callout info' }, 'No failed deliveries to replay.'));
        return;
      }
      await followReplay(job);
    }),
  );

  async function followReplay(job) {
    const bar = h('progress', { max: job.matched, value: 0, id: 'replay-progress', 'aria-label': 'Replay progress' });
    const text = h('span', {}, '');
    replaceContent(result, h('div', { class: 'callout info replay' }, h('strong', {}, 'Replaying failed deliveries'), bar, text));
    for (;;) {
      const done = job.queued + job.skipped;
      bar.value = done;
      text.textContent = `${count(done)} of ${count(job.matched)} queued${job.skipped ? ` (${count(job.skipped)} skipped: payload purged)` : ''}`;
      if (job.state === 'done') break;
      await new Promise((resolve) => setTimeout(resolve, REPLAY_POLL_MS));
      if (!context.alive()) return;
      job = await api.replayJob(job.id);
    }
    const message = `Replay finished: ${count(job.queued)} of ${count(job.matched)} failed deliveries queued again` +
      (job.skipped ? `, ${count(job.skipped)} skipped (payload purged).` : '.');
    replaceContent(result, h('p', { class: 'callout ok', id: 'replay-done' }, message));
    announce(message);
    context.refreshNow();
  }

  deleteButton.addEventListener('click', async () => {
    const confirmed = await confirmAction({
      title: 'Delete this endpoint?',
      text: 'Nothing more is sent to it and its pending deliveries are marked failed. This cannot be undone.',
      confirm: 'Delete endpoint',
      confirmId: 'confirm-delete',
    });
    if (!confirmed || !context.alive()) return;
    await act(deleteButton, async () => {
      await api.deleteEndpoint(id);
      announce('Endpoint deleted');
      context.navigate('/ui/');
    });
  });

  return { refresh, every: 5000 };
}

function testResult(test) {
  const status = test.success ? 'succeeded' : 'failed';
  return h(
    'div',
    { class: `callout ${test.success ? 'ok' : 'error'} test-result`, id: 'test-result', 'data-success': String(test.success) },
    h(
      'p',
      {},
      h('strong', {}, test.success ? 'Test event delivered. ' : 'Test event failed. '),
      badge(status),
      ' ',
      outcome(test.status_code, test.error),
      ' · ',
      duration(test.duration_ms),
    ),
    test.error_detail ? h('p', {}, test.error_detail) : null,
    test.response_excerpt
      ? h('div', {}, h('span', { class: 'muted' }, 'Response'), h('pre', { class: 'excerpt' }, test.response_excerpt))
      : null,
  );
}
