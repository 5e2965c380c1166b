//! The signaling hub: rooms of a few people, who is in which, and routing a frame to the
//! person it is for.
//!
//! No HTTP and no sockets here: a connection joins a room and gets a [`Membership`], through
//! which it relays frames and from whose [`Mailbox`] it reads what the others, or the hub,
//! send it. Relaying takes only the room's own lock, so one room never waits on another; the
//! map of rooms is locked only to join and to leave.
//!
//! By default this process alone decides who has which place. With `--redis`, instances share
//! rooms: Redis decides places and carries frames between instances (`shared`), and a room
//! here holds this instance's people and, as [`Seat::There`], those on other instances. Either
//! way a connection sees the same hub.
//!
//! A connection waiting to join (`join=later`) holds no place, but sees who is in the room: a
//! [`Waiting`] keeps the room here (with Redis, this instance then hears of its changes too)
//! and gets its `PRESENT` through a watch channel, which keeps only the latest.
//!
//! - `mailbox`: one connection's queue of frames, and its kick.
//! - `shared`: the link to Redis: its scripts, its channel messages and the tasks that drive it.
//! - `media`: where a room's media goes off the mesh (with Redis, its owner instance's
//!   forwarding unit), and the SDP the owner takes for people on other instances.

mod mailbox;
mod media;
mod shared;

use std::{
    collections::HashMap,
    future::Future,
    sync::{atomic::AtomicUsize, Arc, Mutex, MutexGuard},
    time::{Instant, SystemTime},
};

use tokio::sync::{oneshot, watch};

use self::{
    mailbox::Overflow,
    shared::{Carried, Link, Remote, Snapshot},
};
pub(crate) use self::{
    mailbox::{Delivery, Frame, Kick, Mailbox, Outbound, Source, STALL},
    media::{MediaHome, RemoteSfu},
    shared::{Owner, RedisSettings},
};
use crate::{
    protocol::{MediaRoute, Message, PeerId, PeerInfo, Person, Present, RouteChange, SessionDescription, Welcome},
    room::RoomId,
    server::config::{MediaMode, MESH_MOVE_AT},
    server::ice::IceConfig,
    server::limits::LogThrottle,
    server::sfu::sockets::Sfu,
};

/// Slow readers, logged a few a second at most: a client can make itself one at will.
static SLOW_READER_LOG: LogThrottle = LogThrottle::new();

/// Why a connection gets no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("the room is full")]
    Full,
    /// Rooms are shared through Redis, and Redis does not answer.
    #[error("the server cannot reach the others' servers; try again")]
    Unavailable,
    /// Redis lost the room, and the instances of its people have not put it back yet.
    #[error("the server is putting this call back together; try again")]
    Restoring,
}

/// Why a relayed frame was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unsent {
    #[error(transparent)]
    Misaddressed(#[from] Misaddressed),
    #[error(transparent)]
    Busy(#[from] Busy),
}

/// The recipient reads, but has as much from this sender waiting as one sender may fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too much is waiting for that person; slow down")]
pub(crate) struct Busy;

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
    /// How rooms' media travels: what `WELCOME` tells each browser, and when a room moves.
    pub(crate) media: MediaMode,
    /// This instance's forwarding unit (`--media sfu` or `auto`).
    pub(crate) sfu: Option<Sfu>,
    /// How many people a room holds.
    pub(crate) room_size: usize,
    /// What may wait for one slow reader before it is dropped: frames, and their bytes.
    pub(crate) outbox: Capacity,
    /// Bytes that may wait for all readers together; past it, a reader that has fallen
    /// behind (more than a sixteenth of its capacity waiting) is dropped rather than queue more.
    /// With Redis, as much again may wait for it.
    pub(crate) queued_budget: usize,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Capacity {
    pub(crate) frames: usize,
    pub(crate) bytes: usize,
}

pub(crate) struct Hub {
    rooms: Mutex<HashMap<RoomKey, Arc<Room>>>,
    /// Number of memberships alive, so shutdown can wait for every socket to close.
    peers: watch::Sender<usize>,
    /// Bytes of frames waiting in every mailbox.
    queued: Arc<AtomicUsize>,
    /// Set at shutdown, for connections that are not in a room (yet) to close too.
    stopping: watch::Sender<bool>,
    settings: HubSettings,
    /// With `--redis`: rooms shared with other instances.
    shared: Option<Link>,
}

/// How a room is known outside this process (in Redis): a one-way hash of its id, which is
/// the secret of the call link.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RoomKey(String);

impl RoomKey {
    fn of(room: &RoomId) -> RoomKey {
        RoomKey(one_way("duo room key", &[room.as_str()], 16))
    }
}

struct Room {
    places: Mutex<Places>,
}

/// A place per person. In each pair, the one in the lower place is the impolite side of
/// perfect negotiation and the other the polite one, so every pair has one of each; a newcomer
/// takes the lowest free place.
struct Places {
    key: RoomKey,
    seats: Vec<Place>,
    /// Joins waiting for Redis: the room stays, to hear of changes meanwhile.
    joining: usize,
    /// Connections waiting to join ([`Waiting`]): the room stays, for them to see who is in it.
    watching: usize,
    /// `PRESENT` for them: made for the first, dropped with the last (most rooms never need it).
    present: Option<watch::Sender<Frame>>,
    /// How the room's media travels now: under `--media auto`, through the server from its
    /// fifth person until it empties.
    route: MediaRoute,
    /// With Redis: the instance whose forwarding unit carries the room's media, once it does.
    media: Option<Owner>,
    /// As that owner: the stand-ins holding a place on this unit for people on other instances.
    hosted: HashMap<PeerId, tokio::sync::mpsc::UnboundedSender<SessionDescription>>,
}

#[derive(Default)]
struct Place {
    /// With Redis, the version of the room when this place last changed (0 without).
    ver: u64,
    seat: Option<Seat>,
}

enum Seat {
    /// Someone connected to this process.
    Here(Slot),
    /// Someone on another instance (with `--redis`).
    There(Remote),
}

struct Slot {
    peer_id: PeerId,
    /// What the others know this person by: [`public_id`] of the session. The session, a
    /// reconnect credential, is never kept.
    public_id: Option<String>,
    /// Their display name, cleaned: for those waiting to join.
    name: Option<String>,
    mailbox: Arc<Mailbox>,
}

impl Seat {
    fn peer_id(&self) -> PeerId {
        match self {
            Seat::Here(slot) => slot.peer_id,
            Seat::There(remote) => remote.peer_id,
        }
    }

    fn public_id(&self) -> Option<&str> {
        match self {
            Seat::Here(slot) => slot.public_id.as_deref(),
            Seat::There(remote) => remote.public_id.as_deref(),
        }
    }

    fn name(&self) -> Option<&str> {
        match self {
            Seat::Here(slot) => slot.name.as_deref(),
            Seat::There(remote) => remote.name.as_deref(),
        }
    }

    /// How others see this person; `polite`: the receiver's role toward them, where it matters.
    fn info(&self, polite: Option<bool>) -> PeerInfo {
        PeerInfo { peer_id: self.peer_id(), polite, public_id: self.public_id().map(str::to_owned) }
    }

    fn here(&self) -> Option<&Slot> {
        match self {
            Seat::Here(slot) => Some(slot),
            Seat::There(_) => None,
        }
    }
}

/// The others in the room, by place, but the one in `me`.
fn others(seats: &[Place], me: usize) -> impl Iterator<Item = (usize, &Seat)> {
    seats
        .iter()
        .enumerate()
        .filter(move |(index, _)| *index != me)
        .filter_map(|(index, place)| Some((index, place.seat.as_ref()?)))
}

/// The place of this process's person with `peer_id`.
fn place_of(seats: &[Place], peer_id: PeerId) -> Option<usize> {
    seats.iter().position(|place| place.seat.as_ref().and_then(Seat::here).is_some_and(|slot| slot.peer_id == peer_id))
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

/// A peer's place in a room; leaving the room is dropping it.
pub(crate) struct Membership {
    hub: Arc<Hub>,
    room: Arc<Room>,
    pub(crate) peer_id: PeerId,
    pub(crate) welcome: Welcome,
    /// Frames for this peer (relayed from the others, or sent by the hub), and its kick.
    pub(crate) mailbox: Arc<Mailbox>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The outcome of [`Hub::join`]: decided at once by this process, or later by Redis.
pub(crate) enum Joining {
    Now(Result<Membership, Refusal>),
    Later(std::pin::Pin<Box<dyn Future<Output = Result<Membership, Refusal>> + Send>>),
}

/// A join waiting for Redis: keeps its room here, to hear of changes meanwhile.
pub(crate) struct Pending {
    hub: Arc<Hub>,
    room: Arc<Room>,
    key: RoomKey,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut rooms = lock(&self.hub.rooms);
        let mut places = lock(&self.room.places);
        places.joining -= 1;
        self.hub.forget_if_unused(&mut rooms, &self.room, &places);
    }
}

impl Hub {
    /// A hub deciding places itself, or with `redis`, sharing rooms with other instances.
    /// Needs a Tokio runtime with Redis (it starts the link's tasks).
    pub(crate) fn new(settings: HubSettings, redis: Option<&RedisSettings>) -> redis::RedisResult<Arc<Self>> {
        let (shared, driver) = match redis {
            Some(redis) => {
                Link::connect(redis, settings.queued_budget).map(|(link, driver)| (Some(link), Some(driver)))?
            }
            None => (None, None),
        };
        let hub = Arc::new(Self {
            rooms: Mutex::default(),
            peers: watch::Sender::new(0),
            queued: Arc::default(),
            stopping: watch::Sender::new(false),
            settings,
            shared,
        });
        if let Some(driver) = driver {
            driver.spawn(Arc::downgrade(&hub));
        }
        Ok(hub)
    }

    /// Joins `room_id`. A connection naming the session of someone already in the room is that
    /// person reconnecting: it takes their place (the old connection is closed with 4004)
    /// instead of counting as one more. `turn`: whether `WELCOME` may carry TURN credentials
    /// (the caller decides who gets them). `name`: the display name, cleaned.
    pub(crate) fn join(
        self: &Arc<Self>,
        room_id: RoomId,
        session: Option<String>,
        turn: bool,
        name: Option<String>,
    ) -> Joining {
        let public_id = session.map(|session| public_id(&room_id, &session));
        let key = RoomKey::of(&room_id);
        let Some(link) = &self.shared else {
            return Joining::Now(self.join_here(key, public_id, name, turn));
        };
        let pending = self.pending(key);
        let (reply, answer) = oneshot::channel();
        link.join(shared::Join { pending, peer_id: random_peer_id(), public_id, name, turn, reply });
        Joining::Later(Box::pin(async move {
            match tokio::time::timeout(shared::JOIN_TIMEOUT, answer).await {
                Ok(Ok(result)) => result,
                _ => Err(Refusal::Unavailable),
            }
        }))
    }

    /// Decides the place here: without Redis.
    fn join_here(
        self: &Arc<Self>,
        key: RoomKey,
        public_id: Option<String>,
        name: Option<String>,
        turn: bool,
    ) -> Result<Membership, Refusal> {
        let mut rooms = lock(&self.rooms);
        let room = self.room_for(&mut rooms, key);
        let mut places = lock(&room.places);
        let returning = public_id.as_deref().and_then(|public_id| {
            places
                .seats
                .iter()
                .position(|place| place.seat.as_ref().is_some_and(|seat| seat.public_id() == Some(public_id)))
        });
        let index =
            returning.or_else(|| places.seats.iter().position(|place| place.seat.is_none())).ok_or(Refusal::Full)?;
        let peer_id = loop {
            let id = random_peer_id();
            if places.seats.iter().filter_map(|place| place.seat.as_ref()).all(|seat| seat.peer_id() != id) {
                break id;
            }
        };
        drop(rooms);
        Ok(self.seat(&room, &mut places, index, 0, peer_id, public_id, name, turn))
    }

    /// Registers a join about to be sent to Redis.
    fn pending(self: &Arc<Self>, key: RoomKey) -> Pending {
        let mut rooms = lock(&self.rooms);
        let room = self.room_for(&mut rooms, key.clone());
        // Counted while the map is locked: a room found unused meanwhile would be forgotten.
        lock(&room.places).joining += 1;
        Pending { hub: self.clone(), room, key }
    }

    /// A connection waiting to join `room_id`: it sees who is in the room until it is dropped.
    pub(crate) fn wait(self: &Arc<Self>, room_id: &RoomId) -> Waiting {
        let mut rooms = lock(&self.rooms);
        let room = self.room_for(&mut rooms, RoomKey::of(room_id));
        let mut places = lock(&room.places);
        places.watching += 1;
        if let (1, Some(link)) = (places.watching, &self.shared) {
            // The room may have no one here: this instance must hear of its changes itself.
            link.watch(&places.key, true);
        }
        let present = places.present.get_or_insert_with(|| watch::Sender::new(Frame::default())).subscribe();
        // (A new one holds nothing yet.)
        places.publish();
        drop(places);
        Waiting { hub: self.clone(), room, present }
    }

    /// The room `key`, made if this process has none yet.
    fn room_for(&self, rooms: &mut HashMap<RoomKey, Arc<Room>>, key: RoomKey) -> Arc<Room> {
        let room = rooms.entry(key.clone()).or_insert_with(|| Room::new(key, self.settings.room_size)).clone();
        crate::server::metrics::active_rooms(rooms.len());
        room
    }

    /// Seats a person whose place Redis gave them: the room first takes in what Redis has.
    fn seat_joined(
        self: &Arc<Self>,
        join: &shared::Join,
        index: usize,
        snapshot: &Snapshot,
    ) -> Result<Membership, Refusal> {
        let room = join.pending.room.clone();
        let mut places = lock(&room.places);
        self.take_in(&mut places, snapshot, Some(index));
        if places.seats.get(index).is_none_or(|place| place.ver > snapshot.ver) {
            // Someone took this place again since: this join is already undone.
            return Err(Refusal::Unavailable);
        }
        let (peer_id, public_id, name) = (join.peer_id, join.public_id.clone(), join.name.clone());
        Ok(self.seat(&room, &mut places, index, snapshot.ver, peer_id, public_id, name, join.turn))
    }

    /// Puts this process's person at `index`, tells the others and welcomes them.
    #[allow(clippy::too_many_arguments)]
    fn seat(
        self: &Arc<Self>,
        room: &Arc<Room>,
        places: &mut Places,
        index: usize,
        ver: u64,
        peer_id: PeerId,
        public_id: Option<String>,
        name: Option<String>,
        turn: bool,
    ) -> Membership {
        let mailbox = Arc::new(Mailbox::new(self.queued.clone(), Instant::now()));
        if *self.stopping.borrow() {
            // Joined through Redis while the server began to shut down.
            mailbox.kick(Kick::SHUTDOWN);
        }
        let slot = Slot { peer_id, public_id, name, mailbox: mailbox.clone() };
        let old = places.seats[index].seat.replace(Seat::Here(slot));
        places.seats[index].ver = ver;
        self.route(places, index);
        self.announce(places, index, old);
        places.publish();
        let peers: Vec<PeerInfo> =
            others(&places.seats, index).map(|(other, seat)| seat.info(Some(index > other))).collect();
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
            media: places.route,
        };
        Membership { hub: self.clone(), room: room.clone(), peer_id, welcome, mailbox }
    }

    /// The room's media route once the person at `index` has joined: a room that was empty
    /// starts as `--media` says; under `auto`, one of more than [`MESH_MOVE_AT`] moves to the
    /// server, and everyone already there is told so before they hear of the newcomer (who is
    /// then met on the server, not called browser to browser).
    /// With Redis, the scripts decide ([`Hub::set_media`]).
    fn route(&self, places: &mut Places, index: usize) {
        if self.shared.is_some() {
            return;
        }
        let seated = places.seats.iter().filter(|place| place.seat.is_some()).count();
        let moves = match self.settings.media {
            MediaMode::Mesh => false,
            MediaMode::Sfu => true,
            MediaMode::Auto => seated > MESH_MOVE_AT,
        };
        if seated == 1 {
            places.route = if moves { MediaRoute::Sfu } else { MediaRoute::Mesh };
        } else if moves && places.route == MediaRoute::Mesh {
            places.route = MediaRoute::Sfu;
            crate::server::metrics::room_moved();
            self.tell(places, index, |_| Message::MediaRoute(RouteChange { media: MediaRoute::Sfu, reconnect: false }));
        }
    }

    /// Tells this process's people in the room what changed at `index` (it held `old`), and
    /// closes the connection of someone here who lost the place.
    fn announce(&self, places: &mut Places, index: usize, old: Option<Seat>) {
        let new = places.seats[index].seat.as_ref();
        if let (Some(old), Some(new)) = (&old, new) {
            if old.peer_id() == new.peer_id() {
                return;
            }
        }
        let returning =
            old.as_ref().and_then(Seat::public_id).is_some_and(|old| new.and_then(Seat::public_id) == Some(old));
        let joined = new.map(|new| new.info(None));
        if let Some(old) = old {
            if let Seat::Here(slot) = &old {
                slot.mailbox.kick(if returning { Kick::REPLACED } else { Kick::LOST });
            }
            if !returning {
                self.tell(places, index, |_| Message::PeerLeft(old.info(None)));
            }
        }
        if let Some(info) = joined {
            // Each hears the newcomer with their own role toward them.
            self.tell(places, index, |other| {
                Message::PeerJoined(PeerInfo { polite: Some(other > index), ..info.clone() })
            });
        }
    }

    /// Sends each of this process's people in the room but the one at `about` a message.
    fn tell(&self, places: &mut Places, about: usize, message: impl Fn(usize) -> Message) {
        let here: Vec<usize> =
            others(&places.seats, about).filter(|(_, seat)| seat.here().is_some()).map(|(i, _)| i).collect();
        for other in here {
            let outbound =
                Outbound { frame: Frame::from(message(other).to_json()), relayed_at: None, from: Source::Hub };
            // The hub's own frames are never refused: only a reader that stopped reading.
            let _ = self.deliver_frame(places, other, outbound, Instant::now());
        }
    }

    /// Takes in a room as Redis has it: every place not changed since (here, by a newer change).
    /// `joining`: the place of the person whose join this snapshot answers.
    fn take_in(&self, places: &mut Places, snapshot: &Snapshot, joining: Option<usize>) {
        places.grow(snapshot.size);
        self.set_media(places, snapshot.media.clone());
        let listed: HashMap<usize, &Remote> = snapshot.places.iter().map(|(i, remote)| (*i, remote)).collect();
        for index in 0..places.seats.len() {
            if Some(index) != joining {
                self.change(places, index, snapshot.ver, listed.get(&index).copied());
            }
        }
        if joining.is_none() {
            self.forget_media_if_empty(places);
        }
        places.publish();
    }

    /// Applies a place's content as Redis has it at `ver`, unless the place changed since.
    fn change(&self, places: &mut Places, index: usize, ver: u64, content: Option<&Remote>) {
        places.grow(index + 1);
        let place = &mut places.seats[index];
        if place.ver >= ver {
            return;
        }
        place.ver = ver;
        // Content naming one of this process's people: here already; or one it does not have
        // (a join whose answer was lost, someone put back by another instance after they left
        // here), which is no one, and is taken out of Redis too.
        let instance = self.shared.as_ref().map(|link| &link.instance);
        let mine = content.is_some_and(|remote| Some(&remote.instance) == instance);
        let here =
            matches!((&place.seat, content), (Some(Seat::Here(slot)), Some(remote)) if slot.peer_id == remote.peer_id);
        if let (true, false, Some(link), Some(stray)) = (mine, here, &self.shared, content) {
            link.leave(&places.key, stray.peer_id);
        }
        let place = &mut places.seats[index];
        let unchanged = match (&place.seat, content) {
            (Some(seat), Some(remote)) => seat.peer_id() == remote.peer_id,
            (None, content) => content.is_none() || mine,
            (Some(_), None) => false,
        };
        if unchanged {
            // The same person, perhaps under a new name.
            if let (Some(Seat::There(there)), Some(remote)) = (&mut place.seat, content) {
                there.clone_from(remote);
            }
            return;
        }
        let old =
            std::mem::replace(&mut place.seat, content.filter(|_| !mine).map(|remote| Seat::There(remote.clone())));
        if let Some(Seat::There(gone)) = &old {
            // Their place on this unit, if this instance carries the room's media, goes too.
            places.hosted.remove(&gone.peer_id);
        }
        self.announce(places, index, old);
    }

    /// A change another instance made to a room (through a script), with the room's media
    /// record.
    fn changed(&self, key: &RoomKey, ver: u64, media: Option<Owner>, changes: Vec<(usize, Option<Remote>)>) {
        let Some(room) = self.room(key) else {
            let Some(link) = &self.shared else { return };
            // No one here is in that room: content naming this process is someone who left
            // while Redis had lost the room, put back by another instance. Taken out again.
            for stray in changes.iter().filter_map(|(_, c)| c.as_ref()).filter(|c| c.instance == link.instance) {
                link.leave(key, stray.peer_id);
            }
            if media.is_some_and(|owner| self.is_mine(&owner)) {
                // Picked to carry the room's media as the last people here left: this instance
                // takes the room in as Redis has it, and carries it.
                self.room_for(&mut lock(&self.rooms), key.clone());
                link.restore(key);
            }
            return;
        };
        let mut places = lock(&room.places);
        self.set_media(&mut places, media);
        for (index, content) in changes {
            self.change(&mut places, index, ver, content.as_ref());
        }
        self.forget_media_if_empty(&mut places);
        places.publish();
        drop(places);
        self.forget_if_left(&room);
    }

    /// Takes in a room as Redis has it (after restoring it there).
    fn apply(&self, key: &RoomKey, snapshot: &Snapshot) {
        let Some(room) = self.room(key) else { return };
        self.take_in(&mut lock(&room.places), snapshot, None);
        self.forget_if_left(&room);
    }

    /// Forgets a room that only carrying its media kept here, once it no longer does.
    fn forget_if_left(&self, room: &Arc<Room>) {
        if lock(&room.places).seats.iter().all(|place| place.seat.as_ref().and_then(Seat::here).is_none()) {
            let mut rooms = lock(&self.rooms);
            self.forget_if_unused(&mut rooms, room, &lock(&room.places));
        }
    }

    /// What instance `from` sent about `to`, a person of room `key`: a frame for them here, SDP
    /// of theirs for this instance's unit, or the owner's unit's frame for them here.
    fn deliver_relayed(&self, from: &Arc<str>, key: &RoomKey, to: PeerId, carried: Carried) {
        let frame = match carried {
            Carried::Frame(frame) => frame,
            Carried::ToSfu { epoch, verb, sdp } => return self.sfu_request(from, key, to, epoch, verb, sdp),
            Carried::FromSfu { epoch, frame } => return self.sfu_reply(from, key, to, epoch, frame),
        };
        let Some(room) = self.room(key) else { return };
        let mut places = lock(&room.places);
        if let Some(index) = place_of(&places.seats, to) {
            let outbound = Outbound { frame, relayed_at: None, from: Source::Remote };
            let _ = self.deliver_frame(&mut places, index, outbound, Instant::now());
        }
    }

    /// The room `key`, if this process has people in it (or a join under way).
    fn room(&self, key: &RoomKey) -> Option<Arc<Room>> {
        lock(&self.rooms).get(key).cloned()
    }

    /// The rooms where this process has people (or a join under way).
    fn local_rooms(&self) -> Vec<RoomKey> {
        lock(&self.rooms).keys().cloned().collect()
    }

    /// The rooms where this process has people, which Redis has unless it lost them.
    fn held_rooms(&self) -> Vec<RoomKey> {
        let rooms = lock(&self.rooms);
        let held = rooms.iter().filter(|(_, room)| {
            lock(&room.places).seats.iter().any(|place| place.seat.as_ref().is_some_and(|seat| seat.here().is_some()))
        });
        held.map(|(key, _)| key.clone()).collect()
    }

    /// Everyone this process knows in a room, as Redis names them, the room's size and the
    /// owner of its media.
    fn known(&self, key: &RoomKey, instance: &Arc<str>) -> (usize, Option<Owner>, Vec<(usize, Remote)>) {
        let Some(room) = self.room(key) else { return (self.settings.room_size, None, vec![]) };
        let places = lock(&room.places);
        let known = places.seats.iter().enumerate().filter_map(|(index, place)| {
            let remote = match place.seat.as_ref()? {
                Seat::Here(slot) => Remote {
                    peer_id: slot.peer_id,
                    instance: instance.clone(),
                    public_id: slot.public_id.clone(),
                    name: slot.name.clone(),
                },
                Seat::There(remote) => remote.clone(),
            };
            Some((index, remote))
        });
        (self.settings.room_size.max(places.seats.len()), places.media.clone(), known.collect())
    }

    /// Forgets a room where this process has no one left and no join under way.
    fn forget_if_unused(&self, rooms: &mut HashMap<RoomKey, Arc<Room>>, room: &Arc<Room>, places: &Places) {
        // Only this room: a connection that outlived its room (replaced, then slow to close)
        // must not remove a newer room of the same id.
        let current = rooms.get(&places.key).is_some_and(|known| Arc::ptr_eq(known, room));
        let unused = places.joining == 0
            && places.watching == 0
            && places.seats.iter().all(|place| place.seat.as_ref().and_then(Seat::here).is_none())
            && !self.owns(places);
        if current && unused {
            rooms.remove(&places.key);
            crate::server::metrics::active_rooms(rooms.len());
        }
    }

    /// Ends every connection with "going away"; [`Hub::closed`] then waits for them.
    pub(crate) fn shutdown(&self) {
        self.stopping.send_replace(true);
        for room in lock(&self.rooms).values() {
            for slot in lock(&room.places).seats.iter().filter_map(|place| place.seat.as_ref()?.here()) {
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

    /// Resolves once no membership is left (and, with Redis, their leaving went through).
    pub(crate) async fn closed(&self) {
        let mut peers = self.peers.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = peers.wait_for(|n| *n == 0).await;
        if let Some(link) = &self.shared {
            link.flushed().await;
        }
    }

    /// Whether a TURN server is configured to give credentials for.
    pub(crate) fn issues_turn_credentials(&self) -> bool {
        self.settings.ice.issues_turn_credentials()
    }

    /// Whether the hub can take people in: without Redis always; with it, while Redis answers.
    pub(crate) fn ready(&self) -> bool {
        self.shared.as_ref().is_none_or(Link::ready)
    }

    #[cfg(test)]
    fn room_count(&self) -> usize {
        lock(&self.rooms).len()
    }

    pub(crate) fn peer_count(&self) -> usize {
        *self.peers.borrow()
    }

    /// Queues a frame at `now` for this process's person at `index`. A peer whose queue is
    /// full and who stopped taking frames reads too slowly: it is evicted (so nothing more
    /// piles up for it) and told to close, and the others in the room hear that it left (any
    /// of them as full goes too). One who keeps reading is never evicted for what others send:
    /// the sender is [`Busy`] instead (a frame from another instance is dropped, and counted).
    fn deliver_frame(&self, places: &mut Places, index: usize, outbound: Outbound, now: Instant) -> Result<(), Busy> {
        let from = outbound.from;
        let share = self.share(places);
        let Some(Seat::Here(slot)) = &places.seats[index].seat else { return Ok(()) };
        match slot.mailbox.push(outbound, self.settings.outbox, share, self.settings.queued_budget, now) {
            Ok(()) => return Ok(()),
            Err(Overflow::Sender) if from == Source::Remote => {
                crate::server::metrics::rejected("recipient_busy");
                return Ok(());
            }
            Err(Overflow::Sender) => return Err(Busy),
            Err(Overflow::Reader) => {}
        }
        self.evict(places, index, now);
        Ok(())
    }

    /// Drops the person at `index` as too slow: told to close, and announced to the others
    /// (any of them whose queue has no room for that, and who stopped reading, goes too).
    fn evict(&self, places: &mut Places, index: usize, now: Instant) {
        let HubSettings { outbox, queued_budget, .. } = self.settings;
        let mut leaving = vec![index];
        while let Some(index) = leaving.pop() {
            let Some(Seat::Here(evicted)) = places.seats[index].seat.take() else { continue };
            evicted.mailbox.kick(Kick::TOO_SLOW);
            if let Some(link) = &self.shared {
                link.leave(&places.key, evicted.peer_id);
            }
            if let Some(left_out) = SLOW_READER_LOG.allow(Instant::now()) {
                tracing::warn!(
                    peer = evicted.peer_id.0,
                    similar_left_out = left_out,
                    "dropping a peer that reads too slowly"
                );
            }
            let left = Frame::from(Message::PeerLeft(Seat::Here(evicted).info(None)).to_json());
            let share = self.share(places);
            for (other, seat) in others(&places.seats, index) {
                let Some(slot) = seat.here() else { continue };
                let outbound = Outbound { frame: left.clone(), relayed_at: None, from: Source::Hub };
                if slot.mailbox.push(outbound, outbox, share, queued_budget, now).is_err() {
                    leaving.push(other);
                }
            }
        }
        places.publish();
    }

    /// How much of one person's mailbox another person's frames may fill: an equal part for
    /// each of the others in the room now (a room of 25 places is mostly a call of two or three).
    fn share(&self, places: &Places) -> Capacity {
        let seated = places.seats.iter().filter(|place| place.seat.is_some()).count();
        let senders = seated.saturating_sub(1).max(1);
        Capacity { frames: self.settings.outbox.frames / senders, bytes: self.settings.outbox.bytes / senders }
    }
}

impl Room {
    fn new(key: RoomKey, size: usize) -> Arc<Self> {
        let route = MediaRoute::Mesh;
        let mut places = Places {
            key,
            seats: Vec::new(),
            joining: 0,
            watching: 0,
            present: None,
            route,
            media: None,
            hosted: HashMap::new(),
        };
        places.grow(size);
        Arc::new(Self { places: Mutex::new(places) })
    }
}

impl Places {
    fn grow(&mut self, size: usize) {
        if self.seats.len() < size {
            self.seats.resize_with(size, Place::default);
        }
    }

    /// Who is in the room, by place: public ids and names only, never a peer id. At most a
    /// room's places, so its size is bounded.
    fn presence(&self) -> Frame {
        let people = self.seats.iter().filter_map(|place| place.seat.as_ref());
        let people = people
            .map(|seat| Person { public_id: seat.public_id().map(str::to_owned), name: seat.name().map(str::to_owned) })
            .collect();
        Frame::from(Message::Present(Present { people }).to_json())
    }

    /// Tells the connections waiting to join who is in the room now, if that changed. A
    /// connection still writing the last change reads only the latest: bursts coalesce.
    fn publish(&self) {
        let Some(present) = &self.present else { return };
        let now = self.presence();
        present.send_if_modified(|shown| {
            let changed = *shown != now;
            if changed {
                *shown = now;
            }
            changed
        });
    }
}

impl Membership {
    /// Sends a frame, read at `received_at`, to the peer `to`, or without `to` to the only
    /// other person in the room. Without `to` and with no one else there, the frame is
    /// dropped: whoever comes next hears `WELCOME` first.
    /// The recipient keeps reading but already has as much from this sender waiting as one
    /// sender may fill: [`Unsent::Busy`], and the sender pays as for a frame over its rate.
    pub(crate) fn relay(&self, frame: Frame, to: Option<PeerId>, received_at: Instant) -> Result<(), Unsent> {
        let mut places = lock(&self.room.places);
        let Some(me) = place_of(&places.seats, self.peer_id) else {
            return Ok(()); // evicted: this connection is closing
        };
        let recipient = match to {
            Some(to) if to == self.peer_id => return Err(Misaddressed::ToSelf.into()),
            Some(to) => {
                others(&places.seats, me).find(|(_, seat)| seat.peer_id() == to).ok_or(Misaddressed::NotHere(to.0))?.0
            }
            None => {
                let mut everyone = others(&places.seats, me);
                match (everyone.next(), everyone.next()) {
                    (None, _) => return Ok(()),
                    (Some((only, _)), None) => only,
                    (Some(_), Some(_)) => return Err(Misaddressed::Ambiguous.into()),
                }
            }
        };
        match (&places.seats[recipient].seat, &self.hub.shared) {
            (Some(Seat::There(remote)), Some(link)) => link.relay(remote, &places.key, frame),
            _ => {
                let outbound = Outbound { frame, relayed_at: Some(received_at), from: Source::Peer(self.peer_id) };
                self.hub.deliver_frame(&mut places, recipient, outbound, received_at)?;
            }
        }
        Ok(())
    }
}

impl Membership {
    /// Where this person sends their media now; `None` while the room is a mesh.
    pub(crate) fn media_home(&self) -> Option<MediaHome> {
        self.hub.media_home(&lock(&self.room.places))
    }

    /// This person's place on `owner`'s forwarding unit, through Redis.
    pub(crate) fn remote_sfu(&self, owner: Owner) -> Option<RemoteSfu> {
        self.hub.remote_sfu(owner, lock(&self.room.places).key.clone(), self.peer_id)
    }

    /// How the forwarding units know the room: by its key, the same on every instance.
    pub(crate) fn sfu_room(&self) -> String {
        lock(&self.room.places).key.0.clone()
    }

    /// This instance's forwarding unit, if it has one.
    pub(crate) fn sfu(&self) -> Option<&Sfu> {
        self.hub.settings.sfu.as_ref()
    }

    /// This person's display name is now `name` (cleaned): those waiting to join see it.
    pub(crate) fn rename(&self, name: Option<String>) {
        let mut guard = lock(&self.room.places);
        let places = &mut *guard;
        let Some(me) = place_of(&places.seats, self.peer_id) else { return };
        let Some(Seat::Here(slot)) = &mut places.seats[me].seat else { return };
        if slot.name == name {
            return;
        }
        slot.name = name;
        if let Some(link) = &self.hub.shared {
            link.rename(&places.key, self.peer_id, slot.name.as_deref());
        }
        places.publish();
    }

    /// Drops this connection as too slow: its writes are stuck, and frames for it no longer
    /// fit while it has taken none for [`STALL`]. What the hub would do at the next
    /// frame for it, for a reader nobody sends anything more.
    pub(crate) fn too_slow(&self) {
        let mut places = lock(&self.room.places);
        if let Some(me) = place_of(&places.seats, self.peer_id) {
            self.hub.evict(&mut places, me, Instant::now());
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut rooms = lock(&self.hub.rooms);
        let mut places = lock(&self.room.places);
        // An evicted or replaced peer's place is already empty (or, later, someone else's).
        if let Some(mine) = place_of(&places.seats, self.peer_id) {
            let me = places.seats[mine].seat.take().expect("found above");
            if let Some(link) = &self.hub.shared {
                link.leave(&places.key, self.peer_id);
            }
            self.hub.tell(&mut places, mine, |_| Message::PeerLeft(me.info(None)));
            places.publish();
        }
        self.hub.forget_if_unused(&mut rooms, &self.room, &places);
        drop(places);
        drop(rooms);
        self.hub.peers.send_modify(|n| *n -= 1);
    }
}

/// A connection waiting to join its room (`join=later`): it holds no place, and sees who is
/// in the room. Dropping it stops that.
pub(crate) struct Waiting {
    hub: Arc<Hub>,
    room: Arc<Room>,
    /// `PRESENT`, as of the last change.
    pub(crate) present: watch::Receiver<Frame>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut rooms = lock(&self.hub.rooms);
        let mut places = lock(&self.room.places);
        places.watching -= 1;
        if places.watching == 0 {
            places.present = None;
            if let Some(link) = &self.hub.shared {
                link.watch(&places.key, false);
            }
        }
        self.hub.forget_if_unused(&mut rooms, &self.room, &places);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    fn hub(capacity: usize) -> Arc<Hub> {
        hub_with(capacity, 64 << 20)
    }

    fn hub_with(capacity: usize, queued_budget: usize) -> Arc<Hub> {
        hub_of(2, capacity, queued_budget)
    }

    fn hub_of(room_size: usize, capacity: usize, queued_budget: usize) -> Arc<Hub> {
        hub_routing(room_size, capacity, queued_budget, MediaMode::Mesh)
    }

    fn hub_routing(room_size: usize, capacity: usize, queued_budget: usize, media: MediaMode) -> Arc<Hub> {
        let ice = IceConfig {
            urls: vec![],
            turn_secret: None,
            credential_lifetime: std::time::Duration::from_secs(60),
            transport_policy: crate::protocol::IceTransportPolicy::All,
        };
        let settings = HubSettings {
            ice,
            media,
            sfu: None,
            room_size,
            outbox: Capacity { frames: capacity, bytes: 1 << 20 },
            queued_budget,
        };
        Hub::new(settings, None).unwrap()
    }

    /// Joins without Redis, where the answer comes at once.
    fn join(hub: &Arc<Hub>, room_id: RoomId, session: Option<String>) -> Result<Membership, Refusal> {
        join_named(hub, room_id, session, None)
    }

    fn join_named(
        hub: &Arc<Hub>,
        room_id: RoomId,
        session: Option<String>,
        name: Option<&str>,
    ) -> Result<Membership, Refusal> {
        match hub.join(room_id, session, false, name.map(str::to_owned)) {
            Joining::Now(result) => result,
            Joining::Later(_) => panic!("a hub without Redis answers at once"),
        }
    }

    /// The `PRESENT` a waiting connection has not sent yet, if any (after the first).
    fn news(waiting: &mut Waiting) -> Option<Vec<Person>> {
        waiting.present.has_changed().unwrap().then(|| shown(waiting))
    }

    /// The `PRESENT` a waiting connection sends now (the first one at once).
    fn shown(waiting: &mut Waiting) -> Vec<Person> {
        let frame = waiting.present.borrow_and_update().clone();
        assert!(!frame.contains("peer_id"), "never a peer id: {frame}");
        match serde_json::from_str(&frame).unwrap() {
            Message::Present(present) => present.people,
            other => panic!("{other:?}"),
        }
    }

    fn person(public_id: Option<String>, name: Option<&str>) -> Person {
        Person { public_id, name: name.map(str::to_owned) }
    }

    /// `N` people joining room "g" of `hub`, one after another.
    fn group<const N: usize>(hub: &Arc<Hub>) -> [Membership; N] {
        std::array::from_fn(|_| join(hub, room("g"), None).unwrap())
    }

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).unwrap()
    }

    fn route(m: &Membership) -> MediaRoute {
        lock(&m.room.places).route
    }

    fn take_frame(m: &Membership) -> Option<Outbound> {
        m.mailbox.take()
    }

    fn queued(m: &Membership) -> usize {
        m.mailbox.queued_frames()
    }

    fn kick_of(m: &Membership) -> Option<Kick> {
        m.mailbox.kick_of()
    }

    fn next(m: &Membership) -> Message {
        serde_json::from_str(&take_frame(m).expect("a frame is queued").frame).unwrap()
    }

    #[test]
    fn under_auto_a_room_moves_to_the_server_at_its_fifth_person_and_starts_afresh_once_empty() {
        let hub = hub_routing(25, 16, 64 << 20, MediaMode::Auto);
        let four: Vec<Membership> = (0..4).map(|_| join(&hub, room("m"), None).unwrap()).collect();
        assert!(four.iter().all(|m| m.welcome.media == MediaRoute::Mesh && route(m) == MediaRoute::Mesh));
        for (i, m) in four.iter().enumerate() {
            for _ in i + 1..4 {
                assert!(matches!(next(m), Message::PeerJoined(_)));
            }
        }
        let fifth = join(&hub, room("m"), None).unwrap();
        assert_eq!(fifth.welcome.media, MediaRoute::Sfu);
        for m in &four {
            // Told of the move before the newcomer, whom they then meet on the server.
            assert_eq!(next(m), Message::MediaRoute(RouteChange { media: MediaRoute::Sfu, reconnect: false }));
            assert!(matches!(next(m), Message::PeerJoined(_)));
            assert_eq!(route(m), MediaRoute::Sfu);
        }
        // One leaving does not move it back; everyone leaving does.
        drop(fifth);
        let sixth = join(&hub, room("m"), None).unwrap();
        assert_eq!(sixth.welcome.media, MediaRoute::Sfu);
        drop((four, sixth));
        assert_eq!(join(&hub, room("m"), None).unwrap().welcome.media, MediaRoute::Mesh);
        // `--media sfu`: every room from its first person.
        let hub = hub_routing(25, 16, 64 << 20, MediaMode::Sfu);
        assert_eq!(join(&hub, room("s"), None).unwrap().welcome.media, MediaRoute::Sfu);
    }

    #[test]
    fn someone_waiting_to_join_sees_who_is_in_the_room_and_each_change_and_takes_no_place() {
        let hub = hub_of(2, 16, 64 << 20);
        let mut waiting = hub.wait(&room("g"));
        assert_eq!(shown(&mut waiting), vec![], "at once: no one yet");
        let ada = Some(public_id(&room("g"), "ada-session"));
        let a = join_named(&hub, room("g"), Some("ada-session".into()), Some("Ada")).unwrap();
        assert_eq!(news(&mut waiting), Some(vec![person(ada.clone(), Some("Ada"))]));
        assert!(!a.welcome.peer_present, "the one waiting is no one in the room");
        let b = join(&hub, room("g"), None).unwrap();
        assert_eq!(news(&mut waiting), Some(vec![person(ada.clone(), Some("Ada")), person(None, None)]));
        // Renames: each change once; a name given again is no change.
        b.rename(Some("Bob".into()));
        a.rename(Some("Ada L".into()));
        let both = vec![person(ada.clone(), Some("Ada L")), person(None, Some("Bob"))];
        assert_eq!(news(&mut waiting), Some(both.clone()), "two changes at once come as one");
        a.rename(Some("Ada L".into()));
        assert_eq!(news(&mut waiting), None);
        let _ = take_frame(&a); // PEER_JOINED
        assert!(take_frame(&a).is_none() && take_frame(&b).is_none(), "members hear no name from the server");
        // Ada reconnects under the same name: nothing changed for those waiting.
        let a_again = join_named(&hub, room("g"), Some("ada-session".into()), Some("Ada L")).unwrap();
        assert_eq!(kick_of(&a), Some(Kick::REPLACED));
        drop(a);
        assert_eq!(news(&mut waiting), None);
        drop(b);
        assert_eq!(news(&mut waiting), Some(vec![person(ada.clone(), Some("Ada L"))]));
        a_again.rename(None);
        assert_eq!(news(&mut waiting), Some(vec![person(ada.clone(), None)]));
        // Others waiting see the same; one who stops waiting is simply gone.
        let mut second = hub.wait(&room("g"));
        assert_eq!(shown(&mut second), vec![person(ada, None)]);
        drop(second);
        assert_eq!(news(&mut waiting), None);
    }

    #[test]
    fn someone_waiting_sees_people_of_other_instances_by_name_in_the_order_of_changes() {
        let hub = hub_of(4, 16, 64 << 20);
        let mut waiting = hub.wait(&room("g"));
        let key = RoomKey::of(&room("g"));
        let ada = |name: &str| Remote {
            peer_id: PeerId(5),
            instance: "elsewhere".into(),
            public_id: Some("ada-public".into()),
            name: Some(name.into()),
        };
        hub.changed(&key, 10, None, vec![(1, Some(ada("Ada")))]);
        assert_eq!(news(&mut waiting), Some(vec![person(Some("ada-public".into()), Some("Ada"))]));
        let bob = join_named(&hub, room("g"), None, Some("Bob")).unwrap();
        let both = |ada: &str| vec![person(None, Some("Bob")), person(Some("ada-public".into()), Some(ada))];
        assert_eq!(news(&mut waiting), Some(both("Ada")), "by place: Bob took the free one before Ada's");
        // A rename is the same person in the same place, under a newer version; an older one
        // that arrives late changes nothing.
        hub.changed(&key, 12, None, vec![(1, Some(ada("Ada L")))]);
        hub.changed(&key, 11, None, vec![(1, Some(ada("Ada K")))]);
        assert_eq!(news(&mut waiting), Some(both("Ada L")));
        assert!(take_frame(&bob).is_none(), "a rename is no arrival for those in the call");
        hub.changed(&key, 13, None, vec![(1, None)]);
        assert_eq!(news(&mut waiting), Some(vec![person(None, Some("Bob"))]));
        assert!(matches!(next(&bob), Message::PeerLeft(info) if info.peer_id == PeerId(5)));
    }

    #[test]
    fn a_room_someone_waits_for_stays_and_goes_with_them_and_a_slow_reader_leaves_it() {
        let hub = hub_of(2, 4, 64 << 20);
        let mut waiting = hub.wait(&room("r"));
        assert_eq!((shown(&mut waiting), hub.room_count(), hub.peer_count()), (vec![], 1, 0));
        let a = join_named(&hub, room("r"), None, Some("Ada")).unwrap();
        let b = join(&hub, room("r"), None).unwrap();
        let _ = take_frame(&a); // PEER_JOINED
        assert_eq!(news(&mut waiting).map(|people| people.len()), Some(2));
        // b stops reading and is dropped: those waiting see it go.
        let start = Instant::now();
        for _ in 0..4 {
            a.relay(Frame::from("{}"), None, start).unwrap();
        }
        a.relay(Frame::from("{}"), None, start + STALL).unwrap();
        assert_eq!(kick_of(&b), Some(Kick::TOO_SLOW));
        assert_eq!(news(&mut waiting), Some(vec![person(None, Some("Ada"))]));
        drop((a, b));
        assert_eq!(news(&mut waiting), Some(vec![]));
        assert_eq!(hub.room_count(), 1, "kept for the one waiting");
        drop(waiting);
        assert_eq!(hub.room_count(), 0);
    }

    #[test]
    fn two_peers_get_opposite_roles_and_a_third_is_refused() {
        let hub = hub(8);
        let a = join(&hub, room("r"), None).unwrap();
        let b = join(&hub, room("r"), None).unwrap();
        assert!(!a.welcome.peer_present && b.welcome.peer_present);
        assert_ne!(a.welcome.polite, b.welcome.polite);
        assert!(matches!(join(&hub, room("r"), None), Err(Refusal::Full)));
        // Another room is unaffected.
        assert!(join(&hub, room("other"), None).is_ok());
    }

    #[test]
    fn relays_to_the_other_peer_and_announces_arrivals_and_departures() {
        let hub = hub(8);
        let a = join(&hub, room("r"), None).unwrap();
        let b = join(&hub, room("r"), None).unwrap();
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
        let c = join(&hub, room("r"), None).unwrap();
        assert!(c.welcome.polite && c.welcome.peer_present);
    }

    #[test]
    fn empty_rooms_are_forgotten() {
        let hub = hub(8);
        let a = join(&hub, room("r"), None).unwrap();
        let b = join(&hub, room("r"), None).unwrap();
        assert_eq!((hub.room_count(), hub.peer_count()), (1, 2));
        drop(a);
        drop(b);
        assert_eq!((hub.room_count(), hub.peer_count()), (0, 0));
    }

    /// A room of two in a hub whose queues hold 4 frames, with b's filled by a at the instant
    /// returned.
    fn a_filling_bs_queue() -> (Arc<Hub>, Membership, Membership, Instant) {
        let hub = hub(4);
        let a = join(&hub, room("r"), None).unwrap();
        let b = join(&hub, room("r"), None).unwrap();
        let _ = take_frame(&a); // PEER_JOINED
        let start = Instant::now();
        for _ in 0..4 {
            a.relay(Frame::from("{}"), None, start).unwrap();
        }
        (hub, a, b, start)
    }

    #[test]
    fn a_slow_reader_is_evicted_instead_of_queueing_forever() {
        let (_hub, a, b, start) = a_filling_bs_queue();
        // Full at once: b may just not have had its turn yet, so the sender is refused.
        assert_eq!(a.relay(Frame::from("{}"), None, start), Err(Busy.into()));
        assert_eq!(kick_of(&b), None);
        // Still full, with nothing taken for STALL: b does not read.
        a.relay(Frame::from("{}"), None, start + STALL).unwrap();
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
        let a = join(&hub, room("r"), None).unwrap();
        let b = join(&hub, room("r"), None).unwrap();
        let c = join(&hub, room("s"), None).unwrap();
        let d = join(&hub, room("s"), None).unwrap();
        let _ = (take_frame(&a), take_frame(&c)); // PEER_JOINED
        let frame = || Frame::from("x".repeat(kib(40)));
        a.relay(frame(), None, Instant::now()).unwrap();
        c.relay(frame(), None, Instant::now()).unwrap();
        a.relay(frame(), None, Instant::now()).unwrap();
        assert_eq!((kick_of(&b), kick_of(&d)), (None, None), "over budget, but no one is behind yet");
        assert_eq!(hub.queued.load(Ordering::Relaxed), kib(120));
        c.relay(frame(), None, Instant::now()).unwrap();
        assert_eq!(kick_of(&d), None, "d had 40 KiB waiting: a reader keeping up");
        let start = Instant::now();
        assert_eq!(a.relay(frame(), None, start), Err(Busy.into()), "b has 80 KiB waiting, but only just");
        a.relay(frame(), None, start + STALL).unwrap();
        assert_eq!(kick_of(&b), Some(Kick::TOO_SLOW), "b had 80 KiB waiting for STALL and the budget is spent");
        assert!(matches!(next(&a), Message::PeerLeft(_)));
        assert_eq!(hub.queued.load(Ordering::Relaxed), kib(80), "b's frames are gone, d's wait");
        drop((a, b, c, d));
        assert_eq!(hub.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_returning_session_takes_its_place_back_without_disturbing_the_other() {
        let hub = hub(8);
        let a = join(&hub, room("r"), Some("alice".into())).unwrap();
        let old_b = join(&hub, room("r"), Some("bob".into())).unwrap();
        let _ = take_frame(&a); // PEER_JOINED
        let new_b = join(&hub, room("r"), Some("bob".into())).expect("not counted as a third person");
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
        assert!(matches!(join(&hub, room("r"), Some("carol".into())), Err(Refusal::Full)));
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
        let a = join(&hub, room("r"), Some("alice-session".into())).unwrap();
        let _b = join(&hub, room("r"), Some("bob-session".into())).unwrap();
        assert!(matches!(join(&hub, room("r"), Some(alice.clone())), Err(Refusal::Full)));
        assert_eq!(kick_of(&a), None);
    }

    #[test]
    fn a_connection_that_outlives_its_room_leaves_a_newer_room_of_the_same_id_alone() {
        let hub = hub(8);
        let stuck = join(&hub, room("r"), Some("alice-0123456789ab".into())).unwrap();
        let back = join(&hub, room("r"), Some("alice-0123456789ab".into())).unwrap();
        assert_eq!(kick_of(&stuck), Some(Kick::REPLACED));
        drop(back); // the room is empty and forgotten; `stuck` still holds it
        let carol = join(&hub, room("r"), None).unwrap();
        drop(stuck); // the replaced connection finally ends
        let dave = join(&hub, room("r"), None).unwrap();
        assert!(dave.welcome.peer_present, "Dave finds Carol");
        assert_eq!(
            next(&carol),
            Message::PeerJoined(PeerInfo { peer_id: dave.peer_id, polite: Some(false), public_id: None })
        );
        assert!(matches!(join(&hub, room("r"), None), Err(Refusal::Full)), "no third person on the link");
        assert_eq!((hub.room_count(), hub.peer_count()), (1, 2));
    }

    #[tokio::test]
    async fn a_waiting_peer_wakes_for_a_frame_and_for_a_kick_which_overtakes_queued_frames() {
        let hub = hub(8);
        let a = join(&hub, room("r"), None).unwrap();
        let b = join(&hub, room("r"), None).unwrap();
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
        let a = join(&hub, room("r"), None).unwrap();
        let b = join(&hub, room("s"), None).unwrap();
        hub.shutdown();
        assert_eq!(kick_of(&a), Some(Kick::SHUTDOWN));
        assert_eq!(kick_of(&b), Some(Kick::SHUTDOWN));
    }

    #[test]
    fn in_a_room_of_four_every_pair_has_one_polite_side_and_a_fifth_is_refused() {
        let hub = hub_of(4, 16, 64 << 20);
        let people: Vec<Membership> = (0..4).map(|_| join(&hub, room("group"), None).unwrap()).collect();
        assert!(matches!(join(&hub, room("group"), None), Err(Refusal::Full)));
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
        let a = join(&hub, room("g"), None).unwrap();
        let b = join(&hub, room("g"), None).unwrap();
        assert!(matches!(next(&a), Message::PeerJoined(_)));
        // Two people: no name needed, as in the classic protocol.
        a.relay(Frame::from("one"), None, Instant::now()).unwrap();
        assert_eq!(take_frame(&b).unwrap().frame.as_str(), "one");
        let c = join(&hub, room("g"), None).unwrap();
        for m in [&a, &b] {
            assert!(matches!(next(m), Message::PeerJoined(_)));
        }
        assert_eq!(a.relay(Frame::from("?"), None, Instant::now()), Err(Misaddressed::Ambiguous.into()));
        a.relay(Frame::from("to c"), Some(c.peer_id), Instant::now()).unwrap();
        assert_eq!(take_frame(&c).unwrap().frame.as_str(), "to c");
        assert!(take_frame(&b).is_none(), "only the one named hears it");
        assert_eq!(a.relay(Frame::from("x"), Some(a.peer_id), Instant::now()), Err(Misaddressed::ToSelf.into()));
        let stranger = PeerId(a.peer_id.0 ^ b.peer_id.0 ^ c.peer_id.0 ^ 1);
        assert_eq!(
            a.relay(Frame::from("x"), Some(stranger), Instant::now()),
            Err(Misaddressed::NotHere(stranger.0).into())
        );
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
        let d = join(&hub, room("g"), None).unwrap();
        let roles: Vec<_> = d.welcome.peers.iter().map(|p| (p.peer_id, p.polite)).collect();
        assert_eq!(roles, [(a.peer_id, Some(true)), (c.peer_id, Some(false))]);
        assert!(matches!(join(&hub, room("g"), None), Err(Refusal::Full)));
    }

    #[test]
    fn in_a_group_a_slow_reader_is_announced_to_all_and_one_as_full_goes_too() {
        let hub = hub_of(4, 12, 64 << 20); // 4 frames for each of the 3 others
        let [a, b, c, d] = group(&hub);
        // a and b read what they got; c and d read nothing.
        for _ in 0..3 {
            next(&a);
        }
        next(&b);
        next(&b);
        let start = Instant::now();
        // d's queue fills up with each one's share, without a frame refused yet.
        for sender in [&a, &b, &c] {
            for _ in 0..4 {
                sender.relay(Frame::from("{}"), Some(d.peer_id), start).unwrap();
            }
        }
        assert_eq!((queued(&d), kick_of(&d)), (12, None));
        // c's holds d's arrival; a's and b's shares and three from d fill it. The next, once c
        // has taken nothing for STALL, evicts c. Its PEER_LEFT does not fit in d's full queue,
        // and d has not read either, so d goes too; a and b hear of both.
        for (sender, frames) in [(&a, 4), (&b, 4), (&d, 3)] {
            for _ in 0..frames {
                sender.relay(Frame::from("{}"), Some(c.peer_id), start).unwrap();
            }
        }
        assert_eq!((queued(&c), kick_of(&c)), (12, None));
        d.relay(Frame::from("{}"), Some(c.peer_id), start + STALL).unwrap();
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

    #[test]
    fn others_who_fill_a_reading_persons_queue_are_refused_each_beyond_their_own_share() {
        let hub = hub_of(4, 12, 64 << 20); // 4 frames for each of the 3 others
        let [a, b, c, d] = group(&hub);
        let start = Instant::now();
        // a, b and c gang up on d: each gets its share in, then is refused; d is not evicted.
        for sender in [&a, &b, &c] {
            for _ in 0..4 {
                sender.relay(Frame::from("{}"), Some(d.peer_id), start).unwrap();
            }
            assert_eq!(sender.relay(Frame::from("{}"), Some(d.peer_id), start), Err(Busy.into()));
        }
        assert_eq!((queued(&d), kick_of(&d)), (12, None));
        // d reads one of a's frames: a has room for one more, the others still have none. The
        // hub's own news reaches d however full its queue is.
        assert!(take_frame(&d).is_some());
        let later = Instant::now();
        a.relay(Frame::from("{}"), Some(d.peer_id), later).unwrap();
        assert_eq!(a.relay(Frame::from("{}"), Some(d.peer_id), later), Err(Busy.into()));
        assert_eq!(b.relay(Frame::from("{}"), Some(d.peer_id), later), Err(Busy.into()));
        drop(c);
        assert_eq!((queued(&d), kick_of(&d)), (13, None), "c's PEER_LEFT is queued too");
    }

    #[test]
    fn a_reader_stuck_while_its_frames_no_longer_fit_is_dropped_though_nothing_more_comes() {
        let (hub, a, b, start) = a_filling_bs_queue();
        assert!(!b.mailbox.overflowing(start + STALL), "full, but nothing was refused");
        assert_eq!(a.relay(Frame::from("{}"), None, start), Err(Busy.into()));
        assert!(!b.mailbox.overflowing(start), "not stalled yet");
        // b's writer, stuck, sees this once STALL has passed since frames began to wait.
        let later = Instant::now() + STALL;
        assert!(b.mailbox.overflowing(later));
        b.too_slow();
        assert_eq!(kick_of(&b), Some(Kick::TOO_SLOW));
        assert_eq!(next(&a), Message::PeerLeft(PeerInfo { peer_id: b.peer_id, polite: None, public_id: None }));
        // Taking a frame clears it.
        let c = join(&hub, room("s"), None).unwrap();
        let d = join(&hub, room("s"), None).unwrap();
        let _ = take_frame(&c);
        for _ in 0..5 {
            let _ = c.relay(Frame::from("{}"), None, start);
        }
        assert!(take_frame(&d).is_some());
        assert!(!d.mailbox.overflowing(Instant::now() + STALL));
    }
}
