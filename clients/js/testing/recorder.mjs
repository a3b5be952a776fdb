// Opens a wsgate client in Node with the `ws` package and records everything it reports.

import WebSocket from "ws";
import { connect } from "../wsgate.js";

/** A `ws` WebSocket that records every URL it is asked to open. */
export function countingWebSocket(urls, Base = WebSocket) {
  return class CountingWebSocket extends Base {
    constructor(url, ...rest) {
      urls.push(String(url));
      super(url, ...rest);
    }
  };
}

/**
 * A `ws` WebSocket that reports errors the way browsers do: an error event with no message,
 * so the client cannot learn the HTTP status of a refused upgrade.
 */
export class BrowserLikeWebSocket extends WebSocket {
  get onerror() {
    return super.onerror;
  }
  set onerror(fn) {
    super.onerror = typeof fn === "function" ? () => fn({ type: "error" }) : fn;
  }
}

const opened = new Set();

/** Closes every client opened through openClient() (for an after/afterEach hook). */
export function closeAllClients() {
  for (const c of opened) c.close();
  opened.clear();
}

export function openClient(url, options = {}, Base = WebSocket) {
  const rec = { urls: [], states: [], closes: [], errors: [], opens: [], events: [] };
  const client = connect(url, {
    WebSocket: countingWebSocket(rec.urls, Base),
    backoff: { initialMs: 50, maxMs: 400 },
    onOpen: (frame) => rec.opens.push(frame),
    onClose: (info) => rec.closes.push(info),
    onError: (err) => rec.errors.push(err),
    onStateChange: (state) => rec.states.push(state),
    onEvent: (ev) => rec.events.push(ev),
    ...options,
  });
  opened.add(client);
  return { client, rec };
}
