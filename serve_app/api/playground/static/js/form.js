// The form: which input becomes which field of a prediction's "input", and errors shown next to
// the field they name.
import { $, numberOrText } from "./dom.js";
import { NetworkError, FieldError } from "./api.js";
import { selectModel, readLoras, writeLoras, writeScheduler } from "./models.js";
import { activeJob } from "./job.js";

// Every form input that becomes a field of the prediction's "input". A capability the API gains
// is one element in index.html plus one entry here: read() gives the value to send (undefined:
// leave it to the server; a promise for a file), write() loads a stored one. The model comes
// before the LoRAs and the scheduler: loading settings picks the model, whose LoRAs and samplers
// are then the ones on offer. An input the selected model cannot take (models.js hides or
// disables it) is never read, so what is sent is what that model can honour.
export const FIELDS = [
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
  numberField("true_cfg_scale"), // FLUX.1 only: above 1 the negative prompt applies
  { ...textField("scheduler"), write: writeScheduler },
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
    read: () => ($("upscale").checked && offered("upscale") ? true : undefined),
    write: (value) => { $("upscale").checked = Boolean(value); },
  },
];

export const PICTURE_FIELDS = ["image", "mask", "strength", "upscale"];

// What the API calls a field that is shown under another name here.
export const FIELD_ALIASES = { init_image: "image" };

// Shown and enabled: an input in a hidden field (the negative prompt of a model that takes none) or
// a disabled one (a picture input of a model without that task) is not sent.
export function offered(name) {
  const input = $(name);
  return !input.disabled && !input.closest("[hidden]");
}

export function textField(name) {
  return {
    name,
    read: () => (offered(name) ? $(name).value.trim() || undefined : undefined),
    write: (value) => { $(name).value = value ?? ""; },
  };
}

export function numberField(name) {
  return {
    name,
    read: () => (offered(name) ? numberOrText($(name).value) : undefined),
    write: (value) => { $(name).value = value ?? ""; },
  };
}

// A picked file goes as a data URL, whatever it holds: the API decodes and checks it, and its 400
// names this field. A file input can only be cleared, never filled from a stored value.
export function fileField(name) {
  return {
    name,
    read: () => {
      const file = offered(name) ? $(name).files[0] : undefined;
      return file ? dataUrl(file, name) : undefined;
    },
    write: (value) => { if (!value) $(name).value = ""; },
  };
}

export function dataUrl(file, name) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new FieldError(name, `Could not read ${file.name}: ${reader.error}`));
    reader.readAsDataURL(file);
  });
}

export function fieldOf(param) {
  // "input.size" (the prediction body's path) and "size" both belong to the size field;
  // "input.loras[0].name" to the LoRA picker.
  const sent = String(param || "").replace(/^input\./, "").replace(/[[.].*$/, "");
  const name = FIELD_ALIASES[sent] || sent;
  return FIELDS.some((field) => field.name === name) ? name : null;
}

export function showError(name, message) {
  const target = $(`${name}-error`);
  target.textContent = message;
  const input = $(name);
  if (input && name !== "generate") input.setAttribute("aria-invalid", "true");
}

export function clearError(name) {
  $(`${name}-error`).textContent = "";
  const input = $(name);
  if (input) input.removeAttribute("aria-invalid");
}

export function clearAllErrors() {
  for (const field of FIELDS) clearError(field.name);
  clearError("generate");
}

export function reportError(error) {
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
export function holdButton(seconds) {
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

export function syncSeedToggle() {
  $("seed").disabled = $("seed-random").checked;
}

export async function readInput() {
  const input = {};
  for (const field of FIELDS) {
    const value = await field.read();
    if (value !== undefined) input[field.name] = value;
  }
  return input;
}

// Loaded settings make the same image again, so a picture left in the form must not turn them
// into an image-to-image job.
export function loadIntoForm(params) {
  clearPicture();
  for (const field of FIELDS) {
    if (field.name in params && field.name !== "n") field.write(params[field.name]);
  }
  clearAllErrors();
  $("prompt").focus();
}

export function clearPicture() {
  for (const name of PICTURE_FIELDS) {
    FIELDS.find((field) => field.name === name).write(undefined);
    clearError(name);
  }
}
