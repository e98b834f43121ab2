// Task Automation dashboard: the run page's live log (server-sent events). No inline script anywhere:
// the Content-Security-Policy allows scripts from this origin only.
"use strict";
(function () {
  function follow(pre) {
    var url = pre.getAttribute("data-events");
    if (!url || !window.EventSource) { return; }
    var source = new EventSource(url);
    var fresh = true;
    source.addEventListener("line", function (event) {
      if (fresh) { pre.textContent = ""; fresh = false; }  // the stream resends the run's lines from the start
      pre.appendChild(document.createTextNode(event.data + "\n"));  // text, never markup
      pre.scrollTop = pre.scrollHeight;
    });
    source.addEventListener("end", function (event) {
      source.close();
      var info = JSON.parse(event.data);
      var badge = document.getElementById("run-outcome");
      if (badge) {
        badge.textContent = info.outcome;
        badge.className = "outcome o-" + info.outcome;
      }
      var live = document.querySelector(".live");
      if (live) { live.textContent = "finished"; }
      pre.setAttribute("data-finished", info.outcome);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var pre = document.getElementById("log");
    if (pre) { follow(pre); }
  });
})();
