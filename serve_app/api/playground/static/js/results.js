// The finished images of a job: a card each, with its parameters and actions.
import { $ } from "./dom.js";
import { modelText, modelCan } from "./models.js";
import { FIELDS } from "./form.js";
import { startFromPicture } from "./job.js";

// A job's cards (its previews, then its images) replace that job's earlier cards only, at the top:
// the cards of jobs before it stay below.
export function showJobCards(jobId, cards) {
  const list = $("results");
  for (const card of [...list.children]) {
    if (card.dataset.job === jobId) card.remove();
  }
  for (const card of cards) card.dataset.job = jobId;
  list.prepend(...cards);
}

export function showImages(prediction) {
  const input = prediction.input || {};
  const flags = prediction.nsfw_content_detected || [];
  const urls = [...(prediction.output || [])];
  const cards = (prediction.seeds || []).map((seed, index) => {
    if (flags[index]) return flaggedCard(seed);
    // The view's model: the catalogue's default when the input named none.
    return imageCard(urls.shift(), { ...input, model: input.model || prediction.model, seed });
  });
  showJobCards(prediction.id, cards);
}

export function flaggedCard(seed) {
  const item = document.createElement("li");
  item.className = "card";
  item.textContent = `Seed ${seed}: withheld, the safety checker flagged this image.`;
  return item;
}

export function imageCard(url, params) {
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
  // Only what the image's model can do: Vary is an image-to-image job, Upscale an upscale one.
  vary.hidden = !modelCan(params.model, "img2img");
  upscale.hidden = !modelCan(params.model, "upscale");
  actions.append(reuse, vary, upscale, download);
  caption.append(summary, actions, errorLine);
  figure.append(image, caption);
  item.append(figure);
  return item;
}

export function actionButton(text, label, onClick) {
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
export function lazyImage(url, alt, size) {
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

export function describe(params) {
  const parts = [`seed ${params.seed}`];
  if (params.model) parts.push(modelText(params.model, params.loras));
  if (params.kind && params.kind !== "txt2img") parts.push(`${params.kind} at strength ${params.strength}`);
  if (params.size) parts.push(params.size);
  if (params.steps !== undefined) parts.push(`${params.steps} steps`);
  if (params.guidance_scale !== undefined) parts.push(`guidance ${params.guidance_scale}`);
  if (params.true_cfg_scale !== undefined) parts.push(`true CFG ${params.true_cfg_scale}`);
  if (params.scheduler) parts.push(params.scheduler);
  if (params.negative_prompt) parts.push(`not: ${params.negative_prompt}`);
  return parts.join(" · ");
}
