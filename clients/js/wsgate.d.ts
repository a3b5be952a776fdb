// Type declarations for wsgate.js, the browser and Node client of the wsgate gateway.
//
// Typed events: give connect() a map of event type → `data` type, and on() checks the type
// names and types each handler's event:
//
//   type Events = { "task.updated": { id: number; state: string }; notice: string };
//   const client = connect<Events>(url, { token });
//   client.on("task.updated", (e) => e.data.id);   // e.data: { id: number; state: string }
//   client.on("*", (e) => { if (e.type === "notice") e.data.toUpperCase(); });  // a union, narrowed by `type`
//
// Without a map every type name is allowed and `data` is `unknown`.

/** Close codes the gateway uses, and what the client does after each. */
export declare const CloseCode: Readonly<{
  NORMAL: 1000;
  /** The instance shuts down: the client reconnects (to another instance). */
  GOING_AWAY: 1001;
  /** The client broke the WebSocket protocol: the client reconnects. */
  PROTOCOL_ERROR: 1002;
  /** No close frame: network loss, a killed process, or a refused upgrade. */
  ABNORMAL: 1006;
  /** A text message that was not UTF-8: the client reconnects. */
  INVALID_PAYLOAD: 1007;
  /**
   * Reason "token_expired": a fresh token from getToken(), then reconnect (stop without one).
   * Another reason ("message_rate": the client sent too fast): reconnect with the same token.
   */
  POLICY: 1008;
  /** An inbound frame was too large: the client reconnects. */
  TOO_BIG: 1009;
  /** An operator asked this user to reconnect (reason "reconnect"): at once, with the same token, resuming. */
  RECONNECT: 1012;
  /** The client read too slowly: the client reconnects. */
  TRY_AGAIN: 1013;
  /** An operator revoked this user (reason "revoked"): the client stops for good and calls onRevoked. */
  REVOKED: 4001;
}>;

/** One of the CloseCode values. */
export type CloseCodeValue = (typeof CloseCode)[keyof typeof CloseCode];

/**
 * The application's events: event type → the type of its `data`, e.g.
 * `{ "task.updated": { id: number }; notice: string }` (a type alias or an interface).
 */
export type EventMap = object;

/** The default map: any type name, `data: unknown`. */
export type UntypedEvents = Record<string, unknown>;

/** The event type names of a map. */
export type EventType<Events extends EventMap> = Extract<keyof Events, string>;

export type ClientState = "connecting" | "open" | "reconnecting" | "closed";

export declare const State: Readonly<{
  CONNECTING: "connecting";
  OPEN: "open";
  RECONNECTING: "reconnecting";
  CLOSED: "closed";
}>;

/** One event as the gateway delivers it: `data` of type T, `type` K. */
export interface WsgateEvent<T = unknown, K extends string = string> {
  /**
   * Event id: a stream position `<ms>-<seq>` (e.g. "1718000000000-3"), ordered numerically by
   * (ms, seq), not as a string. Give it back as `since` to resume after it.
   */
  id: string;
  type: K;
  /** The publisher's JSON value. */
  data: T;
  /** Accept time, ms since the epoch. */
  ts: number;
  /** Set on events published to a channel (see WsgateClient.subscribe and onChannel). */
  channel?: string;
  [extra: string]: unknown;
}

/**
 * Any event of a map: the union of its types' events, so checking `event.type` narrows
 * `event.data`. For UntypedEvents: WsgateEvent<unknown, string>.
 */
export type AnyWsgateEvent<Events extends EventMap = UntypedEvents> = {
  [K in EventType<Events>]: WsgateEvent<Events[K], K>;
}[EventType<Events>];

/** The first frame of every connection. */
export interface ConnectedFrame {
  type: "connected";
  connection_id: string;
  user: string;
  instance_id: string;
  /**
   * The newest event id of the stream when the connection was registered (absent when the
   * gateway does not know one yet). Unless `recovered` is true, the client resumes from here on
   * its next reconnection, even if no event arrived in between.
   */
  last_id?: string;
  /**
   * Only on a connection opened with `since=`: true when the events missed since then follow
   * (then live ones), false when the gateway could not replay them (see onResync).
   */
  recovered?: boolean;
  [extra: string]: unknown;
}

export interface CloseInfo {
  /** The close code (see CloseCode); 1006 when there was no close frame (also for a failed upgrade). */
  code: CloseCodeValue | (number & {});
  reason: string;
  wasClean: boolean;
  /** True when the socket closed before it opened: the upgrade failed (refused, or nothing there). */
  upgradeFailed?: boolean;
  /** The HTTP status of a refused upgrade, when the WebSocket implementation reports it (the `ws` package does, browsers do not). */
  status?: number;
  /** Whether the client will try again. */
  willReconnect: boolean;
  /** The delay before the next attempt, when willReconnect. */
  delayMs?: number;
  /** True when the client gave up on the socket itself (ping or connect timeout). */
  timedOut?: boolean;
  /** The fatal error, when the client stops. */
  error?: WsgateError;
}

/**
 * The gateway's notice, on an open connection, that Redis lost events this connection may not
 * have received (Redis restarted empty, failed over to a replica that lacked them, history
 * trimmed while the instance was disconnected). The connection stays open; live events follow.
 * It is not an event: it has no `id`, goes to no event handler and does not move lastEventId.
 */
export interface ResyncFrame {
  type: "resync";
  /** Why, as the gateway says it: e.g. "redis_data_lost", "history_trimmed", "redis_unavailable". Treat it as an opaque string. */
  reason: string;
  [extra: string]: unknown;
}

/**
 * Why events may have been missed. The client's own reasons (a connection that could not pick
 * up where the last one, or options.since, left off):
 * - "not_recovered": the gateway answered `recovered: false`: `since` is unknown, malformed, or
 *   older than its history (or history is off);
 * - "unsupported": `since` was sent but the `connected` frame has no `recovered` field (a
 *   gateway without history);
 * - "no_position": a reconnection without `since` (no event had been received yet, or `resume` is false).
 *
 * Otherwise the `reason` of the gateway's `resync` frame, passed on as it came (an opaque
 * string; "unknown" when the frame has none), e.g. "redis_data_lost", "history_trimmed",
 * "redis_unavailable".
 */
export type ResyncReason =
  | "not_recovered"
  | "unsupported"
  | "no_position"
  | "redis_data_lost"
  | "history_trimmed"
  | "redis_unavailable"
  | (string & {});

export interface ResyncInfo {
  reason: ResyncReason;
  /** The `since` sent by the connection that could not resume, or null (always null for a `resync` frame). */
  since: string | null;
  /**
   * What told the client: the `connected` frame of a connection that could not resume, or the
   * gateway's `resync` frame on an open connection (`frame.type === "resync"`).
   */
  frame: ConnectedFrame | ResyncFrame;
}

/** What onRevoked gets: an operator revoked this user (close 4001); the client has stopped. */
export interface RevokedInfo {
  /** 4001. */
  code: number;
  /** The close frame's reason: "revoked". */
  reason: string;
  wasClean: boolean;
  /** The `user` of the last `connected` frame (the token's `sub`), or null. */
  user: string | null;
  /** The last `connected` frame, or null. */
  connection: ConnectedFrame | null;
  /** The fatal error (code "revoked") that onError and onClose get too. */
  error: WsgateError;
}

export interface ResumedInfo {
  /** The `since` sent. */
  since: string;
  /**
   * Events that arrived between the `connected` frame and the gateway's answer to a ping the
   * client sends at once: the missed ones (and any published while the connection was set up).
   */
  missed: number;
  frame: ConnectedFrame;
}

export type WsgateErrorCode =
  /**
   * The upgrade was refused for good. Fatal. A known HTTP 401 with no getToken() (or the fresh
   * token refused too); a known 403 (origin not allowed), 404 or other 4xx but 408/429; a token
   * that is not a JWT; or, with retryFirstConnection: false, the first attempt failing.
   */
  | "upgrade_refused"
  /** The token has expired (close 1008 "token_expired", or a failed upgrade with an expired `exp`) and there is no getToken(). Fatal. */
  | "token_expired"
  /** Close 4001: an operator revoked this user. Fatal; onRevoked is called. */
  | "revoked"
  /** Close 1008 for another reason than the token (e.g. "message_rate": the client sent too fast); the client reconnects with the same token. */
  | "policy"
  /** The URL could not be opened at all. Fatal. */
  | "invalid_url"
  /** getToken() threw or returned nothing; retried with backoff. */
  | "token_refresh_failed"
  /** No frame arrived within pongTimeoutMs of a ping; the client reconnects. */
  | "ping_timeout"
  /** No `connected` frame within connectTimeoutMs; the client reconnects. */
  | "connect_timeout"
  /** The gateway sent an `error` frame (the connection stays open). */
  | "server_error"
  /** The gateway sent a frame that is not JSON. */
  | "bad_frame"
  /** An event handler or callback threw. */
  | "handler_error"
  /** A channel refusal (subscribe() rejects with it; a channel of options.channels or a rejoin refused goes to onError): the token does not allow the channel. */
  | "forbidden"
  /** A channel refusal: the name is not 1–200 characters of `A-Z a-z 0-9 : _ - . @` (also checked before sending). */
  | "invalid_channel"
  /** A channel refusal: the connection is in as many channels as the gateway allows (MAX_CHANNELS_PER_CONNECTION). */
  | "too_many_channels"
  /** subscribe()/unsubscribe() of a channel was superseded by the opposite call before the gateway answered. */
  | "cancelled"
  /** subscribe()/unsubscribe() on a closed client, or pending when close() was called. */
  | "closed";

export declare class WsgateError extends Error {
  name: "WsgateError";
  code: WsgateErrorCode;
  /** True when the client has stopped (state "closed") because of this error. */
  fatal: boolean;
  /** The HTTP status of a refused upgrade, when the WebSocket implementation reports it (the `ws` package does, browsers do not). */
  status?: number;
  /** The close code, for errors caused by a close frame ("token_expired", "policy", "revoked"). */
  closeCode?: number;
  /** The close frame's reason, with closeCode. */
  reason?: string;
  /** The channel, for channel refusals and for settled subscribe()/unsubscribe() promises. */
  channel?: string;
  /** The gateway's `error` frame, for `server_error` and channel refusals. */
  frame?: { type: "error"; error: string; message?: string; channel?: unknown; [extra: string]: unknown };
  cause?: unknown;
  constructor(code: WsgateErrorCode, message: string, extra?: object);
}

export interface BackoffOptions {
  /** First retry waits random(0, initialMs). Default 500. */
  initialMs?: number;
  /** Upper bound of the window. Default 30000. */
  maxMs?: number;
}

/** Anything constructible like the browser's WebSocket (browsers, Node 22, the `ws` package). */
export type WebSocketConstructor = new (url: string) => any;

export interface ConnectOptions<Events extends EventMap = UntypedEvents> {
  /** A static token. With getToken too, it is used first and getToken() renews it. */
  token?: string;
  /**
   * Called for the first token (when `token` is absent), and for a fresh one only when the
   * gateway points at the token: close 1008 "token_expired", or a refused upgrade with a known
   * HTTP 401 (or, where the status is hidden, a token whose `exp` has passed or that is not a
   * JWT). Never after 1001, 1006, 1012, 1013, 4001 or a 1008 for another reason.
   */
  getToken?: () => string | Promise<string>;
  /** The WebSocket class; defaults to globalThis.WebSocket (needed on Node 20: e.g. `import WebSocket from "ws"`). */
  WebSocket?: WebSocketConstructor;
  /** Shorthand for client.on("*", onEvent). */
  onEvent?: (event: AnyWsgateEvent<Events>) => void;
  /** Every `connected` frame (first connection and each reconnection); `frame.recovered` says how a resume went. */
  onOpen?: (frame: ConnectedFrame) => void;
  /**
   * Events may have been missed, so reload the application's state: a connection (after
   * onOpen) that could not resume (not called for a first connection without `since`), or the
   * gateway's `resync` frame on an open connection (`info.frame.type === "resync"`,
   * `info.reason` the gateway's; the connection stays open and live events follow).
   */
  onResync?: (info: ResyncInfo) => void;
  /** A connection that resumed (`recovered: true`), once the missed events have been delivered to the handlers. */
  onResumed?: (info: ResumedInfo) => void;
  /**
   * An operator revoked this user (close 4001): the client has stopped (state "closed") and
   * will not reconnect. Send the user to log in again; a new connect() needs a token the
   * gateway takes. Runs after onClose, before onError.
   */
  onRevoked?: (info: RevokedInfo) => void;
  /** Every socket end, with what happens next. */
  onClose?: (info: CloseInfo) => void;
  /** Errors; `err.fatal` says whether the client stopped. */
  onError?: (err: WsgateError) => void;
  onStateChange?: (state: ClientState, previous: ClientState) => void;
  backoff?: BackoffOptions;
  /**
   * Retry a first connection that fails (the gateway is being deployed, restarted, or drains)
   * with the same backoff as any reconnection. Default true. False: a first failed upgrade that
   * would be retried stops the client with "upgrade_refused" instead (a known 401 still gets a
   * fresh token from getToken(); once connected, failures are always retried).
   * Whatever it says, an upgrade known to be refused for good stops the client (see
   * "upgrade_refused").
   */
  retryFirstConnection?: boolean;
  /** Application ping ({"type":"ping"}) period; 0 disables it. Default 25000. */
  pingIntervalMs?: number;
  /** Silence after a ping that counts as a dead connection. Default min(10000, pingIntervalMs). */
  pongTimeoutMs?: number;
  /** Longest wait for the `connected` frame of one attempt; 0 disables it. Default 15000. */
  connectTimeoutMs?: number;
  /** Send `since=<lastEventId>` when reconnecting (the gateway's resume parameter). Default true. */
  resume?: boolean;
  /** An event id to resume after on the first connection too (e.g. lastEventId saved before a page reload). */
  since?: string;
  /**
   * Channels to join at connect (`channels=`), as if subscribe() had been called for each; a
   * refusal goes to onError (code "forbidden", ...). Throws a TypeError for a malformed name.
   */
  channels?: string[];
}

export declare class WsgateClient<Events extends EventMap = UntypedEvents> {
  constructor(url: string | URL, options: ConnectOptions<Events>);
  readonly state: ClientState;
  /** The id of the last event received (options.since until one arrives), or null. Control frames never change it. */
  readonly lastEventId: string | null;
  /** The current (or last) `connected` frame, or null. */
  readonly connection: ConnectedFrame | null;
  /** The channels joined or being joined, in the order asked: sent as `channels=` on every (re)connection. */
  readonly channels: string[];
  /**
   * Joins a channel; resolves when the gateway answers `subscribed` (events published to the
   * channel after that reach this client), at once when already joined. Rejects with a
   * WsgateError whose code is the gateway's refusal ("forbidden", "invalid_channel",
   * "too_many_channels"), or "cancelled" / "closed" (or the fatal error that stopped the client).
   * Until unsubscribe(), every reconnection rejoins it through `channels=`, so a resume
   * (`since=`) replays the channel's missed events too. Before the connection is open it waits
   * for it (across reconnects).
   */
  subscribe(channel: string): Promise<void>;
  /**
   * Leaves a channel (no more rejoins); resolves when the gateway answers `unsubscribed`, or at
   * once when no connection holds it. Rejects only with "invalid_channel", "cancelled" (a
   * subscribe() of the same channel followed) or "closed".
   */
  unsubscribe(channel: string): Promise<void>;
  /**
   * Handler for every event published to this channel (events carrying `channel`). Runs after
   * the type's handlers and before "*" handlers. Returns a function that removes it. It does not
   * join the channel: call subscribe() for that.
   */
  onChannel(channel: string, handler: (event: AnyWsgateEvent<Events> & { channel: string }) => void): () => void;
  /**
   * Handler for every resync (what options.onResync gets: a connection that could not resume,
   * or the gateway's `resync` frame); runs after options.onResync. Returns a function that
   * removes it. (Resyncs never reach on(): its types are the application's event types.)
   */
  onResync(handler: (info: ResyncInfo) => void): () => void;
  /**
   * Handler for a revocation (close 4001: the client has stopped for good), as options.onRevoked
   * gets it; runs after it. Returns a function that removes it.
   */
  onRevoked(handler: (info: RevokedInfo) => void): () => void;
  /** Handler for every event ("*"), of any type of the map. Returns a function that removes it. */
  on(type: "*", handler: (event: AnyWsgateEvent<Events>) => void): () => void;
  /** Handler for the events of one type of the map. Returns a function that removes it. */
  on<K extends EventType<Events>>(type: K, handler: (event: WsgateEvent<Events[K], K>) => void): () => void;
  /**
   * Without a map (UntypedEvents) only: a handler that says which `data` it expects,
   * `client.on<{ id: number }>("task.updated", (e) => e.data.id)` (unchecked, as any JSON is).
   */
  on<T>(type: string extends EventType<Events> ? string : never, handler: (event: WsgateEvent<T>) => void): () => void;
  /** Removes a handler; without one, every handler of that type. */
  off(type: EventType<Events> | "*", handler?: (event: any) => void): void;
  /** Closes the connection; no reconnect follows. */
  close(): void;
}

/**
 * Connects to `url` (ws://, wss://, http(s):// or, in a browser, a path such as "/ws/tasks") and
 * keeps the connection up until close(). `Events` types the handlers (see EventMap).
 */
export declare function connect<Events extends EventMap = UntypedEvents>(url: string | URL, options: ConnectOptions<Events>): WsgateClient<Events>;

/** The delay before reconnect attempt `attempt` (0-based): random in [0, min(maxMs, initialMs·2^attempt)). */
export declare function backoffDelay(attempt: number, backoff?: BackoffOptions, random?: () => number): number;
