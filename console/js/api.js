// The admin API as the console uses it: bearer token from this tab's sessionStorage,
// problem+json errors turned into ApiError, a rejected token ends the session.

const TOKEN_KEY = 'herald.console.admin-token';

/** The tab's sign-in. `''` is a valid token: a daemon without tokens accepts any request. */
export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  signedIn: () => sessionStorage.getItem(TOKEN_KEY) !== null,
  signIn: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  signOut: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** A failed call: `status` 0 when the daemon could not be reached. */
export class ApiError extends Error {
  constructor(status, problem, message) {
    super(message);
    this.status = status;
    this.problem = problem;
    this.type = problem && problem.type;
  }
}

let tokenRejected = () => {};

/** Called when the daemon answers 401 to this session's token (it was changed or removed). */
export function onTokenRejected(callback) {
  tokenRejected = callback;
}

async function call(method, path, { body, token = session.token(), duringSignIn = false } = {}) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, null, 'The daemon could not be reached.');
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const detail = data && data.detail ? data.detail : `HTTP ${response.status}`;
    const error = new ApiError(response.status, data, detail);
    if (response.status === 401 && !duringSignIn) tokenRejected(error);
    throw error;
  }
  return data;
}

const id = (value) => encodeURIComponent(value);

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

export const api = {
  /** Checks a token before it is kept: any admin route will do; policies is the smallest. */
  checkToken: (token) => call('GET', '/admin/policies', { token, duringSignIn: true }),
  endpoints: () => call('GET', '/admin/endpoints'),
  endpoint: (endpointId) => call('GET', `/admin/endpoints/${id(endpointId)}`),
  stats: (endpointId, days = 14) =>
    call('GET', `/admin/endpoints/${id(endpointId)}/stats${query({ days })}`),
  setEnabled: (endpointId, enabled) =>
    call('POST', `/admin/endpoints/${id(endpointId)}/${enabled ? 'enable' : 'disable'}`),
  sendTest: (endpointId) => call('POST', `/admin/endpoints/${id(endpointId)}/test`),
  deleteEndpoint: (endpointId) => call('DELETE', `/admin/endpoints/${id(endpointId)}`),
  /** One page, newest first. */
  deliveries: (filters) => call('GET', `/admin/deliveries${query({ ...filters, order: 'desc' })}`),
  delivery: (deliveryId) => call('GET', `/admin/deliveries/${id(deliveryId)}`),
  replay: (deliveryId) => call('POST', `/admin/deliveries/${id(deliveryId)}/replay`),
  retryNow: (deliveryId) => call('POST', `/admin/deliveries/${id(deliveryId)}/retry`),
  cancel: (deliveryId) => call('POST', `/admin/deliveries/${id(deliveryId)}/cancel`),
  bulkReplay: (selection) => call('POST', '/admin/replay', { body: selection }),
  replayJob: (jobId) => call('GET', `/admin/replays/${id(jobId)}`),
};
