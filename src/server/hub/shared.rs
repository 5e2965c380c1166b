//! Rooms shared by several instances through Redis (`--redis`).
//!
//! Redis decides who has which place, atomically (the Lua scripts in `lua/`), and carries
//! what one instance sends another over pub/sub. No room id and no session ever reaches
//! Redis: a room is known by [`RoomKey`] (a one-way hash of its id) and a person by the public
//! id of their session.
//!
//! | key | what |
//! | --- | --- |
//! | `duo:room:<room key>` | hash: `size`, `ver` (the version of the last change), per place `"<peer id> <instance> <public id or ->"`, then `" <name>"` if the person gave one; and `media`, `"<owner instance> <epoch>"`, once the room's media goes through the owner's forwarding unit |
//! | `duo:instances` | sorted set: each instance's last heartbeat, in ms of Redis's clock |
//! | `duo:inst:<instance>:rooms` | set: the rooms where that instance has people or carries the media (every change keeps it exact), to free them or hand them on if it dies |
//! | `duo:units` | set: the instances with a forwarding unit, which may carry a room's media (each heartbeat says so) |
//! | `duo:epoch` | when Redis got its first heartbeat: missing later, Redis lost everything |
//! | `duo:recovering` | set for a heartbeat's TTL once an instance finds Redis lost everything |
//! | `duo:to:<instance>` | the channel each instance reads |
//! | `duo:watch:<room key>` | a room's changes, for instances where someone waits to join it and no one may be in it |
//!
//! On a channel, `P <room key> <version>`, then `m <media record>` if the room has one, then a
//! line `<place> <content or ->` per changed place (a script changed the room); or one of three
//! numbered messages, with their body after a newline: `R <from> <seq> <room key> <peer id>`,
//! a frame relayed to that person; `S <from> <seq> <room key> <peer id> <epoch> <offer|answer|leave>`,
//! a person's SDP for the room's forwarding unit, sent to its owner; `H <from> <seq> <room key>
//! <peer id> <epoch>`, the owner's frame for that person (its answer or offer). On a room's own
//! channel, `W <by> <room key> <version>` and the same lines: `by`, the instance that made the
//! change, has it already. A change applies to a place only if its version is newer than the
//! one the place has here, and a media record only if its epoch is, so changes that cross, and
//! the snapshots scripts return, land in the right order. Numbered messages carry a sequence
//! number per pair of instances: one re-sent after a lost connection arrives once, and in
//! order. Media itself never goes through Redis: each browser sends it to the owner.
//!
//! Redis may lose a room (restarted empty, `FLUSHALL`, a key evicted or deleted) while its
//! people are still connected to their instances, which then put it back from what they know.
//! Until they have, no one new gets a place in it: a join to a room Redis does not have is
//! refused as unavailable (1013, the page tries again) while a live instance lists the room in
//! its set, or Redis lately lost everything (`duo:recovering`), or forgot the joining instance;
//! and a join through an instance with people in the room puts the room back first, in the
//! same script. Each heartbeat looks whether Redis still has some of the instance's rooms.
//!
//! Three tasks drive the link: the writer sends everything, in order (so a `BYE` reaches the
//! other side before the sender's `PEER_LEFT`); the dispatcher reads the channel; the ticker
//! sends the heartbeat, sweeps instances that stopped sending theirs and puts back rooms Redis
//! lost. Scripts touch keys they compute, so this needs a standalone Redis (or Sentinel), not
//! Redis Cluster.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{lock, Frame, Hub, Membership, Refusal, RoomKey};
use crate::{
    protocol::{display_name, PeerId},
    server::{config::MESH_MOVE_AT, limits::LogThrottle},
};

/// An instance counts as dead once its last heartbeat is this old.
const HEARTBEAT_TTL: Duration = Duration::from_secs(5);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a join waits for Redis before the connection is told to try again (1013).
pub(super) const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long frames wait for an instance that is alive but not listening (reconnecting).
const HOLD: Duration = Duration::from_secs(30);
/// How long a missing frame is waited for before the frames after it are taken anyway.
const GAP_WAIT: Duration = Duration::from_secs(1);
/// Places in a room, at most (`--max-room-size`'s bound): a place number past it in anything
/// read from Redis is refused, never allocated for.
const MAX_PLACES: usize = 50;
/// Operations sent to Redis in one round trip, at most.
const BATCH: usize = 64;
/// Rooms each heartbeat looks for in Redis, at most: an instance with more looks at them in
/// turn, so a lost room is found within `rooms / CHECKED_EACH_BEAT` beats.
const CHECKED_EACH_BEAT: usize = 512;
/// How long the ticker waits for a reply, on top of the connection manager's own limit
/// (which does not cover a connection that hangs while it is made, say).
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause before sending again after Redis failed.
const RETRY_AFTER: Duration = Duration::from_millis(200);

static DROPPED_LOG: LogThrottle = LogThrottle::new();
static TICK_LOG: LogThrottle = LogThrottle::new();

const COMMON: &str = include_str!("lua/common.lua");
static JOIN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| script(include_str!("lua/join.lua")));
static LEAVE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| script(include_str!("lua/leave.lua")));
static RESTORE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| script(include_str!("lua/restore.lua")));
static TICK: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| script(include_str!("lua/tick.lua")));
static NAME: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| script(include_str!("lua/name.lua")));
static HANDOVER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| script(include_str!("lua/handover.lua")));

fn script(body: &str) -> String {
    format!("{COMMON}\n{body}")
}

const INSTANCES: &str = "duo:instances";

fn room_hash(key: &RoomKey) -> String {
    format!("duo:room:{}", key.0)
}

fn channel(instance: &str) -> String {
    format!("duo:to:{instance}")
}

fn watch_channel(key: &RoomKey) -> String {
    format!("duo:watch:{}", key.0)
}

/// Where to reach Redis: `redis://[:password@]host[:port][/db]`. Taken as it is and checked
/// when the hub starts, by an error that does not repeat it: clap would print a value it
/// refuses, password and all.
#[derive(Clone)]
pub(crate) struct RedisSettings {
    url: String,
}

impl std::str::FromStr for RedisSettings {
    type Err = std::convert::Infallible;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Ok(RedisSettings { url: url.to_owned() })
    }
}

/// Never the URL itself: it may hold a password.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisSettings { .. }")
    }
}

/// A person on another instance, as a place's content names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Remote {
    pub(super) peer_id: PeerId,
    pub(super) instance: Arc<str>,
    pub(super) public_id: Option<String>,
    pub(super) name: Option<String>,
}

impl Remote {
    /// `"<peer id> <instance> <public id or ->"`, then `" <name>"` if they gave one (the rest
    /// of the line: a name may hold spaces, never a line break).
    fn parse(content: &str) -> Option<Remote> {
        let mut parts = content.splitn(4, ' ');
        let (peer, instance, public_id) = (parts.next()?, parts.next()?, parts.next()?);
        if instance.is_empty() || public_id.is_empty() {
            return None;
        }
        Some(Remote {
            peer_id: PeerId(peer.parse().ok()?),
            instance: instance.into(),
            public_id: (public_id != "-").then(|| public_id.to_owned()),
            // Cleaned when it came in; cleaned again, as anything read from outside is.
            name: parts.next().and_then(display_name),
        })
    }

    pub(super) fn content(&self) -> String {
        let public_id = self.public_id.as_deref().unwrap_or("-");
        match &self.name {
            Some(name) => format!("{} {} {public_id} {name}", self.peer_id.0, self.instance),
            None => format!("{} {} {public_id}", self.peer_id.0, self.instance),
        }
    }
}

/// The instance whose forwarding unit carries a room's media, since `epoch` (the room's version
/// when it was chosen: a later owner has a larger one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) instance: Arc<str>,
    pub(crate) epoch: u64,
}

impl Owner {
    /// `"<instance> <epoch>"`.
    fn parse(record: &str) -> Option<Owner> {
        let (instance, epoch) = record.split_once(' ')?;
        (!instance.is_empty()).then(|| Some(Owner { instance: instance.into(), epoch: epoch.parse().ok()? }))?
    }

    pub(super) fn record(&self) -> String {
        format!("{} {}", self.instance, self.epoch)
    }
}

/// A room as Redis has it at `ver`: its occupied places, and the owner of its media.
#[derive(Debug, PartialEq)]
pub(super) struct Snapshot {
    pub(super) ver: u64,
    pub(super) size: usize,
    pub(super) media: Option<Owner>,
    pub(super) places: Vec<(usize, Remote)>,
}

/// What a join script answered.
#[derive(Debug, PartialEq)]
enum Joined {
    Full,
    /// The peer id drawn is someone else's in that room.
    Retry,
    /// Redis lost the room, and the instances of its people have not put it back yet.
    Lost,
    At(usize, Snapshot),
}

/// Something another instance (or a script) sent this one.
#[derive(Debug, PartialEq)]
enum Incoming {
    /// These places of the room changed, at `ver`: `None` is a freed place. `by`: on a room's
    /// own channel, the instance that made the change.
    Changed { by: Option<Arc<str>>, key: RoomKey, ver: u64, media: Option<Owner>, places: Vec<(usize, Option<Remote>)> },
    /// A numbered message about person `to` of room `key`.
    Relayed { from: Arc<str>, seq: u64, key: RoomKey, to: PeerId, carried: Carried },
}

/// What a numbered message carries.
#[derive(Debug, PartialEq)]
pub(super) enum Carried {
    /// A frame for the person.
    Frame(Frame),
    /// The person's SDP for the forwarding unit of the room's owner at `epoch`.
    ToSfu { epoch: u64, verb: SfuVerb, sdp: String },
    /// The owner's frame for the person, sent while it owned the room since `epoch`.
    FromSfu { epoch: u64, frame: Frame },
}

/// What a person's browser asks of the owner's forwarding unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SfuVerb {
    Offer,
    Answer,
    /// The person is gone from this instance's forwarding unit.
    Leave,
}

impl SfuVerb {
    fn as_str(self) -> &'static str {
        match self {
            SfuVerb::Offer => "offer",
            SfuVerb::Answer => "answer",
            SfuVerb::Leave => "leave",
        }
    }

    fn parse(word: &str) -> Option<SfuVerb> {
        [SfuVerb::Offer, SfuVerb::Answer, SfuVerb::Leave].into_iter().find(|verb| verb.as_str() == word)
    }
}

impl Carried {
    fn len(&self) -> usize {
        match self {
            Carried::Frame(frame) | Carried::FromSfu { frame, .. } => frame.len(),
            Carried::ToSfu { sdp, .. } => sdp.len(),
        }
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("malformed message on the Redis channel")]
struct Malformed;

impl Incoming {
    fn parse(payload: &[u8]) -> Result<Incoming, Malformed> {
        let text = std::str::from_utf8(payload).map_err(|_| Malformed)?;
        let (head, rest) = text.split_once('\n').unwrap_or((text, ""));
        let mut words = head.split(' ');
        let changed = |by: Option<&str>, key: &str, ver: &str| -> Result<Incoming, Malformed> {
            let (media, rest) = match rest.strip_prefix("m ") {
                Some(media) => {
                    let (record, rest) = media.split_once('\n').unwrap_or((media, ""));
                    (Some(Owner::parse(record).ok_or(Malformed)?), rest)
                }
                None => (None, rest),
            };
            Ok(Incoming::Changed {
                by: by.map(Arc::from),
                key: RoomKey(key.to_owned()),
                ver: ver.parse().map_err(|_| Malformed)?,
                media,
                places: rest
                    .lines()
                    .map(|line| {
                        let (place, content) = line.split_once(' ').ok_or(Malformed)?;
                        let place = place.parse().ok().filter(|&place| place < MAX_PLACES).ok_or(Malformed)?;
                        match content {
                            "-" => Ok((place, None)),
                            content => Ok((place, Some(Remote::parse(content).ok_or(Malformed)?))),
                        }
                    })
                    .collect::<Result<_, _>>()?,
            })
        };
        let words: Vec<&str> = words.by_ref().take(8).collect();
        let number = |word: &str| word.parse::<u64>().map_err(|_| Malformed);
        let relayed = |from: &str, seq: &str, key: &str, to: &str, carried| -> Result<Incoming, Malformed> {
            Ok(Incoming::Relayed {
                from: from.into(),
                seq: number(seq)?,
                key: RoomKey(key.to_owned()),
                to: PeerId(number(to)?),
                carried,
            })
        };
        match words[..] {
            ["P", key, ver] => changed(None, key, ver),
            ["W", by, key, ver] => changed(Some(by), key, ver),
            ["R", from, seq, key, to] => relayed(from, seq, key, to, Carried::Frame(Frame::from(rest))),
            ["S", from, seq, key, to, epoch, verb] => {
                let verb = SfuVerb::parse(verb).ok_or(Malformed)?;
                relayed(from, seq, key, to, Carried::ToSfu { epoch: number(epoch)?, verb, sdp: rest.to_owned() })
            }
            ["H", from, seq, key, to, epoch] => {
                relayed(from, seq, key, to, Carried::FromSfu { epoch: number(epoch)?, frame: Frame::from(rest) })
            }
            _ => Err(Malformed),
        }
    }
}

/// A numbered message's payload.
fn relayed_payload(from: &str, seq: u64, key: &RoomKey, to: PeerId, carried: &Carried) -> String {
    let (key, to) = (&key.0, to.0);
    match carried {
        Carried::Frame(frame) => format!("R {from} {seq} {key} {to}\n{frame}"),
        Carried::ToSfu { epoch, verb, sdp } => format!("S {from} {seq} {key} {to} {epoch} {}\n{sdp}", verb.as_str()),
        Carried::FromSfu { epoch, frame } => format!("H {from} {seq} {key} {to} {epoch}\n{frame}"),
    }
}

/// Reads a script's reply: an array of integers and strings.
fn words(value: Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) => Some(items),
        _ => None,
    }
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// `ver, size, media record or -, place, content, ...`
fn snapshot(items: &[Value]) -> Option<Snapshot> {
    let [ver, size, media, places @ ..] = items else { return None };
    let size = usize::try_from(number(size)?).ok().filter(|&size| size <= MAX_PLACES)?;
    let place = |value: &Value| usize::try_from(number(value)?).ok().filter(|&place| place < size);
    let media = match text(media)? {
        "-" => None,
        record => Some(Owner::parse(record)?),
    };
    Some(Snapshot {
        ver: number(ver)?,
        size,
        media,
        places: places
            .chunks(2)
            .map(|pair| match pair {
                [at, content] => Some((place(at)?, Remote::parse(text(content)?)?)),
                _ => None,
            })
            .collect::<Option<_>>()?,
    })
}

impl Joined {
    fn from_reply(value: Value) -> Option<Joined> {
        let items = words(value)?;
        match (items.first().and_then(text)?, &items[1..]) {
            ("full", []) => Some(Joined::Full),
            ("retry", []) => Some(Joined::Retry),
            ("lost", []) => Some(Joined::Lost),
            ("ok", [place, rest @ ..]) => {
                let snapshot = snapshot(rest)?;
                let place = usize::try_from(number(place)?).ok().filter(|&place| place < snapshot.size)?;
                Some(Joined::At(place, snapshot))
            }
            _ => None,
        }
    }
}

fn restored(value: Value) -> Option<Snapshot> {
    let items = words(value)?;
    match (items.first().and_then(text)?, &items[1..]) {
        ("ok", rest) => snapshot(rest),
        _ => None,
    }
}

/// Frames relayed from one instance, put back in the order of their sequence numbers: a
/// frame sent again after a lost connection is dropped, and frames that overtook a missing one
/// wait for it, up to [`GAP_WAIT`].
#[derive(Debug)]
struct Sequence<T> {
    expected: u64,
    early: BTreeMap<u64, T>,
    /// Since when the first frame past a gap has waited.
    gap_since: Option<Instant>,
}

/// Frames that may wait for a missing one, per sending instance.
const EARLY_MAX: usize = 4096;

impl<T> Default for Sequence<T> {
    fn default() -> Self {
        Self { expected: 0, early: BTreeMap::new(), gap_since: None }
    }
}

impl<T> Sequence<T> {
    /// Takes frame `seq`; returns the frames it lets through, in order.
    fn accept(&mut self, seq: u64, frame: T, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        if seq < self.expected || self.early.contains_key(&seq) {
            return out; // seen already
        }
        if seq > self.expected {
            self.early.insert(seq, frame);
            self.gap_since.get_or_insert(now);
            if self.early.len() > EARLY_MAX {
                self.skip_gap(now, &mut out);
            }
            return out;
        }
        out.push(frame);
        self.expected += 1;
        self.release(now, &mut out);
        out
    }

    /// After [`GAP_WAIT`], the missing frames are taken as lost and the waiting ones go on.
    /// Returns how many were lost, and the frames let through.
    fn expire(&mut self, now: Instant) -> (u64, Vec<T>) {
        let mut out = Vec::new();
        match self.gap_since {
            Some(since) if now.duration_since(since) >= GAP_WAIT => (self.skip_gap(now, &mut out), out),
            _ => (0, out),
        }
    }

    fn skip_gap(&mut self, now: Instant, out: &mut Vec<T>) -> u64 {
        let Some(&first) = self.early.keys().next() else { return 0 };
        let lost = first - self.expected;
        self.expected = first;
        self.release(now, out);
        lost
    }

    /// Lets through the waiting frames that now follow in order.
    fn release(&mut self, now: Instant, out: &mut Vec<T>) {
        while let Some(frame) = self.early.remove(&self.expected) {
            out.push(frame);
            self.expected += 1;
        }
        self.gap_since = if self.early.is_empty() { None } else { Some(self.gap_since.unwrap_or(now)) };
    }
}

/// What the hub holds of the link (and a person's [`super::media::RemoteSfu`]).
#[derive(Clone)]
pub(super) struct Link {
    pub(super) instance: Arc<str>,
    ops: mpsc::UnboundedSender<Op>,
    state: Arc<State>,
}

/// Shared by the hub and the link's tasks.
struct State {
    /// Subscribed to this instance's channel on a live connection.
    subscribed: AtomicBool,
    /// When a heartbeat last went through.
    last_beat: Mutex<Option<Instant>>,
    /// Bytes of relayed frames waiting for Redis.
    pending: AtomicUsize,
    /// At most that many.
    budget: usize,
}

impl State {
    fn up(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
            && lock(&self.last_beat).is_some_and(|beat| beat.elapsed() < HEARTBEAT_EVERY * 3)
    }

    fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.store(subscribed, Ordering::Relaxed);
        crate::server::metrics::redis_up(self.up());
    }
}

/// A join waiting for Redis's answer.
pub(super) struct Join {
    pub(super) pending: super::Pending,
    pub(super) peer_id: PeerId,
    pub(super) public_id: Option<String>,
    pub(super) name: Option<String>,
    pub(super) turn: bool,
    pub(super) reply: oneshot::Sender<Result<Membership, Refusal>>,
}

enum Op {
    Relay {
        to: Arc<str>,
        key: RoomKey,
        peer: PeerId,
        carried: Carried,
        since: Instant,
    },
    Join(Box<Join>),
    Leave {
        key: RoomKey,
        peer: PeerId,
    },
    Restore {
        key: RoomKey,
    },
    /// Someone here waits to join the room (`on`), or no longer does.
    Watch {
        key: RoomKey,
        on: bool,
    },
    Rename {
        key: RoomKey,
        peer: PeerId,
        name: String,
    },
    /// Answered once everything queued before it went through.
    Flush(oneshot::Sender<()>),
    /// This instance stops: another is to carry the room's media.
    HandOver {
        key: RoomKey,
    },
}

/// An operation as the writer sends it: a relay keeps its numbered channel message, so that
/// sending it again after a failure sends the same number.
struct Out {
    op: Op,
    /// For relays: the channel message, numbered.
    payload: Option<String>,
}

impl Link {
    /// Connects (lazily: an instance starts while Redis is down, and is not ready until it is
    /// up); [`Driver::spawn`] then starts the link's tasks.
    pub(super) fn connect(settings: &RedisSettings, budget: usize) -> redis::RedisResult<(Link, Driver)> {
        let instance: Arc<str> = {
            let mut bytes = [0; 8];
            getrandom::getrandom(&mut bytes).expect("the OS random source works");
            format!("{:016x}", u64::from_le_bytes(bytes)).into()
        };
        let info = settings.url.as_str().into_connection_info().map_err(|error| {
            redis::RedisError::from((error.kind(), "not a Redis URL (redis://[:password@]host[:port][/db])"))
        })?;
        let redis = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(redis))?;
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(push_tx)
            .set_automatic_resubscription()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let redis = ConnectionManager::new_lazy_with_config(client, config)?;
        let state = Arc::new(State {
            subscribed: AtomicBool::new(false),
            last_beat: Mutex::new(None),
            pending: AtomicUsize::new(0),
            budget,
        });
        let (ops, queue) = mpsc::unbounded_channel();
        let link = Link { instance: instance.clone(), ops: ops.clone(), state: state.clone() };
        Ok((link, Driver { instance, state, redis, queue, pushes, ops }))
    }

    pub(super) fn ready(&self) -> bool {
        self.state.up()
    }

    pub(super) fn join(&self, join: Join) {
        // Only fails once the runtime is shutting down: the join then gets no answer.
        let _ = self.ops.send(Op::Join(Box::new(join)));
    }

    /// Resolves once everything queued so far went to Redis (or the link is gone), but frames
    /// held for an instance that was not listening: at shutdown, so that the others hear at
    /// once that this instance's people left.
    pub(super) async fn flushed(&self) {
        let (done, flushed) = oneshot::channel();
        if self.ops.send(Op::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }

    /// Hands the media of the room, which this instance carries, to another instance.
    pub(super) fn hand_over(&self, key: &RoomKey) {
        let _ = self.ops.send(Op::HandOver { key: key.clone() });
    }

    /// Reads the room as Redis has it (putting back what this instance knows, if Redis lost it).
    pub(super) fn restore(&self, key: &RoomKey) {
        let _ = self.ops.send(Op::Restore { key: key.clone() });
    }

    pub(super) fn leave(&self, key: &RoomKey, peer: PeerId) {
        let _ = self.ops.send(Op::Leave { key: key.clone(), peer });
    }

    /// Hears of a room's changes (`on`) while someone here waits to join it, though no one
    /// here may be in it; and reads it as it is.
    pub(super) fn watch(&self, key: &RoomKey, on: bool) {
        let _ = self.ops.send(Op::Watch { key: key.clone(), on });
    }

    pub(super) fn rename(&self, key: &RoomKey, peer: PeerId, name: Option<&str>) {
        let _ = self.ops.send(Op::Rename { key: key.clone(), peer, name: name.unwrap_or_default().to_owned() });
    }

    /// Sends a frame to someone on another instance.
    pub(super) fn relay(&self, to: &Remote, key: &RoomKey, frame: Frame) {
        self.send_numbered(to.instance.clone(), key, to.peer_id, Carried::Frame(frame));
    }

    /// Sends `peer`'s SDP to the forwarding unit of the room's owner.
    pub(super) fn to_sfu(&self, owner: &Owner, key: &RoomKey, peer: PeerId, verb: SfuVerb, sdp: String) {
        let carried = Carried::ToSfu { epoch: owner.epoch, verb, sdp };
        self.send_numbered(owner.instance.clone(), key, peer, carried);
    }

    /// Sends the forwarding unit's frame to `peer` on instance `home`, as the owner since `epoch`.
    pub(super) fn to_home(&self, home: Arc<str>, key: &RoomKey, peer: PeerId, epoch: u64, frame: Frame) {
        self.send_numbered(home, key, peer, Carried::FromSfu { epoch, frame });
    }

    /// Past the budget of what waits for Redis (it is away), the message is dropped.
    fn send_numbered(&self, to: Arc<str>, key: &RoomKey, peer: PeerId, carried: Carried) {
        let len = carried.len();
        if self.state.pending.fetch_add(len, Ordering::Relaxed) + len > self.state.budget {
            self.state.pending.fetch_sub(len, Ordering::Relaxed);
            crate::server::metrics::redis_dropped("budget");
            return;
        }
        let _ = self.ops.send(Op::Relay { to, key: key.clone(), peer, carried, since: Instant::now() });
    }
}

/// The link's tasks, before they start.
pub(super) struct Driver {
    instance: Arc<str>,
    state: Arc<State>,
    redis: ConnectionManager,
    queue: mpsc::UnboundedReceiver<Op>,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    ops: mpsc::UnboundedSender<Op>,
}

impl Driver {
    /// Starts the writer, the dispatcher and the ticker, for `hub`; they end with it.
    pub(super) fn spawn(self, hub: Weak<Hub>) {
        let Driver { instance, state, redis, queue, pushes, ops } = self;
        info!(%instance, "sharing rooms through Redis");
        crate::server::metrics::redis_up(false);
        let writer = Writer {
            hub: hub.clone(),
            instance: instance.clone(),
            state: state.clone(),
            redis: redis.clone(),
            queue,
            retry: VecDeque::new(),
            stalled: HashMap::new(),
            unstalled_at: Instant::now(),
            next_seq: HashMap::new(),
            ops: ops.clone(),
        };
        tokio::spawn(writer.run());
        tokio::spawn(dispatch(hub.clone(), instance.clone(), state.clone(), pushes, ops.clone()));
        tokio::spawn(tick(hub, instance, state, redis, ops));
    }
}

struct Writer {
    hub: Weak<Hub>,
    instance: Arc<str>,
    state: Arc<State>,
    redis: ConnectionManager,
    queue: mpsc::UnboundedReceiver<Op>,
    /// Sent when Redis failed: first in line once it answers again.
    retry: VecDeque<Out>,
    /// Relays to instances that were not listening, in order, to be sent again.
    stalled: HashMap<Arc<str>, VecDeque<Out>>,
    /// When stalled relays were last sent again.
    unstalled_at: Instant,
    next_seq: HashMap<Arc<str>, u64>,
    /// For work the writer gives itself (a join to retry, a leave after a failed join).
    ops: mpsc::UnboundedSender<Op>,
}

impl Writer {
    async fn run(mut self) {
        let mut batch: Vec<Out> = Vec::new();
        loop {
            if self.retry.is_empty() {
                let wait = if self.stalled.is_empty() { Duration::from_secs(3600) } else { RETRY_AFTER };
                tokio::select! {
                    op = self.queue.recv() => match op {
                        Some(op) => self.take(op, &mut batch),
                        None => return,
                    },
                    () = tokio::time::sleep(wait) => {}
                }
            }
            batch.extend(self.retry.drain(..));
            self.unstall(&mut batch);
            while batch.len() < BATCH {
                let Ok(op) = self.queue.try_recv() else { break };
                self.take(op, &mut batch);
            }
            self.subscribe(&mut batch).await;
            if batch.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for out in &batch {
                self.command(out, &mut pipe);
            }
            match pipe.query_async::<Vec<Value>>(&mut self.redis).await {
                Ok(replies) if replies.len() == batch.len() => {
                    for (out, reply) in batch.drain(..).zip(replies) {
                        self.done(out, reply);
                    }
                }
                result => {
                    if let Err(error) = result {
                        warn!(%error, "Redis failed; sending again when it is back");
                    }
                    for out in batch.drain(..) {
                        self.failed(out);
                    }
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    /// Numbers a relay; one to an instance whose earlier frames wait goes behind them.
    fn take(&mut self, op: Op, batch: &mut Vec<Out>) {
        let payload = match &op {
            Op::Relay { to, key, peer, carried, .. } => {
                let seq = self.next_seq.entry(to.clone()).or_default();
                let payload = relayed_payload(&self.instance, *seq, key, *peer, carried);
                *seq += 1;
                Some(payload)
            }
            _ => None,
        };
        let out = Out { op, payload };
        match &out.op {
            Op::Relay { to, .. } if self.stalled.contains_key(to) => {
                self.stalled.get_mut(to).expect("checked").push_back(out);
            }
            _ => batch.push(out),
        }
    }

    /// Carries out the batch's watches, which are no commands of a pipeline: for each room, the
    /// last one says whether to listen on its channel. A room listened to from now on is then
    /// read (by the pipeline, after the subscription: no change falls between the two). What
    /// Redis refused is tried again.
    async fn subscribe(&mut self, batch: &mut Vec<Out>) {
        let mut watches: HashMap<RoomKey, bool> = HashMap::new();
        batch.retain(|out| match &out.op {
            Op::Watch { key, on } => {
                watches.insert(key.clone(), *on);
                false
            }
            _ => true,
        });
        let (on, off): (Vec<_>, Vec<_>) = watches.into_iter().partition(|(_, on)| *on);
        let channels = |keys: &[(RoomKey, bool)]| keys.iter().map(|(key, _)| watch_channel(key)).collect::<Vec<_>>();
        let mut failed = false;
        if !off.is_empty() {
            let result = self.redis.unsubscribe(channels(&off)).await;
            failed |= self.subscribed(result, off, batch);
        }
        if !on.is_empty() {
            let result = self.redis.subscribe(channels(&on)).await;
            failed |= self.subscribed(result, on, batch);
        }
        if failed {
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }

    /// Reads the rooms now listened to, or keeps the watches to try again. True if they failed.
    fn subscribed(&mut self, result: redis::RedisResult<()>, keys: Vec<(RoomKey, bool)>, batch: &mut Vec<Out>) -> bool {
        match result {
            Ok(()) => {
                let read = keys.into_iter().filter(|(_, on)| *on);
                batch.extend(read.map(|(key, _)| Out { op: Op::Restore { key }, payload: None }));
                false
            }
            Err(error) => {
                warn!(%error, "Redis failed; listening to rooms again when it is back");
                self.retry.extend(keys.into_iter().map(|(key, on)| Out { op: Op::Watch { key, on }, payload: None }));
                true
            }
        }
    }

    /// Adds the stalled relays to the batch, to be tried again, but those that waited [`HOLD`]
    /// (their instance died, or never came back). Frames to someone who left meanwhile go too:
    /// the receiver drops them, and their numbers leave no gap for the frames behind them.
    fn unstall(&mut self, batch: &mut Vec<Out>) {
        if self.stalled.is_empty() || self.unstalled_at.elapsed() < RETRY_AFTER {
            return;
        }
        self.unstalled_at = Instant::now();
        for (_, stalled) in std::mem::take(&mut self.stalled) {
            for out in stalled {
                match &out.op {
                    Op::Relay { since, .. } if since.elapsed() > HOLD => self.drop_relay(&out, "unreachable"),
                    _ => batch.push(out),
                }
            }
        }
    }

    /// Adds an `EVAL` of a script whose keys are the room's hash and the instances' set and whose
    /// first argument is this instance; the script's own arguments follow.
    fn eval_on_room<'a>(&self, pipe: &'a mut redis::Pipeline, script: &str, key: &RoomKey) -> &'a mut redis::Pipeline {
        pipe.cmd("EVAL").arg(script).arg(2).arg(room_hash(key)).arg(INSTANCES).arg(&*self.instance)
    }

    /// What this instance knows of a room, for a script that puts it back if Redis lost it: its
    /// media record, then its places, those only with someone here (with no one here, only
    /// people waiting to join, the room is only read: its people's instances put it back).
    fn put_back(&self, cmd: &mut redis::Pipeline, media: Option<Owner>, known: Vec<(usize, Remote)>) {
        cmd.arg(media.as_ref().map_or("-".into(), Owner::record));
        if known.iter().any(|(_, remote)| remote.instance == self.instance) {
            for (place, remote) in known {
                cmd.arg(place).arg(remote.content());
            }
        }
    }

    fn command(&self, out: &Out, pipe: &mut redis::Pipeline) {
        match &out.op {
            Op::Relay { to, .. } => {
                pipe.cmd("PUBLISH").arg(channel(to)).arg(out.payload.as_deref().unwrap_or_default());
            }
            Op::Join(join) => {
                let key = &join.pending.key;
                let cmd = self
                    .eval_on_room(pipe, &JOIN, key)
                    .arg(join.peer_id.0)
                    .arg(join.public_id.as_deref().unwrap_or("-"))
                    .arg(join.pending.hub.settings.room_size)
                    .arg(&key.0)
                    .arg(HEARTBEAT_TTL.as_millis() as u64)
                    .arg(join.name.as_deref().unwrap_or_default())
                    .arg(join.pending.hub.settings.media.as_str())
                    .arg(MESH_MOVE_AT);
                // With people here, the room is put back first if Redis lost it.
                let (_, media, known) = join.pending.hub.known(key, &self.instance);
                self.put_back(cmd, media, known);
            }
            Op::Leave { key, peer } => {
                pipe.cmd("EVAL").arg(&*LEAVE).arg(1).arg(room_hash(key)).arg(&*self.instance).arg(peer.0).arg(&key.0);
            }
            Op::Rename { key, peer, name } => {
                pipe.cmd("EVAL")
                    .arg(&*NAME)
                    .arg(1)
                    .arg(room_hash(key))
                    .arg(&*self.instance)
                    .arg(peer.0)
                    .arg(&key.0)
                    .arg(name);
            }
            Op::Restore { key } => {
                let (size, media, known) =
                    self.hub.upgrade().map(|hub| hub.known(key, &self.instance)).unwrap_or_default();
                let cmd =
                    self.eval_on_room(pipe, &RESTORE, key).arg(&key.0).arg(size).arg(HEARTBEAT_TTL.as_millis() as u64);
                self.put_back(cmd, media, known);
            }
            Op::HandOver { key } => {
                self.eval_on_room(pipe, &HANDOVER, key).arg(&key.0).arg(HEARTBEAT_TTL.as_millis() as u64);
            }
            Op::Flush(_) => {
                pipe.cmd("PING");
            }
            Op::Watch { .. } => unreachable!("watches are taken out of the batch first"),
        }
    }

    fn done(&mut self, out: Out, reply: Value) {
        if let Value::ServerError(error) = &reply {
            warn!(?error, "a Redis command failed");
        }
        match out.op {
            Op::Relay { ref to, .. } => match reply {
                // Read by the instance: delivered, unless an earlier one stalled.
                Value::Int(1..) if !self.stalled.contains_key(to) => self.sent(&out),
                // Not listening (reconnecting, or dead), or an earlier frame to it waits.
                _ => self.stalled.entry(to.clone()).or_default().push_back(out),
            },
            Op::Join(mut join) => match Joined::from_reply(reply) {
                Some(Joined::At(place, snapshot)) => {
                    let Some(hub) = self.hub.upgrade() else { return };
                    let result = hub.seat_joined(&join, place, &snapshot);
                    // If the connection gave up waiting, its membership ends here and leaves.
                    let _ = join.reply.send(result);
                }
                Some(Joined::Full) => {
                    let _ = join.reply.send(Err(Refusal::Full));
                }
                Some(Joined::Lost) => {
                    let _ = join.reply.send(Err(Refusal::Restoring));
                }
                Some(Joined::Retry) => {
                    join.peer_id = super::random_peer_id();
                    let _ = self.ops.send(Op::Join(join));
                }
                None => {
                    let _ = join.reply.send(Err(Refusal::Unavailable));
                }
            },
            Op::Leave { .. } | Op::Rename { .. } | Op::Watch { .. } => {}
            Op::HandOver { key } => {
                // The scripts tell everyone else; this instance takes the new record in itself.
                let items = words(reply).unwrap_or_default();
                if let [_, ver, record] = &items[..] {
                    if let (Some(hub), Some(ver), Some(owner)) =
                        (self.hub.upgrade(), number(ver), text(record).and_then(Owner::parse))
                    {
                        info!(room = key.0, heir = %owner.instance, "handed this room's media to another instance");
                        hub.changed(&key, ver, Some(owner), Vec::new());
                    }
                }
            }
            Op::Flush(done) => {
                let _ = done.send(());
            }
            Op::Restore { key } => {
                if let (Some(hub), Some(snapshot)) = (self.hub.upgrade(), restored(reply)) {
                    hub.apply(&key, &snapshot);
                }
            }
        }
    }

    /// Redis did not answer. Whether a join went through is unknown: the connection is told to
    /// try again, and the place, if it was taken, is freed.
    fn failed(&mut self, out: Out) {
        match out.op {
            Op::Relay { since, .. } if since.elapsed() > HOLD => self.drop_relay(&out, "unreachable"),
            Op::Join(join) => {
                let _ = self.ops.send(Op::Leave { key: join.pending.key.clone(), peer: join.peer_id });
                let _ = join.reply.send(Err(Refusal::Unavailable));
            }
            _ => self.retry.push_back(out),
        }
    }

    fn sent(&self, out: &Out) {
        if let Op::Relay { carried, .. } = &out.op {
            self.state.pending.fetch_sub(carried.len(), Ordering::Relaxed);
        }
    }

    fn drop_relay(&self, out: &Out, reason: &'static str) {
        self.sent(out);
        crate::server::metrics::redis_dropped(reason);
        if let Some(left_out) = DROPPED_LOG.allow(Instant::now()) {
            warn!(reason, similar_left_out = left_out, "dropped a frame for another instance");
        }
    }
}

fn timed_out<T>(_: tokio::time::error::Elapsed) -> redis::RedisResult<T> {
    Err(redis::RedisError::from((redis::ErrorKind::Io, "no reply in time")))
}

/// Reads this instance's channel, and the connection's comings and goings.
async fn dispatch(
    hub: Weak<Hub>,
    instance: Arc<str>,
    state: Arc<State>,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    ops: mpsc::UnboundedSender<Op>,
) {
    let mut sequences: HashMap<Arc<str>, Sequence<(RoomKey, PeerId, Carried)>> = HashMap::new();
    let mut gaps = tokio::time::interval(GAP_WAIT / 4);
    gaps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let push = tokio::select! {
            push = pushes.recv() => match push {
                Some(push) => push,
                None => return,
            },
            _ = gaps.tick() => {
                let Some(hub) = hub.upgrade() else { return };
                for (from, sequence) in &mut sequences {
                    let (lost, frames) = sequence.expire(Instant::now());
                    if lost > 0 {
                        warn!(from = %from, lost, "frames from another instance were lost");
                        crate::server::metrics::redis_lost(lost);
                    }
                    for (key, to, carried) in frames {
                        hub.deliver_relayed(from, &key, to, carried);
                    }
                }
                continue;
            }
        };
        let Some(hub) = hub.upgrade() else { return };
        match push.kind {
            PushKind::Message => {
                let Some(Value::BulkString(payload)) = push.data.get(1) else { continue };
                match Incoming::parse(payload) {
                    // This instance made that change, and has it already (maybe not yet: a
                    // script's own messages come before its reply).
                    Ok(Incoming::Changed { by: Some(by), .. }) if by == instance => {}
                    Ok(Incoming::Changed { key, ver, media, places, .. }) => hub.changed(&key, ver, media, places),
                    Ok(Incoming::Relayed { from, seq, key, to, carried }) => {
                        let sequence = sequences.entry(from.clone()).or_default();
                        for (key, to, carried) in sequence.accept(seq, (key, to, carried), Instant::now()) {
                            hub.deliver_relayed(&from, &key, to, carried);
                        }
                    }
                    Err(error) => warn!(%error),
                }
            }
            PushKind::Disconnection => {
                warn!("lost the connection to Redis");
                state.set_subscribed(false);
            }
            // (Re)subscribed to this instance's channel (after a reconnection, with the channels
            // of the rooms it listened to): what was sent meanwhile is lost, so every room is
            // read again.
            PushKind::Subscribe if push.data.first().and_then(text).is_some_and(|to| to == channel(&instance)) => {
                info!("listening on Redis");
                for key in hub.local_rooms() {
                    let _ = ops.send(Op::Restore { key });
                }
                state.set_subscribed(true);
            }
            _ => {}
        }
    }
}

/// Which of `rooms` the next heartbeat looks for in Redis: the next [`CHECKED_EACH_BEAT`] in
/// the order of their keys after `after`, the last one looked at, and from the first again.
fn to_check(mut rooms: Vec<RoomKey>, after: &mut Option<RoomKey>) -> Vec<RoomKey> {
    rooms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let from = after.as_ref().map_or(0, |after| rooms.partition_point(|key| key.0 <= after.0));
    rooms.rotate_left(from);
    rooms.truncate(CHECKED_EACH_BEAT);
    *after = rooms.last().cloned();
    rooms
}

/// The heartbeat, the sweep and the look for lost rooms, every second; subscribes at first,
/// once Redis answers.
async fn tick(
    hub: Weak<Hub>,
    instance: Arc<str>,
    state: Arc<State>,
    mut redis: ConnectionManager,
    ops: mpsc::UnboundedSender<Op>,
) {
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut subscribed = false;
    // Redis knows no instance at its first heartbeat; it forgot this one if it says so later.
    let mut beaten = false;
    let mut checked = None;
    loop {
        every.tick().await;
        let Some((rooms, unit)) = hub.upgrade().map(|hub| (hub.held_rooms(), hub.settings.sfu.is_some())) else {
            return;
        };
        if !subscribed {
            match tokio::time::timeout(REPLY_TIMEOUT, redis.subscribe(channel(&instance)))
                .await
                .unwrap_or_else(timed_out)
            {
                Ok(()) => {
                    // Later reconnections resubscribe by themselves, and say so with a push.
                    subscribed = true;
                    state.set_subscribed(true);
                }
                Err(error) => warn!(%error, "cannot reach Redis yet"),
            }
        }
        let mut beat = redis::cmd("EVAL");
        beat.arg(&*TICK)
            .arg(1)
            .arg(INSTANCES)
            .arg(&*instance)
            .arg(HEARTBEAT_TTL.as_millis() as u64)
            .arg(u8::from(beaten))
            .arg(u8::from(unit));
        for key in to_check(rooms, &mut checked) {
            beat.arg(key.0);
        }
        let beat =
            tokio::time::timeout(REPLY_TIMEOUT, beat.query_async::<Value>(&mut redis)).await.unwrap_or_else(timed_out);
        let items = match beat {
            Ok(reply) => words(reply),
            Err(error) => {
                if let Some(left_out) = TICK_LOG.allow(Instant::now()) {
                    warn!(%error, similar_left_out = left_out, "Redis missed a heartbeat");
                }
                None
            }
        };
        let Some(items) = items else {
            *lock(&state.last_beat) = None;
            crate::server::metrics::redis_up(false);
            continue;
        };
        let (absent, swept) = (items.first().and_then(number), items.get(1).and_then(number));
        let lost: Vec<RoomKey> = items.iter().skip(2).filter_map(text).map(|key| RoomKey(key.to_owned())).collect();
        *lock(&state.last_beat) = Some(Instant::now());
        let first = !std::mem::replace(&mut beaten, true);
        crate::server::metrics::redis_up(state.up());
        if let Some(swept @ 1..) = swept {
            info!(swept, "freed the places of instances that stopped");
        }
        // Redis did not know this instance: it lost everything, or swept it while cut off.
        if absent == Some(1) && !first {
            warn!("Redis had forgotten this instance; putting its rooms back");
            if let Some(hub) = hub.upgrade() {
                for key in hub.local_rooms() {
                    let _ = ops.send(Op::Restore { key });
                }
            }
        } else if !lost.is_empty() {
            warn!(rooms = lost.len(), "Redis had lost rooms of this instance; putting them back");
            for key in lost {
                let _ = ops.send(Op::Restore { key });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(peer: u64, instance: &str, public_id: Option<&str>) -> Remote {
        Remote { peer_id: PeerId(peer), instance: instance.into(), public_id: public_id.map(str::to_owned), name: None }
    }

    #[test]
    fn a_place_content_round_trips_and_anything_else_is_refused() {
        let ada = remote(9007199254740991, "00ff00ff00ff00ff", Some("pub_ID-22"));
        assert_eq!(Remote::parse(&ada.content()), Some(ada));
        let nameless = remote(7, "a", None);
        assert_eq!(nameless.content(), "7 a -");
        assert_eq!(Remote::parse("7 a -"), Some(nameless));
        // A name is the rest of the content, spaces and all, and is cleaned again when read.
        let named = Remote { name: Some("Ada de la Mer".into()), ..remote(7, "a", Some("p")) };
        assert_eq!(named.content(), "7 a p Ada de la Mer");
        assert_eq!(Remote::parse(&named.content()), Some(named));
        let cleaned = Remote::parse("7 a - \u{202e}Eve\u{200b}").unwrap();
        assert_eq!(cleaned.name.as_deref(), Some("Eve"));
        assert_eq!(Remote::parse("7 a - \u{200b}").unwrap().name, None);
        for bad in ["", "7 a", "x a -", "-1 a -", "7  -", "7 a ", "7  - Ada"] {
            assert_eq!(Remote::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn channel_messages_parse_and_malformed_ones_are_refused() {
        let changed = Incoming::parse(b"P k3y 1764000000123\n0 5 inst -\n2 -").unwrap();
        assert_eq!(
            changed,
            Incoming::Changed {
                by: None,
                key: RoomKey("k3y".into()),
                ver: 1764000000123,
                media: None,
                places: vec![(0, Some(remote(5, "inst", None))), (2, None)],
            }
        );
        // A room on a forwarding unit: its owner's record comes first.
        let on_sfu = Incoming::parse(b"P k3y 20\nm inst 17\n0 -").unwrap();
        let owner = Owner { instance: "inst".into(), epoch: 17 };
        assert_eq!(
            on_sfu,
            Incoming::Changed {
                by: None,
                key: RoomKey("k3y".into()),
                ver: 20,
                media: Some(owner.clone()),
                places: vec![(0, None)]
            }
        );
        assert_eq!(Owner::parse(&owner.record()), Some(owner));
        // On a room's own channel, with the instance that made the change; names included.
        let watched = Incoming::parse(b"W inst k3y 17\n1 5 inst p Ada Lovelace").unwrap();
        let ada = Remote { name: Some("Ada Lovelace".into()), ..remote(5, "inst", Some("p")) };
        assert_eq!(
            watched,
            Incoming::Changed {
                by: Some("inst".into()),
                key: RoomKey("k3y".into()),
                ver: 17,
                media: None,
                places: vec![(1, Some(ada))]
            }
        );
        let frame = r#"{"message_type":"SDP","content":{"a":"x\ny"}}"#;
        let sdp = "v=0\r\na=group:BUNDLE 0\r\n";
        for carried in [
            Carried::Frame(Frame::from(frame)),
            Carried::ToSfu { epoch: 17, verb: SfuVerb::Offer, sdp: sdp.into() },
            Carried::ToSfu { epoch: 17, verb: SfuVerb::Leave, sdp: String::new() },
            Carried::FromSfu { epoch: 17, frame: Frame::from(frame) },
        ] {
            let payload = relayed_payload("from", 41, &RoomKey("k".into()), PeerId(12), &carried);
            assert_eq!(
                Incoming::parse(payload.as_bytes()).unwrap(),
                Incoming::Relayed { from: "from".into(), seq: 41, key: RoomKey("k".into()), to: PeerId(12), carried }
            );
        }
        for bad in [
            &b""[..],
            b"X 1",
            b"P k",
            b"P k x",
            b"P k 1\n0",
            b"P k 1\nz -",
            b"P k 1\n50 -",
            b"R a 1 k",
            b"R a b k 1\n{}",
            b"W k 1",
            b"W a k x",
            b"W a k 1 2",
            b"P k 1\nm inst\n0 -",
            b"P k 1\nm inst x",
            b"P k 1\nm  5",
            b"S a 1 k 2 17 join\nv=0",
            b"S a 1 k 2 x offer\nv=0",
            b"S a 1 k 2 offer",
            b"H a 1 k 2\n{}",
            b"H a 1 k 2 17 3\n{}",
            b"\xff",
        ] {
            assert_eq!(Incoming::parse(bad), Err(Malformed), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn script_replies_are_read_and_anything_else_is_none() {
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let reply = Value::Array(vec![
            s("ok"),
            Value::Int(1),
            s("1764000000123"),
            Value::Int(2),
            s("-"),
            Value::Int(0),
            s("5 a -"),
            Value::Int(1),
            s("6 b p"),
        ]);
        assert_eq!(
            Joined::from_reply(reply),
            Some(Joined::At(
                1,
                Snapshot {
                    ver: 1764000000123,
                    size: 2,
                    media: None,
                    places: vec![(0, remote(5, "a", None)), (1, remote(6, "b", Some("p")))]
                }
            ))
        );
        assert_eq!(Joined::from_reply(Value::Array(vec![s("full")])), Some(Joined::Full));
        assert_eq!(Joined::from_reply(Value::Array(vec![s("retry")])), Some(Joined::Retry));
        assert_eq!(Joined::from_reply(Value::Array(vec![s("lost")])), Some(Joined::Lost));
        assert_eq!(Joined::from_reply(Value::Array(vec![s("ok"), Value::Int(1)])), None);
        assert_eq!(Joined::from_reply(Value::Int(1)), None);
        // Places past the room's size, and sizes past any room's, are refused.
        let past =
            |place: i64, size: i64| Value::Array(vec![s("ok"), Value::Int(place), s("1"), Value::Int(size), s("-")]);
        assert_eq!(Joined::from_reply(past(2, 2)), None);
        assert_eq!(Joined::from_reply(past(0, 51)), None);
        assert!(Joined::from_reply(past(1, 2)).is_some());
        let listed = Value::Array(vec![s("ok"), s("1"), Value::Int(2), s("-"), Value::Int(5), s("5 a -")]);
        assert_eq!(restored(listed), None);
        let restore = Value::Array(vec![s("ok"), s("17"), Value::Int(4), s("b 12")]);
        let owner = Some(Owner { instance: "b".into(), epoch: 12 });
        assert_eq!(restored(restore), Some(Snapshot { ver: 17, size: 4, media: owner, places: vec![] }));
        let unowned = Value::Array(vec![s("ok"), s("17"), Value::Int(4), s("b")]);
        assert_eq!(restored(unowned), None, "a record without its epoch");
    }

    #[test]
    fn frames_from_an_instance_go_through_once_in_order_and_a_gap_is_waited_for_then_skipped() {
        let start = Instant::now();
        let later = |ms| start + Duration::from_millis(ms);
        let mut seq = Sequence::default();
        assert_eq!(seq.accept(0, 'a', start), ['a']);
        assert_eq!(seq.accept(1, 'b', start), ['b']);
        assert!(seq.accept(1, 'b', start).is_empty(), "sent again after a lost reply");
        // 2 went missing: 3 and 4 wait for it, and go with it, once.
        assert!(seq.accept(3, 'd', start).is_empty());
        assert!(seq.accept(4, 'e', later(5)).is_empty());
        assert!(seq.accept(3, 'd', later(6)).is_empty(), "a waiting frame sent again");
        assert_eq!(seq.expire(later(500)), (0, vec![]), "not yet given up on");
        assert_eq!(seq.accept(2, 'c', later(10)), ['c', 'd', 'e']);
        assert!(seq.accept(4, 'e', later(11)).is_empty());
        // 5 never comes: after GAP_WAIT, counted from the first frame that waited for it, the
        // frames after it go on.
        assert!(seq.accept(6, 'g', later(20)).is_empty());
        assert!(seq.accept(7, 'h', later(900)).is_empty());
        assert_eq!(seq.expire(later(900)), (0, vec![]));
        assert_eq!(seq.expire(later(20) + GAP_WAIT), (1, vec!['g', 'h']));
        assert_eq!(seq.accept(8, 'i', later(2000)), ['i']);
        assert_eq!(seq.expire(later(9000)), (0, vec![]), "no gap, nothing to give up");
    }

    #[test]
    fn each_heartbeat_looks_at_the_next_rooms_in_turn_and_every_room_is_looked_at() {
        let keys = |range: std::ops::Range<usize>| range.map(|n| RoomKey(format!("{n:05}"))).collect::<Vec<_>>();
        let mut after = None;
        // Few rooms: all of them, every time.
        assert_eq!(to_check(keys(0..3), &mut after), keys(0..3));
        assert_eq!(to_check(keys(0..3), &mut after), keys(0..3));
        // More than a heartbeat looks at: the next ones, whatever order they come in, then
        // the first ones again.
        let many = 2 * CHECKED_EACH_BEAT + 10;
        let mut shuffled = keys(0..many);
        shuffled.reverse();
        let mut after = None;
        assert_eq!(to_check(shuffled.clone(), &mut after), keys(0..CHECKED_EACH_BEAT));
        assert_eq!(to_check(shuffled.clone(), &mut after), keys(CHECKED_EACH_BEAT..2 * CHECKED_EACH_BEAT));
        let wrapped = to_check(shuffled, &mut after);
        assert_eq!(wrapped[..10], keys(2 * CHECKED_EACH_BEAT..many));
        assert_eq!(wrapped[10..], keys(0..CHECKED_EACH_BEAT - 10));
        // The last room looked at is gone: the next after it still come next.
        let mut after = Some(RoomKey("00001x".into()));
        assert_eq!(to_check(keys(0..4), &mut after), [keys(2..4), keys(0..2)].concat());
        assert_eq!(to_check(vec![], &mut after), vec![]);
        assert_eq!(after, None);
    }

    #[test]
    fn frames_waiting_for_a_missing_one_are_bounded() {
        let start = Instant::now();
        let mut seq = Sequence::default();
        for n in 1..=EARLY_MAX as u64 {
            assert!(seq.accept(n, n, start).is_empty());
        }
        let through = seq.accept(EARLY_MAX as u64 + 1, 0, start);
        assert_eq!(through.len(), EARLY_MAX + 1, "past the bound, the gap is skipped at once");
        assert!(seq.early.is_empty() && seq.gap_since.is_none());
    }
}
