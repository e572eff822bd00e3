// The page's wiring: the model list (and the API key, when the server asks for one), then chat or detection for
// the chosen model, and the server panel refreshed every two seconds.

import { api, isDetector, setApiKey, Unauthorized } from "./api.js";
import { setupChat } from "./chat.js";
import { setupDetection } from "./detect.js";
import { refreshEngines, showModels } from "./status.js";

const $ = (id) => document.getElementById(id);
const STATUS_INTERVAL_MS = 2000;
let cards = [];

// null clears the error line; an Unauthorized error asks for the key.
function showError(error) {
  $("error").hidden = !error;
  $("error").textContent = error?.message ?? "";
  if (error instanceof Unauthorized) askForKey();
}

function askForKey() {
  $("change-key").hidden = false;
  if (!$("key-dialog").open) $("key-dialog").showModal();
}

async function loadModels() {
  try {
    cards = (await (await api("/v1/models")).json()).data;
  } catch (error) {
    showError(error);
    return;
  }
  const select = $("model");
  const chosen = select.value;
  select.replaceChildren(...cards.map((card) => new Option(`${card.id}${isDetector(card) ? " (detector)" : ""}`, card.id)));
  if (cards.some((card) => card.id === chosen)) select.value = chosen;
  showModels(cards);
  showSection();
}

function showSection() {
  const card = cards.find((c) => c.id === $("model").value);
  $("chat").hidden = !card || isDetector(card);
  $("detect").hidden = !card || !isDetector(card);
}

async function refreshStatus() {
  try {
    await refreshEngines();
  } catch {
    // the server is restarting or gone: the panel keeps its last numbers
  }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault(); // never submitted as a form: the key must not end up in a URL
  setApiKey($("api-key").value.trim());
  $("api-key").value = "";
  $("key-dialog").close();
  showError(null);
  loadModels();
});
$("change-key").addEventListener("click", askForKey);
$("model").addEventListener("change", showSection);
setupChat(() => $("model").value, showError);
setupDetection(() => $("model").value, showError);
loadModels();
refreshStatus();
setInterval(refreshStatus, STATUS_INTERVAL_MS);
