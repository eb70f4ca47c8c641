// Shows every <time datetime="..."> in the viewer's own time zone. Without
// JavaScript the server's text (UTC) stays, which is why it is written out.
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, {
    dateStyle: "medium",
    timeStyle: "short",
  });
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
  document.querySelectorAll("time[datetime]").forEach(function (node) {
    var when = new Date(node.getAttribute("datetime"));
    if (isNaN(when.getTime())) {
      return;
    }
    node.title = node.textContent.trim();
    node.textContent = format.format(when);
    node.dataset.zone = zone;
  });
  document.querySelectorAll("[data-time-zone]").forEach(function (node) {
    node.textContent = zone;
  });
})();
