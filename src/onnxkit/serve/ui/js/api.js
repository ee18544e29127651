// The page's only door to the server: the public HTTP API (docs/openai.md, docs/kserve.md, docs/ui.md).
// Every call carries the API key the user typed, if any; a 401 asks for it again.

const KEY_STORE = "onnxkit.apiKey";
let apiKey = sessionStorage.getItem(KEY_STORE) || "";
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, message, code = null) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const hasKey = () => apiKey !== "";
export function setKey(key) {
  apiKey = key;
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
}
export function whenUnauthorized(handler) { onUnauthorized = handler; }

function headers(json) {
  const out = {};
  if (json) out["Content-Type"] = "application/json";
  if (apiKey) out.Authorization = `Bearer ${apiKey}`;
  return out;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  try {
    const body = await response.json();
    // OpenAI's {"error": {"message", "code"}} or KServe/TF-Serving's {"error": "..."}
    if (typeof body.error === "string") message = body.error;
    else if (body.error && body.error.message) ({ message, code } = body.error);
  } catch { /* not JSON: keep the status line */ }
  const error = new ApiError(response.status, message, code);
  if (response.status === 401) onUnauthorized(error);
  return error;
}

export async function call(path, { method = "GET", body, signal } = {}) {
  const init = { method, headers: headers(body !== undefined), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, `cannot reach the server at ${location.origin} (${e.message})`);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export const getJSON = async (path, options) => (await call(path, options)).json();
export const postJSON = async (path, body, options) =>
  (await call(path, { ...options, method: "POST", body })).json();

// Server-sent events over fetch (EventSource can neither POST nor send a key): yields each event's
// data as a string, and stops at OpenAI's "[DONE]".
export async function* sse(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data === "[DONE]") return;
      if (data) yield data;
    }
  }
}

// What the server offers beyond the basics, read from its OpenAPI schema (a public route): routes
// and request fields that other onnxkit versions may or may not have.
export async function capabilities() {
  try {
    const spec = await getJSON("/openapi.json");
    const paths = spec.paths || {};
    const ref = paths["/v1/chat/completions"]?.post?.requestBody?.content?.["application/json"]?.schema?.$ref || "";
    const chat = spec.components?.schemas?.[ref.split("/").pop()] || {};
    return { rerank: "/v1/rerank" in paths, responseFormat: "response_format" in (chat.properties || {}) };
  } catch {
    return { rerank: false, responseFormat: false };
  }
}

// The same call as a shell command, so each view doubles as an example of the API. The key itself is
// never printed: $ONNXKIT_API_KEY stands for it.
export function curl(path, body) {
  const lines = [`curl -s ${location.origin}${path}`];
  if (apiKey) lines.push(`-H "Authorization: Bearer $ONNXKIT_API_KEY"`);
  if (body !== undefined) {
    lines.push("-H 'Content-Type: application/json'");
    lines.push(`-d '${JSON.stringify(body).replaceAll("'", "'\\''")}'`);
  }
  return lines.join(" \\\n  ");
}

// GET /health answers 503 while loading or when a named model failed: the body says which, so it is
// read whatever the status.
export async function health() {
  const response = await fetch("/health");
  return { ok: response.ok, ...(await response.json()) };
}
