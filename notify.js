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
//
// Each connection opens with the server's notify.hello, handed to
// on("notify.hello") handlers (not to on("*")) as {epoch, seq}: seq is
// where the server's replay on this connection ends, so a page that
// resumed after S knows that the messages it receives with a seq up to
// hello's seq are replayed, and the rest live.
//
// Tokens (opts.token): browsers let a script set no header on a WebSocket
// or an EventSource, so a bearer token travels in the URL, as the query
// parameter access_token (SignalR's name), one carrier for both
// transports. opts.token is a function, possibly async, called before
// every connection and reconnection, so an expiring token is renewed: when
// the server closes a connection because its authorisation expired (1008,
// "notify: authorisation expired", on either transport), the client asks
// for a fresh token at once and resumes from its last seq, losing nothing.
// The server never logs query strings, but proxies' access logs may: use
// short-lived tokens.
//
// Refusals (state "unauthorized"): browsers hide why an upgrade or an
// EventSource failed, so a refused token looks like a network failure.
// After a connection fails before it opens, notify.js fetches the same URL
// with probe=1 (credentials included); the server runs the same checks and
// answers 204 or the refusal's status without upgrading anyone. On 401 or
// 403 the client stops retrying and reports "unauthorized" until the app
// calls reconnect() (e.g. after a new login); any other answer, or none,
// is an outage and the client backs off and retries (429 and 503 too).
// The cost is one request, only after a failure; it tells the page nothing
// an upgrade attempt does not.
//
// Liveness (opts.keepAlive, default 15000 ms; 0 turns it off): the client
// asks the server for a notify.keepalive message at that interval, on both
// transports, and the server says in notify.hello the interval it keeps
// (at least a second). If nothing at all arrives for twice that interval
// plus a second, the connection is taken for dead (a network that died
// silently: a Wi-Fi switch, a laptop that slept, a NAT that forgot the
// flow), dropped, and replaced at once, resuming from the last seq. So is
// the connection when the browser reports it is back "online", and when a
// page that was hidden for longer than that window becomes visible.
//
// Reconnect spreading: a server that shuts down (1001) tells each client
// how long to wait before it comes back, drawn over a window sized to its
// number of connections (Options.ReconnectRate); notify.js waits exactly
// that long. Without that (an older server, a proxy's close) it waits a
// random delay up to minDelay, then backs off.

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
 * @param {() => (string|null|undefined|Promise<string|null|undefined>)} [opts.token]
 *   called before every (re)connection; its result is sent as access_token.
 * @param {number} [opts.keepAlive]  keep-alive interval asked of the server in ms (default 15000; 0: off).
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
const libraryTypes = ["message", "notify.hello", "notify.gap", "notify.error", "notify.close", "notify.keepalive"];

// expiredReason is the close reason of a connection whose authorisation
// expired (with code 1008): reconnect at once, with a fresh token.
const expiredReason = "notify: authorisation expired";

// longestWait bounds the wait a shutting-down server may ask for.
const longestWait = 10 * 60 * 1000;

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
    this.tokenFn = opts.token ?? null;
    if (this.tokenFn !== null && typeof this.tokenFn !== "function") {
      throw new TypeError("notify: token must be a function that returns the token (or a promise of it)");
    }
    this.keepAlive = opts.keepAlive ?? 15000;
    this.token = null; // the token the current connection was opened with
    this.granted = 0; // the keep-alive interval the server granted (notify.hello), ms
    this.lastSeen = 0; // Date.now() when something last arrived
    this.deadline = null; // the liveness timer
    this.hiddenAt = null;
    this.run = 0; // counts open() calls: a token or probe answer for an older one is stale
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
    this.onOnline = () => this.recover();
    this.onVisibility = () => {
      if (document.visibilityState === "hidden") {
        this.hiddenAt = Date.now();
      } else if (this.hiddenAt !== null) {
        const hidden = Date.now() - this.hiddenAt;
        this.hiddenAt = null;
        if (hidden > this.window()) this.recover();
      }
    };
    globalThis.addEventListener?.("online", this.onOnline);
    globalThis.document?.addEventListener("visibilitychange", this.onVisibility);
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

  /**
   * Calls fn(state) now and on every change: "connecting", "open",
   * "closed" (lost, a reconnection is scheduled; or close() was called),
   * "unauthorized" (the server refused the credentials with 401 or 403: no
   * retry until reconnect()).
   */
  onState(fn) {
    this.stateHandlers.push(fn);
    fn(this.state);
    return this;
  }

  /** Subscribes to topic (over SSE by reopening the stream, see the header). */
  subscribe(topic) {
    this.topics.add(topic);
    if (this.es) this.restream();
    else this.send({ type: "notify.subscribe", topic });
  }

  /** Unsubscribes from topic. */
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
    this.drop(1000);
    globalThis.removeEventListener?.("online", this.onOnline);
    globalThis.document?.removeEventListener("visibilitychange", this.onVisibility);
    this.setState("closed");
  }

  /**
   * Drops the current connection, if any, and connects again at once,
   * calling opts.token for a fresh token, and resumes from the last seq:
   * after onState reported "unauthorized" and the user signed in again,
   * or whenever the app knows the connection is stale.
   */
  reconnect() {
    if (this.closed) return;
    this.drop(1000);
    this.attempt = 0;
    this.open();
  }

  // recover replaces a connection that may be dead (the browser came back
  // online, a long-hidden page is visible again): at once, unless the
  // client is connecting already or waits for new credentials.
  recover() {
    if (this.closed || this.state === "unauthorized" || this.state === "connecting") return;
    this.reconnect();
  }

  // drop forgets the current connection, closing it without waiting for
  // its events, and cancels every timer.
  drop(code) {
    clearTimeout(this.timer);
    clearTimeout(this.deadline);
    this.run++;
    if (this.ws) {
      const ws = this.ws;
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      ws.close(code);
    }
    if (this.es) this.es.close();
    this.ws = this.es = null;
    this.transport = null;
  }

  open() {
    this.setState("connecting");
    const run = ++this.run;
    const start = (token) => {
      if (this.closed || run !== this.run) return;
      this.token = token ?? null;
      if (this.mode === "sse" || (this.mode === "auto" && chosen.get(this.streamURL) === "sse")) {
        this.openStream(new Set(this.topics), false);
      } else {
        this.openSocket(this.mode === "auto" && !chosen.has(this.streamURL));
      }
    };
    if (!this.tokenFn) return start(null);
    // A token function that throws or rejects is an outage like any
    // other (the app's token endpoint may be down): back off and retry.
    Promise.resolve()
      .then(() => this.tokenFn())
      .then(start, () => {
        if (!this.closed && run === this.run) this.lost(1006);
      });
  }

  // query returns url with the topics, the position to resume from, the
  // keep-alive asked for and the token.
  query(url) {
    const u = new URL(url);
    for (const t of this.topics) u.searchParams.append("topic", t);
    u.searchParams.set("since", this.seq == null ? "now" : String(this.seq));
    if (this.epoch != null && this.seq != null) u.searchParams.set("epoch", this.epoch);
    if (this.keepAlive > 0) u.searchParams.set("keepalive", String(Math.round(this.keepAlive)));
    if (this.token != null) u.searchParams.set("access_token", String(this.token));
    return u;
  }

  // window is how long the client waits for anything to arrive before it
  // takes the connection for dead: twice the keep-alive interval plus a
  // second.
  window() {
    return 2 * (this.granted || this.keepAlive || 15000) + 1000;
  }

  // alive records that something arrived on the current connection.
  alive() {
    this.lastSeen = Date.now();
  }

  // watch arms the liveness timer, once the server granted keep-alives.
  // The timer is not reset by every message: when it fires it looks at
  // lastSeen and re-arms for what is left of the window.
  watch() {
    clearTimeout(this.deadline);
    if (!this.granted) return;
    const check = () => {
      if (this.closed || this.state !== "open") return;
      const left = this.lastSeen + this.window() - Date.now();
      if (left > 0) {
        this.deadline = setTimeout(check, left);
        return;
      }
      // Nothing at all for the whole window: a dead connection.
      this.drop(4002);
      this.lost("stale");
    };
    this.deadline = setTimeout(check, this.window());
  }

  // probe asks the server whether a connection with this URL would be
  // accepted (see the header) and resolves to its status, or 0 when it
  // could not be asked.
  async probe() {
    const u = this.query(this.streamURL);
    u.searchParams.set("probe", "1");
    try {
      const res = await fetch(u, { credentials: "include", cache: "no-store" });
      return res.status;
    } catch {
      return 0;
    }
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
      this.alive();
      // subscribe()/unsubscribe() calls made while connecting could not be
      // sent: bring the server in line with this.topics now.
      for (const t of this.topics) if (!asked.has(t)) this.send({ type: "notify.subscribe", topic: t });
      for (const t of asked) if (!this.topics.has(t)) this.send({ type: "notify.unsubscribe", topic: t });
      this.setState("open");
    };
    ws.onmessage = (ev) => {
      this.alive();
      this.receive(ev.data);
    };
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
      this.lost(ev.code, ev.reason, !opened);
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
      this.alive();
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
      this.lost(1006, "", !opened);
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
      this.alive();
      if (type === "notify.close") this.serverClosed(es, ev.data);
      else this.receive(ev.data);
    });
  }

  // serverClosed handles the server's notify.close exactly as a WebSocket
  // closed with the code and reason it names (and the wait, which over
  // WebSocket the reason carries).
  serverClosed(es, raw) {
    let code = 1006;
    let reason = "";
    let wait = null;
    try {
      const d = JSON.parse(raw)?.data;
      if (Number.isInteger(d?.code)) code = d.code;
      if (typeof d?.reason === "string") reason = d.reason;
      if (Number.isSafeInteger(d?.wait)) wait = d.wait;
    } catch {
      // malformed: a close all the same
    }
    es.close();
    this.es = null;
    this.lost(code, reason, false, wait);
  }

  // restream replaces the current EventSource with one for this.topics,
  // resuming from the last seq seen. Calls made in one go (several
  // subscribe() in a row) share one new stream. The state stays "open"
  // while it opens: the new stream replays what it missed. A new stream
  // is a new request, so it gets a fresh token first: the current one may
  // have expired or been revoked since the stream opened.
  restream() {
    if (this.restreaming) return;
    this.restreaming = true;
    queueMicrotask(() => {
      this.restreaming = false;
      const old = this.es;
      if (this.closed || !old || sameSet(this.esTopics, this.topics)) return;
      const swap = () => {
        // The topics as they are now: calls made while the token was
        // fetched are included, and a second swap finds nothing to do.
        if (this.closed || this.es !== old || sameSet(this.esTopics, this.topics)) return;
        const added = new Set([...this.topics].filter((t) => !this.esTopics.has(t)));
        old.close();
        clearTimeout(this.deadline);
        this.openStream(new Set(this.topics), this.esProbing, added);
      };
      if (!this.tokenFn) return swap();
      Promise.resolve()
        .then(() => this.tokenFn())
        .then((token) => {
          if (this.es === old) this.token = token ?? null;
          swap();
        }, swap);
    });
  }

  // lost schedules the next connection after one ended with this close
  // code and reason (a WebSocket's, or those a notify.close named; "stale"
  // when the liveness window passed). refusable: the connection failed
  // before it opened, so it may have been refused: the server is probed
  // first.
  lost(code, reason = "", refusable = false, wait = null) {
    clearTimeout(this.deadline);
    this.transport = null;
    this.granted = 0;
    this.setState("closed");
    if (refusable) {
      const run = this.run;
      this.probe().then((status) => {
        if (this.closed || run !== this.run) return;
        if (status === 401 || status === 403) {
          this.setState("unauthorized");
          return;
        }
        this.retry(code, reason, wait);
      });
      return;
    }
    this.retry(code, reason, wait);
  }

  // retry waits, then connects again.
  retry(code, reason, wait) {
    // Back off, with full jitter: the first retry after an open
    // connection comes within minDelay, so that clients of a server that
    // went away (1001) or restarts (1012) do not all return at once.
    // A server that shuts down says how long to wait (see the header), in
    // its 1001 close reason or notify.close's wait.
    // A slow-consumer close (4000), an expired authorisation (1008 with
    // its reason) and a dead connection concern this client alone and
    // lose nothing: come back at once, whatever minDelay, and resume.
    const ceiling = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt++);
    if (wait === null && code === 1001) {
      const m = /reconnect in (\d+)ms$/.exec(reason);
      if (m) wait = Number(m[1]);
    }
    const soon = code === 4000 || code === "stale" || (code === 1008 && reason === expiredReason);
    let delay;
    if (soon) delay = Math.random() * Math.min(this.minDelay, 250);
    else if (code === 1001 && wait !== null && wait >= 0) delay = Math.min(wait, longestWait);
    else delay = Math.random() * ceiling;
    const run = this.run;
    this.timer = setTimeout(() => {
      if (!this.closed && run === this.run) this.open();
    }, delay);
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
        // Handed to on("notify.hello") only, not to on("*"): it is the
        // connection's opening, not a message.
        for (const fn of this.handlers.get("notify.hello") || []) fn(msg.data, msg);
        // The liveness window starts once the server says it keeps the
        // interval: an older server sends no keep-alives.
        if (this.keepAlive > 0 && Number.isSafeInteger(msg.data.keepalive) && msg.data.keepalive > 0) {
          this.granted = msg.data.keepalive;
          this.watch();
        }
        return;
      case "notify.keepalive":
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
