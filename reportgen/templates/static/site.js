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
        try { window.localStorage.setItem("reportgen-theme", next); } catch (e) { /* file:// may forbid storage */ }
      });
    }

    setUpChannels();
    setUpArchitecture();

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

  // The architecture map: its colours for every statistic were computed at build time
  // (site._map_context); choosing one swaps them. A layer page scrolls its own node into view.
  function setUpArchitecture() {
    var source = document.getElementById("arch-data");
    if (!source) { return; }
    var data = JSON.parse(source.textContent);
    var nodes = Array.prototype.slice.call(document.querySelectorAll("svg.arch a.conv"));
    var choice = document.getElementById("arch-statistic");
    choice.addEventListener("change", function () {
      var k = parseInt(choice.value, 10);
      nodes.forEach(function (node) {
        var i = parseInt(node.getAttribute("data-conv"), 10) - 1;
        node.querySelector("circle").setAttribute("fill", data.fills[k][i] || "#888888");
        node.classList.remove("ink-dark", "ink-light", "undefined");
        node.classList.add(data.inks[k][i]);
      });
      document.getElementById("arch-low").textContent = data.low[k];
      document.getElementById("arch-high").textContent = data.high[k];
    });
    var current = document.querySelector("svg.arch a.current circle");
    var box = document.querySelector(".arch-box");
    if (current && box) {
      var place = current.getBoundingClientRect(), frame = box.getBoundingClientRect();
      box.scrollLeft += place.left - frame.left - frame.width / 2;
      box.scrollTop += place.top - frame.top - frame.height / 2;
    }
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
    var tip = document.getElementById("tile-tip");
    var containers = Array.prototype.slice.call(document.querySelectorAll(".tiles"));
    var cursorRank = 0;
    var returnFocus = null;

    function fmt(value) {
      if (value === null || value === undefined) { return "undefined"; }
      var magnitude = Math.abs(value);
      return magnitude !== 0 && (magnitude < 0.001 || magnitude >= 100000) ? value.toExponential(2) :
        String(Number(value.toPrecision(3)));
    }
    var strengths = data.stats.length ? data.stats[0].values : [];
    // A rank says what it can: a channel that is constant on every image has no strength to rank by,
    // and channels of equal strength share their place.
    function rankText(channel, withTotal) {
      var value = strengths[channel];
      if (value === 0) { return "constant on every image, not ranked"; }
      var tied = strengths.filter(function (other) { return other === value; }).length - 1;
      return "rank " + (rankOf[channel] + 1) + (withTotal ? " of " + data.channels : "") +
        (tied ? " (tied with " + tied + (tied === 1 ? " other)" : " others)") : "");
    }
    function summary(channel) {
      var parts = ["Channel " + channel, rankText(channel, true)];
      data.stats.forEach(function (measure, i) {
        if (i === 0 || measure.name === "Best IoU, pet") { parts.push(measure.name + " " + fmt(measure.values[channel])); }
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
        figure.append(picture, caption);
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
      document.getElementById("channel-title").textContent = "Channel " + channel + " of " + data.channels +
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
          if (returnFocus) { returnFocus.focus(); }
        }
        return;
      }
      tip.hidden = true;
      render(channel);
      if (view.hidden) {
        view.hidden = false;
        document.body.classList.add("channel-open");
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
    document.addEventListener("keydown", function (event) {
      if (view.hidden || event.altKey || event.ctrlKey || event.metaKey) { return; }
      if (event.key === "Escape") { event.preventDefault(); close(); }
      else if (event.key === "ArrowLeft") { event.preventDefault(); step(-1); }
      else if (event.key === "ArrowRight") { event.preventDefault(); step(1); }
    });
    route();
  }
}());
