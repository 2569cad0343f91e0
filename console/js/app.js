// The console's shell: sign-in gate, routes for the deep links, and the refresh loop.
//
// A view is a function (context) -> { refresh, every }: it draws its frame at once, `refresh`
// loads and redraws its data, and the shell calls `refresh` again every `every` ms while the
// page is open and visible (0 = never again).

import { onTokenRejected, session } from './api.js';
import { announce } from './dom.js';
import { refreshTimes } from './format.js';
import { deliveriesView } from './views/deliveries.js';
import { deliveryView } from './views/delivery.js';
import { endpointView } from './views/endpoint.js';
import { endpointsView } from './views/endpoints.js';
import { notFoundView } from './views/not_found.js';
import { signInView } from './views/sign_in.js';

const ROUTES = [
  [/^\/ui\/?$/, endpointsView, 'endpoints'],
  [/^\/ui\/endpoints\/([^/]+)\/?$/, endpointView, 'endpoints'],
  [/^\/ui\/deliveries\/?$/, deliveriesView, 'deliveries'],
  [/^\/ui\/deliveries\/([^/]+)\/?$/, deliveryView, 'deliveries'],
];

const main = document.getElementById('main');
const nav = document.querySelector('.mainnav');
const signOutButton = document.getElementById('sign-out');

/** The view on screen; a new navigation makes the old one's pending work a no-op. */
let shown = { generation: 0, controller: null, timer: null };

function navigate(url, { replace = false, focus = null } = {}) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  render({ focus: focus || 'heading' });
}

function stopShown() {
  clearTimeout(shown.timer);
  shown = { generation: shown.generation + 1, controller: null, timer: null };
}

function render({ focus = null, message = null } = {}) {
  stopShown();
  const generation = shown.generation;
  const alive = () => shown.generation === generation;
  main.replaceChildren();
  const signedIn = session.signedIn();
  nav.hidden = !signedIn;
  signOutButton.hidden = !signedIn;
  const context = {
    main,
    alive,
    navigate,
    title: (text) => {
      if (alive()) document.title = `${text} · herald`;
    },
    refreshNow: () => {
      if (alive()) refreshLoop(generation);
    },
  };
  if (!signedIn) {
    shown.controller = signInView(context, { message, onSignedIn: () => render({ focus: 'heading' }) });
    if (focus) focusHeading();
    return;
  }
  const path = location.pathname;
  let view = notFoundView;
  let args = [];
  let section = null;
  for (const [pattern, candidate, name] of ROUTES) {
    const match = pattern.exec(path);
    if (match) {
      view = candidate;
      args = match.slice(1).map(decodeURIComponent);
      section = name;
      break;
    }
  }
  for (const link of nav.querySelectorAll('a')) {
    if (link.dataset.nav === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  context.args = args;
  context.query = new URLSearchParams(location.search);
  shown.controller = view(context);
  refreshLoop(generation).then(() => {
    if (!alive() || !focus) return;
    const target = focus === 'heading' ? null : document.getElementById(focus);
    if (target) target.focus();
    else focusHeading();
  });
}

function focusHeading() {
  const heading = main.querySelector('h1');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    heading.focus();
  }
}

async function refreshLoop(generation) {
  const controller = shown.controller;
  if (!controller || !controller.refresh || shown.generation !== generation) return;
  clearTimeout(shown.timer);
  try {
    await controller.refresh();
  } catch (error) {
    // A view shows its own errors; this only keeps the loop alive.
    console.error(error);
  }
  if (shown.generation !== generation) return;
  refreshTimes(main);
  clearTimeout(shown.timer);
  if (controller.every > 0) {
    shown.timer = setTimeout(() => {
      if (document.hidden) return; // picked up again by visibilitychange
      refreshLoop(generation);
    }, controller.every);
  }
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && shown.controller && shown.controller.every > 0) {
    refreshLoop(shown.generation);
  }
});

// In-app links change the page without reloading it (the token stays in this tab either way).
document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest('a[href]');
  if (!link || link.target || link.hasAttribute('download')) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith('/ui')) return;
  if (url.pathname === location.pathname && url.search === location.search && url.hash) return;
  event.preventDefault();
  navigate(url.pathname + url.search);
});

window.addEventListener('popstate', () => render({ focus: 'heading' }));

signOutButton.addEventListener('click', () => {
  session.signOut();
  render({ focus: 'heading', message: 'Signed out. The token was removed from this tab.' });
  announce('Signed out');
});

onTokenRejected(() => {
  session.signOut();
  render({
    focus: 'heading',
    message: 'The daemon no longer accepts the token this tab signed in with. Sign in again.',
  });
});

// Relative times drift while nothing else changes.
setInterval(() => {
  if (!document.hidden) refreshTimes(main);
}, 20000);

render();
