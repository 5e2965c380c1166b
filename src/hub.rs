//! The signaling hub: rooms of two, who is in which, and routing a frame to the other peer.
//!
//! No HTTP and no sockets here: a connection joins a room and gets a [`Membership`], through
//! which it relays frames and from which it reads what the other peer (or the hub) sends it.
//! Relaying takes only the room's own lock, so one room never waits on another; the map of
//! rooms is locked only to join and to leave.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, watch};

use crate::{
    protocol::{close_code, IceServer, Message, PeerId, PeerInfo, Welcome},
    room::RoomId,
};

/// A text frame on its way to a peer. Relayed frames are the sender's bytes, never re-encoded.
pub type Frame = Utf8Bytes;

/// Why the hub ended a peer's connection: the WebSocket close code and reason to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kick {
    pub code: u16,
    pub reason: &'static str,
}

impl Kick {
    pub const SHUTDOWN: Kick = Kick { code: close_code::GOING_AWAY, reason: "server shutting down" };
    pub const TOO_SLOW: Kick = Kick { code: close_code::TOO_SLOW, reason: "outbound queue overflowed" };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the room already holds two people")]
pub struct RoomFull;

pub struct HubSettings {
    pub ice_servers: Vec<IceServer>,
    /// Frames that may wait for one slow reader before it is dropped.
    pub outbox_capacity: usize,
}

pub struct Hub {
    rooms: Mutex<HashMap<RoomId, Arc<Room>>>,
    next_peer_id: AtomicU64,
    /// Number of memberships alive, so shutdown can wait for every socket to close.
    peers: watch::Sender<usize>,
    settings: HubSettings,
}

/// Two slots; slot 0 is the impolite peer and slot 1 the polite one, so roles always differ.
#[derive(Default)]
struct Room {
    slots: Mutex<[Option<Slot>; 2]>,
}

struct Slot {
    peer_id: PeerId,
    outbox: mpsc::Sender<Frame>,
    kick: watch::Sender<Option<Kick>>,
}

/// A peer's place in a room; leaving the room is dropping it.
pub struct Membership {
    hub: Arc<Hub>,
    room_id: RoomId,
    room: Arc<Room>,
    pub peer_id: PeerId,
    pub welcome: Welcome,
    /// Frames for this peer: relayed from the other one, or sent by the hub.
    pub outbox: mpsc::Receiver<Frame>,
    /// Set when the hub ends this connection (shutdown, or the outbox overflowed).
    pub kicked: watch::Receiver<Option<Kick>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    pub fn new(settings: HubSettings) -> Arc<Self> {
        Arc::new(Self {
            rooms: Mutex::default(),
            next_peer_id: AtomicU64::new(1),
            peers: watch::Sender::new(0),
            settings,
        })
    }

    pub fn join(self: &Arc<Self>, room_id: RoomId) -> Result<Membership, RoomFull> {
        let mut rooms = lock(&self.rooms);
        let room = rooms.entry(room_id.clone()).or_default().clone();
        let mut slots = lock(&room.slots);
        let index = slots.iter().position(Option::is_none).ok_or(RoomFull)?;
        let peer_id = PeerId(self.next_peer_id.fetch_add(1, Ordering::Relaxed));
        let (outbox_tx, outbox) = mpsc::channel(self.settings.outbox_capacity);
        let (kick, kicked) = watch::channel(None);
        slots[index] = Some(Slot { peer_id, outbox: outbox_tx, kick });
        let other = 1 - index;
        let peer_present = slots[other].is_some();
        if peer_present {
            deliver(&mut slots, other, &Message::PeerJoined(PeerInfo { peer_id }));
        }
        drop(slots);
        drop(rooms);
        self.peers.send_modify(|n| *n += 1);
        let welcome = Welcome {
            peer_id,
            peer_present,
            polite: index == 1,
            ice_servers: self.settings.ice_servers.clone(),
        };
        Ok(Membership { hub: self.clone(), room_id, room, peer_id, welcome, outbox, kicked })
    }

    /// Ends every connection with "going away"; [`Hub::closed`] then waits for them.
    pub fn shutdown(&self) {
        for room in lock(&self.rooms).values() {
            for slot in lock(&room.slots).iter().flatten() {
                slot.kick.send_replace(Some(Kick::SHUTDOWN));
            }
        }
    }

    /// Resolves once no membership is left.
    pub async fn closed(&self) {
        let mut peers = self.peers.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = peers.wait_for(|n| *n == 0).await;
    }

    pub fn room_count(&self) -> usize {
        lock(&self.rooms).len()
    }

    pub fn peer_count(&self) -> usize {
        *self.peers.borrow()
    }
}

impl Membership {
    /// Sends a frame to the other peer of the room, if there is one.
    pub fn relay(&self, frame: Frame) {
        let mut slots = lock(&self.room.slots);
        if let Some(other) = slots.iter().position(|s| s.as_ref().is_some_and(|s| s.peer_id != self.peer_id)) {
            deliver_frame(&mut slots, other, frame);
        }
    }

    pub fn room_id(&self) -> &RoomId {
        &self.room_id
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut rooms = lock(&self.hub.rooms);
        let mut slots = lock(&self.room.slots);
        // An evicted peer's slot is already empty (or, later, someone else's).
        if let Some(mine) = slots.iter().position(|s| s.as_ref().is_some_and(|s| s.peer_id == self.peer_id)) {
            slots[mine] = None;
            if slots[1 - mine].is_some() {
                deliver(&mut slots, 1 - mine, &Message::PeerLeft(PeerInfo { peer_id: self.peer_id }));
            }
        }
        if slots.iter().all(Option::is_none) {
            rooms.remove(&self.room_id);
        }
        drop(slots);
        drop(rooms);
        self.hub.peers.send_modify(|n| *n -= 1);
    }
}

fn deliver(slots: &mut [Option<Slot>; 2], index: usize, message: &Message) {
    deliver_frame(slots, index, Frame::from(message.to_json()));
}

/// Queues a frame for the peer in `slots[index]`. A peer whose queue is full reads too slowly:
/// it is evicted (so nothing more piles up for it) and told to close, and the one left in the
/// room hears that it left.
fn deliver_frame(slots: &mut [Option<Slot>; 2], index: usize, frame: Frame) {
    let Some(slot) = &slots[index] else { return };
    match slot.outbox.try_send(frame) {
        Ok(()) => {}
        // Its connection is ending already; its own Drop tells the other peer.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            let evicted = slots[index].take().expect("checked above");
            evicted.kick.send_replace(Some(Kick::TOO_SLOW));
            tracing::warn!(peer = evicted.peer_id.0, "dropping a peer that reads too slowly");
            if let Some(other) = &slots[1 - index] {
                let left = Message::PeerLeft(PeerInfo { peer_id: evicted.peer_id }).to_json();
                // If the other one is full too, it is as slow, and goes as well.
                if let Err(mpsc::error::TrySendError::Full(_)) = other.outbox.try_send(Frame::from(left)) {
                    if let Some(other) = slots[1 - index].take() {
                        other.kick.send_replace(Some(Kick::TOO_SLOW));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(capacity: usize) -> Arc<Hub> {
        Hub::new(HubSettings { ice_servers: vec![], outbox_capacity: capacity })
    }

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).unwrap()
    }

    fn next(m: &mut Membership) -> Message {
        serde_json::from_str(&m.outbox.try_recv().expect("a frame is queued")).unwrap()
    }

    #[test]
    fn two_peers_get_opposite_roles_and_a_third_is_refused() {
        let hub = hub(8);
        let a = hub.join(room("r")).unwrap();
        let b = hub.join(room("r")).unwrap();
        assert!(!a.welcome.peer_present && b.welcome.peer_present);
        assert_ne!(a.welcome.polite, b.welcome.polite);
        assert!(matches!(hub.join(room("r")), Err(RoomFull)));
        // Another room is unaffected.
        assert!(hub.join(room("other")).is_ok());
    }

    #[test]
    fn relays_to_the_other_peer_and_announces_arrivals_and_departures() {
        let hub = hub(8);
        let mut a = hub.join(room("r")).unwrap();
        let mut b = hub.join(room("r")).unwrap();
        assert_eq!(next(&mut a), Message::PeerJoined(PeerInfo { peer_id: b.peer_id }));
        a.relay(Frame::from(r#"{"message_type":"BYE"}"#));
        assert_eq!(b.outbox.try_recv().unwrap().as_str(), r#"{"message_type":"BYE"}"#);
        assert!(a.outbox.try_recv().is_err(), "a sender never hears its own frame");
        let b_id = b.peer_id;
        drop(b);
        assert_eq!(next(&mut a), Message::PeerLeft(PeerInfo { peer_id: b_id }));
        // The freed place is taken by a newcomer, with the role the leaver had.
        let c = hub.join(room("r")).unwrap();
        assert!(c.welcome.polite && c.welcome.peer_present);
    }

    #[test]
    fn empty_rooms_are_forgotten() {
        let hub = hub(8);
        let a = hub.join(room("r")).unwrap();
        let b = hub.join(room("r")).unwrap();
        assert_eq!((hub.room_count(), hub.peer_count()), (1, 2));
        drop(a);
        drop(b);
        assert_eq!((hub.room_count(), hub.peer_count()), (0, 0));
    }

    #[test]
    fn a_slow_reader_is_evicted_instead_of_queueing_forever() {
        let hub = hub(4);
        let mut a = hub.join(room("r")).unwrap();
        let b = hub.join(room("r")).unwrap();
        let _ = a.outbox.try_recv(); // PEER_JOINED
        for _ in 0..5 {
            a.relay(Frame::from("{}"));
        }
        assert_eq!(*b.kicked.borrow(), Some(Kick::TOO_SLOW));
        assert_eq!(next(&mut a), Message::PeerLeft(PeerInfo { peer_id: b.peer_id }));
        // Nothing more is queued for the evicted peer.
        a.relay(Frame::from("{}"));
        assert_eq!(b.outbox.len(), 4);
    }

    #[test]
    fn shutdown_kicks_everyone() {
        let hub = hub(4);
        let a = hub.join(room("r")).unwrap();
        let b = hub.join(room("s")).unwrap();
        hub.shutdown();
        assert_eq!(*a.kicked.borrow(), Some(Kick::SHUTDOWN));
        assert_eq!(*b.kicked.borrow(), Some(Kick::SHUTDOWN));
    }
}
