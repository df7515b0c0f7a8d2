// The gallery of stored images (/v1/images) and the parameter dialog of one of them.
import { $ } from "./dom.js";
import { API, api } from "./api.js";
import { modelText, loraTexts, modelCan } from "./models.js";
import { startFromPicture } from "./job.js";
import { lazyImage } from "./results.js";

export const GALLERY_LIMIT = Number(new URLSearchParams(location.search).get("gallery_limit")) || 12;

export let galleryCursor = null;

export let galleryRecords = new Map(); // image id -> its stored record

export async function refreshGallery() {
  galleryCursor = null;
  galleryRecords = new Map();
  $("gallery").replaceChildren();
  await loadGalleryPage();
}

export async function loadGalleryPage() {
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

export function recordParams(record) {
  return {
    prompt: record.prompt,
    negative_prompt: record.negative_prompt,
    size: `${record.width}x${record.height}`,
    steps: record.steps,
    guidance_scale: record.guidance_scale,
    // Only where it was in use (above 1): other families refuse the field (a 400 naming it).
    true_cfg_scale: record.true_cfg_scale > 1 ? record.true_cfg_scale : undefined,
    scheduler: record.scheduler,
    seed: record.seed,
    model: record.model,
    loras: record.loras || [],
  };
}

export function galleryItem(record) {
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

export let dialogRecord = null;

export function openRecord(record) {
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
    ...(params.true_cfg_scale ? [["True CFG scale", params.true_cfg_scale]] : []),
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
  // As on a result's card: only the actions the image's model can run.
  $("dialog-vary").hidden = !modelCan(record.model, "img2img");
  $("dialog-upscale").hidden = !modelCan(record.model, "upscale");
  $("image-dialog").showModal();
  $("dialog-use").focus();
}

export async function dialogAction(action) {
  if (!dialogRecord) return;
  const record = dialogRecord;
  if (await startFromPicture(action, record.url, recordParams(record), $("dialog-error"))) {
    $("image-dialog").close();
    $("results-title").scrollIntoView({ block: "nearest" });
  }
}
