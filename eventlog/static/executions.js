// Executions, newest activity first, a page at a time; kept current by the live stream.
import {
  ApiError, LiveStream, formatDuration, formatTime, getJSON, h, liveBadge, notice, number, onZoneChange,
  pageHref, shell, statusPill, toMs, zone,
} from './common.js';

const PAGE = 50;
const params = new URLSearchParams(location.search);
const cursor = params.get('after');
const firstPage = !cursor;
const main = shell('executions', 'Executions');

let rows = []; // summaries shown, newest activity first
let next = null;
const changed = new Set();

const badge = liveBadge();
const search = h('input', { type: 'search', id: 'search', inputmode: 'numeric', placeholder: 'Execution id', autocomplete: 'off', 'aria-describedby': 'search-help' });
const searchForm = h('form', { class: 'search', role: 'search', onsubmit: (e) => { e.preventDefault(); go(); } },
  h('label', { for: 'search', class: 'visually-hidden' }, 'Find an execution by id'), search,
  h('button', { type: 'submit' }, 'Open'),
  h('span', { id: 'search-help', class: 'muted' }, 'Type to narrow this page; Enter opens the execution.'));
const message = h('div', { class: 'messages' });
const body = h('tbody');
const table = h('table', { class: 'executions' },
  h('caption', { class: 'visually-hidden' }, 'Executions, newest activity first'),
  h('thead', {}, h('tr', {}, ['Status', 'Execution', 'Events', 'First event', 'Last event', 'Duration', 'Last event type']
    .map((label, i) => h('th', { scope: 'col', class: i === 2 || i === 5 ? 'num' : null }, label)))),
  body);
const headers = [...table.querySelectorAll('th')];
const pager = h('nav', { class: 'pager', 'aria-label': 'Pages of executions' });

main.append(
  h('section', { class: 'summary' },
    h('div', { class: 'summary-head' }, h('h1', {}, 'Executions'), h('span', { class: 'spacer' }), badge),
    searchForm),
  message,
  h('section', { class: 'panel table-panel' }, table),
  pager);

function row(x) {
  const href = pageHref(`executions/${x.execution_id}`);
  const tr = h('tr', { 'data-execution-id': x.execution_id, 'data-status': x.status, 'data-count': x.event_count, class: changed.has(x.execution_id) ? 'flash' : null },
    h('td', {}, statusPill(x.status)),
    h('td', { class: 'mono' }, h('a', { href }, x.execution_id)),
    h('td', { class: 'num' }, number(x.event_count)),
    h('td', { title: x.first_event_at }, formatTime(x.first_event_at)),
    h('td', { title: x.last_event_at }, formatTime(x.last_event_at)),
    h('td', { class: 'num' }, formatDuration(toMs(x.last_event_at) - toMs(x.first_event_at))),
    h('td', { class: 'mono' }, x.last_event_type));
  tr.addEventListener('click', (e) => { if (!e.target.closest('a')) location.href = href; });
  return tr;
}

function render() {
  const needle = search.value.trim();
  const shown = needle ? rows.filter((x) => x.execution_id.includes(needle)) : rows;
  body.replaceChildren(...shown.map(row));
  changed.clear();
  if (!rows.length) {
    message.replaceChildren(notice(firstPage
      ? 'No executions yet. Post an event to /api/events and it appears here at once.'
      : 'No older executions.'));
  } else if (!shown.length) {
    message.replaceChildren(notice(`None on this page matches “${needle}”; press Enter to open execution ${needle}.`));
  } else message.replaceChildren();
  const where = zone.utc ? ' (UTC)' : ' (local)';
  headers[3].textContent = 'First event' + where;
  headers[4].textContent = 'Last event' + where;
  pager.replaceChildren(...[
    firstPage ? null : h('a', { href: pageHref('./'), class: 'button' }, '« Newest'),
    next ? h('a', { href: `${pageHref('./')}?after=${next}`, class: 'button', rel: 'next' }, 'Older »') : null,
  ].filter(Boolean));
}

async function go() {
  const wanted = search.value.trim();
  if (!/^\d{1,19}$/.test(wanted)) {
    message.replaceChildren(notice('An execution id is a number.', 'error'));
    return;
  }
  try {
    await getJSON(`executions/${wanted}`);
    location.href = pageHref(`executions/${wanted}`);
  } catch (err) {
    if (!(err instanceof ApiError) || (err.status !== 404 && err.status !== 400)) throw err;
    message.replaceChildren(h('p', { class: 'notice error', role: 'alert' },
      `No events for execution ${wanted}. `, h('a', { href: pageHref(`executions/${wanted}`) }, 'Open it anyway'), ' to wait for them.'));
  }
}

search.addEventListener('input', render);

// Which executions the stream touched since the last refresh; refetched together.
const dirty = new Set();
let timer = 0;
function touched(batch) {
  for (const e of batch) dirty.add(e.execution_id);
  timer ||= setTimeout(refresh, 50);
}

async function refresh() {
  const ids = [...dirty];
  dirty.clear();
  try {
    if (firstPage && ids.length > 20) {
      // Busy: one page request beats twenty summaries.
      const page = await getJSON('executions', { limit: PAGE });
      for (const x of page.executions) if (ids.includes(x.execution_id)) changed.add(x.execution_id);
      rows = page.executions;
      next = page.next_cursor;
    } else {
      const shown = new Set(rows.map((x) => x.execution_id));
      const wanted = firstPage ? ids : ids.filter((x) => shown.has(x));
      const found = await Promise.all(wanted.map((x) => getJSON(`executions/${x}`).catch(() => null)));
      const fresh = new Map(found.filter(Boolean).map((x) => [x.execution_id, x]));
      for (const x of fresh.keys()) changed.add(x);
      rows = rows.filter((x) => !fresh.has(x.execution_id) || !firstPage).map((x) => fresh.get(x.execution_id) ?? x);
      if (firstPage) {
        rows = [...fresh.values(), ...rows].sort((a, b) => (BigInt(b.last_seq) > BigInt(a.last_seq) ? 1 : -1));
        if (rows.length > PAGE) {
          next = rows[PAGE - 1].last_seq;
          rows = rows.slice(0, PAGE);
        }
      }
    }
    render();
  } catch {
    for (const x of ids) dirty.add(x); // the server is away for a moment: try again later
    await new Promise((resolve) => setTimeout(resolve, 1000));
  } finally {
    timer = dirty.size ? setTimeout(refresh, 50) : 0;
  }
}

onZoneChange(render);

try {
  const page = await getJSON('executions', { limit: PAGE, after: cursor });
  rows = page.executions;
  next = page.next_cursor;
  render();
  // Follow the log from its head as this page saw it, so nothing between the two is missed.
  let head = rows.length ? rows[0].last_seq : '0';
  if (!firstPage) head = (await getJSON('executions', { limit: 1 })).executions[0]?.last_seq ?? '0';
  new LiveStream('events/stream', { after: head, onEvents: touched, onState: (state, text) => badge.set(state, text) }).start();
  document.body.dataset.loaded = String(rows.length);
} catch (err) {
  message.replaceChildren(notice(`Could not load the executions: ${err.message}`, 'error'));
  badge.set('error', 'Offline');
}
