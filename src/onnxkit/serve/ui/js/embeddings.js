// Embeddings: a few sentences through POST /v1/embeddings, their cosine similarities as a heatmap.
import { $, h, clear, fillSelect, errorBox, ms } from "./dom.js";
import { postJSON, curl } from "./api.js";

export function setupEmbeddings() {
  $("#embed-form").addEventListener("submit", (e) => { e.preventDefault(); run(); });
}

export function showEmbeddingModels(models) {
  const served = models.filter((m) => m.task === "embeddings" && m.ready);
  const names = served.map((m) => m.id);
  fillSelect($("#embed-model"), names, served.find((m) => m.default)?.id);
  $("#embed-form button[type=submit]").disabled = names.length === 0;
  $("#embed-status").textContent = names.length ? "" : "No embeddings model is served (onnxkit serve all-minilm-l6-v2).";
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i += 1) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / (Math.sqrt(na * nb) || 1);
}

// WCAG relative luminance of an sRGB colour.
function luminance(rgb) {
  const [r, g, b] = rgb.map((c) => { const s = c / 255; return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

// -1 → blue, 0 → white, 1 → red; the text black or white, whichever contrasts more with the cell.
function colour(v) {
  const t = Math.max(-1, Math.min(1, v));
  const rgb = (t >= 0 ? [255 - 75 * t, 255 - 215 * t, 255 - 215 * t] : [255 + 215 * t, 255 + 175 * t, 255 + 40 * t])
    .map(Math.round);
  const bg = luminance(rgb);
  const onBlack = (bg + 0.05) / 0.05;
  const onWhite = 1.05 / (bg + 0.05);
  return { background: `rgb(${rgb.join(", ")})`, color: onBlack >= onWhite ? "#000" : "#fff" };
}

function short(text) {
  return text.length > 28 ? `${text.slice(0, 27)}…` : text;
}

function heatmap(texts, vectors) {
  const head = h("tr", {}, h("td"), texts.map((t, j) => h("th", { scope: "col", title: t }, `${j + 1}. ${short(t)}`)));
  const rows = vectors.map((a, i) => h("tr", {},
    h("th", { scope: "row", title: texts[i] }, `${i + 1}. ${short(texts[i])}`),
    vectors.map((b, j) => {
      const value = cosine(a, b);
      const cell = h("td", { title: `cosine(${i + 1}, ${j + 1}) = ${value.toFixed(4)}` }, value.toFixed(2));
      Object.assign(cell.style, colour(value));
      return cell;
    })));
  return h("div", { class: "scroll" },
    h("table", { class: "heatmap", "aria-label": "Cosine similarity between the sentences" },
      h("thead", {}, head), h("tbody", {}, rows)));
}

async function run() {
  const texts = $("#embed-input").value.split("\n").map((t) => t.trim()).filter(Boolean);
  const out = $("#embed-result");
  const status = $("#embed-status");
  if (!texts.length) { status.textContent = "Write at least one sentence."; return; }
  const body = { model: $("#embed-model").value, input: texts, encoding_format: "float" };
  $("#embed-curl").textContent = curl("/v1/embeddings", body);
  status.textContent = "Computing…";
  const started = performance.now();
  try {
    const result = await postJSON("/v1/embeddings", body);
    const seconds = (performance.now() - started) / 1000;
    const vectors = result.data.sort((a, b) => a.index - b.index).map((d) => d.embedding);
    const norm = Math.sqrt(vectors[0].reduce((s, x) => s + x * x, 0));
    status.textContent = "";
    clear(out, h("div", { class: "card" },
      h("p", { class: "summary" },
        `${vectors.length} vectors × ${vectors[0].length} dimensions (norm of the first: ${norm.toFixed(3)}) · `,
        `${result.usage.prompt_tokens} tokens · ${ms(seconds)} round trip`),
      heatmap(texts, vectors)));
  } catch (e) {
    status.textContent = "";
    clear(out, errorBox(e.message));
  }
}
