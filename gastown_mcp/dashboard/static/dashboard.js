// The dashboard's only script: redraw panels when the live feed says the town changed (nothing is polled
// while the town is quiet; an agent's page alone re-reads its log tail every few seconds), keep the last data
// marked stale when the town cannot be read or the dashboard reached, and append live events to the feed.
(function () {
  "use strict";
  const refreshMs = Math.max(1, parseFloat(document.body.dataset.refresh || "10")) * 1000;
  const banner = (el, text) => {
    let b = el.querySelector(":scope > .stale-client");
    if (!b) {
      b = document.createElement("div");
      b.className = "stale-banner stale-client";
      b.setAttribute("role", "alert");
      el.prepend(b);
    }
    b.textContent = text;
    el.classList.add("stale");
  };
  async function load(el) {
    if (el.contains(document.activeElement) && document.activeElement !== document.body) { // typing: later
      el.dataset.pending = "1";
      return;
    }
    delete el.dataset.pending;
    try {
      const r = await fetch(el.dataset.panel, { credentials: "same-origin", cache: "no-store" });
      if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); return; }
      if (!r.ok) throw new Error("HTTP " + r.status);
      el.innerHTML = await r.text();
      el.classList.toggle("stale", el.querySelector(".stale-banner") !== null);
    } catch (e) {
      banner(el, "stale: the dashboard could not be reached at " + new Date().toLocaleTimeString() +
        " (" + e.message + "); showing the last data");
    }
  }
  const panels = () => document.querySelectorAll("[data-panel]");
  const refreshAll = () => panels().forEach((el) => { if (!el.closest("#panel-feed")) load(el); });
  let queued = null;
  const soon = () => { if (!queued) queued = setTimeout(() => { queued = null; refreshAll(); }, 200); };
  document.addEventListener("focusout", () => setTimeout(() => {
    document.querySelectorAll("[data-pending]").forEach((el) => { if (!el.contains(document.activeElement)) load(el); });
  }, 0));
  const polled = document.querySelectorAll("[data-every]"); // data from outside the town's store (a log tail)
  if (polled.length) setInterval(() => polled.forEach(load), refreshMs);

  // Forms come back to the page they were sent from.
  document.addEventListener("submit", (ev) => {
    const next = ev.target.querySelector("input[name=next]");
    if (next && new URL(ev.target.action).pathname.startsWith("/act/")) next.value = location.pathname + location.search;
  });

  function line(e) {
    const li = document.createElement("li");
    li.dataset.id = e.id;
    const at = document.createElement("span");
    at.className = "muted";
    at.textContent = (e.at || "").slice(11, 19);
    const verb = document.createElement("b");
    verb.textContent = e.verb;
    li.append(at, " " + e.actor + " ", verb);
    if (e.bead_id) { const a = document.createElement("a"); a.href = "/bead/" + e.bead_id; a.textContent = e.bead_id; li.append(" ", a); }
    if (e.agent) { const a = document.createElement("a"); a.href = "/agent/" + e.agent; a.textContent = e.agent; li.append(" ", a); }
    return li;
  }
  if (window.EventSource) {
    const list = () => document.getElementById("feed-list");
    let after = list() ? list().dataset.last : document.body.dataset.last || "";
    let lost = false;
    const connect = () => {
      const es = new EventSource("/live" + (after ? "?after=" + after : ""));
      es.addEventListener("town", (ev) => {
        const e = JSON.parse(ev.data);
        after = String(e.id);
        const feed = list();
        if (feed && !feed.querySelector('[data-id="' + e.id + '"]')) {
          feed.prepend(line(e));
          while (feed.children.length > 200) feed.lastElementChild.remove();
        }
        soon();
      });
      es.addEventListener("stale", (ev) => { // the town cannot be read: each panel shows its last data, marked
        const feed = document.getElementById("panel-feed");
        if (feed) banner(feed.querySelector(".panel-body"), "stale: " + JSON.parse(ev.data));
        panels().forEach((el) => { if (!el.closest("#panel-feed") && !el.querySelector(".stale-banner")) load(el); });
      });
      es.addEventListener("fresh", () => refreshAll());
      es.addEventListener("touch", soon); // a write without an event (model usage, a heartbeat)
      es.onopen = () => {
        document.body.classList.remove("offline");
        if (lost) { lost = false; refreshAll(); }
      };
      es.onerror = () => {
        document.body.classList.add("offline");
        if (!lost) {
          lost = true;
          panels().forEach((el) => banner(el, "stale: the dashboard could not be reached at " +
            new Date().toLocaleTimeString() + " (the live feed dropped); showing the last data"));
        }
        if (es.readyState === EventSource.CLOSED) { // refused: a panel's load says why (a login sends there)
          refreshAll();
          setTimeout(connect, refreshMs);
        }
      };
    };
    connect();
  }
})();
