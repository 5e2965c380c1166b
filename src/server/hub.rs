//! The signaling hub: rooms of a few people, who is in which, and routing a frame to the
//! person it is for.
//!
//! No HTTP and no sockets here: a connection joins a room and gets a [`Membership`], through
//! which it relays frames and from which it reads what the other peer (or the hub) sends it.
//! Relaying takes only the room's own lock, so one room never waits on another; the map of
//! rooms is locked only to join and to leave.

use std::{
    collections::{HashMap, VecDeque},
    future::poll_fn,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::{Poll, Waker},
    time::{Instant, SystemTime},
};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::watch;

use crate::{
    protocol::{close_code, Message, PeerId, PeerInfo, Welcome},
    room::RoomId,
    server::ice::IceConfig,
    server::limits::LogThrottle,
};

/// Slow readers, logged a few a second at most: a client can make itself one at will.
static SLOW_READER_LOG: LogThrottle = LogThrottle::new();

/// A text frame on its way to a peer. Relayed frames are the sender's bytes, never re-encoded.
pub(crate) type Frame = Utf8Bytes;

/// A frame in a peer's outbound queue.
pub(crate) struct Outbound {
    pub(crate) frame: Frame,
    /// When the other peer's frame was read, for relayed frames (the relay latency metric).
    pub(crate) relayed_at: Option<Instant>,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the room is full")]
pub(crate) struct RoomFull;

/// Why a relayed frame went to no one; the text goes into an `ERROR` `bad_message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Misaddressed {
    #[error("\"to\" names yourself")]
    ToSelf,
    #[error("no one with peer id {0} is in this room (they may just have left)")]
    NotHere(u64),
    #[error("there are several other people in this room: say which one with \"to\"")]
    Ambiguous,
}

pub(crate) struct HubSettings {
    pub(crate) ice: IceConfig,
    /// How many people a room holds.
    pub(crate) room_size: usize,
    /// What may wait for one slow reader before it is dropped: frames, and their bytes.
    pub(crate) outbox: Capacity,
    /// Bytes that may wait for all readers together; past it, a reader that has fallen
    /// behind (more than a sixteenth of its capacity waiting) is dropped rather than queue more.
    pub(crate) queued_budget: usize,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Capacity {
    pub(crate) frames: usize,
    pub(crate) bytes: usize,
}

pub(crate) struct Hub {
    rooms: Mutex<HashMap<RoomId, Arc<Room>>>,
    /// Number of memberships alive, so shutdown can wait for every socket to close.
    peers: watch::Sender<usize>,
    /// Bytes of frames waiting in every mailbox.
    queued: Arc<AtomicUsize>,
    /// Set at shutdown, for connections that are not in a room (yet) to close too.
    stopping: watch::Sender<bool>,
    settings: HubSettings,
}

/// A place per person. In each pair, the one in the lower place is the impolite side of
/// perfect negotiation and the other the polite one, so every pair has one of each; a newcomer
/// takes the lowest free place.
struct Room {
    slots: Mutex<Vec<Option<Slot>>>,
}

struct Slot {
    peer_id: PeerId,
    /// The reconnect credential the peer named; never sent to anyone.
    session: Option<String>,
    /// What the other peer knows this person by: [`public_id`] of the session.
    public_id: Option<String>,
    mailbox: Arc<Mailbox>,
}

impl Slot {
    /// How others see this person; `polite`: the receiver's role toward them, where it matters.
    fn info(&self, polite: Option<bool>) -> PeerInfo {
        PeerInfo { peer_id: self.peer_id, polite, public_id: self.public_id.clone() }
    }
}

/// The others in the room, by place, but the one in `me`.
fn others(slots: &[Option<Slot>], me: usize) -> impl Iterator<Item = (usize, &Slot)> {
    slots
        .iter()
        .enumerate()
        .filter(move |(index, _)| *index != me)
        .filter_map(|(index, slot)| Some((index, slot.as_ref()?)))
}

/// The name by which others recognise a session: the same person coming back has the same
/// one. A session is a reconnect credential (naming it takes that person's place), so others
/// get a one-way hash of it instead, bound to the room. It needs no server key, so it stays
/// the same across server restarts and between servers.
pub(crate) fn public_id(room: &RoomId, session: &str) -> String {
    one_way("duo public id", &[room.as_str(), session], 16)
}

/// How logs name a room: enough to follow one call through them, useless for joining it (the
/// room id is the secret of the call link).
pub(crate) fn room_log_name(room: &RoomId) -> String {
    one_way("duo room in logs", &[room.as_str()], 6)
}

/// A peer id that tells nothing (a counter would tell anyone how many connections the server
/// had): 53 random bits, the most a JavaScript number holds exactly. Unique within its room,
/// which is all the hub needs.
fn random_peer_id() -> PeerId {
    let mut bytes = [0; 8];
    getrandom::getrandom(&mut bytes).expect("the OS random source works");
    PeerId(u64::from_le_bytes(bytes) >> 11)
}

/// The first `bytes` of SHA-256 over `purpose` and `parts`, in URL-safe base64.
fn one_way(purpose: &str, parts: &[&str], bytes: usize) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new().chain_update(purpose);
    for part in parts {
        hash.update(b"\0");
        hash.update(part);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&hash.finalize()[..bytes])
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

#[derive(Default)]
struct MailboxState {
    frames: VecDeque<Outbound>,
    /// The bytes of `frames`.
    bytes: usize,
    /// Set when the hub ends this connection (shutdown, replaced, or the queue overflowed).
    kick: Option<Kick>,
    /// The reading task, while it waits; taken by whoever wakes it, so a burst of frames
    /// wakes it once.
    waiting: Option<Waker>,
}

impl MailboxState {
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
        state.bytes -= outbound.frame.len();
        self.queued.fetch_sub(outbound.frame.len(), Ordering::Relaxed);
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

    /// Queues a frame unless this mailbox is at `capacity`, or all mailboxes together hold
    /// `budget` bytes while this one holds more than a sixteenth of its capacity (a reader
    /// keeping up, as in a call's ICE trickle, has far less waiting); false if it does not fit.
    fn push(&self, outbound: Outbound, capacity: Capacity, budget: usize) -> bool {
        let mut state = lock(&self.state);
        let len = outbound.frame.len();
        let full = state.frames.len() >= capacity.frames || state.bytes + len > capacity.bytes;
        let behind = state.bytes > capacity.bytes / 16;
        if full || (behind && self.queued.load(Ordering::Relaxed) + len > budget) {
            return false;
        }
        state.bytes += len;
        self.queued.fetch_add(len, Ordering::Relaxed);
        state.frames.push_back(outbound);
        wake_reader(state);
        true
    }

    /// Ends the connection: what was queued for it will never be written, so it goes now.
    fn kick(&self, kick: Kick) {
        let mut state = lock(&self.state);
        state.kick = Some(kick);
        state.frames.clear();
        self.queued.fetch_sub(std::mem::take(&mut state.bytes), Ordering::Relaxed);
        wake_reader(state);
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

/// A peer's place in a room; leaving the room is dropping it.
pub(crate) struct Membership {
    hub: Arc<Hub>,
    room_id: RoomId,
    room: Arc<Room>,
    pub(crate) peer_id: PeerId,
    pub(crate) welcome: Welcome,
    /// Frames for this peer (relayed from the other one, or sent by the hub), and its kick.
    pub(crate) mailbox: Arc<Mailbox>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    pub(crate) fn new(settings: HubSettings) -> Arc<Self> {
        Arc::new(Self {
            rooms: Mutex::default(),
            peers: watch::Sender::new(0),
            queued: Arc::default(),
            stopping: watch::Sender::new(false),
            settings,
        })
    }

    /// Joins `room_id`. A connection naming the session of someone already in the room is that
    /// person reconnecting: it takes their place (the old connection is closed with 4004)
    /// instead of counting as a third person. `turn`: whether `WELCOME` may carry TURN
    /// credentials (the caller decides who gets them).
    pub(crate) fn join(
        self: &Arc<Self>,
        room_id: RoomId,
        session: Option<String>,
        turn: bool,
    ) -> Result<Membership, RoomFull> {
        let mut rooms = lock(&self.rooms);
        let places = self.settings.room_size;
        let room = rooms.entry(room_id.clone()).or_insert_with(|| Arc::new(Room::with_places(places))).clone();
        crate::server::metrics::active_rooms(rooms.len());
        let mut slots = lock(&room.slots);
        let returning = session.as_ref().and_then(|session| {
            slots.iter().position(|slot| slot.as_ref().is_some_and(|slot| slot.session.as_ref() == Some(session)))
        });
        let index = match returning {
            Some(index) => {
                let replaced = slots[index].take().expect("found above");
                replaced.mailbox.kick(Kick::REPLACED);
                index
            }
            None => slots.iter().position(Option::is_none).ok_or(RoomFull)?,
        };
        let peer_id = loop {
            let id = random_peer_id();
            if slots.iter().flatten().all(|slot| slot.peer_id != id) {
                break id;
            }
        };
        let mailbox = Arc::new(Mailbox { state: Mutex::default(), queued: self.queued.clone() });
        let public_id = session.as_deref().map(|session| public_id(&room_id, session));
        let me = Slot { peer_id, session, public_id, mailbox: mailbox.clone() };
        let peers: Vec<PeerInfo> = others(&slots, index).map(|(other, slot)| slot.info(Some(index > other))).collect();
        let arrivals: Vec<(usize, Message)> = others(&slots, index)
            .map(|(other, _)| (other, Message::PeerJoined(me.info(Some(other > index)))))
            .collect();
        slots[index] = Some(me);
        for (other, joined) in arrivals {
            self.deliver(&mut slots, other, &joined);
        }
        drop(slots);
        drop(rooms);
        self.peers.send_modify(|n| *n += 1);
        let first = peers.first();
        let welcome = Welcome {
            peer_id,
            peer_present: first.is_some(),
            // Alone, toward whoever comes next: they take the lowest free place, which is
            // below this one unless this one is the lowest.
            polite: first.map_or(index != 0, |peer| peer.polite == Some(true)),
            peer_public_id: first.and_then(|peer| peer.public_id.clone()),
            ice_servers: self.settings.ice.servers_for(peer_id, SystemTime::now(), turn),
            ice_transport_policy: self.settings.ice.transport_policy,
            peers,
        };
        Ok(Membership { hub: self.clone(), room_id, room, peer_id, welcome, mailbox })
    }

    /// Ends every connection with "going away"; [`Hub::closed`] then waits for them.
    pub(crate) fn shutdown(&self) {
        self.stopping.send_replace(true);
        for room in lock(&self.rooms).values() {
            for slot in lock(&room.slots).iter().flatten() {
                slot.mailbox.kick(Kick::SHUTDOWN);
            }
        }
    }

    /// Resolves once [`Hub::shutdown`] has been called.
    pub(crate) async fn stopping(&self) {
        let mut stopping = self.stopping.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }

    /// Resolves once no membership is left.
    pub(crate) async fn closed(&self) {
        let mut peers = self.peers.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = peers.wait_for(|n| *n == 0).await;
    }

    /// Whether a TURN server is configured to give credentials for.
    pub(crate) fn issues_turn_credentials(&self) -> bool {
        self.settings.ice.issues_turn_credentials()
    }

    #[cfg(test)]
    fn room_count(&self) -> usize {
        lock(&self.rooms).len()
    }

    pub(crate) fn peer_count(&self) -> usize {
        *self.peers.borrow()
    }

    fn deliver(&self, slots: &mut [Option<Slot>], index: usize, message: &Message) {
        let outbound = Outbound { frame: Frame::from(message.to_json()), relayed_at: None };
        self.deliver_frame(slots, index, outbound);
    }

    /// Queues a frame for the peer in `slots[index]`. A peer whose queue is full reads too
    /// slowly: it is evicted (so nothing more piles up for it) and told to close, and the others
    /// in the room hear that it left (any of them as full goes too).
    fn deliver_frame(&self, slots: &mut [Option<Slot>], index: usize, outbound: Outbound) {
        let Some(slot) = &slots[index] else { return };
        let HubSettings { outbox, queued_budget, .. } = self.settings;
        if slot.mailbox.push(outbound, outbox, queued_budget) {
            return;
        }
        let mut leaving = vec![index];
        while let Some(index) = leaving.pop() {
            let Some(evicted) = slots[index].take() else { continue };
            evicted.mailbox.kick(Kick::TOO_SLOW);
            if let Some(left_out) = SLOW_READER_LOG.allow(Instant::now()) {
                tracing::warn!(
                    peer = evicted.peer_id.0,
                    similar_left_out = left_out,
                    "dropping a peer that reads too slowly"
                );
            }
            let left = Frame::from(Message::PeerLeft(evicted.info(None)).to_json());
            for (other, slot) in others(slots, index) {
                if !slot.mailbox.push(Outbound { frame: left.clone(), relayed_at: None }, outbox, queued_budget) {
                    leaving.push(other);
                }
            }
        }
    }
}

impl Room {
    fn with_places(places: usize) -> Self {
        Self { slots: Mutex::new((0..places).map(|_| None).collect()) }
    }
}

impl Membership {
    /// Sends a frame, read at `received_at`, to the peer `to`, or without `to` to the only
    /// other person in the room. Without `to` and with no one else there, the frame is
    /// dropped: whoever comes next hears `WELCOME` first.
    pub(crate) fn relay(&self, frame: Frame, to: Option<PeerId>, received_at: Instant) -> Result<(), Misaddressed> {
        let mut slots = lock(&self.room.slots);
        let Some(me) = slots.iter().position(|s| s.as_ref().is_some_and(|s| s.peer_id == self.peer_id)) else {
            return Ok(()); // evicted: this connection is closing
        };
        let recipient = match to {
            Some(to) if to == self.peer_id => return Err(Misaddressed::ToSelf),
            Some(to) => others(&slots, me).find(|(_, slot)| slot.peer_id == to).ok_or(Misaddressed::NotHere(to.0))?.0,
            None => {
                let mut everyone = others(&slots, me);
                match (everyone.next(), everyone.next()) {
                    (None, _) => return Ok(()),
                    (Some((only, _)), None) => only,
                    (Some(_), Some(_)) => return Err(Misaddressed::Ambiguous),
                }
            }
        };
        self.hub.deliver_frame(&mut slots, recipient, Outbound { frame, relayed_at: Some(received_at) });
        Ok(())
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut rooms = lock(&self.hub.rooms);
        let mut slots = lock(&self.room.slots);
        // An evicted peer's slot is already empty (or, later, someone else's).
        if let Some(mine) = slots.iter().position(|s| s.as_ref().is_some_and(|s| s.peer_id == self.peer_id)) {
            let me = slots[mine].take().expect("found above");
            let left = Message::PeerLeft(me.info(None));
            let everyone: Vec<usize> = others(&slots, mine).map(|(other, _)| other).collect();
            for other in everyone {
                self.hub.deliver(&mut slots, other, &left);
            }
        }
        // Only this membership's own room: a connection that outlived its room (replaced, then
        // slow to close) must not remove a newer room of the same id.
        let mine = rooms.get(&self.room_id).is_some_and(|room| Arc::ptr_eq(room, &self.room));
        if mine && slots.iter().all(Option::is_none) {
            rooms.remove(&self.room_id);
            crate::server::metrics::active_rooms(rooms.len());
        }
        drop(slots);
        drop(rooms);
        self.hub.peers.send_modify(|n| *n -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(capacity: usize) -> Arc<Hub> {
        hub_with(capacity, 64 << 20)
    }

    fn hub_with(capacity: usize, queued_budget: usize) -> Arc<Hub> {
        hub_of(2, capacity, queued_budget)
    }

    fn hub_of(room_size: usize, capacity: usize, queued_budget: usize) -> Arc<Hub> {
        let ice = IceConfig {
            urls: vec![],
            turn_secret: None,
            credential_lifetime: std::time::Duration::from_secs(60),
            transport_policy: crate::protocol::IceTransportPolicy::All,
        };
        Hub::new(HubSettings { ice, room_size, outbox: Capacity { frames: capacity, bytes: 1 << 20 }, queued_budget })
    }

    /// `N` people joining room "g" of `hub`, one after another.
    fn group<const N: usize>(hub: &Arc<Hub>) -> [Membership; N] {
        std::array::from_fn(|_| hub.join(room("g"), None, false).unwrap())
    }

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).unwrap()
    }

    fn take_frame(m: &Membership) -> Option<Outbound> {
        m.mailbox.pop(&mut lock(&m.mailbox.state))
    }

    fn queued(m: &Membership) -> usize {
        lock(&m.mailbox.state).frames.len()
    }

    fn kick_of(m: &Membership) -> Option<Kick> {
        lock(&m.mailbox.state).kick
    }

    fn next(m: &Membership) -> Message {
        serde_json::from_str(&take_frame(m).expect("a frame is queued").frame).unwrap()
    }

    #[test]
    fn two_peers_get_opposite_roles_and_a_third_is_refused() {
        let hub = hub(8);
        let a = hub.join(room("r"), None, false).unwrap();
        let b = hub.join(room("r"), None, false).unwrap();
        assert!(!a.welcome.peer_present && b.welcome.peer_present);
        assert_ne!(a.welcome.polite, b.welcome.polite);
        assert!(matches!(hub.join(room("r"), None, false), Err(RoomFull)));
        // Another room is unaffected.
        assert!(hub.join(room("other"), None, false).is_ok());
    }

    #[test]
    fn relays_to_the_other_peer_and_announces_arrivals_and_departures() {
        let hub = hub(8);
        let a = hub.join(room("r"), None, false).unwrap();
        let b = hub.join(room("r"), None, false).unwrap();
        assert_eq!(
            next(&a),
            Message::PeerJoined(PeerInfo { peer_id: b.peer_id, polite: Some(false), public_id: None })
        );
        a.relay(Frame::from(r#"{"message_type":"BYE"}"#), None, Instant::now()).unwrap();
        assert_eq!(take_frame(&b).unwrap().frame.as_str(), r#"{"message_type":"BYE"}"#);
        assert!(take_frame(&a).is_none(), "a sender never hears its own frame");
        let b_id = b.peer_id;
        drop(b);
        assert_eq!(next(&a), Message::PeerLeft(PeerInfo { peer_id: b_id, polite: None, public_id: None }));
        // The freed place is taken by a newcomer, with the role the leaver had.
        let c = hub.join(room("r"), None, false).unwrap();
        assert!(c.welcome.polite && c.welcome.peer_present);
    }

    #[test]
    fn empty_rooms_are_forgotten() {
        let hub = hub(8);
        let a = hub.join(room("r"), None, false).unwrap();
        let b = hub.join(room("r"), None, false).unwrap();
        assert_eq!((hub.room_count(), hub.peer_count()), (1, 2));
        drop(a);
        drop(b);
        assert_eq!((hub.room_count(), hub.peer_count()), (0, 0));
    }

    #[test]
    fn a_slow_reader_is_evicted_instead_of_queueing_forever() {
        let hub = hub(4);
        let a = hub.join(room("r"), None, false).unwrap();
        let b = hub.join(room("r"), None, false).unwrap();
        let _ = take_frame(&a); // PEER_JOINED
        for _ in 0..5 {
            a.relay(Frame::from("{}"), None, Instant::now()).unwrap();
        }
        assert_eq!(kick_of(&b), Some(Kick::TOO_SLOW));
        assert_eq!(next(&a), Message::PeerLeft(PeerInfo { peer_id: b.peer_id, polite: None, public_id: None }));
        // Its queue is dropped with it (the kick comes before any frame), and nothing more is queued.
        assert_eq!(queued(&b), 0);
        a.relay(Frame::from("{}"), None, Instant::now()).unwrap();
        assert_eq!(queued(&b), 0);
    }

    #[test]
    fn past_the_servers_budget_a_reader_that_fell_behind_is_dropped_and_its_bytes_freed() {
        let kib = |n: usize| n * 1024;
        let hub = hub_with(100, kib(100)); // each may hold 1 MiB; behind past 64 KiB
        let a = hub.join(room("r"), None, false).unwrap();
        let b = hub.join(room("r"), None, false).unwrap();
        let c = hub.join(room("s"), None, false).unwrap();
        let d = hub.join(room("s"), None, false).unwrap();
        let _ = (take_frame(&a), take_frame(&c)); // PEER_JOINED
        let frame = || Frame::from("x".repeat(kib(40)));
        a.relay(frame(), None, Instant::now()).unwrap();
        c.relay(frame(), None, Instant::now()).unwrap();
        a.relay(frame(), None, Instant::now()).unwrap();
        assert_eq!((kick_of(&b), kick_of(&d)), (None, None), "over budget, but no one is behind yet");
        assert_eq!(hub.queued.load(Ordering::Relaxed), kib(120));
        c.relay(frame(), None, Instant::now()).unwrap();
        assert_eq!(kick_of(&d), None, "d had 40 KiB waiting: a reader keeping up");
        a.relay(frame(), None, Instant::now()).unwrap();
        assert_eq!(kick_of(&b), Some(Kick::TOO_SLOW), "b had 80 KiB waiting and the budget is spent");
        assert!(matches!(next(&a), Message::PeerLeft(_)));
        assert_eq!(hub.queued.load(Ordering::Relaxed), kib(80), "b's frames are gone, d's wait");
        drop((a, b, c, d));
        assert_eq!(hub.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_returning_session_takes_its_place_back_without_disturbing_the_other() {
        let hub = hub(8);
        let a = hub.join(room("r"), Some("alice".into()), false).unwrap();
        let old_b = hub.join(room("r"), Some("bob".into()), false).unwrap();
        let _ = take_frame(&a); // PEER_JOINED
        let new_b = hub.join(room("r"), Some("bob".into()), false).expect("not counted as a third person");
        assert_eq!(kick_of(&old_b), Some(Kick::REPLACED));
        assert_eq!(new_b.welcome.polite, old_b.welcome.polite, "same place, same role");
        assert_eq!(new_b.welcome.peer_public_id, Some(public_id(&room("r"), "alice")));
        let bob = Some(public_id(&room("r"), "bob"));
        assert_eq!(
            next(&a),
            Message::PeerJoined(PeerInfo { peer_id: new_b.peer_id, polite: Some(false), public_id: bob })
        );
        drop(old_b);
        assert!(take_frame(&a).is_none(), "the replaced connection's end is no departure");
        // A different session is still a third person.
        assert!(matches!(hub.join(room("r"), Some("carol".into()), false), Err(RoomFull)));
    }

    #[test]
    fn a_public_id_names_the_same_person_but_does_not_reveal_or_act_as_the_session() {
        let alice = public_id(&room("r"), "alice-session");
        assert_eq!(alice, public_id(&room("r"), "alice-session"), "stable across reconnects and servers");
        assert_ne!(alice, public_id(&room("r"), "bob-session"));
        assert_ne!(alice, public_id(&room("s"), "alice-session"), "bound to the room");
        assert!(!alice.contains("alice"));
        assert_eq!(alice.len(), 22, "128 bits");
        let logged = room_log_name(&room("r"));
        assert_eq!((logged.len(), logged == room_log_name(&room("r"))), (8, true));
        assert_ne!(logged, room_log_name(&room("s")));
        // It is a valid session string, but naming it takes nobody's place.
        let hub = hub(8);
        let a = hub.join(room("r"), Some("alice-session".into()), false).unwrap();
        let _b = hub.join(room("r"), Some("bob-session".into()), false).unwrap();
        assert!(matches!(hub.join(room("r"), Some(alice.clone()), false), Err(RoomFull)));
        assert_eq!(kick_of(&a), None);
    }

    #[test]
    fn a_connection_that_outlives_its_room_leaves_a_newer_room_of_the_same_id_alone() {
        let hub = hub(8);
        let stuck = hub.join(room("r"), Some("alice-0123456789ab".into()), false).unwrap();
        let back = hub.join(room("r"), Some("alice-0123456789ab".into()), false).unwrap();
        assert_eq!(kick_of(&stuck), Some(Kick::REPLACED));
        drop(back); // the room is empty and forgotten; `stuck` still holds it
        let carol = hub.join(room("r"), None, false).unwrap();
        drop(stuck); // the replaced connection finally ends
        let dave = hub.join(room("r"), None, false).unwrap();
        assert!(dave.welcome.peer_present, "Dave finds Carol");
        assert_eq!(
            next(&carol),
            Message::PeerJoined(PeerInfo { peer_id: dave.peer_id, polite: Some(false), public_id: None })
        );
        assert!(matches!(hub.join(room("r"), None, false), Err(RoomFull)), "no third person on the link");
        assert_eq!((hub.room_count(), hub.peer_count()), (1, 2));
    }

    #[tokio::test]
    async fn a_waiting_peer_wakes_for_a_frame_and_for_a_kick_which_overtakes_queued_frames() {
        let hub = hub(8);
        let a = hub.join(room("r"), None, false).unwrap();
        let b = hub.join(room("r"), None, false).unwrap();
        let _ = take_frame(&a); // PEER_JOINED
        let mailbox = b.mailbox.clone();
        let waiting = tokio::spawn(async move { mailbox.next().await });
        tokio::task::yield_now().await;
        a.relay(Frame::from("{}"), None, Instant::now()).unwrap();
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
        assert!(matches!(woken, Ok(Ok(Delivery::Write(outbound))) if outbound.frame.as_str() == "{}"));
        a.relay(Frame::from("{}"), None, Instant::now()).unwrap();
        let mailbox = b.mailbox.clone();
        let kicked = tokio::spawn(async move { mailbox.kicked().await });
        tokio::task::yield_now().await;
        hub.shutdown();
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), kicked).await;
        assert!(matches!(woken, Ok(Ok(Kick::SHUTDOWN))));
        assert!(matches!(b.mailbox.next().await, Delivery::Close(Kick::SHUTDOWN)));
    }

    #[test]
    fn shutdown_kicks_everyone() {
        let hub = hub(4);
        let a = hub.join(room("r"), None, false).unwrap();
        let b = hub.join(room("s"), None, false).unwrap();
        hub.shutdown();
        assert_eq!(kick_of(&a), Some(Kick::SHUTDOWN));
        assert_eq!(kick_of(&b), Some(Kick::SHUTDOWN));
    }

    #[test]
    fn in_a_room_of_four_every_pair_has_one_polite_side_and_a_fifth_is_refused() {
        let hub = hub_of(4, 16, 64 << 20);
        let people: Vec<Membership> = (0..4).map(|_| hub.join(room("group"), None, false).unwrap()).collect();
        assert!(matches!(hub.join(room("group"), None, false), Err(RoomFull)));
        for (i, person) in people.iter().enumerate() {
            // WELCOME lists everyone already there, in the order they came.
            let listed: Vec<PeerId> = person.welcome.peers.iter().map(|peer| peer.peer_id).collect();
            assert_eq!(listed, people[..i].iter().map(|p| p.peer_id).collect::<Vec<_>>());
            assert_eq!(person.welcome.peer_present, i > 0);
            // Everyone already there hears of each newcomer, with their own role toward them.
            let joined: Vec<PeerInfo> = (i + 1..4)
                .map(|_| match next(person) {
                    Message::PeerJoined(info) => info,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(
                joined.iter().map(|p| p.peer_id).collect::<Vec<_>>(),
                people[i + 1..].iter().map(|p| p.peer_id).collect::<Vec<_>>()
            );
            for (info, newcomer) in joined.iter().zip(&people[i + 1..]) {
                let their_view = newcomer.welcome.peers.iter().find(|p| p.peer_id == person.peer_id).unwrap();
                assert_eq!(info.polite.map(|polite| !polite), their_view.polite, "one polite side per pair");
            }
        }
        // The fields a two-person client reads agree with the first pair's roles.
        assert_eq!(people[1].welcome.polite, people[1].welcome.peers[0].polite.unwrap());
        assert_eq!(people[1].welcome.peer_public_id, None);
    }

    #[test]
    fn a_frame_goes_to_whom_it_names_and_without_a_name_only_to_an_only_other() {
        let hub = hub_of(4, 16, 64 << 20);
        let a = hub.join(room("g"), None, false).unwrap();
        let b = hub.join(room("g"), None, false).unwrap();
        assert!(matches!(next(&a), Message::PeerJoined(_)));
        // Two people: no name needed, as in the classic protocol.
        a.relay(Frame::from("one"), None, Instant::now()).unwrap();
        assert_eq!(take_frame(&b).unwrap().frame.as_str(), "one");
        let c = hub.join(room("g"), None, false).unwrap();
        for m in [&a, &b] {
            assert!(matches!(next(m), Message::PeerJoined(_)));
        }
        assert_eq!(a.relay(Frame::from("?"), None, Instant::now()), Err(Misaddressed::Ambiguous));
        a.relay(Frame::from("to c"), Some(c.peer_id), Instant::now()).unwrap();
        assert_eq!(take_frame(&c).unwrap().frame.as_str(), "to c");
        assert!(take_frame(&b).is_none(), "only the one named hears it");
        assert_eq!(a.relay(Frame::from("x"), Some(a.peer_id), Instant::now()), Err(Misaddressed::ToSelf));
        let stranger = PeerId(a.peer_id.0 ^ b.peer_id.0 ^ c.peer_id.0 ^ 1);
        assert_eq!(a.relay(Frame::from("x"), Some(stranger), Instant::now()), Err(Misaddressed::NotHere(stranger.0)));
        assert!(take_frame(&a).is_none() && take_frame(&b).is_none() && take_frame(&c).is_none());
    }

    #[test]
    fn whoever_leaves_a_group_is_announced_to_all_and_frees_a_place() {
        let hub = hub_of(3, 16, 64 << 20);
        let [a, b, c] = group(&hub);
        for _ in 0..2 {
            next(&a);
        }
        next(&b);
        let b_id = b.peer_id;
        drop(b);
        for m in [&a, &c] {
            assert_eq!(next(m), Message::PeerLeft(PeerInfo { peer_id: b_id, polite: None, public_id: None }));
        }
        // The newcomer takes the freed place, between the two: polite toward a, impolite toward c.
        let d = hub.join(room("g"), None, false).unwrap();
        let roles: Vec<_> = d.welcome.peers.iter().map(|p| (p.peer_id, p.polite)).collect();
        assert_eq!(roles, [(a.peer_id, Some(true)), (c.peer_id, Some(false))]);
        assert!(matches!(hub.join(room("g"), None, false), Err(RoomFull)));
    }

    #[test]
    fn in_a_group_a_slow_reader_is_announced_to_all_and_one_as_full_goes_too() {
        let hub = hub_of(4, 4, 64 << 20);
        let [a, b, c, d] = group(&hub);
        // a and b read what they got; c and d read nothing.
        for _ in 0..3 {
            next(&a);
        }
        next(&b);
        next(&b);
        // d's queue (capacity 4) fills up, without a frame refused yet.
        for _ in 0..4 {
            a.relay(Frame::from("{}"), Some(d.peer_id), Instant::now()).unwrap();
        }
        assert_eq!((queued(&d), kick_of(&d)), (4, None));
        // c's holds d's arrival: three more fill it, the next evicts c. Its PEER_LEFT does not
        // fit in d's full queue, so d goes too; a and b hear of both.
        for _ in 0..4 {
            a.relay(Frame::from("{}"), Some(c.peer_id), Instant::now()).unwrap();
        }
        assert_eq!(kick_of(&c), Some(Kick::TOO_SLOW));
        assert_eq!(kick_of(&d), Some(Kick::TOO_SLOW));
        for m in [&a, &b] {
            let mut left = [next(m), next(m)].map(|message| match message {
                Message::PeerLeft(info) => info.peer_id,
                other => panic!("{other:?}"),
            });
            left.sort_by_key(|id| id.0);
            let mut expected = [c.peer_id, d.peer_id];
            expected.sort_by_key(|id| id.0);
            assert_eq!(left, expected);
            assert_eq!(kick_of(m), None);
        }
    }
}
