// agentd's dashboard: plain DOM and SVG over the server's own OpenAI-shaped API (same origin, so the
// API-key cookie set at /ui/login goes with every call). No build step, no third-party code.
"use strict";

const $ = (selector) => document.querySelector(selector);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  return node;
};
const svg = (tag, attrs = {}, text) => {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
};
const when = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : "");

async function api(path, options = {}) {
  const reply = await fetch(`/v1${path}`, options);
  if (!reply.ok) {
    const body = await reply.json().catch(() => ({}));
    throw new Error(body.error?.message || `${reply.status} ${reply.statusText}`);
  }
  return reply.json();
}

function report(error) {
  $("#status").textContent = error ? String(error.message || error) : "";
}

// ---- tabs: the shown tab's loader runs now and every few seconds (live job and deployment status)
const loaders = {};
let poller = null;
function show(tab) {
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
  document.querySelectorAll(".tab").forEach((s) => s.classList.toggle("active", s.id === tab));
  clearInterval(poller);
  const load = loaders[tab];
  if (load) {
    load().catch(report);
    poller = setInterval(() => load().catch(report), 2000);
  }
}
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));

// ---- charts
function lineChart(target, series, { xLabel = "", yLabel = "" } = {}) {
  target.replaceChildren();
  const points = series.flatMap((s) => s.points);
  if (!points.length) {
    target.append(svg("text", { x: 20, y: 30 }, "no points yet"));
    return;
  }
  const [w, h, left, bottom, top, right] = [640, 260, 52, 32, 12, 16];
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) [y0, y1] = [y0 - 1, y1 + 1];
  const sx = (x) => left + ((x - x0) / (x1 - x0 || 1)) * (w - left - right);
  const sy = (y) => h - bottom - ((y - y0) / (y1 - y0)) * (h - bottom - top);
  target.append(svg("line", { x1: left, y1: h - bottom, x2: w - right, y2: h - bottom, stroke: "#999" }));
  target.append(svg("line", { x1: left, y1: top, x2: left, y2: h - bottom, stroke: "#999" }));
  for (const y of [y0, (y0 + y1) / 2, y1]) target.append(svg("text", { x: 4, y: sy(y) + 4 }, y.toPrecision(3)));
  target.append(svg("text", { x: left, y: h - 8 }, String(x0)));
  target.append(svg("text", { x: w - right - 30, y: h - 8 }, String(x1)));
  target.append(svg("text", { x: w / 2 - 20, y: h - 8 }, xLabel));
  target.append(svg("text", { x: left + 6, y: top + 10 }, yLabel));
  const colours = ["#2f6fde", "#e07b24", "#23865a"];
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const path = s.points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    target.append(svg("polyline", { points: path, fill: "none", stroke: colours[i % 3], "stroke-width": 2,
                                    class: `series series-${s.name}` }));
    target.append(svg("text", { x: w - right - 110, y: top + 12 + 14 * i, fill: colours[i % 3] }, s.name));
  });
}

function barChart(target, bars) {
  target.replaceChildren();
  if (!bars.length) {
    target.append(svg("text", { x: 20, y: 30 }, "nothing evaluated yet"));
    return;
  }
  const [w, left, row] = [640, 260, 22];
  target.setAttribute("viewBox", `0 0 ${w} ${bars.length * row + 10}`);
  const most = Math.max(...bars.map((b) => b.value), 1e-9);
  bars.forEach((b, i) => {
    const y = 5 + i * row;
    const width = (b.value / most) * (w - left - 70);
    target.append(svg("text", { x: 4, y: y + 14 }, b.label.length > 40 ? `…${b.label.slice(-39)}` : b.label));
    target.append(svg("rect", { x: left, y, width: Math.max(width, 1), height: row - 6, fill: "#2f6fde", class: "bar" }));
    target.append(svg("text", { x: left + width + 4, y: y + 14 },
                      `${b.value.toFixed(3)}${b.stderr != null ? ` ± ${b.stderr.toFixed(3)}` : ""}`));
  });
}

// ---- fine-tuning jobs: the list, and the chosen (else the newest) job's loss curve and events, live
let chosenJob = null;
loaders.jobs = async () => {
  const jobs = (await api("/fine_tuning/jobs?limit=50")).data;
  const body = $("#jobs-table tbody");
  body.replaceChildren(...jobs.map((job) => {
    const row = el("tr", { className: job.id === chosenJob ? "selected" : "" },
      el("td", {}, job.id), el("td", {}, job.model), el("td", { className: `status-${job.status}` }, job.status),
      el("td", {}, job.fine_tuned_model || ""), el("td", {}, when(job.created_at)));
    row.dataset.job = job.id;
    row.addEventListener("click", () => { chosenJob = job.id; loaders.jobs().catch(report); });
    return row;
  }));
  const job = jobs.find((j) => j.id === chosenJob) || jobs[0];
  if (!job) return;
  $("#job-detail").hidden = false;
  $("#job-title").textContent = `${job.id} — ${job.status}`;
  const progress = job.agentd?.progress;
  $("#job-summary").textContent = [job.fine_tuned_model && `model ${job.fine_tuned_model}`,
    progress && `step ${progress.step ?? "?"} of ${progress.total_steps ?? "?"}`,
    job.error?.message && `error: ${job.error.message}`].filter(Boolean).join(" · ");
  const curve = (await api(`/fine_tuning/jobs/${job.id}/metrics`)).data;
  const series = [{ name: "train_loss", points: curve.filter((m) => m.train_loss != null).map((m) => [m.step, m.train_loss]) },
                  { name: "valid_loss", points: curve.filter((m) => m.valid_loss != null).map((m) => [m.step, m.valid_loss]) }];
  lineChart($("#loss-chart"), series, { xLabel: "step", yLabel: "loss" });
  $("#loss-chart").dataset.job = job.id;
  const events = (await api(`/fine_tuning/jobs/${job.id}/events?limit=30`)).data;
  $("#job-events").replaceChildren(...events.map((e) => el("li", {}, `${when(e.created_at)} ${e.message}`)));
};

// ---- evaluations: the leaderboard (chart and table) and the runs of every eval
loaders.evals = async () => {
  const board = await api("/leaderboard");
  const bars = [];
  for (const row of board.data) {
    for (const [task, score] of Object.entries(row.scores)) {
      bars.push({ label: `${row.model} · ${task}`, value: score.value, stderr: score.stderr });
    }
  }
  barChart($("#leaderboard-chart"), bars);
  const tasks = board.tasks || [];
  $("#leaderboard-table").replaceChildren(
    el("tr", {}, el("th", {}, "model"), ...tasks.map((t) => el("th", {}, `${t.task} (${t.metric})`))),
    ...board.data.map((row) => el("tr", {}, el("td", {}, row.model), ...tasks.map((t) => {
      const s = row.scores[t.task];
      return el("td", {}, s ? `${s.value.toFixed(4)} ± ${(s.stderr ?? 0).toFixed(4)}` : "—");
    }))));
  const evals = (await api("/evals?limit=20")).data;
  const rows = [];
  for (const ev of evals) {
    for (const run of (await api(`/evals/${ev.id}/runs?limit=20`)).data) {
      const counts = run.result_counts || {};
      rows.push(el("tr", {}, el("td", {}, ev.name || ev.id), el("td", {}, run.id), el("td", {}, run.model || ""),
                   el("td", {}, run.status), el("td", {}, `${counts.passed ?? 0} / ${counts.total ?? 0}`)));
    }
  }
  $("#eval-runs tbody").replaceChildren(...rows);
};

// ---- deployments: status, and the chosen one's events as they come (an EventSource)
let deploymentEvents = null;
loaders.deployments = async () => {
  const deployments = (await api("/deployments?all=true")).data;
  $("#deployments-table tbody").replaceChildren(...deployments.map((d) => {
    const row = el("tr", {}, el("td", {}, d.id), el("td", {}, d.served_model || d.model), el("td", {}, d.engine),
                   el("td", { className: `status-${d.status}` }, d.error ? `${d.status}: ${d.error}` : d.status));
    row.addEventListener("click", () => follow(d));
    return row;
  }));
};
function follow(deployment) {
  if (deploymentEvents) deploymentEvents.close();
  $("#deployment-detail").hidden = false;
  $("#deployment-title").textContent = deployment.id;
  const list = $("#deployment-events");
  list.replaceChildren();
  deploymentEvents = new EventSource(`/v1/deployments/${deployment.id}/events`);
  deploymentEvents.onmessage = (message) => {
    const event = JSON.parse(message.data);
    list.append(el("li", {}, `${when(event.time)} ${event.type}: ${event.message || event.error?.message || ""}`));
  };
  deploymentEvents.onerror = () => deploymentEvents.close();
}

// ---- tools: each tool's schema and a form that calls it (pictures and files as uploads)
let toolsLoaded = false;
loaders.tools = async () => {
  if (toolsLoaded) return;
  const tools = (await api("/tools")).data;
  $("#tool-list").replaceChildren(...tools.map((tool) => el("li", {},
    Object.assign(el("button", { type: "button" }, tool.name), { onclick: () => describeTool(tool) }))));
  toolsLoaded = true;
};
function describeTool(tool) {
  $("#tool-detail").hidden = false;
  $("#tool-name").textContent = tool.name;
  $("#tool-description").textContent = tool.description || "";
  const schema = tool.parameters || tool.input_schema || {};
  $("#tool-schema").textContent = JSON.stringify(schema, null, 2);
  const form = $("#tool-form");
  form.replaceChildren();
  const required = new Set(schema.required || []);
  for (const [name, property] of Object.entries(schema.properties || {})) {
    const kind = property["x-agentd-type"];
    let input;
    if (kind === "image" || kind === "file") {
      input = el("input", { type: "file", name, accept: kind === "image" ? "image/*" : "" });
    } else if (property.enum) {
      input = el("select", { name }, ...property.enum.map((v) => el("option", { value: v }, v)));
    } else if (property.type === "boolean") {
      input = el("input", { type: "checkbox", name });
    } else {
      input = el("input", { type: property.type === "integer" || property.type === "number" ? "number" : "text", name,
                            step: "any", placeholder: property.description || "" });
      if (property.default !== undefined) input.value = property.default;
    }
    input.dataset.type = property.type || kind || "string";
    form.append(el("label", {}, el("span", {}, `${name}${required.has(name) ? " *" : ""}`), input));
  }
  form.append(el("button", { type: "submit" }, `Run ${tool.name}`));
  form.onsubmit = async (event) => {
    event.preventDefault();
    const result = $("#tool-result");
    result.replaceChildren(el("p", {}, "running…"));
    try {
      const reply = await fetch(`/v1/tools/${tool.name}`, { method: "POST", body: toolArguments(form) });
      const body = await reply.json();
      result.replaceChildren(...(reply.ok ? toolResult(body) : [el("p", { className: "error" }, body.error?.message)]));
    } catch (error) {
      result.replaceChildren(el("p", { className: "error" }, String(error)));
    }
  };
}
function toolArguments(form) {
  const data = new FormData();
  for (const input of form.querySelectorAll("input, select")) {
    if (input.type === "file") {
      if (input.files[0]) data.append(input.name, input.files[0]);
    } else if (input.type === "checkbox") {
      data.append(input.name, input.checked ? "true" : "false");
    } else if (input.value !== "") {
      data.append(input.name, input.value);
    }
  }
  return data;
}
function toolResult(body) {
  const parts = body.content.map((part) => {
    if (part.type === "text") return el("pre", {}, part.text);
    if (part.type === "json") return el("pre", {}, JSON.stringify(part.json, null, 2));
    if (part.kind === "image") {
      const src = part.data ? `data:${part.mime_type};base64,${part.data}` : `/v1/files/${part.file_id}/content`;
      return el("img", { src, alt: part.filename || "image", className: "tool-image" });
    }
    return el("a", { href: `/v1/files/${part.file_id}/content` }, part.filename || part.file_id);
  });
  if (body.is_error) parts.unshift(el("p", { className: "error" }, body.error?.message || "the tool failed"));
  return parts;
}

// ---- chat: plain models and agents; an agent's steps stream above its answer, pictures inline
const conversation = [];
let threadId = null;
loaders.chat = async () => {
  const select = $("#chat-model");
  if (select.options.length) return;
  const models = (await api("/models")).data;
  models.sort((a, b) => (b.owned_by === "agentd-agent") - (a.owned_by === "agentd-agent"));
  select.replaceChildren(...models.map((m) => el("option", { value: m.id }, m.id)));
};
$("#chat-new").addEventListener("click", () => {
  conversation.length = 0;
  threadId = null;
  $("#chat-log").replaceChildren();
});
$("#chat-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("#chat-form").requestSubmit();
  }
});
$("#chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("#chat-input").value.trim();
  if (!text) return;
  $("#chat-input").value = "";
  conversation.push({ role: "user", content: text });
  $("#chat-log").append(el("div", { className: "message user" }, text));
  const steps = el("ol", { className: "steps" });
  const answer = el("div", { className: "answer" });
  $("#chat-log").append(el("div", { className: "message assistant" }, steps, answer));
  $("#chat-send").disabled = true;
  let said = "";
  try {
    const headers = { "content-type": "application/json" };
    if (threadId) headers["x-agentd-thread-id"] = threadId;
    const reply = await fetch("/v1/chat/completions", { method: "POST", headers,
      body: JSON.stringify({ model: $("#chat-model").value, messages: conversation, stream: true }) });
    if (!reply.ok) throw new Error((await reply.json()).error?.message || reply.statusText);
    threadId = reply.headers.get("x-agentd-thread-id") || threadId;
    for await (const chunk of sseChunks(reply)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices?.[0]?.delta || {};
      const step = delta.agent_step;
      if (step && step.type === "tool_progress") {
        // A long tool's progress (a fine-tune's step and loss) updates one line instead of adding one per report.
        const shown = [...steps.children].find((li) => li.dataset.progressOf === step.call_id);
        const item = stepItem(step, delta.reasoning_content);
        item.dataset.progressOf = step.call_id;
        if (shown) shown.replaceWith(item); else steps.append(item);
      } else if (step && step.type !== "final_answer") {
        steps.append(stepItem(step, delta.reasoning_content));
      }
      if (delta.content) {
        said += delta.content;
        renderAnswer(answer, said);
      }
    }
  } catch (error) {
    answer.append(el("p", { className: "error" }, String(error.message || error)));
  } finally {
    conversation.push({ role: "assistant", content: said });
    $("#chat-send").disabled = false;
  }
});
async function* sseChunks(reply) {
  const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}
function stepItem(step, text) {
  const item = el("li", { className: `step step-${step.type}${step.is_error ? " is-error" : ""}` },
                  (text || step.type).trimEnd());
  for (const artifact of step.artifacts || []) {
    if (artifact.kind === "image" && artifact.url) item.append(el("img", { src: artifact.url, alt: artifact.filename || "" }));
  }
  return item;
}
// The answer's text, with markdown tables as tables, pictures shown and links made clickable (and
// nothing else interpreted: the text goes in as text nodes, never as HTML).
function renderAnswer(target, text) {
  target.replaceChildren();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const rows = [];
    while (i < lines.length && /^\s*\|.*\|\s*$/.test(lines[i])) rows.push(lines[i++]);
    if (rows.length >= 2 && /^[\s|:-]+$/.test(rows[1])) {
      target.append(markdownTable(rows));
    } else {
      for (const row of rows) appendInline(target, `${row}\n`);
    }
    if (i < lines.length) appendInline(target, lines[i] + (i < lines.length - 1 ? "\n" : ""));
  }
}
function markdownTable(rows) {
  const cells = (row) => row.trim().replace(/^\||\|$/g, "").split("|").map((cell) => cell.trim());
  const table = el("table", { className: "answer-table" });
  table.append(el("tr", {}, ...cells(rows[0]).map((cell) => el("th", {}, cell))));
  for (const row of rows.slice(2)) table.append(el("tr", {}, ...cells(row).map((cell) => el("td", {}, cell))));
  return table;
}
function appendInline(target, text) {
  const pattern = /(!?)\[([^\]]*)\]\(([^)\s]+)\)/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    target.append(text.slice(last, match.index));
    const [, bang, label, url] = match;
    const safe = /^(https?:\/\/|\/)/.test(url) ? url : "#";
    target.append(bang ? el("img", { src: safe, alt: label }) : el("a", { href: safe, target: "_blank" }, label));
    last = match.index + match[0].length;
  }
  target.append(text.slice(last));
}

show("chat");
