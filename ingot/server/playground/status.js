// The server panel: each language model's engine from /metrics (vLLM's names), and what every served name is
// from /v1/models (its artifact key, target, weight format and, if not fp32, its linears' input dtype).

import { api } from "./api.js";

const $ = (id) => document.getElementById(id);

export async function refreshEngines() {
  const samples = parseMetrics(await (await api("/metrics")).text());
  const rows = Object.keys(samples["vllm:num_requests_running"] ?? {}).map((model) => {
    const value = (name) => samples[name]?.[model] ?? 0;
    const queries = value("vllm:prefix_cache_queries_total");
    const hitRate = queries ? `${Math.round((100 * value("vllm:prefix_cache_hits_total")) / queries)}%` : "–";
    return row([
      model,
      value("vllm:num_requests_running"),
      value("vllm:num_requests_waiting"),
      `${(100 * value("vllm:kv_cache_usage_perc")).toFixed(1)}%`,
      hitRate,
    ]);
  });
  $("engine-status").tBodies[0].replaceChildren(...rows);
}

export function showModels(cards) {
  const rows = cards.map((card) => {
    const { artifact: key, target, weight_format: weights, activation_dtype: activations } = card.metadata;
    const format = weights && activations && activations !== "fp32" ? `${weights}, ${activations} inputs` : weights;
    const artifact = row([card.id, key.slice(0, 12), target, format ?? "–"]);
    artifact.children[1].title = card.metadata.artifact;
    return artifact;
  });
  $("model-status").tBodies[0].replaceChildren(...rows);
}

// name -> model_name -> value, for the samples labelled with model_name alone.
function parseMetrics(text) {
  const samples = {};
  for (const line of text.split("\n")) {
    const match = /^([\w:]+)\{model_name="((?:[^"\\]|\\.)*)"\} (\S+)$/.exec(line);
    if (match) (samples[match[1]] ??= {})[JSON.parse(`"${match[2]}"`)] = Number(match[3]);
  }
  return samples;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    td.textContent = String(cell);
    tr.append(td);
  }
  return tr;
}
