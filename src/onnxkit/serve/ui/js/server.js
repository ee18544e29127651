// Server: GET /health, and live figures from GET /metrics (Prometheus text), polled while the view is open.
import { $, h, clear, errorBox } from "./dom.js";
import { call, health } from "./api.js";
import { parse, total } from "./prom.js";
import { LineChart } from "./chart.js";

const INTERVAL_S = 2;
const POINTS = 30; // the last minute
let timer = null;
let previous = null;
let charts = null;

export function startServerView() {
  charts ??= {
    rps: new LineChart($("#chart-rps"), { digits: 2, interval: INTERVAL_S, points: POINTS }),
    latency: new LineChart($("#chart-latency"), { unit: " ms", digits: 1, interval: INTERVAL_S, points: POINTS }),
    tokens: new LineChart($("#chart-tokens"), { digits: 1, interval: INTERVAL_S, points: POINTS }),
  };
  if (timer === null) {
    tick();
    timer = setInterval(tick, INTERVAL_S * 1000);
  }
}

export function stopServerView() {
  clearInterval(timer);
  timer = null;
  previous = null; // a gap would read as one long interval
}

async function tick() {
  try {
    const state = await health();
    clear($("#server-health"), h("h2", {}, "Health"), h("dl", { class: "facts" },
      h("dt", {}, "Status"), h("dd", {}, h("span", { class: state.ok ? "state-READY" : "state-UNAVAILABLE" }, state.status)),
      h("dt", {}, "Version"), h("dd", {}, `onnxkit ${state.version}`),
      h("dt", {}, "Process"), h("dd", {}, String(state.pid)),
      state.unavailable ? [h("dt", {}, "Unavailable"), h("dd", {}, Object.entries(state.unavailable).map(([m, r]) => `${m}: ${r}`).join("; "))] : null));
    const samples = parse(await (await call("/metrics")).text());
    figures(samples, performance.now() / 1000);
    table(samples);
  } catch (e) {
    clear($("#server-health"), errorBox(e.message));
  }
}

function figures(samples, now) {
  const current = {
    at: now,
    requests: total(samples, "onnxkit_requests_total"),
    seconds: total(samples, "onnxkit_request_duration_seconds_sum"),
    answered: total(samples, "onnxkit_request_duration_seconds_count"),
    tokens: total(samples, "onnxkit_generated_tokens_total"),
  };
  if (previous) {
    const dt = current.at - previous.at;
    const answered = current.answered - previous.answered;
    charts.rps.push((current.requests - previous.requests) / dt);
    charts.latency.push(answered > 0 ? ((current.seconds - previous.seconds) / answered) * 1000 : null);
    charts.tokens.push((current.tokens - previous.tokens) / dt);
  }
  previous = current;
}

function table(samples) {
  const loaded = samples.filter((s) => s.name === "onnxkit_model_ready");
  const per = (name, labels, extra = {}) =>
    total(samples, name, (l) => l.model === labels.model && l.version === labels.version && Object.entries(extra).every(([k, v]) => l[k] === v));
  const rows = loaded.map(({ labels }) => {
    const count = per("onnxkit_request_duration_seconds_count", labels);
    const mean = count ? `${((per("onnxkit_request_duration_seconds_sum", labels) / count) * 1000).toFixed(1)} ms` : "—";
    return h("tr", {},
      h("td", {}, h("a", { href: `#models/${encodeURIComponent(labels.model)}` }, labels.model)),
      h("td", {}, labels.version),
      h("td", {}, h("span", { class: `state-${labels.state}` }, labels.state)),
      h("td", {}, String(per("onnxkit_requests_total", labels, { outcome: "success" }))),
      h("td", {}, String(per("onnxkit_requests_total", labels, { outcome: "failure" }))),
      h("td", {}, mean));
  });
  clear($("#server-models"), h("h2", {}, "Loaded models"), h("div", { class: "scroll" }, h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, ["Model", "Version", "State", "Requests", "Failures", "Mean latency"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: "6" }, "No model loaded."))))));
}
