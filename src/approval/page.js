// The approvals page: lists pending tool calls and decides them through the admin API.
// The admin token is asked once, kept in this tab's sessionStorage, and sent as a bearer token;
// it never goes into a URL. Every value from the API is set as text (never as HTML).
"use strict";

const KEY = "tokenwarden-admin-token";
let scrolled = false; // the row the webhook's link names is scrolled to once
const $ = (sel) => document.querySelector(sel);

function headers() {
  const h = { "content-type": "application/json" };
  const t = sessionStorage.getItem(KEY);
  if (t) h.authorization = "Bearer " + t;
  return h;
}

function status(text, error) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("error", !!error);
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "—" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function args(row, value) {
  const td = document.createElement("td");
  const pre = document.createElement("pre");
  pre.textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  td.appendChild(pre);
  row.appendChild(td);
}

function seconds(s) {
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function needToken(message) {
  $("#login").hidden = false;
  status(message, true);
}

async function decide(item, decision, button) {
  button.disabled = true;
  const r = await fetch("/v1/approvals/" + encodeURIComponent(item.id), {
    method: "POST",
    headers: headers(),
    body: JSON.stringify({ decision: decision, digest: item.digest }),
  });
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) return needToken("The admin token was not accepted.");
  if (!r.ok) status(body.error || "HTTP " + r.status, true);
  else status(item.tool + ": " + body.decision);
  await refresh();
}

function render(data) {
  const pending = $("#pending tbody");
  pending.replaceChildren();
  for (const item of data.approvals) {
    const row = document.createElement("tr");
    row.id = item.id;
    // The webhook's link ends in #id: that row stands out (`:target` does not match rows
    // rendered after the navigation).
    if (location.hash === "#" + item.id) row.classList.add("linked");
    row.dataset.id = item.id;
    row.dataset.tool = item.tool;
    cell(row, item.agent);
    cell(row, item.session);
    cell(row, item.server);
    cell(row, item.tool);
    args(row, item.arguments);
    cell(row, seconds(item.age_seconds));
    cell(row, seconds(item.expires_in_seconds));
    const td = document.createElement("td");
    for (const [label, decision] of [["Approve", "approve"], ["Deny", "deny"]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = decision;
      b.textContent = label;
      b.addEventListener("click", () => decide(item, decision, b));
      td.appendChild(b);
    }
    row.appendChild(td);
    pending.appendChild(row);
  }
  $("#none-pending").hidden = data.approvals.length > 0;
  if (!scrolled && location.hash) {
    const linked = document.getElementById(location.hash.slice(1));
    if (linked) {
      linked.scrollIntoView();
      scrolled = true;
    }
  }
  const decided = $("#decided tbody");
  decided.replaceChildren();
  for (const item of data.decided) {
    const row = document.createElement("tr");
    row.dataset.id = item.id;
    row.dataset.decision = item.decision;
    cell(row, item.agent);
    cell(row, item.session);
    cell(row, item.server);
    cell(row, item.tool);
    args(row, item.arguments);
    cell(row, item.decision, item.decision);
    cell(row, item.decided);
    cell(row, seconds(item.waited_seconds));
    cell(row, item.used ? "yes" : "no");
    decided.appendChild(row);
  }
}

async function refresh() {
  let r;
  try {
    r = await fetch("/v1/approvals", { headers: headers(), cache: "no-store" });
  } catch (e) {
    return status("tokenwarden is unreachable: " + e, true);
  }
  if (r.status === 401) return needToken("Enter the admin token to see and decide approvals.");
  if (!r.ok) return status("HTTP " + r.status, true);
  $("#login").hidden = true;
  const data = await r.json();
  render(data);
  if (!$("#status").classList.contains("error") || data.approvals.length) {
    status(data.approvals.length + " pending · updated " + new Date().toLocaleTimeString());
  }
}

$("#login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("#token").value);
  $("#token").value = "";
  status("Loading…");
  refresh();
});

refresh();
setInterval(refresh, 2000);
