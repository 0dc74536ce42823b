// The timeline of one execution: a row per step (in the order the steps began), a bar from the
// step's first to its last event and a mark per event, coloured by status, drawn on a canvas so
// that 10,000 marks cost one paint. Zoom and pan change the time window; rows scroll.
import { formatDuration, formatTime, h, perFrame, statusKey, toMs, zone } from './common.js';

const ROW = 26;
const AXIS = 26;
const LABELS = 220;
const STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5,
  9e5, 18e5, 36e5, 72e5, 108e5, 216e5, 432e5, 864e5, 1728e5, 6048e5];

function colours() {
  const style = getComputedStyle(document.documentElement);
  const get = (name) => style.getPropertyValue(name).trim();
  const out = { text: get('--text'), muted: get('--muted'), grid: get('--grid'), stripe: get('--stripe'), failedRow: get('--failed-row'), selected: get('--focus') };
  for (const key of ['running', 'completed', 'failed', 'cancelled', 'other']) {
    out[key] = get(`--st-${key}`);
    out[`${key}Bar`] = get(`--st-${key}-bar`);
  }
  return out;
}

// The step's status: FAILED if any of its events failed (a retried failure must still show),
// else its newest event's.
function stepStatus(step) {
  return step.failed ? 'FAILED' : step.last.status;
}

export class Timeline {
  constructor({ onSelect, onStep }) {
    this.onSelect = onSelect;
    this.onStep = onStep;
    this.draw = perFrame(() => this.paint());
    this.steps = [];
    this.byName = new Map();
    this.match = () => true;
    this.selected = null;
    this.window = null; // [t0, t1] the reader chose; null = fit everything
    this.canvas = h('canvas', { class: 'tl-canvas', tabindex: '0', role: 'img', 'aria-label': 'Timeline of the steps. Arrow keys pan, + and - zoom, 0 fits.' });
    this.labels = h('div', { class: 'tl-labels' });
    this.inner = h('div', { class: 'tl-inner' }, this.labels, h('div', { class: 'tl-plot' }, this.canvas));
    this.scroll = h('div', { class: 'tl-scroll' }, this.inner);
    this.tip = h('div', { class: 'tl-tip', role: 'tooltip', hidden: true });
    const button = (text, title, action) => h('button', { type: 'button', class: 'small', title, 'aria-label': title, onclick: action }, text);
    this.toolbar = h('div', { class: 'tl-tools' },
      button('−', 'Zoom out', () => this.zoom(2)), button('+', 'Zoom in', () => this.zoom(0.5)),
      button('Fit', 'Show the whole execution', () => this.fit()),
      h('span', { class: 'muted hint' }, 'Drag to pan · Ctrl + wheel to zoom · click a mark for its event'));
    this.element = h('div', { class: 'timeline' }, this.toolbar, this.scroll, this.tip);
    this.colours = colours();
    matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => { this.colours = colours(); this.draw(); });
    this.scroll.addEventListener('scroll', () => this.draw());
    new ResizeObserver(() => this.resize()).observe(this.scroll);
    this.bindPointer();
    this.canvas.addEventListener('keydown', (e) => this.key(e));
  }

  // Events in commit order (appended ones too).
  add(events) {
    let newSteps = false;
    for (const e of events) {
      const t = toMs(e.created_at);
      let step = this.byName.get(e.step);
      if (!step) {
        step = { name: e.step, events: [], times: [], first: t, lastTime: t, last: e, failed: false, index: this.steps.length };
        this.byName.set(e.step, step);
        this.steps.push(step);
        newSteps = true;
      }
      // Keep each row's events sorted by time: producers' clocks need not follow commit order.
      const n = step.times.length;
      if (n && step.times[n - 1] > t) {
        const i = bisect(step.times, t);
        step.times.splice(i, 0, t);
        step.events.splice(i, 0, e);
      } else {
        step.times.push(t);
        step.events.push(e);
      }
      step.first = Math.min(step.first, t);
      step.lastTime = Math.max(step.lastTime, t);
      step.last = e;
      if (e.status === 'FAILED') step.failed = true;
      this.min = Math.min(this.min ?? t, t);
      this.max = Math.max(this.max ?? t, t);
    }
    if (newSteps) this.steps.sort((a, b) => a.first - b.first || a.index - b.index);
    this.layout();
  }

  setFilter(match) {
    this.match = match;
    this.draw();
  }

  select(event) {
    this.selected = event;
    if (event) {
      const [t0, t1] = this.view();
      const t = toMs(event.created_at);
      if (t < t0 || t > t1) this.window = [t - (t1 - t0) / 2, t + (t1 - t0) / 2];
      const row = this.steps.indexOf(this.byName.get(event.step));
      const top = row * ROW;
      if (top < this.scroll.scrollTop || top + ROW > this.scroll.scrollTop + this.scroll.clientHeight - AXIS) {
        this.scroll.scrollTop = Math.max(0, top - this.scroll.clientHeight / 2);
      }
    }
    this.draw();
  }

  layout() {
    this.inner.style.height = `${AXIS + this.steps.length * ROW + 4}px`;
    const labels = this.steps.map((step, i) => {
      const status = stepStatus(step);
      const label = h('button', {
        type: 'button', class: `tl-label st-${statusKey(status)}${step.failed ? ' failed' : ''}`, 'data-step': step.name, 'data-status': status,
        title: `${step.name}: ${status}, ${step.events.length} events — click to show only this step`,
        onclick: () => this.onStep(step.name),
      }, h('span', { class: 'dot', 'aria-hidden': 'true' }), h('span', { class: 'tl-name' }, step.name), h('span', { class: 'tl-n' }, step.events.length));
      label.style.top = `${AXIS + i * ROW}px`;
      return label;
    });
    this.labels.replaceChildren(h('div', { class: 'tl-axis-label' }, 'Step'), ...labels);
    this.resize();
  }

  resize() {
    const width = this.canvas.parentElement.clientWidth;
    const height = Math.min(this.scroll.clientHeight || 0, AXIS + this.steps.length * ROW + 4);
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = Math.max(1, Math.round(width * ratio));
    this.canvas.height = Math.max(1, Math.round(height * ratio));
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    this.width = width;
    this.height = height;
    this.ratio = ratio;
    this.draw();
  }

  view() {
    if (this.window) return this.window;
    const min = this.min ?? Date.now(), max = this.max ?? Date.now();
    const pad = Math.max((max - min) * 0.02, 50);
    return [min - pad, max + pad];
  }

  x(t) {
    const [t0, t1] = this.view();
    return ((t - t0) / (t1 - t0)) * (this.width - 16) + 8;
  }

  t(x) {
    const [t0, t1] = this.view();
    return t0 + ((x - 8) / (this.width - 16)) * (t1 - t0);
  }

  zoom(factor, around) {
    const [t0, t1] = this.view();
    const c = around ?? (t0 + t1) / 2;
    const span = Math.max((t1 - t0) * factor, 2);
    this.window = [c - (c - t0) * (span / (t1 - t0)), c + (t1 - c) * (span / (t1 - t0))];
    this.draw();
  }

  pan(fraction) {
    const [t0, t1] = this.view();
    const d = (t1 - t0) * fraction;
    this.window = [t0 + d, t1 + d];
    this.draw();
  }

  fit() {
    this.window = null;
    this.draw();
  }

  key(e) {
    const actions = { '+': () => this.zoom(0.5), '=': () => this.zoom(0.5), '-': () => this.zoom(2), '0': () => this.fit(),
      ArrowLeft: () => this.pan(-0.2), ArrowRight: () => this.pan(0.2),
      ArrowUp: () => { this.scroll.scrollTop -= ROW; }, ArrowDown: () => { this.scroll.scrollTop += ROW; } };
    if (actions[e.key]) {
      e.preventDefault();
      actions[e.key]();
    }
  }

  // The event under (x, y) on the canvas, within a few pixels; else the step row's nearest.
  hit(x, y) {
    const row = Math.floor((y - AXIS + this.scroll.scrollTop) / ROW);
    if (y < AXIS || row < 0 || row >= this.steps.length) return null;
    const step = this.steps[row];
    const t = this.t(x);
    let i = bisect(step.times, t);
    if (i > 0 && (i === step.times.length || Math.abs(step.times[i - 1] - t) < Math.abs(step.times[i] - t))) i -= 1;
    const event = step.events[i];
    return { step, event, near: Math.abs(this.x(step.times[i]) - x) <= 6 };
  }

  bindPointer() {
    let drag = null;
    const c = this.canvas;
    c.addEventListener('pointerdown', (e) => {
      drag = { x: e.clientX, view: this.view(), moved: false };
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener('pointermove', (e) => {
      const rect = c.getBoundingClientRect();
      if (drag) {
        const dx = e.clientX - drag.x;
        if (Math.abs(dx) > 3) drag.moved = true;
        if (drag.moved) {
          const [t0, t1] = drag.view;
          const dt = (dx / (this.width - 16)) * (t1 - t0);
          this.window = [t0 - dt, t1 - dt];
          this.draw();
        }
        return;
      }
      const hit = this.hit(e.clientX - rect.left, e.clientY - rect.top);
      this.showTip(hit, e.clientX - this.element.getBoundingClientRect().left, e.clientY - this.element.getBoundingClientRect().top);
    });
    c.addEventListener('pointerup', (e) => {
      const moved = drag?.moved;
      drag = null;
      if (moved) return;
      const rect = c.getBoundingClientRect();
      const hit = this.hit(e.clientX - rect.left, e.clientY - rect.top);
      if (hit) this.onSelect(hit.event);
    });
    c.addEventListener('pointerleave', () => { this.tip.hidden = true; });
    c.addEventListener('wheel', (e) => {
      const rect = c.getBoundingClientRect();
      if (e.ctrlKey || e.metaKey) {
        e.preventDefault();
        this.zoom(Math.exp(e.deltaY * 0.002), this.t(e.clientX - rect.left));
      } else if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
        e.preventDefault();
        this.pan((e.deltaX || e.deltaY) / this.width);
      }
    }, { passive: false });
  }

  showTip(hit, x, y) {
    if (!hit) {
      this.tip.hidden = true;
      return;
    }
    const { step, event, near } = hit;
    const lines = near
      ? [h('strong', {}, event.event_type), `${event.status} · ${event.step}`, `${formatTime(event.created_at)}${zone.utc ? ' UTC' : ''}`,
        event.worker_id ? `worker ${event.worker_id}` : null, h('span', { class: 'muted' }, `seq ${event.seq} · click to inspect`)]
      : [h('strong', {}, step.name), `${stepStatus(step)} · ${step.events.length} events`, formatDuration(step.lastTime - step.first)];
    this.tip.replaceChildren(...lines.filter(Boolean).map((l) => h('div', {}, l)));
    this.tip.hidden = false;
    this.tip.style.left = `${Math.min(x + 14, this.element.clientWidth - 260)}px`;
    this.tip.style.top = `${y + 14}px`;
  }

  paint() {
    const ctx = this.canvas.getContext('2d');
    const C = this.colours;
    ctx.setTransform(this.ratio, 0, 0, this.ratio, 0, 0);
    ctx.clearRect(0, 0, this.width, this.height);
    const [t0, t1] = this.view();
    const scroll = this.scroll.scrollTop;
    const first = Math.max(0, Math.floor(scroll / ROW));
    const last = Math.min(this.steps.length, Math.ceil((scroll + this.height) / ROW));
    for (let i = first; i < last; i++) {
      const y = AXIS + i * ROW - scroll;
      if (this.steps[i].failed || i % 2) {
        ctx.fillStyle = this.steps[i].failed ? C.failedRow : C.stripe;
        ctx.fillRect(0, y, this.width, ROW);
      }
    }
    // the grid under the bars, its labels in the axis band above them
    const span = t1 - t0;
    const tick = STEPS.find((s) => (s / span) * this.width >= 110) ?? STEPS[STEPS.length - 1];
    const offset = zone.utc ? 0 : -new Date(t0).getTimezoneOffset() * 60000;
    const ticks = [];
    for (let t = Math.ceil((t0 + offset) / tick) * tick - offset; t <= t1; t += tick) ticks.push(t);
    ctx.strokeStyle = C.grid;
    ctx.lineWidth = 1;
    for (const t of ticks) {
      const x = Math.round(this.x(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, AXIS);
      ctx.lineTo(x, this.height);
      ctx.stroke();
    }
    for (let i = first; i < last; i++) {
      const step = this.steps[i];
      const y = AXIS + i * ROW - scroll;
      const key = statusKey(stepStatus(step));
      const x0 = this.x(step.first), x1 = Math.max(this.x(step.lastTime), x0 + 4);
      ctx.fillStyle = C[`${key}Bar`];
      roundRect(ctx, x0 - 2, y + 5, x1 - x0 + 4, ROW - 10, 4);
      // marks: only the events inside the window are visited
      const from = bisect(step.times, t0), to = bisect(step.times, t1 + 1);
      let previous = -10;
      for (let j = from; j < to; j++) {
        const e = step.events[j];
        const x = Math.round(this.x(step.times[j]));
        const shown = this.match(e);
        if (x === previous && shown && e !== this.selected) continue; // many marks on one pixel: one paint
        previous = x;
        ctx.globalAlpha = shown ? 1 : 0.18;
        ctx.fillStyle = C[statusKey(e.status)];
        ctx.fillRect(x - 1, y + 3, 3, ROW - 6);
      }
      ctx.globalAlpha = 1;
    }
    if (this.selected) {
      const row = this.steps.indexOf(this.byName.get(this.selected.step));
      const y = AXIS + row * ROW - scroll;
      const x = Math.round(this.x(toMs(this.selected.created_at)));
      ctx.strokeStyle = C.selected;
      ctx.lineWidth = 2;
      ctx.strokeRect(x - 4, y + 1, 9, ROW - 2);
    }
    // the axis band, drawn last so that rows scroll under it
    ctx.fillStyle = getComputedStyle(this.scroll).backgroundColor;
    ctx.fillRect(0, 0, this.width, AXIS);
    ctx.font = '12px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    ctx.fillStyle = C.muted;
    ctx.strokeStyle = C.grid;
    for (const t of ticks) {
      const x = Math.round(this.x(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, AXIS - 6);
      ctx.lineTo(x, AXIS);
      ctx.stroke();
      const label = tick >= 864e5 ? formatTime(t, 'date') : formatTime(t, 'time', tick < 1000 ? 3 : 0);
      if (x + 4 + ctx.measureText(label).width <= this.width) ctx.fillText(label, x + 4, AXIS / 2);
    }
    ctx.beginPath();
    ctx.moveTo(0, AXIS - 0.5);
    ctx.lineTo(this.width, AXIS - 0.5);
    ctx.stroke();
  }
}

function roundRect(ctx, x, y, w, hgt, r) {
  ctx.beginPath();
  ctx.roundRect(x, y, w, hgt, r);
  ctx.fill();
}

// The first index whose value is >= t.
function bisect(values, t) {
  let lo = 0, hi = values.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (values[mid] < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export const TIMELINE = { ROW, AXIS, LABELS };
