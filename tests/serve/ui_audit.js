// Evaluated in the page by test_ui_browser.py: WCAG 2 contrast of every visible text against the first
// opaque background behind it, and an accessible name on every visible control. Disabled controls are
// exempt (WCAG 1.4.3). Returns the problems found, as strings.
() => {
  const rgba = (css) => {
    const parts = css.match(/[\d.]+/g).map(Number);
    return { rgb: parts.slice(0, 3), a: parts.length > 3 ? parts[3] : 1 };
  };
  const luminance = (rgb) => {
    const [r, g, b] = rgb.map((c) => {
      const s = c / 255;
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const behind = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c.a > 0.5) return c.rgb;
    }
    return [255, 255, 255];
  };
  const problems = [];
  for (const el of document.querySelectorAll("body *")) {
    if (!el.checkVisibility() || el.closest(":disabled, svg, .sr-only")) continue;
    if (![...el.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim())) continue;
    const style = getComputedStyle(el);
    const [a, b] = [luminance(rgba(style.color).rgb), luminance(behind(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (Number(style.fontWeight) >= 700 && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) {
      problems.push(`contrast ${ratio.toFixed(2)}: ${el.tagName} "${el.textContent.trim().slice(0, 30)}"`);
    }
  }
  for (const el of document.querySelectorAll("input, select, textarea, button")) {
    if (!el.checkVisibility()) continue;
    const named = el.labels?.length || el.getAttribute("aria-label") || (el.tagName === "BUTTON" && el.textContent.trim());
    if (!named) problems.push(`no label: ${el.tagName}#${el.id}`);
  }
  return problems;
}
