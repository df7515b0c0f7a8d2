// The browser playground: a client of the public HTTP API only (/v1/models, /v1/predictions,
// /v1/images), so whatever it shows a user can also do with curl. Plain JavaScript modules, no build
// step and nothing loaded from elsewhere: the page must work offline, straight from the package.
//
// This is the entry point (index.html loads it with <script type="module">): it wires the page's
// controls and starts it. api.js talks to the server, models.js holds the catalogue and the model and
// LoRA pickers, form.js maps inputs to the prediction's fields, job.js follows a prediction,
// results.js and previews.js draw it, gallery.js lists stored images. Modules import each other's
// functions (some in a cycle, which ES modules allow for function declarations); state a module
// owns is exported as a live binding and only that module assigns it.
import { $ } from "./dom.js";
import { KEY_STORAGE } from "./api.js";
import { loadModels, applyModel } from "./models.js";
import { FIELDS, clearError, syncSeedToggle, loadIntoForm, clearPicture } from "./form.js";
import { JOB_STORAGE, activeJob, generate, startWatching, poll, cancelJob } from "./job.js";
import { refreshGallery, loadGalleryPage, recordParams, dialogRecord, dialogAction } from "./gallery.js";

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

function refreshAll() {
  loadModels();
  refreshGallery();
}

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
