//! The SFU's core, without I/O: one str0m `Rtc` per person (ICE-lite, the server's UDP address
//! and its ICE-TCP one as its only candidates), fed the datagrams the sockets received and the
//! clock, giving back the datagrams to send, the offers to send through signaling, and when it
//! next needs the clock. The socket task drives it; its tests drive it with str0m clients in
//! memory.
//!
//! Each person's browser offers what it sends (its m-lines the server receives); the server then
//! offers each person an m-line for every track of everyone else in the room, one offer out at a
//! time, and forwards each RTP packet it receives to the m-lines that carry its track (str0m's
//! RTP mode: a packet is decrypted once and its payload shared by every receiver's encryption,
//! rather than reassembled into a frame and packetized again for each receiver). A camera sent
//! in simulcast layers reaches each receiver in the one [`layers`] chooses for them, from the
//! size of the tile that shows it (and, once estimation is on again, the receiver's bandwidth).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde_json::value::RawValue;
use str0m::{
    bwe::BweKind,
    change::{SdpAnswer, SdpOffer, SdpPendingOffer},
    channel::{ChannelConfig, ChannelId},
    media::{Direction, KeyframeRequestKind, MediaKind, Mid, Rid},
    net::TcpType,
    net::{Protocol, Receive},
    rtp::{ExtensionValues, RtpPacket, RtpWrite},
    Candidate, Event, IceCreds, Input, Output, Rtc, RtcConfig, RtcError,
};

use crate::protocol::{FromUnit, PeerMessage, Reason, ReceivedLayer, Receiving, MAX_PEER_MESSAGE_UNITS};

use super::{
    layers::{self, Dynacast, Item, Layer, Offered, Rate},
    relay::{self, Relay},
    router::{Route, Router},
    slots::Slots,
    voices::{self, Audible, Voice},
    vp8,
};

/// A person on the SFU, as long as they are in a room on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersonId(u64);

/// The far end of a datagram: a browser's UDP address, or its ICE-TCP connection (RFC 6544),
/// where each RFC 4571 frame is one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    pub proto: Protocol,
    pub peer: SocketAddr,
}

impl Path {
    pub fn udp(peer: SocketAddr) -> Self {
        Self { proto: Protocol::Udp, peer }
    }

    pub fn tcp(peer: SocketAddr) -> Self {
        Self { proto: Protocol::Tcp, peer }
    }
}

/// A datagram to send from a media socket.
#[derive(Debug)]
pub struct Transmit {
    pub to: Path,
    pub bytes: Vec<u8>,
}

/// An offer from the server, for signaling to take to the person's browser; its answer comes
/// back through [`Core::answer`].
#[derive(Debug)]
pub struct Offer {
    pub to: PersonId,
    pub sdp: String,
    /// Each of the server's m-lines for the person, and the label of whose media it carries.
    pub tracks: Vec<(Mid, u64)>,
}

/// Why the core refused something a person's signaling asked for.
#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    #[error("no such person on this server")]
    UnknownPerson,
    #[error("{0} cannot be a media address browsers are sent to: {1}")]
    BadAddress(SocketAddr, String),
    #[error("the offer is not a session description this server takes: {0}")]
    BadOffer(String),
    #[error("the answer is not a session description this server takes: {0}")]
    BadAnswer(String),
    #[error("an answer came, but the server made no offer")]
    NoOffer,
    #[error(transparent)]
    Rtc(#[from] RtcError),
}

/// The least time between two keyframe requests to one sender: a keyframe costs many times an
/// ordinary frame, and every receiver that lost a packet asks for one.
pub const KEYFRAME_EVERY: Duration = Duration::from_millis(500);

/// The most tracks one person sends: a microphone, a camera and a screen.
pub const MAX_TRACKS: usize = 3;

/// How often each receiver's layers are chosen again (and on every change of their tiles):
/// within the 2 s a slow link may take to be served less, with a keyframe to wait for.
pub const CHOOSE_EVERY: Duration = Duration::from_millis(250);

/// What the forwarding unit holds at a moment: `/metrics`' gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    pub people: usize,
    pub rooms: usize,
    pub tracks: usize,
}

/// What the core counts: the SFU's part of `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Datagrams from an address no person has proved, that named no person's ufrag either.
    pub from_strangers: u64,
    /// STUN requests naming a person's ufrag that their ICE agent refused (a wrong password).
    pub refused_checks: u64,
    /// Datagrams from a known address that did not parse.
    pub malformed: u64,
    /// RTP packets received from people, and sent on to others.
    pub packets_in: u64,
    pub packets_out: u64,
    /// Tracks a person offered beyond [`MAX_TRACKS`], not forwarded.
    pub tracks_refused: u64,
    /// Keyframe requests passed on to a sender.
    pub keyframe_requests: u64,
    /// Keyframe requests not passed on: one had gone to that sender within [`KEYFRAME_EVERY`].
    pub keyframe_requests_held: u64,
    /// Data-channel messages passed on to the others of a room, and those dropped (too big, not
    /// JSON, or more at once than [`MESSAGE_BURST`]).
    pub messages_passed: u64,
    pub messages_dropped: u64,
}

/// Data-channel messages one person may have passed on at once, then [`MESSAGES_PER_SECOND`]:
/// well above what a page sends (a name, a media state per change, chat at its own limits), and
/// each is copied to everyone in the room.
pub const MESSAGE_BURST: f64 = 30.0;
pub const MESSAGES_PER_SECOND: f64 = 10.0;

struct Person {
    room: String,
    /// Listed in [`Core::written`].
    written: bool,
    /// What signaling calls them (their peer id): the offers' tracks name them by it.
    label: u64,
    rtc: Rtc,
    /// When the `Rtc` next needs the clock.
    deadline: Instant,
    connected: bool,
    /// What their browser sends: its m-lines, and their kind.
    upstream: Vec<(Mid, MediaKind)>,
    /// Their camera's simulcast layers as they arrive, by m-line, smallest first.
    arriving: HashMap<Mid, Vec<Arriving>>,
    /// Which of those layers their page is to send, by m-line, and what it was last told.
    dynacast: HashMap<Mid, (Dynacast, Option<Vec<Layer>>)>,
    /// They share their screen (their last `MEDIA_STATE` said): sent as the full layer alone.
    screen: bool,
    /// What they were last told they receive (`RECEIVING`).
    receiving: Option<Receiving>,
    /// How large their page shows the others' cameras, by the server's m-line (device pixels;
    /// missing: not shown). `None` until their page says: a page that never does (the tutorial
    /// client) is sent every camera's largest layer its link takes.
    view: Option<HashMap<Mid, (u32, u32)>>,
    /// What their link carries from the server, as str0m's estimate says, in bits per second.
    estimate: Option<u64>,
    /// The audio sent to them: the budget for video is what it leaves.
    audio_out: Rate,
    /// How loud their voice is lately, and whether it is speech.
    voice: Voice,
    /// The m-lines the server sends them others' tracks on.
    slots: Slots<PersonId>,
    /// How each of those m-lines sends: payload type and numbering.
    relays: HashMap<Mid, Relay>,
    /// The server's offer waiting for their answer: one at a time.
    pending: Option<SdpPendingOffer>,
    /// Their browser's first offer has been answered: the server offers only after it (the
    /// browser offers what it sends first, so no offers cross).
    offered: bool,
    /// When a keyframe was last asked of each of their m-lines (and layers).
    keyframe_asked: HashMap<(Mid, Option<Rid>), Instant>,
    /// Requests the limit held back, asked once it allows: a receiver whose m-line started
    /// just after a keyframe went by still gets one.
    keyframe_owed: Vec<((Mid, Option<Rid>), KeyframeRequestKind)>,
    /// The data channel (negotiated, id 0, as between browsers) their names, media states and
    /// chat come on, and the others' go out on.
    channel: ChannelId,
    channel_open: bool,
    /// Messages passed on lately (a token bucket: the count drains with time) and when last.
    said: (f64, Instant),
    /// Their last message of each [`REMEMBERED`] type, for whoever comes later.
    standing: Vec<(&'static str, Vec<u8>)>,
    /// Others' messages (chat) that came before this person's channel opened, for it to take
    /// when it does: at most [`WAITING`].
    waiting: Vec<Vec<u8>>,
}

/// A simulcast layer of a camera, as it arrives.
struct Arriving {
    layer: Layer,
    /// Its last keyframe's picture size (0 until one came).
    size: (u32, u32),
    rate: Rate,
    /// Its rate when it last came: what it costs once resumed.
    last_bps: Option<u64>,
    /// When its last packet came.
    at: Instant,
}

impl Arriving {
    /// Whether it is coming now: a packet of it came within [`GONE_AFTER`].
    fn coming(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.at) < GONE_AFTER
    }
}

/// Whether `layer` is one the server told its sender to pause (`told`: the layers it was last
/// told to send, if it was told).
fn paused(told: Option<&Vec<Layer>>, layer: Layer) -> bool {
    told.is_some_and(|told| !told.contains(&layer))
}

/// A layer the sender's page was told to send that has not come for this long is not offered to
/// receivers (a page sharing its screen, or a camera too small for it, does not send it).
const GONE_AFTER: Duration = Duration::from_secs(2);

/// Messages kept for a channel not open yet: a page's burst of chat, as a browser-to-browser
/// channel would have them once open.
const WAITING: usize = 32;

/// The data-channel messages that say how someone is (their name, what they send) rather than
/// what happened: the server keeps each person's last one of each and gives them to everyone
/// whose channel opens later, as a browser does to each new connection in a mesh.
const REMEMBERED: [&str; 2] = ["NAME", "MEDIA_STATE"];

/// The most tiles a `VIEW` may list: more than a room has m-lines.
const MAX_VIEW_TILES: usize = 64;

/// Only the type of a data-channel message is read.
#[derive(serde::Deserialize)]
struct Typed<'a> {
    #[serde(borrow)]
    message_type: std::borrow::Cow<'a, str>,
}

pub struct Core {
    template: RtcConfig,
    /// Where the UDP socket is reached, and the ICE-TCP listener if there is one: the
    /// destinations the ICE agent expects of the requests it answers.
    udp: SocketAddr,
    tcp: Option<SocketAddr>,
    /// Every person's ICE candidates: those addresses.
    candidates: Vec<Candidate>,
    people: HashMap<PersonId, Person>,
    /// Who is in each room: forwarding and offers look at one room, not every person here.
    rooms: HashMap<String, Vec<PersonId>>,
    next_id: u64,
    router: Router<PersonId, Path>,
    transmits: VecDeque<Transmit>,
    /// People written to since they were last polled: polled once before the next transmit is
    /// taken, however many packets were written to them meanwhile. Polling an `Rtc` walks all
    /// its streams, so polling once per batch rather than once per packet was most of the
    /// forwarding cost at 25 (docs/performance.md).
    written: Vec<PersonId>,
    offers: VecDeque<Offer>,
    counts: Counts,
    /// When every receiver's layers are next chosen.
    next_choice: Instant,
    /// Whose voices each large room forwards (a room not listed: everyone's).
    voices: HashMap<String, Audible<PersonId>>,
}

impl Core {
    pub fn new(udp: SocketAddr, tcp: Option<SocketAddr>) -> Result<Self, SfuError> {
        let refused = |address| move |error: str0m::error::IceError| SfuError::BadAddress(address, error.to_string());
        let mut candidates = vec![Candidate::host(udp, "udp").map_err(refused(udp))?];
        if let Some(tcp) = tcp {
            // Passive: browsers whose UDP is blocked connect to it (RFC 6544); ICE prefers UDP.
            let candidate = Candidate::builder().tcp().host(tcp).tcptype(TcpType::Passive).build();
            candidates.push(candidate.map_err(refused(tcp))?);
        }
        // ICE-lite: the server has a public address and never checks paths itself; Opus and
        // VP8 only, so that every m-line stays small; RTP packets forwarded as they came. No
        // bandwidth estimation yet: with it on, str0m paces what it forwards to its estimate,
        // and the quick bench's forwarding p99 went from milliseconds to a second while the
        // estimates fell far below the links (docs/performance.md). Until that is solved no
        // receiver has a budget: each tile gets the layer that covers it.
        let template = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true);
        Ok(Self {
            template,
            udp,
            tcp,
            candidates,
            people: HashMap::new(),
            rooms: HashMap::new(),
            next_id: 1,
            router: Router::default(),
            transmits: VecDeque::new(),
            written: Vec::new(),
            offers: VecDeque::new(),
            counts: Counts::default(),
            next_choice: Instant::now(),
            voices: HashMap::new(),
        })
    }

    /// A person of `room`, whom signaling calls `label`, arrives; their browser's offer comes
    /// next ([`Self::offer`]).
    pub fn join(&mut self, now: Instant, room: &str, label: u64) -> PersonId {
        let id = PersonId(self.next_id);
        self.next_id += 1;
        let credentials = IceCreds::new();
        self.router.add(&credentials.ufrag, id);
        let mut rtc = self.template.clone().set_local_ice_credentials(credentials).build(now);
        for candidate in &self.candidates {
            rtc.add_local_candidate(candidate.clone());
        }
        let config = ChannelConfig { label: "duo".into(), negotiated: Some(0), ..ChannelConfig::default() };
        let channel = rtc.direct_api().create_data_channel(config);
        let person = Person {
            room: room.to_owned(),
            written: false,
            label,
            rtc,
            deadline: now,
            connected: false,
            upstream: Vec::new(),
            arriving: HashMap::new(),
            dynacast: HashMap::new(),
            screen: false,
            receiving: None,
            view: None,
            estimate: None,
            audio_out: Rate::new(now),
            voice: Voice::default(),
            slots: Slots::default(),
            relays: HashMap::new(),
            pending: None,
            offered: false,
            keyframe_asked: HashMap::new(),
            keyframe_owed: Vec::new(),
            channel,
            channel_open: false,
            said: (0.0, now),
            standing: Vec::new(),
            waiting: Vec::new(),
        };
        self.people.insert(id, person);
        self.rooms.entry(room.to_owned()).or_default().push(id);
        id
    }

    /// The person's browser offers `sdp`; the answer goes back to it.
    pub fn offer(&mut self, now: Instant, person: PersonId, sdp: &str) -> Result<String, SfuError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|error| SfuError::BadOffer(error.to_string()))?;
        let entry = self.people.get_mut(&person).ok_or(SfuError::UnknownPerson)?;
        // Accepting their offer rolls back one of the server's still waiting for an answer: its
        // m-lines are offered again.
        if entry.pending.take().is_some() {
            entry.slots.rolled_back();
        }
        let answer = entry.rtc.sdp_api().accept_offer(offer)?;
        entry.offered = true;
        let room = entry.room.clone();
        self.drain(now, person);
        self.offer_missing(now, &room);
        Ok(answer.to_sdp_string())
    }

    /// The person's browser answers the server's last offer.
    pub fn answer(&mut self, now: Instant, person: PersonId, sdp: &str) -> Result<(), SfuError> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|error| SfuError::BadAnswer(error.to_string()))?;
        let entry = self.people.get_mut(&person).ok_or(SfuError::UnknownPerson)?;
        let pending = entry.pending.take().ok_or(SfuError::NoOffer)?;
        entry.rtc.sdp_api().accept_answer(pending, answer)?;
        // The new m-lines' video starts at the sender's next keyframe: ask for one now (of the
        // layer chosen for them, if the sender sends layers).
        let started = entry.slots.answered();
        let room = entry.room.clone();
        self.drain(now, person);
        for (source, mid) in started {
            if self.people.get(&source).is_some_and(|sender| !sender.arriving.contains_key(&mid)) {
                self.ask_keyframe(now, (source, mid, None), KeyframeRequestKind::Pli);
            }
        }
        self.choose_layers(now, person);
        self.dynacast(now, &room);
        self.offer_missing(now, &room);
        Ok(())
    }

    /// Asks `source` (a person, their m-line, and a layer of it) for a keyframe, unless it was
    /// asked within [`KEYFRAME_EVERY`] (or sends no video, or is still connecting).
    fn ask_keyframe(&mut self, now: Instant, (id, mid, rid): (PersonId, Mid, Option<Rid>), kind: KeyframeRequestKind) {
        let Some(person) = self.people.get_mut(&id) else { return };
        // A sender still connecting is not asked: its first frame is a keyframe.
        if !person.connected || !person.upstream.contains(&(mid, MediaKind::Video)) {
            return;
        }
        let key = (mid, rid);
        if person.keyframe_asked.get(&key).is_some_and(|at| now.duration_since(*at) < KEYFRAME_EVERY) {
            self.counts.keyframe_requests_held += 1;
            if !person.keyframe_owed.iter().any(|(owed, _)| *owed == key) {
                person.keyframe_owed.push((key, kind));
            }
            return;
        }
        // A browser that never said it takes this kind of request is asked with a PLI, which
        // every browser takes.
        let possible = person.rtc.codec_config().iter().any(|params| params.fb_fir());
        let kind = if kind == KeyframeRequestKind::Fir && !possible { KeyframeRequestKind::Pli } else { kind };
        let mut api = person.rtc.direct_api();
        let Some(stream) = api.stream_rx_by_mid(mid, rid) else { return };
        stream.request_keyframe(kind);
        person.keyframe_asked.insert(key, now);
        self.counts.keyframe_requests += 1;
        self.drain(now, id);
    }

    /// The next offer for signaling to deliver.
    pub fn poll_offer(&mut self) -> Option<Offer> {
        self.offers.pop_front()
    }

    /// Offers every person with no offer out the changes that make them receive exactly every
    /// track of the others in their room: m-lines reused, turned off, or added.
    fn offer_missing(&mut self, now: Instant, room: &str) {
        let Some(members) = self.rooms.get(room).cloned() else { return };
        let sources: Vec<((PersonId, Mid), MediaKind)> = members
            .iter()
            .filter_map(|id| Some((*id, self.people.get(id)?)))
            .flat_map(|(id, person)| person.upstream.iter().map(move |(mid, kind)| ((id, *mid), *kind)))
            .collect();
        let labels: HashMap<PersonId, u64> =
            members.iter().filter_map(|id| Some((*id, self.people.get(id)?.label))).collect();
        let mut offered = Vec::new();
        for id in &members {
            let Some(person) = self.people.get_mut(id) else { continue };
            // Only once their connection is up: Chromium given an offer for its sending m-lines
            // while its own first negotiation is still setting up the connection may never
            // start its video encoder (seen in every page at once when a room moves to the
            // server and everyone connects together; docs/performance.md).
            if !person.offered || !person.connected || person.pending.is_some() {
                continue;
            }
            let theirs: Vec<_> = sources.iter().filter(|((source, _), _)| source != id).copied().collect();
            let plan = person.slots.plan(&theirs);
            if plan.is_empty() {
                continue;
            }
            let mut change = person.rtc.sdp_api();
            for (mid, direction) in &plan.directions {
                change.set_direction(*mid, *direction);
            }
            let added: Vec<_> = plan
                .add
                .iter()
                .map(|(kind, source)| (change.add_media(*kind, Direction::SendOnly, None, None, None), *kind, *source))
                .collect();
            if let Some((offer, pending)) = change.apply() {
                person.slots.offered(&added);
                person.pending = Some(pending);
                let tracks = person
                    .slots
                    .offered_tracks()
                    .filter_map(|(mid, source)| Some((mid, *labels.get(&source)?)))
                    .collect();
                self.offers.push_back(Offer { to: *id, sdp: offer.to_sdp_string(), tracks });
                offered.push(*id);
            }
        }
        for id in offered {
            self.drain(now, id);
        }
    }

    /// Sends `packet`, which came from `source` on their m-line `mid` (in simulcast layer `rid`),
    /// to everyone with a ready m-line for that track (and that layer chosen for it).
    fn forward(&mut self, source: PersonId, mid: Mid, rid: Option<Rid>, packet: &RtpPacket) {
        let Some(sender) = self.people.get_mut(&source) else { return };
        let header = &packet.header;
        let now = packet.timestamp;
        let Some(params) = sender.rtc.codec_config().find(|params| params.pt() == header.payload_type).copied() else {
            return;
        };
        // Only video is worth sending again when lost: a late sound is a gap anyway.
        let nackable = params.spec().codec.is_video();
        let layer = rid.and_then(|rid| Layer::from_rid(&rid)).filter(|_| nackable);
        let keyframe = layer.and_then(|_| vp8::keyframe(&packet.payload));
        if let Some(layer) = layer {
            sender.arrived(mid, layer, keyframe, packet.payload.len(), now);
        }
        if !nackable {
            sender.voice.hear(now, header.ext_vals.audio_level);
        }
        // In a large room, each receiver gets only some voices.
        let audible = if nackable { None } else { self.voices.get(&sender.room) };
        let Some(members) = self.rooms.get(&sender.room) else { return };
        let clock_rate = relay::clock_rate(&params);
        // What the sender's header extensions said goes on: how loud (RFC 6464: the pages'
        // speaking ring) and which way up a phone's picture is. str0m adds the rest per receiver.
        let said = ExtensionValues {
            audio_level: header.ext_vals.audio_level,
            voice_activity: header.ext_vals.voice_activity,
            video_orientation: header.ext_vals.video_orientation,
            ..ExtensionValues::default()
        };
        for id in members {
            if *id == source {
                continue;
            }
            if audible.is_some_and(|audible| !audible.hears(*id, source)) {
                continue;
            }
            let Some(person) = self.people.get_mut(id) else { continue };
            let Some(out) = person.slots.carrying((source, mid)) else { continue };
            let relay = person.relays.entry(out).or_default();
            if !relay.passes(layer, keyframe.is_some()) {
                continue;
            }
            // Their browser may number the codec otherwise (Chromium's Opus is 111, Firefox's
            // 109): the same codec by its parameters.
            let Some(pt) = relay.pt(header.payload_type, || Some(person.rtc.codec_config().match_params(params)?.pt()))
            else {
                continue;
            };
            let mut api = person.rtc.direct_api();
            let cached = relay.ssrc.filter(|ssrc| api.stream_tx(ssrc).is_some());
            let Some(ssrc) = cached.or_else(|| Some(api.stream_tx_by_mid(out, None)?.ssrc())) else { continue };
            relay.ssrc = Some(ssrc);
            let (seq, time) =
                relay.renumber(header.ssrc, packet.seq_no, header.timestamp, packet.timestamp, clock_rate);
            let Some(stream) = api.stream_tx(&ssrc) else { continue };
            let write = RtpWrite::new(pt, seq, time, packet.timestamp, packet.payload.clone())
                .marker(header.marker)
                .ext_vals(said.clone())
                .nackable(nackable);
            stream.write_rtp(write);
            if !nackable {
                person.audio_out.add(now, packet.payload.len());
            }
            self.counts.packets_out += 1;
            if !person.written {
                person.written = true;
                self.written.push(*id);
            }
        }
    }

    /// A datagram received from `source`; false if it was nobody's (the edge closes an ICE-TCP
    /// connection that sends one).
    pub fn receive(&mut self, now: Instant, source: Path, datagram: &[u8]) -> bool {
        let (person, claimed) = match self.router.route(source, datagram) {
            Route::Known(person) => (person, false),
            Route::Claimed(person) => (person, true),
            Route::Unknown => {
                self.counts.from_strangers += 1;
                return false;
            }
        };
        let destination = match source.proto {
            Protocol::Tcp => self.tcp,
            _ => Some(self.udp),
        };
        let Some(Ok(receive)) = destination.map(|to| Receive::new(source.proto, source.peer, to, datagram)) else {
            self.counts.malformed += 1;
            return true;
        };
        let Some(entry) = self.people.get_mut(&person) else { return false };
        let input = Input::Receive(now, receive);
        if claimed {
            // Their ICE agent checks the request's integrity with their password: only then is
            // the address theirs.
            if !entry.rtc.accepts(&input) {
                self.counts.refused_checks += 1;
                return false;
            }
            self.router.learn(source, person);
        }
        if entry.rtc.handle_input(input).is_err() {
            self.counts.malformed += 1;
        }
        self.drain(now, person);
        true
    }

    /// The clock reached `now`: every `Rtc` whose deadline has come runs its timers, and
    /// keyframe requests held back are asked once the limit allows.
    pub fn tick(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (id, person) in &mut self.people {
            let asked = &person.keyframe_asked;
            person.keyframe_owed.retain(|((mid, rid), kind)| {
                let owed = owed_at(asked, (*mid, *rid)).is_some_and(|due| due > now);
                if !owed {
                    due.push(((*id, *mid, *rid), *kind));
                }
                owed
            });
        }
        for (source, kind) in due {
            self.ask_keyframe(now, source, kind);
        }
        if now >= self.next_choice {
            self.next_choice = now + CHOOSE_EVERY;
            let everyone: Vec<PersonId> = self.people.keys().copied().collect();
            for id in everyone {
                self.choose_layers(now, id);
            }
            let rooms: Vec<String> = self.rooms.keys().cloned().collect();
            for room in rooms {
                self.dynacast(now, &room);
                self.choose_voices(now, &room);
            }
        }
        let due: Vec<PersonId> =
            self.people.iter().filter(|(_, person)| person.deadline <= now).map(|(id, _)| *id).collect();
        for id in due {
            if let Some(person) = self.people.get_mut(&id) {
                let _ = person.rtc.handle_input(Input::Timeout(now));
            }
            self.drain(now, id);
        }
    }

    /// When [`Self::tick`] is next needed.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.people
            .values()
            .flat_map(|person| {
                let owed = person.keyframe_owed.iter().filter_map(|(key, _)| owed_at(&person.keyframe_asked, *key));
                owed.chain([person.deadline])
            })
            .chain((!self.people.is_empty()).then_some(self.next_choice))
            .min()
    }

    /// The next datagram to send, once everyone written to is polled.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        while let Some(id) = self.written.pop() {
            if let Some(person) = self.people.get_mut(&id) {
                person.written = false;
            }
            self.drain(now, id);
        }
        self.transmits.pop_front()
    }

    /// An ICE-TCP connection closed: its address is nobody's now.
    pub fn forget(&mut self, source: Path) {
        self.router.forget(source);
    }

    /// The person left, or their signaling died: their `Rtc`, ufrag and addresses go.
    pub fn leave(&mut self, now: Instant, person: PersonId) {
        let Some(mut gone) = self.people.remove(&person) else { return };
        gone.rtc.disconnect();
        self.router.remove(person);
        if let Some(members) = self.rooms.get_mut(&gone.room) {
            members.retain(|id| *id != person);
            if members.is_empty() {
                self.rooms.remove(&gone.room);
                self.voices.remove(&gone.room);
            }
        }
        // The others' m-lines that carried them go off.
        self.offer_missing(now, &gone.room);
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// How many people, rooms and forwarded tracks (a track to one receiver counts once) this
    /// forwarding unit has now.
    pub fn load(&self) -> Load {
        let tracks = self.people.values().map(|person| person.slots.carrying_count()).sum();
        Load { people: self.people.len(), rooms: self.rooms.len(), tracks }
    }

    /// Whether the person's ICE and DTLS are up.
    #[cfg(test)]
    pub fn is_connected(&self, person: PersonId) -> bool {
        self.people.get(&person).is_some_and(|person| person.connected)
    }

    /// Takes everything the person's `Rtc` has to say, up to its next deadline (str0m's rule:
    /// after every change to an `Rtc`, poll it until it asks for the clock); then forwards the
    /// packets it received, and offers the others any track that arrived.
    fn drain(&mut self, now: Instant, id: PersonId) {
        let Some(person) = self.people.get_mut(&id) else { return };
        let mut packets = Vec::new();
        // The person's room, if offers may be due: they added a track the others must be
        // offered, or their connection came up.
        let mut offers_due = None;
        let mut keyframes = Vec::new();
        let mut said = Vec::new();
        let mut opened = false;
        let mut clock_given = false;
        loop {
            match person.rtc.poll_output() {
                // Media just written leaves only once the `Rtc` is given the clock (str0m's
                // pacer): given it now, rather than on the socket task's next turn, which
                // tokio's millisecond timer would make a millisecond or two later.
                Ok(Output::Timeout(deadline)) if deadline <= now && !clock_given => {
                    clock_given = true;
                    if person.rtc.handle_input(Input::Timeout(now)).is_err() {
                        person.deadline = now + std::time::Duration::from_secs(3600);
                        break;
                    }
                }
                Ok(Output::Timeout(deadline)) => {
                    person.deadline = deadline.max(now);
                    break;
                }
                Ok(Output::Transmit(transmit)) => {
                    let to = Path { proto: transmit.proto, peer: transmit.destination };
                    self.transmits.push_back(Transmit { to, bytes: transmit.contents.into() })
                }
                // The offers held back until now go out.
                Ok(Output::Event(Event::Connected)) => {
                    person.connected = true;
                    offers_due = Some(person.room.clone());
                }
                Ok(Output::Event(Event::ChannelOpen(..))) => {
                    person.channel_open = true;
                    opened = true;
                }
                Ok(Output::Event(Event::ChannelData(data))) if !data.binary => said.push(data.data),
                Ok(Output::Event(Event::RtpPacket(packet))) => {
                    self.counts.packets_in += 1;
                    let stream = person.rtc.direct_api().stream_rx(&packet.header.ssrc).map(|s| (s.mid(), s.rid()));
                    packets.extend(stream.map(|(mid, rid)| (mid, rid, packet)));
                }
                Ok(Output::Event(Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }))) => {
                    person.estimate = Some(estimate.as_u64());
                    tracing::debug!(person = id.0, kbps = estimate.as_u64() / 1000, "bandwidth estimate");
                }
                // Their browser's own m-lines: what they send.
                Ok(Output::Event(Event::MediaAdded(added)))
                    if matches!(added.direction, Direction::RecvOnly | Direction::SendRecv) =>
                {
                    // A microphone, a camera and a screen: more would be a page sending what no
                    // page sends, and costing everyone else an m-line each.
                    if person.upstream.len() < MAX_TRACKS {
                        person.upstream.push((added.mid, added.kind));
                        offers_due = Some(person.room.clone());
                    } else {
                        self.counts.tracks_refused += 1;
                    }
                }
                // A receiver lost a picture: its sender is asked, on its behalf (for the layer
                // it is sent).
                Ok(Output::Event(Event::KeyframeRequest(request))) => {
                    if let Some((source, mid)) = person.slots.source_of(request.mid) {
                        let layer = person.relays.get(&request.mid).and_then(Relay::layer);
                        keyframes.push(((source, mid, layer.map(|layer| Rid::from(layer.rid()))), request.kind));
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(_) => {
                    // A broken `Rtc` stays quiet until it is dropped at its person's leaving.
                    person.deadline = now + std::time::Duration::from_secs(3600);
                    break;
                }
            }
        }
        for (mid, rid, packet) in &packets {
            self.forward(id, *mid, *rid, packet);
        }
        for (source, kind) in keyframes {
            self.ask_keyframe(now, source, kind);
        }
        if let Some(room) = offers_due {
            self.offer_missing(now, &room);
        }
        if opened {
            self.tell_newcomer(now, id);
        }
        for message in said {
            self.pass_on(now, id, &message);
        }
    }

    /// Chooses again the layer `receiver` gets of each camera they are sent, asks the keyframes
    /// a change needs, and tells str0m's estimator what to probe for: the layers their tiles
    /// want.
    fn choose_layers(&mut self, now: Instant, receiver: PersonId) {
        let Some(person) = self.people.get(&receiver) else { return };
        let shown: Vec<_> = person
            .slots
            .carried()
            .map(|(out, source)| {
                let tile = match &person.view {
                    Some(view) => view.get(&out).copied(),
                    None => Some((u32::MAX, u32::MAX)),
                };
                let current = person.relays.get(&out).and_then(|relay| relay.choice?.layer);
                (out, source, tile, current)
            })
            .collect();
        let mut items = Vec::new();
        for (out, (source, mid), tile, current) in shown {
            let Some(sender) = self.people.get_mut(&source) else { continue };
            // Layers the server paused are offered: it resumes them when chosen.
            let told = sender.dynacast.get(&mid).and_then(|(_, told)| told.as_ref());
            let screen = sender.screen;
            let Some(arriving) = sender.arriving.get_mut(&mid) else { continue };
            // What the sender sends, or would if asked: its screen is the full layer alone.
            let layers = arriving
                .iter_mut()
                .filter(|arriving| !screen || arriving.layer == Layer::Full)
                .filter(|arriving| arriving.coming(now) || paused(told, arriving.layer))
                .map(|arriving| {
                    // Measured while it comes (the rate falls off over a window once it stops).
                    let measured = arriving.rate.bps(now).filter(|bps| *bps > 0);
                    if now.saturating_duration_since(arriving.at) < Rate::WINDOW {
                        arriving.last_bps = measured.or(arriving.last_bps);
                    }
                    Offered {
                        layer: arriving.layer,
                        width: arriving.size.0,
                        height: arriving.size.1,
                        // A paused layer costs what it did when it last came, or what its
                        // encoder may send.
                        bps: arriving.last_bps.unwrap_or(u64::from(arriving.layer.max_bitrate())),
                    }
                })
                .collect();
            let speaking = sender.voice.speaking(now);
            items.push(Item { key: (out, source, mid), layers, tile, speaking, current });
        }
        let Some(person) = self.people.get_mut(&receiver) else { return };
        let audio = person.audio_out.bps(now).unwrap_or(0);
        // No estimate, no budget: a link is not called slow on a guess.
        let budget = person.estimate.map(|estimate| estimate.saturating_sub(audio));
        let choices = layers::choose(&items, budget);
        let mut keyframes = Vec::new();
        let mut receiving = Receiving { tiles: Vec::new(), slow: false };
        for ((out, source, mid), choice) in choices {
            if person.relays.entry(out).or_default().choose(choice) {
                keyframes.push((source, mid, choice.layer.map(|layer| Rid::from(layer.rid()))));
            }
            receiving.slow |= choice.reason == Reason::Bandwidth;
            receiving.tiles.push(ReceivedLayer { mid: out.to_string(), layer: choice.layer, reason: choice.reason });
        }
        tracing::trace!(person = receiver.0, budget, ?receiving, "layers chosen");
        if person.channel_open && person.receiving.as_ref() != Some(&receiving) {
            let message = serde_json::to_vec(&FromUnit::Receiving(receiving.clone())).expect("serializes");
            if person.tell(&message) {
                person.receiving = Some(receiving);
            }
        }
        self.drain(now, receiver);
        for source in keyframes {
            self.ask_keyframe(now, source, KeyframeRequestKind::Pli);
        }
    }

    /// Tells each sender of `room` which layers of their camera to send: those someone is sent or
    /// is switching to ([`Dynacast`]).
    fn dynacast(&mut self, now: Instant, room: &str) {
        let Some(members) = self.rooms.get(room).cloned() else { return };
        let mut needed: HashMap<(PersonId, Mid), Vec<Layer>> = HashMap::new();
        for id in &members {
            let Some(person) = self.people.get(id) else { continue };
            for (out, source) in person.slots.carried() {
                let Some(relay) = person.relays.get(&out) else { continue };
                let layers = needed.entry(source).or_default();
                layers.extend(relay.layer().into_iter().chain(relay.choice.and_then(|choice| choice.layer)));
            }
        }
        for id in &members {
            let Some(person) = self.people.get_mut(id) else { continue };
            let mids: Vec<Mid> = person.arriving.keys().copied().collect();
            for mid in mids {
                let wanted = needed.remove(&(*id, mid)).unwrap_or_default();
                let (dynacast, told) = person.dynacast.entry(mid).or_insert_with(|| (Dynacast::new(now), None));
                // A layer that is not coming, and not because the server paused it, stays on: no
                // one can be given it before it comes. (A browser short of bandwidth at the start,
                // as each is for its first seconds, sends its larger layers only later.)
                let coming = |layer| person.arriving[&mid].iter().any(|a| a.layer == layer && a.coming(now));
                let needed = dynacast.active(now, wanted);
                let active: Vec<Layer> = Layer::ALL
                    .into_iter()
                    .filter(|layer| needed.contains(layer) || !(coming(*layer) || paused(told.as_ref(), *layer)))
                    .collect();
                if person.channel_open && told.as_ref() != Some(&active) {
                    let message = serde_json::to_vec(&FromUnit::SendLayers(active.clone())).expect("serializes");
                    if person.tell(&message) {
                        person.dynacast.get_mut(&mid).expect("just made").1 = Some(active);
                    }
                }
            }
            self.drain(now, *id);
        }
    }

    /// Chooses whose voices `room` forwards ([`voices::audible`]).
    fn choose_voices(&mut self, now: Instant, room: &str) {
        let Some(members) = self.rooms.get(room) else { return };
        let voices: Vec<(PersonId, Voice)> =
            members.iter().filter_map(|id| Some((*id, self.people.get(id)?.voice))).collect();
        match voices::audible(&voices, now) {
            Some(audible) => self.voices.insert(room.to_owned(), audible),
            None => self.voices.remove(room),
        };
    }

    /// Takes a `VIEW` (the tiles `person`'s page shows), which is for the server, not the others.
    fn view(&mut self, now: Instant, person: PersonId, message: &[u8]) {
        let Some(entry) = self.people.get_mut(&person) else { return };
        match serde_json::from_slice::<PeerMessage>(message) {
            Ok(PeerMessage::View(tiles)) if tiles.len() <= MAX_VIEW_TILES => {
                let tiles = tiles.into_iter().map(|tile| (Mid::from(tile.mid.as_str()), (tile.width, tile.height)));
                entry.view = Some(tiles.collect());
                let room = entry.room.clone();
                self.choose_layers(now, person);
                self.dynacast(now, &room);
            }
            _ => self.counts.messages_dropped += 1,
        }
    }

    /// `newcomer`'s channel opened: they get everyone else's standing messages, then what was
    /// said to them meanwhile.
    fn tell_newcomer(&mut self, now: Instant, newcomer: PersonId) {
        let Some(room) = self.people.get(&newcomer).and_then(|person| self.rooms.get(&person.room)) else { return };
        let standing: Vec<Vec<u8>> = room
            .iter()
            .filter(|id| **id != newcomer)
            .filter_map(|id| self.people.get(id))
            .flat_map(|other| other.standing.iter().map(|(_, message)| envelope(other.label, message)))
            .collect();
        let Some(person) = self.people.get_mut(&newcomer) else { return };
        let waiting = std::mem::take(&mut person.waiting);
        for message in standing.into_iter().chain(waiting) {
            self.counts.messages_passed += u64::from(person.tell(&message));
        }
        self.drain(now, newcomer);
    }

    /// Passes a message from `source`'s data channel on to everyone else in their room, as
    /// `{"from": <their peer id>, "message": <it>}`: a JSON value of at most
    /// [`MAX_PEER_MESSAGE_UNITS`] bytes, within their allowance. The server reads no more of it,
    /// unless it is the server's own (`VIEW`).
    fn pass_on(&mut self, now: Instant, source: PersonId, message: &[u8]) {
        let Some(person) = self.people.get_mut(&source) else { return };
        let (used, at) = person.said;
        let used = (used - now.saturating_duration_since(at).as_secs_f64() * MESSAGES_PER_SECOND).max(0.0);
        let fits = used + 1.0 <= MESSAGE_BURST
            && message.len() <= MAX_PEER_MESSAGE_UNITS as usize
            && serde_json::from_slice::<&RawValue>(message).is_ok();
        person.said = (used + f64::from(u8::from(fits)), now);
        if !fits {
            self.counts.messages_dropped += 1;
            return;
        }
        let kind = serde_json::from_slice::<Typed>(message).ok();
        if kind.as_ref().is_some_and(|typed| typed.message_type == "VIEW") {
            return self.view(now, source, message);
        }
        let standing = kind.and_then(|typed| REMEMBERED.into_iter().find(|kind| *kind == typed.message_type));
        if standing == Some("MEDIA_STATE") {
            if let Ok(PeerMessage::MediaState(state)) = serde_json::from_slice::<PeerMessage>(message) {
                person.screen = state.screen;
            }
        }
        if let Some(kind) = standing {
            person.standing.retain(|(other, _)| *other != kind);
            person.standing.push((kind, message.to_vec()));
        }
        let envelope = envelope(person.label, message);
        let room = self.rooms.get(&person.room).cloned().unwrap_or_default();
        for id in room.into_iter().filter(|id| *id != source) {
            let Some(other) = self.people.get_mut(&id) else { continue };
            if !other.channel_open {
                // Standing messages reach them anyway; the rest waits, within a bound.
                if standing.is_none() {
                    match other.waiting.len() < WAITING {
                        true => other.waiting.push(envelope.clone()),
                        false => self.counts.messages_dropped += 1,
                    }
                }
                continue;
            }
            self.counts.messages_passed += u64::from(other.tell(&envelope));
            self.drain(now, id);
        }
    }
}

impl Person {
    /// A packet of `layer` of their camera on m-line `mid` arrived: its size and rate.
    fn arrived(&mut self, mid: Mid, layer: Layer, keyframe: Option<vp8::Keyframe>, bytes: usize, now: Instant) {
        let layers = self.arriving.entry(mid).or_default();
        let index = match layers.iter().position(|arriving| arriving.layer >= layer) {
            Some(index) if layers[index].layer == layer => index,
            other => {
                let index = other.unwrap_or(layers.len());
                layers.insert(index, Arriving { layer, size: (0, 0), rate: Rate::new(now), last_bps: None, at: now });
                index
            }
        };
        let arriving = &mut layers[index];
        arriving.rate.add(now, bytes);
        arriving.at = now;
        if let Some(keyframe) = keyframe {
            arriving.size = (keyframe.width, keyframe.height);
        }
    }

    /// Writes `message` on their data channel; whether it took it.
    fn tell(&mut self, message: &[u8]) -> bool {
        self.rtc.channel(self.channel).is_some_and(|mut channel| channel.write(false, message).is_ok())
    }
}

/// When a keyframe may next be asked of m-line `mid` (a request is held back only after one
/// was asked).
fn owed_at(asked: &HashMap<(Mid, Option<Rid>), Instant>, key: (Mid, Option<Rid>)) -> Option<Instant> {
    asked.get(&key).map(|at| *at + KEYFRAME_EVERY)
}

/// A message passed on: `{"from": <the sender's label>, "message": <it, as sent>}`.
fn envelope(from: u64, message: &[u8]) -> Vec<u8> {
    let mut envelope = format!("{{\"from\":{from},\"message\":").into_bytes();
    envelope.extend_from_slice(message);
    envelope.push(b'}');
    envelope
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use str0m::{
        change::SdpAnswer,
        media::{Direction, ExtensionValues, Frequency, MediaKind, MediaTime, Mid},
        rtp::VideoOrientation,
    };

    use super::*;

    const SERVER: &str = "192.0.2.1:3000";
    const SERVER_TCP: &str = "192.0.2.1:3001";

    /// A browser stand-in: a full (not lite) str0m peer at its own address.
    struct Client {
        rtc: Rtc,
        /// Its UDP address, or its end of an ICE-TCP connection.
        address: SocketAddr,
        proto: Protocol,
        /// The microphone's m-line, once it called.
        mid: Option<Mid>,
        /// The camera's.
        camera: Option<Mid>,
        /// The keyframe requests that came to it, by m-line.
        keyframe_requests: Vec<Mid>,
        /// The frames it received, by m-line.
        frames: Vec<Mid>,
        /// What each frame's header extensions said.
        said: Vec<ExtensionValues>,
        /// Who it is on the server, once it called.
        person: Option<PersonId>,
        /// The server's m-lines, as its last offer said: whose media each carries.
        tracks: Vec<(Mid, u64)>,
        /// The server's last offer.
        last_offer: String,
        /// The data channel, as a page makes it (negotiated, id 0), and what came on it.
        channel: Option<ChannelId>,
        heard: Vec<String>,
        /// The simulcast layers its camera offers (none: one stream).
        layers: Vec<&'static str>,
        /// The layer mark of each video frame it received (see [`picture`]).
        pictures: Vec<u8>,
    }

    impl Client {
        fn new(now: Instant, address: &str) -> Self {
            let address: SocketAddr = address.parse().unwrap();
            Self::with_candidate(now, Candidate::host(address, "udp").unwrap())
        }

        /// One whose UDP is blocked: its only candidate is an active ICE-TCP one, as a
        /// browser's.
        fn over_tcp(now: Instant, address: &str) -> Self {
            let candidate = Candidate::builder().tcp().host(address.parse().unwrap()).tcptype(TcpType::Active);
            Self::with_candidate(now, candidate.build().unwrap())
        }

        fn with_candidate(now: Instant, candidate: Candidate) -> Self {
            let (address, proto) = (candidate.addr(), candidate.proto());
            let mut rtc = RtcConfig::new().clear_codecs().enable_opus(true, false).enable_vp8(true).build(now);
            rtc.add_local_candidate(candidate);
            Self {
                rtc,
                address,
                proto,
                mid: None,
                camera: None,
                keyframe_requests: Vec::new(),
                frames: Vec::new(),
                said: Vec::new(),
                person: None,
                tracks: Vec::new(),
                last_offer: String::new(),
                channel: None,
                heard: Vec::new(),
                layers: Vec::new(),
                pictures: Vec::new(),
            }
        }

        /// Offers to send audio, and takes the server's answer (changed by `tamper`).
        fn call(&mut self, core: &mut Core, now: Instant, person: PersonId, tamper: impl Fn(String) -> String) {
            let mut change = self.rtc.sdp_api();
            self.mid = Some(change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
            let simulcast = (!self.layers.is_empty()).then(|| {
                let mut simulcast = str0m::media::Simulcast::new();
                for rid in &self.layers {
                    simulcast.add_send_layer(str0m::media::SimulcastLayer::new(rid));
                }
                simulcast
            });
            self.camera = Some(change.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast));
            let config = ChannelConfig { label: "duo".into(), negotiated: Some(0), ..ChannelConfig::default() };
            self.channel = Some(change.add_channel_with_config(config));
            self.person = Some(person);
            let (offer, pending) = change.apply().unwrap();
            let answer = tamper(core.offer(now, person, &offer.to_sdp_string()).unwrap());
            self.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
        }

        /// The server's m-line that carries someone's camera to it.
        fn video_slot(&self) -> Mid {
            let video = |mid: &Mid| self.rtc.media(*mid).is_some_and(|media| media.kind() == MediaKind::Video);
            self.tracks.iter().map(|(mid, _)| *mid).find(video).unwrap()
        }

        /// Sends what it has to the core; returns the last datagram it sent.
        fn send(&mut self, core: &mut Core, now: Instant) -> Option<Vec<u8>> {
            let mut last = None;
            while let Ok(output) = self.rtc.poll_output() {
                match output {
                    Output::Transmit(transmit) => {
                        assert_eq!(transmit.destination, server(transmit.proto));
                        core.receive(now, Path { proto: self.proto, peer: self.address }, &transmit.contents);
                        last = Some(transmit.contents.into());
                    }
                    Output::Timeout(_) => break,
                    Output::Event(Event::MediaData(frame)) => {
                        let video = self.rtc.media(frame.mid).is_some_and(|media| media.kind() == MediaKind::Video);
                        if let Some(mark) = frame.data.get(10).filter(|_| video) {
                            self.pictures.push(*mark);
                        }
                        self.frames.push(frame.mid);
                        self.said.push(frame.ext_vals);
                    }
                    Output::Event(Event::KeyframeRequest(request)) => self.keyframe_requests.push(request.mid),
                    Output::Event(Event::ChannelData(data)) => self.heard.push(String::from_utf8(data.data).unwrap()),
                    Output::Event(_) => {}
                }
            }
            last
        }
    }

    /// The server's address for `proto`.
    fn server(proto: Protocol) -> SocketAddr {
        match proto {
            Protocol::Tcp => SERVER_TCP.parse().unwrap(),
            _ => SERVER.parse().unwrap(),
        }
    }

    /// Moves every datagram and offer waiting, both ways, then the clock on by 10 ms.
    fn step(core: &mut Core, clients: &mut [&mut Client], now: &mut Instant) {
        for client in clients.iter_mut() {
            client.send(core, *now);
        }
        // The server's offers, answered as a browser answers them.
        while let Some(offer) = core.poll_offer() {
            let client =
                clients.iter_mut().find(|client| client.person == Some(offer.to)).expect("an offer to a client");
            let answer = client.rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer.sdp).unwrap()).unwrap();
            core.answer(*now, offer.to, &answer.to_sdp_string()).unwrap();
            client.tracks = offer.tracks;
            client.last_offer = offer.sdp;
        }
        while let Some(transmit) = core.poll_transmit(*now) {
            // To a client not in this step (one that left, say): lost, as on a network.
            let to = |client: &&mut &mut Client| Path { proto: client.proto, peer: client.address } == transmit.to;
            let Some(client) = clients.iter_mut().find(to) else { continue };
            let from = server(transmit.to.proto);
            let receive = Receive::new(transmit.to.proto, from, client.address, &transmit.bytes).unwrap();
            client.rtc.handle_input(Input::Receive(*now, receive)).unwrap();
        }
        *now += Duration::from_millis(10);
        core.tick(*now);
        for client in clients.iter_mut() {
            client.rtc.handle_input(Input::Timeout(*now)).unwrap();
        }
    }

    /// Steps until `done`, within five simulated seconds.
    fn run(
        core: &mut Core,
        clients: &mut [&mut Client],
        now: &mut Instant,
        done: impl Fn(&Core, &[&mut Client]) -> bool,
    ) {
        let end = *now + Duration::from_secs(5);
        while !done(core, clients) {
            assert!(*now < end, "not done in five seconds");
            step(core, clients, now);
        }
    }

    #[test]
    fn a_browser_connects_through_ice_lite_and_its_media_arrives() {
        let mut now = Instant::now();
        let mut core = Core::new(SERVER.parse().unwrap(), None).unwrap();
        let mut ann = Client::new(now, "198.51.100.7:50000");
        let person = core.join(now, "room", 0);
        ann.call(&mut core, now, person, |answer| answer);
        run(&mut core, &mut [&mut ann], &mut now, |core, clients| {
            core.is_connected(person) && clients[0].rtc.is_connected()
        });

        speak(&mut core, &mut [&mut ann], 0, &mut now);
        run(&mut core, &mut [&mut ann], &mut now, |core, _| core.counts().packets_in >= 5);
        // No one else to send it to; nothing dropped.
        assert_eq!(core.counts(), Counts { packets_in: core.counts().packets_in, ..Counts::default() });
    }

    #[test]
    fn a_browser_whose_udp_is_blocked_connects_over_ice_tcp_and_hears_one_on_udp() {
        let mut now = Instant::now();
        let mut core = Core::new(SERVER.parse().unwrap(), Some(SERVER_TCP.parse().unwrap())).unwrap();
        let mut ann = Client::new(now, "198.51.100.7:50000");
        // Its TCP port is the same number as Ann's UDP one: different paths all the same.
        let mut bob = Client::over_tcp(now, "198.51.100.7:50000");
        let (ann_id, bob_id) = (core.join(now, "room", 1), core.join(now, "room", 2));
        ann.call(&mut core, now, ann_id, |answer| answer);
        bob.call(&mut core, now, bob_id, |answer| answer);
        run(&mut core, &mut [&mut ann, &mut bob], &mut now, |core, clients| {
            core.is_connected(ann_id) && core.is_connected(bob_id) && clients.iter().all(|c| c.rtc.is_connected())
        });
        speak(&mut core, &mut [&mut ann, &mut bob], 0, &mut now);
        run(&mut core, &mut [&mut ann, &mut bob], &mut now, |_, clients| clients[1].frames.len() >= 5);
        speak(&mut core, &mut [&mut ann, &mut bob], 1, &mut now);
        run(&mut core, &mut [&mut ann, &mut bob], &mut now, |_, clients| clients[0].frames.len() >= 5);
    }

    #[test]
    fn without_an_ice_tcp_listener_a_tcp_only_browser_never_connects() {
        let mut now = Instant::now();
        let mut core = Core::new(SERVER.parse().unwrap(), None).unwrap();
        let mut bob = Client::over_tcp(now, "198.51.100.8:50000");
        let person = core.join(now, "room", 2);
        bob.call(&mut core, now, person, |answer| {
            assert!(!answer.contains("tcptype"), "no ICE-TCP candidate without a listener");
            answer
        });
        for _ in 0..300 {
            step(&mut core, &mut [&mut bob], &mut now);
        }
        assert!(!core.is_connected(person) && !bob.rtc.is_connected());
    }

    /// Sends ten frames of Opus from `client`, moving everything along after each.
    fn speak(core: &mut Core, clients: &mut [&mut Client], speaker: usize, now: &mut Instant) {
        let mid = clients[speaker].mid.unwrap();
        let pt = clients[speaker].rtc.writer(mid).unwrap().payload_params().next().unwrap().pt();
        for frame in 0..10u64 {
            let time = MediaTime::new(frame * 960, Frequency::FORTY_EIGHT_KHZ);
            // -30 dBov: a voice, as a browser's RFC 6464 extension says it.
            let writer = clients[speaker].rtc.writer(mid).unwrap().audio_level(-30, true);
            writer.write(pt, *now, time, vec![0x55; 40]).unwrap();
            step(core, clients, now);
            step(core, clients, now);
        }
    }

    #[test]
    fn everyone_in_a_room_gets_everyone_elses_audio_and_no_other_rooms() {
        let mut now = Instant::now();
        let mut core = Core::new(SERVER.parse().unwrap(), None).unwrap();
        let mut ann = Client::new(now, "198.51.100.7:50000");
        let mut bob = Client::new(now, "198.51.100.8:50000");
        let mut cy = Client::new(now, "198.51.100.9:50000");
        let ann_id = core.join(now, "room", 1);
        let bob_id = core.join(now, "room", 2);
        let cy_id = core.join(now, "another room", 3);
        ann.call(&mut core, now, ann_id, |answer| answer);
        bob.call(&mut core, now, bob_id, |answer| answer);
        cy.call(&mut core, now, cy_id, |answer| answer);
        run(&mut core, &mut [&mut ann, &mut bob, &mut cy], &mut now, |core, _| {
            [ann_id, bob_id, cy_id].iter().all(|id| core.is_connected(*id))
        });
        // Ann speaks: Bob hears her on the m-line the server added for her; Cy, in another room,
        // gets nothing.
        speak(&mut core, &mut [&mut ann, &mut bob, &mut cy], 0, &mut now);
        run(&mut core, &mut [&mut ann, &mut bob, &mut cy], &mut now, |_, clients| clients[1].frames.len() >= 5);
        // On the m-line the server's offer said carries Ann (label 1), with her level.
        assert!(bob.frames.iter().all(|mid| bob.tracks.contains(&(*mid, 1))), "{:?} {:?}", bob.frames, bob.tracks);
        assert!(bob.said.iter().all(|said| said.audio_level == Some(-30)), "{:?}", bob.said);
        assert!(ann.frames.is_empty() && cy.frames.is_empty());
        // And Bob to Ann.
        speak(&mut core, &mut [&mut ann, &mut bob, &mut cy], 1, &mut now);
        run(&mut core, &mut [&mut ann, &mut bob, &mut cy], &mut now, |_, clients| clients[0].frames.len() >= 5);
        assert!(cy.frames.is_empty());
    }

    #[test]
    fn a_room_of_eleven_forwards_the_three_loudest_voices_and_whoever_speaks() {
        let mut now = Instant::now();
        let mut core = Core::new(SERVER.parse().unwrap(), None).unwrap();
        let mut clients: Vec<Client> =
            (0..11).map(|i| Client::new(now, &format!("198.51.100.{}:50000", 20 + i))).collect();
        for (label, client) in (1..).zip(clients.iter_mut()) {
            let id = core.join(now, "room", label);
            client.call(&mut core, now, id, |answer| answer);
        }
        let mut all: Vec<&mut Client> = clients.iter_mut().collect();
        run(&mut core, &mut all, &mut now, |_, clients| clients.iter().all(|client| client.tracks.len() == 20));
        // Person 1 speaks; the others' microphones hear their rooms, 2 the quietest, 11 the least
        // quiet.
        let level = |index: usize| if index == 0 { -20 } else { -80 + index as i8 };
        let talk = |core: &mut Core, all: &mut [&mut Client], now: &mut Instant, rounds: u64| {
            for round in 0..rounds {
                for (index, client) in all.iter_mut().enumerate() {
                    let mid = client.mid.unwrap();
                    let pt = client.rtc.writer(mid).unwrap().payload_params().next().unwrap().pt();
                    let time = MediaTime::new(round * 960, Frequency::FORTY_EIGHT_KHZ);
                    let writer = client.rtc.writer(mid).unwrap().audio_level(level(index), level(index) >= -45);
                    writer.write(pt, *now, time, vec![0x55; 40]).unwrap();
                }
                step(core, all, now);
                step(core, all, now);
            }
        };
        talk(&mut core, &mut all, &mut now, 50);
        all[10].frames.clear();
        talk(&mut core, &mut all, &mut now, 50);
        let listener = &all[10];
        let mut heard: Vec<u64> = listener
            .frames
            .iter()
            .filter_map(|mid| listener.tracks.iter().find(|(track, _)| track == mid).map(|(_, label)| *label))
            .collect();
        heard.sort();
        heard.dedup();
        // The speaker, and the two loudest others (the loudest after the speaker is the
        // listener, 11, who is not sent their own).
        assert_eq!(heard, [1, 9, 10], "{:?}", core.counts());
    }

    /// `client` says `text` on its data channel.
    fn say(client: &mut Client, text: &str) -> bool {
        let channel = client.channel.unwrap();
        client.rtc.channel(channel).is_some_and(|mut channel| channel.write(false, text.as_bytes()).unwrap())
    }

    #[test]
    fn data_channel_messages_reach_the_others_of_the_room_named_by_the_server_within_an_allowance() {
        let mut now = Instant::now();
        let mut core = Core::new(SERVER.parse().unwrap(), None).unwrap();
        let (mut ann, mut bob, mut cy) = (
            Client::new(now, "198.51.100.7:50000"),
            Client::new(now, "198.51.100.8:50000"),
            Client::new(now, "198.51.100.9:50000"),
        );
        let ids = [core.join(now, "room", 1), core.join(now, "room", 2), core.join(now, "another room", 3)];
        for (client, id) in [(&mut ann, ids[0]), (&mut bob, ids[1]), (&mut cy, ids[2])] {
            client.call(&mut core, now, id, |answer| answer);
        }
        run(&mut core, &mut [&mut ann, &mut bob, &mut cy], &mut now, |core, _| {
            ids.iter().all(|id| core.people[id].channel_open)
        });
        for _ in 0..10 {
            step(&mut core, &mut [&mut ann, &mut bob, &mut cy], &mut now);
        }
        // Passed on as `{"from", "message"}` with the sender's label; a claimed `from` inside
        // stays inside; not JSON, or over the size, is dropped.
        assert!(say(&mut ann, r#"{"message_type":"NAME","content":"Ann","from":3}"#));
        assert!(say(&mut ann, "not json"));
        assert!(say(&mut ann, &format!("\"{}\"", "x".repeat(MAX_PEER_MESSAGE_UNITS as usize))));
        run(&mut core, &mut [&mut ann, &mut bob, &mut cy], &mut now, |core, _| core.counts().messages_dropped == 2);
        run(&mut core, &mut [&mut ann, &mut bob, &mut cy], &mut now, |_, clients| !clients[1].heard.is_empty());
        assert_eq!(bob.heard, [r#"{"from":1,"message":{"message_type":"NAME","content":"Ann","from":3}}"#]);
        assert!(ann.heard.is_empty() && cy.heard.is_empty(), "not back to Ann, not to another room");
        // A flood: the burst passes, the rest is dropped and counted.
        for n in 0..100 {
            say(&mut bob, &n.to_string());
        }
        run(&mut core, &mut [&mut ann, &mut bob, &mut cy], &mut now, |core, _| {
            core.counts().messages_passed + core.counts().messages_dropped >= 103
        });
        let passed = core.counts().messages_passed;
        assert!((30..=32).contains(&passed), "{passed} passed of 101");

        // Someone who comes later hears who is there (the last name and media state of each),
        // not what was said before.
        assert!(say(&mut ann, r#"{"message_type":"NAME","content":"Ann B."}"#));
        let mut dan = Client::new(now, "198.51.100.10:50000");
        let dan_id = core.join(now, "room", 4);
        dan.call(&mut core, now, dan_id, |answer| answer);
        // Said after he came in, before his channel opened: kept for him.
        assert!(say(&mut ann, r#"{"message_type":"CHAT","content":"early"}"#));
        run(&mut core, &mut [&mut ann, &mut bob, &mut cy, &mut dan], &mut now, |_, clients| {
            clients[3].heard.len() >= 2
        });
        assert_eq!(
            dan.heard,
            [
                r#"{"from":1,"message":{"message_type":"NAME","content":"Ann B."}}"#,
                r#"{"from":1,"message":{"message_type":"CHAT","content":"early"}}"#
            ]
        );
    }

    /// Ann in a room, called and connected; Bob in it too (id 2), not called yet.
    fn ann_connected_bob_in_the_room() -> (Instant, Core, Client, Client, PersonId) {
        let mut now = Instant::now();
        let mut core = Core::new(SERVER.parse().unwrap(), None).unwrap();
        let mut ann = Client::new(now, "198.51.100.7:50000");
        let bob = Client::new(now, "198.51.100.8:50000");
        let ann_id = core.join(now, "room", 1);
        let bob_id = core.join(now, "room", 2);
        ann.call(&mut core, now, ann_id, |answer| answer);
        run(&mut core, &mut [&mut ann], &mut now, |core, _| core.is_connected(ann_id));
        (now, core, ann, bob, bob_id)
    }

    #[test]
    fn a_person_is_offered_the_others_tracks_only_once_their_connection_is_up() {
        let (mut now, mut core, mut ann, mut bob, bob_id) = ann_connected_bob_in_the_room();
        // Bob's offer is answered, his connection not up yet: he is offered nothing yet (nor is
        // Ann offered his tracks: str0m tells of them once he is connected).
        bob.call(&mut core, now, bob_id, |answer| answer);
        assert!(core.poll_offer().is_none());
        // Once it is up, he is offered hers, and she his.
        run(&mut core, &mut [&mut ann, &mut bob], &mut now, |_, clients| {
            clients.iter().all(|client| !client.tracks.is_empty())
        });
        assert!(core.is_connected(bob_id));
        assert_eq!(ann.tracks.iter().map(|(_, label)| *label).collect::<Vec<_>>(), [2, 2]);
        assert_eq!(bob.tracks.iter().map(|(_, label)| *label).collect::<Vec<_>>(), [1, 1]);
    }

    #[test]
    fn a_new_receiver_gets_a_keyframe_asked_for_and_requests_are_passed_on_at_most_twice_a_second() {
        let (mut now, mut core, mut ann, mut bob, bob_id) = ann_connected_bob_in_the_room();
        // Bob comes: once he has the m-line for Ann's camera, Ann is asked for a keyframe for
        // him, once.
        bob.call(&mut core, now, bob_id, |answer| answer);
        let camera = ann.camera.unwrap();
        run(&mut core, &mut [&mut ann, &mut bob], &mut now, |_, clients| {
            clients[0].keyframe_requests.contains(&camera)
        });
        assert_eq!(ann.keyframe_requests, [camera]);

        // Bob asks again and again: Ann hears of it once per half second.
        let slot = bob.video_slot();
        let asked = ann.keyframe_requests.len();
        now += KEYFRAME_EVERY;
        for _ in 0..3 {
            let mut writer = bob.rtc.writer(slot).unwrap();
            if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
                writer.request_keyframe(None, KeyframeRequestKind::Pli).unwrap();
            }
            step(&mut core, &mut [&mut ann, &mut bob], &mut now);
        }
        run(&mut core, &mut [&mut ann, &mut bob], &mut now, |_, clients| clients[0].keyframe_requests.len() > asked);
        for _ in 0..10 {
            step(&mut core, &mut [&mut ann, &mut bob], &mut now);
        }
        assert_eq!(ann.keyframe_requests.len(), asked + 1, "{:?}", core.counts());
        assert!(core.counts().keyframe_requests_held >= 1, "{:?}", core.counts());
        // What was held back is asked once the half second is over: once, however many came.
        for _ in 0..60 {
            step(&mut core, &mut [&mut ann, &mut bob], &mut now);
        }
        assert_eq!(ann.keyframe_requests.len(), asked + 2, "{:?}", core.counts());
    }

    /// A VP8 frame of simulcast layer `layer` (0 the quarter, 2 the full) of a 1280×720 camera,
    /// marked with it after the keyframe header: a keyframe of the layer's size, or a delta frame.
    fn picture(layer: u8, key: bool) -> Vec<u8> {
        let (width, height) = (1280u16 >> (2 - layer), 720u16 >> (2 - layer));
        let mut data = vec![if key { 0x10 } else { 0x11 }, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        data.extend(width.to_le_bytes());
        data.extend(height.to_le_bytes());
        data.push(layer);
        data.resize(200, 0x55);
        data
    }

    /// Ann's camera films for `steps` steps of 10 ms: each of its layers a frame every 30 ms, a
    /// keyframe every 300 ms.
    fn film(core: &mut Core, ann: &mut Client, bob: &mut Client, now: &mut Instant, frame: &mut u64, steps: usize) {
        let camera = ann.camera.unwrap();
        let pt = ann.rtc.writer(camera).unwrap().payload_params().next().unwrap().pt();
        for step_number in 0..steps {
            if step_number % 3 == 0 {
                let time = MediaTime::new(*frame * 2_700, Frequency::NINETY_KHZ);
                for (layer, rid) in ann.layers.clone().into_iter().enumerate() {
                    let writer = ann.rtc.writer(camera).unwrap().rid(rid.into());
                    writer.write(pt, *now, time, picture(layer as u8, frame.is_multiple_of(10))).unwrap();
                }
                *frame += 1;
            }
            step(core, &mut [ann, bob], now);
        }
    }

    #[test]
    fn each_receiver_gets_the_layer_its_tile_needs_switched_at_a_keyframe_and_none_for_a_hidden_tile() {
        let mut now = Instant::now();
        let (mut core, mut ann, mut bob, ..) = ann_watched_by_bob(&mut now, &["q", "h", "f"]);
        let slot = bob.video_slot();
        let mut frame = 0;
        // Bob's page has said nothing of its tiles: he gets the full layer.
        film(&mut core, &mut ann, &mut bob, &mut now, &mut frame, 100);
        assert!(bob.pictures.len() >= 10 && bob.pictures.iter().all(|layer| *layer == 2), "{:?}", bob.pictures);

        // His tile is small: from a keyframe of the quarter layer on, that is all he gets.
        let view = |bob: &mut Client, width: u32, height: u32| {
            let tiles = match width {
                0 => String::new(),
                _ => format!(r#"{{"mid":"{slot}","width":{width},"height":{height}}}"#),
            };
            assert!(say(bob, &format!(r#"{{"message_type":"VIEW","content":[{tiles}]}}"#)));
            bob.pictures.clear();
        };
        view(&mut bob, 320, 180);
        film(&mut core, &mut ann, &mut bob, &mut now, &mut frame, 60);
        let switched = bob.pictures.iter().position(|layer| *layer == 0).expect("the quarter layer");
        assert!(switched <= 10, "within a keyframe's interval: {:?}", bob.pictures);
        assert!(bob.pictures[switched..].iter().all(|layer| *layer == 0), "{:?}", bob.pictures);
        assert_eq!(core.counts().messages_passed, 0, "a VIEW is the server's, not passed on");

        // Larger: the half layer.
        view(&mut bob, 640, 360);
        film(&mut core, &mut ann, &mut bob, &mut now, &mut frame, 60);
        assert_eq!(bob.pictures.last(), Some(&1), "{:?}", bob.pictures);

        // Not shown: nothing, at once.
        view(&mut bob, 0, 0);
        film(&mut core, &mut ann, &mut bob, &mut now, &mut frame, 60);
        assert!(bob.pictures.len() <= 1, "{:?}", bob.pictures);

        // Shown large again: the full layer, from its next keyframe.
        view(&mut bob, 1280, 720);
        film(&mut core, &mut ann, &mut bob, &mut now, &mut frame, 60);
        assert!(!bob.pictures.is_empty() && bob.pictures.iter().all(|layer| *layer == 2), "{:?}", bob.pictures);
    }

    #[test]
    fn a_layer_that_has_not_come_stays_on_and_one_nobody_needs_is_paused() {
        let mut now = Instant::now();
        let (mut core, mut ann, mut bob, ann_id, _) = ann_watched_by_bob(&mut now, &["q", "h", "f"]);
        let (slot, camera) = (bob.video_slot(), ann.camera.unwrap());
        let told = |core: &Core| core.people[&ann_id].dynacast.get(&camera).and_then(|(_, told)| told.clone());
        // Ann's browser holds her full layer back (its estimate is low at first), and Bob's
        // tile is small: after dynacast's hold, the half layer, which no one needs, is paused,
        // and the full one, which has not come, stays on.
        ann.layers = vec!["q", "h"];
        let mut frame = 0;
        film(&mut core, &mut ann, &mut bob, &mut now, &mut frame, 50);
        assert!(say(
            &mut bob,
            &format!(r#"{{"message_type":"VIEW","content":[{{"mid":"{slot}","width":320,"height":180}}]}}"#)
        ));
        film(&mut core, &mut ann, &mut bob, &mut now, &mut frame, 500);
        assert_eq!(told(&core), Some(vec![Layer::Quarter, Layer::Full]));
        // It comes, and no one needs it either: paused too.
        ann.layers = vec!["q", "h", "f"];
        film(&mut core, &mut ann, &mut bob, &mut now, &mut frame, 500);
        assert_eq!(told(&core), Some(vec![Layer::Quarter]));
    }

    #[test]
    fn a_view_that_is_not_one_is_dropped_and_counted_and_changes_nothing() {
        let mut now = Instant::now();
        let (mut core, mut ann, mut bob, _, bob_id) = ann_and_bob(now, &[]);
        run(&mut core, &mut [&mut ann, &mut bob], &mut now, |core, _| core.people[&bob_id].channel_open);
        for _ in 0..10 {
            step(&mut core, &mut [&mut ann, &mut bob], &mut now);
        }
        let too_many = format!(
            r#"{{"message_type":"VIEW","content":[{}]}}"#,
            vec![r#"{"mid":"1","width":1,"height":1}"#; 65].join(",")
        );
        for bad in [
            r#"{"message_type":"VIEW","content":"all"}"#,
            r#"{"message_type":"VIEW","content":[{"mid":1}]}"#,
            &too_many,
        ] {
            assert!(say(&mut bob, bad));
        }
        run(&mut core, &mut [&mut ann, &mut bob], &mut now, |core, _| core.counts().messages_dropped == 3);
        assert!(ann.heard.is_empty(), "{:?}", ann.heard);
        assert_eq!(core.counts().messages_passed, 0);
    }

    /// Ann (her camera in `layers`) and Bob in one room, their offers answered.
    /// Ann sending her camera in `layers`, and Bob receiving it on an open data channel.
    fn ann_watched_by_bob(now: &mut Instant, layers: &[&'static str]) -> (Core, Client, Client, PersonId, PersonId) {
        let (mut core, mut ann, mut bob, ann_id, bob_id) = ann_and_bob(*now, layers);
        run(&mut core, &mut [&mut ann, &mut bob], now, |core, clients| {
            core.people[&bob_id].channel_open && clients[1].tracks.len() == 2
        });
        (core, ann, bob, ann_id, bob_id)
    }

    fn ann_and_bob(now: Instant, layers: &[&'static str]) -> (Core, Client, Client, PersonId, PersonId) {
        let mut core = Core::new(SERVER.parse().unwrap(), None).unwrap();
        let mut ann = Client::new(now, "198.51.100.7:50000");
        let mut bob = Client::new(now, "198.51.100.8:50000");
        ann.layers = layers.to_vec();
        let (ann_id, bob_id) = (core.join(now, "room", 1), core.join(now, "room", 2));
        ann.call(&mut core, now, ann_id, |answer| answer);
        bob.call(&mut core, now, bob_id, |answer| answer);
        (core, ann, bob, ann_id, bob_id)
    }

    #[test]
    fn which_way_up_a_phones_picture_is_goes_on_with_its_frames() {
        let mut now = Instant::now();
        let (mut core, mut ann, mut bob, ann_id, bob_id) = ann_and_bob(now, &[]);
        run(&mut core, &mut [&mut ann, &mut bob], &mut now, |core, clients| {
            core.is_connected(ann_id) && core.is_connected(bob_id) && !clients[1].tracks.is_empty()
        });
        let camera = ann.camera.unwrap();
        let pt = ann.rtc.writer(camera).unwrap().payload_params().next().unwrap().pt();
        for frame in 0..20u64 {
            let time = MediaTime::new(frame * 9_000, Frequency::NINETY_KHZ);
            // A VP8 keyframe's first bytes (the show-frame bit and the start code), then anything.
            let mut data = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
            data.resize(200, 0x55);
            let writer = ann.rtc.writer(camera).unwrap().video_orientation(VideoOrientation::Deg90);
            writer.write(pt, now, time, data).unwrap();
            step(&mut core, &mut [&mut ann, &mut bob], &mut now);
        }
        run(&mut core, &mut [&mut ann, &mut bob], &mut now, |_, clients| !clients[1].said.is_empty());
        assert!(bob.said.iter().all(|said| said.video_orientation == Some(VideoOrientation::Deg90)), "{:?}", bob.said);
    }

    #[test]
    fn a_leavers_m_lines_are_turned_off_and_carry_the_next_person_so_the_sdp_does_not_grow() {
        let mut now = Instant::now();
        let (mut core, mut ann, mut bob, _, bob_id) = ann_and_bob(now, &[]);
        run(&mut core, &mut [&mut ann, &mut bob], &mut now, |_, clients| clients[0].tracks.len() == 2);
        let bobs: Vec<Mid> = ann.tracks.iter().map(|(mid, _)| *mid).collect();
        let m_lines = |client: &Client| client.last_offer.matches("\r\nm=").count();
        let before = m_lines(&ann);

        // Bob goes: Ann's offer names no one on his m-lines.
        core.leave(now, bob_id);
        run(&mut core, &mut [&mut ann], &mut now, |_, clients| clients[0].tracks.is_empty());

        // Cy comes: his tracks go on the m-lines Bob had, and Ann hears him there.
        let mut cy = Client::new(now, "198.51.100.9:50000");
        let cy_id = core.join(now, "room", 3);
        cy.call(&mut core, now, cy_id, |answer| answer);
        run(&mut core, &mut [&mut ann, &mut cy], &mut now, |core, clients| {
            core.is_connected(cy_id) && clients[0].tracks.len() == 2
        });
        assert!(ann.tracks.iter().all(|(mid, label)| *label == 3 && bobs.contains(mid)), "{:?} {bobs:?}", ann.tracks);
        assert_eq!(m_lines(&ann), before, "no m-line added");
        speak(&mut core, &mut [&mut ann, &mut cy], 1, &mut now);
        run(&mut core, &mut [&mut ann, &mut cy], &mut now, |_, clients| clients[0].frames.len() >= 5);
        assert!(ann.frames.iter().all(|mid| bobs.contains(mid)));
    }

    #[test]
    fn a_person_sends_at_most_three_tracks_and_the_rest_are_refused() {
        let mut now = Instant::now();
        let mut core = Core::new(SERVER.parse().unwrap(), None).unwrap();
        let mut ann = Client::new(now, "198.51.100.7:50000");
        let mut bob = Client::new(now, "198.51.100.8:50000");
        let (ann_id, bob_id) = (core.join(now, "room", 1), core.join(now, "room", 2));
        // Ann's page offers three microphones, then a microphone and a camera more: the first
        // three are forwarded, the other two refused.
        let mut change = ann.rtc.sdp_api();
        for _ in 0..3 {
            change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        }
        let (offer, pending) = change.apply().unwrap();
        let answer = core.offer(now, ann_id, &offer.to_sdp_string()).unwrap();
        ann.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
        ann.person = Some(ann_id);
        ann.call(&mut core, now, ann_id, |answer| answer);
        bob.call(&mut core, now, bob_id, |answer| answer);
        run(&mut core, &mut [&mut ann, &mut bob], &mut now, |_, clients| !clients[1].tracks.is_empty());
        assert_eq!(bob.tracks.len(), MAX_TRACKS, "{:?}", bob.tracks);
        assert_eq!(core.counts().tracks_refused, 2);
    }

    #[test]
    fn strangers_and_wrong_passwords_are_dropped_and_counted_and_nothing_answers_them() {
        let mut now = Instant::now();
        let mut core = Core::new(SERVER.parse().unwrap(), None).unwrap();
        let person = core.join(now, "room", 0);
        // Garbage and media from an address nobody proved.
        core.receive(now, Path::udp("203.0.113.9:1".parse().unwrap()), &[0x80, 96, 0, 1, 2, 3]);
        core.receive(now, Path::udp("203.0.113.9:1".parse().unwrap()), b"hello");
        assert_eq!(core.counts().from_strangers, 2);

        // Someone who knows the person's ufrag but not their password: every check is refused,
        // and their address never becomes the person's.
        let mut eve = Client::new(now, "203.0.113.9:2");
        eve.call(&mut core, now, person, |answer| {
            let at = answer.find("a=ice-pwd:").unwrap() + "a=ice-pwd:".len();
            let end = at + answer[at..].find('\r').unwrap();
            format!("{}{}{}", &answer[..at], "x".repeat(end - at), &answer[end..])
        });
        let mut check = None;
        for _ in 0..40 {
            check = eve.send(&mut core, now).or(check);
            assert!(core.poll_transmit(now).is_none(), "nothing answers a check that fails");
            now += Duration::from_millis(50);
            eve.rtc.handle_input(Input::Timeout(now)).unwrap();
            core.tick(now);
        }
        assert!(core.counts().refused_checks > 0, "{:?}", core.counts());
        assert!(!core.is_connected(person));

        // Once the person has left, their ufrag names nobody: the checks are a stranger's.
        core.leave(now, person);
        let strangers = core.counts().from_strangers;
        core.receive(now, Path::udp(eve.address), &check.expect("Eve sent checks"));
        assert_eq!(core.counts().from_strangers, strangers + 1);
    }

    #[test]
    fn an_address_no_browser_can_be_sent_to_is_refused_at_start() {
        for (udp, tcp) in [("0.0.0.0:3000", None), (SERVER, Some("0.0.0.0:3001")), (SERVER, Some("169.254.0.1:3001"))] {
            let error = Core::new(udp.parse().unwrap(), tcp.map(|tcp| tcp.parse().unwrap())).err();
            assert!(matches!(error, Some(SfuError::BadAddress(..))), "{udp} {tcp:?}");
        }
    }

    #[test]
    fn an_offer_that_is_no_session_description_or_for_nobody_is_refused() {
        let now = Instant::now();
        let mut core = Core::new(SERVER.parse().unwrap(), None).unwrap();
        let person = core.join(now, "room", 0);
        assert!(matches!(core.offer(now, person, "v=0 nonsense"), Err(SfuError::BadOffer(_))));
        let mut ann = Client::new(now, "198.51.100.7:50000");
        let mut change = ann.rtc.sdp_api();
        change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, _) = change.apply().unwrap();
        core.leave(now, person);
        assert!(matches!(core.offer(now, person, &offer.to_sdp_string()), Err(SfuError::UnknownPerson)));
    }
}
