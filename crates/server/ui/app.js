// The vgrid dashboard: one page, hash routes, the JSON API of the
// controller behind a session cookie. Text from the server only ever goes
// into the page as text (textContent), never as HTML.
"use strict";

const POLL_MS = 2000;
const OUTPUT_TAIL_BYTES = 64 * 1024;
const ENDED = new Set(["done", "failed", "cancelled"]);

let me = null; // {name, role} once logged in
let page = null; // {name, refresh()} of the page on screen
let timer = null;

// ---- DOM helpers ---------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function show(el, on) {
  el.hidden = !on;
}

function stateChip(state) {
  return h("span", { class: "state " + state }, state.replace("-", " "));
}

function when(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

function mib(n) {
  return n >= 1024 ? (n / 1024).toFixed(n % 1024 ? 1 : 0) + " GiB" : n + " MiB";
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function table(head, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h(
    "div",
    { class: "table" },
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, head.map(([text, cls]) => h("th", { class: cls }, text)))),
      h("tbody", {}, rows),
    ),
  );
}

// ---- the API -------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : "HTTP " + status);
    this.status = status;
    this.code = body && body.error;
  }
}

// Every call goes with the session cookie; calls that change something
// also carry the CSRF header the server demands of cookie requests.
async function api(method, path, body, raw) {
  const headers = {};
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET") headers["X-Vgrid-Csrf"] = "1";
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (!resp.ok) {
    let err = null;
    try {
      err = await resp.json();
    } catch (_) {
      // Not JSON: the status says enough.
    }
    if (resp.status === 401 && !path.startsWith("/ui/")) loggedOut(err && err.message);
    throw new ApiError(resp.status, err);
  }
  if (raw) return resp;
  if (resp.status === 204) return null;
  return resp.json();
}

function flash(message) {
  const el = $("flash");
  el.textContent = message || "";
  show(el, !!message);
}

// ---- session -------------------------------------------------------------

function loggedOut(message) {
  me = null;
  page = null;
  stopPolling();
  delete document.body.dataset.page;
  delete document.body.dataset.refreshed;
  show($("bar"), false);
  show($("app"), false);
  show($("login-view"), true);
  const err = $("login-error");
  err.textContent = message || "";
  show(err, !!message);
  $("token").focus();
}

function loggedIn(who) {
  me = who;
  $("who").textContent = who.name + (who.role === "admin" ? " (admin)" : "");
  show($("nav-users"), who.role === "admin");
  show($("login-view"), false);
  show($("bar"), true);
  show($("app"), true);
  route();
}

async function login(ev) {
  ev.preventDefault();
  const err = $("login-error");
  show(err, false);
  try {
    const who = await api("POST", "/ui/login", { token: $("token").value });
    $("token").value = "";
    loggedIn(who);
  } catch (e) {
    err.textContent = e.message;
    show(err, true);
  }
}

async function logout() {
  try {
    await api("POST", "/ui/logout");
  } finally {
    location.hash = "";
    loggedOut("");
  }
}

// ---- routing and polling -------------------------------------------------

const PAGES = { queue: queuePage, nodes: nodesPage, images: imagesPage, users: usersPage, job: jobPage };

function route() {
  if (!me) return;
  const [name, arg] = (location.hash.replace(/^#\/?/, "") || "queue").split("/");
  const make = name === "jobs" ? PAGES.job : PAGES[name] || PAGES.queue;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("current", a.dataset.page === name || (name === "jobs" && a.dataset.page === "queue"));
  }
  flash("");
  const root = $("page");
  root.replaceChildren();
  page = make(root, arg);
  document.body.dataset.page = page.name;
  stopPolling();
  tick();
}

async function tick() {
  const current = page;
  if (!current) return;
  // One refresh of a page at a time (two would read the output twice); a
  // refresh asked for meanwhile runs right after.
  if (current.busy) {
    current.again = true;
    return;
  }
  current.busy = true;
  current.again = false;
  try {
    await current.refresh();
    if (current === page) {
      $("updated").textContent = new Date().toLocaleTimeString();
      document.body.dataset.refreshed = String(Date.now());
    }
  } catch (e) {
    if (current === page && me) flash(e.message);
  } finally {
    current.busy = false;
  }
  if (current !== page || !me) return;
  if (current.again) {
    stopPolling();
    tick();
  } else if (!timer) {
    timer = setTimeout(poll, POLL_MS);
  }
}

function stopPolling() {
  if (timer) clearTimeout(timer);
  timer = null;
}

function poll() {
  timer = null;
  tick();
}

// Runs a job action from a button, then refreshes at once.
async function control(id, verb) {
  flash("");
  try {
    await api("POST", `/v1/jobs/${id}/${verb}`);
  } catch (e) {
    flash(`${verb} job ${id}: ${e.message}`);
    return;
  }
  stopPolling();
  tick();
}

function actionButtons(job) {
  if (ENDED.has(job.state)) return [];
  const buttons = [h("button", { class: "danger", "data-action": "cancel", onclick: () => control(job.id, "cancel") }, "Cancel")];
  return buttons;
}

// ---- queue ---------------------------------------------------------------

const EXAMPLE_JOB = `image = "tiny"
cpus = 1
memory_mb = 256
command = ["/bin/sh", "-c", "echo hello; sleep 5"]
`;

function queuePage(root) {
  const isAdmin = me.role === "admin";
  const source = h("textarea", { id: "job-source", spellcheck: "false", "aria-label": "Job file" }, EXAMPLE_JOB);
  const fileName = h("input", { id: "job-name", value: "job.toml", "aria-label": "File name" });
  const hold = h("input", { id: "job-hold", type: "checkbox" });
  const result = h("p", { id: "submit-result", role: "status", hidden: true });
  const everyone = h("input", { id: "all-users", type: "checkbox", checked: isAdmin });
  const ended = h("input", { id: "show-ended", type: "checkbox", checked: true });
  const list = h("div", { id: "jobs" });

  async function submit(ev) {
    ev.preventDefault();
    show(result, false);
    try {
      const r = await api("POST", "/v1/jobs", { file_name: fileName.value || "job.toml", source: source.value, hold: hold.checked });
      result.className = "ok";
      result.replaceChildren("Submitted job ", h("a", { href: `#/jobs/${r.id}` }, String(r.id)), ".");
    } catch (e) {
      result.className = "error";
      result.textContent = e.message;
    }
    show(result, true);
    stopPolling();
    tick();
  }

  root.append(
    h("h1", {}, "Queue"),
    h(
      "details",
      { class: "card", open: true },
      h("summary", {}, "Submit a job"),
      h(
        "form",
        { id: "submit-form", onsubmit: submit },
        h("label", { for: "job-source" }, "Job file (TOML, as for ", h("code", {}, "vgrid submit"), ")"),
        source,
        h("div", { class: "row" }, h("label", { for: "job-name" }, "File name"), fileName, h("label", { class: "check" }, hold, " hold")),
        h("button", { type: "submit" }, "Submit"),
        result,
      ),
    ),
    h(
      "div",
      { class: "row" },
      isAdmin ? h("label", { class: "check" }, everyone, " every user's jobs") : null,
      h("label", { class: "check" }, ended, " ended jobs"),
    ),
    list,
  );
  everyone.addEventListener("change", tick);
  ended.addEventListener("change", tick);

  return {
    name: "queue",
    async refresh() {
      const jobs = await api("GET", "/v1/jobs" + (isAdmin && everyone.checked ? "?all=true" : ""));
      jobs.sort((a, b) => b.id - a.id);
      const shown = jobs.filter((j) => ended.checked || !ENDED.has(j.state));
      const rows = shown.map((j) =>
        h(
          "tr",
          { "data-job": j.id },
          h("td", {}, h("a", { href: `#/jobs/${j.id}` }, String(j.id))),
          h("td", {}, j.name),
          h("td", { class: "wide" }, j.owner),
          h("td", {}, stateChip(j.state)),
          h("td", { class: "wide reason" }, j.reason),
          h("td", { class: "wide" }, j.node || ""),
          h("td", { class: "num wide" }, `${j.vms}×${j.cpus}`),
          h("td", { class: "num wide" }, mib(j.memory_mb)),
          h("td", { class: "wide" }, when(j.submitted_unix_ms)),
          h("td", {}, actionButtons(j)),
        ),
      );
      list.replaceChildren(
        table(
          [["id"], ["name"], ["owner", "wide"], ["state"], ["why", "wide"], ["node", "wide"], ["VMs×CPUs", "num wide"], ["memory", "num wide"], ["submitted", "wide"], [""]],
          rows,
          "No jobs.",
        ),
      );
    },
  };
}

// ---- job detail ----------------------------------------------------------

// Fields that say why a job waits and when it may start, under whatever
// name the controller gives them; shown when present.
const WAIT_FIELD = /why|wait|expected_start|blocker|start_estimate/i;

function describe(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return h("ul", {}, value.map((v) => h("li", {}, describe(v))));
  if (typeof value === "object") {
    return h("dl", { class: "kv" }, Object.entries(value).map(([k, v]) => [h("dt", {}, k.replaceAll("_", " ")), h("dd", {}, describeField(k, v))]));
  }
  return String(value);
}

function describeField(key, value) {
  if (/unix_ms$/.test(key) && typeof value === "number") return when(value);
  return describe(value);
}

function jobPage(root, arg) {
  const id = Number(arg);
  const head = h("h1", {}, `Job ${arg}`);
  const summary = h("div", { class: "card", id: "job-summary" });
  const waits = h("div", { class: "card", id: "job-waits", hidden: true });
  const history = h("ol", { class: "timeline", id: "job-history" });
  const checkpoints = h("div", { id: "job-checkpoints" });
  const output = h("pre", { class: "output", id: "job-output" });
  let offset = 0;
  let text = "";
  const decoder = new TextDecoder();

  root.append(
    h("p", {}, h("a", { href: "#/queue" }, "← Queue")),
    head,
    summary,
    waits,
    h("div", { class: "card" }, h("h2", {}, "History"), history),
    h("div", { class: "card" }, h("h2", {}, "Checkpoints"), checkpoints),
    h("div", { class: "card" }, h("h2", {}, "Output"), output),
  );

  async function readOutput() {
    // Reads what is new since the last poll; keeps the tail.
    for (let i = 0; i < 8; i++) {
      const resp = await api("GET", `/v1/jobs/${id}/output?offset=${offset}&max_bytes=${OUTPUT_TAIL_BYTES}`, undefined, true);
      const chunk = new Uint8Array(await resp.arrayBuffer());
      const next = Number(resp.headers.get("x-vgrid-next-offset") || offset + chunk.length);
      if (chunk.length) text = (text + decoder.decode(chunk, { stream: true })).slice(-OUTPUT_TAIL_BYTES);
      if (next <= offset || chunk.length < OUTPUT_TAIL_BYTES) {
        offset = next;
        return;
      }
      offset = next;
    }
  }

  return {
    name: "job",
    async refresh() {
      if (!Number.isInteger(id) || id <= 0) throw new Error(`"${arg}" is not a job id`);
      const d = await api("GET", `/v1/jobs/${id}`);
      const j = d.job;
      head.replaceChildren(`Job ${j.id} `, h("span", { class: "muted" }, j.name), " ", stateChip(j.state));
      summary.replaceChildren(
        h(
          "dl",
          { class: "kv" },
          [
            ["owner", j.owner],
            ["state", j.state],
            ["why", j.reason],
            ["node", j.node || "—"],
            ["class", j.class],
            ["image", j.image],
            ["shape", `${j.vms} VM(s) × ${j.cpus} CPU(s), ${mib(j.memory_mb)}`],
            ["exit code", j.exit_code === null || j.exit_code === undefined ? "—" : String(j.exit_code)],
            ["submitted", when(j.submitted_unix_ms)],
            ["updated", when(j.updated_unix_ms)],
            ["outputs", d.outputs ? "collected (vgrid output " + j.id + ")" : "—"],
          ].map(([k, v]) => [h("dt", {}, k), h("dd", { "data-field": k }, v)]),
        ),
        h("div", { class: "row" }, actionButtons(j)),
      );
      const extra = Object.entries({ ...j, ...d }).filter(([k]) => WAIT_FIELD.test(k) && k !== "reason");
      show(waits, extra.length > 0 && !ENDED.has(j.state));
      waits.replaceChildren(h("h2", {}, "Why it waits"), h("p", {}, j.reason), extra.map(([k, v]) => h("div", {}, h("h3", {}, k.replaceAll("_", " ")), describeField(k, v))));
      history.replaceChildren(
        ...d.history.map((e) =>
          h("li", {}, h("span", { class: "muted" }, when(e.unix_ms)), " ", stateChip(e.state), e.node ? ` on ${e.node}` : "", e.reason ? h("div", { class: "muted" }, e.reason) : null),
        ),
      );
      checkpoints.replaceChildren(
        d.checkpoints.length
          ? h(
              "ol",
              { class: "timeline" },
              d.checkpoints.map((c) =>
                h(
                  "li",
                  {},
                  h("span", { class: "muted" }, when(c.unix_ms)),
                  ` #${c.seq} on ${c.node}, after ${(c.work_ms / 1000).toFixed(1)} s of work`,
                  c.restorable === false ? " (not restorable)" : "",
                ),
              ),
            )
          : h("p", { class: "muted" }, "None taken."),
      );
      await readOutput();
      output.textContent = text || "(no output yet)";
    },
  };
}

// ---- nodes ---------------------------------------------------------------

function usage(used, total, label) {
  const pct = total ? Math.round((100 * used) / total) : 0;
  return h("div", {}, h("div", { class: "bar", title: `${pct}%` }, h("span", { style: null, "data-pct": pct })), label);
}

function nodesPage(root) {
  const list = h("div", { id: "nodes" });
  root.append(h("h1", {}, "Nodes"), list);
  return {
    name: "nodes",
    async refresh() {
      const [nodes, jobs] = await Promise.all([
        api("GET", "/v1/nodes"),
        api("GET", "/v1/jobs" + (me.role === "admin" ? "?all=true" : "")),
      ]);
      const byId = new Map(jobs.map((j) => [j.id, j]));
      const rows = nodes.map((n) => {
        const cpuUsed = n.cpus - n.free_cpus;
        const memUsed = n.memory_mb - n.free_memory_mb;
        // Jobs the user may not see are counted, not named.
        const seen = n.jobs.filter((id) => byId.has(id));
        const hidden = n.jobs.length - seen.length;
        return h(
          "tr",
          { "data-node": n.name },
          h("td", {}, n.name),
          h("td", {}, stateChip(n.state)),
          h("td", {}, usage(cpuUsed, n.cpus, `${cpuUsed} / ${n.cpus} CPUs`)),
          h("td", {}, usage(memUsed, n.memory_mb, `${mib(memUsed)} / ${mib(n.memory_mb)}`)),
          h(
            "td",
            {},
            seen.map((id) => {
              const j = byId.get(id);
              return h("div", {}, h("a", { href: `#/jobs/${id}` }, `job ${id}`), ` ${j.vms} VM(s) `, stateChip(j.state));
            }),
            hidden ? h("div", { class: "muted" }, `${hidden} other job(s)`) : null,
            n.jobs.length ? null : h("span", { class: "muted" }, "idle"),
          ),
          h("td", { class: "wide" }, h("div", { class: "chips" }, n.images.map((i) => h("span", { class: "chip" }, i)))),
          h("td", { class: "wide" }, h("div", { class: "chips" }, Object.entries(n.labels).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`)))),
          h("td", { class: "wide" }, when(n.last_seen_unix_ms)),
        );
      });
      list.replaceChildren(
        table([["node"], ["state"], ["CPUs"], ["memory"], ["VMs"], ["images", "wide"], ["labels", "wide"], ["last seen", "wide"]], rows, "No node has registered."),
      );
      // Bar widths set from script: the CSP forbids inline style attributes.
      for (const bar of list.querySelectorAll(".bar > span")) bar.style.width = bar.dataset.pct + "%";
    },
  };
}

// ---- images --------------------------------------------------------------

function imagesPage(root) {
  const list = h("div", { id: "images" });
  root.append(h("h1", {}, "Images"), list);
  return {
    name: "images",
    async refresh() {
      const [images, nodes] = await Promise.all([api("GET", "/v1/images"), api("GET", "/v1/nodes")]);
      const names = new Set([...images.map((i) => i.name), ...nodes.flatMap((n) => n.images)]);
      const rows = [...names].sort().map((name) => {
        const stored = images.find((i) => i.name === name);
        const on = nodes.filter((n) => n.images.includes(name)).map((n) => n.name);
        return h(
          "tr",
          { "data-image": name },
          h("td", {}, name),
          h("td", { class: "num" }, stored ? bytes(stored.size) : "—"),
          h("td", { class: "wide mono" }, stored ? stored.manifest.slice(0, 16) + "…" : "not in the controller's store"),
          h("td", {}, on.length ? h("div", { class: "chips" }, on.map((n) => h("span", { class: "chip" }, n))) : h("span", { class: "muted" }, "no node")),
        );
      });
      list.replaceChildren(table([["image"], ["size", "num"], ["manifest", "wide"], ["on nodes"]], rows, "No images."));
    },
  };
}

// ---- users (admin) -------------------------------------------------------

function usersPage(root) {
  root.append(h("h1", {}, "Users"));
  if (me.role !== "admin") {
    root.append(h("p", { class: "error", id: "users-forbidden" }, "The users page is for administrators."));
    return { name: "users", async refresh() {} };
  }
  const name = h("input", { id: "user-name", required: true, autocomplete: "off", "aria-label": "User name" });
  const role = h("select", { id: "user-role", "aria-label": "Role" }, h("option", { value: "user" }, "user"), h("option", { value: "admin" }, "admin"));
  const result = h("div", { id: "user-result", hidden: true });
  const list = h("div", { id: "users" });

  async function add(ev) {
    ev.preventDefault();
    show(result, false);
    try {
      const u = await api("POST", "/v1/users", { name: name.value, role: role.value });
      result.className = "ok";
      result.replaceChildren(
        h("p", {}, `Added ${u.name} (${u.role}). Their token, shown only now:`),
        h("pre", { class: "mono", id: "new-token" }, u.token),
      );
      name.value = "";
    } catch (e) {
      result.className = "error";
      result.textContent = e.message;
    }
    show(result, true);
    tick();
  }

  root.append(
    h(
      "form",
      { class: "card", id: "user-form", onsubmit: add },
      h("h2", {}, "Add a user"),
      h("div", { class: "row" }, h("label", { for: "user-name" }, "Name"), name, h("label", { for: "user-role" }, "Role"), role),
      h("button", { type: "submit" }, "Add"),
      result,
    ),
    list,
  );
  return {
    name: "users",
    async refresh() {
      // Listing users needs a controller that has `GET /v1/users`.
      let users;
      try {
        users = await api("GET", "/v1/users");
      } catch (e) {
        if (e.status === 404 || e.status === 405) {
          list.replaceChildren(h("p", { class: "muted" }, "This controller does not list users."));
          return;
        }
        throw e;
      }
      const rows = users.map((u) => h("tr", { "data-user": u.name }, Object.entries(u).map(([k, v]) => h("td", { class: k === "id" ? "num" : null }, describeField(k, v)))));
      const head = users.length ? Object.keys(users[0]).map((k) => [k.replaceAll("_", " ")]) : [];
      list.replaceChildren(table(head, rows, "No users."));
    },
  };
}

// ---- start ---------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  $("login").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  try {
    loggedIn(await api("GET", "/ui/session"));
  } catch (_) {
    loggedOut("");
  }
});
