// A small Markdown renderer that builds DOM nodes and never parses HTML: whatever a model or a
// note says becomes text, and a link is a link only to http(s) or mailto.

const SCHEMES = new Set(["http:", "https:", "mailto:"]);
const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( *)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;
const INLINE = new RegExp(
  [
    /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/, // 1, 2: code span
    /\*\*(?=\S)([\s\S]*?\S)\*\*/, // 3: strong
    /(?<![\w\\])__(?=\S)([\s\S]*?\S)__(?!\w)/, // 4: strong
    /~~(?=\S)([\s\S]*?\S)~~/, // 5: deleted
    /\*([^\s*](?:[^*]*[^\s*])?)\*/, // 6: emphasis
    /(?<![\w\\])_([^\s_](?:[^_]*[^\s_])?)_(?!\w)/, // 7: emphasis
    /!?\[([^\]\n]*)\]\(\s*<?([^)\s>]*)>?(?:\s+["'][^"'\n]*["'])?\s*\)/, // 8, 9: link (an image is a link)
    /<?(https?:\/\/[^\s<>"]*[^\s<>".,;:!?)\]'*_])>?/, // 10: bare address
    /\\([\\`*_{}[\]()#+\-.!|~<>])/, // 11: escaped character
  ]
    .map((r) => r.source)
    .join("|"),
  "g",
);

export function safeHref(address) {
  try {
    const url = new URL(address);
    return SCHEMES.has(url.protocol) ? url.href : null;
  } catch {
    return null; // relative or malformed: shown as text
  }
}

function node(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Replace `target`'s children with `text` rendered; `copy(text, button)` backs code copy buttons. */
export function renderMarkdown(text, target, copy) {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  target.replaceChildren(...blocks(lines, copy));
}

function startsBlock(line, next) {
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    ITEM.test(line) ||
    (line.includes("|") && next !== undefined && TABLE_RULE.test(next) && next.includes("-"))
  );
}

function blocks(lines, copy) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) {
      i++;
    } else if ((m = line.match(FENCE))) {
      const code = [];
      const close = new RegExp(`^ {0,3}${m[1][0] === "`" ? "`" : "~"}{${m[1].length},}\\s*$`);
      for (i++; i < lines.length && !close.test(lines[i]); i++) code.push(lines[i]);
      i++; // the closing fence; while streaming there may be none yet
      out.push(codeBlock(code.join("\n"), m[2], copy));
    } else if ((m = line.match(HEADING))) {
      out.push(inline(m[2], node(`h${Math.min(m[1].length + 2, 6)}`)));
      i++;
    } else if (RULE.test(line)) {
      out.push(node("hr"));
      i++;
    } else if (QUOTE.test(line)) {
      const quoted = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i++) quoted.push(lines[i].replace(QUOTE, ""));
      const quote = node("blockquote");
      quote.append(...blocks(quoted, copy));
      out.push(quote);
    } else if (ITEM.test(line)) {
      i = list(lines, i, out, copy);
    } else if (startsBlock(line, lines[i + 1])) {
      i = table(lines, i, out);
    } else {
      const para = [line.trim()];
      for (i++; i < lines.length && lines[i].trim() && !startsBlock(lines[i], lines[i + 1]); i++) {
        para.push(lines[i].trim());
      }
      const p = node("p");
      para.forEach((text, n) => {
        if (n) p.append(node("br"));
        inline(text, p);
      });
      out.push(p);
    }
  }
  return out;
}

function codeBlock(code, language, copy) {
  const box = node("div", "code");
  const bar = node("div", "code-bar");
  const button = node("button", "copy-code", "Copy");
  button.type = "button";
  button.setAttribute("aria-label", `Copy ${language || "code"}`);
  button.addEventListener("click", () => copy(code, button));
  bar.append(node("span", "", language || "code"), button);
  const pre = node("pre");
  pre.append(node("code", "", code));
  box.append(bar, pre);
  return box;
}

function list(lines, i, out, copy) {
  const first = lines[i].match(ITEM);
  const ordered = /\d/.test(first[2]);
  const indent = first[1].length;
  const el = node(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) el.start = parseInt(first[2], 10);
  while (i < lines.length) {
    const m = lines[i].match(ITEM);
    if (!m || m[1].length < indent || m[1].length > indent + 1 || /\d/.test(m[2]) !== ordered) break;
    const body = [m[3]];
    const inner = m[1].length + m[2].length + 1; // where the item's own text starts
    for (i++; i < lines.length; i++) {
      const line = lines[i];
      const lead = line.length - line.trimStart().length;
      if (!line.trim()) {
        const next = lines.slice(i + 1).find((l) => l.trim());
        if (next === undefined || next.length - next.trimStart().length < inner) break;
        body.push("");
      } else if (lead >= inner || (lead > indent && ITEM.test(line))) {
        body.push(line.slice(Math.min(lead, inner)));
      } else if (!ITEM.test(line) && !startsBlock(line, lines[i + 1]) && body[body.length - 1] !== "") {
        body.push(line.trim()); // a lazy continuation of the item's paragraph
      } else break;
    }
    const item = node("li");
    const parts = blocks(body, copy);
    if (parts[0] && parts[0].tagName === "P") item.append(...parts.shift().childNodes); // a tight item
    item.append(...parts);
    el.append(item);
  }
  out.push(el);
  return i;
}

function cells(row) {
  return row
    .trim()
    .replace(/^\|/, "")
    .replace(/(?<!\\)\|$/, "")
    .split(/(?<!\\)\|/)
    .map((c) => c.trim().replace(/\\\|/g, "|"));
}

function table(lines, i, out) {
  const head = cells(lines[i]);
  const align = cells(lines[i + 1]).map((c) =>
    c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : "",
  );
  const el = node("table");
  const row = (values, tag) => {
    const tr = node("tr");
    head.forEach((_, n) => {
      const cell = inline(values[n] || "", node(tag));
      if (align[n]) cell.style.textAlign = align[n];
      tr.append(cell);
    });
    return tr;
  };
  const thead = node("thead");
  thead.append(row(head, "th"));
  const tbody = node("tbody");
  for (i += 2; i < lines.length && lines[i].trim() && lines[i].includes("|"); i++) tbody.append(row(cells(lines[i]), "td"));
  el.append(thead, tbody);
  const wrap = node("div", "table-wrap");
  wrap.append(el);
  out.push(wrap);
  return i;
}

function inline(text, parent) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) parent.append(text.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[2] !== undefined) parent.append(node("code", "", m[2]));
    else if (m[3] !== undefined || m[4] !== undefined) parent.append(inline(m[3] ?? m[4], node("strong")));
    else if (m[5] !== undefined) parent.append(inline(m[5], node("del")));
    else if (m[6] !== undefined || m[7] !== undefined) parent.append(inline(m[6] ?? m[7], node("em")));
    else if (m[9] !== undefined) parent.append(link(m[9], m[8] || m[9]));
    else if (m[10] !== undefined) parent.append(link(m[10], m[10]));
    else parent.append(m[11]);
  }
  if (last < text.length) parent.append(text.slice(last));
  return parent;
}

function link(address, label) {
  const href = safeHref(address);
  if (!href) return document.createTextNode(label === address ? address : `${label} (${address})`);
  const a = node("a");
  a.href = href;
  a.rel = "noopener noreferrer";
  a.target = "_blank";
  if (label === address) a.textContent = label; // a bare address: no Markdown inside
  else inline(label, a);
  return a;
}
