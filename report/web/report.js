// dtm report: draws a job's figures as inline SVG from the JSON document embedded in the page
// (report/report_document.h: {"job": ..., "results": `dtmctl results --format json`}). No network
// access, no libraries. Every drawn value keeps its exact JSON number in a data-value attribute, so
// a test (and a reader's devtools) can check the figures against `dtmctl results --format json`.
// Text from the job (configs, paths, names) is only ever set as textContent, never parsed as HTML.
'use strict';
(function () {
  const SVG = 'http://www.w3.org/2000/svg';
  // The 7 component kinds of a Llama decoder layer, in SPEC's order (columns of every grid).
  const KINDS = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj',
    'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'];
  const KIND_LABELS = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];
  const METRICS = {
    fdt75: { label: 'FDT75', unit: 'tokens', better: 'higher' },
    fdt_mean: { label: 'mean FDT', unit: 'tokens', better: 'higher' },
    sdt_mean: { label: 'mean SDT', unit: 'divergent tokens per probe', better: 'lower' },
    dppl: { label: 'DPPL', unit: 'mean exp(NLL) of the baseline completion', better: 'lower' },
    ppl: { label: 'PPL', unit: 'perplexity of the ppl text', better: 'lower' },
  };
  const HEATMAP_METRICS = ['fdt75', 'fdt_mean', 'sdt_mean', 'dppl'];
  // Okabe-Ito: distinguishable with every common colour-vision deficiency.
  const CATEGORICAL = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#F0E442', '#000000'];
  // Viridis (perceptually uniform, colour-blind safe, readable in grey), 9 stops.
  const VIRIDIS = ['#440154', '#472d7b', '#3b528b', '#2c728e', '#21918c', '#28ae80', '#5ec962', '#addc30', '#fde725'];

  // ---------- small helpers ----------
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svgEl(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function isNum(v) { return typeof v === 'number' && Number.isFinite(v); }
  function fmt(v, digits) {
    if (v === null || v === undefined) return '-';
    if (typeof v !== 'number') return String(v);
    if (!Number.isFinite(v)) return String(v);
    if (Number.isInteger(v)) return String(v);
    const d = digits === undefined ? (Math.abs(v) >= 100 ? 1 : Math.abs(v) >= 1 ? 2 : 4) : digits;
    return v.toFixed(d);
  }
  function pct(v) { return isNum(v) ? (100 * v).toFixed(1) + ' %' : '-'; }
  function hexToRgb(h) { return [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)); }
  function viridis(t) {
    const x = Math.min(1, Math.max(0, isNum(t) ? t : 0)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
    const a = hexToRgb(VIRIDIS[i]); const b = hexToRgb(VIRIDIS[i + 1]); const f = x - i;
    return 'rgb(' + a.map((c, k) => Math.round(c + (b[k] - c) * f)).join(',') + ')';
  }
  function textColourOn(t) { return t > 0.55 ? '#000' : '#fff'; }
  function figure(parent, caption, cls) {
    const f = el('figure', { class: 'figure' + (cls ? ' ' + cls : '') });
    f.appendChild(el('figcaption', {}, caption));
    parent.appendChild(f);
    return f;
  }
  function section(title, id) {
    const s = el('section', { id: id });
    s.appendChild(el('h2', {}, title));
    document.getElementById('report').appendChild(s);
    return s;
  }
  function fact(dl, name, value) {
    dl.appendChild(el('dt', {}, name));
    dl.appendChild(el('dd', {}, value === undefined || value === null || value === '' ? '-' : value));
  }
  function duration(seconds) {
    if (!isNum(seconds) || seconds < 0) return '-';
    const h = Math.floor(seconds / 3600); const m = Math.floor((seconds % 3600) / 60); const s = seconds % 60;
    return (h ? h + ' h ' : '') + (h || m ? m + ' min ' : '') + s.toFixed(h || m ? 0 : 1) + ' s';
  }
  // A line chart: series [{name, colour, points: [[x, y], ...]}]. Returns the svg.
  function lineChart(opts) {
    const W = 560; const H = 300; const L = 62; const R = 14; const T = 12; const B = 46;
    const all = opts.series.flatMap((s) => s.points).filter((p) => isNum(p[0]) && isNum(p[1]));
    const svg = svgEl('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', class: opts.cls || 'chart' });
    svg.appendChild(svgEl('title', {}, opts.title || ''));
    if (all.length === 0) { svg.appendChild(svgEl('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'no data yet')); return svg; }
    let x0 = Math.min(...all.map((p) => p[0])); let x1 = Math.max(...all.map((p) => p[0]));
    let y0 = opts.yMin !== undefined ? opts.yMin : Math.min(...all.map((p) => p[1]));
    let y1 = opts.yMax !== undefined ? opts.yMax : Math.max(...all.map((p) => p[1]));
    if (x1 === x0) { x0 -= 0.5; x1 += 0.5; }
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
    // Enough decimals that the five tick labels differ (a DPPL axis may span 0.02).
    const digits = Math.max(0, Math.min(6, Math.ceil(-Math.log10((y1 - y0) / 4))));
    for (let k = 0; k <= 4; ++k) {
      const y = y0 + (y1 - y0) * k / 4;
      svg.appendChild(svgEl('line', { class: 'grid', x1: L, x2: W - R, y1: sy(y), y2: sy(y) }));
      svg.appendChild(svgEl('text', { x: L - 6, y: sy(y) + 4, 'text-anchor': 'end' }, y.toFixed(digits)));
    }
    let xticks = opts.xTicks || [0, 1, 2, 3, 4].map((k) => x0 + (x1 - x0) * k / 4);
    // An axis of whole numbers (steps, rounds) gets its ticks on whole numbers, not a rounded label
    // at a fractional place.
    if (opts.integerX) xticks = Array.from(new Set(xticks.map((x) => Math.round(x))));
    for (const x of xticks) {
      svg.appendChild(svgEl('text', { x: sx(x), y: H - B + 16, 'text-anchor': 'middle' }, opts.xFormat ? opts.xFormat(x) : fmt(x, 2)));
    }
    svg.appendChild(svgEl('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
    svg.appendChild(svgEl('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
    svg.appendChild(svgEl('text', { class: 'axis-label', x: (L + W - R) / 2, y: H - 8, 'text-anchor': 'middle' }, opts.xLabel));
    svg.appendChild(svgEl('text', { class: 'axis-label', x: 14, y: (T + H - B) / 2, 'text-anchor': 'middle',
      transform: 'rotate(-90 14 ' + (T + H - B) / 2 + ')' }, opts.yLabel));
    for (const s of opts.series) {
      const pts = s.points.filter((p) => isNum(p[0]) && isNum(p[1]));
      if (pts.length > 1) {
        svg.appendChild(svgEl('polyline', { points: pts.map((p) => sx(p[0]) + ',' + sy(p[1])).join(' '),
          fill: 'none', stroke: s.colour, 'stroke-width': s.width || 2 }));
      }
      if (s.markers !== false) {
        for (const p of pts) {
          const c = svgEl('circle', { class: 'point', cx: sx(p[0]), cy: sy(p[1]), r: 3.5, fill: s.colour,
            'data-series': s.name, 'data-x': String(p[0]), 'data-value': String(p[1]) });
          c.appendChild(svgEl('title', {}, s.name + ': ' + fmt(p[1]) + ' at ' + fmt(p[0])));
          svg.appendChild(c);
        }
      }
    }
    return svg;
  }
  function seriesLegend(series) {
    const d = el('div', { class: 'legend' });
    for (const s of series) {
      const item = el('span', {});
      item.appendChild(el('span', { class: 'swatch', style: 'background:' + s.colour }));
      item.appendChild(document.createTextNode(s.name));
      d.appendChild(item);
    }
    return d;
  }

  // ---------- state shared by the table, heatmaps and histogram ----------
  // What the reader chose survives a live page's redraws: the config shown and the heatmaps' metric.
  const state = { selected: null, metric: 'fdt75', onSelect: [] };
  function select(config) {
    state.selected = config;
    for (const f of state.onSelect) f(config);
  }

  // ---------- the page ----------
  function render(doc) {
    const main = document.getElementById('report');
    while (main.firstChild) main.removeChild(main.firstChild);
    state.onSelect = [];
    const job = doc.job || {};
    const res = doc.results || {};
    const rows = res.results || [];
    renderHeader(job, res, doc);
    if (doc.live) renderProgress(job);
    renderSummary(job, res, rows);
    const kind = job.kind;
    if (kind === 'probe') renderProbeHeatmaps(rows, job);
    if (kind === 'quant-search') renderSearch(rows, res, job);
    if (kind === 'sparsify-round') renderAllocation(res.allocation, rows, job, 'allocation');
    if (kind === 'sparsify') renderSparsifyRun(res, job);
    if (kind === 'train' && res.training) renderTraining([{ round: null, training: res.training }]);
    if (kind === 'evaluate') renderDistributions(rows, res);
    if (rows.length > 0) {
      renderHistogramPanel(rows, res, job);
      renderTable(rows, res);
    }
    const selectable = rows.filter((r) => Array.isArray(r.fdt_histogram) && r.fdt_histogram.length > 0);
    if (selectable.length > 0) select(state.selected && rows.some((r) => r.config === state.selected) ? state.selected : selectable[0].config);
    document.getElementById('footer').textContent = 'Generated by dtm ' + (doc.dtm_version || '') + ' at ' +
      (doc.generated || '-') + ' from job ' + (job.job_id || '-') + '. Numbers are those of `dtmctl results ' +
      (job.job_id || 'JOB') + ' --format json`.';
  }

  function renderHeader(job, res, doc) {
    const h = document.getElementById('header');
    while (h.firstChild) h.removeChild(h.firstChild);
    h.appendChild(el('h1', {}, (job.name ? job.name + ' — ' : '') + (job.kind || 'job') + ' ' + (job.job_id || '')));
    h.appendChild(el('p', { class: 'sub', id: 'job-state' }, 'state: ' + (job.state || res.state || '-') +
      (doc.live ? ' (live: refreshes every ' + Math.round(doc.live.refresh_ms / 1000) + ' s)' : '')));
  }

  function renderProgress(job) {
    const s = section('Progress', 'progress');
    const p = job.progress || {};
    const total = p.tasks_total || 0; const done = p.tasks_done || 0;
    const bar = el('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': String(total),
      'aria-valuenow': String(done) });
    const fill = el('div', { style: 'width:' + (total > 0 ? (100 * done / total).toFixed(1) : 0) + '%' });
    bar.appendChild(fill);
    s.appendChild(bar);
    const dl = el('dl', { class: 'facts' });
    fact(dl, 'tasks', done + ' of ' + total + ' done (' + (p.tasks_cached || 0) + ' from the cache, ' +
      (p.tasks_failed || 0) + ' failed, ' + (p.tasks_requeued || 0) + ' requeued)');
    fact(dl, 'rate', isNum(p.probes_per_second) ? fmt(p.probes_per_second, 1) + ' probes/s' : '-');
    fact(dl, 'ETA', isNum(p.eta_seconds) ? duration(p.eta_seconds) : '-');
    if (isNum(p.search_level)) fact(dl, 'search level', p.search_level + (isNum(p.best_fdt75) ? ', best fdt75 ' + fmt(p.best_fdt75) : ''));
    if (p.message) fact(dl, 'now', p.message);
    s.appendChild(dl);
    s.querySelector('.progress').dataset.done = String(done);
    s.querySelector('.progress').dataset.total = String(total);
  }

  function methodsOf(rows) {
    const m = new Set();
    for (const r of rows) {
      if (r.method) { m.add(r.method); continue; }
      for (const part of String(r.config || '').split(',')) { const i = part.indexOf('='); if (i > 0) m.add(part.slice(i + 1)); }
    }
    return Array.from(m);
  }

  function renderSummary(job, res, rows) {
    const s = section('The job', 'summary');
    const dl = el('dl', { class: 'facts' });
    fact(dl, 'kind', job.kind);
    fact(dl, 'model', (job.model_path || '-') + (job.model_fingerprint ? ' (fingerprint ' + job.model_fingerprint + ')' : ''));
    if (job.reference_model_path) fact(dl, 'reference', job.reference_model_path + ' (fingerprint ' + (job.reference_model_fingerprint || '-') + ')');
    fact(dl, 'probes', (job.num_probes || '-') + ' (probe set ' + (job.probe_set_fingerprint || '-') + ')');
    fact(dl, 'prefix n', job.prefix_len ? job.prefix_len + ' tokens' : '-');
    fact(dl, 'completion', job.completion_len ? job.completion_len + ' tokens' : '-');
    fact(dl, 'dtype', job.dtype);
    fact(dl, 'layers', job.num_layers || '-');
    fact(dl, 'methods', methodsOf(rows).join(', ') || '-');
    fact(dl, 'configs', String(rows.length) + (job.num_configs ? ' shown (' + job.num_configs + ' known to the job)' : ''));
    fact(dl, 'created', job.create_time);
    fact(dl, 'ran', (job.start_time || '-') + ' to ' + (job.end_time || '-') + (isNum(job.duration_seconds) ? ' (' + duration(job.duration_seconds) + ')' : ''));
    const p = job.progress || {};
    fact(dl, 'tasks', (p.tasks_done || 0) + ' of ' + (p.tasks_total || 0) + ' done, ' + (p.tasks_cached || 0) +
      ' answered from the cache, ' + (p.tasks_failed || 0) + ' failed');
    if (res.racing) {
      const r = res.racing;
      fact(dl, 'racing', r.probe_evaluations + ' of ' + r.exact_probe_evaluations + ' probe evaluations (' +
        pct(r.exact_probe_evaluations ? r.probe_evaluations / r.exact_probe_evaluations : NaN) + '); ' + r.nodes_dropped + ' configs dropped');
    }
    if (job.error) fact(dl, 'error', job.error);
    s.appendChild(dl);
    for (const w of res.warnings || []) s.appendChild(el('p', { class: 'warning' }, w));
    const nf = res.noise_floor;
    s.appendChild(el('h3', {}, res.reference_model_fingerprint ? 'Noise floor (the reference against its own baseline)' : 'Noise floor (the uncompressed model against its own baseline)'));
    if (nf) {
      const ndl = el('dl', { class: 'facts', id: 'noise-floor' });
      for (const k of ['fdt75', 'fdt_mean', 'sdt_mean', 'dppl']) {
        fact(ndl, METRICS[k].label, fmt(nf[k]));
      }
      fact(ndl, 'never diverged', pct(nf.never_diverged));
      s.appendChild(ndl);
      s.appendChild(el('p', { class: 'note' }, 'fdt75 below the completion length here means numeric noise alone makes the uncompressed model diverge: read every result against it.'));
    } else {
      s.appendChild(el('p', { class: 'note' }, 'not measured yet'));
    }
    if (job.spec_yaml) {
      const det = el('details', {});
      det.appendChild(el('summary', {}, 'job spec'));
      det.appendChild(el('pre', { class: 'spec' }, job.spec_yaml));
      s.appendChild(det);
    }
  }

  // One grid of layers x the 7 kinds. cells: Map "layer|kind" -> {value, config, title}; colour(value) -> {fill, t}.
  function gridSvg(opts) {
    const layers = opts.layers;
    const cw = 46; const ch = Math.max(9, Math.min(22, Math.floor(520 / Math.max(1, layers))));
    const L = 34; const T = 30; const W = L + cw * KINDS.length + 6; const H = T + ch * layers + 22;
    const svg = svgEl('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', class: opts.cls,
      'data-layers': layers, style: 'max-width:' + Math.max(360, W * 1.3) + 'px' });
    svg.appendChild(svgEl('title', {}, opts.title));
    for (let k = 0; k < KINDS.length; ++k) {
      svg.appendChild(svgEl('text', { x: L + cw * k + cw / 2, y: T - 8, 'text-anchor': 'middle' }, KIND_LABELS[k]));
    }
    svg.appendChild(svgEl('text', { class: 'axis-label', x: L + cw * KINDS.length / 2, y: 11, 'text-anchor': 'middle' }, 'component kind'));
    const labelEvery = ch >= 14 ? 1 : ch >= 10 ? 2 : 4;
    for (let layer = 0; layer < layers; ++layer) {
      if (layer % labelEvery === 0) {
        svg.appendChild(svgEl('text', { x: L - 5, y: T + ch * layer + ch / 2 + 4, 'text-anchor': 'end' }, layer));
      }
      for (let k = 0; k < KINDS.length; ++k) {
        const cell = opts.cells.get(layer + '|' + KINDS[k]);
        const attrs = { x: L + cw * k, y: T + ch * layer, width: cw, height: ch, 'data-layer': layer, 'data-component': KINDS[k] };
        if (!cell) {
          const r = svgEl('rect', Object.assign(attrs, { class: 'missing' }));
          r.appendChild(svgEl('title', {}, 'layer ' + layer + ' ' + KINDS[k] + ': ' + (opts.missingText || 'no result')));
          svg.appendChild(r);
          continue;
        }
        const c = opts.colour(cell.value);
        const r = svgEl('rect', Object.assign(attrs, { class: 'cell', fill: c.fill, 'data-value': String(cell.value),
          'data-config': cell.config || '' }));
        r.appendChild(svgEl('title', {}, cell.title));
        if (cell.config) r.addEventListener('click', () => select(cell.config));
        svg.appendChild(r);
        if (opts.showValues && ch >= 14) {
          svg.appendChild(svgEl('text', { x: L + cw * k + cw / 2, y: T + ch * layer + ch / 2 + 4, 'text-anchor': 'middle',
            'pointer-events': 'none', style: 'fill:' + textColourOn(c.t) + ';font-size:10px' }, fmt(cell.value, 1)));
        }
      }
    }
    svg.appendChild(svgEl('text', { class: 'axis-label', x: 10, y: T + ch * layers / 2, 'text-anchor': 'middle',
      transform: 'rotate(-90 10 ' + (T + ch * layers / 2) + ')' }, 'layer'));
    if (opts.select !== false) {
      state.onSelect.push((config) => {
        for (const r of svg.querySelectorAll('rect.cell')) r.classList.toggle('selected', r.getAttribute('data-config') === config);
      });
    }
    return svg;
  }

  function colourBar(min, max, label, reversed) {
    const d = el('div', { class: 'legend' });
    const svg = svgEl('svg', { viewBox: '0 0 200 14', width: 200, height: 14, style: 'width:200px' });
    for (let i = 0; i < 50; ++i) {
      const t = reversed ? 1 - i / 49 : i / 49;
      svg.appendChild(svgEl('rect', { x: i * 4, y: 0, width: 4, height: 14, fill: viridis(t) }));
    }
    d.appendChild(el('span', {}, fmt(reversed ? max : min)));
    d.appendChild(svg);
    d.appendChild(el('span', {}, fmt(reversed ? min : max)));
    d.appendChild(el('span', {}, label));
    return d;
  }

  function scaleFor(values, metric) {
    const v = values.filter(isNum);
    const min = v.length ? Math.min(...v) : 0; const max = v.length ? Math.max(...v) : 1;
    // Colour runs from worse (dark) to better (bright) whatever the metric's direction.
    const lowerBetter = METRICS[metric] && METRICS[metric].better === 'lower';
    return { min, max, lowerBetter, colour: (x) => {
      let t = max > min ? (x - min) / (max - min) : 1;
      if (lowerBetter) t = 1 - t;
      return { fill: viridis(t), t };
    } };
  }

  function layersOf(job, rows) {
    let n = job.num_layers || 0;
    for (const r of rows) if (isNum(r.layer)) n = Math.max(n, r.layer + 1);
    for (const r of rows) for (const c of componentsOf(r.config)) n = Math.max(n, c.layer + 1);
    return n;
  }

  // "model.layers.3.mlp.up_proj=int8-absmax,..." -> [{layer, kind, method}]
  function componentsOf(config) {
    const out = [];
    for (const part of String(config || '').split(',')) {
      const m = /^model\.layers\.(\d+)\.(self_attn\.[a-z_]+|mlp\.[a-z_]+)=(.*)$/.exec(part);
      if (m) out.push({ layer: Number(m[1]), kind: m[2], method: m[3] });
    }
    return out;
  }

  function renderProbeHeatmaps(rows, job) {
    const single = rows.filter((r) => r.method && isNum(r.layer) && r.component);
    if (single.length === 0) return;
    const s = section('Sensitivity per component (paper Figs. 6a, 7, 17)', 'heatmaps');
    s.appendChild(el('p', { class: 'note' }, 'Each cell is one component compressed alone; click a cell for its FDT histogram. ' +
      'Colour runs from the most damaging (dark) to the least (bright) component of each map.'));
    const layers = layersOf(job, rows);
    const methods = methodsOf(single);
    const controls = el('div', { class: 'controls', role: 'group', 'aria-label': 'metric' });
    controls.appendChild(el('span', {}, 'metric:'));
    const figs = el('div', { class: 'figures' });
    const byMetric = {};
    for (const metric of HEATMAP_METRICS) {
      byMetric[metric] = [];
      const b = el('button', { type: 'button', 'data-metric': metric, 'aria-pressed': metric === state.metric ? 'true' : 'false' }, METRICS[metric].label);
      b.addEventListener('click', () => {
        state.metric = metric;
        for (const x of controls.querySelectorAll('button')) x.setAttribute('aria-pressed', x === b ? 'true' : 'false');
        for (const [m, list] of Object.entries(byMetric)) for (const f of list) f.hidden = m !== metric;
      });
      controls.appendChild(b);
    }
    s.appendChild(controls);
    s.appendChild(figs);
    for (const method of methods) {
      const mine = single.filter((r) => r.method === method);
      for (const metric of HEATMAP_METRICS) {
        const values = mine.map((r) => r[metric]);
        const sc = scaleFor(values, metric);
        const cells = new Map();
        for (const r of mine) {
          if (!isNum(r[metric])) continue;
          cells.set(r.layer + '|' + r.component, { value: r[metric], config: r.config,
            title: 'layer ' + r.layer + ' ' + r.component + ' (' + method + '): ' + METRICS[metric].label + ' ' + fmt(r[metric]) +
              ' ' + METRICS[metric].unit + (r.saturated ? ' (saturated)' : '') + (r.complete === false ? ' (incomplete)' : '') });
        }
        const f = figure(figs, method + ': ' + METRICS[metric].label + ' (' + METRICS[metric].unit + ', ' + METRICS[metric].better + ' is better)');
        const svg = gridSvg({ layers, cells, colour: sc.colour, cls: 'heatmap', title: method + ' ' + metric, showValues: true });
        svg.setAttribute('data-method', method);
        svg.setAttribute('data-metric', metric);
        f.appendChild(svg);
        f.appendChild(colourBar(sc.min, sc.max, METRICS[metric].unit, sc.lowerBetter));
        f.hidden = metric !== state.metric;
        f.dataset.metric = metric;
        byMetric[metric].push(f);
      }
    }
  }

  function histogramSvg(r, completion, cls) {
    const h = r.fdt_histogram || [];
    const W = 560; const H = 240; const L = 52; const R = 10; const T = 12; const B = 44;
    const svg = svgEl('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', class: cls || 'histogram', 'data-config': r.config || '' });
    svg.appendChild(svgEl('title', {}, 'FDT histogram of ' + (r.config || '(uncompressed)')));
    const n = h.length; const max = Math.max(1, ...h);
    const bw = (W - L - R) / Math.max(1, n);
    const sy = (c) => H - B - c / max * (H - T - B);
    for (let k = 0; k <= 4; ++k) {
      const c = max * k / 4;
      svg.appendChild(svgEl('line', { class: 'grid', x1: L, x2: W - R, y1: sy(c), y2: sy(c) }));
      svg.appendChild(svgEl('text', { x: L - 5, y: sy(c) + 4, 'text-anchor': 'end' }, fmt(c, max < 8 ? 1 : 0)));
    }
    for (let i = 0; i < n; ++i) {
      if (h[i] === 0) continue;
      const never = i === n - 1;
      const b = svgEl('rect', { class: 'bar', x: L + i * bw, y: sy(h[i]), width: Math.max(1, bw - (bw > 3 ? 1 : 0)),
        height: H - B - sy(h[i]), fill: never ? '#E69F00' : '#0072B2', 'data-fdt': i, 'data-count': h[i] });
      b.appendChild(svgEl('title', {}, never ? h[i] + ' probes never diverged (FDT = ' + i + ')' : h[i] + ' probes first diverged at token ' + i));
      svg.appendChild(b);
    }
    if (isNum(r.fdt75) && n > 0) {
      const x = L + (r.fdt75 + 0.5) * bw;
      svg.appendChild(svgEl('line', { x1: x, x2: x, y1: T, y2: H - B, stroke: '#D55E00', 'stroke-width': 2, 'stroke-dasharray': '5 3' }));
      svg.appendChild(svgEl('text', { x: Math.min(x + 4, W - 70), y: T + 12, style: 'fill:#D55E00' }, 'fdt75 ' + fmt(r.fdt75)));
    }
    for (const k of [0, 0.25, 0.5, 0.75, 1]) {
      const i = Math.round((n - 1) * k);
      svg.appendChild(svgEl('text', { x: L + (i + 0.5) * bw, y: H - B + 15, 'text-anchor': 'middle' }, i));
    }
    svg.appendChild(svgEl('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
    svg.appendChild(svgEl('text', { class: 'axis-label', x: (L + W - R) / 2, y: H - 8, 'text-anchor': 'middle' },
      'first divergent token (tokens; ' + (completion || n - 1) + ' = never diverged, orange)'));
    svg.appendChild(svgEl('text', { class: 'axis-label', x: 12, y: (T + H - B) / 2, 'text-anchor': 'middle',
      transform: 'rotate(-90 12 ' + (T + H - B) / 2 + ')' }, 'probes'));
    return svg;
  }

  function renderHistogramPanel(rows, res, job) {
    const s = section('FDT distribution of a config (paper Fig. 2)', 'histogram');
    s.appendChild(el('p', { class: 'note' }, 'Choose a config in the table or a heatmap cell.'));
    const f = figure(s, '', 'wide');
    const cap = f.querySelector('figcaption');
    const holder = el('div', {});
    f.appendChild(holder);
    state.onSelect.push((config) => {
      const r = rows.find((x) => x.config === config);
      while (holder.firstChild) holder.removeChild(holder.firstChild);
      if (!r || !Array.isArray(r.fdt_histogram)) { cap.textContent = 'no histogram for this config'; return; }
      cap.textContent = (r.config || '(uncompressed)') + ': fdt75 ' + fmt(r.fdt75) + ', mean FDT ' + fmt(r.fdt_mean) + ', ' +
        r.num_probes + ' probes, ' + pct(r.never_diverged) + ' never diverged';
      holder.appendChild(histogramSvg(r, job.completion_len, 'histogram selected-histogram'));
    });
  }

  function renderDistributions(rows, res) {
    const with_h = rows.filter((r) => Array.isArray(r.fdt_histogram));
    if (with_h.length === 0) return;
    const s = section('FDT distributions side by side (paper Fig. 2)', 'distributions');
    const figs = el('div', { class: 'figures' });
    s.appendChild(figs);
    if (res.noise_floor && Array.isArray(res.noise_floor.fdt_histogram)) {
      const f = figure(figs, 'noise floor (uncompressed)');
      f.appendChild(histogramSvg(Object.assign({ config: '' }, res.noise_floor), null, 'histogram distribution'));
    }
    for (const r of with_h) {
      const f = figure(figs, r.config || '(uncompressed)');
      f.appendChild(histogramSvg(r, null, 'histogram distribution'));
    }
  }

  // The parent of a search node: a ranked node of the level before whose components it holds all of.
  function chainOf(rows, best) {
    const key = (r) => componentsOf(r.config).map((c) => c.layer + '|' + c.kind + '=' + c.method).sort();
    const chain = [best];
    let cur = best;
    while (isNum(cur.search_level) && cur.search_level > 1) {
      const mine = new Set(key(cur));
      const parents = rows.filter((r) => r.search_level === cur.search_level - 1 && key(r).every((k) => mine.has(k)))
        .sort((a, b) => (isNum(a.rank) ? a.rank : 1e9) - (isNum(b.rank) ? b.rank : 1e9));
      if (parents.length === 0) break;
      cur = parents[0];
      chain.unshift(cur);
    }
    return chain;
  }

  function renderSearch(rows, res, job) {
    const nodes = rows.filter((r) => isNum(r.search_level));
    const levels = Array.from(new Set(nodes.map((r) => r.search_level))).sort((a, b) => a - b);
    if (levels.length === 0) return;
    const s = section('Search: best config per level (paper Figs. 5, 9, 14)', 'search');
    const rankBy = res.rank_by || 'fdt75';
    s.appendChild(el('p', { class: 'note' }, 'Ranked by ' + rankBy + '. Each point is the level\'s rank-0 config.'));
    const figs = el('div', { class: 'figures' });
    s.appendChild(figs);
    const bests = levels.map((l) => nodes.find((r) => r.search_level === l && r.rank === 0)).filter(Boolean);
    for (const metric of HEATMAP_METRICS) {
      const f = figure(figs, 'best ' + METRICS[metric].label + ' per level (' + METRICS[metric].unit + ')');
      f.appendChild(lineChart({ cls: 'chart level-chart', title: metric, xLabel: 'search level (components compressed)',
        yLabel: METRICS[metric].label, xTicks: levels, xFormat: (x) => String(x),
        series: [{ name: metric, colour: CATEGORICAL[0], points: bests.map((r) => [r.search_level, r[metric]]) }] }))
        .setAttribute('data-metric', metric);
    }
    // Levels table.
    const t = el('table', { class: 'results levels' });
    const head = el('tr', {});
    for (const c of ['level', 'nodes', 'from cache', 'dropped by racing', 'best ' + rankBy, 'best config']) head.appendChild(el('th', {}, c));
    t.appendChild(el('thead', {})).appendChild(head);
    const body = el('tbody', {});
    for (const lv of res.search_levels || []) {
      const b = bests.find((r) => r.search_level === lv.level);
      const tr = el('tr', {});
      for (const v of [lv.level, lv.nodes, lv.nodes_cached, isNum(lv.nodes_dropped) ? lv.nodes_dropped : '-', b ? fmt(b[rankBy]) : '-']) tr.appendChild(el('td', {}, v));
      tr.appendChild(el('td', { class: 'config' }, b ? b.config || '(uncompressed)' : '-'));
      body.appendChild(tr);
    }
    t.appendChild(body);
    const wrap = el('div', { class: 'table-wrap' });
    wrap.appendChild(t);
    s.appendChild(wrap);
    // Fig. 9: the deepest level's winner, each component coloured by the level that added it.
    const last = bests[bests.length - 1];
    if (!last) return;
    const chain = chainOf(nodes, last);
    const added = new Map();
    let prev = new Set();
    for (const node of chain) {
      for (const c of componentsOf(node.config)) {
        const k = c.layer + '|' + c.kind;
        if (!prev.has(k)) added.set(k, { level: node.search_level, method: c.method, config: node.config });
      }
      prev = new Set(componentsOf(node.config).map((c) => c.layer + '|' + c.kind));
    }
    const cells = new Map();
    for (const [k, a] of added) {
      const [layer, kind] = k.split('|');
      cells.set(k, { value: a.level, config: a.config, title: 'layer ' + layer + ' ' + kind + ' (' + a.method + '): added at level ' + a.level });
    }
    const maxLevel = Math.max(1, ...levels);
    const colour = (lv) => ({ fill: maxLevel <= CATEGORICAL.length ? CATEGORICAL[(lv - 1) % CATEGORICAL.length] : viridis((lv - 1) / (maxLevel - 1)), t: 0.2 });
    const f = figure(s, 'components of level ' + last.search_level + '\'s best config, by the level that added them', 'wide');
    const svg = gridSvg({ layers: layersOf(job, rows), cells, colour, cls: 'level-grid', title: 'levels', missingText: 'not compressed', select: false });
    f.appendChild(svg);
    const legend = el('div', { class: 'legend' });
    for (const lv of levels.filter((l) => l >= 1)) {
      const item = el('span', {});
      item.appendChild(el('span', { class: 'swatch', style: 'background:' + colour(lv).fill }));
      item.appendChild(document.createTextNode('level ' + lv));
      legend.appendChild(item);
    }
    f.appendChild(legend);
  }

  function pruneFraction(method) {
    const m = /^prune:([0-9.eE+-]+)$/.exec(method || '');
    return m ? Number(m[1]) : NaN;
  }

  function renderAllocation(a, rows, job, id) {
    if (!a) return;
    const s = section('Sparsity allocation (paper Fig. 4)', id);
    s.appendChild(el('p', { class: 'note' }, a.method + ' step ' + pct(a.step) + ' (achieved ' + pct(a.achieved_step) +
      '), min predicted fdt75 ' + fmt(a.min_fdt75) + ' of ' + a.completion_len + ' tokens'));
    const figs = el('div', { class: 'figures' });
    s.appendChild(figs);
    const cells = new Map(); const pred = new Map();
    for (const c of a.components || []) {
      const m = /^model\.layers\.(\d+)\.(.*)$/.exec(c.component);
      if (!m) continue;
      cells.set(m[1] + '|' + m[2], { value: c.target, config: '', title: c.component + ': target ' + pct(c.target) + ' (current ' + pct(c.current) + ' + ' + pct(c.extra) + ')' });
      pred.set(m[1] + '|' + m[2], { value: c.predicted_fdt75, config: '', title: c.component + ': predicted fdt75 ' + fmt(c.predicted_fdt75) + ' tokens' });
    }
    const layers = Math.max(a.num_layers || 0, layersOf(job, rows));
    const sc = scaleFor(Array.from(cells.values()).map((c) => c.value), 'sdt_mean');
    const f1 = figure(figs, 'target sparsity per component (fraction of weights zero; darker = sparser)');
    const g1 = gridSvg({ layers, cells, colour: sc.colour, cls: 'allocation-grid', title: 'target sparsity', select: false });
    g1.setAttribute('data-field', 'target');
    f1.appendChild(g1);
    f1.appendChild(colourBar(sc.min, sc.max, 'sparsity (fraction)', true));
    const sp = scaleFor(Array.from(pred.values()).map((c) => c.value), 'fdt75');
    const f2 = figure(figs, 'predicted fdt75 at the target (tokens)');
    const g2 = gridSvg({ layers, cells: pred, colour: sp.colour, cls: 'allocation-grid', title: 'predicted fdt75', select: false });
    g2.setAttribute('data-field', 'predicted_fdt75');
    f2.appendChild(g2);
    f2.appendChild(colourBar(sp.min, sp.max, 'tokens', false));
    // Predicted FDT75 curves: per kind, one line per layer through (current, completion), the probes, (1, 0).
    const probes = rows.filter((r) => r.component && isNum(pruneFraction(r.method)) && isNum(r.fdt75));
    if (probes.length === 0) return;
    const curves = el('div', { class: 'figures' });
    s.appendChild(el('h3', {}, 'predicted fdt75 against sparsity (the probes, interpolated; one line per layer, dark = first layer)'));
    s.appendChild(curves);
    const current = new Map((a.components || []).map((c) => [c.component, c]));
    for (const kind of KINDS) {
      const series = [];
      for (let layer = 0; layer < layers; ++layer) {
        const name = 'model.layers.' + layer + '.' + kind;
        const mine = probes.filter((r) => r.layer === layer && r.component === kind)
          .map((r) => [pruneFraction(r.method), r.fdt75]).sort((p, q) => p[0] - q[0]);
        if (mine.length === 0) continue;
        const c = current.get(name);
        const pts = [[c ? c.current : 0, a.completion_len]].concat(mine, [[1, 0]]);
        series.push({ name: 'layer ' + layer, colour: viridis(layers > 1 ? layer / (layers - 1) : 0), points: pts, width: 1.5 });
      }
      if (series.length === 0) continue;
      const f = figure(curves, kind);
      const svg = lineChart({ cls: 'chart curve-chart', title: kind, xLabel: 'sparsity (fraction)', yLabel: 'fdt75 (tokens)',
        series, yMin: 0, yMax: a.completion_len, xFormat: (x) => x.toFixed(2) });
      svg.setAttribute('data-component', kind);
      f.appendChild(svg);
    }
  }

  function renderSparsifyRun(res, job) {
    const rounds = res.rounds || [];
    if (rounds.length === 0) return;
    const s = section('Sparsification run: sparsity, fdt75 and training per round (paper Fig. 4)', 'rounds');
    const figs = el('div', { class: 'figures' });
    s.appendChild(figs);
    // Per kind, the params-weighted sparsity after each round's allocation.
    const series = KINDS.map((kind, k) => ({ name: kind, colour: CATEGORICAL[k], points: [] }));
    for (const r of rounds) {
      if (!r.allocation) continue;
      for (let k = 0; k < KINDS.length; ++k) {
        let zeros = 0; let params = 0;
        for (const c of r.allocation.components) {
          if (!c.component.endsWith('.' + KINDS[k])) continue;
          zeros += c.target * c.params; params += c.params;
        }
        if (params > 0) series[k].points.push([r.round, zeros / params]);
      }
    }
    const f1 = figure(figs, 'sparsity per component kind after each round (fraction of weights zero)');
    f1.appendChild(lineChart({ cls: 'chart round-sparsity', title: 'sparsity', xLabel: 'round', yLabel: 'sparsity',
      series, xTicks: rounds.map((r) => r.round), xFormat: (x) => String(x), yMin: 0 }));
    f1.appendChild(seriesLegend(series.filter((x) => x.points.length > 0)));
    const fdt = rounds.filter((r) => r.metrics && isNum(r.metrics.fdt75)).map((r) => [r.round, r.metrics.fdt75]);
    const f2 = figure(figs, 'fdt75 of each round\'s trained model (tokens)');
    f2.appendChild(lineChart({ cls: 'chart round-fdt75', title: 'fdt75', xLabel: 'round', yLabel: 'fdt75 (tokens)',
      series: [{ name: 'fdt75', colour: CATEGORICAL[0], points: fdt }], xTicks: rounds.map((r) => r.round), xFormat: (x) => String(x) }));
    renderTraining(rounds.filter((r) => r.training).map((r) => ({ round: r.round, training: r.training })));
    const last = rounds.filter((r) => r.allocation).pop();
    if (last) renderAllocation(last.allocation, [], job, 'last-allocation');
  }

  function renderTraining(runs) {
    if (runs.length === 0) return;
    const s = section('Training loss', 'training');
    const series = []; let offset = 0;
    runs.forEach((run, i) => {
      const losses = run.training.losses || [];
      series.push({ name: run.round === null ? 'loss' : 'round ' + run.round, colour: CATEGORICAL[i % CATEGORICAL.length],
        points: losses.map((l, k) => [offset + k + 1, l]), markers: losses.length <= 60 });
      offset += losses.length;
    });
    const f = figure(s, 'next-token cross-entropy per optimizer step' + (runs.length > 1 ? ', rounds one after another' : ''), 'wide');
    f.appendChild(lineChart({ cls: 'chart training-loss', title: 'loss', xLabel: 'optimizer step', yLabel: 'loss (nats)', series,
      integerX: true, xFormat: (x) => String(x) }));
    if (series.length > 1) f.appendChild(seriesLegend(series));
  }

  function renderTable(rows, res) {
    const s = section('Results', 'results');
    const hasPpl = rows.some((r) => isNum(r.ppl));
    const hasLevel = rows.some((r) => isNum(r.search_level));
    const cols = [{ key: 'config', label: 'config', cls: 'config' }];
    if (hasLevel) cols.push({ key: 'search_level', label: 'level' }, { key: 'rank', label: 'rank' });
    cols.push({ key: 'fdt75', label: 'fdt75' }, { key: 'fdt_mean', label: 'fdt_mean' }, { key: 'sdt_mean', label: 'sdt_mean' },
      { key: 'dppl', label: 'dppl' });
    if (hasPpl) cols.push({ key: 'ppl', label: 'ppl' });
    cols.push({ key: 'num_probes', label: 'probes' }, { key: 'never_diverged', label: 'never diverged', format: pct });
    const t = el('table', { class: 'results sortable' });
    const headRow = el('tr', {});
    const body = el('tbody', {});
    let order = rows.map((r, i) => i); let sortKey = null; let dir = 1;
    const draw = () => {
      while (body.firstChild) body.removeChild(body.firstChild);
      for (const i of order) {
        const r = rows[i];
        const tr = el('tr', { 'data-config': r.config });
        for (const c of cols) {
          const v = r[c.key];
          const text = c.key === 'config' ? (v || '(uncompressed)') + (r.dropped_by_racing ? ' (dropped by racing)' : '') + (r.complete === false ? ' *' : '')
            : c.format ? c.format(v) : fmt(v);
          const td = el('td', { class: c.cls || '', 'data-key': c.key }, text);
          if (isNum(v)) td.setAttribute('data-value', String(v));
          if (c.key === 'config') td.title = r.config;
          tr.appendChild(td);
        }
        tr.addEventListener('click', () => select(r.config));
        if (r.config === state.selected) tr.classList.add('selected');
        body.appendChild(tr);
      }
    };
    for (const c of cols) {
      const th = el('th', { class: c.cls || '', 'data-key': c.key, scope: 'col', tabindex: '0' }, c.label);
      const sortBy = () => {
        dir = sortKey === c.key ? -dir : (c.key === 'config' ? 1 : -1);
        sortKey = c.key;
        order = rows.map((r, i) => i).sort((a, b) => {
          const x = rows[a][c.key]; const y = rows[b][c.key];
          if (x === y) return a - b;
          if (x === null || x === undefined) return 1;
          if (y === null || y === undefined) return -1;
          return (x < y ? -1 : 1) * dir;
        });
        for (const h of headRow.children) h.removeAttribute('aria-sort');
        th.setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
        draw();
      };
      th.addEventListener('click', sortBy);
      th.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(); } });
      headRow.appendChild(th);
    }
    t.appendChild(el('thead', {})).appendChild(headRow);
    t.appendChild(body);
    draw();
    state.onSelect.push((config) => {
      for (const tr of body.children) tr.classList.toggle('selected', tr.getAttribute('data-config') === config);
    });
    const wrap = el('div', { class: 'table-wrap' });
    wrap.appendChild(t);
    s.appendChild(el('p', { class: 'note' }, rows.length + ' configs; click a column to sort, a row for its FDT histogram. ' +
      '* marks metrics over part of the probes.'));
    s.appendChild(wrap);
  }

  // ---------- start ----------
  let doc;
  try {
    doc = JSON.parse(document.getElementById('dtm-data').textContent);
  } catch (e) {
    document.getElementById('report').textContent = 'The report data cannot be read: ' + e.message;
    throw e;
  }
  render(doc);
  // A live page (the coordinator's /jobs/ID) fetches its document again until the job ends.
  if (doc.live && doc.live.document_url) {
    const terminal = new Set(['succeeded', 'failed', 'cancelled']);
    const tick = () => {
      if (terminal.has(String((doc.job || {}).state || '').toLowerCase())) return;
      // From the origin, never the page's own URL: a URL with user:password@ in it cannot be fetched,
      // and the browser adds the credentials of its login prompt to same-origin requests anyway.
      fetch(new URL(doc.live.document_url, window.location.origin).href, { credentials: 'same-origin', cache: 'no-store' })
        .then((r) => { if (!r.ok) throw new Error('HTTP ' + r.status); return r.json(); })
        .then((next) => { next.live = doc.live; doc = next; render(doc); })
        .catch((e) => { document.getElementById('job-state').textContent += ' (refresh failed: ' + e.message + ')'; })
        .finally(() => setTimeout(tick, doc.live.refresh_ms || 2000));
    };
    setTimeout(tick, doc.live.refresh_ms || 2000);
  }
})();
