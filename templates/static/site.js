// reportgen's only script: theme, keyboard paging, table sort and filter, channel expansion.
// No network access of any kind.
(function () {
  "use strict";
  var root = document.documentElement;
  var stored = null;
  try { stored = window.localStorage.getItem("reportgen-theme"); } catch (e) { stored = null; }
  if (stored === "dark" || stored === "light") { root.setAttribute("data-theme", stored); }

  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.getElementById("theme-toggle");
    if (toggle) {
      toggle.addEventListener("click", function () {
        var dark = root.getAttribute("data-theme") === "dark" ||
          (!root.getAttribute("data-theme") && window.matchMedia("(prefers-color-scheme: dark)").matches);
        var next = dark ? "light" : "dark";
        root.setAttribute("data-theme", next);
        try { window.localStorage.setItem("reportgen-theme", next); } catch (e) { /* file:// may forbid storage */ }
      });
    }

    document.addEventListener("keydown", function (event) {
      if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) { return; }
      var target = event.target;
      if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) { return; }
      var which = event.key === "ArrowLeft" ? "prev" : event.key === "ArrowRight" ? "next" : null;
      if (!which) { return; }
      var link = document.querySelector('a[data-key="' + which + '"]');
      if (link) { event.preventDefault(); window.location.href = link.href; }
    });

    document.querySelectorAll("button.expand").forEach(function (button) {
      button.addEventListener("click", function () {
        var grids = document.getElementById(button.getAttribute("data-target"));
        var expanded = button.getAttribute("aria-expanded") === "true";
        grids.classList.toggle("clipped", expanded);
        button.setAttribute("aria-expanded", expanded ? "false" : "true");
        button.textContent = expanded ? button.textContent.replace("Show only the strongest", "Show all") :
          button.textContent.replace("Show all", "Show only the strongest of the");
      });
    });

    var table = document.getElementById("layer-table");
    if (!table) { return; }
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var count = document.getElementById("layer-count");
    var filter = document.getElementById("layer-filter");
    function showCount(n) { if (count) { count.textContent = n + " of " + rows.length + " layers"; } }
    showCount(rows.length);
    if (filter) {
      filter.addEventListener("input", function () {
        var needle = filter.value.toLowerCase();
        var shown = 0;
        rows.forEach(function (row) {
          var hit = row.textContent.toLowerCase().indexOf(needle) !== -1;
          row.hidden = !hit;
          if (hit) { shown += 1; }
        });
        showCount(shown);
      });
    }
    table.querySelectorAll("th[data-sort]").forEach(function (th, _i) {
      var column = Array.prototype.indexOf.call(th.parentNode.children, th);
      th.querySelector("button").addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        table.querySelectorAll("th").forEach(function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var numeric = th.getAttribute("data-sort") === "num";
        var keyed = rows.map(function (row) {
          var cell = row.cells[column];
          var raw = cell.getAttribute("data-value");
          var value = numeric ? (raw === "" || raw === null ? NaN : parseFloat(raw)) : cell.textContent.trim().toLowerCase();
          return { row: row, value: value };
        });
        keyed.sort(function (a, b) {
          if (numeric) {
            if (isNaN(a.value)) { return 1; }
            if (isNaN(b.value)) { return -1; }
            return ascending ? a.value - b.value : b.value - a.value;
          }
          return ascending ? a.value.localeCompare(b.value) : b.value.localeCompare(a.value);
        });
        keyed.forEach(function (item) { body.appendChild(item.row); });
      });
    });
  });
}());
