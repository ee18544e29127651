// Small DOM helpers. Text always goes in through textContent, never innerHTML: what a model or a
// user wrote can never become markup.

export function $(selector, root = document) {
  const found = root.querySelector(selector);
  if (!found) throw new Error(`missing element ${selector}`);
  return found;
}

// h("a", {href: "#x", class: "c", onclick: fn}, "text", child): an element with attributes,
// listeners (on*) and children (strings become text nodes; null/false are skipped).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// The options of a <select>, keeping the current choice when it is still offered, else the preferred one
// (the server's default model for the route).
export function fillSelect(select, names, preferred) {
  const previous = select.value;
  clear(select, names.map((n) => h("option", { value: n }, n)));
  if (names.includes(previous)) select.value = previous;
  else if (names.includes(preferred)) select.value = preferred;
}

export function errorBox(message) {
  return h("p", { class: "error", role: "alert" }, message);
}

export function human(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return String(n);
}

export function bytes(n) {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return i ? `${n.toFixed(1)} ${units[i]}` : `${n} B`;
}

export function ms(seconds) {
  return seconds >= 10 ? `${seconds.toFixed(1)} s` : `${Math.round(seconds * 1000)} ms`;
}
