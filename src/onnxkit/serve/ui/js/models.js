// Models: every served model (GET /v1/models), and one model's page: versions and their state, inputs and
// outputs, parameters and opsets (GET /v1/models/{id}/details), the card, the graph drawn by the server
// (GET /v1/models/{id}/graph, as `onnxkit view --output g.svg`), and a KServe v2 infer form built from
// the model's inputs (GET /v2/models/{id}, POST /v2/models/{id}/infer).
import { $, h, clear, errorBox, human, bytes, ms } from "./dom.js";
import { call, getJSON, postJSON, curl } from "./api.js";

const path = (id) => `/v1/models/${encodeURIComponent(id)}`;

function stateOf(model) {
  if (model.ready) return { state: "READY", reason: "" };
  const failed = (model.model_version_status || []).find((v) => v.status?.error_message);
  return { state: "UNAVAILABLE", reason: failed ? failed.status.error_message : "not ready" };
}

export function showModelList(models) {
  const list = $("#models-list");
  if (!models.length) {
    clear(list, h("p", { class: "empty" }, "No model is served. Start one: ", h("code", {}, "onnxkit serve MODEL")));
    return;
  }
  const rows = models.map((m) => {
    const { state, reason } = stateOf(m);
    return h("tr", {},
      h("td", {}, h("a", { href: `#models/${encodeURIComponent(m.id)}` }, m.id)),
      h("td", {}, m.task || "—", m.default ? h("span", { class: "muted" }, " (default)") : null),
      h("td", {}, h("span", { class: `state-${state}` }, state), reason ? h("div", { class: "muted" }, reason) : null),
      h("td", {}, (m.model_version_status || []).map((v) => v.version).join(", ")));
  });
  clear(list, h("div", { class: "card scroll" }, h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, ["Model", "Task", "State", "Versions"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows))));
}

function ioTable(caption, items) {
  return h("div", { class: "scroll" }, h("table", { class: "grid" },
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, ["Name", "dtype", "Shape"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, items.map((i) => h("tr", {},
      h("td", {}, h("code", {}, i.name)), h("td", {}, i.dtype), h("td", {}, `[${i.shape.join(", ")}]`))))));
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function flat(object, prefix = "") {
  return Object.entries(object || {}).flatMap(([k, v]) =>
    v && typeof v === "object" && !Array.isArray(v) ? flat(v, `${prefix}${k}.`) : [[`${prefix}${k}`, String(v)]]);
}

function cardView(card) {
  if (!card) return h("p", { class: "muted" }, "No model card (onnxkit.json) beside this model.");
  const { inputs, outputs, ...rest } = card;
  const quant = card.optimization || (card.precision ? { precision: card.precision } : null);
  return h("div", {},
    facts([
      ["Card file", card.file],
      ["Source", card.source],
      ["Exported task", card.task],
      ["Format", card.format],
      ["Max length", card.max_length],
      ["Context length", card.context_length],
      ["Pooling", card.pooling],
      ["Labels", card.id2label ? Object.values(card.id2label).join(", ") : null],
      ["Exported with", card.versions ? Object.entries(card.versions).map(([k, v]) => `${k} ${v}`).join(", ") : null],
    ]),
    card.parity ? [h("h4", {}, "Parity with the source"), facts(flat(card.parity))] : null,
    quant ? [h("h4", {}, "Quantization and optimization"), facts(flat(quant))] : null,
    h("details", {}, h("summary", {}, "Card as JSON"), h("pre", { class: "mono" }, JSON.stringify(rest, null, 2))));
}

// The server draws the graph; the page only places it. Parsed as SVG (never as HTML), with anything
// that could run stripped, so node names stay text.
function placeSvg(container, text) {
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const svg = doc.documentElement;
  if (svg.nodeName !== "svg") throw new Error("the server's graph is not an SVG document");
  svg.querySelectorAll("script, foreignObject").forEach((n) => n.remove());
  for (const el of [svg, ...svg.querySelectorAll("*")]) {
    for (const attr of [...el.attributes]) if (attr.name.startsWith("on") || attr.name.includes("href")) el.removeAttribute(attr.name);
  }
  const width = Number(svg.getAttribute("width"));
  const height = Number(svg.getAttribute("height"));
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  const node = document.importNode(svg, true);
  container.replaceChildren(node);
  return (zoom) => { node.setAttribute("width", width * zoom); node.setAttribute("height", height * zoom); };
}

function graphSection(id, version) {
  const box = h("div", { class: "graph", tabindex: "0", "aria-label": "Model graph (scrollable)" }, "Drawing the graph…");
  let zoom = 1;
  let scale = null;
  const set = (z) => { zoom = Math.max(0.1, Math.min(4, z)); scale?.(zoom); };
  const section = h("section", { class: "card", "aria-labelledby": "graph-title" },
    h("h3", { id: "graph-title" }, "Graph"),
    h("div", { class: "row" },
      h("button", { type: "button", onclick: () => set(zoom / 1.25) }, "Zoom out"),
      h("button", { type: "button", onclick: () => set(zoom * 1.25) }, "Zoom in"),
      h("button", { type: "button", onclick: () => set(box.clientWidth / Number(box.querySelector("svg")?.viewBox.baseVal.width || 1)) }, "Fit width"),
      h("span", { class: "muted" }, "Hover a box for its tensors. Drawn by the server from the model file; no weights are sent.")),
    box);
  call(`${path(id)}/graph?version=${encodeURIComponent(version)}`)
    .then((r) => r.text())
    .then((text) => {
      scale = placeSvg(box, text);
      const width = Number(box.querySelector("svg").viewBox.baseVal.width);
      set(Math.min(1, (box.clientWidth - 2) / width)); // a wide graph starts fitted to the width
    })
    .catch((e) => clear(box, errorBox(e.message)));
  return section;
}

function defaultShape(shape) {
  return shape.map((d, i) => (d >= 0 ? d : i === 0 ? 1 : 4));
}

function defaultData(datatype, shape) {
  const count = shape.reduce((a, b) => a * b, 1);
  const value = datatype === "BYTES" ? "text" : datatype === "BOOL" ? true : datatype.startsWith("FP") ? 0.5 : 1;
  return JSON.stringify(Array(Math.min(count, 4096)).fill(value));
}

function inferSection(id, meta) {
  const fields = meta.inputs.map((input, i) => {
    const shape = defaultShape(input.shape);
    return {
      input,
      shape: h("input", { id: `infer-shape-${i}`, type: "text", value: shape.join(", ") }),
      data: h("textarea", { id: `infer-data-${i}`, rows: "2", class: "mono", spellcheck: "false" }, defaultData(input.datatype, shape)),
    };
  });
  const out = h("div", { class: "infer-out", "aria-live": "polite" });
  const example = h("pre", { class: "mono" });
  const form = h("form", { class: "card", "aria-labelledby": "infer-title" },
    h("h3", { id: "infer-title" }, "Try it: KServe v2 infer"),
    h("p", { class: "muted" }, "Data is JSON, flat or nested, row-major. Unknown dims (-1) got a guess: set the shape you send."),
    fields.map((f, i) => h("fieldset", {},
      h("legend", {}, h("code", {}, f.input.name), ` ${f.input.datatype} [${f.input.shape.join(", ")}]`),
      h("div", { class: "field" }, h("label", { for: `infer-shape-${i}` }, "Shape"), f.shape),
      h("div", { class: "field" }, h("label", { for: `infer-data-${i}` }, "Data"), f.data))),
    h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Infer")),
    out,
    h("details", { class: "api" }, h("summary", {}, "As an API call"), example));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    let body;
    try {
      body = {
        inputs: fields.map((f) => ({
          name: f.input.name,
          datatype: f.input.datatype,
          shape: f.shape.value.split(",").map((d) => Number(d.trim())),
          data: JSON.parse(f.data.value),
        })),
      };
    } catch (err) {
      clear(out, errorBox(`The data is not JSON: ${err.message}`));
      return;
    }
    const target = `/v2/models/${encodeURIComponent(id)}/infer`;
    example.textContent = curl(target, body);
    const started = performance.now();
    try {
      const result = await postJSON(target, body);
      const took = ms((performance.now() - started) / 1000);
      clear(out, h("p", { class: "muted" }, `${took} round trip`), result.outputs.map((o) => {
        const data = o.data.length > 64 ? `${JSON.stringify(o.data.slice(0, 64)).slice(0, -1)}, … ${o.data.length - 64} more]` : JSON.stringify(o.data);
        return h("div", {}, h("h4", {}, h("code", {}, o.name), ` ${o.datatype} [${o.shape.join(", ")}]`), h("pre", {}, data));
      }));
    } catch (err) {
      clear(out, errorBox(err.message));
    }
  });
  return form;
}

let shown = 0; // which showModel call is current: a slow answer for a model left behind is dropped

export async function showModel(id) {
  const ticket = ++shown;
  const detail = $("#model-detail");
  detail.hidden = false;
  $("#models-list").hidden = true;
  clear(detail, h("p", {}, `Loading ${id}…`));
  let info;
  try {
    info = await getJSON(`${path(id)}/details`);
  } catch (e) {
    if (ticket === shown) clear(detail, h("p", {}, h("a", { href: "#models" }, "← All models")), errorBox(e.message));
    return;
  }
  if (ticket !== shown) return;
  const report = info.inspect;
  const serving = info.versions.find((v) => v.version === info.version);
  const params = report?.parameters;
  clear(detail,
    h("p", {}, h("a", { href: "#models" }, "← All models")),
    h("h2", {}, info.id, " ", h("span", { class: `badge state-${serving?.state}` }, serving?.state || "")),
    h("div", { class: "two" },
      h("section", { class: "card" }, h("h3", {}, "Overview"), facts([
        ["Task", info.task || "—"],
        ["Version shown", info.version],
        ["File", report ? `${report.path} (${bytes(report.file_bytes)})` : null],
        ["Parameters", params ? `${human(params.count)} (${bytes(params.bytes)} in ${params.initializers} tensors)` : null],
        ["Opsets", report ? report.opset_imports.map((o) => `${o.domain} ${o.version}`).join(", ") : null],
        ["IR version", report?.ir_version],
        ["Producer", report ? `${report.producer.name} ${report.producer.version}`.trim() : null],
        ["Nodes", report ? `${report.ops.total} (${Object.entries(report.ops.histogram).slice(0, 5).map(([k, v]) => `${k} ${v}`).join(", ")}…)` : null],
      ]), info.inspect_error ? errorBox(info.inspect_error) : null),
      h("section", { class: "card" }, h("h3", {}, "Versions"), h("table", { class: "grid" },
        h("thead", {}, h("tr", {}, ["Version", "State", "Reason"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, info.versions.map((v) => h("tr", {},
          h("td", {}, v.version), h("td", {}, h("span", { class: `state-${v.state}` }, v.state)), h("td", {}, v.reason || "—"))))))),
    report ? h("div", { class: "two" },
      h("section", { class: "card" }, h("h3", {}, "Inputs"), ioTable("Inputs", report.inputs)),
      h("section", { class: "card" }, h("h3", {}, "Outputs"), ioTable("Outputs", report.outputs))) : null,
    h("section", { class: "card" }, h("h3", {}, "Card"), cardView(report?.card)),
    report ? graphSection(info.id, info.version) : null);
  if (serving?.state === "READY") {
    getJSON(`/v2/models/${encodeURIComponent(id)}`)
      .then((meta) => { if (meta.inputs?.length && ticket === shown) detail.append(inferSection(id, meta)); })
      .catch(() => { /* not a tensor model: no form */ });
  }
}

export function hideModel() {
  shown += 1;
  $("#model-detail").hidden = true;
  $("#models-list").hidden = false;
}
