// Chat: a conversation with a chat model over POST /v1/chat/completions, streamed (SSE), with a stop
// button that aborts the request (the server cancels the generation when the client goes away).
import { $, h, clear, fillSelect } from "./dom.js";
import { call, sse, curl } from "./api.js";
import { markdown } from "./markdown.js";

const history = []; // {role, content} of finished turns
let controller = null;
let canStructure = false;

export function setupChat(capabilities) {
  canStructure = capabilities.responseFormat;
  $("#chat-schema-field").hidden = !canStructure;
  for (const [id, out] of [["#chat-temperature", "#chat-temperature-value"], ["#chat-top-p", "#chat-top-p-value"]]) {
    const input = $(id);
    input.addEventListener("input", () => { $(out).value = input.value; });
  }
  $("#chat-form").addEventListener("submit", (e) => { e.preventDefault(); send(); });
  $("#chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("#chat-form").requestSubmit(); }
  });
  $("#chat-stop").addEventListener("click", () => controller?.abort());
  $("#chat-clear").addEventListener("click", () => {
    controller?.abort();
    history.length = 0;
    clear($("#chat-log"));
    $("#chat-status").textContent = "Conversation cleared";
  });
  if (matchMedia("(max-width: 760px)").matches) $(".settings").open = false;
}

export function showChatModels(models) {
  const chat = models.filter((m) => m.task === "chat" && m.ready);
  const names = chat.map((m) => m.id);
  fillSelect($("#chat-model"), names, chat.find((m) => m.default)?.id);
  $("#chat-send").disabled = names.length === 0;
  const log = $("#chat-log");
  if (!names.length && !history.length) {
    clear(log, h("li", { class: "empty" }, "No chat model is served. Start one: ",
      h("code", {}, "onnxkit serve smollm2-135m-instruct")));
  } else if (log.querySelector(".empty")) {
    clear(log);
  }
}

function request(messages) {
  const body = {
    model: $("#chat-model").value,
    messages,
    temperature: Number($("#chat-temperature").value),
    top_p: Number($("#chat-top-p").value),
    max_tokens: Number($("#chat-max-tokens").value),
    stream: true,
    stream_options: { include_usage: true },
  };
  const seed = $("#chat-seed").value.trim();
  if (seed) body.seed = Number(seed);
  const schema = canStructure ? $("#chat-schema").value.trim() : "";
  if (schema) {
    body.response_format = { type: "json_schema", json_schema: { name: "playground", schema: JSON.parse(schema), strict: true } };
  }
  return body;
}

function bubble(role, text) {
  const body = h("div", { class: "body" });
  if (role === "user") body.textContent = text;
  else body.append(markdown(text));
  const item = h("li", { class: `msg ${role}` }, h("div", { class: "who" }, role === "user" ? "You" : "Assistant"), body);
  $("#chat-log").append(item);
  return item;
}

function stats({ ttft, tokens, seconds, finish, estimated }) {
  const parts = [];
  if (ttft !== null) parts.push(`time to first token ${Math.round(ttft)} ms`);
  if (tokens > 1 && seconds > 0) parts.push(`${((tokens - 1) / seconds).toFixed(1)} tokens/s`);
  parts.push(`${estimated ? "~" : ""}${tokens} tokens`);
  if (finish) parts.push(`finish: ${finish}`);
  return parts.join(" · ");
}

async function send() {
  const input = $("#chat-input");
  const text = input.value.trim();
  if (!text || controller) return;
  const status = $("#chat-status");
  if (document.querySelector("#chat-log .empty")) clear($("#chat-log"));
  const system = $("#chat-system").value.trim();
  const turn = { role: "user", content: text };
  const messages = [...(system ? [{ role: "system", content: system }] : []), ...history, turn];
  let body;
  try {
    body = request(messages);
  } catch (e) {
    status.textContent = `The JSON schema does not parse: ${e.message}`;
    return;
  }
  $("#chat-curl").textContent = curl("/v1/chat/completions", body);
  input.value = "";
  bubble("user", text);
  const reply = bubble("assistant", "");
  const replyBody = reply.querySelector(".body");
  reply.setAttribute("aria-busy", "true");
  const info = h("div", { class: "stats" });
  reply.append(info);

  controller = new AbortController();
  $("#chat-stop").disabled = false;
  $("#chat-send").disabled = true;
  status.textContent = "Generating…";
  let answer = "";
  let pending = false;
  // Follow the reply as it grows, unless the reader has scrolled up to read something else.
  const atBottom = () => window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 80;
  // A reply held to a JSON schema is data, not prose: shown verbatim, where markdown would eat its * and _.
  const structured = body.response_format !== undefined;
  const draw = () => {
    pending = false;
    const follow = atBottom();
    replyBody.replaceChildren(structured ? h("pre", { class: "mono" }, answer) : markdown(answer));
    if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
  };
  window.scrollTo(0, document.documentElement.scrollHeight);
  const started = performance.now();
  let first = null;
  let last = null;
  let events = 0;
  let usage = null;
  let finish = null;
  let failed = false;
  try {
    const response = await call("/v1/chat/completions", { method: "POST", body, signal: controller.signal });
    for await (const data of sse(response)) {
      const chunk = JSON.parse(data);
      // A failure after the stream began arrives as an event of its own (OpenAI's error shape).
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices?.[0];
      if (!choice) continue;
      if (choice.finish_reason) finish = choice.finish_reason;
      const piece = choice.delta?.content;
      if (!piece) continue;
      last = performance.now();
      first ??= last;
      events += 1;
      answer += piece;
      // One render per frame at most: streaming keeps up with any token rate without re-rendering per token.
      if (!pending) { pending = true; requestAnimationFrame(draw); }
    }
    status.textContent = "Reply complete";
  } catch (e) {
    if (e.name === "AbortError") {
      finish = "stopped";
      status.textContent = "Stopped";
    } else {
      reply.append(h("p", { class: "error", role: "alert" }, e.message));
      status.textContent = "Failed";
      failed = true;
    }
  } finally {
    draw();
    reply.removeAttribute("aria-busy");
    const tokens = usage ? usage.completion_tokens : events;
    info.textContent = stats({
      ttft: first === null ? null : first - started,
      tokens,
      seconds: first !== null && last > first ? (last - first) / 1000 : 0,
      finish,
      estimated: !usage,
    });
    if (!failed) history.push(turn, ...(answer ? [{ role: "assistant", content: answer }] : []));
    controller = null;
    $("#chat-stop").disabled = true;
    $("#chat-send").disabled = false;
    input.focus();
  }
}
