// Live preview for the auth.md editor: an enhancement only; the Preview button works without it.
(function () {
  "use strict";
  var form = document.getElementById("authmd-form");
  var target = document.getElementById("preview");
  if (!form || !target || !window.fetch) { return; }
  var body = form.querySelector("textarea");
  var timer = null;
  var seq = 0;
  function refresh() {
    var mine = ++seq;
    fetch(form.getAttribute("data-preview-url"), {
      method: "POST", body: new FormData(form), credentials: "same-origin",
      headers: {"X-Requested-With": "fetch"}
    }).then(function (resp) { return resp.text(); }).then(function (html) {
      // the fragment is rendered server-side and sanitized by nh3
      if (mine === seq) { target.innerHTML = html; }
    }).catch(function () { /* keep the last preview; the button still works */ });
  }
  body.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(refresh, 400);
  });
})();
