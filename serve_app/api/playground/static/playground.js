// The browser playground: a client of the public HTTP API only (/v1/models, /v1/predictions,
// /v1/images), so whatever it shows a user can also do with curl. Plain JavaScript, no build step
// and nothing loaded from elsewhere: the page must work offline, straight from the package.
"use strict";

// Relative URLs: the app may be served under a route prefix (".../playground/v1/...").
const API = {
  models: "v1/models",
  predictions: "v1/predictions",
  gallery: "v1/images",
};
const KEY_STORAGE = "raydiffusion.apiKey";
const JOB_STORAGE = "raydiffusion.activePrediction"; // a reload resumes the job it was watching
const POLL_MS = 500;
const RECONNECT_MAX_MS = 5000;
const GALLERY_LIMIT = Number(new URLSearchParams(location.search).get("gallery_limit")) || 12;

// Every form input that becomes a field of the prediction's "input". A capability the API gains
// is one element in index.html plus one entry here: read() gives the value to send (undefined:
// leave it to the server; a promise for a file), write() loads a stored one. The model comes
// before the LoRAs: loading settings picks the model, whose LoRAs are then the ones on offer.
const FIELDS = [
  {
    name: "model",
    read: () => $("model").value || undefined,
    write: (value) => { if (value) selectModel(value); },
  },
  { name: "loras", read: readLoras, write: writeLoras },
  textField("prompt"),
  textField("negative_prompt"),
  textField("size"),
  numberField("steps"),
  numberField("guidance_scale"),
  textField("scheduler"),
  {
    name: "seed",
    read: () => ($("seed-random").checked ? undefined : numberOrText($("seed").value)),
    write: (value) => {
      $("seed-random").checked = value === undefined || value === null;
      $("seed").value = value ?? "";
      syncSeedToggle();
    },
  },
  numberField("n"),
  fileField("image"),
  fileField("mask"),
  numberField("strength"),
  {
    name: "upscale",
    read: () => ($("upscale").checked ? true : undefined),
    write: (value) => { $("upscale").checked = Boolean(value); },
  },
];
const PICTURE_FIELDS = ["image", "mask", "strength", "upscale"];
// What the API calls a field that is shown under another name here.
const FIELD_ALIASES = { init_image: "image" };

function $(id) {
  return document.getElementById(id);
}

function textField(name) {
  return {
    name,
    read: () => $(name).value.trim() || undefined,
    write: (value) => { $(name).value = value ?? ""; },
  };
}

function numberField(name) {
  return {
    name,
    read: () => numberOrText($(name).value),
    write: (value) => { $(name).value = value ?? ""; },
  };
}

// A picked file goes as a data URL, whatever it holds: the API decodes and checks it, and its 400
// names this field. A file input can only be cleared, never filled from a stored value.
function fileField(name) {
  return {
    name,
    read: () => {
      const file = $(name).files[0];
      return file ? dataUrl(file, name) : undefined;
    },
    write: (value) => { if (!value) $(name).value = ""; },
  };
}

function dataUrl(file, name) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new FieldError(name, `Could not read ${file.name}: ${reader.error}`));
    reader.readAsDataURL(file);
  });
}

// Sent as typed: a number when it is one, else the text itself, so the API's 400 says what is wrong.
function numberOrText(raw) {
  const text = String(raw).trim();
  if (text === "") return undefined;
  const value = Number(text);
  return Number.isFinite(value) ? value : text;
}

// --- the API ----------------------------------------------------------------------------------

const FALLBACK_MESSAGES = {
  401: "an API key is required",
  404: "not found",
  429: "too many requests",
  502: "the server is unreachable behind its proxy",
  503: "the server is at capacity",
  504: "the server took too long",
};

class ApiError extends Error {
  constructor(status, body, headers) {
    const error = (body && body.error) || {};
    // A proxy's own refusal may have no JSON body: the status alone then speaks for it.
    super(error.message || `${FALLBACK_MESSAGES[status] || "the server answered"} (HTTP ${status}).`);
    this.status = status;
    this.param = error.param || null;
    this.code = error.code || null;
    this.retryAfter = Number(headers.get("Retry-After")) || null;
  }
}

class NetworkError extends Error {}

// Found in the browser before anything was sent (a file that cannot be read).
class FieldError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const key = localStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (error) {
    throw new NetworkError(error.message || "network error");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null; // a proxy's HTML error page, for instance: the status still says what happened
  }
  if (!response.ok) {
    const error = new ApiError(response.status, body, response.headers);
    if (error.status === 401) askForKey(error.message);
    throw error;
  }
  return body;
}

// --- API key -----------------------------------------------------------------------------------

function askForKey(message) {
  const hadKey = Boolean(localStorage.getItem(KEY_STORAGE));
  $("auth").hidden = false;
  $("auth-message").textContent = hadKey
    ? `The saved API key was refused: ${message}`
    : "This server requires an API key. Enter it to use the playground.";
  if (document.activeElement !== $("api-key")) $("api-key").focus();
}

function setUpKeyForm() {
  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) {
      $("auth-message").textContent = "Enter a key first.";
      return;
    }
    localStorage.setItem(KEY_STORAGE, key);
    $("api-key").value = "";
    $("auth-message").textContent = "";
    $("auth").hidden = true;
    clearError("generate");
    refreshAll();
    if (activeJob) poll(activeJob, 0);
  });
  $("forget-key").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    $("auth-message").textContent = "Key forgotten.";
  });
}

// --- errors next to what caused them -----------------------------------------------------------

function fieldOf(param) {
  // "input.size" (the prediction body's path) and "size" both belong to the size field;
  // "input.loras[0].name" to the LoRA picker.
  const sent = String(param || "").replace(/^input\./, "").replace(/[[.].*$/, "");
  const name = FIELD_ALIASES[sent] || sent;
  return FIELDS.some((field) => field.name === name) ? name : null;
}

function showError(name, message) {
  const target = $(`${name}-error`);
  target.textContent = message;
  const input = $(name);
  if (input && name !== "generate") input.setAttribute("aria-invalid", "true");
}

function clearError(name) {
  $(`${name}-error`).textContent = "";
  const input = $(name);
  if (input) input.removeAttribute("aria-invalid");
}

function clearAllErrors() {
  for (const field of FIELDS) clearError(field.name);
  clearError("generate");
}

function reportError(error) {
  if (error instanceof FieldError) {
    showError(error.field, error.message);
    $(error.field).focus();
    return;
  }
  if (error instanceof NetworkError) {
    showError("generate", `Could not reach the server (${error.message}). Check the connection and try again.`);
    return;
  }
  const field = error.status === 400 || error.status === 422 ? fieldOf(error.param) : null;
  if (field) {
    showError(field, error.message);
    $(field).focus();
  } else if (error.status === 401) {
    showError("generate", "An API key is needed: enter it in the API key box above, then Generate again.");
  } else if (error.status === 503 || error.status === 429) {
    const wait = error.retryAfter || 5;
    showError("generate", `Unavailable right now: ${error.message} Retry in ${wait} s.`);
    holdButton(wait);
  } else {
    showError("generate", `Error ${error.status}: ${error.message}`);
  }
}

// Generate stays disabled for the server's Retry-After, counting down so the wait is visible.
function holdButton(seconds) {
  const button = $("generate");
  let left = Math.ceil(seconds);
  button.disabled = true;
  button.textContent = `Generate (${left} s)`;
  const timer = setInterval(() => {
    left -= 1;
    if (left > 0) {
      button.textContent = `Generate (${left} s)`;
      return;
    }
    clearInterval(timer);
    button.textContent = "Generate";
    button.disabled = Boolean(activeJob);
  }, 1000);
}

// --- the form ----------------------------------------------------------------------------------

function syncSeedToggle() {
  $("seed").disabled = $("seed-random").checked;
}

async function readInput() {
  const input = {};
  for (const field of FIELDS) {
    const value = await field.read();
    if (value !== undefined) input[field.name] = value;
  }
  return input;
}

// Loaded settings make the same image again, so a picture left in the form must not turn them
// into an image-to-image job.
function loadIntoForm(params) {
  clearPicture();
  for (const field of FIELDS) {
    if (field.name in params && field.name !== "n") field.write(params[field.name]);
  }
  clearAllErrors();
  $("prompt").focus();
}

function clearPicture() {
  for (const name of PICTURE_FIELDS) {
    FIELDS.find((field) => field.name === name).write(undefined);
    clearError(name);
  }
}

// --- a job, from Generate to its images ---------------------------------------------------------

let activeJob = null; // {id, input}

async function generate(event) {
  event.preventDefault();
  clearAllErrors();
  if (!$("prompt").value.trim()) {
    showError("prompt", "Enter a prompt.");
    $("prompt").focus();
    return;
  }
  $("generate").disabled = true;
  try {
    await submit(await readInput());
  } catch (error) {
    $("generate").disabled = false;
    reportError(error);
  }
}

async function submit(input) {
  const prediction = await api(API.predictions, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ input }),
  });
  startWatching({ id: prediction.id, input: prediction.input || input });
  render(prediction);
}

// --- Vary and Upscale: a new prediction starting from an image this service stored -------------

let pictureDefaults = null; // /v1/models' image_inputs: the strengths the service's own actions use

// The stored image's URL is sent as is: the API reads it from the store by its id, never fetches.
// Like its steps and scheduler, the image's own model and LoRAs (the selected ones when its record
// predates the catalogue): a variation of a picture is drawn by what drew it.
async function pictureInput(action, url, params) {
  const input = { prompt: params.prompt, image: url };
  for (const name of ["negative_prompt", "steps", "guidance_scale", "scheduler"]) {
    if (params[name] !== undefined && params[name] !== null && params[name] !== "") input[name] = params[name];
  }
  const model = params.model || $("model").value;
  if (model) input.model = model;
  const loras = params.model ? params.loras : readLoras();
  if (loras && loras.length) input.loras = loras.map(({ name, weight }) => ({ name, weight }));
  if (action === "upscale") {
    input.upscale = true; // twice the size, at the server's upscale_strength
    input.seed = params.seed;
    return input;
  }
  if (!pictureDefaults) await loadModels();
  if (!pictureDefaults) throw new Error("the server's variation strength is unknown (see the header above).");
  input.strength = pictureDefaults.variation_strength; // and no seed: a new one
  return input;
}

// Errors of an action go next to the button that was clicked, in words.
async function startFromPicture(action, url, params, errorLine) {
  errorLine.textContent = "";
  if (activeJob) {
    errorLine.textContent = "Wait for the current job to finish, or cancel it.";
    return false;
  }
  try {
    await submit(await pictureInput(action, url, params));
    return true;
  } catch (error) {
    errorLine.textContent = `${action === "upscale" ? "Upscale" : "Vary"} failed: ${actionMessage(error)}`;
    return false;
  }
}

function actionMessage(error) {
  if (error instanceof NetworkError) return `could not reach the server (${error.message}).`;
  if (error.status === 401) return "an API key is needed: enter it in the API key box above.";
  if (error.status === 503 || error.status === 429) {
    return `unavailable right now: ${error.message} Retry in ${error.retryAfter || 5} s.`;
  }
  return error.message;
}

function startWatching(job) {
  activeJob = job;
  localStorage.setItem(JOB_STORAGE, JSON.stringify(job));
  $("generate").disabled = true;
  $("cancel").hidden = false;
  $("job").hidden = false;
  $("results").replaceChildren();
  poll(job, 0);
}

async function poll(job, failures) {
  if (activeJob !== job) return;
  let prediction;
  try {
    prediction = await api(`${API.predictions}/${encodeURIComponent(job.id)}`);
  } catch (error) {
    if (error instanceof NetworkError || error.status >= 500) {
      // The job goes on server-side whatever happens to this connection: keep asking.
      const delay = Math.min(RECONNECT_MAX_MS, POLL_MS * 2 ** failures);
      $("job-status").textContent =
        `Connection lost (${error.message}); the job continues on the server. ` +
        `Reconnecting in ${Math.round(delay / 100) / 10} s…`;
      setTimeout(() => poll(job, failures + 1), delay);
      return;
    }
    if (error.status === 401) {
      // Keep the job: once a key is saved, watching resumes where it stopped.
      showError("generate", "An API key is needed to keep watching this job: enter it above.");
      return;
    }
    finishJob();
    showError("generate", error.status === 404 ? "The job is no longer known to the server." : error.message);
    return;
  }
  render(prediction);
  if (["succeeded", "failed", "canceled"].includes(prediction.status)) {
    finishJob();
    if (prediction.status === "succeeded") refreshGallery();
    return;
  }
  setTimeout(() => poll(job, 0), POLL_MS);
}

function finishJob() {
  activeJob = null;
  localStorage.removeItem(JOB_STORAGE);
  $("cancel").hidden = true;
  if (!$("generate").textContent.includes("(")) $("generate").disabled = false;
}

function render(prediction) {
  const status = $("job-status");
  const queue = $("queue-status");
  const bar = $("progress");
  const progress = prediction.progress || { step: 0, total: 0 };
  queue.textContent = "";
  if (prediction.status === "starting") {
    status.textContent = "Accepted; starting…";
    bar.removeAttribute("value");
  } else if (prediction.status === "processing") {
    if (progress.step > 0) {
      status.textContent = `Rendering: step ${progress.step} of ${progress.total}`;
      bar.max = progress.total;
      bar.value = progress.step;
    } else {
      status.textContent = "Waiting for the model…";
      bar.removeAttribute("value"); // indeterminate until the first denoising step
      if (prediction.queue) queue.textContent = queueText(prediction.queue);
    }
    // Previews come from the ingress's memory, progress from the record's last heartbeat: a
    // preview may arrive before the first step is recorded.
    if (prediction.previews) showPreviews(prediction);
  } else if (prediction.status === "succeeded") {
    const seconds = prediction.metrics && prediction.metrics.predict_time;
    status.textContent = seconds !== undefined ? `Done in ${seconds.toFixed(1)} s.` : "Done.";
    bar.max = progress.total || 1;
    bar.value = progress.total || 1;
    showImages(prediction);
  } else if (prediction.status === "failed") {
    $("results").replaceChildren(); // previews of a render that will never finish
    status.textContent = "Failed.";
    showError("generate", `The job failed: ${prediction.error || "no reason given"}`);
  } else if (prediction.status === "canceled") {
    $("results").replaceChildren();
    status.textContent = "Canceled.";
  }
}

function queueText(info) {
  const ahead = info.position === 0
    ? "Next in line"
    : `${info.position} image${info.position === 1 ? "" : "s"} ahead of yours`;
  const wait = info.expected_wait_s === null || info.expected_wait_s === undefined
    ? "expected wait unknown until a first image is measured (the model may be starting)"
    : `ready in about ${Math.max(1, Math.round(info.expected_wait_s))} s`;
  return `Queue: ${ahead}; ${wait}.`;
}

function showImages(prediction) {
  const input = prediction.input || {};
  const flags = prediction.nsfw_content_detected || [];
  const urls = [...(prediction.output || [])];
  const cards = (prediction.seeds || []).map((seed, index) => {
    if (flags[index]) return flaggedCard(seed);
    // The view's model: the catalogue's default when the input named none.
    return imageCard(urls.shift(), { ...input, model: input.model || prediction.model, seed });
  });
  $("results").replaceChildren(...cards);
}

// Live previews (when the server's model makes them): a small JPEG of each image's latest step, as a
// data URL, shown where the image will appear; the finished images replace them.
function showPreviews(prediction) {
  const cards = prediction.previews.map((url, index) => {
    const item = document.createElement("li");
    item.className = "card preview";
    const seed = (prediction.seeds || [])[index];
    if (url) {
      const image = document.createElement("img");
      image.src = url;
      image.alt = `Preview of the image with seed ${seed}, still rendering`;
      item.append(image);
    } else {
      item.textContent = `Seed ${seed}: no preview yet.`;
    }
    return item;
  });
  $("results").replaceChildren(...cards);
}

function flaggedCard(seed) {
  const item = document.createElement("li");
  item.className = "card";
  item.textContent = `Seed ${seed}: withheld, the safety checker flagged this image.`;
  return item;
}

function imageCard(url, params) {
  const item = document.createElement("li");
  item.className = "card";
  const figure = document.createElement("figure");
  const image = lazyImage(url, `${params.prompt} (seed ${params.seed})`, params.size);
  const caption = document.createElement("figcaption");
  const summary = document.createElement("p");
  summary.className = "params";
  summary.textContent = describe(params);
  image.addEventListener("load", () => {
    if (!params.size) summary.textContent = describe({ ...params, size: `${image.naturalWidth}x${image.naturalHeight}` });
  });
  const actions = document.createElement("div");
  actions.className = "actions";
  const reuse = document.createElement("button");
  reuse.type = "button";
  reuse.className = "secondary reuse-seed";
  reuse.textContent = "Reuse seed";
  reuse.setAttribute("aria-label", `Reuse seed ${params.seed}`);
  reuse.addEventListener("click", () => {
    FIELDS.find((field) => field.name === "seed").write(params.seed);
    $("seed").focus();
  });
  const download = document.createElement("a");
  download.href = url;
  download.download = `raydiffusion-${params.seed}.png`;
  download.className = "button secondary";
  download.textContent = "Download";
  download.setAttribute("aria-label", `Download the image with seed ${params.seed}`);
  const errorLine = document.createElement("p");
  errorLine.className = "error";
  errorLine.setAttribute("role", "alert");
  const vary = actionButton("Vary", `Vary the image with seed ${params.seed}`, async () => {
    await startFromPicture("vary", url, params, errorLine);
  });
  const upscale = actionButton("Upscale", `Upscale the image with seed ${params.seed}`, async () => {
    await startFromPicture("upscale", url, params, errorLine);
  });
  actions.append(reuse, vary, upscale, download);
  caption.append(summary, actions, errorLine);
  figure.append(image, caption);
  item.append(figure);
  return item;
}

function actionButton(text, label, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "secondary";
  button.textContent = text;
  button.setAttribute("aria-label", label);
  button.addEventListener("click", async () => {
    button.disabled = true; // one click, one job
    try {
      await onClick();
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

// Lazy and asynchronous: a slow image never holds up the page; width and height reserve its box.
function lazyImage(url, alt, size) {
  const image = document.createElement("img");
  image.loading = "lazy";
  image.decoding = "async";
  image.alt = alt;
  const match = /^(\d+)x(\d+)$/.exec(size || "");
  if (match) {
    image.width = Number(match[1]);
    image.height = Number(match[2]);
  }
  image.src = url;
  return image;
}

function describe(params) {
  const parts = [`seed ${params.seed}`];
  if (params.model) parts.push(modelText(params.model, params.loras));
  if (params.kind && params.kind !== "txt2img") parts.push(`${params.kind} at strength ${params.strength}`);
  if (params.size) parts.push(params.size);
  if (params.steps !== undefined) parts.push(`${params.steps} steps`);
  if (params.guidance_scale !== undefined) parts.push(`guidance ${params.guidance_scale}`);
  if (params.scheduler) parts.push(params.scheduler);
  if (params.negative_prompt) parts.push(`not: ${params.negative_prompt}`);
  return parts.join(" · ");
}

async function cancelJob() {
  const job = activeJob;
  if (!job) return;
  try {
    render(await api(`${API.predictions}/${encodeURIComponent(job.id)}/cancel`, { method: "POST" }));
  } catch (error) {
    reportError(error);
  }
}

// --- gallery -----------------------------------------------------------------------------------

let galleryCursor = null;
let galleryRecords = new Map(); // image id -> its stored record

async function refreshGallery() {
  galleryCursor = null;
  galleryRecords = new Map();
  $("gallery").replaceChildren();
  await loadGalleryPage();
}

async function loadGalleryPage() {
  const query = new URLSearchParams({ limit: String(GALLERY_LIMIT) });
  if (galleryCursor) query.set("cursor", galleryCursor);
  $("gallery-status").textContent = "Loading…";
  let page;
  try {
    page = await api(`${API.gallery}?${query}`);
  } catch (error) {
    $("gallery-status").textContent = error.status === 401
      ? "The gallery needs an API key."
      : `Could not load the gallery: ${error.message}`;
    return;
  }
  for (const record of page.data) {
    if (galleryRecords.has(record.id)) continue;
    galleryRecords.set(record.id, record);
    $("gallery").append(galleryItem(record));
  }
  galleryCursor = page.next_cursor;
  $("gallery-more").hidden = !page.has_more;
  $("gallery-status").textContent = galleryRecords.size ? "" : "No images yet.";
}

function recordParams(record) {
  return {
    prompt: record.prompt,
    negative_prompt: record.negative_prompt,
    size: `${record.width}x${record.height}`,
    steps: record.steps,
    guidance_scale: record.guidance_scale,
    scheduler: record.scheduler,
    seed: record.seed,
    model: record.model,
    loras: record.loras || [],
  };
}

// "tiny-sd-b + tiny-ink 0.5": what drew an image, on its card, its gallery entry and its dialog.
function modelText(model, loras) {
  return [model, ...loraTexts(loras)].join(" + ");
}

function loraTexts(loras) {
  return (loras || []).map((lora) => {
    const { name, weight } = typeof lora === "string" ? parseLora(lora) : lora;
    return weight === undefined || weight === null ? name : `${name} ${weight}`;
  });
}

function parseLora(text) {
  const [name, weight] = String(text).split(":");
  return { name, weight: weight === undefined ? undefined : Number(weight) };
}

function galleryItem(record) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thumb";
  button.dataset.imageId = record.id;
  button.setAttribute("aria-haspopup", "dialog");
  button.setAttribute("aria-label", `Parameters of “${record.prompt}”, seed ${record.seed}`);
  const image = lazyImage(record.url, "", `${record.width}x${record.height}`);
  button.append(image);
  button.addEventListener("click", () => openRecord(record));
  const drawnBy = document.createElement("span");
  drawnBy.className = "thumb-model";
  drawnBy.textContent = record.model ? modelText(record.model, record.loras) : "";
  item.append(button, drawnBy);
  return item;
}

let dialogRecord = null;

function openRecord(record) {
  dialogRecord = record;
  const params = recordParams(record);
  $("dialog-image").src = record.url;
  $("dialog-image").alt = `${record.prompt} (seed ${record.seed})`;
  const rows = [
    ["Prompt", params.prompt],
    ["Negative prompt", params.negative_prompt || "none"],
    ["Size", params.size],
    ["Steps", params.steps],
    ["Guidance", params.guidance_scale],
    ["Scheduler", params.scheduler],
    ["Seed", params.seed],
    ["Kind", record.kind || "txt2img"],
    ["Strength", record.strength ?? "none (from text)"],
    ["Model", record.model],
    ["LoRAs", loraTexts(record.loras).join(", ") || "none"],
    ["Render time", record.timings ? `${record.timings.render_s} s (batch of ${record.timings.batch_size})` : "?"],
    ["Created", new Date(record.created * 1000).toLocaleString()],
  ];
  const list = $("dialog-params");
  list.replaceChildren();
  for (const [name, value] of rows) {
    const term = document.createElement("dt");
    term.textContent = name;
    const detail = document.createElement("dd");
    detail.textContent = String(value);
    detail.dataset.param = name;
    list.append(term, detail);
  }
  $("dialog-error").textContent = "";
  $("image-dialog").showModal();
  $("dialog-use").focus();
}

async function dialogAction(action) {
  if (!dialogRecord) return;
  const record = dialogRecord;
  if (await startFromPicture(action, record.url, recordParams(record), $("dialog-error"))) {
    $("image-dialog").close();
    $("results-title").scrollIntoView({ block: "nearest" });
  }
}

// --- models and LoRAs ---------------------------------------------------------------------------

const FAMILY_NAMES = { sd15: "SD 1.5", sd2: "SD 2.x", sdxl: "SDXL", "sd-turbo": "SD-Turbo", "sdxl-turbo": "SDXL-Turbo" };
let catalogue = null; // /v1/models: {models, limits}

async function loadModels() {
  try {
    const listing = await api(API.models);
    catalogue = { models: listing.data || [], limits: listing.limits || {} };
    fillModelSelect();
  } catch (error) {
    $("model-info").textContent = error.status === 401
      ? "Model information needs an API key."
      : `Model information unavailable: ${error.message}`;
  }
}

function defaultModel() {
  return catalogue.models.find((model) => model.default) || catalogue.models[0];
}

function selectedModel() {
  if (!catalogue) return null;
  return catalogue.models.find((model) => model.id === $("model").value) || defaultModel();
}

// A reload of the listing (a key was saved) keeps the user's choice when it still exists.
function fillModelSelect() {
  const select = $("model");
  const chosen = select.value;
  const options = catalogue.models.map((model) => {
    const option = document.createElement("option");
    option.value = model.id;
    const family = FAMILY_NAMES[model.family] || model.family || "";
    option.textContent = `${model.id}${family ? ` (${family})` : ""}${model.default ? ", default" : ""}`;
    return option;
  });
  select.replaceChildren(...options);
  const keep = catalogue.models.some((model) => model.id === chosen);
  const fallback = defaultModel();
  select.value = keep ? chosen : fallback ? fallback.id : "";
  applyModel();
}

function selectModel(id) {
  if (!catalogue || !catalogue.models.some((model) => model.id === id)) {
    // Not (or no longer) in the catalogue: sent as is, so the server's 400 names it.
    const option = document.createElement("option");
    option.value = id;
    option.textContent = `${id} (not listed)`;
    $("model").append(option);
  }
  $("model").value = id;
  applyModel();
}

// The form's defaults are the selected model's: empty fields show them as placeholders and the
// server applies them (the request names the model), so a switch never overwrites typed values.
function applyModel() {
  if (!catalogue) return; // settings loaded before the listing: fillModelSelect applies them
  const model = selectedModel();
  showModel(model);
  if (!model) return;
  const family = FAMILY_NAMES[model.family] || model.family || "";
  $("model-hint").textContent = [family, model.description].filter(Boolean).join(" · ");
  const defaults = model.defaults || {};
  const placeholder = (value) => (value === undefined || value === null ? "model default" : `${value} (model default)`);
  $("size").placeholder = placeholder(defaults.size);
  $("steps").placeholder = placeholder(defaults.steps);
  $("guidance_scale").placeholder = placeholder(defaults.guidance_scale);
  $("scheduler").options[0].textContent = placeholder(defaults.scheduler);
  buildLoraList(model);
}

// One row per LoRA usable with the model: a checkbox, then its weight as a slider and a number
// bounded by the server's max_lora_weight. Picks of a LoRA the new model can also use survive.
function buildLoraList(model) {
  const limits = catalogue.limits;
  const max = limits.max_loras_per_request ?? 0;
  const bound = limits.max_lora_weight ?? 1;
  const kept = new Map((readLoras() || []).map((lora) => [lora.name, lora.weight]));
  const rows = (model.loras || []).map((lora, index) => {
    const row = document.createElement("li");
    row.className = "lora";
    row.dataset.lora = lora.name;
    const label = document.createElement("label");
    label.className = "check";
    const use = document.createElement("input");
    use.type = "checkbox";
    use.id = `lora-use-${index}`;
    use.className = "lora-use";
    label.append(use, ` ${lora.name}`);
    const slider = document.createElement("input");
    slider.type = "range";
    const number = document.createElement("input");
    number.type = "number";
    number.inputMode = "decimal";
    for (const input of [slider, number]) {
      input.min = String(-bound);
      input.max = String(bound);
      input.step = "0.05";
      input.className = "lora-weight";
    }
    slider.setAttribute("aria-label", `${lora.name} weight`);
    number.setAttribute("aria-label", `${lora.name} weight value`);
    const weight = kept.has(lora.name) ? kept.get(lora.name) : lora.weight;
    slider.value = number.value = String(weight);
    use.checked = kept.has(lora.name);
    slider.addEventListener("input", () => { number.value = slider.value; });
    number.addEventListener("input", () => { slider.value = number.value; });
    use.addEventListener("change", syncLoraLimit);
    row.append(label, slider, number);
    return row;
  });
  $("lora-list").replaceChildren(...rows);
  $("loras").hidden = rows.length === 0 || max === 0;
  $("loras-hint").textContent =
    `Up to ${max} at once, each weighted from ${-bound} to ${bound} (the listed default is preset).`;
  syncLoraLimit();
}

// At max_loras_per_request, the unpicked ones are disabled; an unpicked LoRA's weight too.
function syncLoraLimit() {
  const max = (catalogue && catalogue.limits.max_loras_per_request) ?? 0;
  const rows = [...$("lora-list").children];
  const picked = rows.filter((row) => row.querySelector(".lora-use").checked).length;
  for (const row of rows) {
    const use = row.querySelector(".lora-use");
    use.disabled = !use.checked && picked >= max;
    for (const input of row.querySelectorAll(".lora-weight")) input.disabled = !use.checked;
  }
}

function readLoras() {
  const picked = [...$("lora-list").children].filter((row) => row.querySelector(".lora-use").checked);
  if (!picked.length) return undefined;
  return picked.map((row) => ({
    name: row.dataset.lora,
    weight: numberOrText(row.querySelector("input[type=number]").value),
  }));
}

function writeLoras(value) {
  const wanted = new Map((value || []).map((lora) => {
    const { name, weight } = typeof lora === "string" ? parseLora(lora) : lora;
    return [name, weight];
  }));
  for (const row of $("lora-list").children) {
    const use = row.querySelector(".lora-use");
    use.checked = wanted.has(row.dataset.lora);
    const weight = wanted.get(row.dataset.lora);
    if (weight !== undefined && weight !== null) {
      for (const input of row.querySelectorAll(".lora-weight")) input.value = String(weight);
    }
  }
  syncLoraLimit();
}

function showModel(model) {
  if (!model) {
    $("model-info").textContent = "No model is configured.";
    return;
  }
  pictureDefaults = model.image_inputs || null;
  if (pictureDefaults) {
    $("strength").placeholder = `server default (${pictureDefaults.default_strength})`;
  }
  const parts = [`Model ${model.id}`, `safety checker ${model.safety_checker ? "on" : "off"}`];
  const replica = model.replica;
  if (replica) {
    parts.push(
      `last replica seen ${Math.round(replica.age_s)} s ago: ${replica.device} ${replica.dtype}, ` +
      `batches of up to ${replica.max_batch_size}`,
    );
  } else {
    parts.push("no image rendered yet, so the first may wait for a model replica to start");
  }
  $("model-info").textContent = parts.join(" · ");
}

function refreshAll() {
  loadModels();
  refreshGallery();
}

// --- wiring ------------------------------------------------------------------------------------

function main() {
  setUpKeyForm();
  $("seed-random").addEventListener("change", () => {
    syncSeedToggle();
    if (!$("seed-random").checked) $("seed").focus();
  });
  syncSeedToggle();
  $("generate-form").addEventListener("submit", generate);
  $("model").addEventListener("change", applyModel);
  $("cancel").addEventListener("click", cancelJob);
  $("gallery-more").addEventListener("click", loadGalleryPage);
  $("dialog-close").addEventListener("click", () => $("image-dialog").close());
  $("dialog-vary").addEventListener("click", () => dialogAction("vary"));
  $("dialog-upscale").addEventListener("click", () => dialogAction("upscale"));
  $("clear-picture").addEventListener("click", () => {
    clearPicture();
    $("image").focus();
  });
  $("dialog-use").addEventListener("click", () => {
    $("image-dialog").close();
    if (dialogRecord) loadIntoForm(recordParams(dialogRecord));
  });
  for (const field of FIELDS) {
    const input = $(field.name);
    if (input) {
      input.addEventListener("input", () => clearError(field.name));
      input.addEventListener("change", () => clearError(field.name)); // file pickers and checkboxes
    }
  }
  refreshAll();
  const saved = localStorage.getItem(JOB_STORAGE);
  if (saved) {
    try {
      startWatching(JSON.parse(saved));
    } catch {
      localStorage.removeItem(JOB_STORAGE);
    }
  }
}

main();
