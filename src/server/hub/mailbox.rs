//! A connection's mailbox: the frames the hub queued for it, and whether to close it.

use std::{
    collections::VecDeque,
    future::poll_fn,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::{Poll, Waker},
    time::{Duration, Instant},
};

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::protocol::{close_code, PeerId};

use super::{lock, Capacity};

/// A text frame on its way to a peer. Relayed frames are the sender's bytes, never re-encoded.
pub(crate) type Frame = Utf8Bytes;

/// A frame in a peer's outbound queue.
pub(crate) struct Outbound {
    pub(crate) frame: Frame,
    /// When the other peer's frame was read, for relayed frames (the relay latency metric).
    pub(crate) relayed_at: Option<Instant>,
    pub(crate) from: Source,
}

/// Who put a frame in a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The hub itself (someone joined or left): a few frames per change in the room.
    Hub,
    /// A person connected here, who may fill only their share of each other person's mailbox.
    Peer(PeerId),
    /// Someone on another instance (whose own instance limits their rate).
    Remote,
}

/// How long a reader may leave frames waiting without taking one before it counts as not
/// reading. A reader that keeps taking them reads promptly, however much others send it.
pub(crate) const STALL: Duration = Duration::from_secs(2);

/// Why a frame did not fit in a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Overflow {
    /// The reader left frames waiting for [`STALL`] or longer: it reads too slowly.
    Reader,
    /// The reader keeps up, but the sender has as much waiting for it as a sender may (or the
    /// mailbox is full): the sender must slow down.
    Sender,
}

/// Why the hub ended a peer's connection: the WebSocket close code and reason to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kick {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
}

impl Kick {
    pub(crate) const SHUTDOWN: Kick = Kick { code: close_code::GOING_AWAY, reason: "server shutting down" };
    pub(crate) const TOO_SLOW: Kick = Kick { code: close_code::TOO_SLOW, reason: "outbound queue overflowed" };
    pub(crate) const REPLACED: Kick = Kick { code: close_code::REPLACED, reason: "the same session connected again" };
    /// Its place went to someone else while this instance was cut off from Redis.
    pub(crate) const LOST: Kick = Kick { code: close_code::TRY_AGAIN_LATER, reason: "lost its place; reconnect" };
}

/// What the hub has for one peer's connection: frames to write, and whether to close.
///
/// One mutex holding the queue and the connection's waker, instead of an mpsc and a watch
/// channel (or a `Notify`): an idle connection costs about 100 bytes here rather than 2 KiB
/// (an mpsc channel allocates its first block of 32 slots up front), the queue only grows while
/// frames actually wait, and a frame costs one lock on each side. One task reads a mailbox
/// (its connection's), so one waker is enough.
pub(crate) struct Mailbox {
    state: Mutex<MailboxState>,
    /// The hub's count of bytes queued in all mailboxes.
    queued: Arc<AtomicUsize>,
}

struct MailboxState {
    frames: VecDeque<Outbound>,
    /// The bytes of `frames`.
    bytes: usize,
    /// What each person here has waiting in `frames`: (who, frames, bytes). Empty while
    /// nothing waits, and never longer than the room.
    shares: Vec<(PeerId, usize, usize)>,
    /// When the reader last took a frame, or frames began to wait, whichever came later.
    progress: Instant,
    /// A frame did not fit since the reader last took one.
    overflowed: bool,
    /// Set when the hub ends this connection (shutdown, replaced, or the queue overflowed).
    kick: Option<Kick>,
    /// The reading task, while it waits; taken by whoever wakes it, so a burst of frames
    /// wakes it once.
    waiting: Option<Waker>,
}

impl MailboxState {
    /// Whether frames have waited [`STALL`] or longer at `now` without the reader taking one.
    fn stalled(&self, now: Instant) -> bool {
        !self.frames.is_empty() && now.saturating_duration_since(self.progress) >= STALL
    }

    /// Keeps the reading task's waker, to be woken by the next frame or the kick.
    fn wait<T>(&mut self, waker: &Waker) -> Poll<T> {
        if !self.waiting.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waiting = Some(waker.clone());
        }
        Poll::Pending
    }
}

/// The next thing a connection must do for the hub.
pub(crate) enum Delivery {
    Write(Outbound),
    Close(Kick),
}

impl Mailbox {
    pub(super) fn new(queued: Arc<AtomicUsize>, now: Instant) -> Self {
        let state = MailboxState {
            frames: VecDeque::new(),
            bytes: 0,
            shares: Vec::new(),
            progress: now,
            overflowed: false,
            kick: None,
            waiting: None,
        };
        Self { state: Mutex::new(state), queued }
    }

    /// Waits for the next frame, or for the kick, which comes before any frame still queued.
    pub(crate) async fn next(&self) -> Delivery {
        poll_fn(|cx| {
            let mut state = lock(&self.state);
            if let Some(kick) = state.kick {
                return Poll::Ready(Delivery::Close(kick));
            }
            match self.pop(&mut state) {
                Some(outbound) => Poll::Ready(Delivery::Write(outbound)),
                None => state.wait(cx.waker()),
            }
        })
        .await
    }

    /// The next queued frame, if one is waiting and the connection was not kicked.
    pub(crate) fn try_next(&self) -> Option<Outbound> {
        let mut state = lock(&self.state);
        if state.kick.is_some() {
            return None;
        }
        self.pop(&mut state)
    }

    fn pop(&self, state: &mut MailboxState) -> Option<Outbound> {
        let outbound = state.frames.pop_front()?;
        let len = outbound.frame.len();
        state.bytes -= len;
        self.queued.fetch_sub(len, Ordering::Relaxed);
        if let Source::Peer(from) = outbound.from {
            if let Some(at) = state.shares.iter().position(|(who, ..)| *who == from) {
                let share = &mut state.shares[at];
                share.1 -= 1;
                share.2 -= len;
                if share.1 == 0 {
                    state.shares.swap_remove(at);
                }
            }
        }
        state.progress = Instant::now();
        state.overflowed = false;
        Some(outbound)
    }

    /// Resolves once the hub has kicked this connection.
    pub(crate) async fn kicked(&self) -> Kick {
        poll_fn(|cx| {
            let mut state = lock(&self.state);
            match state.kick {
                Some(kick) => Poll::Ready(kick),
                None => state.wait(cx.waker()),
            }
        })
        .await
    }

    /// Queues a frame at `now`, unless this mailbox is at `capacity`, or all mailboxes
    /// together hold `budget` bytes while this one holds more than a sixteenth of its capacity
    /// (a reader keeping up, as in a call's ICE trickle, has far less waiting), or the frame's
    /// sender already has `share` of it waiting.
    ///
    /// When a frame does not fit, the reader is to blame only if it has stopped taking frames
    /// ([`STALL`]); otherwise the sender is: several senders, each within its own rate limit,
    /// can fill a mailbox faster than any reader empties it. The hub's own few frames are
    /// queued anyway for a reader that keeps up.
    pub(super) fn push(
        &self,
        outbound: Outbound,
        capacity: Capacity,
        share: Capacity,
        budget: usize,
        now: Instant,
    ) -> Result<(), Overflow> {
        let mut state = lock(&self.state);
        let len = outbound.frame.len();
        let full = state.frames.len() >= capacity.frames || state.bytes + len > capacity.bytes;
        let behind = state.bytes > capacity.bytes / 16;
        let sender = match outbound.from {
            Source::Peer(from) => state.shares.iter().position(|(who, ..)| *who == from),
            Source::Hub | Source::Remote => None,
        };
        let over_share = sender.is_some_and(|at| {
            let (_, frames, bytes) = state.shares[at];
            frames >= share.frames || bytes + len > share.bytes
        });
        if full || over_share || (behind && self.queued.load(Ordering::Relaxed) + len > budget) {
            if state.stalled(now) {
                return Err(Overflow::Reader);
            }
            if outbound.from != Source::Hub {
                state.overflowed = true;
                return Err(Overflow::Sender);
            }
        }
        if state.frames.is_empty() {
            state.progress = now;
        }
        match (outbound.from, sender) {
            (_, Some(at)) => {
                state.shares[at].1 += 1;
                state.shares[at].2 += len;
            }
            (Source::Peer(from), None) => state.shares.push((from, 1, len)),
            _ => {}
        }
        state.bytes += len;
        self.queued.fetch_add(len, Ordering::Relaxed);
        state.frames.push_back(outbound);
        wake_reader(state);
        Ok(())
    }

    /// Whether, at `now`, the reader has stopped reading (as [`Mailbox::push`] would judge at
    /// the next frame): a frame did not fit, and it has taken none for [`STALL`].
    pub(crate) fn overflowing(&self, now: Instant) -> bool {
        let state = lock(&self.state);
        state.overflowed && state.stalled(now)
    }

    /// Ends the connection: what was queued for it will never be written, so it goes now.
    pub(super) fn kick(&self, kick: Kick) {
        let mut state = lock(&self.state);
        state.kick = Some(kick);
        state.frames.clear();
        state.shares.clear();
        self.queued.fetch_sub(std::mem::take(&mut state.bytes), Ordering::Relaxed);
        wake_reader(state);
    }
}

#[cfg(test)]
impl Mailbox {
    pub(super) fn take(&self) -> Option<Outbound> {
        self.pop(&mut lock(&self.state))
    }

    pub(super) fn queued_frames(&self) -> usize {
        lock(&self.state).frames.len()
    }

    pub(super) fn kick_of(&self) -> Option<Kick> {
        lock(&self.state).kick
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.queued.fetch_sub(state.bytes, Ordering::Relaxed);
    }
}

/// Wakes the reading task if it waits, after releasing the lock so it does not wake into it.
fn wake_reader(mut state: MutexGuard<'_, MailboxState>) {
    let waiting = state.waiting.take();
    drop(state);
    if let Some(waker) = waiting {
        waker.wake();
    }
}
