"""The HTML shell of a report: styles and a few lines of script, all inline, so one file is the report."""

from __future__ import annotations

from html import escape

CSS = """
body{font:14px/1.45 system-ui,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2933;background:#f7f8fa}
header{background:#1e293b;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:20px}
nav a{color:#cbd5e1;margin-right:14px;font-size:13px;text-decoration:none}
nav a:hover{color:#fff}
main{padding:8px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:4px 20px 16px;margin:18px 0}
h2{font-size:17px;margin:14px 0 10px}
h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border-bottom:1px solid #e9ecef;padding:4px 10px;text-align:left;vertical-align:top}
th{cursor:pointer;background:#f1f3f5;user-select:none}
th.asc:after{content:" ▲"}
th.desc:after{content:" ▼"}
td[data-v]{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{border:1px solid #e3e6ea;border-radius:6px;padding:8px 14px;min-width:110px}
.card .k{font-size:12px;color:#64748b}
.card .v{font-size:19px;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:6px 0}
figure.hist{margin:0}
figcaption{font-size:11px;color:#64748b;max-width:250px}
svg.chart{font-size:10px;max-width:100%;height:auto}
svg .title{font-size:12px;font-weight:600}
svg .axis{stroke:#475569}
svg .grid{stroke:#eef0f3}
svg .mark:hover{opacity:.7}
.bar{display:inline-block;height:10px;background:#2563eb;border-radius:2px}
pre{background:#f1f3f5;padding:10px;overflow:auto;font-size:12px}
code{font-size:12px}
#plot-map.nopool circle.pool{display:none}
"""

# Sorting tables by a click on their header, filtering histograms by name, hiding the pool on the map.
SCRIPT = """
(function () {
  function key(td) { var v = td.getAttribute('data-v'); return v === null ? td.textContent : parseFloat(v); }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    table.querySelectorAll('th').forEach(function (th, col) {
      th.addEventListener('click', function () {
        var asc = !th.classList.contains('asc');
        table.querySelectorAll('th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
        th.classList.add(asc ? 'asc' : 'desc');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          var numeric = typeof x === 'number' && typeof y === 'number';
          var c = numeric ? x - y : String(x).localeCompare(String(y));
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  var filter = document.getElementById('score-filter');
  if (filter) {
    filter.addEventListener('input', function () {
      var q = filter.value.toLowerCase();
      document.querySelectorAll('figure.hist').forEach(function (f) {
        f.style.display = f.getAttribute('data-name').toLowerCase().indexOf(q) >= 0 ? '' : 'none';
      });
    });
  }
  var pool = document.getElementById('map-pool');
  if (pool) {
    pool.addEventListener('change', function () {
      document.getElementById('plot-map').classList.toggle('nopool', !pool.checked);
    });
  }
  document.body.setAttribute('data-ready', 'yes');
})();
"""


def page(title: str, sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f'<a href="#{sid}">{escape(name)}</a>' for sid, name, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{escape(name)}</h2>{content}</section>' for sid, name, content in sections
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><nav>{nav}</nav></header><main>{body}</main>"
        f"<script>{SCRIPT}</script></body></html>"
    )
