// The event list both event pages show: filters with counts kept in the URL, and a virtualised
// list (only the rows in view exist in the DOM, so 10,000 events cost as much as 40).
import { formatTime, h, pageHref, perFrame, statusPill } from './common.js';

export const FACETS = [
  ['event_type', 'Type', 'types'],
  ['step', 'Step', 'steps'],
  ['worker_id', 'Worker', 'workers'],
  ['status', 'Status', 'statuses'],
];
const NONE = '(none)';
const valueOf = (event, facet) => event[facet] ?? NONE;

// Filters: one select per facet; each option shows how many events it would keep, given the
// other filters (so a count never promises rows that another filter hides).
export class Filters {
  constructor(onChange) {
    this.onChange = onChange;
    const params = new URLSearchParams(location.search);
    this.chosen = Object.fromEntries(FACETS.map(([facet]) => [facet, params.get(facet) ?? '']));
    this.selects = {};
    this.element = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter events', onsubmit: (e) => e.preventDefault() });
    for (const [facet, label] of FACETS) {
      const select = h('select', { id: `filter-${facet}`, name: facet, onchange: () => this.set(facet, select.value) });
      this.selects[facet] = select;
      this.element.append(h('label', { class: 'filter', for: select.id }, h('span', {}, label), select));
    }
    this.clear = h('button', { type: 'button', class: 'ghost', onclick: () => this.reset() }, 'Clear filters');
    this.count = h('span', { class: 'filter-count', role: 'status' });
    this.element.append(this.clear, this.count);
  }

  matches(event, except = null) {
    for (const [facet] of FACETS) {
      const want = this.chosen[facet];
      if (want && facet !== except && valueOf(event, facet) !== want) return false;
    }
    return true;
  }

  get active() {
    return FACETS.some(([facet]) => this.chosen[facet]);
  }

  set(facet, value) {
    this.chosen[facet] = value;
    const params = new URLSearchParams(location.search);
    for (const [name] of FACETS) {
      if (this.chosen[name]) params.set(name, this.chosen[name]);
      else params.delete(name);
    }
    const query = params.toString();
    history.replaceState(history.state, '', location.pathname + (query ? '?' + query : '') + location.hash);
    this.onChange();
  }

  reset() {
    for (const [facet] of FACETS) this.chosen[facet] = '';
    this.set(FACETS[0][0], '');
  }

  // Recount every option over ``events`` and say how many are shown.
  update(events, shown) {
    for (const [facet, , plural] of FACETS) {
      const counts = new Map();
      let all = 0;
      for (const event of events) {
        if (!this.matches(event, facet)) continue;
        all += 1;
        const key = valueOf(event, facet);
        counts.set(key, (counts.get(key) || 0) + 1);
      }
      const want = this.chosen[facet];
      if (want && !counts.has(want)) counts.set(want, 0); // keep a choice the data lacks (yet)
      const select = this.selects[facet];
      const options = [h('option', { value: '' }, `All ${plural} (${all.toLocaleString('en-US')})`)];
      for (const [key, n] of [...counts].sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(String(b[0])))) {
        options.push(h('option', { value: key }, `${key} (${n.toLocaleString('en-US')})`));
      }
      select.replaceChildren(...options);
      select.value = want;
      select.classList.toggle('chosen', Boolean(want));
    }
    this.clear.hidden = !this.active;
    this.count.textContent = this.active
      ? `${shown.toLocaleString('en-US')} of ${events.length.toLocaleString('en-US')} events`
      : `${events.length.toLocaleString('en-US')} events`;
  }
}

const COLUMNS = {
  seq: ['Seq', (e) => e.seq],
  time: ['Time', (e) => h('time', { datetime: e.created_at, title: `${formatTime(e.created_at)} (${e.created_at})` }, formatTime(e.created_at, 'time'))],
  execution: ['Execution', (e) => h('a', { href: pageHref(`executions/${e.execution_id}`), tabindex: '-1' }, e.execution_id)],
  step: ['Step', (e) => e.step],
  type: ['Event type', (e) => e.event_type],
  status: ['Status', (e) => statusPill(e.status)],
  worker: ['Worker', (e) => e.worker_id ?? ''],
  link: ['', (e) => h('a', { href: `#event-${e.event_id}`, class: 'permalink', tabindex: '-1', title: `Link to event ${e.event_id}` }, '#')],
};

export class VirtualList {
  constructor({ columns, label, onSelect, newestFirst = false, rowHeight = 32 }) {
    this.columns = columns;
    this.onSelect = onSelect;
    this.newestFirst = newestFirst;
    this.rowHeight = rowHeight;
    this.items = [];
    this.selected = null;
    this.schedule = perFrame(() => this.render());
    this.head = h('div', { class: `vrow vhead cols-${columns.length}`, role: 'row' },
      columns.map((c) => h('span', { role: 'columnheader', class: `c-${c}` }, COLUMNS[c][0])));
    this.spacer = h('div', { class: 'vspacer' });
    this.body = h('div', { class: 'vbody', tabindex: '0', role: 'listbox', 'aria-label': label }, this.spacer);
    this.empty = h('p', { class: 'vempty muted' }, 'No events.');
    this.element = h('div', { class: 'vlist' }, this.head, this.body, this.empty);
    this.body.addEventListener('scroll', () => this.schedule());
    this.body.addEventListener('keydown', (e) => this.key(e));
    this.body.addEventListener('click', (e) => {
      const row = e.target.closest('.vrow');
      if (row && !e.target.closest('a')) this.select(this.items[Number(row.dataset.index)], true);
    });
    new ResizeObserver(() => this.schedule()).observe(this.body);
  }

  // ``items`` in commit order; shown newest first when the list was made so.
  set(items) {
    const atEdge = this.atFollowEdge();
    this.items = this.newestFirst ? items.slice().reverse() : items;
    this.empty.hidden = this.items.length > 0;
    this.spacer.style.height = `${this.items.length * this.rowHeight}px`;
    if (atEdge) this.scrollToEdge();
    this.schedule();
  }

  // New events keep the list following them when the reader was at the newest end.
  atFollowEdge() {
    const b = this.body;
    if (this.newestFirst) return b.scrollTop < this.rowHeight;
    return b.scrollTop + b.clientHeight >= b.scrollHeight - this.rowHeight;
  }

  scrollToEdge() {
    this.body.scrollTop = this.newestFirst ? 0 : this.body.scrollHeight;
  }

  render() {
    const { scrollTop, clientHeight } = this.body;
    const first = Math.max(0, Math.floor(scrollTop / this.rowHeight) - 5);
    const last = Math.min(this.items.length, Math.ceil((scrollTop + clientHeight) / this.rowHeight) + 5);
    const rows = [];
    for (let i = first; i < last; i++) {
      const e = this.items[i];
      const selected = e === this.selected;
      const row = h('div', {
        class: `vrow cols-${this.columns.length} st-row-${e.status.toLowerCase()}${selected ? ' selected' : ''}`,
        role: 'option', id: `event-row-${e.event_id}`, 'aria-selected': String(selected), 'data-index': i,
        'data-event-id': e.event_id,
      }, this.columns.map((c) => h('span', { class: `c-${c}` }, COLUMNS[c][1](e))));
      row.style.top = `${i * this.rowHeight}px`;
      rows.push(row);
    }
    this.spacer.replaceChildren(...rows);
    if (this.selected && rows.some((r) => r.dataset.eventId === this.selected.event_id)) {
      this.body.setAttribute('aria-activedescendant', `event-row-${this.selected.event_id}`);
    } else this.body.removeAttribute('aria-activedescendant');
  }

  indexOf(event) {
    return event ? this.items.indexOf(event) : -1;
  }

  select(event, notify = false) {
    this.selected = event;
    const i = this.indexOf(event);
    if (i >= 0) {
      const top = i * this.rowHeight;
      const b = this.body;
      if (top < b.scrollTop) b.scrollTop = top;
      else if (top + this.rowHeight > b.scrollTop + b.clientHeight) b.scrollTop = top + this.rowHeight - b.clientHeight;
    }
    this.render();
    if (notify && event) this.onSelect(event);
  }

  key(e) {
    if (!this.items.length) return;
    const page = Math.max(1, Math.floor(this.body.clientHeight / this.rowHeight) - 1);
    const i = this.indexOf(this.selected);
    const moves = { ArrowDown: i + 1, ArrowUp: i < 0 ? 0 : i - 1, PageDown: i + page, PageUp: i - page, Home: 0, End: this.items.length - 1 };
    if (!(e.key in moves)) return;
    e.preventDefault();
    const next = Math.min(this.items.length - 1, Math.max(0, moves[e.key]));
    this.select(this.items[next], true);
  }
}
