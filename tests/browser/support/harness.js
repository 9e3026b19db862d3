// Test harness for notiflow.js, loaded in Chromium by tests/browser/test_client.py.
// A scripted WebSocket and fetch stand in for the server, so each test drives the protocol frame by frame.
import * as notiflow from "/static/notiflow/notiflow.js";

class FakeSocket {
  static all = [];
  static get last() {
    return FakeSocket.all[FakeSocket.all.length - 1];
  }
  constructor(url, protocols) {
    Object.assign(this, { url, protocols, sent: [], closed: null, createdAt: performance.now() });
    FakeSocket.all.push(this);
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close(code, reason) {
    this.closed = { code, reason };
  }
  // The server's side.
  receive(frame) {
    if (this.onmessage) this.onmessage({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }
  drop(code, reason = "") {
    this.droppedAt = performance.now();
    if (this.onclose) this.onclose({ code, reason });
  }
}

// routes: {"GET /api/notifications/": {status, body} or (url, init) => {status, body}}
const api = { calls: [], routes: {} };
async function fakeFetch(url, init = {}) {
  const method = init.method || "GET";
  api.calls.push({ url, method, headers: init.headers || {}, credentials: init.credentials });
  const route = api.routes[`${method} ${url.split("?")[0]}`];
  const { status = 200, body = { detail: "no route" } } = route
    ? typeof route === "function"
      ? await route(url, init)
      : route
    : { status: 404 };
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

/** A notification payload with cursor `cursor` (id 100 + cursor). */
function N(cursor, extra = {}) {
  return {
    id: 100 + cursor,
    event_id: `e${cursor}`,
    cursor,
    event_type: "announcement.posted",
    category: "announcements",
    title: `n${cursor}`,
    body: "",
    data: {},
    state: "unseen",
    created_at: "2026-01-01T00:00:00+00:00",
    ...extra,
  };
}

async function until(predicate, timeout = 2000) {
  const end = performance.now() + timeout;
  while (!predicate()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${predicate}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A client on the fake socket and fetch, with fast backoff; `events` records every event, JSON-copied. */
function make(options = {}) {
  const events = [];
  const client = new notiflow.NotiflowClient({
    url: "ws://notiflow.test/ws/notifications/",
    WebSocket: FakeSocket,
    fetch: fakeFetch,
    backoff: { base: 10, cap: 40 },
    ...options,
  });
  for (const name of ["notification", "change", "unread", "read", "seen", "status", "resync", "error", "broadcast"]) {
    client.on(name, (...args) => events.push([name, ...JSON.parse(JSON.stringify(args))]));
  }
  const only = (name) => events.filter((event) => event[0] === name).map((event) => event.slice(1));
  return { client, events, only };
}

Object.assign(window, { notiflow, FakeSocket, api, N, until, sleep, make, harnessReady: true });
