// Streaming chat through /v1/chat/completions, with the numbers under each answer: time to first token, tokens per
// second while decoding, the token count and why the answer ended. The conversation lives in this page only.

import { api } from "./api.js";
import { sseEvents } from "./sse.js";

const $ = (id) => document.getElementById(id);

export function setupChat(currentModel, showError) {
  let history = [];
  let running = null; // the AbortController of the answer being streamed

  $("chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || running) return;
    let body;
    try {
      body = requestBody(currentModel(), [...history, { role: "user", content: text }]);
    } catch (error) {
      showError(error);
      return;
    }
    showError(null);
    $("prompt").value = "";
    history.push({ role: "user", content: text });
    addMessage("user", text);
    const answer = addMessage("assistant", "");
    running = new AbortController();
    setStreaming(true);
    const result = await streamAnswer(body, running.signal, answer.content);
    running = null;
    setStreaming(false);
    if (result.error) {
      answer.element.classList.add("failed");
      showError(result.error);
    }
    if (answer.content.textContent) history.push({ role: "assistant", content: answer.content.textContent });
    answer.stats.textContent = describe(result);
  });

  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => running?.abort());
  $("clear").addEventListener("click", () => {
    running?.abort();
    history = [];
    $("transcript").replaceChildren();
  });
}

function requestBody(model, messages) {
  const system = $("system-prompt").value.trim();
  const body = {
    model,
    messages: system ? [{ role: "system", content: system }, ...messages] : messages,
    stream: true,
    stream_options: { include_usage: true },
  };
  for (const [id, field, parse] of [
    ["temperature", "temperature", Number.parseFloat],
    ["top-p", "top_p", Number.parseFloat],
    ["max-tokens", "max_tokens", (value) => Number.parseInt(value, 10)],
  ]) {
    const value = parse($(id).value);
    if (Number.isFinite(value)) body[field] = value;
  }
  const schema = $("json-schema").value.trim();
  if (schema) {
    let parsed;
    try {
      parsed = JSON.parse(schema);
    } catch (error) {
      throw new Error(`JSON schema: not valid JSON (${error.message})`);
    }
    body.response_format = { type: "json_schema", json_schema: { name: "playground", schema: parsed, strict: true } };
  }
  return body;
}

// Streams one answer into `target`; resolves (never rejects) with its timings and how it ended.
async function streamAnswer(body, signal, target) {
  const result = { sentAt: performance.now(), firstAt: null, lastAt: null, pieces: 0, tokens: null, finish: null };
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal,
    });
    for await (const chunk of sseEvents(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) result.tokens = chunk.usage.completion_tokens;
      const choice = chunk.choices?.[0];
      if (!choice) continue;
      const text = choice.delta?.content;
      if (text) {
        const now = performance.now();
        result.firstAt ??= now;
        result.lastAt = now;
        result.pieces += 1;
        target.textContent += text;
        target.scrollIntoView({ block: "end" });
      }
      if (choice.finish_reason) result.finish = choice.finish_reason;
    }
  } catch (error) {
    if (error.name === "AbortError") result.finish = "stopped";
    else result.error = error;
  }
  return result;
}

function describe(result) {
  const tokens = result.tokens ?? result.pieces; // a stopped stream never gets its usage chunk
  const parts = [];
  if (result.firstAt !== null) parts.push(`TTFT ${Math.round(result.firstAt - result.sentAt)} ms`);
  const decoding = (result.lastAt - result.firstAt) / 1000;
  if (tokens > 1 && decoding > 0) parts.push(`${((tokens - 1) / decoding).toFixed(1)} tokens/s`);
  parts.push(`${tokens} tokens`);
  parts.push(`finish: ${result.finish ?? (result.error ? "error" : "none")}`);
  return parts.join(" · ");
}

function addMessage(role, text) {
  const element = document.createElement("div");
  element.className = `message ${role}`;
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = text;
  const stats = document.createElement("div");
  stats.className = "stats";
  element.append(content, stats);
  $("transcript").append(element);
  return { element, content, stats };
}

function setStreaming(streaming) {
  $("send").disabled = streaming;
  $("stop").disabled = !streaming;
}
