// Startup ideas: a Node.js service on the standard library only, behind the devstack proxy.
//
//   GET  /            a small JSON description, with links
//   GET  /api/ideas   every idea posted so far
//   POST /api/ideas   {"title": "..."} -> 201 and the stored idea
//   GET  /events      server-sent events: `tick` every second, `idea` when one is posted
//   GET  /healthz     200 once the service is up
//
// Configured through the environment: PORT (required) and HOST (default 127.0.0.1).
// The proxy mounts it under /startup with the prefix stripped and says so in
// X-Forwarded-Prefix, which is used to build links that work from the browser.
'use strict';

const http = require('node:http');

const MAX_BODY_BYTES = 16 * 1024;
const MAX_TITLE_LENGTH = 120;
const TICK_MS = 1000;
const HEARTBEAT_MS = 15000;
const SHUTDOWN_GRACE_MS = 3000;

const ideas = [];
const streams = new Set(); // open /events responses

function sendJson(res, status, body, headers = {}) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(data),
    ...headers,
  });
  res.end(data);
}

function prefixOf(req) {
  // Only trust a prefix that looks like a path: it ends up in links we hand out.
  const prefix = req.headers['x-forwarded-prefix'] || '';
  return /^(\/[\w.~-]+)+$/.test(prefix) ? prefix : '';
}

function sendEvent(res, event, data) {
  res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk); // past the limit: drain, keep nothing
    });
    req.on('end', () => {
      if (size > MAX_BODY_BYTES) {
        reject(Object.assign(new Error(`body over ${MAX_BODY_BYTES} bytes`), { status: 413 }));
        return;
      }
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (err) {
        reject(Object.assign(new Error(`body is not valid JSON: ${err.message}`), { status: 400 }));
      }
    });
    req.on('error', reject);
  });
}

function describe(req, res) {
  const prefix = prefixOf(req);
  sendJson(res, 200, {
    name: 'startup',
    description: 'Startup ideas: post one, watch them arrive live. Node.js, standard library only.',
    links: {
      ideas: `${prefix}/api/ideas`,
      events: `${prefix}/events`,
      health: `${prefix}/healthz`,
    },
  });
}

async function postIdea(req, res) {
  let body;
  try {
    body = await readJson(req);
  } catch (err) {
    sendJson(res, err.status || 400, { error: err.message });
    return;
  }
  const title = body && typeof body.title === 'string' ? body.title.trim() : '';
  if (title.length < 1 || title.length > MAX_TITLE_LENGTH) {
    sendJson(res, 400, {
      error: `expected {"title": "..."} with a title of 1 to ${MAX_TITLE_LENGTH} characters`,
    });
    return;
  }
  const idea = { id: ideas.length + 1, title, at: new Date().toISOString() };
  ideas.push(idea);
  for (const stream of streams) sendEvent(stream, 'idea', idea);
  console.log(`idea ${idea.id}: ${JSON.stringify(title)}`);
  sendJson(res, 201, idea, { Location: `${prefixOf(req)}/api/ideas/${idea.id}` });
}

function openEvents(req, res) {
  res.writeHead(200, {
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-cache',
    Connection: 'keep-alive',
    'X-Accel-Buffering': 'no', // tell buffering proxies to pass events through at once
  });
  res.write('retry: 2000\n: connected\n\n');
  streams.add(res);

  let count = 0;
  const tick = setInterval(() => {
    count += 1;
    sendEvent(res, 'tick', { count, time: new Date().toISOString() });
  }, TICK_MS);
  const heartbeat = setInterval(() => res.write(': heartbeat\n\n'), HEARTBEAT_MS);

  res.on('close', () => {
    clearInterval(tick);
    clearInterval(heartbeat);
    streams.delete(res);
  });
}

const routes = {
  '/': { GET: describe },
  '/api/ideas': { GET: (req, res) => sendJson(res, 200, ideas), POST: postIdea },
  '/events': { GET: openEvents },
  '/healthz': { GET: (req, res) => sendJson(res, 200, { status: 'ok' }) },
};

const server = http.createServer((req, res) => {
  const path = new URL(req.url, 'http://placeholder').pathname;
  const methods = routes[path];
  if (!methods) {
    sendJson(res, 404, { error: `no route for ${path}; try ${prefixOf(req)}/` });
    return;
  }
  const handler = methods[req.method] || (req.method === 'HEAD' && methods.GET);
  if (!handler) {
    sendJson(res, 405, { error: `${req.method} not allowed on ${path}` }, {
      Allow: Object.keys(methods).join(', '),
    });
    return;
  }
  handler(req, res);
});

function shutdown(signal) {
  console.log(`${signal}: closing`);
  // Open event streams would keep server.close() waiting forever: end them first.
  for (const stream of streams) stream.end();
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => {
    console.error(`connections still open after ${SHUTDOWN_GRACE_MS} ms; exiting anyway`);
    process.exit(0);
  }, SHUTDOWN_GRACE_MS).unref();
}

const port = Number.parseInt(process.env.PORT || '', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(
    `startup: PORT must be set to a port number (got ${JSON.stringify(process.env.PORT)}); ` +
      'run it with devstack, or as `PORT=4000 node server.js`',
  );
  process.exit(1);
}
const host = process.env.HOST || '127.0.0.1';

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
server.listen(port, host, () => console.log(`startup listening on http://${host}:${port}`));
