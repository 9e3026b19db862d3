/**
 * notiflow browser client: one ES module, no build step, no dependencies.
 *
 *     import { NotiflowClient } from "/static/notiflow/notiflow.js";
 *     const client = new NotiflowClient();            // same-origin page with a Django session
 *     client.on("notification", (n, { source }) => console.log(source, n.title));
 *     client.on("unread", (count) => (badge.textContent = count));
 *     client.connect();
 *
 * It speaks the protocol of `/ws/notifications/` (README, "WebSocket protocol"),
 * keeps a de-duplicated list of the user's notifications and their unread count,
 * reconnects on its own, resumes from the last cursor it holds, and falls back to
 * polling the REST API when the socket cannot be had.
 *
 * Authentication, chosen per connect:
 *   - `getTicket`: an async function returning a fresh one-time ticket (string);
 *     called before every connect and reconnect, since a ticket works once. Offered
 *     as the subprotocols `["notiflow", "ticket.<ticket>"]`.
 *   - `token`: a JWT, offered as `["notiflow", "jwt.<token>"]`; REST calls then send
 *     `Authorization: Bearer <token>`. The server closes with 4401 when it expires:
 *     the client reports an "error" and stops; set `client.token` and call `connect()`.
 *   - neither: tickets come from `POST {apiBase}ws-ticket/` with the page's session
 *     cookie and CSRF token (the usual same-origin Django page).
 *   Without a token, REST calls use the session cookie (`credentials: "same-origin"`)
 *   and send `X-CSRFToken` (option `csrfToken`, else the `csrftoken` cookie).
 *
 * Units: every duration is in milliseconds. Cursors are the server's per-recipient
 * positions (1, 2, 3, ... in commit order, no gaps).
 *
 * Loss and duplicates. The server sends each socket its user's notifications in
 * cursor order, once, and fills a lost push from its database (the README's "Order
 * and gaps"), so resuming from the highest cursor seen is enough. As a second line of
 * defence the client does not rely on it: the cursor it resumes from is the highest
 * one below which it has seen every notification: a push of cursor 7 before 6 leaves
 * it at 5 until 6 arrives or the server vouches for it (`hello`, `resumed`, a REST
 * page). A cursor whose push the user's preferences turn off is never pushed, so it
 * is vouched for by the next `resumed` (which sends it). Whatever arrives twice (a
 * push and a resume, two tabs' REST refreshes) is dropped by id: "notification"
 * fires once per id.
 *
 * Reconnects use "full jitter" backoff (Marc Brooker, "Exponential Backoff And
 * Jitter", AWS Architecture Blog, 2015): a wait of `random(0, min(cap, base * 2**n))`
 * after the n-th consecutive failure (n from 0), reset by a `hello`. Close codes:
 * 4401 reconnects with a new ticket (or stops when only a static token is known),
 * 4403 stops, 4429 and 4409 (too many sockets of this user) wait between cap/2 and cap,
 * 4413 and the rest reconnect. After
 * `pollAfter` consecutive failed connects (or at once when there is no WebSocket)
 * the client polls `GET {apiBase}notifications/?page_size=50` and
 * `GET {apiBase}notifications/unread-count/` every `pollInterval`, while it keeps
 * trying the socket at the backoff, and stops polling on the next `hello`. The
 * browser's `online` event and a page becoming visible retry at once.
 *
 * A socket that stays silent is noticed by a heartbeat: a `ping` every `heartbeat`
 * (when nothing else came), and a reconnect when nothing at all came for two
 * heartbeats. A socket that gives no `hello` within `connectTimeout`, or a ticket
 * that does not come within it, counts as a failed connect.
 *
 * Events (`client.on(name, fn)`, which returns a function that removes `fn`):
 *   "notification"  (notification, {source}) once per id; source is "recent" (in the
 *                   hello), "push", "resume", "fetch" (a resync or `refresh()`) or "poll"
 *   "change"        (notifications) the list or a notification's state changed
 *   "unread"        (count) the unread count changed
 *   "read"          ({ids, all, unread_count}) notifications were marked read
 *                   (here, in another tab, or through the REST API)
 *   "seen"          ({ids, all, unread_count}) notifications were marked seen
 *   "status"        ("connecting" | "open" | "reconnecting" | "polling" | "closed")
 *   "resync"        ({notifications}) the server could not replay what was missed
 *                   (`recovered: false`) and the client re-read the newest page
 *   "broadcast"     (payload) an ephemeral message to a role or to everyone
 *   "error"         ({code, detail, status?}) an error frame from the server, or a
 *                   failure of the client's own ("unauthenticated", "forbidden",
 *                   "ticket_failed", "poll_failed", "resync_failed", "bad_frame")
 *
 * A notification is the server's JSON object: {id, event_id, cursor, event_type,
 * category, title, body, data, state ("unseen" | "seen" | "read" | "archived"),
 * created_at (ISO 8601)}.
 */

export const SUBPROTOCOL = "notiflow";

/** WebSocket close codes of the notiflow relay (README, "WebSocket protocol"). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  STALE: 4000, // the client's own: no hello, or silence past two heartbeats
  UNAUTHENTICATED: 4401,
  FORBIDDEN: 4403,
  TOO_MANY_SOCKETS: 4409,
  TOO_LARGE: 4413,
  RATE_LIMITED: 4429,
});

const DEFAULTS = Object.freeze({
  apiBase: "/api/",
  pollInterval: 15000,
  pollAfter: 5,
  pageSize: 50,
  backoff: Object.freeze({ base: 500, cap: 30000 }),
  heartbeat: 30000,
  connectTimeout: 10000,
  ackTimeout: 5000,
  maxNotifications: 500,
});

// At most this many ids per mark_read / mark_seen frame: the relay refuses frames over 4 KiB.
const IDS_PER_FRAME = 200;
const UNREAD = new Set(["unseen", "seen"]);

/** A REST call answered with a non-2xx status. `status` is the HTTP status; `body` the parsed JSON, if any. */
export class HttpError extends Error {
  constructor(status, body, url) {
    super(`HTTP ${status} from ${url}${body && body.detail ? `: ${body.detail}` : ""}`);
    this.name = "HttpError";
    this.status = status;
    this.body = body;
  }
}

/** The wait before the next attempt, in ms: uniform in [0, min(cap, base * 2**attempt)) ("full jitter"). */
export function backoffDelay(attempt, { base, cap }, random = Math.random) {
  return random() * Math.min(cap, base * 2 ** attempt);
}

function cookie(name) {
  const source = globalThis.document && typeof globalThis.document.cookie === "string" ? globalThis.document.cookie : "";
  for (const part of source.split(";")) {
    const [key, ...value] = part.trim().split("=");
    if (key === name) return decodeURIComponent(value.join("="));
  }
  return null;
}

function defaultSocketUrl() {
  const location = globalThis.location;
  if (!location || !location.host) throw new TypeError("NotiflowClient: `url` is required outside a browser page.");
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws/notifications/`;
}

function isNotification(value) {
  return value !== null && typeof value === "object" && value.id !== undefined && value.id !== null;
}

function byNewest(a, b) {
  return (b.cursor ?? 0) - (a.cursor ?? 0) || (b.id > a.id ? 1 : b.id < a.id ? -1 : 0);
}

export class NotiflowClient {
  /**
   * @param {object} [options]
   * @param {string} [options.url] the WebSocket URL; default `ws(s)://<page host>/ws/notifications/`
   * @param {() => Promise<string>} [options.getTicket] a fresh one-time ticket per connect
   * @param {string} [options.token] a JWT, for the socket and for REST (`Authorization: Bearer`)
   * @param {string} [options.ticket] a ticket for the first connect only (later connects use
   *   `getTicket`, the `token`, or the session's `POST {apiBase}ws-ticket/`)
   * @param {string} [options.apiBase="/api/"] the REST API's base URL, ending in "/"
   * @param {number} [options.pollInterval=15000] ms between polls in the polling fallback
   * @param {number} [options.pollAfter=5] consecutive failed connects before polling starts
   * @param {number} [options.pageSize=50] notifications per REST page (polling, resync, `refresh()`)
   * @param {{base: number, cap: number}} [options.backoff={base: 500, cap: 30000}] reconnect backoff, ms
   * @param {number} [options.heartbeat=30000] ms between pings on a quiet socket; 0 turns pings off
   * @param {number} [options.connectTimeout=10000] ms allowed for a ticket, for a REST call, and
   *   from opening a socket to its `hello`
   * @param {number} [options.ackTimeout=5000] ms to wait for the server's `read_state` after a
   *   `mark_read` frame before the mark is repeated over REST (marking read is idempotent)
   * @param {number} [options.maxNotifications=500] the list keeps this many, newest first
   * @param {object[]} [options.notifications] notifications the page already has (e.g. rendered
   *   by the server); no events fire for them
   * @param {number} [options.unreadCount] the unread count the page already has
   * @param {number} [options.cursor] resume after this cursor on the first connect (the page's
   *   latest cursor when it rendered `notifications`)
   * @param {string} [options.csrfToken] for session-authenticated REST calls; default: the
   *   `csrftoken` cookie
   * @param {Function} [options.WebSocket=globalThis.WebSocket] `undefined` or `null`: poll only
   * @param {Function} [options.fetch=globalThis.fetch]
   * @param {() => number} [options.random=Math.random] the jitter's source, in [0, 1)
   */
  constructor(options = {}) {
    this._url = options.url ?? defaultSocketUrl();
    this._apiBase = options.apiBase ?? DEFAULTS.apiBase;
    if (!this._apiBase.endsWith("/")) this._apiBase += "/";
    this._getTicket = options.getTicket ?? null;
    this._firstTicket = options.ticket ?? null;
    this.token = options.token ?? null;
    this._csrfToken = options.csrfToken ?? null;
    this._pollInterval = options.pollInterval ?? DEFAULTS.pollInterval;
    this._pollAfter = options.pollAfter ?? DEFAULTS.pollAfter;
    this._pageSize = options.pageSize ?? DEFAULTS.pageSize;
    this._backoff = { ...DEFAULTS.backoff, ...(options.backoff ?? {}) };
    this._heartbeat = options.heartbeat ?? DEFAULTS.heartbeat;
    this._connectTimeout = options.connectTimeout ?? DEFAULTS.connectTimeout;
    this._ackTimeout = options.ackTimeout ?? DEFAULTS.ackTimeout;
    this._max = options.maxNotifications ?? DEFAULTS.maxNotifications;
    this._WebSocket = "WebSocket" in options ? options.WebSocket : globalThis.WebSocket;
    const fetchImpl = options.fetch ?? globalThis.fetch;
    this._fetch = fetchImpl ? (url, init) => fetchImpl.call(globalThis, url, init) : null;
    this._random = options.random ?? Math.random;

    this._listeners = new Map();
    this._byId = new Map(); // id -> notification (the kept list)
    this._seenIds = new Set(); // every id ever reported, so a trimmed one is not reported again
    this._sorted = null; // cache of the list, newest first
    this._unread = options.unreadCount ?? 0;
    this._cursor = Number.isInteger(options.cursor) ? options.cursor : null; // see "Loss and duplicates"
    this._ahead = new Set(); // cursors seen above this._cursor, not yet contiguous with it
    this._countedUpTo = this._cursor; // the server's unread count includes every notification up to this cursor
    this._status = "closed";

    this._stopped = true;
    this._ws = null;
    this._ready = false; // the current socket has said hello
    this._resuming = false; // the current socket was opened with ?cursor=
    this._generation = 0; // bumps on every connect attempt, so stale callbacks can tell
    this._failures = 0; // consecutive connects that ended without a hello
    this._everOpened = false;
    this._lastFrameAt = 0;
    this._timers = { reconnect: null, connect: null, heartbeat: null, poll: null, resync: null };
    this._polling = false;
    this._pendingMarks = []; // {frame, resolve, reject, timer}: mark_read frames awaiting read_state
    this._pendingPings = []; // {resolve, reject, sentAt, timer}
    this._pendingSeen = new Set(); // ids to mark seen once a socket is ready
    this._onOnline = () => this._retryNow();
    this._onVisible = () => {
      if (globalThis.document && globalThis.document.visibilityState === "visible") this._retryNow();
    };

    this._merge(Array.isArray(options.notifications) ? options.notifications : [], null);
  }

  // -- public API -------------------------------------------------------------

  /** "connecting" | "open" | "reconnecting" | "polling" | "closed". */
  get status() {
    return this._status;
  }

  /**
   * The unread count: the server's last (hello, read_state, REST), plus the unread
   * notifications pushed since that it did not include. 0 before anything is known.
   */
  get unreadCount() {
    return this._unread;
  }

  /** The kept notifications, newest (highest cursor) first, one per id. A new array on each read. */
  get notifications() {
    if (this._sorted === null) this._sorted = [...this._byId.values()].sort(byNewest);
    return [...this._sorted];
  }

  /** The cursor the next connect resumes after (`null`: none yet, the server sends `recent`). */
  get cursor() {
    return this._cursor;
  }

  /** Add a listener; returns a function that removes it. */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  /** Remove a listener added with `on`. */
  off(event, fn) {
    const set = this._listeners.get(event);
    if (set) set.delete(fn);
    return this;
  }

  /** Start (or restart after `close()` or a stop): connect the socket, or poll without WebSocket. Returns `this`. */
  connect() {
    if (!this._stopped) return this;
    this._stopped = false;
    this._failures = 0;
    this._addWindowListeners(true);
    if (!this._WebSocket) {
      this._startPolling();
    } else {
      this._open();
    }
    return this;
  }

  /**
   * Drop the current socket (code 1000) and connect again at once, with a fresh ticket and
   * the current cursor: after setting `client.token`, or when the app knows the network
   * changed. Starts the client when it is stopped. Returns `this`.
   */
  reconnect() {
    if (this._stopped) return this.connect();
    if (!this._WebSocket) return this;
    if (this._ws) this._drop(this._ws, CloseCode.NORMAL, "reconnecting");
    this._open();
    return this;
  }

  /** Close the socket with code 1000 and stop: no reconnect, no polling. Returns `this`. */
  close() {
    this._halt();
    return this;
  }

  /**
   * Mark notifications read. Over the socket when it is ready (confirmed by the server's
   * `read_state` push, repeated over REST when that does not come within `ackTimeout`),
   * else with `POST {apiBase}notifications/<id>/read/`. Ids already read here are skipped.
   * Resolves to `{ids, all: false, unread_count}`; rejects with an `HttpError` or a network error.
   */
  async markRead(ids) {
    const wanted = [...new Set(ids)].filter((id) => {
      const known = this._byId.get(id);
      return !known || UNREAD.has(known.state);
    });
    if (wanted.length === 0) return { ids: [], all: false, unread_count: this._unread };
    const results = [];
    for (let i = 0; i < wanted.length; i += IDS_PER_FRAME) {
      results.push(this._markRead({ type: "mark_read", ids: wanted.slice(i, i + IDS_PER_FRAME) }));
    }
    const done = await Promise.all(results);
    return { ids: wanted, all: false, unread_count: done[done.length - 1].unread_count };
  }

  /** Mark every notification of the user read (not only the kept ones). Resolves to `{ids: null, all: true, unread_count}`. */
  markAllRead() {
    return this._markRead({ type: "mark_read", all: true });
  }

  /**
   * Mark notifications seen (shown, not yet opened). Over the socket; when it is not
   * ready the ids wait for the next `hello`, since the REST API has no "seen" endpoint.
   */
  markSeen(ids) {
    const wanted = [...new Set(ids)].filter((id) => {
      const known = this._byId.get(id);
      return !known || known.state === "unseen";
    });
    if (!this._ready) {
      wanted.forEach((id) => this._pendingSeen.add(id));
      return Promise.resolve();
    }
    for (let i = 0; i < wanted.length; i += IDS_PER_FRAME) {
      this._send({ type: "mark_seen", ids: wanted.slice(i, i + IDS_PER_FRAME) });
    }
    return Promise.resolve();
  }

  /** Send `{"type": "ping"}`; resolves to the round trip in ms. Rejects when no socket is ready or no pong comes in `connectTimeout`. */
  ping() {
    if (!this._ready) return Promise.reject(new Error("notiflow: not connected"));
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, sentAt: Date.now(), timer: null };
      entry.timer = setTimeout(() => {
        this._pendingPings = this._pendingPings.filter((p) => p !== entry);
        reject(new Error("notiflow: no pong"));
      }, this._connectTimeout);
      this._pendingPings.push(entry);
      this._send({ type: "ping" });
    });
  }

  /**
   * Re-read the newest page and the unread count over REST and merge them: new
   * notifications fire "notification" with `source` ("fetch" by default), known ones
   * take the server's state. Resolves to the page's notifications, newest first.
   */
  async refresh({ source = "fetch" } = {}) {
    const [page, count] = await Promise.all([
      this._request("GET", `notifications/?page_size=${this._pageSize}`),
      this._request("GET", "notifications/unread-count/"),
    ]);
    const results = Array.isArray(page && page.results) ? page.results : [];
    const newest = results.reduce((max, n) => Math.max(max, n.cursor ?? 0), 0);
    this._merge(results, source);
    this._vouch(newest);
    if (count && typeof count.unread_count === "number") {
      this._setUnread(count.unread_count);
      this._countedUpTo = Math.max(this._countedUpTo ?? 0, newest);
    }
    return results;
  }

  // -- connection ---------------------------------------------------------------

  async _open() {
    this._clearTimer("reconnect");
    const generation = ++this._generation;
    if (!this._polling) this._setStatus(this._everOpened ? "reconnecting" : "connecting");
    let protocols;
    try {
      protocols = await this._withTimeout(this._protocols(), "no ticket in time");
    } catch (error) {
      if (generation !== this._generation || this._stopped) return;
      const status = error && error.status;
      const detail = `Could not get a WebSocket ticket: ${error && error.message ? error.message : error}`;
      if (status && status >= 400 && status < 500 && status !== 408 && status !== 429) {
        // Signed out, CSRF refused, or forbidden: asking again will not help.
        this._emit("error", { code: "unauthenticated", detail, status });
        this._halt();
        return;
      }
      this._emit("error", { code: "ticket_failed", detail, status });
      this._failed({ rateLimited: status === 429 });
      return;
    }
    if (generation !== this._generation || this._stopped) return;

    const url = new URL(this._url, globalThis.location ? globalThis.location.href : undefined);
    this._resuming = this._cursor !== null;
    if (this._resuming) url.searchParams.set("cursor", String(this._cursor));
    let ws;
    try {
      ws = new this._WebSocket(url.toString(), protocols);
    } catch (error) {
      this._emit("error", { code: "connect_failed", detail: String(error) });
      this._failed({});
      return;
    }
    this._ws = ws;
    this._ready = false;
    this._lastFrameAt = Date.now();
    ws.onmessage = (event) => this._onMessage(ws, event.data);
    ws.onclose = (event) => this._onClose(ws, event.code, event.reason);
    ws.onerror = () => {}; // a close event follows, with the code
    this._setTimer("connect", this._connectTimeout, () => this._drop(ws, CloseCode.STALE, "no hello in time"));
  }

  async _protocols() {
    if (this._firstTicket) {
      const ticket = this._firstTicket;
      this._firstTicket = null;
      return [SUBPROTOCOL, `ticket.${ticket}`];
    }
    if (this._getTicket) return [SUBPROTOCOL, `ticket.${await this._checkedTicket(this._getTicket())}`];
    if (this.token) return [SUBPROTOCOL, `jwt.${this.token}`];
    const body = await this._request("POST", "ws-ticket/");
    return [SUBPROTOCOL, `ticket.${await this._checkedTicket(body && body.ticket)}`];
  }

  /** `promise`, or a rejection with `message` after `connectTimeout` (a hung request must not stall reconnects). */
  _withTimeout(promise, message) {
    let timer;
    const expiry = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), this._connectTimeout);
    });
    return Promise.race([promise, expiry]).finally(() => clearTimeout(timer));
  }

  async _checkedTicket(value) {
    const ticket = await value;
    if (typeof ticket !== "string" || ticket === "") throw new TypeError("getTicket() must resolve to a non-empty string");
    return ticket;
  }

  /** Close `ws` at once, without waiting for its closing handshake (a dead network may never finish it). */
  _drop(ws, code, reason) {
    if (ws !== this._ws) return;
    ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch {
      // Already closing; the socket is ours no more either way.
    }
    this._onClose(ws, code, reason);
  }

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    const hadHello = this._ready;
    this._ws = null;
    this._ready = false;
    this._clearTimer("connect");
    this._clearTimer("heartbeat");
    this._clearTimer("resync");
    for (const ping of this._pendingPings.splice(0)) {
      clearTimeout(ping.timer);
      ping.reject(new Error("notiflow: socket closed"));
    }
    for (const mark of this._pendingMarks.splice(0)) this._markOverRest(mark);
    if (this._stopped) return;

    if (code === CloseCode.FORBIDDEN) {
      this._emit("error", { code: "forbidden", detail: reason || "The server refused this socket (4403)." });
      this._halt();
      return;
    }
    if (code === CloseCode.UNAUTHENTICATED && !this._getTicket && this.token) {
      this._emit("error", {
        code: "unauthenticated",
        detail: reason || "The token was refused or has expired (4401): set client.token and call connect().",
      });
      this._halt();
      return;
    }
    const limited = code === CloseCode.RATE_LIMITED || code === CloseCode.TOO_MANY_SOCKETS;
    if (hadHello && !limited) {
      this._failures = 0;
      this._schedule(backoffDelay(0, this._backoff, this._random));
    } else {
      this._failed({ rateLimited: limited });
    }
  }

  /** One more connect failed: wait the backoff (longer when rate limited), and poll after `pollAfter` in a row. */
  _failed({ rateLimited }) {
    this._failures += 1;
    if (this._failures >= this._pollAfter) this._startPolling();
    const { cap } = this._backoff;
    const delay = rateLimited
      ? cap / 2 + this._random() * (cap / 2)
      : backoffDelay(this._failures - 1, this._backoff, this._random);
    this._schedule(delay);
  }

  _schedule(delay) {
    if (this._stopped) return;
    if (!this._polling) this._setStatus(this._everOpened ? "reconnecting" : "connecting");
    this._setTimer("reconnect", delay, () => this._open());
  }

  /** The network is back, or the page is visible again: skip the rest of the wait. */
  _retryNow() {
    if (this._stopped || !this._WebSocket || this._ws || this._timers.reconnect === null) return;
    this._open();
  }

  _halt() {
    this._stopped = true;
    this._generation += 1;
    this._addWindowListeners(false);
    for (const name of Object.keys(this._timers)) this._clearTimer(name);
    this._polling = false;
    if (this._ws) this._drop(this._ws, CloseCode.NORMAL, "client closed");
    this._setStatus("closed");
  }

  _addWindowListeners(add) {
    const target = globalThis.window;
    if (!target || typeof target.addEventListener !== "function") return;
    const method = add ? "addEventListener" : "removeEventListener";
    target[method]("online", this._onOnline);
    if (globalThis.document) globalThis.document[method]("visibilitychange", this._onVisible);
  }

  _heartbeatTick(ws) {
    if (ws !== this._ws) return;
    const quiet = Date.now() - this._lastFrameAt;
    if (quiet >= 2 * this._heartbeat) {
      this._drop(ws, CloseCode.STALE, "no frame in two heartbeats");
      return;
    }
    if (quiet >= this._heartbeat / 2) this._send({ type: "ping" });
    this._setTimer("heartbeat", this._heartbeat, () => this._heartbeatTick(ws));
  }

  _send(frame) {
    if (!this._ws || !this._ready) return false;
    this._ws.send(JSON.stringify(frame));
    return true;
  }

  // -- frames -------------------------------------------------------------------

  _onMessage(ws, data) {
    if (ws !== this._ws) return;
    this._lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this._emit("error", { code: "bad_frame", detail: "The server sent a frame that is not JSON." });
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    switch (frame.type) {
      case "hello":
        this._onHello(ws, frame);
        break;
      case "resumed":
        this._onResumed(frame);
        break;
      case "notification":
        if (isNotification(frame.notification)) {
          this._merge([frame.notification], "push");
          this._see(frame.notification.cursor);
        }
        break;
      case "read_state":
        this._onReadState(frame);
        break;
      case "broadcast":
        this._emit("broadcast", frame.payload);
        break;
      case "pong":
        for (const ping of this._pendingPings.splice(0)) {
          clearTimeout(ping.timer);
          ping.resolve(Date.now() - ping.sentAt);
        }
        break;
      case "error":
        this._emit("error", { code: frame.code, detail: frame.detail });
        break;
      default:
        break; // a newer server's frame: ignored
    }
  }

  _onHello(ws, frame) {
    this._clearTimer("connect");
    this._ready = true;
    this._everOpened = true;
    this._failures = 0;
    this._stopPolling();
    if (typeof frame.unread_count === "number") this._setUnread(frame.unread_count);
    if (Number.isInteger(frame.cursor)) this._countedUpTo = frame.cursor;
    const recent = Array.isArray(frame.recent) ? frame.recent.filter(isNotification) : [];
    this._merge(recent, "recent");
    // Resuming, the `resumed` frame vouches for the cursor; before it arrives nothing is vouched for.
    if (!this._resuming && Number.isInteger(frame.cursor)) this._vouch(frame.cursor);
    this._setStatus("open");
    if (this._heartbeat > 0) this._setTimer("heartbeat", this._heartbeat, () => this._heartbeatTick(ws));
    if (this._pendingSeen.size > 0) {
      const ids = [...this._pendingSeen];
      this._pendingSeen.clear();
      this.markSeen(ids);
    }
  }

  _onResumed(frame) {
    if (frame.recovered) {
      const missed = Array.isArray(frame.notifications) ? frame.notifications.filter(isNotification) : [];
      this._merge(missed, "resume");
      if (Number.isInteger(frame.cursor)) this._vouch(frame.cursor);
      return;
    }
    // More were missed than the server replays: re-read the newest page over REST.
    if (Number.isInteger(frame.cursor)) this._vouch(frame.cursor);
    this._resync(0);
  }

  _resync(attempt) {
    this.refresh({ source: "fetch" }).then(
      (notifications) => this._emit("resync", { notifications }),
      (error) => {
        this._emit("error", { code: "resync_failed", detail: String(error && error.message ? error.message : error) });
        if (this._ws && !this._stopped) {
          this._setTimer("resync", backoffDelay(attempt, this._backoff, this._random), () => this._resync(attempt + 1));
        }
      },
    );
  }

  _onReadState(frame) {
    const all = Boolean(frame.all);
    const ids = Array.isArray(frame.ids) ? frame.ids : null;
    const state = frame.state === "seen" ? "seen" : "read";
    this._applyState({ ids, all, state });
    if (typeof frame.unread_count === "number") this._setUnread(frame.unread_count);
    const payload = { ids, all, unread_count: this._unread };
    this._emit(state, payload);
    if (state !== "read") return;
    const covered = new Set(ids ?? []);
    this._pendingMarks = this._pendingMarks.filter((mark) => {
      const done = all || (!mark.frame.all && mark.frame.ids.every((id) => covered.has(id)));
      if (done) {
        clearTimeout(mark.timer);
        mark.resolve(payload);
      }
      return !done;
    });
  }

  // -- marking read ----------------------------------------------------------

  _markRead(frame) {
    return new Promise((resolve, reject) => {
      const mark = { frame, resolve, reject, timer: null };
      if (this._send(frame)) {
        mark.timer = setTimeout(() => {
          this._pendingMarks = this._pendingMarks.filter((m) => m !== mark);
          this._markOverRest(mark);
        }, this._ackTimeout);
        this._pendingMarks.push(mark);
      } else {
        this._markOverRest(mark);
      }
    });
  }

  async _markOverRest(mark) {
    clearTimeout(mark.timer);
    const { frame } = mark;
    try {
      let unread = this._unread;
      if (frame.all) {
        const body = await this._request("POST", "notifications/read-all/");
        if (body && typeof body.unread_count === "number") unread = body.unread_count;
      } else {
        for (const id of frame.ids) {
          try {
            const body = await this._request("POST", `notifications/${encodeURIComponent(id)}/read/`);
            if (body && typeof body.unread_count === "number") unread = body.unread_count;
          } catch (error) {
            if (!(error instanceof HttpError && error.status === 404)) throw error; // 404: not the user's, or gone
          }
        }
      }
      const ids = frame.all ? null : frame.ids;
      this._applyState({ ids, all: Boolean(frame.all), state: "read" });
      this._setUnread(unread);
      const payload = { ids, all: Boolean(frame.all), unread_count: this._unread };
      this._emit("read", payload);
      mark.resolve(payload);
    } catch (error) {
      mark.reject(error);
    }
  }

  _applyState({ ids, all, state }) {
    let changed = false;
    const targets = all ? [...this._byId.keys()] : (ids ?? []);
    for (const id of targets) {
      const n = this._byId.get(id);
      if (!n) continue;
      const moves = state === "read" ? UNREAD.has(n.state) : n.state === "unseen";
      if (moves) {
        this._byId.set(id, { ...n, state });
        changed = true;
      }
    }
    if (changed) this._changed();
  }

  // -- polling ---------------------------------------------------------------

  _startPolling() {
    if (this._polling || this._stopped) return;
    this._polling = true;
    this._setStatus("polling");
    this._poll();
  }

  _stopPolling() {
    this._polling = false;
    this._clearTimer("poll");
  }

  async _poll() {
    try {
      await this.refresh({ source: "poll" });
    } catch (error) {
      if (!this._polling) return;
      if (error instanceof HttpError && (error.status === 401 || error.status === 403)) {
        this._emit("error", { code: "unauthenticated", detail: error.message, status: error.status });
        this._halt();
        return;
      }
      this._emit("error", { code: "poll_failed", detail: String(error && error.message ? error.message : error) });
    }
    if (this._polling) this._setTimer("poll", this._pollInterval, () => this._poll());
  }

  // -- REST --------------------------------------------------------------------

  async _request(method, path, body) {
    if (!this._fetch) throw new Error("notiflow: no fetch() to call the REST API with");
    const url = this._apiBase + path;
    const headers = { Accept: "application/json" };
    const init = { method, headers };
    if (this.token) {
      headers.Authorization = `Bearer ${this.token}`;
      init.credentials = "omit";
    } else {
      init.credentials = "same-origin";
      const csrf = this._csrfToken ?? cookie("csrftoken");
      if (method !== "GET" && csrf) headers["X-CSRFToken"] = csrf;
    }
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await this._withTimeout(this._fetch(url, init), `no answer from ${url} in time`);
    let parsed = null;
    const type = response.headers && response.headers.get ? response.headers.get("Content-Type") || "" : "";
    if (response.status !== 204 && type.includes("json")) parsed = await response.json();
    if (!response.ok) throw new HttpError(response.status, parsed, url);
    return parsed;
  }

  // -- state -------------------------------------------------------------------

  /** Add new notifications (firing "notification" when `source` is set) and take the state of known ones. */
  _merge(list, source) {
    const fresh = [];
    let changed = false;
    for (const n of list) {
      if (!isNotification(n)) continue;
      const known = this._byId.get(n.id);
      if (known) {
        if (known.state !== n.state && (source === "fetch" || source === "poll")) {
          this._byId.set(n.id, { ...known, state: n.state });
          changed = true;
        }
        continue;
      }
      if (this._seenIds.has(n.id)) continue; // reported before, trimmed since
      this._byId.set(n.id, n);
      this._seenIds.add(n.id);
      fresh.push(n);
      changed = true;
    }
    if (!changed) return;
    this._trim();
    this._changed(false);
    if (source === "push" || source === "resume") this._countNew(fresh);
    if (source !== null) {
      fresh.sort((a, b) => -byNewest(a, b)); // oldest first, the order they happened in
      for (const n of fresh) this._emit("notification", n, { source });
    }
    this._emit("change", this.notifications);
  }

  _trim() {
    if (this._byId.size > this._max) {
      const keep = [...this._byId.values()].sort(byNewest).slice(0, this._max);
      this._byId = new Map(keep.map((n) => [n.id, n]));
    }
    // Remember trimmed ids too, but not without bound: the oldest go first (a Set iterates in insertion order).
    const bound = 10 * this._max;
    if (this._seenIds.size > bound) {
      const excess = this._seenIds.size - bound;
      let i = 0;
      for (const id of this._seenIds) {
        if (i++ >= excess) break;
        this._seenIds.delete(id);
      }
    }
  }

  _changed(emit = true) {
    this._sorted = null;
    if (emit) this._emit("change", this.notifications);
  }

  /**
   * Add to the unread count the new unread notifications it does not include yet: those
   * after the cursor of the server's last count (a `hello` counts what a resume then replays).
   * `fresh` holds only ids never seen before, so out-of-order pushes each count once.
   */
  _countNew(fresh) {
    const counted = this._countedUpTo;
    let added = 0;
    for (const n of fresh) {
      // Without a cursor (from the server or on the notification) every new one counts.
      if (UNREAD.has(n.state) && (counted === null || !Number.isInteger(n.cursor) || n.cursor > counted)) added += 1;
    }
    if (added) this._setUnread(this._unread + added);
  }

  /** A push with this cursor arrived: advance the resume cursor while the run has no gap. */
  _see(cursor) {
    if (!Number.isInteger(cursor) || this._cursor === null || cursor <= this._cursor) return;
    this._ahead.add(cursor);
    while (this._ahead.has(this._cursor + 1)) {
      this._cursor += 1;
      this._ahead.delete(this._cursor);
    }
  }

  /** The server vouches that nothing up to `cursor` is still to come (hello, resumed, a REST page). */
  _vouch(cursor) {
    if (!Number.isInteger(cursor)) return;
    if (this._cursor === null || cursor > this._cursor) this._cursor = cursor;
    for (const c of this._ahead) if (c <= this._cursor) this._ahead.delete(c);
    while (this._ahead.has(this._cursor + 1)) {
      this._cursor += 1;
      this._ahead.delete(this._cursor);
    }
  }

  _setUnread(count) {
    if (count === this._unread) return;
    this._unread = count;
    this._emit("unread", count);
  }

  _setStatus(status) {
    if (status === this._status) return;
    this._status = status;
    this._emit("status", status);
  }

  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (error) {
        // A listener's bug must not break the client: report it where the page can see it.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  _setTimer(name, delay, fn) {
    this._clearTimer(name);
    this._timers[name] = setTimeout(() => {
      this._timers[name] = null;
      fn();
    }, delay);
  }

  _clearTimer(name) {
    if (this._timers[name] !== null) {
      clearTimeout(this._timers[name]);
      this._timers[name] = null;
    }
  }
}

/** `new NotiflowClient(options).connect()`. */
export function connect(options) {
  return new NotiflowClient(options).connect();
}
