// A job from Generate (or Vary, Upscale) to its images: submit a prediction, poll it, show its state.
import { $ } from "./dom.js";
import { API, NetworkError, api } from "./api.js";
import { pictureDefaults, loadModels, readLoras } from "./models.js";
import { showError, clearAllErrors, reportError, readInput } from "./form.js";
import { showImages, showJobCards } from "./results.js";
import { showPreviews } from "./previews.js";
import { refreshGallery } from "./gallery.js";

export const JOB_STORAGE = "raydiffusion.activePrediction"; // a reload resumes the job it was watching

export const POLL_MS = 500;

export const RECONNECT_MAX_MS = 5000;

export let activeJob = null; // {id, input}

export async function generate(event) {
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

// Generate starts over; Vary and Upscale (keepResults) add their images above the earlier ones, so
// a variation can be compared with the picture it came from.
export async function submit(input, { keepResults = false } = {}) {
  const prediction = await api(API.predictions, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ input }),
  });
  if (!keepResults) $("results").replaceChildren();
  startWatching({ id: prediction.id, input: prediction.input || input });
  render(prediction);
}

// The stored image's URL is sent as is: the API reads it from the store by its id, never fetches.
// Like its steps and scheduler, the image's own model and LoRAs (the selected ones when its record
// predates the catalogue): a variation of a picture is drawn by what drew it.
export async function pictureInput(action, url, params) {
  const input = { prompt: params.prompt, image: url };
  for (const name of ["negative_prompt", "steps", "guidance_scale", "true_cfg_scale", "scheduler"]) {
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
export async function startFromPicture(action, url, params, errorLine) {
  errorLine.textContent = "";
  if (activeJob) {
    errorLine.textContent = "Wait for the current job to finish, or cancel it.";
    return false;
  }
  try {
    await submit(await pictureInput(action, url, params), { keepResults: true });
    return true;
  } catch (error) {
    errorLine.textContent = `${action === "upscale" ? "Upscale" : "Vary"} failed: ${actionMessage(error)}`;
    return false;
  }
}

export function actionMessage(error) {
  if (error instanceof NetworkError) return `could not reach the server (${error.message}).`;
  if (error.status === 401) return "an API key is needed: enter it in the API key box above.";
  if (error.status === 503 || error.status === 429) {
    return `unavailable right now: ${error.message} Retry in ${error.retryAfter || 5} s.`;
  }
  return error.message;
}

export function startWatching(job) {
  activeJob = job;
  localStorage.setItem(JOB_STORAGE, JSON.stringify(job));
  $("generate").disabled = true;
  $("cancel").hidden = false;
  $("job").hidden = false;
  poll(job, 0);
}

export async function poll(job, failures) {
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
    if (prediction.status === "succeeded") {
      refreshGallery();
      loadModels(); // the header now reports the replica that rendered it (its safety checker)
    }
    return;
  }
  setTimeout(() => poll(job, 0), POLL_MS);
}

export function finishJob() {
  activeJob = null;
  localStorage.removeItem(JOB_STORAGE);
  $("cancel").hidden = true;
  if (!$("generate").textContent.includes("(")) $("generate").disabled = false;
}

export function render(prediction) {
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
      status.textContent = progressText(progress);
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
    showJobCards(prediction.id, []); // previews of a render that will never finish
    status.textContent = "Failed.";
    showError("generate", `The job failed: ${prediction.error || "no reason given"}`);
  } else if (prediction.status === "canceled") {
    showJobCards(prediction.id, []);
    status.textContent = "Canceled.";
  }
}

// One image: its steps. Several: the steps of all of them, said to be a total, and each image's own
// (progress.images), so "9 of 12" never reads as one image's progress.
export function progressText(progress) {
  const images = progress.images || [];
  if (images.length <= 1) return `Rendering: step ${progress.step} of ${progress.total}`;
  const each = images.map((image, index) => `image ${index + 1}: ${image.step} of ${image.total}`);
  return `Rendering ${images.length} images: step ${progress.step} of ${progress.total} in all (${each.join(", ")})`;
}

export function queueText(info) {
  const ahead = info.position === 0
    ? "Next in line"
    : `${info.position} image${info.position === 1 ? "" : "s"} ahead of yours`;
  const wait = info.expected_wait_s === null || info.expected_wait_s === undefined
    ? "expected wait unknown until a first image is measured (the model may be starting)"
    : `ready in about ${Math.max(1, Math.round(info.expected_wait_s))} s`;
  return `Queue: ${ahead}; ${wait}.`;
}

export async function cancelJob() {
  const job = activeJob;
  if (!job) return;
  try {
    render(await api(`${API.predictions}/${encodeURIComponent(job.id)}/cancel`, { method: "POST" }));
  } catch (error) {
    reportError(error);
  }
}
