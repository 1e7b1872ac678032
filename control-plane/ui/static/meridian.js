// Meridian's web UI: small progressive enhancements. Every page works without this file.
(function () {
  "use strict";
  // Times are rendered in UTC; show them in the viewer's zone, UTC on hover.
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      if (t.dataset.local) return;
      var d = new Date(t.getAttribute("datetime"));
      if (isNaN(d)) return;
      t.title = t.textContent.trim() + (t.dataset.zone ? " · schedule zone " + t.dataset.zone : "");
      t.textContent = d.toLocaleString(undefined, {
        year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit"
      });
      t.dataset.local = "1";
    });
  }
  // "Select all" for multi-select actions.
  function selectAll(root) {
    root.querySelectorAll("input[data-select-all]").forEach(function (box) {
      box.addEventListener("change", function () {
        var form = document.getElementById(box.dataset.selectAll);
        if (!form) return;
        form.querySelectorAll("input[type=checkbox][name=run]").forEach(function (c) {
          c.checked = box.checked;
        });
      });
    });
  }
  // A destructive form says how many it acts on and asks first.
  function confirmForms(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (e) {
        var boxes = form.querySelectorAll("input[type=checkbox][name=run]");
        var n = boxes.length > 0 ? form.querySelectorAll("input[type=checkbox][name=run]:checked").length : 1;
        if (boxes.length > 0 && n === 0) { e.preventDefault(); return; }
        // The button pressed may ask its own question (re-run rather than kill).
        var ask = (e.submitter && e.submitter.dataset.confirm) || form.dataset.confirm;
        if (!window.confirm(ask.replace("{n}", n))) e.preventDefault();
      });
    });
  }
  // A select that chooses what the page is about reloads it when changed.
  function autosubmit(root) {
    root.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
      sel.addEventListener("change", function () { sel.form.submit(); });
    });
  }
  function enhance(root) { localTimes(root); selectAll(root); confirmForms(root); autosubmit(root); }
  document.addEventListener("DOMContentLoaded", function () { enhance(document); });
  document.addEventListener("htmx:afterSwap", function (e) { localTimes(e.target); });
})();
