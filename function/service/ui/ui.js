// The prediction page and model card: built from GET /model (the served model's schema and
// metadata), calling the API with the key kept in this tab's sessionStorage. No framework, no
// inline script, no innerHTML: every value reaches the page as text.
"use strict";

const KEY_STORAGE = "modelrun.apiKey";
const SHOWN_ROWS = 200; // the batch table shows this many rows; the download has them all
const MAX_REFUSED = 100; // a batch stops after this many refused rows

const state = { model: null, batchRows: [], whyNot: null };

// --- small helpers -----------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function $(id) {
  return document.getElementById(id);
}

function key() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

// An API call with the key. Resolves to {ok, status, body}; a network failure is a status 0.
async function call(path, options = {}) {
  const headers = { "X-API-Key": key(), ...(options.headers || {}) };
  let response;
  try {
    response = await fetch(path, { ...options, headers, cache: "no-store" });
  } catch (error) {
    return { ok: false, status: 0, body: { detail: `the service cannot be reached: ${error}` } };
  }
  const type = response.headers.get("Content-Type") || "";
  const body = type.includes("json") ? await response.json() : await response.blob();
  const requestId = response.headers.get("X-Request-Id");
  return { ok: response.ok, status: response.status, body, requestId };
}

function problemText(result) {
  const body = result.body || {};
  const detail = body.detail || body.error || `HTTP ${result.status}`;
  return result.status ? `${detail} (HTTP ${result.status})` : detail;
}

function percent(p) {
  return `${(100 * p).toFixed(1)} %`;
}

// --- the served model, the key -------------------------------------------------------------

async function showServed() {
  // /ready needs no key, and names the model only to a caller with one: before a key is
  // entered the page says whether the service is ready; the model's name comes with the key.
  try {
    const response = await fetch("/ready", { cache: "no-store" });
    const body = await response.json();
    $("served-model").textContent = response.ok
      ? "ready; enter a key to see which model"
      : `not ready: ${body.detail}`;
  } catch (error) {
    $("served-model").textContent = "the service cannot be reached";
  }
}

function showModelIdentity(model) {
  $("served-model").textContent = `${model.name}, version ${model.version}`;
}

async function loadModel() {
  const error = $("key-error");
  error.textContent = "";
  if (!key()) return;
  const result = await call("/model");
  if (!result.ok) {
    error.textContent =
      result.status === 401
        ? `The key was refused: ${problemText(result)}`
        : `The model could not be loaded: ${problemText(result)}`;
    $("api-key").setAttribute("aria-invalid", String(result.status === 401));
    return;
  }
  $("api-key").removeAttribute("aria-invalid");
  state.model = result.body;
  state.whyNot = cannotExplain(state.model);
  showModelIdentity(state.model);
  buildForm(state.model);
  $("batch-button").disabled = false;
  $("batch-csv").placeholder = exampleCsv(state.model);
  renderCard(state.model);
}

function setUpKey() {
  $("api-key").value = key();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    loadModel();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    $("api-key").value = "";
    $("key-error").textContent = "The key is forgotten.";
  });
}

// --- one row: the form ---------------------------------------------------------------------

function inputId(name) {
  return `feature-${encodeURIComponent(name).replace(/[^A-Za-z0-9_-]/g, "_")}`;
}

function featureInput(feature, example) {
  const id = inputId(feature.name);
  const described = `${id}-type ${id}-error`;
  const value = example === undefined || example === null ? "" : String(example);
  let input;
  if (feature.type === "category" || feature.type === "boolean") {
    const options = feature.type === "boolean" ? ["true", "false"] : feature.categories;
    input = el("select", { id, name: feature.name, "aria-describedby": described });
    if (feature.nullable) input.append(el("option", { value: "", text: "(missing)" }));
    for (const option of options) input.append(el("option", { value: option, text: option }));
    input.value = value;
  } else {
    input = el("input", {
      id,
      name: feature.name,
      type: "number",
      step: feature.type === "integer" ? "1" : "any",
      inputmode: feature.type === "integer" ? "numeric" : "decimal",
      required: !feature.nullable,
      "aria-describedby": described,
      value,
    });
  }
  const kind = feature.nullable ? `${feature.type}, may be missing` : feature.type;
  return el(
    "div",
    { class: "field" },
    el("label", { for: id, text: feature.name }),
    input,
    el("span", { id: `${id}-type`, class: "help", text: kind }),
    el("span", { id: `${id}-error`, class: "error" }),
  );
}

function buildForm(model) {
  const example = model.input_example || {};
  $("fields").replaceChildren(...model.features.map((f) => featureInput(f, example[f.name])));
  $("fields-note").textContent = `${model.features.length} features; the example row is filled in.`;
  $("predict-button").disabled = false;
}

// A value as the API takes it: numbers as numbers, an empty field as missing (null).
function typed(feature, raw) {
  const text = raw.trim();
  if (text === "") return null;
  if (feature.type === "number" || feature.type === "integer") {
    const number = Number(text);
    return Number.isFinite(number) ? number : text; // the API names what is wrong
  }
  if (feature.type === "boolean") {
    const lower = text.toLowerCase();
    if (lower === "true" || lower === "1") return true;
    if (lower === "false" || lower === "0") return false;
  }
  return text;
}

function clearFieldErrors() {
  for (const node of document.querySelectorAll("#fields .error")) node.textContent = "";
  for (const node of document.querySelectorAll("#fields [aria-invalid]")) {
    node.removeAttribute("aria-invalid");
  }
  $("predict-error").textContent = "";
}

// The feature an error's field names ("instances[0].plan"), if it names one.
function fieldFeature(field) {
  const match = /^instances\[\d+\]\.(.+)$/.exec(field || "");
  return match && state.model.features.some((f) => f.name === match[1]) ? match[1] : null;
}

async function predictOne(event) {
  event.preventDefault();
  clearFieldErrors();
  const row = {};
  for (const feature of state.model.features) {
    row[feature.name] = typed(feature, $(inputId(feature.name)).value);
  }
  $("answer").replaceChildren();
  const result = await call("/predict", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ instances: [row] }),
  });
  if (!result.ok) {
    const name = fieldFeature(result.body && result.body.field);
    if (name) {
      const id = inputId(name);
      $(`${id}-error`).textContent = result.body.detail;
      $(id).setAttribute("aria-invalid", "true");
      $(id).focus();
    } else {
      $("predict-error").textContent = problemText(result);
      if (result.status === 401) $("key-error").textContent = problemText(result);
    }
    return;
  }
  showModelIdentity(result.body.model);
  $("answer").replaceChildren(...answerNodes(result.body));
  // The id its payload record and any feedback (POST /feedback) find this answer by.
  if (result.requestId) {
    $("answer").append(el("p", { id: "request-id", class: "note", text: `Request id: ${result.requestId}` }));
  }
  const version = result.body.model.version;
  if (!(state.whyNot && state.whyNot.version === version)) {
    const why = await call("/explain", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ instances: [row] }),
    });
    if (why.ok) {
      $("answer").append(...whyNodes(why.body));
      return;
    }
    // A 422 naming no field is the version's own (it cannot be explained): not asked again;
    // one naming a field is this row's (no finite explanation).
    const reason = problemText(why);
    if (why.status === 422 && !(why.body && why.body.field)) state.whyNot = { version, reason };
    $("answer").append(el("p", { id: "why-not", class: "note", text: `No explanation: ${reason}` }));
    return;
  }
  $("answer").append(el("p", { id: "why-not", class: "note", text: `No explanation for this model: ${state.whyNot.reason}` }));
}

// A version the model card records as not explainable (its attribution record's reason, from
// training's report): Predict does not ask /explain for it, which would answer 422 and spend
// explain.EXPLAIN_COST tokens of the rate limit each time.
function cannotExplain(model) {
  const record = (model.report || {}).attribution_importance;
  return record && record.explained === false && record.reason ? { version: model.version, reason: record.reason } : null;
}

// Why this answer: each feature's signed attribution as a bar, largest first; they add up,
// with the base value, to the output explained.
function whyNodes(body) {
  const a = body.explanations[0].attributions[0];
  const entries = Object.entries(a.featureAttributions).sort((x, y) => Math.abs(y[1]) - Math.abs(x[1]));
  const largest = Math.max(...entries.map(([, v]) => Math.abs(v)), Number.MIN_VALUE);
  const what = a.outputDisplayName === undefined ? a.outputName : `${a.outputName} of ${a.outputDisplayName}`;
  const list = el("ul", { id: "why", class: "why", "aria-label": "Each feature's contribution" });
  for (const [name, value] of entries) {
    const bar = el("span", { class: value < 0 ? "fill down" : "fill up", "aria-hidden": "true" });
    bar.style.width = `${(50 * Math.abs(value)) / largest}%`; // CSSOM: allowed by style-src 'self'
    const sign = value < 0 ? "−" : "+";
    list.append(
      el(
        "li",
        {},
        el("span", { class: "label", text: name }),
        el("span", { class: "track" }, bar),
        el("span", { class: "value", text: `${sign}${Math.abs(value).toPrecision(3)}` }),
      ),
    );
  }
  return [
    el("h2", { text: "Why this answer" }),
    el("p", {
      class: "note",
      text:
        `The ${what}: ${a.instanceOutputValue.toPrecision(4)} = the base value ` +
        `${a.baselineOutputValue.toPrecision(4)} plus each feature's contribution ` +
        `(${body.method.explainer}, ${body.method.variant.replaceAll("_", "-")}).`,
    }),
    list,
  ];
}

function answerNodes(body) {
  const prediction = body.predictions[0];
  const nodes = [
    el("h2", { text: "Prediction" }),
    el("p", { class: "prediction" }, el("output", { id: "prediction", text: prediction })),
  ];
  if (body.probabilities) {
    const entries = Object.entries(body.probabilities[0]).sort((a, b) => b[1] - a[1]);
    nodes.push(barList("Probability of each class", entries));
  }
  return nodes;
}

// Shares (0 to 1) as labelled bars, each with its percentage.
function barList(label, entries) {
  const list = el("ul", { class: "bars", "aria-label": label });
  for (const [name, share] of entries) {
    const bar = el("span", { class: "fill", "aria-hidden": "true" });
    bar.style.width = `${100 * share}%`; // CSSOM: allowed by style-src 'self'
    list.append(
      el(
        "li",
        {},
        el("span", { class: "label", text: name }),
        el("span", { class: "track" }, bar),
        el("span", { class: "value", text: percent(share) }),
      ),
    );
  }
  return list;
}

// --- many rows: CSV in, CSV out ------------------------------------------------------------

// RFC 4180: quoted fields may hold commas, quotes ("") and line breaks. The rows carry
// `lines`: the line each row starts on, counted from 1 as editors count them.
function parseCsv(text) {
  const rows = [];
  const lines = [];
  let row = [];
  let cell = "";
  let quoted = false;
  let line = 1;
  let start = 1;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "\n" || (c === "\r" && text[i + 1] !== "\n")) line++; // CRLF: counted below
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      row.push(cell);
      cell = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") {
        i++;
        line++;
      }
      row.push(cell);
      rows.push(row);
      lines.push(start);
      start = line;
      row = [];
      cell = "";
    } else cell += c;
  }
  if (cell !== "" || row.length) {
    row.push(cell);
    rows.push(row);
    lines.push(start);
  }
  const kept = rows.map((r, k) => k).filter((k) => rows[k].length > 1 || rows[k][0] !== "");
  const table = kept.map((k) => rows[k]);
  table.lines = kept.map((k) => lines[k]);
  return table;
}

// A text cell a spreadsheet would run as a formula (OWASP, "CSV Injection") gets a leading
// single quote; a number, or a text that is one ("-5"), stays a number.
const FORMULA_START = /^[=+\-@\t\r]/;
const NUMBER_TEXT = /^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/;

function csvCell(value) {
  let text = value === null || value === undefined ? "" : String(value);
  if (typeof value === "string" && FORMULA_START.test(text) && !NUMBER_TEXT.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function exampleCsv(model) {
  const example = model.input_example || {};
  const names = model.features.map((f) => f.name);
  return `${names.map(csvCell).join(",")}\n${names.map((n) => csvCell(example[n])).join(",")}`;
}

// Score the rows in requests of at most the service's limit. A refused row is set aside with
// the API's message, and the rest of its request is sent again.
async function scoreRows(rows, onProgress) {
  const limit = (state.model.limits || {}).max_instances_per_request || 100;
  const results = new Array(rows.length);
  let refused = 0;
  for (let start = 0; start < rows.length; start += limit) {
    let pending = rows.slice(start, start + limit).map((row, i) => ({ row, at: start + i }));
    while (pending.length) {
      const result = await call("/predict", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ instances: pending.map((p) => p.row) }),
      });
      if (result.ok) {
        pending.forEach((p, i) => {
          results[p.at] = {
            prediction: result.body.predictions[i],
            probabilities: result.body.probabilities ? result.body.probabilities[i] : null,
          };
        });
        break;
      }
      const match = /^instances\[(\d+)\]/.exec((result.body && result.body.field) || "");
      if (result.status !== 422 || !match) throw new Error(problemText(result));
      const bad = Number(match[1]);
      // Its place in this request means nothing in the file: the message names the feature.
      results[pending[bad].at] = { error: result.body.detail.replace(/^instances\[\d+\]\.?/, "") };
      pending = pending.filter((_, i) => i !== bad);
      if (++refused >= MAX_REFUSED) throw new Error(`stopped after ${refused} refused rows`);
    }
    onProgress(Math.min(start + limit, rows.length));
  }
  return results;
}

function csvHeader() {
  const first = parseCsv($("batch-csv").value.split(/\r?\n/, 1)[0] || "")[0] || [];
  return first.map((h) => h.trim());
}

// The id column's choices: the header's columns that are not features (kept when still there).
function offerIdColumns() {
  const select = $("batch-id");
  const chosen = select.value;
  const features = new Set(state.model ? state.model.features.map((f) => f.name) : []);
  const others = csvHeader().filter((h) => h && !features.has(h));
  select.replaceChildren(
    el("option", { value: "", text: "its row number" }),
    ...others.map((name) => el("option", { value: name, text: name })),
  );
  select.value = others.includes(chosen) ? chosen : "";
}

async function predictBatch(event) {
  event.preventDefault();
  $("batch-error").textContent = "";
  $("batch-summary").textContent = "";
  $("batch-download").hidden = true;
  $("batch-result").replaceChildren();
  const table = parseCsv($("batch-csv").value);
  if (table.length < 2) {
    $("batch-error").textContent = "Give a header row naming the features, then one row or more.";
    return;
  }
  const header = table[0].map((h) => h.trim());
  const features = new Map(state.model.features.map((f) => [f.name, f]));
  // Every feature needs its column, as the batch command says: a misspelt header would score
  // each row as if that feature were missing. A missing value is an empty cell.
  const missing = state.model.features.filter((f) => !header.includes(f.name));
  if (missing.length) {
    const others = header.filter((h) => !features.has(h));
    $("batch-error").textContent =
      `The header has no column ${missing.map((f) => f.name).join(", ")} (every feature needs ` +
      `its column; a missing value is an empty cell); columns that are not features: ` +
      `${others.join(", ") || "none"}.`;
    return;
  }
  const idColumn = $("batch-id").value;
  const at = header.indexOf(idColumn);
  const ignored = header.filter((h) => !features.has(h) && h !== idColumn);
  const rows = table.slice(1).map((cells) => {
    const row = {};
    header.forEach((name, j) => {
      if (features.has(name)) row[name] = typed(features.get(name), cells[j] === undefined ? "" : cells[j]);
    });
    return row;
  });
  // Without an id column, a row is known by its line in the file, as the batch command says.
  const ids = table.slice(1).map((cells, i) => (idColumn ? cells[at] || "" : table.lines[i + 1]));
  $("batch-button").disabled = true;
  try {
    const results = await scoreRows(rows, (done) => {
      $("batch-summary").textContent = `Scored ${done} of ${rows.length} rows…`;
    });
    showBatch(idColumn || "line", ids, results, ignored);
  } catch (error) {
    $("batch-error").textContent = `The batch stopped: ${error.message}`;
    $("batch-summary").textContent = "";
  } finally {
    $("batch-button").disabled = false;
  }
}

// The predictions as the batch command writes them: the row's id, the prediction, one
// probability per class (probability_CLASS), and the API's reason for a refused row.
function showBatch(idName, ids, results, ignored) {
  const classes = state.model.task === "classification" ? state.model.class_names : [];
  const withProbabilities = results.some((r) => r && r.probabilities);
  const extra = ["prediction", ...(withProbabilities ? classes.map((c) => `probability_${c}`) : []), "error"];
  const lines = [[idName, ...extra]];
  results.forEach((r, i) => {
    const p = r.probabilities || {};
    const probs = withProbabilities ? classes.map((c) => (c in p ? p[c] : "")) : [];
    lines.push([ids[i], r.error ? "" : r.prediction, ...probs, r.error || ""]);
  });
  const refused = results.filter((r) => r.error).length;
  $("batch-summary").textContent =
    `${results.length - refused} rows scored, ${refused} refused` +
    (results.length > SHOWN_ROWS ? ` (the table shows the first ${SHOWN_ROWS})` : "") +
    "." +
    (ignored.length ? ` Ignored columns (not features of this model): ${ignored.join(", ")}.` : "");
  const csv = lines.map((line) => line.map(csvCell).join(",")).join("\r\n") + "\r\n";
  const link = $("batch-download");
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
  link.hidden = false;
  const table = el(
    "table",
    { id: "batch-table" },
    el("caption", { text: "Predictions, one per row" }),
    el(
      "thead",
      {},
      el("tr", {}, el("th", { scope: "col", text: idName }), ...extra.map((h) => el("th", { scope: "col", text: h }))),
    ),
    el(
      "tbody",
      {},
      lines.slice(1, SHOWN_ROWS + 1).map((line, i) =>
        el(
          "tr",
          { class: results[i].error ? "refused" : null },
          el("th", { scope: "row", text: line[0] }),
          line.slice(1).map((v) =>
            typeof v === "number"
              ? el("td", { class: "number", text: v.toFixed(4).replace(/\.?0+$/, "") })
              : el("td", { text: v }),
          ),
        ),
      ),
    ),
  );
  $("batch-result").replaceChildren(table);
}

async function readFile() {
  const file = $("batch-file").files[0];
  if (file) $("batch-csv").value = await file.text();
  offerIdColumns();
}

// --- the model card --------------------------------------------------------------------------

function definitions(entries) {
  const list = el("dl", { class: "facts" });
  for (const [term, value] of entries) {
    if (value === undefined || value === null || value === "") continue;
    list.append(el("dt", { text: term }), el("dd", {}, value));
  }
  return list;
}

function tableOf(caption, head, rows) {
  return el(
    "table",
    {},
    el("caption", { text: caption }),
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((v, i) => el(i ? "td" : "th", i ? {} : { scope: "row" }, String(v)))))),
  );
}

function number(value) {
  return typeof value === "number" ? value.toFixed(4) : String(value);
}

// A trained model has hold-out and cross-validated figures; a packaged one only its figures on
// the data given to package (metrics.evaluated_on), so it gets no cross-validation column.
function metricsTable(metrics) {
  const holdout = metrics.holdout || {};
  const cv = metrics.cv || {};
  const names = [...new Set([...Object.keys(holdout), ...Object.keys(cv)])];
  if (!Object.keys(cv).length) {
    const on = metrics.evaluated_on || "the hold-out set";
    return tableOf(`Metrics: on ${on}`, ["metric", "value"], names.map((n) => [n, number(holdout[n])]));
  }
  return tableOf(
    "Metrics: on the hold-out set, and cross-validated on the training set",
    ["metric", "hold-out", "cross-validation (mean ± std)"],
    names.map((n) => [
      n,
      n in holdout ? number(holdout[n]) : "",
      n in cv ? `${number(cv[n].mean)} ± ${number(cv[n].std)} (${cv[n].folds} folds)` : "",
    ]),
  );
}

// training/calibration.py: a classifier's top-class probability against its accuracy on the
// hold-out; the confidence-based accuracy estimate is worth a figure only where they agree.
function calibrationView(calibration) {
  if (!calibration) {
    return el("p", { class: "calibration", text: "Calibration: not measured (a regressor, a classifier without probabilities, or an older version)." });
  }
  const verdict = calibration.trusted
    ? "trusted: the accuracy estimated from the answers' confidence can be read as a figure"
    : "not trusted: read the accuracy estimated from the answers' confidence as a trend only";
  return el("p", {
    class: "calibration",
    text: `Calibration: expected calibration error ${number(calibration.ece)} on the hold-out (${calibration.bins} bins); ${verdict}.`,
  });
}

function section(title, ...children) {
  return el("section", { class: "card-section" }, el("h2", { text: title }), ...children);
}

function rolloutView(rollout) {
  if (!rollout) {
    return el("p", { text: "No rollout in progress: this version answers every request." });
  }
  const share = rollout.mode === "canary"
    ? `answers ${rollout.percent}% of clients (by X-Client-Id, else by API key)`
    : `scores ${rollout.percent >= 100 ? "every request" : `${rollout.percent}% of requests`} without answering`;
  return definitions([
    ["candidate", rollout.version],
    ["mode", `${rollout.mode}: ${share}`],
    ["compared with", rollout.current],
    ["started", rollout.started_at],
    ["on this instance", rollout.state === "loaded" ? "loaded beside this version" : `refused: ${rollout.reason}`],
  ]);
}

// The MLflow run the version was trained in (training/tracking.py): a link to its page on a
// tracking server (http or https only), else its id and experiment.
function trackedRun(mlflow) {
  if (!mlflow) return undefined;
  const label = `${mlflow.run_id} (experiment ${mlflow.experiment})`;
  const url = mlflow.run_url || "";
  if (!/^https?:\/\//.test(url)) return label;
  return el("a", { href: url, rel: "noopener noreferrer", target: "_blank", text: label });
}

// A category's values, and where they come from when not the fitted model (training/schema.py).
function categoriesText(feature) {
  const values = (feature.categories || []).join(", ");
  return feature.categories_from === "data" ? `${values} (seen in the data: no encoder names them)` : values;
}

function renderCard(m) {
  const promotion = m.promotion;
  const data = m.dataset || {};
  const onnx = m.onnx || {};
  const gates = m.gates || [];
  const report = m.report || {};
  const parts = [
    section(
      "Model",
      definitions([
        ["name", m.name],
        ["version", m.version],
        ["task", m.task],
        ["estimator", `${m.estimator}${m.estimator_name ? ` (${m.estimator_name})` : ""}`],
        ["served by", m.runtime],
        ["created", m.created_at],
        ["published", m.published_at],
        ["git commit", m.git_commit],
        ["libraries", Object.entries(m.versions || {}).map(([k, v]) => `${k} ${v}`).join(", ")],
        ["MLflow run", trackedRun(m.mlflow)],
      ]),
    ),
    section(
      "Promotion history",
      promotion
        ? definitions([
            ["promoted", promotion.promoted_at],
            ["previous version", promotion.previous || "none"],
            ["earlier versions, newest first", (promotion.history || []).join(", ") || "none"],
          ])
        : el("p", { text: "This version is pinned by MODEL_VERSION, not followed through current.json." }),
    ),
    section("Rollout", rolloutView(m.rollout)),
    section("Metrics", metricsTable(m.metrics || {}), calibrationView(m.calibration)),
    section(
      "Gates",
      gates.length
        ? el("ul", {}, gates.map((g) => el("li", { text: `${g}: passed on the hold-out set` })))
        : el("p", { text: "No gates were set; the model was published without a quality bar." }),
    ),
    section(
      "Data",
      definitions([
        ["source", data.source],
        ["target", data.target],
        ["rows", data.rows],
        ["training rows", data.train_rows],
        [m.packaged ? "rows evaluated on (given to package)" : "hold-out rows", data.test_rows],
        ["sha256", data.sha256],
      ]),
      tableOf(
        "Features",
        ["feature", "type", "may be missing", "categories"],
        m.features.map((f) => [f.name, f.type, f.nullable ? `yes (${f.missing})` : "no", categoriesText(f)]),
      ),
    ),
    section(
      "ONNX export",
      definitions([
        ["exported", String(Boolean(onnx.exported))],
        ["verified", String(Boolean(onnx.verified))],
        ["rows checked against scikit-learn", onnx.rows_checked],
        ["labels that differed", onnx.labels_mismatched],
        ["largest probability difference", onnx.max_probability_difference],
        ["tolerance", onnx.tolerance],
        ["note", onnx.reason],
      ]),
    ),
    section(
      "Files and digests",
      tableOf(
        "Every file of the version, checked against its sha256 before use",
        ["file", "bytes", "sha256"],
        Object.entries(m.files || {}).map(([name, f]) => [name, f.size, f.sha256]),
      ),
    ),
  ];
  const importance = Object.entries(report.permutation_importance || {}).sort(
    (a, b) => b[1].mean - a[1].mean,
  );
  if (importance.length) {
    // Beside it, the explanations' global importance: each feature's mean |attribution|.
    const attribution = report.attribution_importance || {};
    const meanAbs = attribution.mean_abs || {};
    const how = attribution.explained
      ? `mean |attribution| (${attribution.method}, ${attribution.units}) over ${attribution.rows} rows`
      : `no attributions${attribution.reason ? `: ${attribution.reason}` : " (trained before explanations)"}`;
    parts.push(
      section(
        "Feature importance",
        tableOf(
          `Permutation importance on the hold-out set (the score lost when a feature is shuffled), and ${how}`,
          ["feature", "mean", "std", "mean |attribution|"],
          importance.map(([name, v]) => [name, number(v.mean), number(v.std), name in meanAbs ? number(meanAbs[name]) : "—"]),
        ),
      ),
    );
  }
  const plots = (report.files || []).filter((f) => f.endsWith(".png"));
  const figures = el("div", { class: "plots" });
  parts.push(
    section(
      "Training report",
      plots.length ? figures : el("p", { text: "This version has no training report." }),
    ),
  );
  if (m.baseline) {
    const baseline = el("div", { class: "baseline" });
    parts.push(
      section(
        "Training distribution",
        el("p", {
          text:
            `What drift is measured against: the share of the ${m.baseline.rows} ` +
            `${m.packaged ? "rows given to package" : "training rows"} in each bin of each feature, ` +
            `and of the ${m.baseline.prediction_rows} ${m.packaged ? "" : "hold-out "}predictions. ` +
            "Live traffic is counted into the same bins (the dashboard's PSI panels).",
        }),
        baseline,
      ),
    );
    loadBaseline(baseline);
  }
  $("card").replaceChildren(...parts);
  for (const name of plots) loadPlot(name, figures);
  const html = (report.files || []).find((f) => f.endsWith(".html"));
  if (html) loadDownload(html, figures.parentNode);
}

const PLOT_TITLES = {
  "roc_curve.png": "ROC curve",
  "precision_recall_curve.png": "Precision-recall curve",
  "precision_recall_per_class.png": "Precision and recall per class",
};

function plotTitle(name) {
  const words = name.replace(/\.png$/, "").replace(/_/g, " ");
  return PLOT_TITLES[name] || words.charAt(0).toUpperCase() + words.slice(1);
}

async function loadPlot(name, parent) {
  const figure = el("figure", {}, el("figcaption", { text: plotTitle(name) }));
  parent.append(figure);
  const result = await call(`/model/files/${encodeURIComponent(name)}`);
  if (!result.ok) {
    figure.append(el("p", { class: "error", text: problemText(result) }));
    return;
  }
  const image = el("img", { alt: `${plotTitle(name)} of version ${state.model.version}` });
  image.src = URL.createObjectURL(result.body);
  figure.prepend(image);
}

async function loadBaseline(parent) {
  const result = await call(`/model/files/${encodeURIComponent(state.model.baseline.file)}`);
  if (!result.ok) {
    parent.append(el("p", { class: "error", text: problemText(result) }));
    return;
  }
  const baseline = result.body; // application/json: parsed by call()
  const shares = (record) => record.labels.map((label, i) => [label, record.shares[i]]);
  for (const record of baseline.features) {
    parent.append(el("h3", { text: record.name }), barList(`Training share of each bin of ${record.name}`, shares(record)));
  }
  const predicted = baseline.prediction.kind === "category" ? "class" : "bin";
  parent.append(
    el("h3", { text: "Predictions on the hold-out rows" }),
    barList(`Share of each predicted ${predicted}`, shares(baseline.prediction)),
  );
}

async function loadDownload(name, parent) {
  const result = await call(`/model/files/${encodeURIComponent(name)}`);
  if (!result.ok) return;
  const link = el("a", { class: "button", download: name, text: `Download ${name}` });
  link.href = URL.createObjectURL(result.body);
  parent.append(el("p", {}, link));
}

// --- tabs (the ARIA pattern: arrow keys move between them) ----------------------------------

function tabs() {
  return Array.from(document.querySelectorAll('[role="tab"]'));
}

function selectTab(tab, remember) {
  for (const other of tabs()) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  if (remember) history.replaceState(null, "", tab.dataset.path);
}

function setUpTabs() {
  const all = tabs();
  for (const tab of all) {
    tab.addEventListener("click", () => selectTab(tab, true));
    tab.addEventListener("keydown", (event) => {
      const moves = { ArrowRight: 1, ArrowLeft: -1, Home: -all.length, End: all.length };
      if (!(event.key in moves)) return;
      event.preventDefault();
      const at = all.indexOf(tab) + moves[event.key];
      const next = all[Math.max(0, Math.min(all.length - 1, at))];
      next.focus();
      selectTab(next, true);
    });
  }
  const path = location.pathname + location.hash;
  const initial = all.find((t) => t.dataset.path === path) || all[0];
  selectTab(initial, false);
}

document.addEventListener("DOMContentLoaded", () => {
  setUpTabs();
  setUpKey();
  $("predict-form").addEventListener("submit", predictOne);
  $("batch-form").addEventListener("submit", predictBatch);
  $("batch-file").addEventListener("change", readFile);
  $("batch-csv").addEventListener("input", offerIdColumns);
  showServed();
  loadModel();
});
