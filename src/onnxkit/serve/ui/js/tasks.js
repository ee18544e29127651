// Task models: /v1/classify (fixed labels, zero-shot), /v1/qa, and /v1/rerank where the server has it.
import { $, h, clear, fillSelect, errorBox, ms } from "./dom.js";
import { getJSON, postJSON, curl } from "./api.js";

const TASKS = {
  cls: ["text-classification"],
  zs: ["zero-shot-classification"],
  qa: ["question-answering"],
  // /v1/rerank ranks by cosine with an embeddings model, or scores pairs with a cross-encoder: a
  // text-classification export with one logit (crossEncoders below picks those out).
  rerank: ["embeddings"],
};
let canRerank = false;
let shownFor = 0; // the latest showTaskModels call: an older one's late answer is dropped

export function setupTasks(capabilities) {
  canRerank = capabilities.rerank;
  for (const [name, run] of Object.entries({ cls: classify, zs: zeroShot, qa: answer, rerank })) {
    $(`#${name}-form`).addEventListener("submit", (e) => { e.preventDefault(); timed(name, run); });
  }
}

export async function showTaskModels(models) {
  const call = ++shownFor;
  const rerankers = canRerank ? await crossEncoders(models) : [];
  if (call !== shownFor) return;
  let any = false;
  for (const [name, tasks] of Object.entries(TASKS)) {
    const names = models.filter((m) => m.ready && tasks.includes(m.task)).map((m) => m.id);
    if (name === "rerank") names.push(...rerankers);
    const shown = names.length > 0 && (name !== "rerank" || canRerank);
    $(`#${name}-form`).hidden = !shown;
    fillSelect($(`#${name}-model`), names);
    any ||= shown;
  }
  const empty = $("#tasks-empty");
  empty.hidden = any;
  if (!any) {
    clear(empty, "This server serves no classification, question-answering or ranking model. Export one, then serve it: ",
      h("code", {}, "onnxkit export ./my-bert --task text-classification -o out/cls && onnxkit serve out/cls"));
  }
}

// The text-classification models that /v1/rerank takes: those whose ONNX graph has one output of one
// logit per pair (a cross-encoder), read from GET /v1/models/{id}/details. A model whose details cannot
// be read is left out of the list rather than offered and refused.
async function crossEncoders(models) {
  const candidates = models.filter((m) => m.ready && m.task === "text-classification");
  const found = await Promise.all(candidates.map(async (m) => {
    try {
      const details = await getJSON(`/v1/models/${encodeURIComponent(m.id)}/details`);
      const outputs = details.inspect?.outputs || [];
      return outputs.length === 1 && outputs[0].shape.at(-1) === 1 ? m.id : null;
    } catch {
      return null;
    }
  }));
  return found.filter(Boolean);
}

async function timed(name, run) {
  const status = $(`#${name}-status`);
  const out = $(`#${name}-result`);
  status.textContent = "Running…";
  const started = performance.now();
  try {
    const view = await run();
    status.textContent = `${ms((performance.now() - started) / 1000)} round trip`;
    clear(out, view);
  } catch (e) {
    status.textContent = "";
    clear(out, errorBox(e.message));
  }
}

async function post(path, body) {
  $("#tasks-curl").textContent = curl(path, body);
  return postJSON(path, body);
}

function bars(rows) {
  return h("ul", { class: "bars" }, rows.map(({ label, score }) => {
    const fill = h("span");
    fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
    return h("li", {}, h("span", { class: "label" }, label),
      h("span", { class: "bar", role: "img", "aria-label": `${label}: ${score.toFixed(3)}` }, fill),
      h("span", { class: "score" }, score.toFixed(3)));
  }));
}

async function classify() {
  const result = await post("/v1/classify", { model: $("#cls-model").value, input: $("#cls-input").value });
  return bars(result.data[0].labels);
}

async function zeroShot() {
  const labels = $("#zs-labels").value.split(",").map((l) => l.trim()).filter(Boolean);
  const result = await post("/v1/classify", {
    model: $("#zs-model").value, input: $("#zs-input").value, candidate_labels: labels,
  });
  return bars(result.data[0].labels);
}

async function answer() {
  const context = $("#qa-context").value;
  const result = await post("/v1/qa", {
    model: $("#qa-model").value, question: $("#qa-question").value, context,
  });
  const { answer: text, score, start, end } = result.data[0];
  // start/end count Unicode code points (Python's str indices), not UTF-16 units.
  const chars = Array.from(context);
  return h("div", {},
    h("p", {}, h("strong", {}, "Answer: "), text || "(none)", h("span", { class: "muted" }, ` · score ${score.toFixed(3)}`)),
    h("p", { class: "context", "aria-label": "Context with the answer highlighted" },
      chars.slice(0, start).join(""), h("mark", {}, chars.slice(start, end).join("")), chars.slice(end).join("")));
}

async function rerank() {
  const documents = $("#rerank-docs").value.split("\n").map((d) => d.trim()).filter(Boolean);
  const result = await post("/v1/rerank", {
    model: $("#rerank-model").value, query: $("#rerank-query").value, documents, return_documents: false,
  });
  return bars(result.results.map((r) => ({ label: `${r.index + 1}. ${documents[r.index]}`, score: r.relevance_score })));
}
