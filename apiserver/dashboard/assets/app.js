// certfleet dashboard: progressive enhancement only. Every page works
// without this file; it adds confirmations before destructive actions,
// filters that apply on change, and refreshes of pages waiting for a scan.
(function () {
  "use strict";

  // <form data-confirm="Delete example.com?"> asks first.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var msg = form.getAttribute && form.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) {
      ev.preventDefault();
    }
  });

  // <select data-autosubmit> submits its form when changed.
  document.addEventListener("change", function (ev) {
    var el = ev.target;
    if (el.hasAttribute && el.hasAttribute("data-autosubmit") && el.form) {
      el.form.requestSubmit ? el.form.requestSubmit() : el.form.submit();
    }
  });

  // <div data-refresh="3"> reloads the page every 3 seconds while it is
  // shown (a domain waiting for its first scan), unless the user is typing.
  var el = document.querySelector("[data-refresh]");
  if (el) {
    var secs = Math.max(2, parseInt(el.getAttribute("data-refresh"), 10) || 5);
    window.setTimeout(function () {
      var a = document.activeElement;
      if (!a || !/^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName)) {
        window.location.reload();
      }
    }, secs * 1000);
  }
})();
