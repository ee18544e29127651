// The markdown chat models write (paragraphs, lists, fenced code, `code`, **bold**, *italics*, links),
// built as DOM nodes from text: nothing a model writes is ever parsed as HTML, so no sanitiser is needed.
// It re-renders the whole reply on each frame while streaming, so an unclosed fence or list is fine.
import { h } from "./dom.js";

const INLINE = /`([^`]+)`|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g;

function inline(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    if (m[1] !== undefined) out.push(h("code", {}, m[1]));
    else if (m[2] !== undefined || m[3] !== undefined) out.push(h("strong", {}, inline(m[2] ?? m[3])));
    else if (m[4] !== undefined) out.push(h("em", {}, inline(m[4])));
    else out.push(h("a", { href: m[6], rel: "noopener noreferrer", target: "_blank" }, m[5]));
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*(\d+)[.)]\s+(.*)$/;
const HEADING = /^#{1,6}\s+(.*)$/;

export function markdown(text) {
  const root = document.createDocumentFragment();
  const lines = text.split("\n");
  let paragraph = [];
  let list = null; // stays open across blank lines: models often leave one between items
  const endParagraph = () => {
    if (!paragraph.length) return;
    const p = h("p");
    paragraph.forEach((line, i) => { if (i) p.append(h("br")); p.append(...inline(line)); });
    root.append(p);
    paragraph = [];
  };
  const endBlock = () => { endParagraph(); list = null; };
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i];
    if (line.trimStart().startsWith("```")) {
      endBlock();
      const code = [];
      for (i += 1; i < lines.length && !lines[i].trimStart().startsWith("```"); i += 1) code.push(lines[i]);
      root.append(h("pre", {}, h("code", {}, code.join("\n"))));
      continue;
    }
    const bullet = line.match(BULLET);
    const numbered = bullet ? null : line.match(NUMBERED);
    if (bullet || numbered) {
      const tag = bullet ? "ul" : "ol";
      if (paragraph.length || !list || list.tagName.toLowerCase() !== tag) {
        endBlock();
        list = h(tag, numbered ? { start: numbered[1] } : {});
        root.append(list);
      }
      list.append(h("li", {}, inline((bullet || numbered)[bullet ? 1 : 2])));
      continue;
    }
    if (!line.trim()) { endParagraph(); continue; }
    const heading = line.match(HEADING);
    if (heading) {
      endBlock();
      root.append(h("p", {}, h("strong", {}, inline(heading[1]))));
      continue;
    }
    list = null;
    paragraph.push(line);
  }
  endParagraph();
  return root;
}
