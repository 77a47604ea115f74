// notify.js: the browser client of github.com/wsnotify/notify.
// A dependency-free ES module, served by notify.ScriptHandler.
//
//   import { connect } from "/notify.js";
//   const n = connect("/ws", { topics: ["customers"], since: 41, epoch: "9f2c…" });
//   n.on("customer.created", (data, msg) => render(data));
//   n.onGap(() => reloadEverything());
//   n.onState((state) => badge.textContent = state);
//
// It reconnects with exponential backoff and jitter, resumes from the last
// seq it saw (so nothing is missed within the server's history window),
// drops duplicates by seq, and reports gaps the server could not fill.
//
// Transports (opts.transport), over the one URL the server's Handler serves:
//   "auto" (default)  WebSocket first; if the upgrade fails, or the socket has
//                     not opened within 5 s, Server-Sent Events at once.
//                     Whichever opens first is kept for the rest of the
//                     page's life, for every client of that URL (a new page
//                     tries WebSocket again). When neither opens it is an
//                     outage: back off, then try both again.
//   "websocket"       WebSocket only.
//   "sse"             Server-Sent Events (EventSource) only.
// on, onGap, onState, de-duplication and resume behave the same on both, and
// the server's notify.close over SSE is handled as a WebSocket close with
// its code (1001 going away: spread reconnection; 4000 slow consumer: at
// once). `transport` says what the current connection uses.
//
// Over SSE, three differences:
// - send() has no channel to the server and returns false.
// - subscribe() and unsubscribe() reopen the stream with the new topic set,
//   resuming from the last seq seen, so nothing is lost (and a new topic's
//   messages are delivered from that seq on, not only from the call). A
//   new stream that fails before it opens is taken as refused for the
//   topics just added (EventSource does not tell a 403 from a network
//   error): they are dropped and reported to on("notify.error"), as a
//   WebSocket client is told when AuthorizeTopic refuses a subscription.
// - The browser hands notify.js only the events it listens for: the types
//   given to on(), and the library's own. So on("*") sees those types and
//   plain text, not others. A message of a type nobody listens to is
//   skipped by the browser; the position moves past it only with the next
//   message notify.js sees, so after a reconnect the server replays it and
//   it is skipped again. Nothing a handler listens for is lost or repeated,
//   but on a busy stream a page that listens for rare types may be told
//   notify.gap after a short outage: subscribe to topics, so that the
//   stream carries what the page uses.

/**
 * Opens a notification stream.
 * @param {string} url  ws:, wss:, http(s): or a path on this page's host ("/ws").
 * @param {object} [opts]
 * @param {string[]} [opts.topics]  topics to subscribe to.
 * @param {number} [opts.since]     seq to resume after (e.g. from the REST response that rendered the page).
 * @param {string} [opts.epoch]     the epoch that seq belongs to.
 * @param {number} [opts.minDelay]  first reconnect delay in ms (default 500).
 * @param {number} [opts.maxDelay]  longest reconnect delay in ms (default 30000).
 * @param {"auto"|"websocket"|"sse"} [opts.transport]  see above (default "auto").
 */
export function connect(url, opts = {}) {
  return new NotifyClient(url, opts);
}

// chosen maps an endpoint (its http(s) URL) to the transport "auto" found
// to work there, for the life of this page.
const chosen = new Map();

// fallbackAfter is how long "auto" waits for a WebSocket to open before it
// tries SSE: a proxy that swallows the upgrade leaves the socket
// connecting, with no error, until the browser gives up (minutes).
const fallbackAfter = 5000;

// The library's own SSE event types, listened for on every stream
// ("message" is what EventSource calls an event without a name: text).
const libraryTypes = ["message", "notify.hello", "notify.gap", "notify.error", "notify.close"];

export class NotifyClient {
  constructor(url, opts = {}) {
    this.mode = opts.transport ?? "auto";
    if (!["auto", "websocket", "sse"].includes(this.mode)) {
      throw new TypeError(`notify: transport must be "auto", "websocket" or "sse", not ${JSON.stringify(this.mode)}`);
    }
    this.url = toWebSocketURL(url);
    this.streamURL = toHTTPURL(url);
    this.topics = new Set(opts.topics || []);
    this.seq = opts.since ?? null;
    this.epoch = opts.epoch ?? null;
    this.minDelay = opts.minDelay ?? 500;
    this.maxDelay = opts.maxDelay ?? 30000;
    this.state = "connecting";
    this.transport = null; // "websocket" or "sse": what the current connection uses
    this.handlers = new Map();
    this.gapHandlers = [];
    this.stateHandlers = [];
    this.attempt = 0;
    this.closed = false;
    this.ws = null;
    this.es = null; // the current EventSource
    this.esTopics = null; // the topics its URL subscribes to
    this.esTypes = null; // the event types it has listeners for
    this.esProbing = false;
    this.restreaming = false;
    this.timer = null;
    this.open();
  }

  /** Calls fn(data, msg) for every message of this type; "*" matches all (over SSE, see the header). */
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(fn);
    if (this.es) this.listen(type);
    return this;
  }

  /** Calls fn(info) when the server could not replay what was missed: reload your state. */
  onGap(fn) {
    this.gapHandlers.push(fn);
    return this;
  }

  /** Calls fn(state) on "connecting", "open" and "closed". */
  onState(fn) {
    this.stateHandlers.push(fn);
    fn(this.state);
    return this;
  }

  subscribe(topic) {
    this.topics.add(topic);
    if (this.es) this.restream();
    else this.send({ type: "notify.subscribe", topic });
  }

  unsubscribe(topic) {
    this.topics.delete(topic);
    if (this.es) this.restream();
    else this.send({ type: "notify.unsubscribe", topic });
  }

  /**
   * Sends an application message (delivered to the server's OnMessage
   * hook). Returns false when it could not: while connecting, and always
   * over SSE, which carries nothing to the server.
   */
  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(typeof obj === "string" ? obj : JSON.stringify(obj));
      return true;
    }
    return false;
  }

  /** Closes the stream for good. */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    if (this.es) this.es.close();
    this.ws = this.es = null;
    this.transport = null;
    this.setState("closed");
  }

  open() {
    this.setState("connecting");
    if (this.mode === "sse" || (this.mode === "auto" && chosen.get(this.streamURL) === "sse")) {
      this.openStream(new Set(this.topics), false);
    } else {
      this.openSocket(this.mode === "auto" && !chosen.has(this.streamURL));
    }
  }

  // query returns url with the topics and the position to resume from.
  query(url) {
    const u = new URL(url);
    for (const t of this.topics) u.searchParams.append("topic", t);
    u.searchParams.set("since", this.seq == null ? "now" : String(this.seq));
    if (this.epoch != null && this.seq != null) u.searchParams.set("epoch", this.epoch);
    return u;
  }

  // openSocket opens a WebSocket. When probing ("auto" has not chosen yet),
  // a socket that fails or has not opened within fallbackAfter gives way
  // to SSE at once, without a backoff.
  openSocket(probing) {
    const asked = new Set(this.topics); // what this socket's URL subscribes to
    const ws = new WebSocket(this.query(this.url));
    this.ws = ws;
    this.transport = "websocket";
    let opened = false;
    const fallback = () => {
      this.ws = null;
      this.openStream(new Set(this.topics), true);
    };
    const probe = probing
      ? setTimeout(() => {
          if (this.ws !== ws || this.closed || opened) return;
          ws.onclose = null;
          ws.close();
          fallback();
        }, fallbackAfter)
      : null;
    ws.onopen = () => {
      clearTimeout(probe);
      opened = true;
      if (probing) chosen.set(this.streamURL, "websocket");
      this.attempt = 0;
      // subscribe()/unsubscribe() calls made while connecting could not be
      // sent: bring the server in line with this.topics now.
      for (const t of this.topics) if (!asked.has(t)) this.send({ type: "notify.subscribe", topic: t });
      for (const t of asked) if (!this.topics.has(t)) this.send({ type: "notify.unsubscribe", topic: t });
      this.setState("open");
    };
    ws.onmessage = (ev) => this.receive(ev.data);
    // Browsers follow a failed handshake's error with a close event; some
    // other runtimes do not, so treat an error that left the socket closed
    // as a close (the handler below runs once per socket either way).
    ws.onerror = () => {
      if (ws.readyState === WebSocket.CLOSED && ws.onclose) ws.onclose({ code: 1006 });
    };
    ws.onclose = (ev) => {
      clearTimeout(probe);
      if (this.ws !== ws || this.closed) return;
      if (probing && !opened) return fallback();
      this.ws = null;
      this.lost(ev.code);
    };
  }

  // openStream opens an EventSource subscribed to topics. When probing, a
  // stream that opens makes SSE this URL's transport for the page's life.
  // added holds the topics a run-time change added to the previous
  // stream's: if this one fails before it opens they are taken as refused
  // (a forbidden topic fails the whole request with 403, which EventSource
  // does not report), or every reconnection would carry them and fail.
  //
  // notify.js reconnects by itself, closing the EventSource at its first
  // error, because EventSource's own reconnection is wrong here in four
  // ways: it waits one fixed delay (retry:) with no backoff and no jitter,
  // so after a shutdown (1001) every page would return at the same moment;
  // it reuses the URL it was made with, whose since= and epoch= win over
  // its Last-Event-ID, so it would resume from where the page started
  // (replaying all since, or a needless notify.gap once history moved on);
  // that URL also fixes the topic set; and it gives up for good, saying
  // nothing, when the server answers an error status (503 while it
  // restarts, 429).
  openStream(topics, probing, added = new Set()) {
    // withCredentials sends cookies to another origin, as a WebSocket
    // does; the server's CORS answer allows that for allowed origins only.
    const es = new EventSource(this.query(this.streamURL), { withCredentials: true });
    this.es = es;
    this.esTopics = topics;
    this.esTypes = new Set();
    this.esProbing = probing;
    this.transport = "sse";
    let opened = false;
    for (const t of libraryTypes) this.listen(t);
    for (const t of this.handlers.keys()) this.listen(t);
    es.onopen = () => {
      if (this.es !== es || this.closed) return;
      opened = true;
      if (probing) chosen.set(this.streamURL, "sse");
      this.attempt = 0;
      this.setState("open");
    };
    es.onerror = () => {
      if (this.es !== es || this.closed) return;
      es.close();
      this.es = null;
      if (!opened) {
        for (const topic of added) {
          if (!this.topics.delete(topic)) continue;
          const data = { request: "notify.subscribe", topic, error: "notify: the stream with this topic was refused" };
          this.dispatch("notify.error", data, { type: "notify.error", data });
        }
      }
      this.lost(1006);
    };
  }

  // listen makes the current EventSource hand events of this type to
  // notify.js: the browser dispatches a named event only to listeners of
  // that name. "*" and "text" are not event names.
  listen(type) {
    if (type === "*" || type === "text" || this.esTypes.has(type)) return;
    this.esTypes.add(type);
    const es = this.es;
    es.addEventListener(type, (ev) => {
      if (this.es !== es || this.closed) return;
      if (type === "notify.close") this.serverClosed(es, ev.data);
      else this.receive(ev.data);
    });
  }

  // serverClosed handles the server's notify.close exactly as a WebSocket
  // closed with the code it names.
  serverClosed(es, raw) {
    let code = 1006;
    try {
      const c = JSON.parse(raw)?.data?.code;
      if (Number.isInteger(c)) code = c;
    } catch {
      // malformed: a close all the same
    }
    es.close();
    this.es = null;
    this.lost(code);
  }

  // restream replaces the current EventSource with one for this.topics,
  // resuming from the last seq seen. Calls made in one go (several
  // subscribe() in a row) share one new stream. The state stays "open"
  // while it opens: the new stream replays what it missed.
  restream() {
    if (this.restreaming) return;
    this.restreaming = true;
    queueMicrotask(() => {
      this.restreaming = false;
      const old = this.es;
      if (this.closed || !old || sameSet(this.esTopics, this.topics)) return;
      const added = new Set([...this.topics].filter((t) => !this.esTopics.has(t)));
      old.close();
      this.openStream(new Set(this.topics), this.esProbing, added);
    });
  }

  // lost schedules the next connection after one ended with this close
  // code (a WebSocket's, or the one a notify.close named).
  lost(code) {
    this.transport = null;
    this.setState("closed");
    // Back off, with full jitter: the first retry after an open
    // connection comes within minDelay, so that clients of a server that
    // went away (1001) or restarts (1012) do not all return at once.
    // A slow-consumer close (4000) concerns this client alone and loses
    // nothing: come back at once, whatever minDelay, and resume.
    const ceiling = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt++);
    const slowConsumer = code === 4000;
    const delay = Math.random() * (slowConsumer ? Math.min(this.minDelay, 250) : ceiling);
    this.timer = setTimeout(() => this.open(), delay);
  }

  receive(raw) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      msg = null;
    }
    if (msg === null || typeof msg !== "object" || typeof msg.type !== "string") {
      this.dispatch("text", raw, raw); // NotifyText frames that are not envelopes
      return;
    }
    switch (msg.type) {
      case "notify.hello":
        // Only the server's own hello and gap move the position; anything
        // else of their type (the server never sends it) is dropped.
        if (!isPosition(msg.data)) return;
        this.epoch = msg.data.epoch;
        if (this.seq == null) this.seq = msg.data.seq;
        return;
      case "notify.error":
        // A refused subscription: forget the topic, or every reconnection
        // URL would carry it and be refused as a whole.
        if (msg.data && msg.data.request === "notify.subscribe") this.topics.delete(msg.data.topic);
        this.dispatch(msg.type, msg.data, msg);
        return;
      case "notify.gap":
        if (!isPosition(msg.data)) return;
        this.epoch = msg.data.epoch;
        this.seq = msg.data.seq;
        for (const fn of this.gapHandlers) fn(msg.data);
        return;
    }
    // Numbered messages carry a positive safe integer; a seq of any other
    // kind (a string, 1e300, 1.5) must not move this.seq, or every real
    // message below it would be dropped as seen.
    if (Number.isSafeInteger(msg.seq) && msg.seq > 0) {
      if (this.seq != null && msg.seq <= this.seq) return; // seen already
      this.seq = msg.seq;
    }
    this.dispatch(msg.type, msg.data, msg);
  }

  dispatch(type, data, msg) {
    for (const fn of this.handlers.get(type) || []) fn(data, msg);
    for (const fn of this.handlers.get("*") || []) fn(data, msg);
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    for (const fn of this.stateHandlers) fn(state);
  }
}

// isPosition reports whether data is a stream position as notify.hello and
// notify.gap carry it: {epoch: string, seq: safe integer >= 0}.
function isPosition(data) {
  return (
    data !== null &&
    typeof data === "object" &&
    typeof data.epoch === "string" &&
    Number.isSafeInteger(data.seq) &&
    data.seq >= 0
  );
}

// sameSet reports whether sets a and b hold the same elements.
function sameSet(a, b) {
  return a.size === b.size && [...a].every((x) => b.has(x));
}

function toWebSocketURL(url) {
  const u = new URL(url, location.href);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  return u.toString();
}

function toHTTPURL(url) {
  const u = new URL(url, location.href);
  if (u.protocol === "ws:") u.protocol = "http:";
  if (u.protocol === "wss:") u.protocol = "https:";
  return u.toString();
}
