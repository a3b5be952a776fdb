// Runs the client on the runtime's own WebSocket (undici's, in Node: global on Node >= 22,
// behind --experimental-websocket on Node 20) against the real gateway and prints one JSON
// line with what happened. test/gateway.test.mjs runs it in a child process.
import { connect } from "../wsgate.js";
import { mintToken, startGateway, waitFor } from "./harness.mjs";

const out = { websocket: typeof globalThis.WebSocket };
const gw = await startGateway({ instanceId: "native-1" });
try {
  // 1. a good token: connected, events per type
  const seen = [];
  const closes = [];
  const good = connect(gw.wsUrl, {
    token: mintToken({ sub: "native" }),
    backoff: { initialMs: 50, maxMs: 400 },
    onClose: (i) => closes.push([i.code, i.reason, i.willReconnect]),
  });
  good.on("native.event", (e) => seen.push(e.data));
  await waitFor(() => good.state === "open", "native client open");
  out.instance = good.connection.instance_id;
  await gw.publish({ type: "native.event", data: { n: 1 } });
  await waitFor(() => seen.length === 1, "event");
  out.data = seen[0];

  // 2. a bad token: one attempt, then stop
  let attempts = 0;
  const errors = [];
  const Counting = class extends globalThis.WebSocket {
    constructor(url) {
      attempts++;
      super(url);
    }
  };
  const bad = connect(gw.wsUrl, { token: "bad", WebSocket: Counting, backoff: { initialMs: 50, maxMs: 100 }, onError: (e) => errors.push(e.code) });
  await waitFor(() => bad.state === "closed", "bad client stopped", 5000);
  await new Promise((r) => setTimeout(r, 500));
  out.refused = { errors, attempts };

  // 3. restart on the same port: 1001, then reconnect
  const port = gw.port;
  await gw.stop("SIGTERM");
  await waitFor(() => closes.length >= 1, "close 1001");
  const gw2 = await startGateway({ port, instanceId: "native-2" });
  await waitFor(() => good.connection.instance_id === "native-2" && good.state === "open", "reconnected", 10000);
  out.closes = closes;
  out.reconnectedTo = good.connection.instance_id;
  good.close();
  out.finalState = good.state;
  await gw2.stop("SIGTERM");
} finally {
  await gw.stop("SIGKILL");
}
console.log(JSON.stringify(out));
process.exit(0);
