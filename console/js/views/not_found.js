// Any /ui/ path the console does not know.

import { h } from '../dom.js';

export function notFoundView(context) {
  context.title('Not found');
  context.main.append(
    h(
      'section',
      { class: 'card empty-state' },
      h('h1', {}, 'Page not found'),
      h('p', {}, 'There is no console page at ', h('code', {}, location.pathname), '.'),
      h(
        'p',
        {},
        h('a', { href: '/ui/' }, 'Endpoints'),
        ' · ',
        h('a', { href: '/ui/deliveries' }, 'Deliveries'),
      ),
    ),
  );
  return { every: 0 };
}
