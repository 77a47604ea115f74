// Type declarations for notify.js, the browser client of
// github.com/wsnotify/notify, served beside it by notify.ScriptHandler.
// See notify.js's header for what each option does.

/** A connection's state, as onState reports it. */
export type State =
  /** opening a connection (or fetching a token for it) */
  | "connecting"
  /** connected: messages flow */
  | "open"
  /** lost, a reconnection is scheduled; or close() was called */
  | "closed"
  /** the server refused the credentials (401 or 403): no retry until reconnect() */
  | "unauthorized";

/** The transport option: "auto" tries WebSocket, then Server-Sent Events. */
export type TransportMode = "auto" | "websocket" | "sse";

/** The transport a connection uses. */
export type Transport = "websocket" | "sse";

/** The result of a token function: the token, or nothing to send none. */
export type Token = string | null | undefined;

export interface ConnectOptions {
  /** Topics to subscribe to. */
  topics?: string[];
  /** The seq to resume after (e.g. from the Notify-Seq header of the REST response the page rendered). */
  since?: number;
  /** The epoch that seq belongs to (Notify-Epoch). */
  epoch?: string;
  /** The first reconnection delay in ms (default 500). */
  minDelay?: number;
  /** The longest reconnection delay in ms (default 30000). */
  maxDelay?: number;
  /** The transport (default "auto"). */
  transport?: TransportMode;
  /** Called before every connection and reconnection; the result is sent as the access_token query parameter. */
  token?: () => Token | Promise<Token>;
  /** The keep-alive interval asked of the server, in ms (default 15000; 0: none, and no liveness check). */
  keepAlive?: number;
}

/** A message as the server sends it (notify.SocketMessage's envelope). */
export interface Envelope<T = unknown> {
  /** Its position in the stream; absent on the library's own messages. */
  seq?: number;
  type: string;
  topic?: string;
  data: T;
  /** RFC 3339. */
  time?: string;
}

/** What onGap receives: the server could not replay what was missed. */
export interface GapInfo {
  reason: "expired" | "epoch" | "ahead" | "unavailable";
  since: number;
  epoch: string;
  seq: number;
}

/**
 * What on("notify.hello") receives as each connection opens: the stream's
 * position where the server's replay on this connection ends (messages
 * with a seq up to it are replayed, later ones live), and the keep-alive
 * interval the server granted, in milliseconds, if any.
 */
export interface HelloInfo {
  epoch: string;
  seq: number;
  keepalive?: number;
}

/** What on("notify.error") receives: a request the server refused. */
export interface ErrorInfo {
  request: string;
  topic?: string;
  error: string;
}

/**
 * A handler for on(type). For an envelope, data is its data and msg the
 * envelope; for "text" (a NotifyText frame that is not an envelope) both
 * are the text.
 */
export type Handler<T = any> = (data: T, msg: Envelope<T> | string) => void;

export declare class NotifyClient {
  constructor(url: string, opts?: ConnectOptions);
  /** The current state. */
  readonly state: State;
  /** What the current connection uses; null while there is none. */
  readonly transport: Transport | null;
  /** The last seq received (or given as since); null before any. */
  readonly seq: number | null;
  /** The epoch of seq; null before the first notify.hello. */
  readonly epoch: string | null;
  /** The topics subscribed to. */
  readonly topics: Set<string>;
  /** Calls fn for every message of this type; "*" matches all, "text" plain text frames. */
  on(type: "notify.hello", fn: (data: HelloInfo, msg: Envelope<HelloInfo>) => void): this;
  on(type: "notify.error", fn: (data: ErrorInfo, msg: Envelope<ErrorInfo>) => void): this;
  on<T = any>(type: string, fn: Handler<T>): this;
  /** Calls fn when the server could not replay what was missed: reload your state. */
  onGap(fn: (info: GapInfo) => void): this;
  /** Calls fn with the state now and on every change. */
  onState(fn: (state: State) => void): this;
  subscribe(topic: string): void;
  unsubscribe(topic: string): void;
  /** Sends an application message; false when it could not (connecting, or over SSE). */
  send(obj: unknown): boolean;
  /** Closes the stream for good. */
  close(): void;
  /** Drops the connection and connects again at once with a fresh token, resuming. */
  reconnect(): void;
}

/** Opens a notification stream. url: ws:, wss:, http(s): or a path on this page's host ("/ws"). */
export declare function connect(url: string, opts?: ConnectOptions): NotifyClient;
