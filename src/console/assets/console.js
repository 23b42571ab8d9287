// Patchbay console: refreshes a page's live part (#live) every few seconds, in place. The page works
// without it; this only saves a reload. Replaced only when it changed, so a row about to be clicked
// stays put while nothing new arrives.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) return;
  var every = Number(live.getAttribute("data-refresh-ms")) || 2000;
  function tick() {
    fetch(window.location.href, { credentials: "same-origin", headers: { "x-console-refresh": "1" } })
      .then(function (r) {
        if (r.redirected) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (next && next.innerHTML !== live.innerHTML) {
          live.replaceChildren.apply(live, Array.prototype.slice.call(next.childNodes));
        }
      })
      .catch(function () {})
      .then(function () { window.setTimeout(tick, every); });
  }
  window.setTimeout(tick, every);
})();
