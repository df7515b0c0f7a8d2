// The catalogue from /v1/models: the model picker, its defaults as placeholders, the LoRA picker,
// the header line that says what the selected model is, and the form following what the model can
// do (its `capabilities`: family, tasks, samplers, negative prompt, true CFG).
import { $, numberOrText } from "./dom.js";
import { API, api } from "./api.js";

// Samplers as A1111 users know them; a name missing here is shown as the API spells it.
export const SCHEDULER_LABELS = {
  ddim: "DDIM",
  pndm: "PNDM",
  euler: "Euler",
  euler_a: "Euler a",
  dpmpp_2m: "DPM++ 2M",
  dpmpp_2m_karras: "DPM++ 2M Karras",
  dpmpp_sde: "DPM++ SDE",
  dpmpp_sde_karras: "DPM++ SDE Karras",
  heun: "Heun",
  lms: "LMS",
  unipc: "UniPC",
  flow_euler: "Flow Euler",
};

// What the page calls each task a picture input can start (capabilities.tasks' names).
export const TASK_NAMES = { img2img: "image to image", inpaint: "inpainting", upscale: "upscale" };

export let catalogue = null; // /v1/models: {models, limits}

export let pictureDefaults = null; // /v1/models' image_inputs: the strengths the service's own actions use

export async function loadModels() {
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

export function defaultModel() {
  return catalogue.models.find((model) => model.default) || catalogue.models[0];
}

export function selectedModel() {
  if (!catalogue) return null;
  return catalogue.models.find((model) => model.id === $("model").value) || defaultModel();
}

// A reload of the listing (a key was saved) keeps the user's choice when it still exists.
export function fillModelSelect() {
  const select = $("model");
  const chosen = select.value;
  const options = catalogue.models.map((model) => {
    const option = document.createElement("option");
    option.value = model.id;
    const family = familyName(model);
    option.textContent = `${model.id}${family ? ` (${family})` : ""}${model.default ? ", default" : ""}`;
    return option;
  });
  select.replaceChildren(...options);
  const keep = catalogue.models.some((model) => model.id === chosen);
  const fallback = defaultModel();
  select.value = keep ? chosen : fallback ? fallback.id : "";
  applyModel();
}

export function selectModel(id) {
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
export function applyModel() {
  if (!catalogue) return; // settings loaded before the listing: fillModelSelect applies them
  const model = selectedModel();
  showModel(model);
  if (!model) return;
  $("model-hint").textContent = [familyName(model), model.description].filter(Boolean).join(" · ");
  $("model-caps").textContent = capabilityText(model);
  const defaults = model.defaults || {};
  // Short enough to fit its field at phone width (the browser test measures them); the hint under
  // Model says they are that model's.
  const placeholder = (value) => (value === undefined || value === null ? "default" : `${value} (default)`);
  $("size").placeholder = placeholder(defaults.size);
  $("steps").placeholder = placeholder(defaults.steps);
  $("guidance_scale").placeholder = placeholder(defaults.guidance_scale);
  fillSchedulers(model, placeholder(defaults.scheduler));
  applyCapabilities(model);
  buildLoraList(model);
}

// The family's display name as /v1/models reports it (the raw family key from an older server).
export function familyName(model) {
  return (model.capabilities && model.capabilities.family_name) || model.family || "";
}

// Absent capabilities (a server before them) allow everything: the API stays the judge.
export function capabilitiesOf(model) {
  const caps = (model && model.capabilities) || {};
  return {
    tasks: caps.tasks || ["txt2img", ...Object.keys(TASK_NAMES)],
    schedulers: caps.schedulers || Object.keys(SCHEDULER_LABELS),
    negativePrompt: caps.negative_prompt || "cfg",
    trueCfg: Boolean(caps.true_cfg_scale),
    guidance: caps.guidance || "cfg",
  };
}

// Whether the model with this id can run a task; a model the catalogue does not list (or a page
// without the catalogue yet) may, and the server's 400 says otherwise.
export function modelCan(id, task) {
  const model = catalogue && catalogue.models.find((entry) => entry.id === id);
  return !model || capabilitiesOf(model).tasks.includes(task);
}

// One line under the model's hint: the jobs it runs and what its guidance and negative prompt mean.
export function capabilityText(model) {
  const caps = capabilitiesOf(model);
  const tasks = ["text to image", ...Object.keys(TASK_NAMES).filter((task) => caps.tasks.includes(task))
    .map((task) => TASK_NAMES[task])];
  const parts = [`Tasks: ${tasks.join(", ")}`];
  if (caps.negativePrompt === "none") parts.push("no negative prompt");
  if (caps.guidance === "distilled") parts.push("guidance distilled into the model");
  if (caps.guidance === "ignored") parts.push("ignores guidance");
  return `${parts.join("; ")}.`;
}

// The model's own samplers after the "default" option; a choice the new model also offers stays.
export function fillSchedulers(model, defaultText) {
  const select = $("scheduler");
  const chosen = select.value;
  const names = capabilitiesOf(model).schedulers.filter((name) => name !== "default");
  const first = document.createElement("option");
  first.value = "";
  first.textContent = defaultText;
  const options = names.map((name) => {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = SCHEDULER_LABELS[name] || name;
    return option;
  });
  select.replaceChildren(first, ...options);
  select.value = names.includes(chosen) ? chosen : "";
}

// A stored scheduler the selected model does not list is kept, as sent before, so the server's
// 400 names it rather than the page dropping it silently.
export function writeScheduler(value) {
  const select = $("scheduler");
  if (value && ![...select.options].some((option) => option.value === value)) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = `${SCHEDULER_LABELS[value] || value} (not listed)`;
    select.append(option);
  }
  select.value = value || "";
}

// Inputs the model cannot take are hidden (negative prompt, true CFG) or disabled with a hint (the
// picture inputs); a hidden or disabled input is never sent (form.js), its value stays for a
// model that takes it.
export function applyCapabilities(model) {
  const caps = capabilitiesOf(model);
  $("negative_prompt-field").hidden = caps.negativePrompt === "none";
  $("negative_prompt-hint").textContent = caps.negativePrompt === "true_cfg"
    ? "Applied only with True CFG scale above 1 (twice the time)."
    : "";
  $("true_cfg_scale-field").hidden = !caps.trueCfg;
  const can = (task) => caps.tasks.includes(task);
  const picture = can("img2img") || can("inpaint") || can("upscale");
  const enabled = {
    image: picture,
    mask: can("inpaint"),
    strength: picture,
    upscale: can("upscale"),
  };
  for (const [name, on] of Object.entries(enabled)) $(name).disabled = !on;
  $("clear-picture").disabled = !picture;
  const missing = Object.keys(TASK_NAMES).filter((task) => !can(task)).map((task) => TASK_NAMES[task]);
  $("picture-hint").textContent = !picture
    ? "This model draws from text only: no picture inputs."
    : missing.length
      ? `Not with this model: ${missing.join(", ")}.`
      : "";
}

// One row per LoRA usable with the model: a checkbox, then its weight as a slider and a number
// bounded by the server's max_lora_weight. Picks of a LoRA the new model can also use survive.
export function buildLoraList(model) {
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
export function syncLoraLimit() {
  const max = (catalogue && catalogue.limits.max_loras_per_request) ?? 0;
  const rows = [...$("lora-list").children];
  const picked = rows.filter((row) => row.querySelector(".lora-use").checked).length;
  for (const row of rows) {
    const use = row.querySelector(".lora-use");
    use.disabled = !use.checked && picked >= max;
    for (const input of row.querySelectorAll(".lora-weight")) input.disabled = !use.checked;
  }
}

export function readLoras() {
  const picked = [...$("lora-list").children].filter((row) => row.querySelector(".lora-use").checked);
  if (!picked.length) return undefined;
  return picked.map((row) => ({
    name: row.dataset.lora,
    weight: numberOrText(row.querySelector("input[type=number]").value),
  }));
}

export function writeLoras(value) {
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

export function showModel(model) {
  if (!model) {
    $("model-info").textContent = "No model is configured.";
    return;
  }
  pictureDefaults = model.image_inputs || null;
  if (pictureDefaults) {
    $("strength").placeholder = `${pictureDefaults.default_strength} (default)`;
  }
  // What runs, as /v1/models reports it: a replica's own word (null until one has rendered), so a
  // model without a checker is never shown as checked because the setting is on.
  const safety = model.safety_checker === true
    ? "safety checker on"
    : model.safety_checker === false
      ? "no safety checker"
      : "safety checker not known until a first image";
  const parts = [`Model ${model.id}`, safety];
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

// "tiny-sd-b + tiny-ink 0.5": what drew an image, on its card, its gallery entry and its dialog.
export function modelText(model, loras) {
  return [model, ...loraTexts(loras)].join(" + ");
}

export function loraTexts(loras) {
  return (loras || []).map((lora) => {
    const { name, weight } = typeof lora === "string" ? parseLora(lora) : lora;
    return weight === undefined || weight === null ? name : `${name} ${weight}`;
  });
}

export function parseLora(text) {
  const [name, weight] = String(text).split(":");
  return { name, weight: weight === undefined ? undefined : Number(weight) };
}
