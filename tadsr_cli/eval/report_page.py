"""The fixed parts of `report.html`: its CSS, its script and the page shell (no CDN, nothing fetched).

The script drives every comparison (A/B selects, a range slider that reveals B over A, a zoom applied to both sides
around a clicked point) and sorts tables by a click on a header. JavaScript errors are collected into
`#js-errors`. The URL fragment sets the widgets' state, for links and for the browser test:
`#slider=30&a=lq&b=gt&zoom=4&cx=0.25&cy=0.5`; `#selftest` writes a JSON self-check into `#selftest`.
"""

from __future__ import annotations

from html import escape

CSS = """
:root { color-scheme: light; --fg: #1d1d1f; --muted: #666; --line: #ddd; --accent: #1f77b4; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; padding: 16px 20px 40px; max-width: 1200px; background: #fff; }
h1 { font-size: 22px; margin: 4px 0 8px; } h2 { font-size: 18px; margin: 28px 0 8px; }
h3 { font-size: 15px; margin: 0 0 4px; }
.meta, .note, .cmp-caption { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " \\2195"; color: #bbb; font-size: 11px; }
table.sortable th[aria-sort="ascending"]::after { content: " \\2191"; color: var(--fg); }
table.sortable th[aria-sort="descending"]::after { content: " \\2193"; color: var(--fg); }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
svg.plot { background: #fff; border: 1px solid var(--line); border-radius: 4px; max-width: 100%; height: auto; }
.plot-title { font-size: 13px; font-weight: 600; } .plot-axis { fill: #555; } .plot-tick { fill: #555; }
.plot-frame { fill: none; stroke: #ccc; } .plot-grid { stroke: #eee; } .plot-legend { fill: #333; }
.cmp { margin: 18px 0 26px; padding-top: 6px; border-top: 1px solid var(--line); }
.cmp-controls { display: flex; flex-wrap: wrap; align-items: center; gap: 10px; margin: 6px 0; }
.cmp-slider { width: 260px; }
.cmp-view { position: relative; overflow: hidden; max-width: 100%; background: #222; cursor: zoom-in;
            touch-action: manipulation; }
.cmp-view.zoomed { cursor: crosshair; }
.cmp-layer { position: absolute; inset: 0; overflow: hidden; }
.cmp-layer img { position: absolute; left: 0; top: 0; width: 100%; height: 100%; transform-origin: 0 0;
                 image-rendering: pixelated; user-select: none; -webkit-user-drag: none; }
.cmp-divider { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px; background: #fff;
               box-shadow: 0 0 3px rgba(0,0,0,.6); pointer-events: none; }
.cmp-tag { position: absolute; top: 6px; padding: 1px 6px; font-size: 12px; color: #fff;
           background: rgba(0,0,0,.55); border-radius: 3px; pointer-events: none; }
.cmp-tag-a { left: 6px; } .cmp-tag-b { right: 6px; }
.cmp-metrics { margin-top: 6px; font-size: 13px; }
#js-errors { color: #b00; white-space: pre-wrap; }
"""

# Collects errors from the first line on (before the page's own script runs).
ERROR_HOOK = """
window.__tadsrErrors = [];
function __tadsrError(text) {
  window.__tadsrErrors.push(String(text));
  var box = document.getElementById("js-errors");
  if (box) { box.hidden = false; box.textContent = window.__tadsrErrors.join("\\n"); }
}
window.addEventListener("error", function (e) { __tadsrError(e.message || e); });
window.addEventListener("unhandledrejection", function (e) { __tadsrError("unhandled rejection: " + e.reason); });
"""

SCRIPT = r"""
(function () {
  "use strict";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  const ZOOMS = [1, 2, 4, 8, 16];

  function hashParams() {
    const out = {};
    for (const part of location.hash.replace(/^#/, "").split("&")) {
      if (!part) continue;
      const i = part.indexOf("=");
      out[decodeURIComponent(i < 0 ? part : part.slice(0, i))] = i < 0 ? "" : decodeURIComponent(part.slice(i + 1));
    }
    return out;
  }

  class Comparison {
    constructor(root) {
      this.root = root;
      this.versions = JSON.parse($("script.cmp-data", root).textContent);
      this.view = $(".cmp-view", root);
      this.layerB = $(".cmp-layer-b", root);
      this.imgA = $(".cmp-layer-a img", root);
      this.imgB = $(".cmp-layer-b img", root);
      this.divider = $(".cmp-divider", root);
      this.selA = $("select.cmp-a", root);
      this.selB = $("select.cmp-b", root);
      this.slider = $("input.cmp-slider", root);
      this.zoomSel = $("select.cmp-zoom", root);
      this.zoom = 1; this.cx = 0.5; this.cy = 0.5; this.tx = 0; this.ty = 0;
      for (const sel of [this.selA, this.selB]) {
        for (const v of this.versions) sel.add(new Option(v.caption, v.key));
      }
      for (const z of ZOOMS) this.zoomSel.add(new Option(z + "\u00d7", String(z)));
      for (const img of [this.imgA, this.imgB]) {
        img.addEventListener("error", () => __tadsrError("image failed to load in " + root.dataset.name));
      }
      this.selA.value = root.dataset.a;
      this.selB.value = root.dataset.b;
      this.selA.addEventListener("change", () => this.showSources());
      this.selB.addEventListener("change", () => this.showSources());
      this.slider.addEventListener("input", () => this.setSlider(+this.slider.value));
      this.zoomSel.addEventListener("change", () => this.setZoom(+this.zoomSel.value));
      $(".cmp-reset", root).addEventListener("click", () => { this.cx = 0.5; this.cy = 0.5; this.setZoom(1); });
      this.view.addEventListener("click", (e) => this.clickAt(e));
      this.showSources();
      this.setSlider(+this.slider.value);
      this.setZoom(1);
    }
    version(key) {
      return this.versions.find((v) => v.key === key) || this.versions.find((v) => v.label === key);
    }
    choose(which, key) {
      const v = this.version(key);
      if (v) (which === "a" ? this.selA : this.selB).value = v.key;
      this.showSources();
    }
    showSources() {
      const a = this.version(this.selA.value), b = this.version(this.selB.value);
      this.imgA.src = a.src; this.imgB.src = b.src;
      $(".cmp-tag-a", this.root).textContent = "A: " + a.label;
      $(".cmp-tag-b", this.root).textContent = "B: " + b.label;
    }
    setSlider(p) {
      p = clamp(isFinite(p) ? p : 50, 0, 100);
      this.slider.value = String(p);
      this.layerB.style.clipPath = "inset(0 0 0 " + p + "%)";  // B shows right of the divider, A left of it
      this.divider.style.left = p + "%";
    }
    setZoom(z) {
      this.zoom = ZOOMS.includes(z) ? z : 1;
      this.zoomSel.value = String(this.zoom);
      // keep the zoom centre such that the image still covers the whole view
      this.tx = clamp(0.5 - this.cx * this.zoom, 1 - this.zoom, 0);
      this.ty = clamp(0.5 - this.cy * this.zoom, 1 - this.zoom, 0);
      const t = "translate(" + this.tx * 100 + "%, " + this.ty * 100 + "%) scale(" + this.zoom + ")";
      this.imgA.style.transform = t; this.imgB.style.transform = t;
      this.view.classList.toggle("zoomed", this.zoom > 1);
    }
    clickAt(e) {
      const r = this.view.getBoundingClientRect();
      const fx = (e.clientX - r.left) / r.width, fy = (e.clientY - r.top) / r.height;
      this.cx = clamp((fx - this.tx) / this.zoom, 0, 1);  // the clicked image point becomes the centre
      this.cy = clamp((fy - this.ty) / this.zoom, 0, 1);
      this.setZoom(this.zoom > 1 ? this.zoom : 4);
    }
  }

  function sortBy(table, col, th) {
    const dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    for (const h of $$("thead th", table)) h.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", dir);
    const sign = dir === "ascending" ? 1 : -1;
    const numeric = th.dataset.type === "num";
    const key = (row) => {
      const cell = row.cells[col];
      const raw = cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent.trim();
      return numeric ? (raw === "" ? NaN : Number(raw)) : raw;
    };
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    rows.sort((r1, r2) => {
      const a = key(r1), b = key(r2);
      if (!numeric) return sign * String(a).localeCompare(String(b), undefined, { numeric: true });
      if (isNaN(a) || isNaN(b)) return isNaN(a) - isNaN(b);  // missing values last either way
      return sign * (a - b);
    });
    for (const r of rows) body.appendChild(r);
  }

  function makeSortable(table) {
    $$("thead th", table).forEach((th, i) => {
      th.tabIndex = 0;
      th.addEventListener("click", () => sortBy(table, i, th));
      th.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, i, th); }
      });
    });
  }

  function applyHash(widgets) {
    const p = hashParams();
    for (const w of widgets) {
      if ("a" in p) w.choose("a", p.a);
      if ("b" in p) w.choose("b", p.b);
      if ("cx" in p) w.cx = clamp(+p.cx, 0, 1);
      if ("cy" in p) w.cy = clamp(+p.cy, 0, 1);
      if ("zoom" in p || "cx" in p || "cy" in p) w.setZoom("zoom" in p ? +p.zoom : w.zoom);
      if ("slider" in p) w.setSlider(+p.slider);
    }
    return p;
  }

  function selfTest(widgets) {
    const rect = (el) => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; };
    const out = { widgets: [], tables: [] };
    for (const w of widgets) {
      const clip = (p) => { w.setSlider(p); return getComputedStyle(w.layerB).clipPath; };
      const start = +w.slider.value;
      const clips = [clip(10), clip(90)];
      w.setSlider(start);
      const before = w.imgA.style.transform;
      w.cx = 0.25; w.cy = 0.75; w.setZoom(4);
      const zoomed = [w.imgA.style.transform, w.imgB.style.transform];
      w.cx = 0.5; w.cy = 0.5; w.setZoom(1);
      out.widgets.push({
        name: w.root.dataset.name, versions: w.versions.map((v) => v.key),
        loaded: [w.imgA, w.imgB].every((i) => i.complete && i.naturalWidth > 0),
        natural: [w.imgA.naturalWidth, w.imgB.naturalWidth], a: w.selA.value, b: w.selB.value,
        clips: clips, zoom_both: zoomed[0] === zoomed[1] && zoomed[0] !== before && zoomed[0].includes("scale(4)"),
        view: rect(w.view), slider: rect(w.slider),
      });
    }
    for (const t of $$("table.sortable")) {
      const ths = $$("thead th", t);
      const col = (i) => Array.from(t.tBodies[0].rows).map((r) => {
        const c = r.cells[i];
        return c.dataset.v !== undefined ? c.dataset.v : c.textContent.trim();
      });
      const num = ths.findIndex((th) => th.dataset.type === "num");
      const sorted = {};
      for (const i of [0, num]) {
        if (i < 0) continue;
        sortBy(t, i, ths[i]); const up = col(i);
        sortBy(t, i, ths[i]); sorted[i] = [up, col(i)];
      }
      out.tables.push({ id: t.id, rows: t.tBodies[0].rows.length, text: sorted[0], num_col: num,
                        num: num >= 0 ? sorted[num] : null });
    }
    out.errors = window.__tadsrErrors.slice();
    const box = document.getElementById("selftest");
    box.textContent = JSON.stringify(out);
    box.hidden = false;
  }

  function start() {
    const widgets = $$(".cmp").map((root) => new Comparison(root));
    $$("table.sortable").forEach(makeSortable);
    const p = applyHash(widgets);
    window.addEventListener("hashchange", () => applyHash(widgets));
    if ("selftest" in p) {
      if (document.readyState === "complete") selfTest(widgets);
      else window.addEventListener("load", () => selfTest(widgets));
    }
    document.documentElement.dataset.ready = "1";
  }
  start();
})();
"""


def page(title: str, body: str) -> str:
    """A whole HTML document: inline style and scripts, the error box and the self-check box."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n<script>{ERROR_HOOK}</script>\n</head>\n<body>\n"
        "<pre id=\"js-errors\" hidden></pre>\n"
        f"{body}\n<pre id=\"selftest\" hidden></pre>\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )
