// Daily attempt charts drawn as inline SVG (colours come from the stylesheet).

import { h, svg } from './dom.js';
import { count, dayLabel, duration } from './format.js';

function totals(days) {
  return days.reduce(
    (sum, day) => ({
      successes: sum.successes + day.successes,
      failures: sum.failures + day.failures,
    }),
    { successes: 0, failures: 0 },
  );
}

/** A sentence that says what a chart shows. */
export function summary(days) {
  const { successes, failures } = totals(days);
  if (successes + failures === 0) return `No attempts in the last ${days.length} days`;
  return `${count(successes + failures)} attempts in the last ${days.length} days: ` +
    `${count(successes)} succeeded, ${count(failures)} failed`;
}

/** "1,439 attempts · 16% failed", short enough for a table cell. */
export function failureShare(days) {
  const { successes, failures } = totals(days);
  const attempts = successes + failures;
  if (attempts === 0) return 'no attempts';
  const share = (failures / attempts) * 100;
  const shown = share === 0 ? '0' : share < 1 ? '<1' : share.toFixed(0);
  return `${count(attempts)} attempts · ${shown}% failed`;
}

/** A small bar per day, successes below failures, scaled to the busiest day. */
export function sparkline(days) {
  const width = 112;
  const height = 28;
  const slot = width / Math.max(days.length, 1);
  const busiest = Math.max(1, ...days.map((d) => d.attempts));
  const bars = days.map((day, i) => {
    const x = i * slot + slot * 0.15;
    const w = slot * 0.7;
    if (day.attempts === 0) {
      return svg('rect', { class: 'bar-none', x, y: height - 1, width: w, height: 1 });
    }
    // A busy day with a few failures still shows them: at least one pixel each.
    const total = Math.max(2, (day.attempts / busiest) * (height - 2));
    const failed = day.failures ? Math.max(1, (day.failures / day.attempts) * total) : 0;
    const ok = total - failed;
    return svg(
      'g',
      {},
      svg('title', {}, `${dayLabel(day.date)}: ${count(day.successes)} succeeded, ${count(day.failures)} failed`),
      ok > 0 ? svg('rect', { class: 'bar-ok', x, y: height - ok, width: w, height: ok }) : null,
      failed > 0
        ? svg('rect', { class: 'bar-fail', x, y: height - total, width: w, height: failed })
        : null,
    );
  });
  return svg(
    'svg',
    {
      class: 'sparkline',
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: 'img',
      'aria-label': summary(days),
    },
    bars,
  );
}

/** A round upper bound for an axis, 1, 2 or 4 × 10^n, whose half is round too. */
function niceMax(value, least) {
  const target = Math.max(value, least);
  const power = 10 ** Math.floor(Math.log10(target));
  for (const step of [1, 2, 4, 10]) {
    if (step * power >= target) return step * power;
  }
  return 10 * power;
}

/**
 * The endpoint chart: attempts per day as stacked bars (succeeded, failed) on the left axis,
 * median latency as a line on the right axis. Drawn at the container's real pixel width so
 * labels stay readable on a phone.
 */
export function dayChart(days, width) {
  const height = width < 520 ? 200 : 240;
  const margin = { top: 14, right: 56, bottom: 30, left: 44 };
  const plotWidth = Math.max(120, width - margin.left - margin.right);
  const plotHeight = height - margin.top - margin.bottom;
  const slot = plotWidth / Math.max(days.length, 1);
  const countMax = niceMax(Math.max(...days.map((d) => d.attempts), 0), 2);
  const latencies = days.map((d) => d.median_latency_ms).filter((v) => v !== null && v !== undefined);
  const latencyMax = niceMax(Math.max(...latencies, 0), 2);
  const y = (n) => margin.top + plotHeight - (n / countMax) * plotHeight;
  const yLatency = (ms) => margin.top + plotHeight - (ms / latencyMax) * plotHeight;
  const xCenter = (i) => margin.left + slot * i + slot / 2;
  const barWidth = Math.min(28, slot * 0.62);

  const grid = [0, 0.5, 1].map((f) => {
    const value = countMax * f;
    const lineY = y(value);
    return svg(
      'g',
      {},
      svg('line', { class: 'grid', x1: margin.left, x2: margin.left + plotWidth, y1: lineY, y2: lineY }),
      svg('text', { class: 'axis-label', x: margin.left - 8, y: lineY + 4, 'text-anchor': 'end' }, count(value)),
      latencies.length
        ? svg(
            'text',
            { class: 'axis-label latency-label', x: margin.left + plotWidth + 8, y: lineY + 4 },
            duration(latencyMax * f),
          )
        : null,
    );
  });

  const labelEvery = Math.max(1, Math.ceil(days.length / Math.floor(plotWidth / 52)));
  const bars = days.map((day, i) => {
    const x = xCenter(i) - barWidth / 2;
    const okTop = y(day.successes);
    const failTop = y(day.attempts);
    const label = (days.length - 1 - i) % labelEvery === 0
      ? svg('text', { class: 'axis-label', x: xCenter(i), y: height - 10, 'text-anchor': 'middle' }, dayLabel(day.date))
      : null;
    return svg(
      'g',
      { class: 'day' },
      svg(
        'title',
        {},
        `${dayLabel(day.date)}: ${count(day.attempts)} attempts, ${count(day.successes)} succeeded, ` +
          `${count(day.failures)} failed, median latency ${duration(day.median_latency_ms)}`,
      ),
      svg('rect', { class: 'day-hit', x: margin.left + slot * i, y: margin.top, width: slot, height: plotHeight }),
      day.successes
        ? svg('rect', { class: 'bar-ok', x, y: okTop, width: barWidth, height: y(0) - okTop })
        : null,
      day.failures
        ? svg('rect', { class: 'bar-fail', x, y: failTop, width: barWidth, height: okTop - failTop })
        : null,
      label,
    );
  });

  // The latency line breaks over days without attempts instead of inventing a value.
  const segments = [];
  let current = [];
  days.forEach((day, i) => {
    if (day.median_latency_ms === null || day.median_latency_ms === undefined) {
      if (current.length) segments.push(current);
      current = [];
    } else {
      current.push([xCenter(i), yLatency(day.median_latency_ms)]);
    }
  });
  if (current.length) segments.push(current);
  const latency = segments.map((points) =>
    svg(
      'g',
      {},
      points.length > 1
        ? svg('polyline', { class: 'latency-line', points: points.map((p) => p.join(',')).join(' ') })
        : null,
      points.map(([cx, cy]) => svg('circle', { class: 'latency-dot', cx, cy, r: 3 })),
    ),
  );

  const empty = latencies.length === 0 && days.every((d) => d.attempts === 0)
    ? svg(
        'text',
        { class: 'empty-label', x: margin.left + plotWidth / 2, y: margin.top + plotHeight / 2, 'text-anchor': 'middle' },
        'No attempts in these days',
      )
    : null;

  return svg(
    'svg',
    {
      class: 'day-chart',
      'data-compact': width < 520,
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: 'img',
      'aria-label': `Attempts per day: ${summary(days)}. The table below has every day.`,
    },
    grid,
    bars,
    latency,
    empty,
  );
}

/** The chart's legend (HTML, so it wraps on a phone). */
export function legend() {
  const item = (cls, text) => h('li', {}, h('span', { class: `swatch ${cls}`, 'aria-hidden': 'true' }), text);
  return h(
    'ul',
    { class: 'legend', 'aria-label': 'Legend' },
    item('swatch-ok', 'Succeeded'),
    item('swatch-fail', 'Failed'),
    item('swatch-latency', 'Median latency (right axis)'),
  );
}

/** The same numbers as a table, for screen readers and for copying. */
export function dayTable(days) {
  return h(
    'table',
    { class: 'data compact' },
    h('caption', { class: 'visually-hidden' }, 'Attempts per day'),
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        h('th', { scope: 'col' }, 'Day (UTC)'),
        h('th', { scope: 'col', class: 'num' }, 'Attempts'),
        h('th', { scope: 'col', class: 'num' }, 'Succeeded'),
        h('th', { scope: 'col', class: 'num' }, 'Failed'),
        h('th', { scope: 'col', class: 'num' }, 'Median latency'),
      ),
    ),
    h(
      'tbody',
      {},
      [...days].reverse().map((day) =>
        h(
          'tr',
          {},
          h('th', { scope: 'row' }, day.date),
          h('td', { class: 'num' }, count(day.attempts)),
          h('td', { class: 'num' }, count(day.successes)),
          h('td', { class: 'num' }, count(day.failures)),
          h('td', { class: 'num' }, duration(day.median_latency_ms)),
        ),
      ),
    ),
  );
}
