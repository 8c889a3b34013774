/* The MCP Apps bridge every view inlines (server/apps.py puts it in each document): JSON-RPC 2.0
   with the host over postMessage. The view sends ui/initialize, applies the host's theme, says
   ui/notifications/initialized, then receives the tool's input and result as notifications;
   app.callTool asks the host to call one of this server's tools. Nothing here touches the
   network.

   Data from a result is only ever put in the page as text: el() makes elements whose children
   are text nodes, and it takes no markup. */
"use strict";

const app = (() => {
  const pending = new Map();
  const handlers = new Map();
  let nextId = 1;
  let lastSize = "";

  function post(message) {
    window.parent.postMessage({ jsonrpc: "2.0", ...message }, "*");
  }

  function request(method, params) {
    const id = nextId++;
    post({ id, method, params });
    return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
  }

  function notify(method, params) {
    post({ method, params });
  }

  window.addEventListener("message", (event) => {
    if (event.source !== window.parent) return;
    const message = event.data;
    if (!message || message.jsonrpc !== "2.0") return;
    if (typeof message.method !== "string") {
      const waiting = pending.get(message.id);
      if (!waiting) return;
      pending.delete(message.id);
      if (message.error) waiting.reject(new Error(String(message.error.message || "error")));
      else waiting.resolve(message.result || {});
      return;
    }
    const handler = handlers.get(message.method);
    let answer = {};
    try {
      if (handler) answer = handler(message.params || {}) || {};
    } catch (error) {
      console.error(error);
    }
    // Requests from the host (ping, ui/resource-teardown) get an empty result.
    if (message.id !== undefined) post({ id: message.id, result: answer });
  });

  function applyContext(context) {
    const root = document.documentElement;
    if (context.theme === "light" || context.theme === "dark") {
      root.dataset.theme = context.theme;
      root.style.colorScheme = context.theme;
    }
    const variables = (context.styles && context.styles.variables) || {};
    for (const [name, value] of Object.entries(variables)) {
      if (name.startsWith("--") && typeof value === "string") root.style.setProperty(name, value);
    }
  }

  function reportSize() {
    const root = document.documentElement;
    const size = { width: Math.ceil(root.scrollWidth), height: Math.ceil(root.scrollHeight) };
    const key = `${size.width}x${size.height}`;
    if (key === lastSize) return;
    lastSize = key;
    notify("ui/notifications/size-changed", size);
  }

  handlers.set("ui/notifications/host-context-changed", (context) => applyContext(context));

  /* Connect to the host; `on` has the view's handlers: input(arguments), result(CallToolResult),
     cancelled(reason). Resolves with the host's initialize result. */
  async function start(name, on) {
    handlers.set("ui/notifications/tool-input", (p) => on.input && on.input(p.arguments || {}));
    handlers.set("ui/notifications/tool-result", (p) => on.result && on.result(p));
    handlers.set("ui/notifications/tool-cancelled", (p) => on.cancelled && on.cancelled(p.reason));
    if (window.parent === window) {
      document.body.append(el("p", { class: "muted" }, "This view shows a tool's result inside an MCP host."));
      return {};
    }
    const initialized = await request("ui/initialize", {
      protocolVersion: "2026-01-26",
      appInfo: { name: `posthog-warehouse-${name}`, version: "1" },
      appCapabilities: { availableDisplayModes: ["inline"] },
    });
    applyContext(initialized.hostContext || {});
    notify("ui/notifications/initialized", {});
    new ResizeObserver(reportSize).observe(document.documentElement);
    return initialized;
  }

  /* tools/call through the host: resolves with the CallToolResult (which may be an error). */
  function callTool(name, args) {
    return request("tools/call", { name, arguments: args });
  }

  return { start, callTool };
})();

/* An element with text children only. Allowed properties are fixed: no data can name one. */
const PROPS = new Set(["class", "title", "type", "disabled", "colspan", "role", "aria-label"]);
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (name === "onclick") node.addEventListener("click", value);
    else if (PROPS.has(name) || name.startsWith("data-")) node.setAttribute(name, String(value));
    else throw new Error(`el: ${name} is not an allowed property`);
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/* Numbers, times and durations as a person reads them. */
function count(value) {
  return typeof value === "number" ? value.toLocaleString("en-US") : value == null ? "—" : String(value);
}

/* "1 table", "3 tables": the number in bold, then the noun. */
function counted(n, one, many) {
  return [el("b", null, count(n)), ` ${n === 1 ? one : many || `${one}s`}`];
}

function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC");
}

function duration(startIso, endIso) {
  const ms = new Date(endIso) - new Date(startIso);
  if (!startIso || !endIso || !Number.isFinite(ms) || ms < 0) return "—";
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

/* A tool result's text (an error's message, when it failed). */
function textOf(result) {
  return (result.content || [])
    .filter((block) => block.type === "text")
    .map((block) => block.text)
    .join("\n");
}

/* The error banner a view shows when its tool, or a button's call, failed. */
function failure(text) {
  return el("div", { class: "banner danger", role: "alert" }, text || "The call failed.");
}
