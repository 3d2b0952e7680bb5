// flowgate dashboard: dates in the viewer's local time, copy buttons, confirmations, the review
// screen's keys. No framework.
(function () {
  function localise(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) {
        el.title = el.getAttribute("datetime");
        el.textContent = when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
      }
    });
  }
  function copy(event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) return;
    navigator.clipboard.writeText(target.textContent.trim()).then(function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    });
  }
  // <form data-confirm="Revoke …?">: ask first (HTMX forms use hx-confirm instead).
  function confirmSubmit(event) {
    var form = event.target.closest && event.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.getAttribute("data-confirm"))) {
      event.preventDefault();
      event.stopPropagation();
    }
  }
  // --- The review screen's keys (templates/approvals/review.html lists them). -------------
  // Every key clicks a control that is on the page anyway (a form HTMX posts), so the keys
  // add nothing the plain forms cannot do; they only save the reviewer the pointing.
  var lastRowId = null; // the row the keys act on when focus has moved off it
  var pending = null; // what to focus once HTMX has swapped a row in: {id, mode}
  var undoing = null; // the id of the row an undo is re-deciding
  var undo = []; // [{id, previous}] newest last: the decisions `u` takes back
  function reviewTable() { return document.getElementById("review-table"); }
  function reviewRows() {
    return Array.prototype.slice.call(reviewTable().querySelectorAll("tbody tr.review-row"));
  }
  function announce(text) {
    var region = document.getElementById("review-announcer");
    if (region) region.textContent = text;
  }
  function focusRow(row) {
    if (!row) return;
    lastRowId = row.id;
    row.focus({ preventScroll: true });
    row.scrollIntoView({ block: "nearest" });
    announce(row.getAttribute("aria-label"));
  }
  function currentRow() {
    var active = document.activeElement;
    var row = active && active.closest ? active.closest("tr.review-row") : null;
    return row || (lastRowId && document.getElementById(lastRowId)) || null;
  }
  function undecided(row) {
    return row.getAttribute("data-decision") === "" && !row.hasAttribute("data-failing");
  }
  function nextUndecided(row) {
    var rows = reviewRows();
    var at = rows.indexOf(row);
    for (var step = 1; step <= rows.length; step++) {
      var candidate = rows[(at + step) % rows.length];
      if (undecided(candidate)) return candidate;
    }
    return null;
  }
  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }
  function press(row, selector) {
    var control = row && row.querySelector(selector);
    if (control) control.click();
    return !!control;
  }
  function decisionButton(row, decision) {
    if (decision === "approved") return row.querySelector("button.approve");
    if (decision === "rejected") return row.querySelector("button.reject");
    return row.querySelector("button.clear");
  }
  function takeBack() {
    var last = undo.pop();
    var row = last && document.getElementById(last.id);
    if (!row) { announce("Nothing to undo"); return; }
    var button = decisionButton(row, last.previous);
    if (!button) { announce("This decision cannot be undone here"); return; }
    undoing = row.id;
    button.click();
  }
  function onKey(event) {
    if (!reviewTable()) return;
    var target = event.target;
    if (target.tagName === "TEXTAREA" && target.closest(".edit-form")) {
      if (event.key === "Escape") {
        event.preventDefault();
        press(target.closest(".edit-form"), "a.cancel-edit");
      } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        target.form.requestSubmit();
      }
      return;
    }
    if (target.tagName === "INPUT" && target.classList.contains("reason") && event.key === "Escape") {
      focusRow(target.closest("tr.review-row"));
      return;
    }
    if (typing(target) || event.ctrlKey || event.metaKey || event.altKey) return;
    var row = currentRow();
    var rows = reviewRows();
    var key = event.key;
    if (key === "j" || key === "k") {
      var at = row ? rows.indexOf(row) : -1;
      var to = key === "j" ? (at < 0 ? 0 : at + 1) : (at < 0 ? 0 : at - 1);
      if (to >= 0 && to < rows.length) focusRow(rows[to]);
    } else if (key === "a" && row) {
      if (!press(row, "button.approve")) announce("This row cannot be approved: it will be skipped");
    } else if (key === "r" && row) {
      var reason = row.querySelector("input.reason");
      if (reason) reason.focus(); else press(row, "button.reject");
    } else if (key === "e" && row) {
      press(row, "a.edit");
    } else if (key === "o" && row) {
      var details = row.querySelector("details");
      if (details) details.open = !details.open;
    } else if (key === "u") {
      takeBack();
    } else if (key === "s") {
      var submit = document.getElementById("review-submit");
      if (submit) submit.focus();
    } else if (key === "?") {
      var keys = document.getElementById("review-keys");
      if (keys) { keys.open = !keys.open; keys.querySelector("summary").focus(); }
    } else {
      return;
    }
    event.preventDefault();
  }
  // Any row request (a key or a click): remember how to undo a decision, and where focus goes
  // once the new row is in: the next undecided row after a decision, else the row itself.
  function beforeRowRequest(event) {
    var row = event.detail.elt.closest && event.detail.elt.closest("tr.review-row");
    if (!row) return;
    var path = event.detail.requestConfig.path;
    var mode = "row";
    if (/\/decision$/.test(path)) {
      if (undoing === row.id) {
        undoing = null;
      } else {
        undo.push({ id: row.id, previous: row.getAttribute("data-decision") });
        mode = "next";
      }
    }
    pending = { id: row.id, mode: mode };
  }
  function afterRowSettle(event) {
    var swapped = event.target.closest && event.target.closest("tr.review-row");
    if (!pending || !swapped) return; // the summary's out-of-band swap settles too
    var row = document.getElementById(pending.id);
    var mode = pending.mode;
    pending = null;
    if (!row) return;
    var textarea = row.querySelector(".edit-form textarea");
    if (textarea) {
      textarea.focus();
      textarea.setSelectionRange(textarea.value.length, textarea.value.length);
      return;
    }
    if (mode === "next" && !row.querySelector("[role=alert]")) {
      var next = nextUndecided(row);
      if (next) { focusRow(next); return; }
      announce("No undecided rows left: Submit when ready");
    }
    focusRow(row);
  }
  document.addEventListener("keydown", onKey);
  document.addEventListener("htmx:beforeRequest", beforeRowRequest);
  document.addEventListener("htmx:afterSettle", afterRowSettle);
  document.addEventListener("DOMContentLoaded", function () { localise(document); });
  document.addEventListener("submit", confirmSubmit, true);
  document.addEventListener("htmx:afterSwap", function (event) { localise(event.target); });
  document.addEventListener("click", copy);
})();
