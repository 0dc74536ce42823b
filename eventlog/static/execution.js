// One execution: its summary, timeline, filtered event list and inspector, followed live.
import {
  LiveStream, formatDuration, formatTime, getJSON, h, inspector, liveBadge, notice, number,
  onZoneChange, shell, statusPill, toMs, zone,
} from './common.js';
import { Filters, VirtualList } from './eventlist.js';
import { Timeline } from './timeline.js';

const PAGE = 1000;
const id = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop());
const main = shell('executions', `Execution ${id}`);

const events = [];
const byId = new Map();
let lastSeq = null;
let selected = null;

const title = h('h1', {}, 'Execution ', h('span', { class: 'mono' }, id));
const status = h('span', { class: 'summary-status' });
const stats = h('dl', { class: 'stats' });
const badge = liveBadge();
const exportButton = h('button', { type: 'button', onclick: exportNdjson, disabled: true }, 'Export NDJSON');
const message = h('div', { class: 'messages' });
const filters = new Filters(applyFilters);
const list = new VirtualList({
  columns: ['seq', 'time', 'step', 'type', 'status', 'worker', 'link'],
  label: 'Events of this execution, in commit order',
  onSelect: (event) => choose(event, true),
});
const timeline = new Timeline({
  onSelect: (event) => choose(event, true),
  onStep: (step) => { filters.set('step', filters.chosen.step === step ? '' : step); },
});
const details = h('aside', { class: 'panel inspector-panel', 'aria-label': 'Event details' }, inspector(null));

main.append(
  h('section', { class: 'summary' },
    h('div', { class: 'summary-head' }, title, status, h('span', { class: 'spacer' }), badge, exportButton),
    stats),
  message,
  h('section', { class: 'panel', 'aria-label': 'Timeline' }, timeline.element),
  h('div', { class: 'split' },
    h('section', { class: 'panel list-panel', 'aria-label': 'Events' }, filters.element, list.element),
    details));

function showSummary(summary) {
  if (!summary) {
    status.replaceChildren(h('span', { class: 'muted' }, 'no events yet'));
    stats.replaceChildren();
    return;
  }
  status.replaceChildren(statusPill(summary.status));
  const stat = (label, value, title) => [h('dt', {}, label), h('dd', { title }, value)];
  const zoneName = zone.utc ? ' UTC' : '';
  stats.replaceChildren(...[
    stat('Events', number(summary.event_count)),
    stat('First event', formatTime(summary.first_event_at) + zoneName, summary.first_event_at),
    stat('Last event', formatTime(summary.last_event_at) + zoneName, summary.last_event_at),
    stat('Duration', formatDuration(toMs(summary.last_event_at) - toMs(summary.first_event_at))),
    stat('Last event type', summary.last_event_type),
  ].flat());
}

let summary = null;
async function refreshSummary() {
  summary = await getJSON(`executions/${id}`);
  showSummary(summary);
}

// Summaries are refetched, not computed here: the server alone decides an execution's status.
let summaryTimer = 0;
function summaryLater() {
  summaryTimer ||= setTimeout(() => { summaryTimer = 0; refreshSummary().catch(() => {}); }, 150);
}

function applyFilters() {
  const shown = filters.active ? events.filter((e) => filters.matches(e)) : events;
  filters.update(events, shown.length);
  list.set(shown);
  timeline.setFilter(filters.active ? (e) => filters.matches(e) : () => true);
}

function choose(event, updateHash) {
  selected = event;
  list.select(event);
  timeline.select(event);
  details.replaceChildren(inspector(event));
  if (updateHash && event) history.replaceState(history.state, '', `${location.pathname}${location.search}#event-${event.event_id}`);
}

function fromHash() {
  const match = /^#event-(\d+)$/.exec(location.hash);
  const event = match && byId.get(match[1]);
  if (event && event !== selected) choose(event, false);
}

let busy = 0; // ms spent laying out and drawing events: the page's own share of a load
function add(batch) {
  const started = performance.now();
  const fresh = batch.filter((e) => lastSeq === null || BigInt(e.seq) > BigInt(lastSeq));
  if (!fresh.length) return;
  for (const e of fresh) {
    events.push(e);
    byId.set(e.event_id, e);
  }
  lastSeq = fresh[fresh.length - 1].seq;
  timeline.add(fresh);
  applyFilters();
  exportButton.disabled = false;
  busy += performance.now() - started;
}

function exportNdjson() {
  const lines = events.map((e) => JSON.stringify(e) + '\n');
  const url = URL.createObjectURL(new Blob(lines, { type: 'application/x-ndjson' }));
  const link = h('a', { href: url, download: `execution-${id}.ndjson` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function load() {
  const loading = notice('Loading events…');
  message.replaceChildren(loading);
  const fetchPage = (after) => getJSON(`executions/${id}/events`, { limit: PAGE, after, order: 'asc' });
  // The first page is shown at once; the rest are gathered and shown together (one layout,
  // one count of the filters), each next page already on its way while one is unpacked.
  let request = fetchPage();
  const rest = [];
  for (let first = true; ; first = false) {
    const page = await request;
    if (page.next_cursor) request = fetchPage(page.next_cursor);
    if (first) add(page.events);
    else rest.push(...page.events);
    loading.textContent = `Loading events… ${number(events.length + rest.length)}`;
    if (!page.next_cursor) break;
  }
  add(rest);
  // An execution without events has no summary yet (a 404): ask only once there is one.
  if (events.length) await refreshSummary();
  else showSummary(null);
  message.replaceChildren();
  if (!events.length) message.append(notice('No events for this execution yet: they appear here as they are written.'));
  fromHash();
  if (!selected) list.scrollToEdge();
  // What a test or a person timing the page can read once all is on screen (after the next
  // frame is painted): since navigation, and the part of it this page spent itself.
  const painted = performance.now();
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve)));
  busy += performance.now() - painted;
  document.body.dataset.loadedMs = String(Math.round(performance.now()));
  document.body.dataset.renderMs = String(Math.round(busy));
  document.body.dataset.loaded = String(events.length);
}

window.addEventListener('hashchange', fromHash);
onZoneChange(() => { showSummary(summary); list.render(); timeline.draw(); if (selected) details.replaceChildren(inspector(selected)); });

try {
  await load();
  const stream = new LiveStream(`executions/${id}/events/stream`, {
    after: lastSeq ?? '0',
    onEvents: (batch) => {
      add(batch);
      if (!events.length) return;
      message.replaceChildren();
      summaryLater();
    },
    onState: (state, text) => badge.set(state, text),
  }).start();
  // Handles for tests and for a curious reader's console: drop the stream, map times to x.
  window.eventlogStream = stream;
  window.eventlogTimeline = timeline;
} catch (err) {
  message.replaceChildren(notice(`Could not load this execution: ${err.message}`, 'error'));
  badge.set('error', 'Offline');
}
