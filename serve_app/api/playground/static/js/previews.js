// Live previews while a job renders, where its images will appear.
import { showJobCards } from "./results.js";

// Live previews (when the server's model makes them): a small JPEG of each image's latest step, as a
// data URL, shown where the image will appear; the finished images replace them.
export function showPreviews(prediction) {
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
  showJobCards(prediction.id, cards);
}
