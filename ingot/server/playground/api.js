// Calls to the server's own API, with the API key (when the server wants one) as a bearer token, never in a URL.
// The key lives in this tab's sessionStorage only: the server keeps nothing for the page.

const KEY_STORAGE = "ingot-api-key";

export class Unauthorized extends Error {}

export function setApiKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export async function api(path, init = {}) {
  const headers = new Headers(init.headers);
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(path, { ...init, headers });
  if (response.status === 401) throw new Unauthorized("the server wants an API key");
  if (!response.ok) throw new Error(await errorMessage(response));
  return response;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error?.message ?? `${response.status} ${response.statusText}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// Only language models have a weight format; a detector's card has none.
export function isDetector(card) {
  return card.metadata?.weight_format == null;
}
