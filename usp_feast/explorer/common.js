/* What both explorer pages share: reading the query API and building DOM nodes.
   The pages read only the public HTTP API (/v1/...), like any other client. */
"use strict";

/** GET an API path. Resolves to {ok, status, body}; a refusal's body.detail says why.
    When the API asks for a key (401, USP_API_KEYS set on the server), the page asks for one
    once and keeps it for this tab only (sessionStorage), sent as X-API-Key. */
async function getJSON(path, asked = false) {
  let response;
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem("usp-api-key");
  if (key) headers["X-API-Key"] = key;
  try {
    response = await fetch(path, { headers });
  } catch (err) {
    return { ok: false, status: 0, body: { detail: `the API did not answer (${err.message})` } };
  }
  if (response.status === 401 && !asked) {
    // Requests sent together all get a 401: the first asks, the others use its answer.
    const stored = sessionStorage.getItem("usp-api-key");
    if (stored && stored !== key) return getJSON(path, true);
    const given = window.prompt("This API needs a key (X-API-Key):");
    if (given) {
      sessionStorage.setItem("usp-api-key", given.trim());
      return getJSON(path, true);
    }
  }
  let body;
  try {
    body = await response.json();
  } catch {
    body = { detail: `${response.status} ${response.statusText}` };
  }
  return { ok: response.ok, status: response.status, body };
}

/** The one-line reason of a refused request, with its HTTP status. */
function refusal(result) {
  const status = result.status ? `HTTP ${result.status}` : "no answer";
  return `${status}: ${result.body && result.body.detail ? result.body.detail : "request failed"}`;
}

/** An element: h("td", {class: "x", "data-testid": "y"}, "text", child, [more]). */
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A table: headers, then rows of cells (a cell is text, a node, or [attrs, ...content]). */
function table(headers, rows, attrs) {
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, rows),
  );
}

/** "1 event", "3 events". */
function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

/** A value as text: null as a dash, lists and objects as JSON. */
function shown(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** "3 min ago" / "in 2 h" for an ISO time, for a title attribute. */
function relative(iso) {
  const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
  const size = Math.abs(seconds);
  const [amount, unit] =
    size < 90 ? [size, "s"]
    : size < 5400 ? [Math.round(size / 60), "min"]
    : size < 172800 ? [Math.round(size / 3600), "h"]
    : [Math.round(size / 86400), "d"];
  return seconds < 0 ? `${amount} ${unit} ago` : `in ${amount} ${unit}`;
}

/** A time cell: the ISO UTC text, with how long ago as a tooltip. */
function timeCell(iso, testid) {
  if (!iso) return h("td", { class: "time muted", "data-testid": testid }, "—");
  return h("td", { class: "time", "data-testid": testid, title: relative(iso) }, iso);
}

/** Show refusals in the page's error box (each distinct one once); none hides it. */
function showErrors(box, messages) {
  const distinct = [...new Set(messages)];
  box.replaceChildren(
    ...(distinct.length ? [h("strong", {}, "The API refused a request:")] : []),
    h("ul", {}, distinct.map((m) => h("li", { "data-testid": "error-message" }, m))),
  );
  box.hidden = distinct.length === 0;
}
