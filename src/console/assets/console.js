// Patchbay console: refreshes a page's live part (#live) every few seconds, in place. The page works
// without it; this only saves a reload. Replaced only when it changed, so a row about to be clicked
// stays put while nothing new arrives.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) return;
  var every = Number(live.getAttribute("data-refresh-ms")) || 2000;
  // Keyboard focus inside the live part survives a refresh: the same control (by id, link or name)
  // in the new content takes it back, so a keyboard user is not thrown to the top of the page.
  function identity(el) {
    return { id: el.id, href: el.getAttribute("href"), name: el.getAttribute("name"), tag: el.tagName };
  }
  function refocus(was) {
    var found = null;
    if (was.id) found = document.getElementById(was.id);
    if (!found) {
      var candidates = live.querySelectorAll(was.tag);
      for (var i = 0; i < candidates.length && !found; i++) {
        var c = candidates[i];
        if ((was.href && c.getAttribute("href") === was.href) || (was.name && c.getAttribute("name") === was.name)) found = c;
      }
    }
    if (found) found.focus({ preventScroll: true });
  }
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
          var focused = live.contains(document.activeElement) ? identity(document.activeElement) : null;
          live.replaceChildren.apply(live, Array.prototype.slice.call(next.childNodes));
          if (focused) refocus(focused);
        }
      })
      .catch(function () {})
      .then(function () { window.setTimeout(tick, every); });
  }
  window.setTimeout(tick, every);
})();
