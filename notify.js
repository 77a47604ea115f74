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

/**
 * Opens a notification stream.
 * @param {string} url  ws:, wss:, http(s): or a path on this page's host ("/ws").
 * @param {object} [opts]
 * @param {string[]} [opts.topics]  topics to subscribe to.
 * @param {number} [opts.since]     seq to resume after (e.g. from the REST response that rendered the page).
 * @param {string} [opts.epoch]     the epoch that seq belongs to.
 * @param {number} [opts.minDelay]  first reconnect delay in ms (default 500).
 * @param {number} [opts.maxDelay]  longest reconnect delay in ms (default 30000).
 */
export function connect(url, opts = {}) {
  return new NotifyClient(url, opts);
}

export class NotifyClient {
  constructor(url, opts = {}) {
    this.url = toWebSocketURL(url);
    this.topics = new Set(opts.topics || []);
    this.seq = opts.since ?? null;
    this.epoch = opts.epoch ?? null;
    this.minDelay = opts.minDelay ?? 500;
    this.maxDelay = opts.maxDelay ?? 30000;
    this.state = "connecting";
    this.handlers = new Map();
    this.gapHandlers = [];
    this.stateHandlers = [];
    this.attempt = 0;
    this.closed = false;
    this.ws = null;
    this.timer = null;
    this.open();
  }

  /** Calls fn(data, msg) for every message of this type; "*" matches all. */
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(fn);
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
    this.send({ type: "notify.subscribe", topic });
  }

  unsubscribe(topic) {
    this.topics.delete(topic);
    this.send({ type: "notify.unsubscribe", topic });
  }

  /** Sends an application message (delivered to the server's OnMessage hook). */
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
    this.setState("closed");
  }

  open() {
    const u = new URL(this.url);
    for (const t of this.topics) u.searchParams.append("topic", t);
    const asked = new Set(this.topics); // what this socket's URL subscribes to
    u.searchParams.set("since", this.seq == null ? "now" : String(this.seq));
    if (this.epoch != null && this.seq != null) u.searchParams.set("epoch", this.epoch);
    this.setState("connecting");
    const ws = new WebSocket(u);
    this.ws = ws;
    ws.onopen = () => {
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
      if (ws.readyState === WebSocket.CLOSED) ws.onclose({ code: 1006 });
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws || this.closed) return;
      this.ws = null;
      this.setState("closed");
      // Back off, with full jitter: the first retry after an open
      // connection comes within minDelay, so that clients of a server that
      // went away (1001) or restarts (1012) do not all return at once.
      // A slow-consumer close (4000) concerns this client alone and loses
      // nothing: come back at once, whatever minDelay, and resume.
      const ceiling = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt++);
      const slowConsumer = ev.code === 4000;
      const delay = Math.random() * (slowConsumer ? Math.min(this.minDelay, 250) : ceiling);
      this.timer = setTimeout(() => this.open(), delay);
    };
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

function toWebSocketURL(url) {
  const u = new URL(url, location.href);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  return u.toString();
}
