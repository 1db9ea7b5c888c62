// outguard's dashboard: the live incidents feed. No markup is ever built from data: every
// value goes in with textContent (a cmdline or a DNS name can hold HTML). Served as a file:
// the page's Content-Security-Policy runs no inline script.
"use strict";

function cell(text, href) {
  const td = document.createElement("td");
  if (href) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
  } else {
    td.textContent = text;
  }
  return td;
}

function incidentRow(inc) {
  const tr = document.createElement("tr");
  tr.dataset.id = inc.id;
  tr.className = "sev-" + inc.severity + " fresh";
  const when = cell(inc.last_seen.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", ""));
  when.className = "when";
  tr.appendChild(when);
  tr.appendChild(cell(inc.severity));
  tr.appendChild(cell(inc.process.exe, "/incidents/" + encodeURIComponent(inc.id)));
  const dst = cell(inc.destination);
  dst.className = "dst";
  tr.appendChild(dst);
  tr.appendChild(cell(inc.rule));
  tr.appendChild(cell(inc.title));
  const count = cell(String(inc.count));
  count.className = "num";
  tr.appendChild(count);
  return tr;
}

function startLive() {
  const live = document.getElementById("live");
  const rows = document.getElementById("incident-rows");
  if (!live || !rows || !window.EventSource) {
    return;
  }
  const source = new EventSource(live.dataset.stream);
  source.addEventListener("incident", (event) => {
    const inc = JSON.parse(event.data);
    for (const old of rows.querySelectorAll("tr")) {
      if (old.dataset.id === inc.id) {
        old.remove();
      }
    }
    rows.insertBefore(incidentRow(inc), rows.firstChild);
  });
  source.addEventListener("gap", () => {
    live.textContent = "live: more incidents arrived than the page shows: reload for all of them";
  });
  source.addEventListener("open", () => { live.classList.add("on"); });
  source.addEventListener("error", () => { live.classList.remove("on"); });
}

document.addEventListener("DOMContentLoaded", startLive);
