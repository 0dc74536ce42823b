// What every page of the event browser shares: the API with the reader's token, live streams,
// times in UTC or local, and the small views (status, JSON, the event inspector).

// The pages are served under the app's root, which may be a mount prefix: every URL is built
// from it, never from "/".
export const root = new URL(document.querySelector('meta[name="eventlog-root"]').content, location.href);

export function apiUrl(path, params = {}) {
  const url = new URL('api/' + path, root);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
  }
  return url;
}

export function pageHref(path) {
  return new URL(path, root).pathname;
}

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// --- JSON: ids and payload integers past 2^53 must not be rounded (the API sends ids as
// strings, but a payload may hold any integer); JSON.rawJSON keeps their digits exactly.
const BIG_NUMBER = /[:[,]\s*-?\d{16,}/;
const EXACT = typeof JSON.rawJSON === 'function';

function keepDigits(key, value, context) {
  if (typeof value === 'number' && !Number.isSafeInteger(value) && context && /^-?\d+$/.test(context.source)) {
    return JSON.rawJSON(context.source);
  }
  return value;
}

export function parseJSON(text) {
  return EXACT && BIG_NUMBER.test(text) ? JSON.parse(text, keepDigits) : JSON.parse(text);
}

export const isRaw = (value) => EXACT && JSON.isRawJSON(value);

// --- the token: asked for once, kept for the tab's session, sent as a header only.
const TOKEN = 'eventlog.token';
let asking = null;

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function problemOf(reply) {
  try {
    return parseJSON(await reply.text());
  } catch {
    return null;
  }
}

function withToken(init, token) {
  const headers = new Headers(init.headers || {});
  if (token) headers.set('Authorization', 'Bearer ' + token);
  return { ...init, headers };
}

// Fetch with the session's token; a 401 (or a 403 for a token that stopped working) asks for
// one and tries again.
export async function send(url, init = {}) {
  for (;;) {
    const token = sessionStorage.getItem(TOKEN);
    const reply = await fetch(url, withToken(init, token));
    if (reply.status === 401 || (reply.status === 403 && token)) {
      if (token) sessionStorage.removeItem(TOKEN);
      await askToken(reply.status === 403 ? 'The saved token is no longer accepted.' : '');
      continue;
    }
    return reply;
  }
}

export async function getJSON(path, params = {}) {
  const reply = await send(apiUrl(path, params), { headers: { Accept: 'application/json' } });
  if (!reply.ok) throw new ApiError(reply.status, await problemOf(reply));
  return parseJSON(await reply.text());
}

function askToken(reason) {
  asking ??= new Promise((resolve) => {
    const input = h('input', { type: 'password', id: 'token-input', autocomplete: 'off', required: true, spellcheck: 'false' });
    const message = h('p', { class: 'dialog-error', role: 'alert' }, reason);
    const submit = h('button', { type: 'submit', class: 'primary' }, 'Use token');
    const form = h('form', { method: 'dialog' },
      h('h2', {}, 'A read token is needed'),
      h('p', {}, 'This eventlog asks for a token. It is kept for this tab only (sessionStorage) and sent as a header, never in a URL.'),
      h('label', { for: 'token-input' }, 'Token'), input, message,
      h('div', { class: 'dialog-actions' }, submit));
    const dialog = h('dialog', { class: 'token-dialog', 'aria-labelledby': 'token-title' }, form);
    form.querySelector('h2').id = 'token-title';
    dialog.addEventListener('cancel', (e) => e.preventDefault()); // nothing works without one
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      submit.disabled = true;
      message.textContent = 'Checking…';
      try {
        const reply = await fetch(apiUrl('executions', { limit: 1 }), withToken({}, token));
        if (reply.ok) {
          sessionStorage.setItem(TOKEN, token);
          dialog.close();
          dialog.remove();
          asking = null;
          updateTokenButton();
          resolve();
          return;
        }
        message.textContent = reply.status === 403 || reply.status === 401
          ? 'This token was refused. Check it and try again.'
          : `The server answered ${reply.status}; try again.`;
      } catch (err) {
        message.textContent = 'The server could not be reached; try again.';
      } finally {
        submit.disabled = false;
      }
      input.select();
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
  return asking;
}

// --- times: UTC or local, the reader's choice, kept in localStorage.
const ZONE = 'eventlog.zone';
const zoneListeners = new Set();
export const zone = { utc: localStorage.getItem(ZONE) !== 'local' };

export function onZoneChange(listener) {
  zoneListeners.add(listener);
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

export function toMs(timestamp) {
  return typeof timestamp === 'number' ? timestamp : Date.parse(timestamp);
}

// "2026-12-03 08:02:25.123"; parts: 'datetime', 'time', 'date'.
export function formatTime(timestamp, part = 'datetime', digits = 3) {
  const d = new Date(toMs(timestamp));
  if (Number.isNaN(d.getTime())) return '';
  const u = zone.utc;
  const date = `${u ? d.getUTCFullYear() : d.getFullYear()}-${pad((u ? d.getUTCMonth() : d.getMonth()) + 1)}-${pad(u ? d.getUTCDate() : d.getDate())}`;
  let time = `${pad(u ? d.getUTCHours() : d.getHours())}:${pad(u ? d.getUTCMinutes() : d.getMinutes())}:${pad(u ? d.getUTCSeconds() : d.getSeconds())}`;
  if (digits) time += '.' + pad(u ? d.getUTCMilliseconds() : d.getMilliseconds(), 3).slice(0, digits);
  if (part === 'date') return date;
  if (part === 'time') return time;
  return `${date} ${time}`;
}

export function formatDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${pad(Math.floor(s % 60))} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${pad(m % 60)} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export const number = (n) => n.toLocaleString('en-US');

// ``work`` run once at the next frame, however often this is called before it.
export function perFrame(work) {
  let pending = 0;
  return () => {
    pending ||= requestAnimationFrame(() => {
      pending = 0;
      work();
    });
  };
}

// --- status: a colour and a word (never the colour alone).
const KNOWN = new Set(['RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED']);
export const statusKey = (status) => (KNOWN.has(status) ? status.toLowerCase() : 'other');

export function statusPill(status) {
  return h('span', { class: `pill st-${statusKey(status)}` }, h('span', { class: 'dot', 'aria-hidden': 'true' }), status);
}

// --- the page frame.
let tokenButton = null;

function updateTokenButton() {
  if (tokenButton) tokenButton.hidden = !sessionStorage.getItem(TOKEN);
}

export function shell(active, title) {
  const zoneButton = h('button', { type: 'button', class: 'ghost', title: 'Show times in UTC or in local time', 'aria-pressed': String(!zone.utc) });
  const label = () => {
    zoneButton.textContent = zone.utc ? 'Times: UTC' : 'Times: local';
    zoneButton.setAttribute('aria-pressed', String(!zone.utc));
  };
  label();
  zoneButton.addEventListener('click', () => {
    zone.utc = !zone.utc;
    localStorage.setItem(ZONE, zone.utc ? 'utc' : 'local');
    label();
    for (const listener of zoneListeners) listener();
  });
  tokenButton = h('button', { type: 'button', class: 'ghost', title: 'Forget the token kept for this tab',
    onclick: () => { sessionStorage.removeItem(TOKEN); location.reload(); } }, 'Forget token');
  updateTokenButton();
  const link = (href, text, name) => h('a', { href: pageHref(href), 'aria-current': active === name ? 'page' : null }, text);
  const bar = h('header', { class: 'bar' },
    h('a', { class: 'brand', href: pageHref('./') }, h('img', { src: pageHref('assets/favicon.svg'), alt: '', width: 20, height: 20 }), 'eventlog'),
    h('nav', { 'aria-label': 'Pages' }, link('./', 'Executions', 'executions'), link('events', 'Live feed', 'events')),
    h('span', { class: 'spacer' }),
    zoneButton, tokenButton);
  document.body.prepend(bar);
  document.title = `${title} · eventlog`;
  const main = document.getElementById('main');
  main.removeAttribute('aria-busy');
  return main;
}

// The state of a live stream, as a badge.
export function liveBadge() {
  const badge = h('span', { class: 'live', role: 'status' });
  badge.set = (state, text) => {
    badge.dataset.state = state;
    badge.textContent = text || { live: 'Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…', paused: 'Paused' }[state] || state;
  };
  badge.set('connecting');
  return badge;
}

// --- live streams: SSE read with fetch(), since EventSource cannot send the token header.
// After a drop it reconnects with ?after=<the last seq it got>, which the server answers with
// what was missed and then live events: no gap, no repeat.
export class LiveStream {
  constructor(path, { after, onEvents, onState }) {
    this.path = path;
    this.after = after;
    this.onEvents = onEvents;
    this.onState = onState || (() => {});
    this.stopped = false;
    this.controller = null;
  }

  start() {
    this.run();
    return this;
  }

  stop() {
    this.stopped = true;
    this.controller?.abort();
  }

  // Drop the connection as a network failure would (the reconnect logic takes over).
  drop() {
    this.controller?.abort('drop');
  }

  async run() {
    let delay = 250;
    while (!this.stopped) {
      this.controller = new AbortController();
      try {
        const reply = await send(apiUrl(this.path, { after: this.after }), {
          headers: { Accept: 'text/event-stream' }, cache: 'no-store', signal: this.controller.signal,
        });
        if (!reply.ok) throw new ApiError(reply.status, await problemOf(reply));
        this.onState('live');
        delay = 250;
        await this.read(reply.body);
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof ApiError && err.status >= 400 && err.status < 500) {
          this.onState('error', err.message);
          return; // a request the server refuses will be refused again
        }
      }
      if (this.stopped) return;
      this.onState('reconnecting');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        const events = [];
        let ended = false;
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let id = null, kind = 'message', data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (field === 'id') id = text;
            else if (field === 'event') kind = text;
            else if (field === 'data') data += (data ? '\n' : '') + text;
          }
          if (id !== null) this.after = id;
          if (kind === 'message' && data) events.push(parseJSON(data));
          else if (kind === 'cutoff' || kind === 'end') ended = true;
        }
        if (events.length) this.onEvents(events);
        if (ended) return;
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }
}

// --- JSON, pretty-printed and collapsible (native <details>: keyboard and screen readers
// know it); children are built when opened, so a huge payload costs nothing until looked at.
function scalar(value) {
  if (isRaw(value)) return h('span', { class: 'j-num' }, value.rawJSON);
  if (value === null) return h('span', { class: 'j-null' }, 'null');
  switch (typeof value) {
    case 'string': return h('span', { class: 'j-str' }, JSON.stringify(value));
    case 'number': return h('span', { class: 'j-num' }, String(value));
    case 'boolean': return h('span', { class: 'j-bool' }, String(value));
    default: return h('span', {}, String(value));
  }
}

export function jsonTree(value, depth = 0) {
  if (value === null || typeof value !== 'object' || isRaw(value)) return scalar(value);
  const array = Array.isArray(value);
  const entries = array ? value.map((v, i) => [i, v]) : Object.entries(value);
  if (!entries.length) return h('span', { class: 'j-punct' }, array ? '[]' : '{}');
  const summary = h('summary', {}, h('span', { class: 'j-punct' }, array ? '[' : '{'),
    h('span', { class: 'j-count' }, ` ${entries.length} ${array ? (entries.length === 1 ? 'item' : 'items') : (entries.length === 1 ? 'key' : 'keys')} `));
  const details = h('details', { class: 'j-node' }, summary);
  let built = false;
  const build = () => {
    if (built) return;
    built = true;
    const body = h('div', { class: 'j-body' });
    for (const [key, child] of entries) {
      body.append(h('div', { class: 'j-row' },
        array ? null : h('span', { class: 'j-key' }, JSON.stringify(key)),
        array ? null : h('span', { class: 'j-punct' }, ': '),
        jsonTree(child, depth + 1)));
    }
    details.append(body, h('span', { class: 'j-punct' }, array ? ']' : '}'));
  };
  details.addEventListener('toggle', build);
  if (depth < 2 && entries.length <= 200) {
    details.open = true;
    build();
  }
  return details;
}

export async function copyText(text, button) {
  const old = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = 'Copied';
  } catch {
    // Clipboard API refused (an insecure origin, say): fall back to a selection copy.
    const area = h('textarea', { class: 'offscreen', 'aria-hidden': 'true' });
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand('copy');
    area.remove();
    button.textContent = ok ? 'Copied' : 'Copy failed';
  }
  setTimeout(() => { button.textContent = old; }, 1200);
}

const FIELDS = ['event_id', 'seq', 'execution_id', 'step', 'event_type', 'worker_id', 'result_kind', 'result_uri', 'event_ids', 'actionable', 'informative', 'created_at', 'ingested_at'];

// The inspector: one event's fields, its payload and meta, each copyable.
export function inspector(event, { executionLink = false } = {}) {
  if (!event) return h('div', { class: 'inspector empty' }, h('p', {}, 'Select an event (click it, or use the arrow keys in the list) to see its payload and meta.'));
  const section = (title, value) => {
    const copy = h('button', { type: 'button', class: 'small', onclick: (e) => copyText(JSON.stringify(value, null, 2), e.currentTarget) }, 'Copy');
    copy.setAttribute('aria-label', `Copy ${title}`);
    return h('section', { class: 'json-section' },
      h('div', { class: 'section-head' }, h('h3', {}, title), copy),
      h('div', { class: 'json' }, jsonTree(value)));
  };
  const rows = FIELDS.map((field) => {
    let value = event[field];
    if (field === 'execution_id' && executionLink) value = h('a', { href: pageHref(`executions/${event.execution_id}`) }, value);
    else if (field === 'created_at' || field === 'ingested_at') value = h('span', { title: event[field] }, `${formatTime(event[field])} ${zone.utc ? 'UTC' : ''}`.trim());
    else if (value === null) value = h('span', { class: 'muted' }, '—');
    else if (typeof value === 'object') value = JSON.stringify(value);
    else value = String(value);
    return [h('dt', {}, field), h('dd', {}, value)];
  });
  const copyAll = h('button', { type: 'button', class: 'small', onclick: (e) => copyText(JSON.stringify(event), e.currentTarget) }, 'Copy event');
  return h('div', { class: 'inspector' },
    h('div', { class: 'inspector-head' },
      h('h2', {}, event.event_type), statusPill(event.status),
      h('a', { class: 'permalink', href: `#event-${event.event_id}`, title: 'Link to this event' }, `#event-${event.event_id}`),
      copyAll),
    h('dl', { class: 'fields' }, rows.flat()),
    section('payload', event.payload),
    section('meta', event.meta));
}

export function notice(text, kind = 'info') {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}
