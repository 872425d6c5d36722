// The rnnkit page: pick a model, type, see its answer. Plain DOM, no build step, and nothing
// fetched from anywhere but the server that sent this page.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "rnnkit.apiKey";

// Everything the page does differently per model comes from what the server says the
// model can do (GET v1/models): its input form, streaming, attention weights.
const DEFAULT_FORM = { label: "Input", hint: "", button: "Run", multiline: false, prompt: false };
const form = (model) => ({ ...DEFAULT_FORM, ...(model && model.form) });
const live = (model) => Boolean(model) && !form(model).button;
// Options the page sets itself rather than offering them: the heatmap needs the weights.
const fixedOptions = (model) =>
  model.attention_option ? { [model.attention_option]: true } : {};

let models = [];
let inFlight = null; // the AbortController of the request whose answer we still want
let debounce = 0;
// What was typed for each task: a prompt is no use to a tagger, but two translators may
// well be asked the same sentence.
const drafts = {};
let shownTask = null;

// ------------------------------------------------------------------------------ HTTP
class ApiError extends Error {}

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function call(path, body, signal) {
  let res;
  try {
    res = await fetch(path, {
      method: body === undefined ? "GET" : "POST",
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError("Could not reach the server. Is it still running?");
  }
  if (res.ok) return res;
  // Proxies and crashes answer with HTML or nothing; only trust a JSON error body.
  let message = `${res.status} ${res.statusText}`.trim();
  try {
    const data = await res.json();
    if (data && data.error && data.error.message) message = data.error.message;
  } catch (_) {
    /* keep the status line */
  }
  if (res.status === 401) {
    $("key-box").open = true;
    message = sessionStorage.getItem(KEY_STORE)
      ? `The server refused the API key (${message}). Check it under “API key”.`
      : `This server needs an API key (${message}). Enter it under “API key”.`;
  }
  throw new ApiError(message);
}

const modelPath = (name, verb) => `v1/models/${encodeURIComponent(name)}/${verb}`;

// Server-sent events arrive in arbitrary chunks; an event ends at a blank line, and the
// spec allows \r\n, \r or \n as line ends.
async function readEvents(res, onEvent) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    await readBlocks(reader, onEvent);
  } finally {
    reader.cancel().catch(() => {}); // frees the connection when we stop early or fail
  }
}

async function readBlocks(reader, onEvent) {
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    // A lone \r at the end may be the first half of a \r\n: leave it for the next chunk.
    buffer = (buffer + value).replace(/\r\n|\r(?!$)/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") type = text;
        else if (field === "data") data.push(text);
      }
      if (data.length && onEvent(type, JSON.parse(data.join("\n")))) return;
    }
  }
}

// ------------------------------------------------------------------------- rendering
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  node.append(...children);
  return node;
}

function bars(rows) {
  return el(
    "div",
    { class: "bars" },
    ...rows.map(([label, value, shown]) =>
      el(
        "div",
        { class: "bar", title: `${label}: ${shown}` },
        el("span", { class: "bar-label", text: label }),
        el("span", { class: "bar-track" }, el("span", { class: "bar-fill", style: fill(value) })),
        el("span", { class: "bar-value", text: shown }),
      ),
    ),
  );
}

const fill = (value) => `width: ${Math.max(0, Math.min(1, value)) * 100}%`;
const pct = (p) => `${(p * 100).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1)}%`;

// One view per kind of answer, picked by the fields the answer has (see render below).
const RENDER = {
  plaintext: (out) => [document.createTextNode(out.plaintext)],

  tags(out) {
    if (!out.tokens.length) return [];
    if (out.spans) {
      // Entities inline; the type label comes from CSS so that a mark's text is the entity's.
      const nodes = [];
      let at = 0;
      for (const span of out.spans) {
        if (span.start > at) nodes.push(out.tokens.slice(at, span.start).join(" ") + " ");
        const words = out.tokens.slice(span.start, span.end).join(" ");
        nodes.push(el("mark", { class: "entity", "data-type": span.type, text: words }));
        nodes.push(" ");
        at = span.end;
      }
      nodes.push(out.tokens.slice(at).join(" "));
      const note = out.spans.length ? [] : [el("p", { class: "meta", text: "No entities found." })];
      return [el("p", { class: "sentence" }, ...nodes), ...note];
    }
    return [
      el(
        "div",
        { class: "words" },
        ...out.tokens.map((token, i) =>
          el(
            "span",
            { class: "word" },
            el("span", { class: "token", text: token }),
            el("span", { class: "word-tag", text: out.tags[i] }),
          ),
        ),
      ),
    ];
  },

  probabilities: (out) => [
    el("p", { class: "answer" }, "Label: ", el("strong", { class: "label", text: out.label })),
    bars(Object.entries(out.probabilities).map(([label, p]) => [label, p, pct(p)])),
  ],

  neighbors(out) {
    if (!out.known) {
      const text = `“${out.word}” is not in this model's vocabulary.`;
      return [el("p", { class: "meta", text })];
    }
    return [
      el("p", { class: "answer" }, "Nearest to ", el("strong", { text: out.word })),
      bars(out.neighbors.map((n) => [n.word, n.similarity, n.similarity.toFixed(3)])),
    ];
  },

  translation(out) {
    const meta = `read as “${out.source}” · log-probability ${out.score.toFixed(3)}`;
    const note = el("p", { class: "meta", text: "(an empty translation)" });
    const empty = out.translation ? [] : [note];
    return [
      el("p", { class: "translation", text: out.translation }),
      ...empty,
      el("p", { class: "meta", text: meta }),
    ];
  },

  prompt: (out) => [
    el("span", { class: "prompt", text: out.prompt }),
    el("span", { class: "continuation", text: out.text }),
  ],

  text: (out) => [document.createTextNode(out.text)],
};

function render(out) {
  const view = Object.keys(RENDER).find((field) => field in out);
  if (view) return RENDER[view](out);
  return [el("pre", { class: "json", text: JSON.stringify(out, null, 2) })];
}

function showAttention(model, out) {
  const { source_tokens: source = [], target_tokens: target = [], attention = [] } = out;
  if (model.attention_option) drawHeatmap($("heatmap"), source, target, attention);
  else $("heatmap").hidden = true;
}

function drawHeatmap(canvas, source, target, rows) {
  if (!rows.length) {
    canvas.hidden = true;
    return;
  }
  const style = getComputedStyle(canvas);
  const font = `13px ${style.fontFamily}`;
  const ctx = canvas.getContext("2d");
  ctx.font = font;
  const widest = (words) => Math.max(0, ...words.map((w) => ctx.measureText(w).width));
  const cell = 32;
  const left = Math.ceil(widest(target)) + 10;
  const top = Math.ceil(widest(source)) + 10;
  const width = left + cell * source.length + 2;
  const height = top + cell * rows.length + 2;
  // Draw at device resolution so that the labels stay sharp on phones; CSS scales it down.
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  canvas.style.width = `${width}px`;
  ctx.scale(dpr, dpr);
  ctx.font = font; // resizing a canvas resets its state
  ctx.fillStyle = style.color;
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  target.forEach((word, r) => ctx.fillText(word, left - 6, top + cell * (r + 0.5)));
  ctx.textAlign = "left";
  source.forEach((word, c) => {
    ctx.save();
    ctx.translate(left + cell * (c + 0.5), top - 6);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText(word, 0, 0);
    ctx.restore();
  });
  const heat = style.getPropertyValue("--heat").trim() || "20, 40, 120";
  rows.forEach((row, r) =>
    row.forEach((w, c) => {
      ctx.fillStyle = `rgba(${heat}, ${Math.max(0, Math.min(1, w))})`;
      ctx.fillRect(left + cell * c, top + cell * r, cell - 1, cell - 1);
    }),
  );
  ctx.strokeStyle = style.getPropertyValue("--line").trim() || "#ccc";
  ctx.strokeRect(left - 0.5, top - 0.5, cell * source.length, cell * rows.length);
  canvas.hidden = false;
}

// ------------------------------------------------------------------------------- state
const output = $("output");

function setState(state, input) {
  output.dataset.state = state;
  if (input === undefined) delete output.dataset.input;
  else output.dataset.input = input;
  output.setAttribute("aria-busy", String(state === "busy"));
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function clearResult() {
  output.replaceChildren();
  $("heatmap").hidden = true;
}

const current = () => models.find((m) => m.name === $("model").value);

// ---------------------------------------------------------------------------- options
function baseType(prop) {
  if (prop.type) return prop.type;
  const types = (prop.anyOf || []).map((p) => p.type).filter((t) => t && t !== "null");
  return types[0] || (prop.enum ? "enum" : "string");
}

const properties = (model) => (model.options && model.options.properties) || {};
const nullable = (prop) => (prop.anyOf || []).some((p) => p.type === "null");

function buildOptions(model) {
  const fixed = fixedOptions(model);
  const props = Object.entries(properties(model)).filter(([name]) => !(name in fixed));
  const box = $("option-fields");
  box.replaceChildren();
  for (const [name, prop] of props) {
    const id = `opt-${name}`;
    const type = prop.enum ? "enum" : baseType(prop);
    let control;
    if (type === "boolean") {
      control = el("input", { id, type: "checkbox", checked: Boolean(prop.default) });
    } else if (type === "enum") {
      const choice = (v) => el("option", { value: v, text: v, selected: v === prop.default });
      control = el("select", { id }, ...prop.enum.map(choice));
    } else {
      const numeric = type === "integer" || type === "number";
      control = el("input", { id, type: numeric ? "number" : "text" });
      if (numeric) control.inputMode = type === "integer" ? "numeric" : "decimal";
      if (type === "integer") control.step = "1";
      // Small steps where the range is small (top-p), so that the arrow keys are useful.
      if (type === "number") control.step = prop.maximum <= 1 ? "0.05" : "0.1";
      if (prop.minimum !== undefined) control.min = prop.minimum;
      if (prop.maximum !== undefined) control.max = prop.maximum;
      if (prop.default !== null && prop.default !== undefined) control.value = prop.default;
      else control.placeholder = "default";
    }
    control.dataset.option = name;
    control.dataset.kind = type;
    const hint = el("small", { class: "hint", id: `${id}-hint`, text: prop.description || "" });
    control.setAttribute("aria-describedby", hint.id);
    const label = el("label", { htmlFor: id, text: name.replace(/_/g, " ") });
    const parts = type === "boolean" ? [control, label, hint] : [label, control, hint];
    box.append(el("div", { class: type === "boolean" ? "field check" : "field" }, ...parts));
  }
  $("options").hidden = props.length === 0;
}

function readOptions(model) {
  const options = fixedOptions(model);
  for (const control of $("option-fields").querySelectorAll("[data-option]")) {
    const kind = control.dataset.kind;
    const name = control.dataset.option;
    if (kind === "boolean") options[name] = control.checked;
    else if (control.value.trim() === "") options[name] = null; // the server's default
    else if (kind === "integer" || kind === "number") options[name] = Number(control.value);
    else options[name] = control.value;
  }
  // An empty box of a non-nullable option means "the default": leave it out.
  for (const [name, value] of Object.entries(options)) {
    const prop = properties(model)[name];
    if (value === null && prop && !nullable(prop)) delete options[name];
  }
  return options;
}

// ------------------------------------------------------------------------------- run
function setBusy(busy, streaming) {
  $("submit").disabled = busy && streaming;
  $("stop").hidden = !(busy && streaming);
}

async function run() {
  const model = current();
  if (!model) return;
  const text = $("input").value;
  if (inFlight) inFlight.abort();
  const controller = new AbortController();
  inFlight = controller;
  showError("");
  if (!text.trim() && !form(model).prompt) {
    inFlight = null;
    clearResult();
    setState("done", text);
    return;
  }
  const streaming = model.streaming;
  setState("busy", text);
  setBusy(true, streaming);
  try {
    const options = readOptions(model);
    if (streaming) {
      await generate(model, text, options, controller.signal);
    } else {
      const body = { inputs: [text], options };
      const res = await call(modelPath(model.name, "predict"), body, controller.signal);
      const { outputs } = await res.json();
      if (controller !== inFlight) return; // a newer request owns the output now
      output.replaceChildren(...render(outputs[0]));
      showAttention(model, outputs[0]);
    }
    if (controller === inFlight) setState("done", text);
  } catch (e) {
    if (e.name === "AbortError") {
      if (controller === inFlight) setState("stopped", text);
      return;
    }
    if (controller !== inFlight) return;
    showError(e instanceof ApiError ? e.message : `Something went wrong: ${e.message}`);
    setState("error", text);
  } finally {
    if (controller === inFlight) {
      inFlight = null;
      setBusy(false, streaming);
    }
  }
}

async function generate(model, prompt, options, signal) {
  const res = await call(modelPath(model.name, "stream"), { input: prompt, options }, signal);
  const continuation = el("span", { class: "continuation" });
  output.replaceChildren(el("span", { class: "prompt", text: prompt }), continuation);
  $("heatmap").hidden = true;
  setState("streaming", prompt);
  let finished = false;
  await readEvents(res, (type, data) => {
    if (type === "error") {
      throw new ApiError((data.error && data.error.message) || "The model failed mid-way.");
    }
    if (type === "done") return (finished = true);
    continuation.append(data.text || "");
    return false;
  });
  if (!finished && !signal.aborted) {
    throw new ApiError("The stream ended before the answer was complete.");
  }
}

// ------------------------------------------------------------------------------ setup
function chooseModel() {
  const model = current();
  clearTimeout(debounce);
  if (inFlight) inFlight.abort();
  inFlight = null; // so that the aborted request leaves the new model's output alone
  setBusy(false, false);
  clearResult();
  showError("");
  setState("idle");
  if (!model) return;
  const box = form(model);
  if (shownTask !== model.task) {
    if (shownTask) drafts[shownTask] = $("input").value;
    $("input").value = drafts[model.task] || "";
    shownTask = model.task;
  }
  history.replaceState(null, "", `#${encodeURIComponent(model.name)}`);
  $("task").textContent = model.task;
  $("input-label").textContent = box.label;
  $("input-hint").textContent = box.hint;
  $("input").rows = box.multiline ? 4 : 2;
  $("submit").textContent = box.button || "Run";
  $("submit").hidden = live(model);
  buildOptions(model);
  if ($("input").value.trim() && live(model)) run();
}

let loading = null;
function loadModels() {
  loading = loading || fetchModels().finally(() => (loading = null));
  return loading;
}

async function fetchModels() {
  const select = $("model");
  try {
    const res = await call("v1/models");
    models = (await res.json()).models;
  } catch (e) {
    showError(e.message);
    return;
  }
  if (!models.length) {
    showError("The server has no models loaded.");
    return;
  }
  let wanted = location.hash.slice(1);
  try {
    wanted = decodeURIComponent(wanted);
  } catch (_) {
    /* a hand-typed hash: match it as it is */
  }
  const title = (m) => (m.name === m.task ? m.name : `${m.name} (${m.task})`);
  const choices = models.map((m) => el("option", { value: m.name, text: title(m) }));
  select.replaceChildren(...choices);
  if (models.some((m) => m.name === wanted)) select.value = wanted;
  select.disabled = false;
  chooseModel();
}

function init() {
  const key = $("api-key");
  key.value = sessionStorage.getItem(KEY_STORE) || "";
  const saveKey = () => {
    if (key.value.trim()) sessionStorage.setItem(KEY_STORE, key.value.trim());
    else sessionStorage.removeItem(KEY_STORE);
    showError("");
    if (!models.length) loadModels();
  };
  key.addEventListener("change", saveKey);
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    saveKey();
  });
  $("model").addEventListener("change", chooseModel);
  $("form").addEventListener("submit", (e) => {
    e.preventDefault();
    run();
  });
  const stop = () => inFlight && inFlight.abort();
  $("stop").addEventListener("click", stop);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !$("stop").hidden) stop();
  });
  $("input").addEventListener("input", () => {
    const model = current();
    if (!live(model)) return;
    clearTimeout(debounce);
    debounce = setTimeout(run, 150);
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.shiftKey || e.isComposing) return;
    const model = current();
    const multiline = model && form(model).multiline;
    if (multiline && !(e.ctrlKey || e.metaKey)) return;
    e.preventDefault();
    clearTimeout(debounce);
    run();
  });
  loadModels();
}

init();
