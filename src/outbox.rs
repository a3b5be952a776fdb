//! The bounded per-connection outbound queue.
//!
//! The hub pushes shared frames ([`Utf8Bytes`], cloned by reference count) into each
//! connection's outbox without ever waiting; the connection's session drains the whole queue at
//! once and writes it with a single flush, so a client that falls behind gets several events
//! per syscall instead of one. The queue is bounded in messages *and* bytes: a push that would
//! pass either bound closes the outbox with [`Disconnect::Slow`] and frees what was queued, so
//! one slow reader costs at most its bound and never delays anyone else (centrifuge's
//! `writer.go` does the same with `MaxQueueSize`).
//!
//! Why not a tokio `mpsc` channel: it cannot bound bytes, it allocates a 32-slot block per
//! channel up front (idle sockets pay for it), and it cannot be drained in one lock.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::disconnect::Disconnect;

/// Queue bounds, shared by every outbox of an instance (`OUTBOX_MAX_MESSAGES`,
/// `OUTBOX_MAX_BYTES`).
pub use crate::config::OutboxLimits as Limits;

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// This push overflowed the queue: the outbox is now closed with `Slow`.
    Overflow,
    /// The outbox was already closed; the frame was dropped.
    Closed,
}

pub struct Outbox {
    // A std Mutex, not a tokio one: it is held only to push or swap a queue, never across an
    // await, and is contended by at most the hub and this connection's session.
    state: Mutex<State>,
    /// Woken on the first push into an empty queue and on close. The session drains the whole
    /// queue each time it wakes, so one permit always covers everything queued since.
    ready: Notify,
    /// Woken on close only, so a session blocked writing to a stalled socket can give up.
    closed: Notify,
    limits: Limits,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Utf8Bytes>,
    bytes: usize,
    closed: Option<Disconnect>,
}

/// What the session takes out in one go.
pub enum Drained {
    /// Frames to write (possibly none after a spurious wake-up).
    Frames,
    /// The outbox was closed: end the connection with this reason.
    Closed(Disconnect),
}

impl Outbox {
    pub fn new(limits: Limits) -> Self {
        Outbox { state: Mutex::new(State::default()), ready: Notify::new(), closed: Notify::new(), limits }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent (every update
        // is a single push/swap), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame. Never waits.
    pub fn push(&self, frame: Utf8Bytes) -> Push {
        let len = frame.len();
        self.push_all(std::slice::from_ref(&frame), len)
    }

    /// Queues several frames (`bytes` long in all) under one lock and at most one wake-up:
    /// the hub hands over a backlog of events this way. All or nothing: frames that would
    /// pass a bound close the outbox instead.
    pub fn push_all(&self, frames: &[Utf8Bytes], bytes: usize) -> Push {
        let mut s = self.lock();
        if s.closed.is_some() {
            return Push::Closed;
        }
        if s.queue.len() + frames.len() > self.limits.max_messages || s.bytes + bytes > self.limits.max_bytes {
            s.closed = Some(Disconnect::Slow);
            s.queue = VecDeque::new();
            s.bytes = 0;
            drop(s);
            self.wake_closed();
            return Push::Overflow;
        }
        let was_empty = s.queue.is_empty();
        s.queue.extend(frames.iter().cloned());
        s.bytes += bytes;
        drop(s);
        // Only the first frame into an empty queue needs a wake-up: until the session drains,
        // the permit stored by that wake-up is still pending.
        if was_empty {
            self.ready.notify_one();
        }
        Push::Queued
    }

    /// Closes the outbox with `reason` unless it is already closed; frees queued frames.
    /// Returns whether this call closed it.
    pub fn close(&self, reason: Disconnect) -> bool {
        let mut s = self.lock();
        if s.closed.is_some() {
            return false;
        }
        s.closed = Some(reason);
        s.queue = VecDeque::new();
        s.bytes = 0;
        drop(s);
        self.wake_closed();
        true
    }

    fn wake_closed(&self) {
        self.ready.notify_one();
        self.closed.notify_one();
    }

    pub fn closed_reason(&self) -> Option<Disconnect> {
        self.lock().closed
    }

    /// Waits until there is something to drain (or a close).
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Waits until the outbox is closed. Only meaningful while a write is in progress: the
    /// caller checks [`Outbox::closed_reason`] afterwards.
    pub async fn closed(&self) {
        self.closed.notified().await
    }

    /// Moves every queued frame into `into` (which must be empty) by swapping buffers, so the
    /// lock is held for a few instructions whatever the queue length.
    pub fn drain(&self, into: &mut VecDeque<Utf8Bytes>) -> Drained {
        debug_assert!(into.is_empty());
        let mut s = self.lock();
        if let Some(reason) = s.closed {
            return Drained::Closed(reason);
        }
        std::mem::swap(&mut s.queue, into);
        s.bytes = 0;
        Drained::Frames
    }

    /// Frames and bytes waiting (for tests and stats).
    pub fn len(&self) -> (usize, usize) {
        let s = self.lock();
        (s.queue.len(), s.bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.len().0 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(max_messages: usize, max_bytes: usize) -> Outbox {
        Outbox::new(Limits { max_messages, max_bytes })
    }

    #[test]
    fn drains_everything_in_order() {
        let o = outbox(10, 1000);
        for i in 0..5 {
            assert_eq!(o.push(Utf8Bytes::from(format!("m{i}"))), Push::Queued);
        }
        let mut q = VecDeque::new();
        assert!(matches!(o.drain(&mut q), Drained::Frames));
        let got: Vec<&str> = q.iter().map(|f| f.as_str()).collect();
        assert_eq!(got, ["m0", "m1", "m2", "m3", "m4"]);
        assert!(o.is_empty());
    }

    #[test]
    fn overflow_by_count_closes_slow_and_frees() {
        let o = outbox(2, 1000);
        assert_eq!(o.push("a".into()), Push::Queued);
        assert_eq!(o.push("b".into()), Push::Queued);
        assert_eq!(o.push("c".into()), Push::Overflow);
        assert_eq!(o.len(), (0, 0));
        assert_eq!(o.push("d".into()), Push::Closed);
        assert_eq!(o.closed_reason(), Some(Disconnect::Slow));
        let mut q = VecDeque::new();
        assert!(matches!(o.drain(&mut q), Drained::Closed(Disconnect::Slow)));
    }

    #[test]
    fn batches_count_against_both_bounds() {
        let o = outbox(4, 100);
        let frames: Vec<Utf8Bytes> = ["a", "b", "c"].into_iter().map(Utf8Bytes::from).collect();
        assert_eq!(o.push_all(&frames, 3), Push::Queued);
        assert_eq!(o.len(), (3, 3));
        assert_eq!(o.push_all(&frames, 3), Push::Overflow, "7 messages > 4");
        let o = outbox(100, 5);
        assert_eq!(o.push_all(&frames, 3), Push::Queued);
        assert_eq!(o.push_all(&frames, 3), Push::Overflow, "6 bytes > 5");
    }

    #[test]
    fn overflow_by_bytes() {
        let o = outbox(100, 10);
        assert_eq!(o.push("12345".into()), Push::Queued);
        assert_eq!(o.push("12345".into()), Push::Queued);
        assert_eq!(o.push("1".into()), Push::Overflow);
    }

    #[test]
    fn first_close_wins() {
        let o = outbox(10, 100);
        assert!(o.close(Disconnect::Shutdown));
        assert!(!o.close(Disconnect::Slow));
        assert_eq!(o.closed_reason(), Some(Disconnect::Shutdown));
    }

    #[tokio::test]
    async fn push_into_empty_queue_wakes_the_session() {
        let o = std::sync::Arc::new(outbox(10, 100));
        let o2 = o.clone();
        let waiter = tokio::spawn(async move { o2.ready().await });
        tokio::task::yield_now().await;
        o.push("x".into());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }
}
