// Refreshes the page's live part every 10 s, and when the Refresh button is
// pressed, without reloading the page. Without JavaScript the button is a
// plain form that reloads it.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var form = document.getElementById("refresh");
  var stamp = document.getElementById("updated");
  if (!live || !form || !window.fetch) { return; }
  function refresh() {
    return fetch(location.pathname + "?part=live", { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (text) {
        live.innerHTML = text;
        stamp.textContent = "updated " + new Date().toLocaleTimeString();
      })
      .catch(function (e) { stamp.textContent = "refresh failed: " + e.message; });
  }
  form.addEventListener("submit", function (ev) { ev.preventDefault(); refresh(); });
  setInterval(refresh, 10000);
})();
