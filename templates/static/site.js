// reportgen's only script: theme, keyboard paging, table sort and filter, channel expansion, and
// the channel explorer of layer pages.
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
        window.dispatchEvent(new Event("resize"));  // what the page draws itself, drawn again in the theme's ink
        try { window.localStorage.setItem("reportgen-theme", next); } catch (e) { /* file:// may forbid storage */ }
      });
    }

    setUpChannels();
    setUpArchitecture();
    setUpSearch();
    setUpIndexScatter();

    document.addEventListener("keydown", function (event) {
      if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey || event.defaultPrevented) { return; }
      var target = event.target;
      if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) { return; }
      if (document.body.classList.contains("channel-open")) { return; }
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
        if (!button.dataset.more) {  // the label that expands, as the page wrote it
          button.dataset.more = button.textContent;
        }
        button.textContent = expanded ? button.dataset.more :
          button.dataset.more.replace(/^Show all (\d+) channels$/, "Show only the strongest (of $1 channels)");
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

  // The architecture map: its drawing and its colours for every statistic were computed at build
  // time (site.architecture_script) and come in data/architecture.js; choosing a statistic swaps the
  // colours. The drawing's links start at "@root/", which becomes the page's way to the site's root.
  // A layer page rings its own node and scrolls it into view. The map is at the foot of its page, so
  // its data is only loaded when it comes near the screen (whenNear).
  function setUpArchitecture() {
    var box = document.querySelector(".arch-box[data-script]");
    if (box) { whenNear(box, box.getAttribute("data-script"), "reportgenArchitecture", drawArchitecture); }
  }
  function drawArchitecture(data, box) {
    var current = box.getAttribute("data-current");
    box.insertAdjacentHTML("beforeend", data.svg.split("@root/").join(box.getAttribute("data-root") || ""));
    if (current) {
      var mine = box.querySelector('svg.arch a.conv[data-conv="' + current + '"]');
      if (mine) { mine.classList.add("current"); mine.setAttribute("aria-current", "page"); }
    }
    var nodes = Array.prototype.slice.call(box.querySelectorAll("svg.arch a.conv"));
    var choice = document.getElementById("arch-statistic");
    function recolour() {
      var k = parseInt(choice.value, 10);
      nodes.forEach(function (node) {
        var i = parseInt(node.getAttribute("data-conv"), 10) - 1;
        node.querySelector("circle").setAttribute("fill", data.fills[k][i] || "#888888");
        node.classList.remove("ink-dark", "ink-light", "undefined");
        node.classList.add(data.inks[k][i]);
      });
      document.getElementById("arch-low").textContent = data.low[k];
      document.getElementById("arch-high").textContent = data.high[k];
    }
    if (choice) {  // none when no statistic is defined
      choice.addEventListener("change", recolour);
      recolour();  // a choice the browser restored on going back
    }
    var ringed = box.querySelector("svg.arch a.current circle");
    if (ringed) {
      var place = ringed.getBoundingClientRect(), frame = box.getBoundingClientRect();
      box.scrollLeft += place.left - frame.left - frame.width / 2;
      box.scrollTop += place.top - frame.top - frame.height / 2;
    }
  }

  // The channel search page: every channel as a row of data/channels.js (channels.every_channel),
  // filtered by layer range and thresholds, sorted by any column, drawn as a scatter.
  function setUpSearch() {
    var form = document.getElementById("search-form");
    if (!form || !window.reportgenChannels) { return; }
    var table = channelTable(window.reportgenChannels);
    var data = table.data, columns = table.columns, rows = table.rows, position = table.position;
    var LIMIT = 50, shownLimit = LIMIT, sortColumn = -1, ascending = true, kept = rows;
    var head = document.getElementById("search-head");
    var body = document.querySelector("#search-table tbody");
    var count = document.getElementById("search-count");
    var more = document.getElementById("search-more");
    var from = document.getElementById("layer-from"), to = document.getElementById("layer-to");
    var bounds = columns.map(function (column, k) {  // the inputs search.html wrote, one pair a column
      return { min: document.getElementById("t" + k + "-min"), max: document.getElementById("t" + k + "-max") };
    });
    var fmt = table.fmt, value = table.value;

    head.querySelectorAll("th").forEach(function (th, i) {
      th.querySelector("button").addEventListener("click", function () {
        var k = i - 2;
        ascending = sortColumn === k ? !ascending : k < 0;
        sortColumn = k;
        head.querySelectorAll("th").forEach(function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        update();
      });
    });

    function update() {
      var low = parseInt(from.value, 10) || 1, high = parseInt(to.value, 10) || Infinity;
      var limits = bounds.map(function (pair) {
        return [pair.min.value === "" ? -Infinity : parseFloat(pair.min.value),
                pair.max.value === "" ? Infinity : parseFloat(pair.max.value)];
      });
      kept = rows.filter(function (row) {
        var index = data.layers[row[0]].index;
        if (index < low || index > high) { return false; }
        for (var k = 0; k < limits.length; k++) {
          if (limits[k][0] === -Infinity && limits[k][1] === Infinity) { continue; }
          var v = value(row, k);
          if (isNaN(v) || v < limits[k][0] || v > limits[k][1]) { return false; }
        }
        return true;
      });
      if (sortColumn !== -1 || !ascending) {
        var k = sortColumn;
        kept.sort(function (a, b) {
          var x = value(a, k), y = value(b, k);
          if (isNaN(x)) { return isNaN(y) ? 0 : 1; }
          if (isNaN(y)) { return -1; }
          return (ascending ? x - y : y - x) || (position(a) - position(b));
        });
      }
      render();
      // The scatter after the table has painted: a phone's first screen needs the table first.
      window.requestAnimationFrame(function () { window.setTimeout(draw, 0); });
    }
    function render() {
      body.replaceChildren();
      kept.slice(0, shownLimit).forEach(function (row) {
        var layer = data.layers[row[0]];
        var tr = document.createElement("tr");
        var name = document.createElement("td");
        var link = document.createElement("a");
        link.href = layer.href;
        link.textContent = layer.index + ". " + layer.name;
        name.append(link);
        var channel = document.createElement("td");
        var open = document.createElement("a");
        open.href = layer.href + "#c" + row[1];
        open.textContent = String(row[1]);
        open.setAttribute("aria-label", "Open channel " + row[1] + " of " + layer.name);
        channel.append(open);
        tr.append(name, channel);
        columns.forEach(function (column, k) {
          var td = document.createElement("td");
          td.textContent = fmt(value(row, k));
          tr.append(td);
        });
        body.append(tr);
      });
      count.textContent = kept.length + " of " + rows.length + " channels match" +
        (kept.length > shownLimit ? "; the first " + shownLimit + " are listed" : "");
      more.hidden = kept.length <= shownLimit;
    }
    more.addEventListener("click", function () { shownLimit += LIMIT; render(); });
    form.addEventListener("input", function () { shownLimit = LIMIT; update(); });
    form.addEventListener("reset", function () { window.setTimeout(update, 0); });
    form.addEventListener("submit", function (event) { event.preventDefault(); });

    var chooseX = document.getElementById("scatter-x"), chooseY = document.getElementById("scatter-y");
    columns.forEach(function (column, k) {
      [chooseX, chooseY].forEach(function (choice) {
        var option = document.createElement("option");
        option.value = String(k);
        option.textContent = column.name;
        choice.append(option);
      });
    });
    chooseX.value = String(table.keyed("ntv", 0));
    chooseY.value = String(table.keyed("best_iou_focus", table.keyed("taylor_importance", Math.min(1, columns.length - 1))));
    var draw = channelScatter(document.getElementById("scatter"), document.getElementById("scatter-tip"), table,
      function () { return [parseInt(chooseX.value, 10), parseInt(chooseY.value, 10)]; },
      function () { return kept; });
    [chooseX, chooseY].forEach(function (choice) { choice.addEventListener("change", draw); });
    update();
  }

  // The index's channel scatter: nTV against the best IoU with the focus class, as its static chart, every point a channel.
  // Its data (every channel's numbers, the index's largest file) is loaded when it comes near the screen.
  function setUpIndexScatter() {
    var canvas = document.getElementById("index-scatter");
    if (!canvas) { return; }
    whenNear(canvas, canvas.getAttribute("data-script"), "reportgenChannels", function (data) {
      var table = channelTable(data);
      var axes = [table.keyed("ntv", 0), table.keyed("best_iou_focus", 0)];
      channelScatter(canvas, document.getElementById("scatter-tip"), table, function () { return axes; },
        function () { return table.rows; })();
    });
  }

  // Calls then(data, element) once `element` is within a screen's height of the screen, with
  // window[name] as set by the data script `src` (data/*.js, loaded then unless a page's head
  // already did), and then removes the element's data-script: what is left with one is still to
  // come. What a part below the first screen needs is thus neither fetched nor run before the first
  // screen is shown, and a phone on a slow network gets that screen sooner. A script element, not
  // fetch(): a page opened from file:// may load a script beside it but not fetch it.
  function whenNear(element, src, name, then) {
    function loaded() {
      then(window[name], element);
      element.removeAttribute("data-script");
    }
    function load() {
      if (window[name]) { loaded(); return; }
      var script = document.createElement("script");
      script.src = src;
      script.addEventListener("load", loaded);
      document.head.append(script);
    }
    if (window[name] || !("IntersectionObserver" in window)) { load(); return; }
    var watch = new IntersectionObserver(function (entries) {
      if (!entries.some(function (entry) { return entry.isIntersecting; })) { return; }
      watch.disconnect();
      load();
    }, { rootMargin: "100% 0px" });
    watch.observe(element);
  }

  // data/channels.js (channels.every_channel) decoded: its columns, one row [layer, channel] a channel.
  function channelTable(data) {
    var columns = data.columns.map(function (column) {
      var bytes = Uint8Array.from(atob(column.values), function (c) { return c.charCodeAt(0); });
      var values = column.dtype === "f4" ? new Float32Array(bytes.buffer) :
        Float32Array.from(new Uint16Array(bytes.buffer), half);
      return { key: column.key, name: column.name, values: values };
    });
    var rows = [], starts = [0];
    data.layers.forEach(function (layer, l) {
      for (var c = 0; c < layer.channels; c++) { rows.push([l, c]); }
      starts.push(starts[l] + layer.channels);
    });
    function position(row) { return starts[row[0]] + row[1]; }
    return {
      data: data, columns: columns, rows: rows, position: position,
      // k: a column; -1 the channel, -2 the layer's index
      value: function (row, k) { return k === -2 ? data.layers[row[0]].index : k === -1 ? row[1] : columns[k].values[position(row)]; },
      // Columns are found by their catalog key (reportgen.catalog), never by their label.
      keyed: function (key, fallback) {
        var found = columns.findIndex(function (c) { return c.key === key; });
        return found >= 0 ? found : fallback;
      },
      fmt: formatNumber
    };
  }

  // A scatter of every channel, drawn for the width it is shown at (its text is the page's small
  // text at any width): `axes()` the two columns, `kept()` the rows drawn in colour. A point names
  // its channel on hover and opens its channel view on click. Returns the function that draws it.
  function channelScatter(canvas, tip, table, axes, kept) {
    var data = table.data, columns = table.columns, rows = table.rows, fmt = table.fmt, value = table.value;
    var position = table.position;
    var drawn = [];
    function axis(k) {
      var values = columns[k].values, low = Infinity, high = -Infinity;
      for (var i = 0; i < values.length; i++) {
        if (!isNaN(values[i])) { low = Math.min(low, values[i]); high = Math.max(high, values[i]); }
      }
      var log = low > 0 && high / low > 10;  // nTV and importances span decades: log, as the charts
      var f = log ? Math.log : function (v) { return v; };
      return { low: low, high: high, log: log, at: function (v) { return (f(v) - f(low)) / ((f(high) - f(low)) || 1); } };
    }
    function draw() {
      var style = getComputedStyle(document.body);
      var width = canvas.parentNode.clientWidth, height = Math.min(360, Math.max(240, width * 0.6));
      var ratio = window.devicePixelRatio || 1;
      canvas.width = width * ratio;
      canvas.height = height * ratio;
      canvas.style.width = width + "px";
      canvas.style.height = height + "px";
      var context = canvas.getContext("2d");
      context.setTransform(ratio, 0, 0, ratio, 0, 0);
      context.clearRect(0, 0, width, height);
      var kx = axes()[0], ky = axes()[1];
      var ax = axis(kx), ay = axis(ky);
      var pad = { left: 48, right: 12, top: 12, bottom: 40 };
      var plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
      context.strokeStyle = style.getPropertyValue("--line");
      context.strokeRect(pad.left, pad.top, plotW, plotH);
      context.fillStyle = style.getPropertyValue("--muted");
      context.font = "12px system-ui, sans-serif";
      context.textAlign = "left";
      context.fillText(fmt(ax.low), pad.left, height - 24);
      context.textAlign = "right";
      context.fillText(fmt(ax.high), pad.left + plotW, height - 24);
      context.textAlign = "center";
      context.fillText(columns[kx].name + (ax.log ? " (log scale)" : ""), pad.left + plotW / 2, height - 6);
      context.save();
      context.translate(14, pad.top + plotH / 2);
      context.rotate(-Math.PI / 2);
      context.fillText(columns[ky].name + (ay.log ? " (log scale)" : ""), 0, 0);
      context.restore();
      context.textAlign = "right";
      context.fillText(fmt(ay.high), pad.left - 4, pad.top + 10);
      context.fillText(fmt(ay.low), pad.left - 4, pad.top + plotH);
      var keep = new Uint8Array(rows.length);
      kept().forEach(function (row) { keep[position(row)] = 1; });
      drawn = [];
      var last = data.layers.length > 1 ? data.layers.length - 1 : 1;
      // On the dark background viridis' darkest purples vanish: start at its blue, as the charts do.
      var dark = root.getAttribute("data-theme") === "dark" || (!root.getAttribute("data-theme") &&
        window.matchMedia("(prefers-color-scheme: dark)").matches);
      var start = dark ? 0.3 : 0;
      // One colour a layer, set only where it changes: rows come layer by layer, and setting a
      // canvas's fillStyle for each of thousands of points is most of the drawing's time.
      var inks = data.layers.map(function (layer, l) { return depthColour(start + (1 - start) * l / last); });
      var xs = columns[kx].values, ys = columns[ky].values;
      [0, 1].forEach(function (pass) {  // left-out points first, kept ones on top
        var ink = pass ? null : "rgba(128,128,128,0.25)";
        context.fillStyle = ink || "#000";
        rows.forEach(function (row, i) {
          if (keep[i] !== pass) { return; }
          var x = xs[i], y = ys[i];
          if (isNaN(x) || isNaN(y)) { return; }
          var px = pad.left + ax.at(x) * plotW, py = pad.top + (1 - ay.at(y)) * plotH;
          if (pass && inks[row[0]] !== ink) { ink = inks[row[0]]; context.fillStyle = ink; }
          context.fillRect(px - 1.5, py - 1.5, 3, 3);
          if (pass) { drawn.push([px, py, row]); }
        });
      });
    }
    // Viridis at five stops: dark early layers, light late ones, as the index's charts.
    var stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    function depthColour(t) {
      var at = t * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(at)), f = at - i;
      var c = stops[i].map(function (v, j) { return Math.round(v + f * (stops[i + 1][j] - v)); });
      return "rgb(" + c.join(",") + ")";
    }
    function nearest(event) {
      var box = canvas.getBoundingClientRect(), x = event.clientX - box.left, y = event.clientY - box.top;
      var best = null, distance = 64;
      drawn.forEach(function (point) {
        var d = (point[0] - x) * (point[0] - x) + (point[1] - y) * (point[1] - y);
        if (d < distance) { distance = d; best = point; }
      });
      return best;
    }
    canvas.addEventListener("mousemove", function (event) {
      var point = nearest(event);
      if (!point) { tip.hidden = true; canvas.style.cursor = "default"; return; }
      var layer = data.layers[point[2][0]];
      tip.textContent = "Conv " + layer.index + " " + layer.name + ", channel " + point[2][1] + ": " +
        columns[axes()[0]].name + " " + fmt(value(point[2], axes()[0])) + ", " +
        columns[axes()[1]].name + " " + fmt(value(point[2], axes()[1]));
      tip.style.left = point[0] + 8 + "px";
      tip.style.top = point[1] + 8 + "px";
      tip.hidden = false;
      canvas.style.cursor = "pointer";
    });
    canvas.addEventListener("mouseleave", function () { tip.hidden = true; });
    canvas.addEventListener("click", function (event) {
      var point = nearest(event);
      if (point) { window.location.href = data.layers[point[2][0]].href + "#c" + point[2][1]; }
    });
    window.addEventListener("resize", draw);
    return draw;
  }

  // A number as the pages print it: three significant digits; "undefined" for a missing or NaN one.
  function formatNumber(value) {
    if (value === null || value === undefined || isNaN(value)) { return "undefined"; }
    var magnitude = Math.abs(value);
    return magnitude !== 0 && (magnitude < 0.001 || magnitude >= 100000) ? value.toExponential(2) :
      String(Number(value.toPrecision(3)));
  }

  // Numbers packed by reportgen.channels.packed: base64 of little-endian 16-bit words.
  function unpack(text) {
    var bytes = Uint8Array.from(atob(text), function (c) { return c.charCodeAt(0); });
    return new Uint16Array(bytes.buffer);
  }
  function half(bits) {  // IEEE 754 binary16
    var sign = bits & 0x8000 ? -1 : 1, exponent = (bits >> 10) & 31, fraction = bits & 1023;
    if (exponent === 0) { return sign * fraction * Math.pow(2, -24); }
    if (exponent === 31) { return fraction ? NaN : sign * Infinity; }
    return sign * (1 + fraction / 1024) * Math.pow(2, exponent - 15);
  }

  // The channel explorer. A layer's grid is one picture per image with the channels in rank order,
  // so a tile is found by geometry and named through `order`; the channel view is driven by the
  // address (#c<K>, K the channel's index in the model), so links, reloads and Back all work.
  function setUpChannels() {
    var source = document.getElementById("channel-data");
    if (!source) { return; }
    var data = JSON.parse(source.textContent);
    var root = source.getAttribute("data-root") || "";
    var ranges = data.ranges.map(function (text) { return text ? unpack(text) : null; });
    var exampleStart = [0];
    if (data.examples) {
      var exampleItems = unpack(data.examples.items);
      data.examples.counts.forEach(function (count, c) { exampleStart.push(exampleStart[c] + count); });
    }
    var grid = data.grid;
    var rankOf = {};
    data.order.forEach(function (channel, rank) { rankOf[channel] = rank; });
    var view = document.getElementById("channel-view");
    // A modal dialog: a child of the body, so that everything else can be made inert while it is
    // open (Tab then cannot leave it, and a screen reader reads only the dialog).
    document.body.append(view);
    var behind = Array.prototype.filter.call(document.body.children, function (part) {
      return part !== view && part.tagName !== "SCRIPT";
    });
    var tip = document.getElementById("tile-tip");
    var containers = Array.prototype.slice.call(document.querySelectorAll(".tiles"));
    var cursorRank = 0;
    var returnFocus = null;

    var fmt = formatNumber;
    var strengths = data.stats.length ? data.stats[0].values : [];
    // A rank says what it can: a channel that is constant on every image has no strength to rank by,
    // and channels of equal strength share their place.
    function rankText(channel, withTotal) {
      var value = strengths[channel];
      if (value === 0) {
        return data.positions === 1 ? "a 1x1 map, one value an image: no spatial strength to rank by" :
          "constant on every image, not ranked";
      }
      var tied = strengths.filter(function (other) { return other === value; }).length - 1;
      return "rank " + (rankOf[channel] + 1) + (withTotal ? " of " + data.channels : "") +
        (tied ? " (tied with " + tied + (tied === 1 ? " other)" : " others)") : "");
    }
    function summary(channel) {
      var parts = ["Channel " + channel, rankText(channel, true)];
      // The strength, and the best IoU with the focus class: the first of the per-class IoUs.
      var focusIoU = data.stats.filter(function (measure) { return measure.key === "best_iou_focus"; })[0];
      data.stats.forEach(function (measure, i) {
        if (i === 0 || measure === focusIoU) { parts.push(measure.name + " " + fmt(measure.values[channel])); }
      });
      return parts.join(" · ");
    }
    function tileBox(rank) {
      var column = rank % grid.columns, row = Math.floor(rank / grid.columns);
      return { x: column * (grid.tile_w + grid.gap), y: row * (grid.tile_h + grid.gap) };
    }
    function rankAt(image, event) {
      var box = image.getBoundingClientRect();
      var x = (event.clientX - box.left) * grid.width / box.width;
      var y = (event.clientY - box.top) * grid.height / box.height;
      var column = Math.floor(x / (grid.tile_w + grid.gap)), row = Math.floor(y / (grid.tile_h + grid.gap));
      if (x < 0 || y < 0 || column >= grid.columns) { return -1; }
      var rank = row * grid.columns + column;
      return rank < data.channels ? rank : -1;
    }
    function mark(container, rank) {
      var cursor = container.querySelector(".tile-cursor");
      var image = container.querySelector("img");
      if (rank < 0) { cursor.hidden = true; tip.hidden = true; return; }
      var box = tileBox(rank);
      var scale = image.getBoundingClientRect().width / grid.width;
      cursor.style.left = box.x * scale + "px";
      cursor.style.top = box.y * scale + "px";
      cursor.style.width = grid.tile_w * scale + "px";
      cursor.style.height = grid.tile_h * scale + "px";
      cursor.hidden = false;
      var channel = data.order[rank];
      tip.textContent = summary(channel);
      tip.setAttribute("data-channel", String(channel));
      var place = cursor.getBoundingClientRect();
      tip.style.left = window.scrollX + place.left + "px";
      tip.style.top = window.scrollY + place.bottom + 4 + "px";
      tip.hidden = false;
    }

    containers.forEach(function (container) {
      var image = container.querySelector("img");
      image.addEventListener("mousemove", function (event) { mark(container, rankAt(image, event)); });
      image.addEventListener("mouseleave", function () { mark(container, -1); });
      image.addEventListener("click", function (event) {
        var rank = rankAt(image, event);
        if (rank >= 0) { returnFocus = container; open(data.order[rank]); }
      });
      container.addEventListener("focus", function () { mark(container, cursorRank); });
      container.addEventListener("blur", function () { mark(container, -1); });
      container.addEventListener("keydown", function (event) {
        var steps = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -grid.columns, ArrowDown: grid.columns };
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          returnFocus = container;
          open(data.order[cursorRank]);
        } else if (event.key in steps || event.key === "Home" || event.key === "End") {
          event.preventDefault();
          var next = event.key === "Home" ? 0 : event.key === "End" ? data.channels - 1 : cursorRank + steps[event.key];
          cursorRank = Math.max(0, Math.min(data.channels - 1, next));
          var grids = document.getElementById("grids");
          if (grids.classList.contains("clipped") && tileBox(cursorRank).y + grid.tile_h >
              container.clientHeight * grid.width / container.clientWidth) {
            document.querySelector('button.expand[data-target="grids"]').click();
          }
          mark(container, cursorRank);
        }
      });
    });

    setUpValueStrips();
    // A layer of maps under 4 x 4 pixels shows each image's channels as values (layer.html): bars
    // highest first, on one scale for every image, drawn from the colour ranges the page carries.
    function setUpValueStrips() {
      var strips = Array.prototype.slice.call(document.querySelectorAll(".value-strip"));
      if (!strips.length) { return; }
      var lows = [], highs = [];
      ranges.forEach(function (packed) {
        lows.push([]); highs.push([]);
        for (var c = 0; c < data.channels; c++) {
          lows[lows.length - 1].push(half(packed[2 * c]));
          highs[highs.length - 1].push(half(packed[2 * c + 1]));
        }
      });
      var top = Math.max(0, Math.max.apply(null, highs.map(function (v) { return Math.max.apply(null, v); })));
      var bottom = Math.min(0, Math.min.apply(null, lows.map(function (v) { return Math.min.apply(null, v); })));
      var span = top - bottom || 1, height = 96, ns = "http://www.w3.org/2000/svg";
      strips.forEach(function (strip) {
        var i = parseInt(strip.getAttribute("data-image"), 10);
        var sorted = highs[i].map(function (v, c) { return c; });
        sorted.sort(function (a, b) { return highs[i][b] - highs[i][a] || a - b; });
        var svg = document.createElementNS(ns, "svg");
        svg.setAttribute("viewBox", "0 0 " + data.channels + " " + height);
        svg.setAttribute("preserveAspectRatio", "none");
        svg.setAttribute("aria-hidden", "true");
        var zero = height * top / span;
        function y(v) { return height * (top - v) / span; }
        // A rectangle as a piece of a path: the bars of an image are one path, their ranges another.
        // An element a bar was two elements a channel and image (5,000 on the DASPP pool's page), and
        // creating and laying them out was most of that page's blocking time on a phone.
        function box(x, from, width, tall) {
          return "M" + x + " " + from.toFixed(3) + "h" + width + "v" + tall.toFixed(3) + "h-" + width + "z";
        }
        var bars = [], lines = [];
        sorted.forEach(function (channel, k) {
          var value = highs[i][channel];
          bars.push(box(k + 0.1, Math.min(zero, y(value)), 0.8, Math.max(0.5, Math.abs(y(value) - zero))));
          if (lows[i][channel] !== value) {
            lines.push(box(k + 0.4, y(value), 0.2, Math.max(0.5, y(lows[i][channel]) - y(value))));
          }
        });
        [[bars, "bars"], [lines, "range"]].forEach(function (shape) {
          if (!shape[0].length) { return; }
          var path = document.createElementNS(ns, "path");
          path.setAttribute("class", shape[1]);
          path.setAttribute("d", shape[0].join(""));
          svg.append(path);
        });
        strip.prepend(svg);
        var cursor = 0;
        function at(event) {
          var box = svg.getBoundingClientRect();
          var k = Math.floor((event.clientX - box.left) / box.width * data.channels);
          return k >= 0 && k < data.channels ? k : -1;
        }
        function show(k) {
          var mark = strip.querySelector(".tile-cursor");
          if (k < 0) { mark.hidden = true; tip.hidden = true; return; }
          var box = svg.getBoundingClientRect(), width = box.width / data.channels;
          mark.style.left = k * width + "px";
          mark.style.top = "0px";
          mark.style.width = Math.max(2, width) + "px";
          mark.style.height = box.height + "px";
          mark.hidden = false;
          var channel = sorted[k];
          tip.textContent = summary(channel) + " · on this image " + fmt(highs[i][channel]) +
            (lows[i][channel] !== highs[i][channel] ? " (range " + fmt(lows[i][channel]) + " to " + fmt(highs[i][channel]) + ")" : "");
          tip.setAttribute("data-channel", String(channel));
          var place = mark.getBoundingClientRect();
          tip.style.left = window.scrollX + Math.min(place.left, window.innerWidth - 240) + "px";
          tip.style.top = window.scrollY + place.bottom + 4 + "px";
          tip.hidden = false;
        }
        svg.addEventListener("mousemove", function (event) { show(at(event)); });
        svg.addEventListener("mouseleave", function () { show(-1); });
        svg.addEventListener("click", function (event) {
          var k = at(event);
          if (k >= 0) { returnFocus = strip; open(sorted[k]); }
        });
        strip.addEventListener("focus", function () { show(cursor); });
        strip.addEventListener("blur", function () { show(-1); });
        strip.addEventListener("keydown", function (event) {
          var steps = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -10, ArrowDown: 10 };
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            returnFocus = strip;
            open(sorted[cursor]);
          } else if (event.key in steps || event.key === "Home" || event.key === "End") {
            event.preventDefault();
            var next = event.key === "Home" ? 0 : event.key === "End" ? data.channels - 1 : cursor + steps[event.key];
            cursor = Math.max(0, Math.min(data.channels - 1, next));
            show(cursor);
          }
        });
      });
    }

    function element(tag, className, text) {
      var made = document.createElement(tag);
      if (className) { made.className = className; }
      if (text !== undefined) { made.textContent = text; }
      return made;
    }
    // One tile of the grid picture `src`, drawn `size` CSS pixels on its longer side.
    function tilePicture(src, rank, size) {
      var box = tileBox(rank);
      var zoom = size / Math.max(grid.tile_w, grid.tile_h);
      var tile = element("div", "tile-picture");
      tile.style.width = grid.tile_w * zoom + "px";
      tile.style.height = grid.tile_h * zoom + "px";
      tile.style.backgroundImage = 'url("' + src + '")';
      tile.style.backgroundSize = grid.width * zoom + "px " + grid.height * zoom + "px";
      tile.style.backgroundPosition = -box.x * zoom + "px " + -box.y * zoom + "px";
      return tile;
    }
    function showStats(channel) {
      var table = document.getElementById("channel-stats");
      table.replaceChildren();
      var row = element("tr");
      row.append(element("th", "", "Rank by strength"), element("td", "", (rankOf[channel] + 1) + " of " + data.channels));
      table.append(row);
      data.stats.forEach(function (measure) {
        var name = measure.name, values = measure.values;
        var value = values[channel];
        var above = values.filter(function (other) { return other !== null && value !== null && other > value; }).length;
        var line = element("tr");
        var interval = measure.low && measure.low[channel] !== null && measure.high[channel] !== null ?
          ", 90% interval " + fmt(measure.low[channel]) + " to " + fmt(measure.high[channel]) : "";
        line.append(element("th", "", name), element("td", "", fmt(value) +
          (value === null ? "" : " (" + ordinal(above + 1) + " highest of the layer" + interval + ")")));
        table.append(line);
      });
    }
    function ordinal(n) {
      var tens = n % 100, ones = n % 10;
      var suffix = tens > 10 && tens < 14 ? "th" : ones === 1 ? "st" : ones === 2 ? "nd" : ones === 3 ? "rd" : "th";
      return n + suffix;
    }
    // A dataset example is a receptive-field-sized square of a statistics image, cropped here:
    // every layer's examples share one picture per image.
    function showExamples(channel) {
      var box = document.getElementById("channel-examples");
      var note = document.getElementById("channel-examples-note");
      box.replaceChildren();
      var examples = data.examples;
      if (!examples) { note.textContent = "No dataset examples for this layer (statistics off, or not a 2-D map)."; return; }
      var items = [];
      for (var k = exampleStart[channel]; k < exampleStart[channel + 1]; k++) {
        items.push([half(exampleItems[4 * k]), exampleItems[4 * k + 1], exampleItems[4 * k + 2], exampleItems[4 * k + 3]]);
      }
      note.textContent = "The " + items.length + " statistics images on which this channel's maximum is highest, " +
        "each a " + examples.side + " x " + examples.side + "-pixel square around that maximum (the receptive field " +
        "is " + fmt(examples.field) + " input pixels), with the value there.";
      var size = 96, zoom = size / examples.side;
      var height = examples.input[0], width = examples.input[1];
      items.forEach(function (item, slot) {
        var image = examples.images[item[1]];
        var figure = element("figure", "example");
        var picture = element("div", "example-picture");
        picture.setAttribute("role", "img");
        picture.setAttribute("aria-label", "Example " + (slot + 1) + ": " + image.id + ", value " + fmt(item[0]));
        picture.setAttribute("data-src", root + image.src);
        picture.style.width = picture.style.height = size + "px";
        picture.style.backgroundImage = 'url("' + root + image.src + '")';
        picture.style.backgroundSize = width * zoom + "px " + height * zoom + "px";
        picture.style.backgroundPosition = -item[3] * zoom + "px " + -item[2] * zoom + "px";
        var caption = element("figcaption", "", fmt(item[0]) + " · ");
        if (image.href) {
          var anchor = element("a", "", image.id);
          anchor.href = root + image.href;
          caption.append(anchor);
        } else {
          caption.append(document.createTextNode(image.id));
        }
        // Where the crop was taken: its box on a thumbnail of the whole image.
        var whole = element("div", "example-whole");
        whole.setAttribute("aria-hidden", "true");
        whole.style.backgroundImage = picture.style.backgroundImage;
        whole.style.aspectRatio = width + " / " + height;
        var mark = element("span", "example-box");
        mark.style.left = 100 * item[3] / width + "%";
        mark.style.top = 100 * item[2] / height + "%";
        mark.style.width = 100 * examples.side / width + "%";
        mark.style.height = 100 * examples.side / height + "%";
        whole.append(mark);
        figure.append(picture, whole, caption);
        box.append(figure);
      });
    }
    function showImages(channel) {
      var box = document.getElementById("channel-images");
      box.replaceChildren();
      var rank = rankOf[channel];
      var overlay = document.getElementById("channel-overlay").checked;
      box.classList.toggle("overlaid", overlay);
      containers.forEach(function (container, i) {
        var info = data.images[i];
        var figure = element("figure", "channel-image");
        var stack = element("div", "stack");
        var input = element("img");
        input.src = root + info.input;
        input.alt = "Input " + info.id;
        var tile = tilePicture(container.querySelector("img").src, rank, 200);
        input.width = parseFloat(tile.style.width);
        input.height = parseFloat(tile.style.height);
        stack.append(input, tile);
        var range = ranges[i] ? [half(ranges[i][2 * channel]), half(ranges[i][2 * channel + 1])] : null;
        var caption = element("figcaption");
        var anchor = element("a", "", info.id);
        anchor.href = root + info.href;
        caption.append(anchor, document.createTextNode(range ? " · range " + fmt(range[0]) + " to " + fmt(range[1]) : ""));
        figure.append(stack, caption);
        box.append(figure);
      });
    }
    function render(channel) {
      document.getElementById("channel-heading").textContent = "Channel " + channel + " of " + data.channels +
        " · " + rankText(channel, false);
      document.getElementById("channel-link").href = "#c" + channel;
      showStats(channel);
      showExamples(channel);
      showImages(channel);
      view.setAttribute("data-channel", String(channel));
    }
    function requested() {
      var match = /^#c(\d+)$/.exec(window.location.hash);
      var channel = match ? parseInt(match[1], 10) : -1;
      return channel >= 0 && channel < data.channels ? channel : -1;
    }
    function route() {
      var channel = requested();
      if (channel < 0) {
        if (!view.hidden) {
          view.hidden = true;
          document.body.classList.remove("channel-open");
          behind.forEach(function (part) { part.inert = false; });
          if (returnFocus) { returnFocus.focus(); }
        }
        return;
      }
      tip.hidden = true;
      render(channel);
      if (view.hidden) {
        view.hidden = false;
        document.body.classList.add("channel-open");
        behind.forEach(function (part) { part.inert = true; });
        document.getElementById("channel-title").focus();
      }
    }
    // pushState, not location.hash: the view follows at once instead of on a later hashchange event.
    function open(channel) {
      if (window.location.hash !== "#c" + channel) { history.pushState(null, "", "#c" + channel); }
      route();
    }
    function close() {
      history.pushState(null, "", window.location.pathname + window.location.search);
      route();
    }
    function step(by) {
      var rank = rankOf[requested()] + by;
      if (rank >= 0 && rank < data.channels) { open(data.order[rank]); }
    }

    window.addEventListener("hashchange", route);
    window.addEventListener("popstate", route);
    document.getElementById("channel-close").addEventListener("click", close);
    document.getElementById("channel-overlay").addEventListener("change", function () { route(); });
    view.querySelectorAll("[data-channel-step]").forEach(function (button) {
      button.addEventListener("click", function () { step(parseInt(button.getAttribute("data-channel-step"), 10)); });
    });
    // The page behind is inert, so Tab could only leave the dialog for the browser's own controls:
    // it wraps from the last control to the first, and Shift+Tab the other way.
    view.addEventListener("keydown", function (event) {
      if (event.key !== "Tab") { return; }
      var controls = Array.prototype.filter.call(
        view.querySelectorAll("a[href], button, input, select, [tabindex='0']"),
        function (control) { return !control.disabled && control.getClientRects().length; });
      if (!controls.length) { return; }
      var first = controls[0], last = controls[controls.length - 1];
      var at = document.activeElement;
      if (event.shiftKey && (at === first || !view.contains(at) || at.id === "channel-title")) {
        event.preventDefault();
        last.focus();
      } else if (!event.shiftKey && at === last) {
        event.preventDefault();
        first.focus();
      }
    });
    document.addEventListener("keydown", function (event) {
      if (view.hidden || event.altKey || event.ctrlKey || event.metaKey) { return; }
      if (event.key === "Escape") { event.preventDefault(); close(); }
      else if (event.key === "ArrowLeft") { event.preventDefault(); step(-1); }
      else if (event.key === "ArrowRight") { event.preventDefault(); step(1); }
    });
    route();
  }
}());
