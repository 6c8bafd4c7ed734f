// chart.js - line charts drawn as plain SVG: one x value per layer, one line
// per series, gaps where a value is null, optional horizontal reference
// rules (e.g. "the paper: CLIP best .88").  No library: the page must work
// with no network and no build step, and a dozen lines of SVG do the job.

const SVG = 'http://www.w3.org/2000/svg';

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (parent) parent.appendChild(e);
  return e;
}

function text(parent, x, y, s, attrs) {
  const t = el('text', Object.assign({ x, y }, attrs), parent);
  t.textContent = s;
  return t;
}

// Tick values covering [lo, hi] with a step of 1, 2 or 5 times a power of
// ten, about `count` of them.
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw);
  const first = Math.floor(lo / step + 1e-9) * step;
  const ticks = [];
  for (let v = first; v <= hi + step * 1e-6; v += step) ticks.push(+v.toFixed(10));
  if (ticks[ticks.length - 1] < hi - step * 1e-6) ticks.push(+(first + ticks.length * step).toFixed(10));
  return { ticks, step };
}

function decimals(step) {
  return Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
}

// The y range: the data and the rules, padded, rounded out to ticks.
function yRange(series, rules, fixed) {
  if (fixed) return fixed;
  const ys = [];
  for (const s of series) for (const p of s.points) if (p.y != null && isFinite(p.y)) ys.push(p.y);
  for (const r of rules) ys.push(r.y);
  if (!ys.length) return [0, 1];
  let lo = Math.min(...ys), hi = Math.max(...ys);
  if (hi - lo < 0.05) { lo -= 0.05; hi += 0.05; }
  const pad = (hi - lo) * 0.06;
  const { ticks } = niceTicks(lo - pad, hi + pad);
  return [ticks[0], ticks[ticks.length - 1]];
}

// Builds the chart and returns its <svg>.  spec:
//   title, xLabel, yLabel
//   series: [{id, name, color, points: [{x, y, tip?}], dashed?, hollow?}]
//   rules:  [{y, color, label}]   horizontal reference lines
//   yDomain: [lo, hi] to fix the y axis
// Every drawn point is a <circle class="point" data-series=id data-x data-y>.
export function lineChart(spec) {
  const series = spec.series || [], rules = spec.rules || [];
  const W = spec.width || 720, H = spec.height || 380;
  const M = { left: 58, right: 16, top: 40, bottom: 46 };
  const svg = el('svg', {
    viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img',
    'aria-label': spec.title || 'chart',
  });
  if (spec.title) text(svg, M.left, 20, spec.title, { class: 'chart-title' });

  const xs = [];
  for (const s of series) for (const p of s.points) xs.push(p.x);
  const x0 = xs.length ? Math.min(...xs) : 0, x1 = xs.length ? Math.max(...xs) : 1;
  const [y0, y1] = yRange(series, rules, spec.yDomain);
  const pw = W - M.left - M.right, ph = H - M.top - M.bottom;
  const X = x => M.left + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * pw;
  const Y = y => M.top + (1 - (y - y0) / (y1 - y0)) * ph;

  // grid and axes
  const grid = el('g', { class: 'grid' }, svg);
  const yt = niceTicks(y0, y1);
  const dy = decimals(yt.step);
  for (const v of yt.ticks) {
    if (v < y0 - 1e-9 || v > y1 + 1e-9) continue;
    el('line', { x1: M.left, x2: W - M.right, y1: Y(v), y2: Y(v) }, grid);
    text(svg, M.left - 6, Y(v) + 4, v.toFixed(dy), { class: 'tick', 'text-anchor': 'end' });
  }
  const xstep = Math.max(1, Math.ceil((x1 - x0) / 14));
  for (let v = x0; v <= x1; v += xstep) {
    el('line', { x1: X(v), x2: X(v), y1: M.top, y2: M.top + ph }, grid);
    text(svg, X(v), M.top + ph + 16, String(v), { class: 'tick', 'text-anchor': 'middle' });
  }
  el('rect', { x: M.left, y: M.top, width: pw, height: ph, class: 'frame' }, svg);
  if (spec.xLabel) text(svg, M.left + pw / 2, H - 8, spec.xLabel, { class: 'axis-label', 'text-anchor': 'middle' });
  if (spec.yLabel) {
    text(svg, 0, 0, spec.yLabel, {
      class: 'axis-label', 'text-anchor': 'middle',
      transform: `translate(14 ${M.top + ph / 2}) rotate(-90)`,
    });
  }

  for (const r of rules) {
    if (r.y < y0 || r.y > y1) continue;
    const g = el('g', { class: 'rule' }, svg);
    el('line', { x1: M.left, x2: W - M.right, y1: Y(r.y), y2: Y(r.y), stroke: r.color }, g);
    text(g, W - M.right - 4, Y(r.y) - 4, r.label, { 'text-anchor': 'end', fill: r.color });
  }

  for (const s of series) {
    const g = el('g', { class: 'series' + (s.dashed ? ' dashed' : ''), 'data-series': s.id }, svg);
    // one path per run of defined values, so a null leaves a gap
    let d = '', pen = false;
    for (const p of s.points) {
      if (p.y == null || !isFinite(p.y)) { pen = false; continue; }
      d += `${pen ? 'L' : 'M'}${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`;
      pen = true;
    }
    if (d) el('path', { d, stroke: s.color, fill: 'none' }, g);
    for (const p of s.points) {
      if (p.y == null || !isFinite(p.y)) continue;
      const c = el('circle', {
        class: 'point', cx: X(p.x), cy: Y(p.y), r: s.hollow ? 4 : 3.5,
        stroke: s.color, fill: s.hollow ? 'white' : s.color,
        'data-series': s.id, 'data-x': p.x, 'data-y': p.y,
      }, g);
      el('title', {}, c).textContent = p.tip || `${s.name}, layer ${p.x}: ${(+p.y).toFixed(3)}`;
    }
  }

  // legend, right-aligned above the plot: a line sample, then the name
  const itemWidth = s => 26 + s.name.length * 7 + 16;
  let lx = W - M.right - series.reduce((w, s) => w + itemWidth(s), 0) + 16;
  for (const s of series) {
    const g = el('g', { class: 'legend', 'data-series': s.id }, svg);
    el('line', { x1: lx, x2: lx + 20, y1: 20, y2: 20, stroke: s.color,
                 class: s.dashed ? 'dashed' : '' }, g);
    text(g, lx + 26, 24, s.name);
    lx += itemWidth(s);
  }
  return svg;
}
