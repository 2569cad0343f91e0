// /ui/ — every endpoint with its health and a 14-day sparkline; filter by tenant.

import { api } from '../api.js';
import { failureShare, sparkline } from '../chart.js';
import { errorBox, h, loading, replaceContent } from '../dom.js';
import { badge, bareUrl, breakableUrl, count } from '../format.js';

/** Rows per page: sparklines are fetched for the rows on screen only. */
const PAGE = 50;
/** Stats change slowly; a row's sparkline is fetched again after this long. */
const STATS_MAX_AGE_MS = 60000;
/** Stats requests in flight at once. */
const STATS_PARALLEL = 4;

export function endpointsView(context) {
  context.title('Endpoints');
  const tenant = context.query.get('tenant') || '';
  const page = Math.max(1, Number.parseInt(context.query.get('page') || '1', 10) || 1);

  const lede = h('p', { class: 'lede' }, '');
  const tenantSelect = h('select', { id: 'tenant', name: 'tenant' }, h('option', { value: '' }, 'All tenants'));
  const filters = h(
    'form',
    { class: 'filters inline', role: 'search', 'aria-label': 'Filter endpoints' },
    h('label', { for: 'tenant' }, 'Tenant'),
    tenantSelect,
    h('button', { type: 'submit', class: 'button' }, 'Show'),
  );
  filters.addEventListener('submit', (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (tenantSelect.value) next.set('tenant', tenantSelect.value);
    const search = next.toString();
    context.navigate(`/ui/${search ? `?${search}` : ''}`, { focus: 'tenant' });
  });
  const list = h('div', { class: 'list' }, loading('Loading endpoints'));
  const problem = h('div', { class: 'refresh-problem' });
  context.main.append(
    h('div', { class: 'page-head' }, h('div', {}, h('h1', {}, 'Endpoints'), lede), filters),
    problem,
    list,
  );

  const stats = new Map(); // endpoint id -> { days, at }
  const sparkCells = new Map(); // endpoint id -> the cell that shows its sparkline
  let shownSignature = '';

  async function refresh() {
    let endpoints;
    try {
      ({ endpoints } = await api.endpoints());
    } catch (error) {
      replaceContent(problem, errorBox('Could not load the endpoints.', error));
      return;
    }
    if (!context.alive()) return;
    problem.replaceChildren();
    syncTenants(tenantSelect, endpoints, tenant);
    const matching = endpoints
      .filter((e) => !tenant || e.tenant === tenant)
      .sort((a, b) => a.tenant.localeCompare(b.tenant) || a.url.localeCompare(b.url));
    const disabled = matching.filter((e) => !e.enabled).length;
    const failing = matching.filter((e) => e.enabled && e.consecutive_failures > 0).length;
    lede.textContent = [
      `${count(matching.length)} endpoint${matching.length === 1 ? '' : 's'}`,
      disabled ? `${count(disabled)} disabled` : null,
      failing ? `${count(failing)} failing` : null,
    ]
      .filter(Boolean)
      .join(' · ');

    if (matching.length === 0) {
      shownSignature = '';
      replaceContent(
        list,
        h(
          'div',
          { class: 'card empty-state' },
          h('h2', {}, tenant ? `No endpoints for tenant “${tenant}”` : 'No endpoints yet'),
          h(
            'p',
            {},
            'Endpoints are created through the admin API: ',
            h('code', {}, 'POST /admin/endpoints'),
            '.',
          ),
        ),
      );
      return;
    }
    const pages = Math.ceil(matching.length / PAGE);
    const current = Math.min(page, pages);
    const rows = matching.slice((current - 1) * PAGE, current * PAGE);
    // Redraw only when something changed, so focus and reading position stay put.
    const signature = JSON.stringify([rows, current, pages]);
    if (signature !== shownSignature) {
      shownSignature = signature;
      sparkCells.clear();
      replaceContent(list, table(rows), pager(current, pages));
    }
    await loadSparklines(rows);
  }

  function table(rows) {
    return h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'data responsive', id: 'endpoints' },
        h('caption', { class: 'visually-hidden' }, 'Endpoints'),
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            h('th', { scope: 'col' }, 'Status'),
            h('th', { scope: 'col' }, 'Endpoint'),
            h('th', { scope: 'col' }, 'Tenant'),
            h('th', { scope: 'col' }, 'Policy'),
            h('th', { scope: 'col', class: 'num' }, 'Failures in a row'),
            h('th', { scope: 'col' }, 'Last 14 days'),
          ),
        ),
        h('tbody', {}, rows.map(row)),
      ),
    );
  }

  function row(endpoint) {
    const spark = h('td', { 'data-label': 'Last 14 days', class: 'spark-cell' }, cachedSparkline(endpoint.id));
    sparkCells.set(endpoint.id, spark);
    return h(
      'tr',
      { 'data-endpoint-id': endpoint.id },
      h('td', { 'data-label': 'Status' }, badge(endpoint.enabled ? 'enabled' : 'disabled')),
      h(
        'td',
        { 'data-label': 'Endpoint', class: 'url-cell' },
        h('a', { href: `/ui/endpoints/${encodeURIComponent(endpoint.id)}`, 'data-key': `endpoint-${endpoint.id}` }, breakableUrl(bareUrl(endpoint.url))),
      ),
      h('td', { 'data-label': 'Tenant' }, endpoint.tenant),
      h('td', { 'data-label': 'Policy', class: 'nowrap' }, endpoint.policy),
      h(
        'td',
        { 'data-label': 'Failures in a row', class: `num${endpoint.consecutive_failures ? ' warn' : ''}` },
        count(endpoint.consecutive_failures),
      ),
      spark,
    );
  }

  function cachedSparkline(id) {
    const known = stats.get(id);
    if (!known) return h('span', { class: 'muted' }, '…');
    return h('span', { class: 'spark' }, sparkline(known.days), h('span', { class: 'spark-text' }, failureShare(known.days)));
  }

  async function loadSparklines(rows) {
    const stale = rows.filter((e) => {
      const known = stats.get(e.id);
      return !known || Date.now() - known.at > STATS_MAX_AGE_MS;
    });
    const queue = [...stale];
    const worker = async () => {
      while (queue.length && context.alive()) {
        const endpoint = queue.shift();
        try {
          const { days } = await api.stats(endpoint.id, 14);
          stats.set(endpoint.id, { days, at: Date.now() });
        } catch {
          continue; // the row keeps its placeholder; the next refresh tries again
        }
        const cell = sparkCells.get(endpoint.id);
        if (cell) cell.replaceChildren(cachedSparkline(endpoint.id));
      }
    };
    await Promise.all(Array.from({ length: STATS_PARALLEL }, worker));
  }

  function pager(current, pages) {
    if (pages <= 1) return null;
    const link = (n, text) => {
      const next = new URLSearchParams();
      if (tenant) next.set('tenant', tenant);
      if (n > 1) next.set('page', String(n));
      const search = next.toString();
      return h('a', { class: 'button', href: `/ui/${search ? `?${search}` : ''}` }, text);
    };
    return h(
      'nav',
      { class: 'pager', 'aria-label': 'Endpoint pages' },
      current > 1 ? link(current - 1, '← Previous') : null,
      h('span', { class: 'muted' }, `Page ${current} of ${pages}`),
      current < pages ? link(current + 1, 'Next →') : null,
    );
  }

  return { refresh, every: 15000 };
}

/** Keeps the tenant choices in step with the endpoints (and the chosen one, even if gone). */
function syncTenants(select, endpoints, chosen) {
  const tenants = [...new Set(endpoints.map((e) => e.tenant))].sort();
  if (chosen && !tenants.includes(chosen)) tenants.push(chosen);
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join('\n') === tenants.join('\n')) return;
  select.replaceChildren(
    h('option', { value: '' }, 'All tenants'),
    tenants.map((t) => h('option', { value: t, selected: t === chosen }, t)),
  );
}
