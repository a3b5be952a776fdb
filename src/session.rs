//! One WebSocket connection: register in the hub, replay what a resuming client missed, then
//! one task selects over the outbox, the socket's readability and a single timer (ping, pong
//! deadline, token expiry) until something ends it; then it tears down in a fixed order.
//!
//! Reads are gated on the socket being readable instead of polling the WebSocket stream on
//! every wake-up: tungstenite zero-fills its read buffer on each read attempt, so polling it
//! each time the outbox wakes the task would cost a memset per event per socket.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::broker::Broker;
use crate::channel::{self, Refusal};
use crate::config::SessionConfig;
use crate::disconnect::Disconnect;
use crate::event::now_ms;
use crate::history::{frame_route, Replay, StreamId};
use crate::hub::{Hub, Registration};
use crate::limits::MessageBudget;
use crate::logging::escaped;
use crate::outbox::{Drained, Push};
use crate::protocol::{error_frame, parse_request, ChannelOp, Request, ServerFrame};

pub type Socket = WebSocketStream<TcpStream>;

/// Session timing, from the config ([`SessionSettings::new`]).
#[derive(Clone, Copy, Debug)]
pub struct SessionSettings {
    /// A connection that sent nothing for this long is pinged.
    pub ping_interval: Duration,
    /// After a ping, silence for this long drops the connection.
    pub pong_timeout: Duration,
    /// How long one batch may take to write before the client counts as slow. A client that
    /// reads nothing at all is caught by its outbox bound first; this catches one that reads a
    /// trickle, and one whose socket is stuck when no further events come.
    pub write_timeout: Duration,
    /// Upper bound on the closing handshake (sending our close frame, waiting for theirs).
    pub close_timeout: Duration,
    /// Most channels one connection may join.
    pub max_channels: usize,
    /// Messages per second a client may send (bursts of twice that); 0 = no limit.
    pub client_messages_per_sec: u32,
}

impl SessionSettings {
    /// `drain_timeout` bounds the closing handshake too: a shutdown must not wait on it longer.
    pub fn new(cfg: &SessionConfig, drain_timeout: Duration) -> SessionSettings {
        SessionSettings {
            ping_interval: cfg.ping_interval,
            pong_timeout: cfg.pong_timeout,
            write_timeout: cfg.ping_interval + cfg.pong_timeout,
            close_timeout: drain_timeout.min(Duration::from_secs(5)),
            max_channels: cfg.max_channels,
            client_messages_per_sec: cfg.client_messages_per_sec,
        }
    }
}

/// The user a session serves and until when.
pub struct Peer {
    pub user: String,
    /// When the token stops being valid, seconds since the epoch: its `exp` plus the leeway
    /// the handshake allowed, so that a token accepted at the handshake is never closed as
    /// expired the moment it connects.
    pub valid_until: u64,
    /// The last event id the client saw, when it asks to resume (`since=`).
    pub since: Option<String>,
    /// The token's `channels` claim: what this user may join.
    pub grants: Vec<String>,
    /// Channels asked for at connect (`channels=a,b`), in order, without repeats.
    pub channels: Vec<String>,
}

/// What a session works with once registered.
struct Conn<'a> {
    hub: &'a Hub,
    broker: &'a dyn Broker,
    reg: &'a Registration,
    grants: &'a [String],
    s: &'a SessionSettings,
}

/// The WebSocket over an upgraded socket (`early`: bytes the client sent behind the handshake,
/// which hyper read). Built synchronously: tokio-tungstenite's constructors are async only in
/// form (they complete on their first poll), and awaiting them would keep their state in
/// every connection's task.
pub fn wrap(stream: TcpStream, early: Option<Vec<u8>>, cfg: WebSocketConfig) -> Socket {
    let built = match early {
        None => WebSocketStream::from_raw_socket(stream, Role::Server, Some(cfg)).now_or_never(),
        Some(bytes) => WebSocketStream::from_partially_read(stream, bytes, Role::Server, Some(cfg)).now_or_never(),
    };
    built.expect("tokio-tungstenite builds a stream without a handshake on the first poll")
}

/// Runs a connection to its end.
pub async fn run(mut ws: Socket, hub: Arc<Hub>, broker: Arc<dyn Broker>, mut peer: Peer, settings: SessionSettings) {
    let started = Instant::now();
    // Until the broker follows the fleet's events (Redis mode, start-up: a bounded wait), a
    // connection told `connected` could miss some: it registers after.
    broker.ready().await;
    // Registered first, replayed second: every event after `since` is then either in the
    // replay or queued in the outbox (or both; the outbox copy is dropped).
    let reg = hub.register(&peer.user);
    let conn_id = format!("{}-{}", hub.instance_id(), reg.id);
    tracing::info!(user = %escaped(&peer.user), conn_id = %conn_id, since = peer.since.as_deref(), "connected");

    let conn = Conn { hub: &hub, broker: &*broker, reg: &reg, grants: &peer.grants, s: &settings };
    // Channels asked for at connect are joined before the replay, so it covers them too. Then
    // where this connection starts in the stream: a client that gets no event before it drops
    // resumes from here. (A block: the channel list, `since` and the position are not kept for
    // the connection's life; the hub knows what the connection joined.)
    let mut answers = VecDeque::new();
    let (hello, replay) = {
        let mut joined = Vec::new();
        for name in std::mem::take(&mut peer.channels) {
            let (frame, ok) = conn.join(&name).await;
            answers.push_back(frame);
            if ok {
                joined.push(name);
            }
        }
        let replay = match peer.since.take() {
            Some(since) => Some(broker.replay(&since, &peer.user, &joined).await),
            None => None,
        };
        let position = broker.position(&joined).await;
        let recovered = replay.as_ref().map(|r| matches!(r, Replay::Recovered { .. }));
        if let Some(r) = recovered {
            hub.metrics().resume(r);
        }
        let hello = ServerFrame::Connected {
            connection_id: &conn_id,
            user: &peer.user,
            instance_id: hub.instance_id(),
            last_id: position.as_deref(),
            recovered,
        }
        .encode();
        (hello, replay)
    };
    // The rest of a frame whose write was cut off (a write timeout, or the outbox closed while
    // the socket was stalled): written before the close frame, which would otherwise land in
    // the middle of it.
    let mut cut = Cut::default();
    // The first frames, written before anything from the outbox: events queued meanwhile wait.
    let reason = match tokio::time::timeout(settings.write_timeout, ws.send(Message::Text(hello))).await {
        Ok(Ok(())) => {
            // Then the answers to `channels=`, the missed events, and live ones.
            let answered =
                tokio::time::timeout(settings.write_timeout, write_raw(&mut ws, &mut answers, &mut cut.done)).await;
            cut.keep(&answers);
            match answered.unwrap_or(Err(Disconnect::Slow)) {
                Err(reason) => reason,
                Ok(()) => match send_replay(&mut ws, replay, &hub, &settings, &mut cut).await {
                    Ok(skip) => serve(&mut ws, &conn, expiry_instant(peer.valid_until), skip, &mut cut).await,
                    Err(reason) => reason,
                },
            }
        }
        Ok(Err(_)) => Disconnect::Error,
        Err(_) => Disconnect::Slow,
    };

    // Teardown order, and why:
    // 1. unregister: no new frames are queued for this socket and the counts drop at once,
    //    so stats and heartbeats never show a connection that is already going away;
    // 2. the closing handshake, bounded by `close_timeout`, so a peer that never answers
    //    cannot hold the task (or a shutdown) hostage;
    // 3. tell the broker which channels this connection left (it may stop following them,
    //    after a delay, so this is not urgent);
    // 4. drop the socket.
    let left = reg.close();
    hub.metrics().disconnect(reason);
    match reason.close_code() {
        Some(code) => {
            // A cut frame is finished first (a stuck client may never take it: then no close
            // frame either, the socket is dropped).
            let finished = match cut.rest.take() {
                None => true,
                Some(rest) => {
                    use tokio::io::AsyncWriteExt;
                    let finish = ws.get_mut().write_all(&rest);
                    matches!(tokio::time::timeout(settings.close_timeout, finish).await, Ok(Ok(())))
                }
            };
            if finished {
                let frame = CloseFrame { code, reason: reason.reason().into() };
                let _ = tokio::time::timeout(settings.close_timeout, close_handshake(&mut ws, frame)).await;
            }
        }
        // The peer closed: flush tungstenite's queued close reply.
        None if reason == Disconnect::ClientClosed => {
            let _ = tokio::time::timeout(settings.close_timeout, ws.flush()).await;
        }
        None => {}
    }
    for channel in left {
        broker.leave(&channel).await;
    }
    end(&peer, &conn_id, started, reason);
}

fn end(peer: &Peer, conn_id: &str, started: Instant, reason: Disconnect) {
    tracing::info!(
        user = %escaped(&peer.user),
        conn_id = %conn_id,
        duration_ms = started.elapsed().as_millis() as u64,
        reason = reason.reason(),
        "disconnected"
    );
}

/// A frame cut off midway by a write that did not finish (see `run`'s teardown).
#[derive(Default)]
struct Cut {
    /// How much of the chunk being written went out: set by [`write_raw`] before each wait.
    done: usize,
    /// The cut frame's unwritten bytes, once a write was abandoned midway.
    rest: Option<Vec<u8>>,
}

impl Cut {
    /// After a write of `frames` ended (finished, failed or dropped): if it stopped inside a
    /// frame, keeps that frame's unwritten bytes (the frames after it are dropped: the
    /// connection is closing).
    fn keep(&mut self, frames: &VecDeque<Utf8Bytes>) {
        let mut skip = std::mem::take(&mut self.done);
        if skip == 0 {
            return;
        }
        for f in frames {
            if skip == 0 {
                return; // stopped at a frame boundary: nothing of the next one went out
            }
            let whole = header_len(f.len()) + f.len();
            if skip >= whole {
                skip -= whole;
                continue;
            }
            let mut head = [0u8; 10];
            let hl = text_header(f.len(), &mut head);
            let mut rest = Vec::with_capacity(whole - skip);
            if skip < hl {
                rest.extend_from_slice(&head[skip..hl]);
                rest.extend_from_slice(f.as_bytes());
            } else {
                rest.extend_from_slice(&f.as_bytes()[skip - hl..]);
            }
            self.rest = Some(rest);
            return;
        }
    }
}

/// Live events a replay already sent: per stream (`None`: events without a channel), the
/// position up to which the replay covered it. Frames queued in the outbox meanwhile at or
/// before it are dropped. It ends once every stream has brought a later event, or after
/// [`SKIP_FOR`] (by then the relay is long past what the replay read).
struct Skip {
    upto: Vec<(Option<String>, StreamId)>,
    until: Instant,
}

const SKIP_FOR: Duration = Duration::from_secs(30);

impl Skip {
    /// Drops the frames of `batch` the replay sent; true when nothing is left to skip.
    fn apply(&mut self, batch: &mut VecDeque<Utf8Bytes>) -> bool {
        if Instant::now() >= self.until {
            return true;
        }
        let upto = &mut self.upto;
        batch.retain(|f| {
            let Some((stream, position)) = frame_route(f) else { return true };
            match upto.iter().position(|(s, _)| *s == stream) {
                Some(i) if position <= upto[i].1 => false,
                Some(i) => {
                    upto.swap_remove(i);
                    true
                }
                None => true,
            }
        });
        upto.is_empty()
    }
}

/// Writes a resume's missed events. Returns what live events in the outbox the replay covered.
async fn send_replay(
    ws: &mut Socket,
    replay: Option<Replay>,
    hub: &Hub,
    s: &SessionSettings,
    cut: &mut Cut,
) -> Result<Option<Skip>, Disconnect> {
    let Some(Replay::Recovered { frames, upto }) = replay else { return Ok(None) };
    hub.metrics().replayed_events.inc_by(frames.len() as u64);
    let mut frames: VecDeque<Utf8Bytes> = frames.into();
    while !frames.is_empty() {
        // In chunks, each under the write timeout, so a long replay to a healthy client is
        // not cut off while a stalled one still is.
        let mut chunk: VecDeque<Utf8Bytes> = frames.drain(..frames.len().min(256)).collect();
        let written = tokio::time::timeout(s.write_timeout, write_raw(ws, &mut chunk, &mut cut.done)).await;
        cut.keep(&chunk);
        written.unwrap_or(Err(Disconnect::Slow))?;
    }
    Ok(Some(Skip { upto, until: Instant::now() + SKIP_FOR }))
}

fn expiry_instant(exp_secs: u64) -> Instant {
    let now = now_ms();
    let left = (exp_secs.saturating_mul(1000)).saturating_sub(now);
    // Clamp far-future expiries so the Instant arithmetic cannot overflow.
    Instant::now() + Duration::from_millis(left.min(100 * 365 * 24 * 3600 * 1000))
}

async fn close_handshake(ws: &mut Socket, frame: CloseFrame) {
    if ws.close(Some(frame)).await.is_err() {
        return;
    }
    // Wait for the peer's close frame (or EOF), discarding anything sent meanwhile.
    while let Some(Ok(m)) = ws.next().await {
        if m.is_close() {
            break;
        }
    }
}

/// The main loop. Returns why the connection ends.
///
/// `skip`: after a replay, the live events it already sent (see [`Skip`]).
async fn serve(
    ws: &mut Socket,
    conn: &Conn<'_>,
    expires: Instant,
    mut skip: Option<Skip>,
    cut: &mut Cut,
) -> Disconnect {
    let (reg, s) = (conn.reg, conn.s);
    let mut ops = Vec::new();
    let mut budget = MessageBudget::new(s.client_messages_per_sec);
    let mut batch: VecDeque<Utf8Bytes> = VecDeque::new();
    let mut last_heard = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    let timer = tokio::time::sleep_until(next_deadline(expires, last_heard, ping_sent, s).into());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            _ = reg.outbox.ready() => {
                if let Drained::Closed(reason) = reg.outbox.drain(&mut batch) {
                    return reason;
                }
                if skip.as_mut().is_some_and(|s| s.apply(&mut batch)) {
                    skip = None;
                }
                if batch.is_empty() {
                    continue;
                }
                let r = tokio::select! {
                    biased;
                    // Closed while we are blocked on a stalled socket (overflow or shutdown).
                    _ = reg.outbox.closed() => Err(reg.outbox.closed_reason().unwrap_or(Disconnect::Slow)),
                    r = tokio::time::timeout(s.write_timeout, write_raw(ws, &mut batch, &mut cut.done)) => {
                        r.unwrap_or(Err(Disconnect::Slow))
                    }
                };
                cut.keep(&batch);
                batch.clear();
                // Keep an idle connection small after a burst.
                if batch.capacity() > 64 {
                    batch.shrink_to(8);
                }
                if let Err(reason) = r {
                    return reason;
                }
            }
            r = ws.get_ref().readable() => {
                if r.is_err() {
                    return Disconnect::Error;
                }
                match read_available(ws, reg, &mut ops, &mut budget) {
                    Ok(true) => {
                        last_heard = Instant::now();
                        ping_sent = None;
                    }
                    Ok(false) => {}
                    Err(reason) => {
                        if reason == Disconnect::MessageRate {
                            conn.hub.metrics().limit_refused("message_rate");
                        }
                        return reason;
                    }
                }
                for op in ops.drain(..) {
                    let reply = conn.channel_op(op).await;
                    if reg.outbox.push(reply) == Push::Overflow {
                        return Disconnect::Slow;
                    }
                }
            }
            _ = &mut timer => {
                let now = Instant::now();
                if now >= expires {
                    return Disconnect::TokenExpired;
                }
                match ping_sent {
                    Some(at) if now >= at + s.pong_timeout => return Disconnect::PingTimeout,
                    None if now >= last_heard + s.ping_interval => {
                        let ping = ws.send(Message::Ping(Default::default()));
                        match tokio::time::timeout(s.pong_timeout, ping).await {
                            Ok(Ok(())) => ping_sent = Some(now),
                            Ok(Err(_)) => return Disconnect::Error,
                            Err(_) => return Disconnect::PingTimeout,
                        }
                    }
                    _ => {}
                }
                timer.as_mut().reset(next_deadline(expires, last_heard, ping_sent, s).into());
            }
        }
    }
}

/// The next moment the timer arm has something to do.
fn next_deadline(expires: Instant, last_heard: Instant, ping_sent: Option<Instant>, s: &SessionSettings) -> Instant {
    let liveness = match ping_sent {
        Some(at) => at + s.pong_timeout,
        None => last_heard + s.ping_interval,
    };
    expires.min(liveness)
}

/// Frames per writev: a header and a payload slice each (IOV_MAX is 1024).
const FRAMES_PER_WRITE: usize = 32;

/// A server text frame's header (FIN, opcode 1, no mask) for a payload of `len` bytes.
fn text_header(len: usize, out: &mut [u8; 10]) -> usize {
    out[0] = 0x81;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Writes text frames straight to the socket, header and payload as slices of one writev:
/// the shared payload is not copied into tungstenite's write buffer, and that buffer (which
/// keeps its largest size for the connection's life) is never grown by events. Only valid
/// while tungstenite holds nothing unwritten: everything else written through it (the
/// `connected` frame, pings, close frames, its automatic pongs) is flushed at once.
///
/// `done`: while a chunk is on its way, how much of it went out (0 at frame boundaries), for
/// [`Cut::keep`] when this future is dropped or fails midway.
async fn write_raw(ws: &mut Socket, batch: &mut VecDeque<Utf8Bytes>, done_out: &mut usize) -> Result<(), Disconnect> {
    // tungstenite may have queued an automatic pong while reading: out before our frames.
    ws.flush().await.map_err(|_| Disconnect::Error)?;
    let sock = ws.get_mut();
    while !batch.is_empty() {
        let n = batch.len().min(FRAMES_PER_WRITE);
        let total: usize = batch.iter().take(n).map(|f| header_len(f.len()) + f.len()).sum();
        let mut done = 0;
        while done < total {
            // Cancelled while waiting here after part of the chunk went out: mid-frame.
            *done_out = done;
            // The headers and slices are built on the stack at each poll, not kept in this
            // future: its state is part of every idle session's allocation.
            let frames = &*batch;
            let w = std::future::poll_fn(|cx| {
                if n == 1 {
                    // The usual case at low rates: one frame, two slices, no arrays to fill.
                    let mut head = [0u8; 10];
                    let hl = text_header(frames[0].len(), &mut head);
                    let payload = frames[0].as_bytes();
                    let (h, p) =
                        if done < hl { (&head[done..hl], payload) } else { (&head[..0], &payload[done - hl..]) };
                    let iov = [std::io::IoSlice::new(h), std::io::IoSlice::new(p)];
                    let k = if h.is_empty() { 1 } else { 2 };
                    let iov = if k == 1 { &iov[1..] } else { &iov[..] };
                    return tokio::io::AsyncWrite::poll_write_vectored(std::pin::Pin::new(&mut *sock), cx, iov);
                }
                let mut heads = [[0u8; 10]; FRAMES_PER_WRITE];
                let mut iov = [std::io::IoSlice::new(&[]); 2 * FRAMES_PER_WRITE];
                let (mut k, mut skip) = (0, done);
                for (i, head) in heads.iter_mut().enumerate().take(n) {
                    let hl = text_header(frames[i].len(), head);
                    for part in [&head[..hl], frames[i].as_bytes()] {
                        if skip >= part.len() {
                            skip -= part.len();
                            continue;
                        }
                        iov[k] = std::io::IoSlice::new(&part[skip..]);
                        skip = 0;
                        k += 1;
                    }
                }
                tokio::io::AsyncWrite::poll_write_vectored(std::pin::Pin::new(&mut *sock), cx, &iov[..k])
            })
            .await;
            match w {
                Ok(0) | Err(_) => return Err(Disconnect::Error),
                Ok(w) => done += w,
            }
        }
        *done_out = 0;
        batch.drain(..n);
    }
    Ok(())
}

/// Length of a server text frame's header for a payload of `len` bytes.
fn header_len(len: usize) -> usize {
    if len < 126 {
        2
    } else if len <= u16::MAX as usize {
        4
    } else {
        10
    }
}

impl Conn<'_> {
    /// Joins `name` if the token allows it and the connection has room; the answer frame and
    /// whether it joined.
    async fn join(&self, name: &str) -> (Utf8Bytes, bool) {
        let (reg, hub) = (self.reg, self.hub);
        let joined = channel::check(&reg.user, self.grants, name)
            .and_then(|()| hub.subscribe(reg.id, &reg.user, name, self.s.max_channels));
        match joined {
            Ok(new) => {
                // Once this resolves the instance receives the channel's events.
                if new {
                    self.broker.join(name).await;
                }
                (ServerFrame::Subscribed { channel: name }.encode(), true)
            }
            Err(refusal) => {
                hub.metrics().channel_refused(refusal);
                (refusal_frame(refusal, &serde_json::Value::from(name), self.s.max_channels), false)
            }
        }
    }

    async fn channel_op(&self, op: ChannelOp) -> Utf8Bytes {
        match op {
            ChannelOp::Subscribe(Ok(name)) => self.join(&name).await.0,
            ChannelOp::Unsubscribe(Ok(name)) if channel::valid_name(&name) => {
                if self.hub.unsubscribe(self.reg.id, &name) {
                    self.broker.leave(&name).await;
                }
                ServerFrame::Unsubscribed { channel: &name }.encode()
            }
            ChannelOp::Unsubscribe(Ok(name)) => self.refuse(&serde_json::Value::from(name)),
            ChannelOp::Subscribe(Err(raw)) | ChannelOp::Unsubscribe(Err(raw)) => self.refuse(&raw),
        }
    }

    fn refuse(&self, channel: &serde_json::Value) -> Utf8Bytes {
        self.hub.metrics().channel_refused(Refusal::InvalidChannel);
        refusal_frame(Refusal::InvalidChannel, channel, self.s.max_channels)
    }
}

fn refusal_frame(r: Refusal, channel: &serde_json::Value, max_channels: usize) -> Utf8Bytes {
    let message = r.message(max_channels);
    ServerFrame::Error { channel: Some(channel), error: r.code(), message: &message }.encode()
}

/// Handles every complete message already readable, without waiting; channel requests (which
/// may wait on the broker) go to `ops`. Returns whether anything was read, or why the
/// connection must end.
fn read_available(
    ws: &mut Socket,
    reg: &Registration,
    ops: &mut Vec<ChannelOp>,
    budget: &mut Option<MessageBudget>,
) -> Result<bool, Disconnect> {
    let mut heard = false;
    loop {
        let msg = match ws.next().now_or_never() {
            None => return Ok(heard),
            Some(None) => return Err(Disconnect::ClientClosed),
            Some(Some(Err(e))) => return Err(classify(e)),
            Some(Some(Ok(m))) => m,
        };
        heard = true;
        // Every frame the client sends counts, pongs included: an unsolicited pong costs as
        // much to read as a ping, and a flood of them must not pass the limit (a pong that
        // answers our ping every PING_INTERVAL_MS is far below any sensible limit).
        let counted = !matches!(msg, Message::Close(_));
        if counted && budget.as_mut().is_some_and(|b| !b.spend()) {
            return Err(Disconnect::MessageRate);
        }
        let reply = match msg {
            Message::Text(t) => match parse_request(t.as_str()) {
                Request::Reply(r) => Some(r),
                Request::Channel(op) => {
                    ops.push(op);
                    None
                }
            },
            Message::Binary(_) => Some(error_frame("unsupported", "binary frames are not supported; send JSON text")),
            // tungstenite answers pings itself; pongs only prove liveness.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
            Message::Close(_) => return Err(Disconnect::ClientClosed),
        };
        if let Some(reply) = reply {
            // Replies share the outbox with events, so they keep their order and count
            // against the same bound: a client that floods pings without reading is slow.
            if reg.outbox.push(reply) == Push::Overflow {
                return Err(Disconnect::Slow);
            }
        }
    }
}

fn classify(e: WsError) -> Disconnect {
    match e {
        WsError::Capacity(_) => Disconnect::MessageTooBig,
        WsError::ConnectionClosed | WsError::AlreadyClosed => Disconnect::ClientClosed,
        WsError::Protocol(tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            Disconnect::ClientClosed
        }
        WsError::Io(ref io) if io.kind() == std::io::ErrorKind::ConnectionReset => Disconnect::ClientClosed,
        WsError::Protocol(_) => Disconnect::ProtocolError,
        WsError::Utf8(_) => Disconnect::InvalidPayload,
        _ => Disconnect::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(frames: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            let mut head = [0u8; 10];
            let hl = text_header(f.len(), &mut head);
            out.extend_from_slice(&head[..hl]);
            out.extend_from_slice(f.as_bytes());
        }
        out
    }

    #[test]
    fn a_cut_keeps_the_rest_of_the_frame_it_stopped_in() {
        let big = "x".repeat(300); // a 4-byte header
        let frames: VecDeque<Utf8Bytes> = ["ab", big.as_str(), "cd"].into_iter().map(Utf8Bytes::from).collect();
        let wire = framed(&["ab", big.as_str(), "cd"]);
        // Stopped inside the second frame's header, inside its payload, at a boundary.
        for done in [5, 10, 4 + 304 - 1] {
            let mut cut = Cut { done, rest: None };
            cut.keep(&frames);
            let end_of_second = 4 + 4 + 300;
            assert_eq!(cut.rest.as_deref(), Some(&wire[done..end_of_second]), "done = {done}");
            assert_eq!(cut.done, 0);
        }
        let mut boundary = Cut { done: 4, rest: None };
        boundary.keep(&frames);
        assert!(boundary.rest.is_none(), "stopped between frames: nothing to finish");
        let mut none = Cut::default();
        none.keep(&frames);
        assert!(none.rest.is_none(), "nothing went out: nothing to finish");
    }
}
