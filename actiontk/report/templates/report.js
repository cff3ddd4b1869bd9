// actiontk report: sortable tables, class filter, confusion matrix heatmap. No external libraries.
// Names from datasets are only ever written with textContent or drawn on the canvas, never parsed as HTML.
(function () {
  "use strict";

  function cellValue(row, col, numeric) {
    var v = row.cells[col].getAttribute("data-v");
    if (v === null) { v = row.cells[col].textContent; }
    if (!numeric) { return v.toLowerCase(); }
    return v === "" ? NaN : Number(v);
  }

  function makeSortable(table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.tabIndex = 0;
      function sort() {
        var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir);
        var numeric = th.getAttribute("data-type") === "number";
        var sign = dir === "ascending" ? 1 : -1;
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a, col, numeric), y = cellValue(b, col, numeric);
          if (numeric) {
            if (isNaN(x) && isNaN(y)) { return 0; }
            if (isNaN(x)) { return 1; }  // undefined values last, whatever the direction
            if (isNaN(y)) { return -1; }
            return sign * (x - y);
          }
          return sign * (x < y ? -1 : x > y ? 1 : 0);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); } });
    });
  }

  function classFilter(input, table) {
    input.addEventListener("input", function () {
      var q = input.value.toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        r.hidden = q !== "" && r.cells[0].textContent.toLowerCase().indexOf(q) < 0;
      });
    });
  }

  function shade(f) {  // white -> dark blue
    var r = Math.round(255 - f * (255 - 8)), g = Math.round(255 - f * (255 - 48)), b = Math.round(255 - f * (255 - 107));
    return "rgb(" + r + "," + g + "," + b + ")";
  }

  function confusion() {
    var holder = document.getElementById("cm-data");
    var canvas = document.getElementById("cm-canvas");
    if (!holder || !canvas || !canvas.getContext) { return; }
    var data = JSON.parse(holder.textContent);
    var names = data.classes, K = names.length, support = data.support;
    var counts = new Float64Array(K * K);
    data.cells.forEach(function (c) { counts[c[0] * K + c[1]] = c[2]; });
    var zoom = document.getElementById("cm-zoom");
    var tip = document.getElementById("cm-tip");
    var ctx = canvas.getContext("2d");
    var cell = 8, margin = 0;

    function draw() {
      cell = Number(zoom.value);
      var labels = cell >= 11;
      ctx.font = Math.min(cell - 2, 13) + "px sans-serif";
      margin = 0;
      if (labels) {
        names.forEach(function (n) { margin = Math.max(margin, ctx.measureText(n).width); });
        margin = Math.min(Math.ceil(margin) + 8, 220);
      }
      canvas.width = margin + K * cell;
      canvas.height = margin + K * cell;
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      for (var i = 0; i < K; i++) {
        for (var j = 0; j < K; j++) {
          ctx.fillStyle = support[i] > 0 ? shade(counts[i * K + j] / support[i]) : "#eeeeee";
          ctx.fillRect(margin + j * cell, margin + i * cell, cell, cell);
        }
      }
      if (cell >= 4) {  // the diagonal, outlined so correct predictions are easy to follow
        ctx.strokeStyle = "rgba(200,60,0,0.5)";
        ctx.lineWidth = 1;
        for (var d = 0; d < K; d++) { ctx.strokeRect(margin + d * cell + 0.5, margin + d * cell + 0.5, cell - 1, cell - 1); }
      }
      if (labels) {
        ctx.font = Math.min(cell - 2, 13) + "px sans-serif";
        ctx.fillStyle = "#222";
        ctx.textBaseline = "middle";
        ctx.textAlign = "right";
        for (var r = 0; r < K; r++) { ctx.fillText(names[r], margin - 4, margin + r * cell + cell / 2, margin - 6); }
        ctx.save();
        ctx.rotate(-Math.PI / 2);
        ctx.textAlign = "left";
        for (var c = 0; c < K; c++) { ctx.fillText(names[c], -margin + 4, margin + c * cell + cell / 2, margin - 6); }
        ctx.restore();
      }
    }

    function hide() { tip.hidden = true; }

    canvas.addEventListener("mousemove", function (e) {
      var rect = canvas.getBoundingClientRect();
      var scale = canvas.width / rect.width;
      var x = (e.clientX - rect.left) * scale - margin, y = (e.clientY - rect.top) * scale - margin;
      var i = Math.floor(y / cell), j = Math.floor(x / cell);
      if (x < 0 || y < 0 || i >= K || j >= K) { hide(); return; }
      var n = counts[i * K + j];
      var share = support[i] > 0 ? " (" + (100 * n / support[i]).toFixed(1) + "% of its " + support[i] + ")" : "";
      tip.textContent = "true: " + names[i] + "\npredicted: " + names[j] + "\n" + n + " item" + (n === 1 ? "" : "s") + share;
      tip.style.left = (e.clientX + 14) + "px";
      tip.style.top = (e.clientY + 14) + "px";
      tip.hidden = false;
    });
    canvas.addEventListener("mouseleave", hide);
    zoom.addEventListener("input", draw);
    draw();
  }

  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), makeSortable);
  var filter = document.getElementById("class-filter");
  if (filter) { classFilter(filter, document.getElementById("per-class")); }
  confusion();
  document.body.setAttribute("data-ready", "1");
}());
