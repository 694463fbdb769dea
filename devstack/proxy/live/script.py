"""The live-reload script, served at :data:`SCRIPT_PATH`, and the tag that loads it.

The script (once per page: ``window.__devstackLive.connected`` says whether its socket is open)
opens a WebSocket to :data:`SOCKET_PATH` on the page's own origin, reconnects with
backoff (0.25 s doubling to 5 s) and acts on three messages:

- ``{"type": "reload"}``: reload the page.
- ``{"type": "css", "paths": [...]}``: every ``<link rel=stylesheet>`` whose URL path is listed is
  replaced by a copy with a cache-busting query, in place (the old one goes when the new one has
  loaded), without reloading the page, so its JavaScript state survives. When no stylesheet of
  the page matches (an ``@import``, a sheet added by script), the page reloads.
- ``{"type": "error", "service": ..., "reason": ..., "lines": [...]}``: a full-page overlay over
  the app shows the service's last lines, as text (``textContent``: service output is never
  parsed as HTML). The next ``reload`` takes it away by reloading the page.
"""

from __future__ import annotations

import hashlib

SCRIPT_PATH = "/_devstack/live.js"
SOCKET_PATH = "/_devstack/live"

SCRIPT = r"""// devstack live reload: https://localhost/_devstack/live.js
(() => {
  "use strict";
  if (window.__devstackLive) return;
  const state = (window.__devstackLive = { connected: false });
  const url = new URL("/_devstack/live", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  let delay = 250;

  function connect() {
    const socket = new WebSocket(url);
    socket.onopen = () => { delay = 250; state.connected = true; };
    socket.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch { return; }
      if (message.type === "reload") location.reload();
      else if (message.type === "css") swapStylesheets(message.paths || []);
      else if (message.type === "error") showError(message);
    };
    socket.onclose = () => {
      state.connected = false;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 5000);
    };
  }

  function swapStylesheets(paths) {
    const wanted = new Set(paths);
    let swapped = 0;
    for (const link of document.querySelectorAll('link[rel~="stylesheet"]')) {
      if (!link.href || link.dataset.devstackOld) continue;
      const href = new URL(link.href);
      if (href.origin !== location.origin || !wanted.has(href.pathname)) continue;
      href.searchParams.set("_devstack", Date.now().toString(36));
      const next = link.cloneNode();
      next.href = href.href;
      link.dataset.devstackOld = "1";
      next.onload = next.onerror = () => link.remove();
      link.after(next);
      swapped += 1;
    }
    if (swapped === 0) location.reload();
  }

  function showError(message) {
    let overlay = document.getElementById("devstack-overlay");
    if (!overlay) {
      overlay = document.createElement("div");
      overlay.id = "devstack-overlay";
      overlay.style.cssText =
        "position:fixed;inset:0;z-index:2147483647;overflow:auto;margin:0;padding:2rem;" +
        "background:#1e1e1e;color:#eee;font:14px/1.5 ui-monospace,monospace";
      const title = document.createElement("h1");
      title.style.cssText = "font:600 18px/1.4 system-ui,sans-serif;color:#ff8080;margin:0 0 1rem";
      const hint = document.createElement("p");
      hint.style.cssText = "font:14px system-ui,sans-serif;color:#aaa";
      hint.textContent = "devstack: this page reloads by itself when the service is ready again.";
      const output = document.createElement("pre");
      output.style.cssText = "white-space:pre-wrap;margin:0";
      overlay.append(title, hint, output);
      document.documentElement.append(overlay);
    }
    const [title, , output] = overlay.children;
    title.textContent = String(message.service) + (message.reason ? ": " + message.reason : "");
    output.textContent = (message.lines || []).join("\n");
  }

  connect();
})();
"""

SCRIPT_BYTES = SCRIPT.encode()
SCRIPT_ETAG = f'"{hashlib.sha256(SCRIPT_BYTES).hexdigest()[:20]}"'

SCRIPT_HTML = f'<script src="{SCRIPT_PATH}" async></script>'
SCRIPT_TAG = SCRIPT_HTML.encode()
"""Appended at the end of an HTML page: browsers run a script after ``</html>`` all the same."""
