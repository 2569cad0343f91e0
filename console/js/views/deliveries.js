// /ui/deliveries?status=&endpoint_id=&tenant=&since=&cursor= — deliveries, newest first, one
// page at a time (the daemon may hold millions; the console never asks for more than a page).

import { api } from '../api.js';
import { errorBox, h, loading, replaceContent } from '../dom.js';
import { badge, bareUrl, breakableUrl, count, idText, timeAgo } from '../format.js';

const PAGE = 50;
const STATUSES = ['pending', 'held', 'succeeded', 'failed', 'skipped'];
const SINCE = [
  ['', 'Any time'],
  ['15m', 'Last 15 minutes'],
  ['1h', 'Last hour'],
  ['24h', 'Last 24 hours'],
  ['7d', 'Last 7 days'],
  ['14d', 'Last 14 days'],
];
const FILTERS = ['status', 'endpoint_id', 'tenant', 'since'];

export function deliveriesView(context) {
  context.title('Deliveries');
  const chosen = Object.fromEntries(FILTERS.map((name) => [name, context.query.get(name) || '']));
  const cursor = context.query.get('cursor') || '';

  const statusSelect = select('status', [['', 'Any status'], ...STATUSES.map((s) => [s, label(s)])], chosen.status);
  const endpointSelect = select('endpoint_id', [['', 'Any endpoint']], chosen.endpoint_id);
  const tenantSelect = select('tenant', [['', 'Any tenant']], chosen.tenant);
  const sinceSelect = select('since', SINCE, chosen.since);
  const form = h(
    'form',
    { class: 'filters', role: 'search', 'aria-label': 'Filter deliveries' },
    field('status', 'Status', statusSelect),
    field('endpoint_id', 'Endpoint', endpointSelect),
    field('tenant', 'Tenant', tenantSelect),
    field('since', 'Created', sinceSelect),
    h(
      'div',
      { class: 'field actions-inline' },
      h('button', { type: 'submit', class: 'button primary', id: 'apply-filters' }, 'Apply'),
      FILTERS.some((name) => chosen[name]) ? h('a', { class: 'button quiet', href: '/ui/deliveries' }, 'Clear') : null,
    ),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [name, control] of [
      ['status', statusSelect],
      ['endpoint_id', endpointSelect],
      ['tenant', tenantSelect],
      ['since', sinceSelect],
    ]) {
      if (control.value) next.set(name, control.value);
    }
    const search = next.toString();
    context.navigate(`/ui/deliveries${search ? `?${search}` : ''}`, { focus: 'apply-filters' });
  });

  const lede = h('p', { class: 'lede' }, 'Newest first');
  const problem = h('div', { class: 'refresh-problem' });
  const list = h('div', { class: 'list' }, loading('Loading deliveries'));
  const pager = h('nav', { class: 'pager', 'aria-label': 'Delivery pages' });
  context.main.append(
    h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Deliveries'), lede)),
    form,
    problem,
    list,
    pager,
  );

  let endpoints = null; // id -> endpoint, for names in the table and the filter choices
  let endpointsAt = 0;
  let shownSignature = '';

  async function refresh() {
    if (!endpoints || Date.now() - endpointsAt > 60000) {
      try {
        const answer = await api.endpoints();
        endpoints = new Map(answer.endpoints.map((e) => [e.id, e]));
        endpointsAt = Date.now();
        fillEndpointChoices();
      } catch {
        endpoints = endpoints || new Map(); // the list still works with bare ids
      }
    }
    const filters = { ...chosen, limit: PAGE, cursor };
    let page;
    try {
      page = await api.deliveries(filters);
    } catch (error) {
      if (!context.alive()) return;
      const what = error.status === 400 ? 'These filters are not valid.' : 'Could not load the deliveries.';
      replaceContent(problem, errorBox(what, error));
      return;
    }
    if (!context.alive()) return;
    problem.replaceChildren();
    // Redraw only when something changed, so focus and reading position stay put.
    const signature = JSON.stringify([page, endpointsAt]);
    if (signature === shownSignature) return;
    shownSignature = signature;
    const n = page.deliveries.length;
    lede.textContent = n
      ? `Newest first · ${count(n)} shown${cursor ? ' (an older page)' : ''}`
      : 'Newest first';
    replaceContent(
      list,
      n
        ? deliveryTable(page.deliveries, { endpoints, showEndpoint: !chosen.endpoint_id })
        : h('div', { class: 'card empty-state' }, h('p', {}, cursor ? 'No older deliveries.' : 'No deliveries match these filters.')),
    );
    replaceContent(pager, pagerLinks(page.next_cursor));
  }

  function fillEndpointChoices() {
    const all = [...endpoints.values()].sort(
      (a, b) => a.tenant.localeCompare(b.tenant) || a.url.localeCompare(b.url),
    );
    const endpointOptions = all.map((e) => [e.id, `${e.tenant} · ${bareUrl(e.url)}`]);
    if (chosen.endpoint_id && !endpoints.has(chosen.endpoint_id)) {
      endpointOptions.push([chosen.endpoint_id, `${chosen.endpoint_id} (unknown)`]);
    }
    setOptions(endpointSelect, [['', 'Any endpoint'], ...endpointOptions], endpointSelect.value || chosen.endpoint_id);
    const tenants = [...new Set(all.map((e) => e.tenant))].sort();
    if (chosen.tenant && !tenants.includes(chosen.tenant)) tenants.push(chosen.tenant);
    setOptions(tenantSelect, [['', 'Any tenant'], ...tenants.map((t) => [t, t])], tenantSelect.value || chosen.tenant);
  }

  function pagerLinks(nextCursor) {
    const base = new URLSearchParams();
    for (const name of FILTERS) if (chosen[name]) base.set(name, chosen[name]);
    const href = (c) => {
      const q = new URLSearchParams(base);
      if (c) q.set('cursor', c);
      const search = q.toString();
      return `/ui/deliveries${search ? `?${search}` : ''}`;
    };
    return [
      cursor ? h('a', { class: 'button', href: href(''), 'data-key': 'newest' }, '← Newest') : null,
      nextCursor ? h('a', { class: 'button', href: href(nextCursor), id: 'older', 'data-key': 'older' }, 'Older →') : null,
    ];
  }

  return { refresh, every: 5000 };
}

/** A table of deliveries, shared with the endpoint page. */
export function deliveryTable(deliveries, { endpoints = null, showEndpoint = true } = {}) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'data responsive deliveries' },
      h('caption', { class: 'visually-hidden' }, 'Deliveries, newest first'),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', { scope: 'col' }, 'Status'),
          h('th', { scope: 'col' }, 'Delivery'),
          showEndpoint ? h('th', { scope: 'col' }, 'Endpoint') : null,
          h('th', { scope: 'col' }, 'Created'),
          h('th', { scope: 'col', class: 'num' }, 'Attempts'),
          h('th', { scope: 'col' }, 'Last result'),
          h('th', { scope: 'col' }, 'Next attempt'),
        ),
      ),
      h(
        'tbody',
        {},
        deliveries.map((d) => {
          const endpoint = endpoints && endpoints.get(d.endpoint_id);
          return h(
            'tr',
            { 'data-delivery-id': d.id },
            h('td', { 'data-label': 'Status' }, badge(d.status)),
            h(
              'td',
              { 'data-label': 'Delivery' },
              h(
                'a',
                { href: `/ui/deliveries/${encodeURIComponent(d.id)}`, 'data-key': `delivery-${d.id}` },
                h('span', { class: 'visually-hidden' }, 'Delivery '),
                idText(d.id),
              ),
            ),
            showEndpoint
              ? h(
                  'td',
                  { 'data-label': 'Endpoint', class: 'url-cell' },
                  h('a', { href: `/ui/endpoints/${encodeURIComponent(d.endpoint_id)}` }, breakableUrl(bareUrl(d.url))),
                  endpoint ? h('div', { class: 'muted small' }, endpoint.tenant) : null,
                )
              : null,
            h('td', { 'data-label': 'Created' }, timeAgo(d.created_at)),
            h('td', { 'data-label': 'Attempts', class: 'num' }, count(d.attempt_count)),
            h('td', { 'data-label': 'Last result' }, lastResult(d)),
            h('td', { 'data-label': 'Next attempt' }, d.next_attempt_at ? timeAgo(d.next_attempt_at) : h('span', { class: 'muted' }, '—')),
          );
        }),
      ),
    ),
  );
}

/** The last response's status, or why there was none. */
function lastResult(delivery) {
  if (delivery.last_status_code) return `HTTP ${delivery.last_status_code}`;
  if (delivery.last_error) return h('span', { class: 'error-text' }, delivery.last_error);
  return h('span', { class: 'muted' }, '—');
}

function label(status) {
  return status[0].toUpperCase() + status.slice(1);
}

function field(id, text, control) {
  return h('div', { class: 'field' }, h('label', { for: id }, text), control);
}

function select(id, options, value) {
  const element = h('select', { id, name: id });
  const known = options.some(([v]) => v === value);
  setOptions(element, known || !value ? options : [...options, [value, value]], value);
  return element;
}

/** Sets a select's choices; unchanged choices are left alone (a refresh must not undo a pick). */
function setOptions(element, options, value) {
  const same = element.options.length === options.length &&
    options.every(([v, text], i) => element.options[i].value === v && element.options[i].text === text);
  if (same) return;
  element.replaceChildren(...options.map(([v, text]) => h('option', { value: v, selected: v === value }, text)));
}
