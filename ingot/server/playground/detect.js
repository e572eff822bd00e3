// Detection: an uploaded or dropped image goes to /v1/detections once, with a low threshold; the slider then
// filters the answer here, redrawing the boxes without asking the server again.

import { api } from "./api.js";

const $ = (id) => document.getElementById(id);
const REQUEST_THRESHOLD = 0.05; // the slider's minimum: everything it can show is in the one answer
const MAX_CANVAS_WIDTH = 960;

export function setupDetection(currentModel, showError) {
  let shown = null; // { bitmap, answer }

  async function detect(file) {
    if (!file) return;
    showError(null);
    $("detection-summary").textContent = "detecting…";
    const form = new FormData();
    form.append("image", file);
    form.append("model", currentModel());
    form.append("confidence_threshold", String(REQUEST_THRESHOLD));
    try {
      const [response, bitmap] = await Promise.all([
        api("/v1/detections", { method: "POST", body: form }),
        createImageBitmap(file),
      ]);
      shown = { bitmap, answer: await response.json() };
      draw(shown);
    } catch (error) {
      $("detection-summary").textContent = "";
      showError(error);
    }
  }

  $("image-input").addEventListener("change", (event) => detect(event.target.files[0]));
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    detect(event.dataTransfer.files[0]);
  });
  $("threshold").addEventListener("input", () => {
    $("threshold-value").value = Number($("threshold").value).toFixed(2);
    if (shown) draw(shown);
  });
}

function draw({ bitmap, answer }) {
  const threshold = Number($("threshold").value);
  const kept = answer.detections.filter((d) => d.score >= threshold);
  const canvas = $("detection-canvas");
  const scale = Math.min(1, MAX_CANVAS_WIDTH / bitmap.width);
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  context.lineWidth = 2;
  context.font = "13px system-ui, sans-serif";
  context.textBaseline = "top";
  for (const { box, score, class_id: classId, class_name: className } of kept) {
    const [x1, y1, x2, y2] = box.map((v) => v * scale);
    const color = `hsl(${(classId * 47) % 360} 90% 45%)`;
    context.strokeStyle = color;
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = `${className} ${score.toFixed(2)}`;
    const width = context.measureText(label).width + 6;
    const top = y1 >= 18 ? y1 - 18 : y1;
    context.fillStyle = color;
    context.fillRect(x1, top, width, 18);
    context.fillStyle = "white";
    context.fillText(label, x1 + 3, top + 2);
  }
  canvas.dataset.boxes = String(kept.length);
  const total = answer.timing.total_ms;
  $("detection-summary").textContent =
    `${kept.length} of ${answer.detections.length} detections at ≥ ${threshold.toFixed(2)} · ` +
    `${answer.image_size.width}×${answer.image_size.height} · ${Math.round(total)} ms`;
}
