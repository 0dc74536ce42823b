// The live feed: every event as it is written, newest first, with the event filters and a pause.
import { LiveStream, getJSON, h, inspector, liveBadge, notice, number, onZoneChange, perFrame, shell } from './common.js';
import { Filters, VirtualList } from './eventlist.js';

const KEEP = 10000; // the feed holds the newest events only
const HISTORY = 200; // how far back it starts

const main = shell('events', 'Live feed');
let events = [];
let pending = [];
let paused = false;
let selected = null;

const badge = liveBadge();
const pauseButton = h('button', { type: 'button', 'aria-pressed': 'false', onclick: togglePause }, 'Pause');
const message = h('div', { class: 'messages' });
const filters = new Filters(applyFilters);
const list = new VirtualList({
  columns: ['time', 'execution', 'step', 'type', 'status', 'worker'],
  label: 'Events, newest first',
  newestFirst: true,
  onSelect: (event) => choose(event),
});
const details = h('aside', { class: 'panel inspector-panel', 'aria-label': 'Event details' }, inspector(null));

main.append(
  h('section', { class: 'summary' },
    h('div', { class: 'summary-head' }, h('h1', {}, 'Live feed'), h('span', { class: 'spacer' }), badge, pauseButton),
    h('p', { class: 'muted' }, `Every event as it is committed, newest first (the newest ${number(KEEP)} are kept).`)),
  message,
  h('div', { class: 'split' },
    h('section', { class: 'panel list-panel', 'aria-label': 'Events' }, filters.element, list.element),
    details));

function applyFilters() {
  const shown = filters.active ? events.filter((e) => filters.matches(e)) : events;
  filters.update(events, shown.length);
  list.set(shown);
}

function choose(event) {
  selected = event;
  list.select(event);
  details.replaceChildren(inspector(event, { executionLink: true }));
}

// Many events a second: redraw once per frame, not once per message.
const redraw = perFrame(applyFilters);
function show(batch) {
  events = events.concat(batch);
  if (events.length > KEEP) events = events.slice(events.length - KEEP);
  redraw();
}

function togglePause() {
  paused = !paused;
  pauseButton.setAttribute('aria-pressed', String(paused));
  if (paused) {
    badge.set('paused');
    pauseButton.textContent = 'Resume';
  } else {
    pauseButton.textContent = 'Pause';
    badge.set('live');
    const held = pending;
    pending = [];
    if (held.length) show(held);
  }
}

function receive(batch) {
  if (paused) {
    // Still received, so nothing is missed: shown on resume.
    pending = pending.concat(batch);
    pauseButton.textContent = `Resume (${number(pending.length)} new)`;
    return;
  }
  show(batch);
}

onZoneChange(() => { list.render(); if (selected) details.replaceChildren(inspector(selected, { executionLink: true })); });
applyFilters();

try {
  // The newest execution's last seq is the log's head: start a little before it.
  const newest = await getJSON('executions', { limit: 1 });
  const head = newest.executions.length ? BigInt(newest.executions[0].last_seq) : 0n;
  const after = head > BigInt(HISTORY) ? head - BigInt(HISTORY) : 0n;
  new LiveStream('events/stream', {
    after: String(after),
    onEvents: receive,
    onState: (state, text) => { if (!paused || state !== 'live') badge.set(state, text); },
  }).start();
  document.body.dataset.loaded = '1';
} catch (err) {
  message.replaceChildren(notice(`Could not start the feed: ${err.message}`, 'error'));
}
