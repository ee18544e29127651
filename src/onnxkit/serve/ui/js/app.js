// The page's entry: the API key, the views (one per location hash) and the header's health badge.
import { $, clear } from "./dom.js";
import { capabilities, getJSON, hasKey, health, setKey, whenUnauthorized } from "./api.js";
import { setupChat, showChatModels } from "./chat.js";
import { setupEmbeddings, showEmbeddingModels } from "./embeddings.js";
import { setupTasks, showTaskModels } from "./tasks.js";
import { hideModel, showModel, showModelList } from "./models.js";
import { startServerView, stopServerView } from "./server.js";

const VIEWS = { chat: "Chat", embeddings: "Embeddings", tasks: "Tasks", models: "Models", server: "Server" };
let authorized = false;

async function loadModels() {
  const models = (await getJSON("/v1/models")).data;
  authorized = true;
  showChatModels(models);
  showEmbeddingModels(models);
  showTaskModels(models);
  showModelList(models);
}

function route() {
  const [first, ...rest] = location.hash.slice(1).split("/");
  const view = first in VIEWS ? first : "chat";
  for (const name of Object.keys(VIEWS)) $(`#view-${name}`).hidden = !authorized || name !== view;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${VIEWS[view]} · onnxkit`;
  if (!authorized) return;
  if (view === "models" && rest.length) showModel(decodeURIComponent(rest.join("/")));
  else if (view === "models") hideModel();
  if (view === "server") startServerView();
  else stopServerView();
}

// ---- API key: asked once when the server wants one; a refused key is said so, in the dialog ----------
function askKey(message) {
  authorized = false;
  route();
  const notice = $("#boot-error");
  notice.hidden = false;
  notice.textContent = "This server needs an API key before it shows anything.";
  const error = $("#key-error");
  error.hidden = !message;
  error.textContent = message;
  const dialog = $("#key-dialog");
  if (!dialog.open) dialog.showModal();
  $("#key-input").focus();
}

whenUnauthorized((e) => askKey(hasKey() ? `The server refused this key: ${e.message}` : ""));

$("#key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  setKey($("#key-input").value.trim());
  if (await start()) $("#key-dialog").close();
});
// Without a key nothing works: Escape does not close the dialog onto an empty page.
$("#key-dialog").addEventListener("cancel", (event) => event.preventDefault());
$("#forget-key").addEventListener("click", () => { setKey(""); location.reload(); });

async function start() {
  try {
    await loadModels();
  } catch (e) {
    if (e.status !== 401) {
      const notice = $("#boot-error");
      notice.hidden = false;
      notice.textContent = `Cannot list the models: ${e.message}`;
    }
    return false;
  }
  $("#boot-error").hidden = true;
  $("#forget-key").hidden = !hasKey();
  route();
  return true;
}

async function badge() {
  const el = $("#health");
  try {
    const state = await health();
    el.textContent = state.ok ? "ready" : state.status;
    el.className = `badge ${state.ok ? "ok" : state.status === "loading" ? "warn" : "bad"}`;
  } catch {
    el.textContent = "unreachable";
    el.className = "badge bad";
  }
}

const caps = await capabilities();
setupChat(caps);
setupEmbeddings();
setupTasks(caps);
window.addEventListener("hashchange", () => { route(); if (authorized) loadModels().catch(() => {}); });
badge();
setInterval(badge, 5000);
clear($("#boot-error"));
await start();
