// A small line chart (SVG) of the last values, redrawn in place: enough for a few live figures, so no
// charting library is vendored.
const NS = "http://www.w3.org/2000/svg";
const W = 300;
const H = 100;

function svg(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

export class LineChart {
  constructor(container, { unit = "", digits = 1, points = 60, interval = 2 } = {}) {
    this.interval = interval;
    this.values = [];
    this.unit = unit;
    this.digits = digits;
    this.points = points;
    this.now = document.createElement("div");
    this.now.className = "now";
    this.now.textContent = "—";
    this.root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", "aria-hidden": "true" });
    this.line = svg("polyline", { class: "line", points: "", "vector-effect": "non-scaling-stroke" });
    this.area = svg("polygon", { class: "area", points: "" });
    this.root.append(svg("line", { class: "axis", x1: 0, y1: H - 1, x2: W, y2: H - 1 }), this.area, this.line);
    this.max = document.createElement("div");
    this.max.className = "muted";
    container.classList.add("chart");
    container.replaceChildren(this.now, this.root, this.max);
  }

  push(value) {
    this.values.push(value);
    if (this.values.length > this.points) this.values.shift();
    const known = this.values.filter((v) => v !== null);
    const top = Math.max(...known, 0) * 1.15 || 1;
    const step = W / (this.points - 1);
    const offset = this.points - this.values.length;
    const points = this.values
      .map((v, i) => (v === null ? null : [(offset + i) * step, H - 2 - (v / top) * (H - 6)]))
      .filter(Boolean);
    const text = points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    this.line.setAttribute("points", text);
    this.area.setAttribute("points", points.length ? `${points[0][0].toFixed(1)},${H} ${text} ${points.at(-1)[0].toFixed(1)},${H}` : "");
    this.now.textContent = value === null ? "—" : `${value.toFixed(this.digits)}${this.unit}`;
    this.max.textContent = `last ${this.values.length * this.interval} s · peak ${Math.max(...known, 0).toFixed(this.digits)}${this.unit}`;
  }
}
