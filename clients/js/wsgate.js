// wsgate-client: the browser and Node (>= 20) client for the wsgate WebSocket gateway.
// One ES module, no dependencies. See README.md beside this file for usage.
//
// What it does on top of a bare WebSocket:
// - sends the token as `?token=` (browsers cannot set headers on a WebSocket);
// - reconnects with exponential backoff and full jitter, reset after a `connected` frame, also
//   when the very first attempt fails (a page opened during a deploy connects once it can);
// - knows the gateway's close codes: getToken() only when the gateway points at the token
//   (1008 "token_expired", a refused upgrade with a known HTTP 401); 4001 (revoked by an
//   operator) → onRevoked, stop for good; 1012 (asked to reconnect) → reconnect at once with the
//   same token; 1001/1013 and any other loss → reconnect;
// - application ping every pingIntervalMs; silence after a ping → the connection is dead;
// - dispatches events to handlers per type (`"*"` for all) and tracks the last event id,
//   which it sends back as `since=` when it reconnects (the gateway's resume parameter);
// - says how each reconnection went: onResumed (the gateway replayed what was missed) or
//   onResync (it could not: the application must reload its state); onResync also reports the
//   gateway's `resync` frame (Redis lost events this open connection may not have received);
// - channels: subscribe()/unsubscribe() answer with the gateway's `subscribed`/`unsubscribed`
//   or its refusal; the channels it holds go in `channels=` of every connect URL, so a
//   reconnection rejoins them and its resume replay covers their events too.

/** Close codes the gateway uses. */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001, // the instance shuts down: reconnect (elsewhere)
  PROTOCOL_ERROR: 1002, // the client broke the WebSocket protocol: reconnect
  ABNORMAL: 1006, // no close frame (network loss, killed process, refused upgrade)
  INVALID_PAYLOAD: 1007, // a text message that is not UTF-8: reconnect
  POLICY: 1008, // reason "token_expired" (fresh token first) or "message_rate" (sent too fast: reconnect)
  TOO_BIG: 1009, // an inbound frame was too large: reconnect
  RECONNECT: 1012, // an operator asked this user to reconnect (reason "reconnect"): at once, same token
  TRY_AGAIN: 1013, // the client read too slowly: reconnect
  REVOKED: 4001, // an operator revoked this user (reason "revoked"): stop, never with the same token
});

/** Client states, in the order a healthy connection goes through them. */
export const State = Object.freeze({
  CONNECTING: "connecting", // a socket is being opened; `connected` not yet received
  OPEN: "open", // the gateway's `connected` frame arrived; events flow
  RECONNECTING: "reconnecting", // waiting out the backoff delay before the next attempt
  CLOSED: "closed", // stopped for good: close() was called or a fatal error occurred
});

/** Every error the client reports carries a `code` and says whether it stopped the client. */
export class WsgateError extends Error {
  constructor(code, message, extra = {}) {
    super(message);
    this.name = "WsgateError";
    this.code = code;
    this.fatal = false;
    Object.assign(this, extra);
  }
}

const DEFAULTS = Object.freeze({
  backoff: Object.freeze({ initialMs: 500, maxMs: 30000 }),
  pingIntervalMs: 25000,
  pongTimeoutMs: 10000,
  connectTimeoutMs: 15000,
  resume: true,
  retryFirstConnection: true,
});

const PING_FRAME = '{"type":"ping"}';
// The gateway's channel names: 1 to 200 of these characters (so never a comma, the separator of `channels=`).
const CHANNEL_NAME = /^[A-Za-z0-9:_\-.@]{1,200}$/;
const ERROR_CLOSE_GRACE_MS = 1000;
const noop = () => {};

/**
 * The delay before reconnect attempt number `attempt` (0 for the first retry):
 * full jitter, uniformly random in [0, min(maxMs, initialMs * 2^attempt)).
 */
export function backoffDelay(attempt, backoff = DEFAULTS.backoff, random = Math.random) {
  const initialMs = backoff.initialMs ?? DEFAULTS.backoff.initialMs;
  const maxMs = backoff.maxMs ?? DEFAULTS.backoff.maxMs;
  const exp = Math.min(Math.max(0, attempt | 0), 1023); // 2^1024 would be Infinity
  const cap = Math.min(maxMs, initialMs * 2 ** exp);
  return Math.floor(random() * cap);
}

/** Opens a client; it connects at once (asynchronously) and keeps reconnecting until close(). */
export function connect(url, options) {
  return new WsgateClient(url, options);
}

export class WsgateClient {
  #url;
  #opts;
  #WebSocket;
  #backoff;
  #handlers = new Map();
  #state = State.CONNECTING;
  #token = null;
  #needToken = false;
  #attempt = 0; // backoff exponent; reset after a `connected` frame
  #everConnected = false; // any attempt of this client got `connected`
  #sock = null; // the current attempt: { ws, opened, connected, status, freshToken, timers }
  #retryTimer = null;
  #closed = false;
  #lastEventId = null;
  #connection = null;
  #opens = 0; // `connected` frames received
  #channels = new Set(); // joined or being joined; sent as `channels=` on every connection
  #channelHandlers = new Map();
  #resyncHandlers = new Set(); // added with onResync(handler); called after options.onResync
  #revokedHandlers = new Set(); // added with onRevoked(handler); called after options.onRevoked
  #waiting = { subscribe: new Map(), unsubscribe: new Map() }; // channel → promise awaiting the answer

  constructor(url, options = {}) {
    if (!url) throw new TypeError("wsgate: connect(url, options) needs a url");
    const o = options ?? {};
    if (!o.token && typeof o.getToken !== "function") {
      throw new TypeError("wsgate: give options.token or options.getToken");
    }
    const WS = o.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== "function") {
      throw new TypeError(
        "wsgate: no WebSocket implementation: pass options.WebSocket (e.g. the `ws` package) on Node < 22",
      );
    }
    this.#url = url;
    this.#opts = o;
    this.#WebSocket = WS;
    this.#backoff = { ...DEFAULTS.backoff, ...(o.backoff ?? {}) };
    this.#token = o.token || null;
    this.#needToken = !this.#token;
    if (o.since != null && o.since !== "") {
      if (typeof o.since !== "string") throw new TypeError("wsgate: options.since must be an event id (a string)");
      this.#lastEventId = o.since; // resume from a persisted id on the first connection too
    }
    if (typeof o.channels === "string") throw new TypeError("wsgate: options.channels must be a list of channel names");
    for (const name of o.channels ?? []) {
      if (typeof name !== "string" || !CHANNEL_NAME.test(name)) throw new TypeError(`wsgate: ${JSON.stringify(name)} is not a channel name`);
      this.#channels.add(name);
    }
    if (typeof o.onEvent === "function") this.on("*", o.onEvent);
    // Start on a later tick so the caller can attach handlers first.
    Promise.resolve().then(() => this.#open());
  }

  /** "connecting" | "open" | "reconnecting" | "closed" */
  get state() {
    return this.#state;
  }

  /** The id of the last event received (or options.since until one is), or null. */
  get lastEventId() {
    return this.#lastEventId;
  }

  /** The current (or last) `connected` frame: { connection_id, user, instance_id, ... }, or null. */
  get connection() {
    return this.#connection;
  }

  /** The channels this client is in or joining (rejoined on every reconnection), in the order joined. */
  get channels() {
    return [...this.#channels];
  }

  /**
   * Joins a channel. Resolves once the gateway answers `subscribed` (events published to the
   * channel from then on arrive); rejects with a WsgateError whose code is the gateway's refusal
   * ("forbidden", "invalid_channel", "too_many_channels"). Before the connection is open it is
   * joined at connect (`channels=`). Until unsubscribe() every reconnection rejoins it.
   */
  subscribe(name) {
    if (this.#closed) return Promise.reject(new WsgateError("closed", "the client is closed", { channel: name }));
    if (typeof name !== "string" || !CHANNEL_NAME.test(name)) {
      return Promise.reject(new WsgateError("invalid_channel", `${JSON.stringify(name)} is not a channel name`, { channel: name }));
    }
    this.#settle("unsubscribe", name, new WsgateError("cancelled", `subscribe("${name}") was called before the unsubscribe finished`, { channel: name }));
    const pending = this.#waiting.subscribe.get(name);
    if (pending) return pending.promise;
    if (this.#channels.has(name)) return Promise.resolve();
    this.#channels.add(name);
    const s = this.#sock;
    if (s?.connected) this.#send(s, { type: "subscribe", channel: name });
    // Otherwise the connection being opened (or the next one) joins it: see #reconcile().
    return this.#wait("subscribe", name);
  }

  /**
   * Leaves a channel: no rejoin on reconnection. Resolves once the gateway answers
   * `unsubscribed`, or at once when no connection holds the channel.
   */
  unsubscribe(name) {
    if (this.#closed) return Promise.reject(new WsgateError("closed", "the client is closed", { channel: name }));
    if (typeof name !== "string" || !CHANNEL_NAME.test(name)) {
      return Promise.reject(new WsgateError("invalid_channel", `${JSON.stringify(name)} is not a channel name`, { channel: name }));
    }
    this.#settle("subscribe", name, new WsgateError("cancelled", `unsubscribe("${name}") was called before the subscribe finished`, { channel: name }));
    const pending = this.#waiting.unsubscribe.get(name);
    if (pending) return pending.promise;
    this.#channels.delete(name);
    const s = this.#sock;
    if (!s) return Promise.resolve(); // the next connection will not ask for it
    if (s.connected) this.#send(s, { type: "unsubscribe", channel: name });
    return this.#wait("unsubscribe", name);
  }

  /** Calls handler(event) for each event published to this channel. Returns a function that removes it. */
  onChannel(name, handler) {
    if (typeof handler !== "function") throw new TypeError("wsgate: onChannel(name, handler) needs a function");
    let set = this.#channelHandlers.get(name);
    if (!set) this.#channelHandlers.set(name, (set = new Set()));
    set.add(handler);
    return () => {
      set.delete(handler);
      if (set.size === 0 && this.#channelHandlers.get(name) === set) this.#channelHandlers.delete(name);
    };
  }

  /**
   * Calls handler(info) whenever events may have been missed and the application must reload
   * its state: a connection that could not resume, or the gateway's `resync` frame (see
   * options.onResync for `info`). Runs after options.onResync. Returns a function that removes it.
   * (Not on("resync"): on() takes application event types, and "resync" may be one of them.)
   */
  onResync(handler) {
    if (typeof handler !== "function") throw new TypeError("wsgate: onResync(handler) needs a function");
    this.#resyncHandlers.add(handler);
    return () => {
      this.#resyncHandlers.delete(handler);
    };
  }

  /**
   * Calls handler(info) when an operator revokes this user (close 4001, `POST
   * /api/users/{sub}/disconnect`): the client has stopped for good (state "closed") and does not
   * reconnect; a new connect() needs a token the gateway will take again (a new login). Runs
   * after options.onRevoked. Returns a function that removes it.
   */
  onRevoked(handler) {
    if (typeof handler !== "function") throw new TypeError("wsgate: onRevoked(handler) needs a function");
    this.#revokedHandlers.add(handler);
    return () => {
      this.#revokedHandlers.delete(handler);
    };
  }

  /** Calls handler(event) for each event of this type ("*": every event). Returns an unsubscribe function. */
  on(type, handler) {
    if (typeof handler !== "function") throw new TypeError("wsgate: on(type, handler) needs a function");
    let set = this.#handlers.get(type);
    if (!set) this.#handlers.set(type, (set = new Set()));
    set.add(handler);
    return () => this.off(type, handler);
  }

  /** Removes a handler added with on(); without a handler, removes every handler of that type. */
  off(type, handler) {
    const set = this.#handlers.get(type);
    if (!set) return;
    if (handler === undefined) set.clear();
    else set.delete(handler);
    if (set.size === 0) this.#handlers.delete(type);
  }

  /** Closes the connection and stops for good: no reconnect. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    const s = this.#sock;
    this.#sock = null;
    if (s) this.#dispose(s, CloseCode.NORMAL, "client closed");
    this.#rejectWaiting(new WsgateError("closed", "the client was closed"));
    this.#setState(State.CLOSED);
    this.#emit("onClose", { code: CloseCode.NORMAL, reason: "client closed", wasClean: true, willReconnect: false });
  }

  // ---- connection attempts ----

  async #open() {
    if (this.#closed) return;
    this.#retryTimer = null;
    this.#setState(State.CONNECTING);
    let freshToken = false;
    if (this.#needToken) {
      let token;
      try {
        token = await this.#opts.getToken();
      } catch (err) {
        if (this.#closed) return;
        this.#report(new WsgateError("token_refresh_failed", `getToken() failed: ${err?.message ?? err}`, { cause: err }));
        this.#scheduleReconnect();
        return;
      }
      if (this.#closed) return;
      if (typeof token !== "string" || token === "") {
        this.#report(new WsgateError("token_refresh_failed", "getToken() returned no token"));
        this.#scheduleReconnect();
        return;
      }
      this.#token = token;
      this.#needToken = false;
      freshToken = true;
    }

    const since = this.#resumeFrom();
    const channels = [...this.#channels];
    let ws;
    try {
      ws = new this.#WebSocket(this.#buildUrl(since, channels));
    } catch (err) {
      // A malformed URL: no retry can fix it.
      this.#fail(new WsgateError("invalid_url", `cannot open a WebSocket: ${err?.message ?? err}`, { cause: err }));
      return;
    }
    // `channels`: what the gateway joins this connection to at connect.
    const s = { ws, opened: false, connected: false, status: undefined, error: undefined, freshToken, since, channels };
    s.replay = null; // after a recovered resume, until the pong that follows the missed events
    s.pingTimer = s.pongTimer = s.connectTimer = s.errorTimer = null;
    this.#sock = s;

    const timeout = this.#opts.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs;
    if (timeout > 0) {
      s.connectTimer = setTimeout(() => {
        if (this.#sock !== s) return;
        this.#report(new WsgateError("connect_timeout", `no \`connected\` frame within ${timeout} ms`));
        this.#drop(s, "connect timeout");
      }, timeout);
    }

    ws.onopen = () => {
      s.opened = true;
    };
    ws.onmessage = (ev) => {
      if (this.#sock === s) this.#onFrame(s, ev.data);
    };
    ws.onerror = (ev) => {
      // Browsers say nothing about why. The `ws` package says "Unexpected server response: 401"
      // for a refused upgrade; remember the status when it is there.
      const msg = String(ev?.message ?? ev?.error?.message ?? "");
      const m = /server response: (\d{3})/i.exec(msg);
      if (m) s.status = Number(m[1]);
      s.error = ev?.error ?? (msg ? new Error(msg) : undefined);
      // An error is always followed by close, except in some WebSocket implementations (Node 20's
      // built-in one fires only `error` for a refused upgrade and stays CONNECTING): if no close
      // comes within a second, act as if it had.
      if (!s.errorTimer) {
        s.errorTimer = setTimeout(() => {
          if (this.#sock !== s) return;
          this.#sock = null;
          this.#dispose(s, 4000, "error");
          this.#afterClose(s, { code: CloseCode.ABNORMAL, reason: "", wasClean: false });
        }, ERROR_CLOSE_GRACE_MS);
      }
    };
    ws.onclose = (ev) => {
      if (this.#sock !== s) return;
      this.#sock = null;
      this.#stopTimers(s);
      this.#afterClose(s, { code: ev?.code ?? CloseCode.ABNORMAL, reason: ev?.reason ?? "", wasClean: !!ev?.wasClean });
    };
  }

  /** The `since=` of the next attempt: the last event id, unless resume is off. */
  #resumeFrom() {
    const resume = this.#opts.resume ?? DEFAULTS.resume;
    return resume && this.#lastEventId != null ? this.#lastEventId : null;
  }

  #buildUrl(since, channels) {
    const base = globalThis.location?.href;
    const u = new URL(String(this.#url), base);
    if (u.protocol === "http:") u.protocol = "ws:";
    else if (u.protocol === "https:") u.protocol = "wss:";
    u.searchParams.set("token", this.#token);
    if (since != null) u.searchParams.set("since", since);
    if (channels.length > 0) u.searchParams.set("channels", channels.join(","));
    return u.toString();
  }

  #onFrame(s, raw) {
    if (s.pongTimer) {
      // Any frame proves the connection alive.
      clearTimeout(s.pongTimer);
      s.pongTimer = null;
    }
    let msg;
    try {
      msg = JSON.parse(typeof raw === "string" ? raw : new TextDecoder().decode(raw));
    } catch {
      this.#report(new WsgateError("bad_frame", "the gateway sent a frame that is not JSON"));
      return;
    }
    if (!msg || typeof msg !== "object") return;
    // Only event frames carry an `id`; control frames (connected, pong, error, ...) never move
    // lastEventId.
    if (typeof msg.id === "string" && typeof msg.type === "string") {
      this.#lastEventId = msg.id;
      if (s.replay) s.replay.missed += 1;
      this.#dispatch(msg);
      return;
    }
    switch (msg.type) {
      case "connected":
        this.#onConnected(s, msg);
        break;
      case "pong":
        if (s.replay) {
          // The gateway writes the missed events before it reads anything from the client, so
          // the answer to the ping sent at `connected` comes after the last of them.
          const { since, missed } = s.replay;
          s.replay = null;
          this.#emit("onResumed", { since, missed, frame: this.#connection });
        }
        break;
      case "resync":
        // The gateway found that Redis lost events this connection may not have received
        // (restarted empty, failed over, history trimmed). The connection stays open and live
        // events follow; the application reloads its state. Not an event: no id, not
        // dispatched, lastEventId unchanged.
        this.#resync({ reason: typeof msg.reason === "string" && msg.reason !== "" ? msg.reason : "unknown", since: null, frame: msg });
        break;
      case "subscribed":
      case "unsubscribed":
        this.#settle(msg.type === "subscribed" ? "subscribe" : "unsubscribe", msg.channel);
        break;
      case "error":
        if (typeof msg.channel === "string") this.#onRefused(msg);
        else this.#report(new WsgateError("server_error", `gateway: ${msg.error}${msg.message ? `: ${msg.message}` : ""}`, { frame: msg }));
        break;
      default:
        break; // frames of later protocol additions are ignored
    }
  }

  #onConnected(s, msg) {
    clearTimeout(s.connectTimer);
    s.connectTimer = null;
    s.connected = true;
    this.#everConnected = true;
    this.#attempt = 0;
    this.#connection = msg;
    this.#opens += 1;
    this.#setState(State.OPEN);
    const every = this.#opts.pingIntervalMs ?? DEFAULTS.pingIntervalMs;
    if (every > 0) {
      const wait = this.#opts.pongTimeoutMs ?? Math.min(DEFAULTS.pongTimeoutMs, every);
      s.pingTimer = setInterval(() => {
        if (this.#sock !== s || s.pongTimer) return;
        try {
          s.ws.send(PING_FRAME);
        } catch {
          return; // the close event follows
        }
        s.pongTimer = setTimeout(() => {
          if (this.#sock !== s) return;
          this.#report(new WsgateError("ping_timeout", `no frame within ${wait} ms of a ping: connection presumed dead`));
          this.#drop(s, "ping timeout");
        }, wait);
      }, every);
    }
    this.#reconcile(s);
    this.#emit("onOpen", msg);
    this.#afterResume(s, msg);
  }

  /**
   * Brings a new connection's channels (those in its `channels=`) in line with what the
   * application asked for while it was being opened.
   */
  #reconcile(s) {
    for (const name of this.#channels) {
      if (!s.channels.includes(name)) this.#send(s, { type: "subscribe", channel: name });
    }
    for (const name of s.channels) {
      if (!this.#channels.has(name)) this.#send(s, { type: "unsubscribe", channel: name });
    }
    for (const name of [...this.#waiting.unsubscribe.keys()]) {
      if (!s.channels.includes(name)) this.#settle("unsubscribe", name); // never joined by this connection
    }
  }

  /** An `error` frame about a channel: the gateway did not join it (or the name was bad). */
  #onRefused(msg) {
    const name = msg.channel;
    const err = new WsgateError(msg.error ?? "server_error", `gateway refused channel "${name}": ${msg.error}${msg.message ? `: ${msg.message}` : ""}`, { channel: name, frame: msg });
    // Only a subscribe can be refused: unsubscribe() sends valid names only.
    const wanted = this.#channels.delete(name); // not asked for again on reconnection
    if (this.#waiting.subscribe.has(name)) this.#settle("subscribe", name, err);
    else if (wanted) this.#report(err); // joined at connect: options.channels, or a rejoin refused (e.g. a new token without it)
  }

  #send(s, frame) {
    try {
      s.ws.send(JSON.stringify(frame));
    } catch {
      /* the close event follows; the next connection asks again */
    }
  }

  #wait(op, name) {
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.#waiting[op].set(name, { promise, resolve, reject });
    return promise;
  }

  /** Resolves (without `err`) or rejects the pending subscribe/unsubscribe of a channel, if any. */
  #settle(op, name, err) {
    const w = this.#waiting[op].get(name);
    if (!w) return;
    this.#waiting[op].delete(name);
    if (err) w.reject(err);
    else w.resolve();
  }

  #rejectWaiting(err) {
    for (const op of ["subscribe", "unsubscribe"]) {
      for (const name of [...this.#waiting[op].keys()]) {
        this.#settle(op, name, new WsgateError(err.code, err.message, { channel: name, cause: err, fatal: err.fatal }));
      }
    }
  }

  /**
   * Tells the application how this connection picks up from the last one: resumed (the missed
   * events follow) or not (onResync: its state may lack events, it must reload it).
   */
  #afterResume(s, msg) {
    if (this.#sock !== s) return; // onOpen closed the client
    // Unless missed events follow, the stream position the gateway starts this connection at
    // is where the next reconnection resumes from (even if no event arrives before it).
    if (msg.recovered !== true && typeof msg.last_id === "string") this.#lastEventId = msg.last_id;
    if (msg.recovered === true && s.since != null) {
      s.replay = { since: s.since, missed: 0 };
      try {
        s.ws.send(PING_FRAME); // its pong marks the end of the missed events
      } catch {
        s.replay = null; // the close event follows
      }
      return;
    }
    let reason;
    if (s.since != null) reason = msg.recovered === false ? "not_recovered" : "unsupported";
    else if (this.#opens > 1) reason = "no_position"; // a reconnection with nothing to resume from
    else return; // a first connection without `since`: nothing was missed yet
    this.#resync({ reason, since: s.since, frame: msg });
  }

  /** Tells options.onResync, then the onResync() handlers, that the application must reload its state. */
  #resync(info) {
    this.#emit("onResync", info);
    for (const h of [...this.#resyncHandlers]) {
      try {
        h(info);
      } catch (err) {
        this.#report(new WsgateError("handler_error", `an onResync handler threw: ${err?.message ?? err}`, { cause: err }));
      }
    }
  }

  #dispatch(event) {
    const groups = [
      [`"${event.type}"`, this.#handlers.get(event.type)],
      [`channel "${event.channel}"`, typeof event.channel === "string" ? this.#channelHandlers.get(event.channel) : undefined],
      ['"*"', this.#handlers.get("*")],
    ];
    for (const [what, set] of groups) {
      if (!set) continue;
      for (const h of [...set]) {
        try {
          h(event);
        } catch (err) {
          this.#report(new WsgateError("handler_error", `a handler for ${what} threw: ${err?.message ?? err}`, { cause: err }));
        }
      }
    }
  }

  /** Gives up on a socket the client no longer trusts (dead or stuck) and carries on as if it closed. */
  #drop(s, why) {
    if (this.#sock !== s) return;
    this.#sock = null;
    this.#dispose(s, 4000, why);
    this.#afterClose(s, { code: CloseCode.ABNORMAL, reason: why, wasClean: false, timedOut: true });
  }

  /** Detaches from a socket and closes it without waiting for it. */
  #dispose(s, code, reason) {
    this.#stopTimers(s);
    const ws = s.ws;
    // No-op handlers rather than none: the `ws` package throws on an 'error' with no listener.
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = noop;
    try {
      if (typeof ws.terminate === "function" && code !== CloseCode.NORMAL) ws.terminate();
      else ws.close(code, reason);
    } catch {
      /* already closed */
    }
  }

  #stopTimers(s) {
    clearTimeout(s.connectTimer);
    clearTimeout(s.pongTimer);
    clearTimeout(s.errorTimer);
    clearInterval(s.pingTimer);
    s.connectTimer = s.pongTimer = s.errorTimer = s.pingTimer = null;
  }

  /** Decides what follows the end of one socket. */
  #afterClose(s, info) {
    // The gateway forgets a connection's channels with it, and the next one is not asked for
    // those left meanwhile: pending unsubscribes are done.
    for (const name of [...this.#waiting.unsubscribe.keys()]) this.#settle("unsubscribe", name);
    if (this.#closed) return;

    if (!s.opened && !info.timedOut) return this.#afterFailedUpgrade(s, info);

    switch (info.code) {
      case CloseCode.REVOKED:
        // An operator revoked this user: the same token must not come back, and a fresh one
        // from the same source would only be revoked again. Stop; the application decides.
        return this.#revoked(info);
      case CloseCode.POLICY:
        if (info.reason === "token_expired" || tokenProblem(this.#token) === "expired") {
          if (typeof this.#opts.getToken === "function") {
            this.#needToken = true;
            return this.#reconnect(info);
          }
          return this.#stop(info, new WsgateError("token_expired",
            `closed with 1008 (${info.reason || "policy"}): the token has expired and there is no getToken() for a fresh one`,
            { closeCode: info.code, reason: info.reason }));
        }
        // Not the token (e.g. "message_rate": this client sent too fast): the same token, after
        // a backoff delay; reported so the application can see it misbehaves.
        this.#report(new WsgateError("policy", `closed with 1008 (${info.reason || "policy"}); reconnecting with the same token`,
          { closeCode: info.code, reason: info.reason }));
        return this.#reconnect(info);
      case CloseCode.RECONNECT:
        // An operator asked for it (or the server restarts): the token is still good, and the
        // resume (`since=`) picks up where this connection left off. Within the first backoff
        // step, whatever came before.
        this.#attempt = 0;
        return this.#reconnect(info);
      default:
        // 1001 (shutdown), 1013 (too slow), 1006 (lost), 1002/1007/1009, ping/connect timeouts,
        // anything else.
        return this.#reconnect(info);
    }
  }

  /**
   * The socket closed before it opened: the upgrade failed. Browsers hide why (a refused token,
   * a draining instance, a host that is down all look the same); Node's `ws` reports the
   * HTTP status. The token is to blame, so getToken() is asked (once per refusal: a fresh token
   * refused too stops the client), only when the gateway said so (401) or the token shows it
   * (expired `exp`, not a JWT at all). Otherwise the gateway is away (deploy, restart, limits):
   * retry with backoff, the first connection too unless options.retryFirstConnection is false.
   */
  #afterFailedUpgrade(s, closeInfo) {
    const status = s.status;
    const info = { ...closeInfo, upgradeFailed: true, ...(status ? { status } : {}) };
    const detail = status ? `HTTP ${status}` : "no HTTP status available";
    const problem = tokenProblem(this.#token);
    if (status === 401 || (status === undefined && problem)) {
      if (typeof this.#opts.getToken === "function" && !s.freshToken) {
        this.#needToken = true;
        return this.#reconnect(info);
      }
      const why = problem === "expired" ? "the token has expired" : problem === "malformed" ? "the token is not a JWT" : "the gateway refused the token";
      return this.#stop(info, new WsgateError(problem === "expired" ? "token_expired" : "upgrade_refused",
        `the gateway refused the WebSocket upgrade (${detail}): ${why}, and ${s.freshToken ? "the fresh token from getToken() was refused too" : "there is no getToken() for a fresh one"}; not retrying`,
        { status, cause: s.error }));
    }
    if (status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429) {
      // 403 (origin not allowed), 404 (wrong URL), 400, 414...: trying again cannot help.
      return this.#stop(info, new WsgateError("upgrade_refused",
        `the gateway refused the WebSocket upgrade (${detail}); not retrying`, { status, cause: s.error }));
    }
    if (!this.#everConnected && !(this.#opts.retryFirstConnection ?? DEFAULTS.retryFirstConnection)) {
      return this.#stop(info, new WsgateError("upgrade_refused",
        `the gateway refused or could not take the WebSocket upgrade (${detail}); not retrying (retryFirstConnection: false)`,
        { status, cause: s.error }));
    }
    // 429, 503 (draining, limits), 5xx, or nothing known (connection refused, a deploy): retry.
    return this.#reconnect(info);
  }

  /** Close 4001: stops for good, then tells onRevoked. */
  #revoked(info) {
    const err = new WsgateError("revoked",
      `an operator revoked this user (close ${info.code}${info.reason ? ` "${info.reason}"` : ""}); not reconnecting with this token`,
      { closeCode: info.code, reason: info.reason });
    const revoked = { code: info.code, reason: info.reason, wasClean: info.wasClean, user: this.#connection?.user ?? null, connection: this.#connection, error: err };
    this.#stop(info, err, () => {
      this.#emit("onRevoked", revoked);
      for (const h of [...this.#revokedHandlers]) {
        try {
          h(revoked);
        } catch (e) {
          this.#report(new WsgateError("handler_error", `an onRevoked handler threw: ${e?.message ?? e}`, { cause: e }));
        }
      }
    });
  }

  /** Reports the close (with the delay chosen) and schedules the next attempt. */
  #reconnect(info) {
    const delayMs = this.#scheduleReconnect();
    this.#emit("onClose", { ...info, willReconnect: true, delayMs });
  }

  #scheduleReconnect() {
    const delayMs = backoffDelay(this.#attempt, this.#backoff);
    this.#attempt += 1;
    this.#setState(State.RECONNECTING);
    this.#retryTimer = setTimeout(() => this.#open(), delayMs);
    return delayMs;
  }

  #stop(info, err, beforeReport) {
    err.fatal = true;
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#setState(State.CLOSED);
    this.#rejectWaiting(err);
    this.#emit("onClose", { ...info, willReconnect: false, error: err });
    beforeReport?.();
    this.#report(err);
  }

  #fail(err) {
    this.#stop({ code: CloseCode.ABNORMAL, reason: err.message, wasClean: false }, err);
  }

  #setState(next) {
    if (this.#state === next) return;
    const prev = this.#state;
    this.#state = next;
    this.#emit("onStateChange", next, prev);
  }

  #report(err) {
    if (typeof this.#opts.onError === "function") this.#emit("onError", err);
    else if (err.fatal && !(err.code === "revoked" && (typeof this.#opts.onRevoked === "function" || this.#revokedHandlers.size > 0))) {
      console.error(`wsgate: ${err.message}`);
    }
  }

  #emit(name, ...args) {
    const fn = this.#opts[name];
    if (typeof fn !== "function") return;
    try {
      fn(...args);
    } catch (err) {
      if (name === "onError") console.error("wsgate: onError threw", err);
      else this.#report(new WsgateError("handler_error", `${name} threw: ${err?.message ?? err}`, { cause: err }));
    }
  }
}

/**
 * What the token itself shows, read without verifying it (the gateway takes only JWTs):
 * "expired" when its `exp` has passed, "malformed" when it is not a JWT (three base64url parts,
 * the middle one a JSON object), otherwise null.
 */
function tokenProblem(token, now = Date.now()) {
  const parts = String(token ?? "").split(".");
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]+$/.test(p))) return "malformed";
  let claims;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(b64 + "===".slice((b64.length + 3) % 4)), (c) => c.charCodeAt(0))));
  } catch {
    return "malformed";
  }
  if (!claims || typeof claims !== "object" || Array.isArray(claims)) return "malformed";
  return typeof claims.exp === "number" && claims.exp * 1000 <= now ? "expired" : null;
}
