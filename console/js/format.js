// How times, durations, ids, numbers and statuses read on every page.

import { h } from './dom.js';

const UNITS = [
  [60, 's', 1],
  [3600, 'min', 60],
  [86400, 'h', 3600],
  [Infinity, 'd', 86400],
];

/** "3 min ago", "in 12 s", "just now". */
export function relative(iso, now = Date.now()) {
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return '—';
  const seconds = Math.round((at - now) / 1000);
  const size = Math.abs(seconds);
  if (size < 5) return 'just now';
  for (const [limit, unit, per] of UNITS) {
    if (size < limit) {
      const n = Math.floor(size / per);
      return seconds < 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`;
    }
  }
  return '—';
}

/** The exact time, local and UTC, for a tooltip. */
export function exact(iso) {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return '';
  const local = at.toLocaleString('en-GB', {
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    timeZoneName: 'short',
  });
  return `${local} (${at.toISOString()})`;
}

/** A `<time>` that shows the relative time and the exact one on hover; kept current by `refreshTimes`. */
export function timeAgo(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: exact(iso), 'data-relative': '' }, relative(iso));
}

/** Rewrites every relative time on the page (they drift while a page stays open). */
export function refreshTimes(root = document) {
  const now = Date.now();
  for (const element of root.querySelectorAll('time[data-relative]')) {
    element.textContent = relative(element.getAttribute('datetime'), now);
  }
}

/** "84 ms", "1.2 s", "2 min 5 s". */
export function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
  const minutes = Math.floor(ms / 60000);
  return `${minutes} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function count(n) {
  return Number(n || 0).toLocaleString('en');
}

/**
 * The distinguishing end of an id. Ids are UUIDv7: their first characters are a timestamp and
 * shared by everything made in the same minute, their last ones are random.
 */
export function shortId(value) {
  return value ? String(value).slice(-8) : '';
}

/** The monospace short id, with the full id for hover and screen readers. */
export function idText(value) {
  return h('span', { class: 'mono', title: value }, shortId(value));
}

const STATUS = {
  succeeded: ['Succeeded', '✓'],
  failed: ['Failed', '✕'],
  pending: ['Pending', '•'],
  held: ['Held', '‖'],
  skipped: ['Skipped', '–'],
  enabled: ['Enabled', '✓'],
  disabled: ['Disabled', '‖'],
};

/** A status in colour and words (never colour alone). */
export function badge(status, extra = {}) {
  const [label, glyph] = STATUS[status] || [status, '•'];
  return h(
    'span',
    { class: `badge status-${status}`, 'data-status': status, ...extra },
    h('span', { class: 'glyph', 'aria-hidden': 'true' }, glyph),
    label,
  );
}

/** What an attempt or delivery last got: "HTTP 500", "timeout", or nothing yet. */
export function outcome(statusCode, error) {
  if (statusCode && error) return `HTTP ${statusCode} · ${error}`;
  if (statusCode) return `HTTP ${statusCode}`;
  if (error) return error;
  return '—';
}

/** A URL as text that may wrap after `/`, `.`, `?` and `&` (and nowhere else). */
export function breakableUrl(url) {
  const parts = [];
  for (const piece of String(url || '').split(/(?<=[/.?&])/)) {
    parts.push(piece, document.createElement('wbr'));
  }
  return parts;
}

/** A URL without its scheme, for tight columns. */
export function bareUrl(url) {
  return String(url || '').replace(/^https?:\/\//, '');
}

/** "Nov 3" from "2026-11-03" (UTC days, as the stats route counts them). */
export function dayLabel(date) {
  const at = new Date(`${date}T00:00:00Z`);
  return at.toLocaleDateString('en-GB', { month: 'short', day: 'numeric', timeZone: 'UTC' });
}
