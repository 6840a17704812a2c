// AlignSharp annotation page. Talks to the JSON API under /api/ with "Authorization: Bearer TOKEN".
// Model outputs are untrusted: every piece of server text goes into the page through textContent, never as HTML.
"use strict";

const TOKEN_KEY = "alignsharp.annotation.token";
const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  me: null,
  task: null,          // the task shown: {task_id, prompt, completions: [{id, text}], ...}
  editing: false,      // true when changing an earlier answer (sent with "edit": true)
  labels: new Map(),   // completion id -> number shown on its card (1..K, in the order shown)
  ranked: [],          // completion ids, best first
  tied: new Set(),     // ids tied with the card above them in the ranking
  flags: new Map(),    // completion id -> Set of "unsafe" / "broken"
  previousTaskId: null,
  busy: false,
};

// ------------------------------------------------------------------ small helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "attrs") for (const [a, v] of Object.entries(value)) node.setAttribute(a, v);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);  // strings become text nodes
  return node;
}

function show(viewId) {
  for (const id of ["login-view", "task-view", "done-view", "admin-view"]) $(id).hidden = id !== viewId;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const init = { method, headers: { "Authorization": "Bearer " + state.token } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch { /* empty or not JSON */ }
  if (response.status === 401) {
    signOut("Your token was not accepted. Sign in again.");
    throw new ApiError(401, "unauthorized");
  }
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || ("HTTP " + response.status));
  return data;
}

function setProgress(progress) {
  if (!progress) return;
  $("progress").textContent = `Done ${progress.done} / ${progress.total}`;
}

// ------------------------------------------------------------------ sign-in

function readTokenFromLink() {
  // Sign-in links carry the token in the fragment (#token=...), which browsers never send to the server.
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, "", location.pathname);
  return decodeURIComponent(match[1]);
}

function signOut(message) {
  localStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.me = null;
  $("who").textContent = "";
  $("progress").textContent = "";
  $("project-name").textContent = "";
  for (const id of ["sign-out", "admin-link", "annotate-link"]) $(id).hidden = true;
  $("login-error").textContent = message || "";
  show("login-view");
  $("token-input").focus();
}

async function signIn(token) {
  state.token = token;
  let me;
  try {
    me = await api("GET", "/api/me");
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) $("login-error").textContent = "Cannot reach the server: " + e.message;
    return;
  }
  localStorage.setItem(TOKEN_KEY, token);
  state.me = me;
  $("who").textContent = me.annotator;
  $("project-name").textContent = me.project;
  $("sign-out").hidden = false;
  $("admin-link").hidden = !me.admin;
  $("annotate-link").hidden = !me.admin;
  setProgress(me.progress);
  if (location.pathname === "/admin") {
    if (me.admin) await loadAdmin();
    else { history.replaceState(null, "", "/"); await loadNext(); }
  } else {
    await loadNext();
  }
}

// ------------------------------------------------------------------ tasks

async function loadNext() {
  state.editing = false;
  const data = await api("GET", "/api/tasks/next");
  setProgress(data.progress);
  if (data.task_id === null || data.task_id === undefined) {
    state.task = null;
    $("done-previous-button").hidden = state.previousTaskId === null;
    show("done-view");
    return;
  }
  startTask(data);
}

function startTask(task) {
  state.task = task;
  state.labels = new Map(task.completions.map((c, i) => [c.id, i + 1]));
  state.ranked = [];
  state.tied = new Set();
  state.flags = new Map(task.completions.map((c) => [c.id, new Set()]));
  for (const f of task.flags || []) state.flags.get(f.completion_id)?.add(f.flag);
  if (task.ranking) {
    // Editing an earlier answer: start from it.
    for (const item of task.ranking) {
      const group = Array.isArray(item) ? item : [item];
      group.forEach((id, i) => { state.ranked.push(id); if (i > 0) state.tied.add(id); });
    }
  }
  $("prompt").textContent = task.prompt;
  $("task-label").textContent = state.editing ? `#${task.task_id} (changing your answer)` : `#${task.task_id}`;
  $("task-status").textContent = "";
  $("previous-button").hidden = state.editing || state.previousTaskId === null;
  show("task-view");
  render();
}

function unrankedIds() {
  return state.task.completions.map((c) => c.id).filter((id) => !state.ranked.includes(id));
}

function render() {
  const ranked = $("ranked"), unranked = $("unranked");
  ranked.replaceChildren(...state.ranked.map((id) => card(id, true)));
  unranked.replaceChildren(...unrankedIds().map((id) => card(id, false)));
  $("unranked-caption").hidden = unranked.children.length === 0;
  $("submit-button").disabled = state.busy || unrankedIds().length > 0;
  $("skip-button").disabled = state.busy;
  numberRanks();
}

function numberRanks() {
  let rank = 0;
  state.ranked.forEach((id, i) => {
    const tied = i > 0 && state.tied.has(id);
    if (!tied) rank++;
    const node = document.querySelector(`#ranked .card[data-id="${id}"]`);
    if (!node) return;
    node.classList.toggle("tied", tied);
    node.querySelector(".rank").textContent = "#" + rank + (tied ? " =" : "");
    const tieButton = node.querySelector("button.tie");
    tieButton.setAttribute("aria-pressed", String(tied));
    tieButton.disabled = i === 0;
  });
}

function card(id, isRanked) {
  const completion = state.task.completions.find((c) => c.id === id);
  const label = state.labels.get(id);
  const flags = state.flags.get(id);
  const head = el("div", { className: "card-head", title: "Drag to reorder" },
    el("span", { className: "handle", attrs: { "aria-hidden": "true" } }, "☰"),
    el("span", { className: "label", title: `Key ${label}` }, String(label)));
  if (isRanked) {
    head.append(el("span", { className: "rank" }));
    head.append(el("button", { type: "button", className: "small tie", title: "Tie with the completion above (T)", onclick: () => toggleTie(id) }, "Tie"));
    head.append(el("button", { type: "button", className: "small", title: "Move up", attrs: { "aria-label": `Move ${label} up` }, onclick: () => move(id, -1) }, "▲"));
    head.append(el("button", { type: "button", className: "small", title: "Move down", attrs: { "aria-label": `Move ${label} down` }, onclick: () => move(id, +1) }, "▼"));
    head.append(el("button", { type: "button", className: "small", title: "Take back out of the ranking", onclick: () => unrank(id) }, "Remove"));
  } else {
    head.append(el("button", { type: "button", className: "small place", title: `Place next in the ranking (key ${label})`, onclick: () => place(id) }, "Place"));
  }
  head.append(el("span", { className: "spacer" }));
  for (const kind of ["unsafe", "broken"]) {
    head.append(el("button", {
      type: "button", className: "small flag", dataset: { flag: kind },
      attrs: { "aria-pressed": String(flags.has(kind)) },
      title: `Flag this completion as ${kind}`,
      onclick: () => toggleFlag(id, kind),
    }, kind === "unsafe" ? "Unsafe" : "Broken"));
  }
  const node = el("li", { className: "card", dataset: { id: String(id), label: String(label) } },
    head, el("div", { className: "text" }, completion.text));
  node.classList.toggle("flagged", flags.size > 0);
  head.addEventListener("pointerdown", (e) => beginDrag(e, node));
  return node;
}

// ------------------------------------------------------------------ ranking actions

function place(id) {
  state.ranked = state.ranked.filter((x) => x !== id);
  state.tied.delete(id);
  state.ranked.push(id);
  const rest = unrankedIds();
  if (rest.length === 1) state.ranked.push(rest[0]);  // the last one left is the worst: place it too
  render();
}

function unrank(id) {
  state.ranked = state.ranked.filter((x) => x !== id);
  state.tied.delete(id);
  render();
}

function move(id, delta) {
  const i = state.ranked.indexOf(id), j = i + delta;
  if (i < 0 || j < 0 || j >= state.ranked.length) return;
  [state.ranked[i], state.ranked[j]] = [state.ranked[j], state.ranked[i]];
  render();
}

function toggleTie(id) {
  if (state.ranked.indexOf(id) <= 0) return;
  if (state.tied.has(id)) state.tied.delete(id); else state.tied.add(id);
  render();
}

function toggleFlag(id, kind) {
  const flags = state.flags.get(id);
  if (flags.has(kind)) flags.delete(kind); else flags.add(kind);
  render();
}

function rankingGroups() {
  const groups = [];
  state.ranked.forEach((id, i) => {
    if (i > 0 && state.tied.has(id)) groups[groups.length - 1].push(id);
    else groups.push([id]);
  });
  return groups.map((g) => (g.length === 1 ? g[0] : g));
}

function flagList() {
  const list = [];
  for (const [id, kinds] of state.flags) for (const flag of kinds) list.push({ completion_id: id, flag });
  return list;
}

async function send(skip) {
  if (state.busy || !state.task) return;
  if (!skip && unrankedIds().length > 0) return;
  state.busy = true;
  render();
  const body = { task_id: state.task.task_id, flags: flagList(), skip, edit: state.editing };
  if (!skip) body.ranking = rankingGroups();
  try {
    const result = await api("POST", "/api/rankings", body);
    setProgress(result.progress);
    state.previousTaskId = state.task.task_id;
    state.busy = false;
    await loadNext();
  } catch (e) {
    state.busy = false;
    render();
    if (e instanceof ApiError && e.status !== 401) $("task-status").textContent = "Not saved: " + e.message;
    else if (!(e instanceof ApiError)) $("task-status").textContent = "Not saved (network problem), try again: " + e.message;
  }
}

async function editPrevious() {
  if (state.previousTaskId === null) return;
  const task = await api("GET", "/api/tasks/" + state.previousTaskId);
  state.editing = true;
  startTask(task);
}

// ------------------------------------------------------------------ drag and drop (pointer events: mouse, pen and touch)

let drag = null;

function beginDrag(e, node) {
  if (e.button !== 0 || e.target.closest("button")) return;
  drag = { node, startY: e.clientY, active: false };
  document.addEventListener("pointermove", dragMove);
  document.addEventListener("pointerup", endDrag);
  document.addEventListener("pointercancel", cancelDrag);
  e.preventDefault();
}

function dragMove(e) {
  if (!drag) return;
  if (!drag.active) {
    if (Math.abs(e.clientY - drag.startY) < 5) return;
    drag.active = true;
    drag.node.classList.add("dragging");
  }
  e.preventDefault();
  const lists = [$("ranked"), $("unranked")].filter((l) => !l.hidden && l.offsetParent !== null);
  let target = lists[0], best = Infinity;
  for (const list of lists) {
    const r = list.getBoundingClientRect();
    const distance = e.clientY < r.top ? r.top - e.clientY : e.clientY > r.bottom ? e.clientY - r.bottom : 0;
    if (distance < best) { best = distance; target = list; }
  }
  let before = null;
  for (const child of target.children) {
    if (child === drag.node) continue;
    const r = child.getBoundingClientRect();
    if (e.clientY < r.top + r.height / 2) { before = child; break; }
  }
  if (drag.node.parentElement !== target || drag.node.nextElementSibling !== before) target.insertBefore(drag.node, before);
}

function endDrag() {
  const finished = drag;
  stopDrag();
  if (!finished || !finished.active) return;
  // The ranked list's order on screen is now the ranking.
  const order = [...$("ranked").children].map((n) => Number(n.dataset.id));
  for (const id of state.ranked) if (!order.includes(id)) state.tied.delete(id);
  state.ranked = order;
  render();
}

function cancelDrag() {
  stopDrag();
  render();
}

function stopDrag() {
  if (drag) drag.node.classList.remove("dragging");
  drag = null;
  document.removeEventListener("pointermove", dragMove);
  document.removeEventListener("pointerup", endDrag);
  document.removeEventListener("pointercancel", cancelDrag);
}

// ------------------------------------------------------------------ keyboard

function onKey(e) {
  if ($("task-view").hidden || !state.task || e.ctrlKey || e.metaKey || e.altKey) return;
  const target = e.target;
  if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement) return;
  if (/^[1-9]$/.test(e.key)) {
    const n = Number(e.key);
    const id = [...state.labels].find(([, label]) => label === n)?.[0];
    if (id !== undefined) { place(id); e.preventDefault(); }
  } else if (e.key === "t" || e.key === "T" || e.key === "=") {
    const last = state.ranked[state.ranked.length - 1];
    if (last !== undefined) { toggleTie(last); e.preventDefault(); }
  } else if (e.key === "Backspace") {
    const last = state.ranked[state.ranked.length - 1];
    if (last !== undefined) { unrank(last); e.preventDefault(); }
  } else if (e.key === "Enter" && !(target instanceof HTMLButtonElement)) {
    if (unrankedIds().length === 0) { send(false); e.preventDefault(); }
  }
}

// ------------------------------------------------------------------ admin view

function percent(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%"; }
function fixed(x) { return x === null || x === undefined ? "–" : x.toFixed(3); }

async function loadAdmin() {
  show("admin-view");
  $("admin-status").textContent = "";
  const [progress, agreement] = await Promise.all([api("GET", "/api/admin/progress"), api("GET", "/api/admin/agreement")]);
  $("admin-project").textContent = progress.project;
  $("admin-summary").textContent =
    `${progress.ranked} of ${progress.target} rankings collected (${progress.prompts} prompts × overlap ${progress.overlap}); ` +
    `${progress.prompts_complete} prompts have reached the overlap.`;
  $("annotator-table").tBodies[0].replaceChildren(...progress.annotators.map((a) => el("tr", {},
    el("td", {}, a.name + (a.admin ? " (admin)" : "")),
    el("td", {}, String(a.submitted)), el("td", {}, String(a.skipped)),
    el("td", {}, String(a.pending)), el("td", {}, String(a.flagged)))));
  const o = agreement.overall;
  $("agreement-summary").textContent = o.tasks === 0
    ? "No task has been ranked by two annotators yet."
    : `Over ${o.tasks} comparisons (two annotators on one shared prompt): pairwise agreement ${percent(o.pairwise_agreement)}, mean Kendall's τ-b ${fixed(o.kendall_tau_b)}.`;
  $("agreement-table").tBodies[0].replaceChildren(...agreement.pairs.map((p) => el("tr", {},
    el("td", {}, p.annotators.map((a) => a.name).join(" – ")),
    el("td", {}, String(p.tasks)), el("td", {}, percent(p.pairwise_agreement)), el("td", {}, fixed(p.kendall_tau_b)))));
}

async function download(format) {
  const response = await fetch("/api/admin/export?format=" + format, { headers: { "Authorization": "Bearer " + state.token } });
  if (!response.ok) { $("admin-status").textContent = "Export failed: HTTP " + response.status; return; }
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: `${state.me.project}.${format}.jsonl` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ------------------------------------------------------------------ wiring

function guarded(action) {
  return () => action().catch((e) => {
    if (!(e instanceof ApiError && e.status === 401)) {
      const status = $("task-view").hidden ? $("admin-status") : $("task-status");
      status.textContent = "Something went wrong: " + e.message;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    $("login-error").textContent = "";
    signIn($("token-input").value.trim());
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("submit-button").addEventListener("click", () => send(false));
  $("skip-button").addEventListener("click", () => send(true));
  $("reset-button").addEventListener("click", () => { state.ranked = []; state.tied.clear(); render(); });
  $("previous-button").addEventListener("click", guarded(editPrevious));
  $("done-previous-button").addEventListener("click", guarded(editPrevious));
  $("check-again").addEventListener("click", guarded(loadNext));
  $("admin-refresh").addEventListener("click", guarded(loadAdmin));
  $("export-rankings").addEventListener("click", guarded(() => download("rankings")));
  $("export-pairs").addEventListener("click", guarded(() => download("pairs")));
  $("admin-link").addEventListener("click", (e) => { e.preventDefault(); history.pushState(null, "", "/admin"); guarded(loadAdmin)(); });
  $("annotate-link").addEventListener("click", (e) => { e.preventDefault(); history.pushState(null, "", "/"); guarded(loadNext)(); });
  document.addEventListener("keydown", onKey);

  const token = readTokenFromLink() || localStorage.getItem(TOKEN_KEY);
  if (token) signIn(token); else signOut("");
});
