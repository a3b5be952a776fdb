// Compiled with `tsc --noEmit` by test/types.test.mjs (and, from the packed tarball, by
// test/package.test.mjs): what a TypeScript user writes against wsgate-client. Each
// `@ts-expect-error` line must fail to compile: the declarations are strict where they promise.
import {
  CloseCode,
  State,
  WsgateClient,
  WsgateError,
  backoffDelay,
  connect,
  type AnyWsgateEvent,
  type CloseCodeValue,
  type CloseInfo,
  type ConnectOptions,
  type ConnectedFrame,
  type ResumedInfo,
  type ResyncInfo,
  type RevokedInfo,
  type WsgateErrorCode,
  type WsgateEvent,
} from "wsgate-client";

// ---- a typed event map ----
type Events = {
  "task.updated": { id: number; state: "todo" | "done" };
  notice: string;
};

const options: ConnectOptions<Events> = {
  token: "t",
  getToken: async () => "fresh",
  WebSocket: globalThis.WebSocket,
  onEvent: (e) => {
    if (e.type === "notice") e.data.toUpperCase(); // narrowed to string
    else e.data.id.toFixed(); // narrowed to the task
  },
  onOpen: (f: ConnectedFrame) => {
    const last: string | undefined = f.last_id;
    const recovered: boolean | undefined = f.recovered;
    void [f.connection_id, f.user, f.instance_id, last, recovered];
  },
  onResync: (i: ResyncInfo) => void [i.reason, i.since, i.frame.type],
  onResumed: (i: ResumedInfo) => void [i.since, i.missed, i.frame.recovered],
  onRevoked: (i: RevokedInfo) => {
    const code: number = i.code;
    const user: string | null = i.user;
    const why: WsgateErrorCode = i.error.code;
    void [code, user, why, i.reason, i.wasClean, i.connection?.instance_id];
  },
  onClose: (i: CloseInfo) => {
    const status: number | undefined = i.status;
    const failed: boolean | undefined = i.upgradeFailed;
    void [i.code, i.reason, i.wasClean, i.willReconnect, i.delayMs, i.timedOut, i.error, status, failed];
  },
  onError: (err: WsgateError) => {
    if (err.code === "revoked" || err.code === "token_expired" || err.code === "upgrade_refused" || err.code === "policy") void err.fatal;
    void [err.status, err.closeCode, err.reason, err.channel, err.frame, err.cause];
  },
  onStateChange: (state, previous) => void [state === State.OPEN, previous],
  backoff: { initialMs: 100, maxMs: 5000 },
  retryFirstConnection: false,
  pingIntervalMs: 25000,
  pongTimeoutMs: 10000,
  connectTimeoutMs: 15000,
  resume: true,
  since: "1700000000000-0",
  channels: ["news"],
};

const client = connect<Events>("wss://gw.example/ws/tasks", options);
const typedClient: WsgateClient<Events> = client;
void typedClient;

const off = client.on("task.updated", (e) => {
  const id: number = e.data.id;
  const type: "task.updated" = e.type;
  const eventId: string = e.id;
  const ts: number = e.ts;
  const channel: string | undefined = e.channel;
  void [id, type, eventId, ts, channel];
  // @ts-expect-error -- no such field on the task's data
  void e.data.nope;
});
off();
client.on("notice", (e) => e.data.toUpperCase());
client.on("*", (e: AnyWsgateEvent<Events>) => void e.type);
// @ts-expect-error -- not a type of the map
client.on("task.deleted", () => {});
// @ts-expect-error -- notice's data is a string
client.on("notice", (e) => e.data.id);
client.onChannel("project:42", (e) => {
  const channel: string = e.channel;
  if (e.type === "task.updated") void e.data.state;
  void channel;
});
client.off("notice");
client.off("*");
const offRevoked: () => void = client.onRevoked((i) => void i.user);
offRevoked();
const offResync: () => void = client.onResync((i) => void i.reason);
offResync();
const joined: Promise<void> = client.subscribe("project:42");
const left: Promise<void> = client.unsubscribe("project:42");
void [joined, left];
const state: "connecting" | "open" | "reconnecting" | "closed" = client.state;
const lastId: string | null = client.lastEventId;
const frame: ConnectedFrame | null = client.connection;
const channels: string[] = client.channels;
void [state, lastId, frame, channels];
client.close();

// ---- an interface works as a map too ----
interface AppEvents {
  "user.joined": { name: string };
}
connect<AppEvents>("/ws/tasks", { token: "t" }).on("user.joined", (e) => e.data.name.length);

// ---- without a map: any type name, data unknown ----
const untyped = connect("/ws/tasks", { getToken: () => "t" });
untyped.on("anything", (e: WsgateEvent) => {
  const data: unknown = e.data;
  const type: string = e.type;
  void [data, type];
  // @ts-expect-error -- data is unknown until checked
  void e.data.id;
});
untyped.on("*", (e) => void e.id);
untyped.on("task.updated", (e: WsgateEvent<{ id: number }>) => void e.data.id); // the data type the handler expects

// ---- close codes ----
const codes: CloseCodeValue[] = [
  CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.PROTOCOL_ERROR, CloseCode.ABNORMAL, CloseCode.INVALID_PAYLOAD,
  CloseCode.POLICY, CloseCode.TOO_BIG, CloseCode.RECONNECT, CloseCode.TRY_AGAIN, CloseCode.REVOKED,
];
const revoked: 4001 = CloseCode.REVOKED;
const reconnect: 1012 = CloseCode.RECONNECT;
const protocol: 1002 = CloseCode.PROTOCOL_ERROR;
const invalid: 1007 = CloseCode.INVALID_PAYLOAD;
void [codes, revoked, reconnect, protocol, invalid];
// @ts-expect-error -- the table is read-only
CloseCode.REVOKED = 4002;

// ---- the rest of the module ----
const delay: number = backoffDelay(3, { initialMs: 100 }, Math.random);
const err = new WsgateError("revoked", "revoked", { closeCode: 4001 });
const name: "WsgateError" = err.name;
void [delay, name];
// @ts-expect-error -- options need a token or getToken at run time, and a url always
connect();
untyped.on<{ n: number }>("counter", (e) => void e.data.n.toFixed());
// @ts-expect-error -- with a map, the handler cannot pick another data type
client.on<{ other: true }>("notice", (e) => void e.data.other);
