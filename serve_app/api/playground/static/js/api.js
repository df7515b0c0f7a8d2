// The HTTP API as the page calls it: relative paths, the API key, and errors as the page shows them.
import { $ } from "./dom.js";

// Relative URLs: the app may be served under a route prefix (".../playground/v1/...").
export const API = {
  models: "v1/models",
  predictions: "v1/predictions",
  gallery: "v1/images",
};

export const KEY_STORAGE = "raydiffusion.apiKey";

export const FALLBACK_MESSAGES = {
  401: "an API key is required",
  404: "not found",
  429: "too many requests",
  502: "the server is unreachable behind its proxy",
  503: "the server is at capacity",
  504: "the server took too long",
};

export class ApiError extends Error {
  constructor(status, body, headers) {
    const error = (body && body.error) || {};
    // A proxy's own refusal may have no JSON body: the status alone then speaks for it.
    super(error.message || `${FALLBACK_MESSAGES[status] || "the server answered"} (HTTP ${status}).`);
    this.status = status;
    this.param = error.param || null;
    this.code = error.code || null;
    this.retryAfter = Number(headers.get("Retry-After")) || null;
  }
}

export class NetworkError extends Error {}

// Found in the browser before anything was sent (a file that cannot be read).
export class FieldError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

export async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const key = localStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (error) {
    throw new NetworkError(error.message || "network error");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null; // a proxy's HTML error page, for instance: the status still says what happened
  }
  if (!response.ok) {
    const error = new ApiError(response.status, body, response.headers);
    if (error.status === 401) askForKey(error.message);
    throw error;
  }
  return body;
}

export function askForKey(message) {
  const hadKey = Boolean(localStorage.getItem(KEY_STORAGE));
  $("auth").hidden = false;
  $("auth-message").textContent = hadKey
    ? `The saved API key was refused: ${message}`
    : "This server requires an API key. Enter it to use the playground.";
  if (document.activeElement !== $("api-key")) $("api-key").focus();
}
