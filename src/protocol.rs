//! The signaling wire protocol, shared by the server and the browser client so the two cannot
//! disagree. `docs/protocol.md` is its public description; keep the two in step.
//!
//! Every frame is a JSON text object `{"message_type": "...", "content": ...}`, the shape of
//! the classic WebRTC signaling tutorials. Extra fields are ignored.

use icu_properties::{
    props::{DefaultIgnorableCodePoint, GraphemeBase},
    CodePointSetData,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The largest frame the server accepts; a bigger one closes the socket with 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// The fewest characters a session (`/ws/{room}?session=...`) may have. A session is a
/// reconnect credential and the other person sees a one-way hash of it, which a short one
/// would let them reverse by trying every value.
pub const MIN_SESSION_LEN: usize = 16;

/// WebSocket close codes the server uses (RFC 6455 codes and the app's own 4xxx ones).
pub mod close_code {
    /// The server is shutting down; reconnect (to the next server process).
    pub const GOING_AWAY: u16 = 1001;
    /// A frame broke the WebSocket protocol (e.g. a client frame without a mask).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Flooding (frames of any kind) went on after a `rate_limited` error.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame over [`super::MAX_FRAME_BYTES`].
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server cannot decide now (with `--redis`: Redis does not answer, or this
    /// connection's place went to someone else while it was cut off); reconnect.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The room is full (`--max-room-size`).
    pub const ROOM_FULL: u16 = 4001;
    /// The peer read too slowly and its outbound queue overflowed.
    pub const TOO_SLOW: u16 = 4002;
    /// No frame (not even a pong) arrived within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4003;
    /// The same session connected again (a reconnect); this older connection is obsolete.
    pub const REPLACED: u16 = 4004;
}

/// The longest `message` an `ERROR` carries: the reason, never an echo of a big input.
pub const MAX_ERROR_CHARS: usize = 200;

/// A peer's id: random (53 bits, exact in JavaScript), different from everyone else's in its room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerId(pub u64);

/// Every message of the protocol. Serialized adjacently tagged, which is exactly the
/// `{"message_type", "content"}` envelope; read by hand ([`Message::deserialize`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "message_type", content = "content")]
pub enum Message {
    /// An offer, answer or rollback (an `RTCSessionDescriptionInit`). Relayed.
    #[serde(rename = "SDP")]
    Sdp(SessionDescription),
    /// A trickled ICE candidate (an `RTCIceCandidateInit`), or null for end of candidates. Relayed.
    #[serde(rename = "CANDIDATE")]
    Candidate(Option<IceCandidate>),
    /// The sender hung up. Relayed; `content` is ignored.
    #[serde(rename = "BYE")]
    Bye(Option<Ignored>),
    /// From a client that connected with `join=later`: take my place in the room now, under
    /// this display name, if any.
    #[serde(rename = "JOIN")]
    Join(Option<JoinRequest>),
    /// From a client in its room: its display name as those waiting to join see it (empty:
    /// none). Not relayed: the others in the call hear it over the data channel.
    #[serde(rename = "NAME")]
    Name(String),
    /// From the server, first on every connection once it has joined.
    #[serde(rename = "WELCOME")]
    Welcome(Welcome),
    /// From the server: someone arrived.
    #[serde(rename = "PEER_JOINED")]
    PeerJoined(PeerInfo),
    /// From the server: someone left, or their connection died.
    #[serde(rename = "PEER_LEFT")]
    PeerLeft(PeerInfo),
    /// From the server: something the client sent was refused.
    #[serde(rename = "ERROR")]
    Error(ErrorBody),
    /// From the server, to a connection waiting to join (`join=later`) and to no one else:
    /// who is in the room, when it connects and after every change.
    #[serde(rename = "PRESENT")]
    Present(Present),
    /// In a room whose media goes through the server (issue 33): an offer or answer between
    /// the browser and the server's SFU. Not relayed.
    #[serde(rename = "MEDIA_SDP")]
    MediaSdp(MediaDescription),
    /// To everyone in a room whose media has just moved (`--media auto`, at its fifth person):
    /// how it travels from now on.
    #[serde(rename = "MEDIA_ROUTE")]
    MediaRoute(RouteChange),
}

/// `MEDIA_ROUTE`'s content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteChange {
    pub media: MediaRoute,
    /// The room's media moved to another instance's forwarding unit (its owner stopped): a
    /// connection to the server is made afresh. Absent (false) when a mesh room moves.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reconnect: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

/// An envelope as read: its `message_type`, and its `content` as raw JSON (`null` when there is
/// none, as serde's own reader has it). serde's derived reader for an adjacently tagged enum
/// takes the two fields in either order, so it buffers the content in a generic form first:
/// reading the type first and then the content as that type's took 10 KB (brotli) off the
/// browser's wasm (docs/performance.md). JSON text only: the content is borrowed.
fn typed_content<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<(Cow<'de, str>, &'de str), D::Error> {
    let envelope = Envelope::deserialize(deserializer)?;
    let kind = envelope.message_type.ok_or_else(|| serde::de::Error::missing_field("message_type"))?;
    Ok((kind, envelope.content.map_or("null", RawValue::get)))
}

/// An envelope's content, as the type its `message_type` names.
fn content<'a, T: Deserialize<'a>, E: serde::de::Error>(content: &'a str) -> Result<T, E> {
    serde_json::from_str(content).map_err(E::custom)
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const TYPES: &[&str] = &[
            "SDP",
            "CANDIDATE",
            "BYE",
            "JOIN",
            "NAME",
            "WELCOME",
            "PEER_JOINED",
            "PEER_LEFT",
            "ERROR",
            "PRESENT",
            "MEDIA_SDP",
            "MEDIA_ROUTE",
        ];
        let (kind, raw) = typed_content(deserializer)?;
        Ok(match &*kind {
            "SDP" => Message::Sdp(content(raw)?),
            "CANDIDATE" => Message::Candidate(content(raw)?),
            // Anything or nothing (docs/protocol.md).
            "BYE" => Message::Bye(serde_json::from_str(raw).unwrap_or(None)),
            "JOIN" => Message::Join(content(raw)?),
            "NAME" => Message::Name(content(raw)?),
            "WELCOME" => Message::Welcome(content(raw)?),
            "PEER_JOINED" => Message::PeerJoined(content(raw)?),
            "PEER_LEFT" => Message::PeerLeft(content(raw)?),
            "ERROR" => Message::Error(content(raw)?),
            "PRESENT" => Message::Present(content(raw)?),
            "MEDIA_SDP" => Message::MediaSdp(content(raw)?),
            "MEDIA_ROUTE" => Message::MediaRoute(content(raw)?),
            other => return Err(serde::de::Error::unknown_variant(other, TYPES)),
        })
    }
}

/// `MEDIA_SDP`'s content: a session description, and in the server's offers which person each
/// m-line it sends on carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaDescription {
    #[serde(rename = "type")]
    pub kind: SdpType,
    #[serde(default)]
    pub sdp: String,
    /// The server's m-lines and whose media each carries (`mid` to `peer_id`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracks: Vec<Track>,
}

/// One m-line of the server's, and whose media it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    pub mid: String,
    pub peer_id: PeerId,
}

/// How a room's media travels: browser to browser, or through the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaRoute {
    #[default]
    Mesh,
    Sfu,
}

/// `JOIN`'s content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The display name, as typed: the server cleans it with [`display_name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Who is in a room, as a connection waiting to join it sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Present {
    /// Everyone in the room, by place (the order they came, but a newcomer takes the lowest
    /// free place): at most the room's size.
    pub people: Vec<Person>,
}

/// One person in a room: what anyone with the call link may know of them. Never a peer id
/// (it names a connection, to address frames to) nor anything of the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// As in [`PeerInfo::public_id`].
    #[serde(default)]
    pub public_id: Option<String>,
    /// Their display name, cleaned with [`display_name`]; `None` when they gave none.
    #[serde(default)]
    pub name: Option<String>,
}

/// A JSON value whose contents do not matter (BYE's optional content).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Ignored {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    #[serde(rename = "type")]
    pub kind: SdpType,
    #[serde(default)]
    pub sdp: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    Offer,
    Answer,
    Pranswer,
    Rollback,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default)]
    pub sdp_mid: Option<String>,
    #[serde(default, rename = "sdpMLineIndex")]
    pub sdp_m_line_index: Option<u16>,
    #[serde(default)]
    pub username_fragment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub peer_id: PeerId,
    /// Whether anyone else is already in the room (then this side should call them).
    pub peer_present: bool,
    /// The perfect-negotiation role toward the first of `peers` (or, alone, toward whoever
    /// comes next): the one field a two-person client needs. `peers` has each pair's role.
    pub polite: bool,
    /// The public id of the first of `peers` (see [`PeerInfo::public_id`]).
    #[serde(default)]
    pub peer_public_id: Option<String>,
    /// Everyone already in the room, each with this side's role toward them.
    #[serde(default)]
    pub peers: Vec<PeerInfo>,
    /// What to put in `RTCConfiguration.iceServers`.
    pub ice_servers: Vec<IceServer>,
    /// What to put in `RTCConfiguration.iceTransportPolicy`.
    #[serde(default)]
    pub ice_transport_policy: IceTransportPolicy,
    /// How this room's media travels (absent: browser to browser, as before issue 33).
    #[serde(default)]
    pub media: MediaRoute,
}

/// `RTCConfiguration.iceTransportPolicy`: `relay` hides each side's address from the other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    #[default]
    All,
    Relay,
}

/// One `RTCIceServer`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub peer_id: PeerId,
    /// In `WELCOME.peers` and `PEER_JOINED`: whether the receiver is the polite side of the pair
    /// (every pair has one polite and one impolite side). Absent in `PEER_LEFT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polite: Option<bool>,
    /// Derived by the server from the session the peer named when connecting
    /// (`/ws/{room}?session=...`), which itself is never sent to anyone: the same public id
    /// coming back is the same person reconnecting, whose call goes on.
    #[serde(default)]
    pub public_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadMessage,
    RoomFull,
    RateLimited,
    /// The server cannot take anyone in just now (with `--redis`: Redis does not answer); the
    /// socket is closed with 1013 and the client tries again.
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadMessage => "bad_message",
            Self::RoomFull => "room_full",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
        }
    }
}

impl Message {
    /// An `ERROR`, its message cut to [`MAX_ERROR_CHARS`] (parser errors may quote the input).
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if let Some((cut, _)) = message.char_indices().nth(MAX_ERROR_CHARS) {
            message.truncate(cut);
            message.push('…');
        }
        Self::Error(ErrorBody { code, message })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("protocol messages always serialize")
    }
}

/// What one browser tells the other directly, over the call's `RTCDataChannel` (label `duo`,
/// negotiated with id 0): the same `{"message_type", "content"}` envelope, never seen by the
/// server. Read by hand, as [`Message`] is.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "message_type", content = "content")]
pub enum PeerMessage {
    /// What the sender is sending now; sent on connect and on every change.
    #[serde(rename = "MEDIA_STATE")]
    MediaState(MediaState),
    /// A chat line. A receiver shows it within [`MAX_CHAT_CHARS`] and [`CHAT_BURST`], and
    /// counts what it drops.
    #[serde(rename = "CHAT")]
    Chat(ChatMessage),
    /// The sender's display name (empty: none); sent on connect and when it changes. Whoever
    /// receives it cleans it with [`display_name`] before showing it.
    #[serde(rename = "NAME")]
    Name(String),
    /// For the server's forwarding unit only, which keeps it (a page ignores one from another
    /// page): the camera tiles the page shows now, each by the server's m-line that carries it,
    /// at the size its video is drawn in device pixels. A tile not listed is not shown (scrolled
    /// away, or the page hidden) and is sent no video. Sent when it changes.
    #[serde(rename = "VIEW")]
    View(Vec<ViewTile>),
}

/// A tile in a [`PeerMessage::View`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewTile {
    pub mid: String,
    pub width: u32,
    pub height: u32,
}

/// A [`PeerMessage`] the server's forwarding unit passes on over its data channel, with the
/// sender it read it from (in a room whose media goes through the server). The server writes
/// `from`; `message` is as the sender wrote it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PassedOn {
    pub from: PeerId,
    pub message: PeerMessage,
}

impl<'de> Deserialize<'de> for PeerMessage {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (kind, raw) = typed_content(deserializer)?;
        Ok(match &*kind {
            "MEDIA_STATE" => PeerMessage::MediaState(content(raw)?),
            "CHAT" => PeerMessage::Chat(content(raw)?),
            "NAME" => PeerMessage::Name(content(raw)?),
            "VIEW" => PeerMessage::View(content(raw)?),
            other => return Err(serde::de::Error::unknown_variant(other, &["MEDIA_STATE", "CHAT", "NAME", "VIEW"])),
        })
    }
}

/// The longest display name, in characters: a tile's caption and a chat line stay readable.
pub const MAX_NAME_CHARS: usize = 40;

/// Characters a name loses: control characters, and the ones Unicode marks as ignorable
/// (`Default_Ignorable_Code_Point`: shown as nothing where not supported). Among these are the
/// format characters that would turn the text around them right to left (a name could make a
/// chat line read backwards), zero-width spaces and joiners, variation selectors, tag
/// characters and Hangul fillers.
fn removed(c: char) -> bool {
    c.is_control() || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
}

/// Whether a character left after [`removed`] shows something by itself: a base character
/// (`Grapheme_Base`, which has an advance width, unlike combining marks, format characters and
/// unassigned or private-use code points), not a space of any kind, and not one of the two
/// whose glyph is blank by design though no property says so (the blank braille pattern and
/// the musical null notehead).
fn visible(c: char) -> bool {
    CodePointSetData::new::<GraphemeBase>().contains(c) && !c.is_whitespace() && !matches!(c, '\u{2800}' | '\u{1d159}')
}

/// A display name as people see it: without control or ignorable characters or surrounding
/// space, at most [`MAX_NAME_CHARS`] characters; `None` when nothing visible is left (a name
/// that renders as nothing is no name). The page shows it as text, never as HTML.
pub fn display_name(raw: &str) -> Option<String> {
    let cleaned: String = raw.chars().filter(|c| !removed(*c)).collect();
    let name: String = cleaned.trim().chars().take(MAX_NAME_CHARS).collect();
    let name = name.trim_end();
    name.chars().any(visible).then(|| name.to_owned())
}

/// The longest chat line, in characters. The page's message field takes no more (its
/// `maxlength` counts UTF-16 code units, never fewer than characters), the sender cuts a line
/// to it, and a receiver drops a longer line, which no Duo page sends.
pub const MAX_CHAT_CHARS: usize = 2_000;

/// How many chat lines from one person a page shows at once; after that, one every
/// [`CHAT_EVERY_MS`] (a token bucket). A page sends its own lines within the same allowance
/// (one fewer at once, for lines the network delays unevenly), so that the others show every
/// one of them; the others' lines beyond it are dropped and counted.
pub const CHAT_BURST: u32 = 10;

/// See [`CHAT_BURST`].
pub const CHAT_EVERY_MS: f64 = 1_000.0;

/// The longest data channel message a page reads, in UTF-16 code units (a JavaScript string's
/// length); a longer one is dropped unparsed. Above anything a Duo page sends: a chat line of
/// [`MAX_CHAT_CHARS`] characters that JSON escapes six units each (`\u001f`) is 12,000 units,
/// and its envelope under a hundred more.
pub const MAX_PEER_MESSAGE_UNITS: u32 = 16 * 1024;

/// One of the sizes a camera goes up in, in a room on the server (simulcast): each is an
/// encoding of the page's video sender with this RTP stream id (`rid`), smallest first. A camera
/// under [`Layer::THREE_FROM_HEIGHT`] pixels tall sends the half and full layers only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Layer {
    #[serde(rename = "q")]
    Quarter,
    #[serde(rename = "h")]
    Half,
    #[serde(rename = "f")]
    Full,
}

impl Layer {
    pub const ALL: [Layer; 3] = [Layer::Quarter, Layer::Half, Layer::Full];

    /// The camera height from which the quarter layer is sent too: a quarter of 360 is 90 pixels,
    /// about the least a thumbnail shows a face in.
    pub const THREE_FROM_HEIGHT: u32 = 360;

    pub fn rid(self) -> &'static str {
        match self {
            Layer::Quarter => "q",
            Layer::Half => "h",
            Layer::Full => "f",
        }
    }

    pub fn from_rid(rid: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|layer| layer.rid() == rid)
    }

    /// How much smaller than the camera it is, in each dimension.
    pub fn scale_down(self) -> u32 {
        match self {
            Layer::Quarter => 4,
            Layer::Half => 2,
            Layer::Full => 1,
        }
    }

    /// The encoder's cap (`maxBitrate`), in bits per second: as the common call apps set their
    /// 180p, 360p and 720p layers.
    pub fn max_bitrate(self) -> u32 {
        match self {
            Layer::Quarter => 150_000,
            Layer::Half => 500_000,
            Layer::Full => 1_500_000,
        }
    }

    /// The layers a camera `height` pixels tall sends.
    pub fn sent_for(height: u32) -> &'static [Layer] {
        if height >= Self::THREE_FROM_HEIGHT {
            &Layer::ALL
        } else {
            &Layer::ALL[1..]
        }
    }
}

/// Why a receiver is sent the layer it is sent of a camera.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The smallest layer that covers the tile.
    Tile,
    /// Less than the tile needs, or nothing: the receiver's link cannot take more.
    Bandwidth,
    /// The tile is not shown.
    Hidden,
}

/// What the server's forwarding unit says itself on its data channel (not passed on from
/// anyone: no `from`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "message_type", content = "content")]
pub enum FromUnit {
    /// To a sender: the layers of its camera someone is sent (or was lately); it may pause the
    /// others until they are named again.
    #[serde(rename = "SEND_LAYERS")]
    SendLayers(Vec<Layer>),
    /// To a receiver: what it is sent of each camera, and whether its link is short of what its
    /// tiles need. Sent when it changes.
    #[serde(rename = "RECEIVING")]
    Receiving(Receiving),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receiving {
    pub tiles: Vec<ReceivedLayer>,
    /// Some tile gets less than it needs for want of bandwidth.
    pub slow: bool,
}

/// A camera a receiver is sent: the server's m-line, the layer (none: no video), and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedLayer {
    pub mid: String,
    pub layer: Option<Layer>,
    pub reason: Reason,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaState {
    /// The microphone is on (not muted).
    pub audio: bool,
    /// The camera (or the shared screen) is on.
    pub video: bool,
    /// The video is a shared screen, not the camera.
    #[serde(default)]
    pub screen: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub text: String,
    /// When it was sent, in milliseconds since the Unix epoch (the sender's clock).
    pub sent_at: u64,
}

/// The messages a client may send, all relayed to another peer (see [`ClientFrame::stamped`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relayed {
    Sdp = 0,
    Candidate = 1,
    Bye = 2,
}

impl Relayed {
    pub fn message_type(self) -> &'static str {
        match self {
            Self::Sdp => "SDP",
            Self::Candidate => "CANDIDATE",
            Self::Bye => "BYE",
        }
    }
}

/// Why a frame from a client was refused; the text goes into an `ERROR` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadMessage {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("a message must be a JSON object with a string \"message_type\"")]
    NotAnObject,
    #[error("missing \"message_type\"")]
    MissingType,
    #[error("unknown message_type {0:?}")]
    UnknownType(String),
    #[error("{0} is sent by the server only")]
    ServerOnly(&'static str),
    #[error("bad content for {message_type}: {reason}")]
    BadContent { message_type: &'static str, reason: String },
    #[error("binary frames are not part of the protocol; send JSON text")]
    Binary,
    #[error("this connection has not joined its room yet (it was opened with join=later): send JOIN first")]
    NotJoined,
    #[error("this connection is in its room already: JOIN is only for a connection opened with join=later, once")]
    JoinedAlready,
    #[error("\"to\" must be a peer id: an integer below 2^53")]
    BadRecipient,
}

/// A client's frame that passed [`check_client_frame`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    /// A frame to relay to another person.
    Relay(ClientFrame<'a>),
    /// `NAME`: the sender's display name, cleaned with [`display_name`] (`None`: none).
    Name(Option<String>),
    /// `MEDIA_SDP`: for the server's SFU.
    Media(SessionDescription),
}

/// A relayed frame that passed [`check_client_frame`]: what it is, and for whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientFrame<'a> {
    pub kind: Relayed,
    /// The recipient the client named, if any.
    pub to: Option<PeerId>,
    /// The frame's `content`, as sent (`null` when absent).
    content: &'a str,
    /// Whether the frame names a sender or a recipient itself: then it is forwarded rewritten,
    /// with the server's `from`, never as sent.
    addressed: bool,
}

impl ClientFrame<'_> {
    /// What to forward instead of the client's text, sent by `from`: `None` when the client
    /// named no one (the classic two-person protocol: its exact text is relayed), else the
    /// same message and content with `to` and the server's `from` stamp (so a `from` the
    /// client wrote never reaches anyone).
    pub fn stamped(&self, from: PeerId) -> Option<String> {
        self.addressed.then(|| {
            let to = self.to.map(|to| format!(r#","to":{}"#, to.0)).unwrap_or_default();
            let message_type = self.kind.message_type();
            format!(r#"{{"message_type":"{message_type}","content":{}{to},"from":{}}}"#, self.content, from.0)
        })
    }
}

/// The envelope, borrowed from the frame so that checking (or reading) a message copies
/// nothing.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    message_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    to: Option<&'a RawValue>,
    #[serde(borrow, default)]
    from: Option<&'a RawValue>,
}

/// The shape of [`SessionDescription`], checked without copying the SDP text: the server
/// relays the frame as it came and never needs the value.
#[derive(Deserialize)]
struct SdpShape<'a> {
    #[serde(rename = "type")]
    _kind: SdpType,
    #[serde(borrow, default, rename = "sdp")]
    _sdp: Option<JsonString<'a>>,
}

/// The shape of [`IceCandidate`], likewise.
#[derive(Deserialize)]
struct CandidateShape<'a> {
    #[serde(borrow, rename = "candidate")]
    _candidate: JsonString<'a>,
    #[serde(borrow, default, rename = "sdpMid")]
    _sdp_mid: Option<JsonString<'a>>,
    #[serde(default, rename = "sdpMLineIndex")]
    _sdp_m_line_index: Option<u16>,
    #[serde(borrow, default, rename = "usernameFragment")]
    _username_fragment: Option<JsonString<'a>>,
}

/// A JSON string, left unparsed.
struct JsonString<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Deserialize<'de> for JsonString<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(deserializer)?;
        if raw.get().starts_with('"') {
            Ok(Self(std::marker::PhantomData))
        } else {
            Err(serde::de::Error::invalid_type(serde::de::Unexpected::Other(raw.get()), &"a string"))
        }
    }
}

/// Checks a client's text frame against the protocol: whether it is well-formed, what it is,
/// and for whom. The server forwards a relayed frame's original text, or
/// [`ClientFrame::stamped`].
pub fn check_client_frame(text: &str) -> Result<ClientMessage<'_>, BadMessage> {
    let envelope = envelope(text)?;
    let to = match envelope.to {
        None => None,
        Some(raw) => match raw.get().parse::<u64>() {
            Ok(id) if id < 1 << 53 => Some(PeerId(id)),
            _ => return Err(BadMessage::BadRecipient),
        },
    };
    let addressed = envelope.to.is_some() || envelope.from.is_some();
    let message_type = envelope.message_type.ok_or(BadMessage::MissingType)?;
    let content = envelope.content.map_or("null", RawValue::get);
    let (relayed, check): (Relayed, fn(&str) -> serde_json::Result<()>) = match &*message_type {
        "SDP" => (Relayed::Sdp, |c| serde_json::from_str::<SdpShape>(c).map(drop)),
        "CANDIDATE" => (Relayed::Candidate, |c| serde_json::from_str::<Option<CandidateShape>>(c).map(drop)),
        "BYE" => (Relayed::Bye, |_| Ok(())),
        // Not relayed (`to` is no matter): for those waiting to join.
        "NAME" => {
            let name: String = serde_json::from_str(content)
                .map_err(|e| BadMessage::BadContent { message_type: "NAME", reason: e.to_string() })?;
            return Ok(ClientMessage::Name(display_name(&name)));
        }
        "MEDIA_SDP" => {
            let description: SessionDescription = serde_json::from_str(content)
                .map_err(|e| BadMessage::BadContent { message_type: "MEDIA_SDP", reason: e.to_string() })?;
            return Ok(ClientMessage::Media(description));
        }
        "JOIN" => return Err(BadMessage::JoinedAlready),
        "WELCOME" => return Err(BadMessage::ServerOnly("WELCOME")),
        "PEER_JOINED" => return Err(BadMessage::ServerOnly("PEER_JOINED")),
        "PEER_LEFT" => return Err(BadMessage::ServerOnly("PEER_LEFT")),
        "ERROR" => return Err(BadMessage::ServerOnly("ERROR")),
        "PRESENT" => return Err(BadMessage::ServerOnly("PRESENT")),
        "MEDIA_ROUTE" => return Err(BadMessage::ServerOnly("MEDIA_ROUTE")),
        other => return Err(BadMessage::UnknownType(truncate(other, 64))),
    };
    check(content)
        .map_err(|e| BadMessage::BadContent { message_type: relayed.message_type(), reason: e.to_string() })?;
    Ok(ClientMessage::Relay(ClientFrame { kind: relayed, to, content, addressed }))
}

/// Checks a frame of a connection opened with `join=later` that has not joined yet: it may
/// only ask to join. Returns the display name it joins under, cleaned with [`display_name`].
pub fn check_join_frame(text: &str) -> Result<Option<String>, BadMessage> {
    let envelope = envelope(text)?;
    match envelope.message_type.as_deref() {
        Some("JOIN") => {
            let content = envelope.content.map_or("null", RawValue::get);
            // Content other than an object is ignored, as it was before names.
            if !content.starts_with('{') {
                return Ok(None);
            }
            let request: JoinRequest = serde_json::from_str(content)
                .map_err(|e| BadMessage::BadContent { message_type: "JOIN", reason: e.to_string() })?;
            Ok(request.name.as_deref().and_then(display_name))
        }
        Some(_) => Err(BadMessage::NotJoined),
        None => Err(BadMessage::MissingType),
    }
}

fn envelope(text: &str) -> Result<Envelope<'_>, BadMessage> {
    serde_json::from_str(text).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            BadMessage::NotJson(e.to_string())
        } else {
            BadMessage::NotAnObject
        }
    })
}

/// Keeps error messages short when a client sends something huge as a type name.
fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A frame to relay, as [`check_client_frame`] judged it.
    fn relayed(text: &str) -> Result<ClientFrame<'_>, BadMessage> {
        match check_client_frame(text)? {
            ClientMessage::Relay(frame) => Ok(frame),
            other => panic!("{text}: not relayed but {other:?}"),
        }
    }

    #[test]
    fn the_servers_channel_brings_passed_on_messages_and_its_own_and_neither_reads_as_the_other() {
        let passed = r#"{"from":8,"message":{"message_type":"NAME","content":"Ada"}}"#;
        let own = r#"{"message_type":"RECEIVING","content":{"tiles":[{"mid":"3","layer":"q","reason":"bandwidth"}],"slow":true}}"#;
        let layers = r#"{"message_type":"SEND_LAYERS","content":["q","f"]}"#;
        assert_eq!(
            serde_json::from_str::<PassedOn>(passed).unwrap(),
            PassedOn { from: PeerId(8), message: PeerMessage::Name("Ada".into()) }
        );
        let tile = ReceivedLayer { mid: "3".into(), layer: Some(Layer::Quarter), reason: Reason::Bandwidth };
        assert_eq!(
            serde_json::from_str::<FromUnit>(own).unwrap(),
            FromUnit::Receiving(Receiving { tiles: vec![tile], slow: true })
        );
        assert_eq!(
            serde_json::from_str::<FromUnit>(layers).unwrap(),
            FromUnit::SendLayers(vec![Layer::Quarter, Layer::Full])
        );
        assert_eq!(serde_json::to_string(&FromUnit::SendLayers(vec![Layer::Quarter, Layer::Full])).unwrap(), layers);
        assert!(serde_json::from_str::<FromUnit>(passed).is_err());
        assert!(serde_json::from_str::<PassedOn>(own).is_err());
        // A page's VIEW, as the server reads it.
        let view = r#"{"message_type":"VIEW","content":[{"mid":"3","width":640,"height":360}]}"#;
        let tile = ViewTile { mid: "3".into(), width: 640, height: 360 };
        assert_eq!(serde_json::from_str::<PeerMessage>(view).unwrap(), PeerMessage::View(vec![tile]));
    }

    #[test]
    fn a_display_name_is_cleaned_and_cut_and_an_empty_one_is_none() {
        let name = PeerMessage::Name("Ada".into());
        assert_eq!(serde_json::to_value(&name).unwrap(), json!({"message_type": "NAME", "content": "Ada"}));
        assert_eq!(display_name("  Ada Lovelace \n"), Some("Ada Lovelace".into()));
        assert_eq!(display_name("A\u{0}d\u{1b}[31ma"), Some("Ad[31ma".into()));
        // Right-to-left overrides and zero-width characters are gone; a name of nothing but
        // them is no name.
        assert_eq!(display_name("\u{202e}Eve\u{200b}"), Some("Eve".into()));
        for empty in ["", "   ", "\t\r\n", "\u{7f}", "\u{200b}\u{2066}", " \u{3164} "] {
            assert_eq!(display_name(empty), None, "{empty:?}");
        }
        // Markup is just characters: the page shows it as text.
        assert_eq!(display_name("<b>Bo</b>"), Some("<b>Bo</b>".into()));
        let long = "é".repeat(MAX_NAME_CHARS + 5);
        assert_eq!(display_name(&long).unwrap().chars().count(), MAX_NAME_CHARS);
        // No trailing space is left where the cut fell.
        let spaced = format!("{} x", "a".repeat(MAX_NAME_CHARS - 1));
        assert_eq!(display_name(&spaced), Some("a".repeat(MAX_NAME_CHARS - 1)));
    }

    #[test]
    fn a_name_that_renders_as_nothing_is_no_name() {
        let nothing = [
            // Tag characters, variation selectors (also the supplementary ones), the combining
            // grapheme joiner, Mongolian free variation selectors and vowel separator, musical
            // formatting characters.
            "\u{e0041}\u{e0064}\u{e0061}\u{e0001}\u{e007f}",
            "\u{fe0f}\u{fe00}\u{e0100}\u{e01ef}",
            "\u{34f}\u{34f}",
            "\u{180b}\u{180c}\u{180d}\u{180f}\u{180e}",
            "\u{1d173}\u{1d174}\u{1d17a}",
            // Combining marks with nothing to sit on, enclosing ones too.
            "\u{301}\u{308}\u{20dd}",
            // Spaces of every width, line and paragraph separators.
            "\u{3000}\u{2000}\u{2001}\u{200a}\u{a0}\u{202f}\u{205f}\u{1680}\u{2028}\u{2029}",
            // Hangul fillers, the blank braille pattern, the musical null notehead.
            "\u{3164}\u{ffa0}\u{115f}\u{1160}",
            "\u{2800}\u{2800}",
            "\u{1d159}",
            // Zero-width spaces and joiners, word joiner, invisible operators, soft hyphen,
            // byte order mark, Khmer inherent vowels, shorthand format controls.
            "\u{200b}\u{200c}\u{200d}\u{2060}\u{2062}\u{ad}\u{feff}\u{17b4}\u{17b5}\u{1bca0}",
            // Private-use and unassigned code points: a box or nothing, never a name.
            "\u{e000}\u{f8ff}\u{40000}",
            // All of it at once, and a name cut where only marks are left.
            "\u{e0041} \u{3000}\u{2800}\u{301}\u{fe0f}\u{3164}\u{1d173}",
        ];
        for name in nothing {
            assert_eq!(display_name(name), None, "{name:?}");
        }
        let marks_first = format!("{}A", "\u{301}".repeat(MAX_NAME_CHARS));
        assert_eq!(display_name(&marks_first), None);

        // Around and inside a real name, the ignorable characters go and the rest stays: combining
        // marks on their letter, scripts that need no joiner.
        assert_eq!(display_name("\u{feff} A\u{e0041}da\u{fe0f} \u{200b}").as_deref(), Some("Ada"));
        for kept in ["Zoe\u{308}", "José", "김민준", "ᄀ", "Ⓐ", "⠁", "محمد", "ﬁ", "१२३", "🙂"] {
            assert_eq!(display_name(kept).as_deref(), Some(kept), "{kept:?}");
        }
        // Emoji sequences lose their joiners and selectors: what is left still shows.
        assert_eq!(display_name("👩\u{200d}💻 Ada").as_deref(), Some("👩💻 Ada"));
    }

    #[test]
    fn messages_use_the_tutorial_envelope() {
        let sdp = Message::Sdp(SessionDescription { kind: SdpType::Offer, sdp: "v=0\r\n".into() });
        assert_eq!(
            serde_json::to_value(&sdp).unwrap(),
            json!({"message_type": "SDP", "content": {"type": "offer", "sdp": "v=0\r\n"}})
        );
        let end = Message::Candidate(None);
        assert_eq!(serde_json::to_value(&end).unwrap(), json!({"message_type": "CANDIDATE", "content": null}));
    }

    #[test]
    fn every_message_round_trips() {
        let all = [
            Message::Sdp(SessionDescription { kind: SdpType::Answer, sdp: "v=0".into() }),
            Message::Candidate(Some(IceCandidate {
                candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_m_line_index: Some(0),
                username_fragment: None,
            })),
            Message::Candidate(None),
            Message::Bye(None),
            Message::Welcome(Welcome {
                peer_id: PeerId(7),
                peer_present: true,
                polite: true,
                peer_public_id: Some("p1".into()),
                peers: vec![PeerInfo { peer_id: PeerId(1), polite: Some(true), public_id: Some("p1".into()) }],
                ice_servers: vec![IceServer {
                    urls: vec!["stun:127.0.0.1:3478".into()],
                    username: None,
                    credential: None,
                }],
                ice_transport_policy: IceTransportPolicy::Relay,
                media: MediaRoute::Sfu,
            }),
            Message::PeerJoined(PeerInfo { peer_id: PeerId(1), polite: Some(false), public_id: Some("p2".into()) }),
            Message::PeerLeft(PeerInfo { peer_id: PeerId(1), polite: None, public_id: None }),
            Message::error(ErrorCode::RoomFull, "full"),
            Message::Join(None),
            Message::Join(Some(JoinRequest { name: Some("Ada".into()) })),
            Message::Name("Ada".into()),
            Message::Present(Present { people: vec![Person { public_id: Some("p1".into()), name: None }] }),
            Message::MediaRoute(RouteChange { media: MediaRoute::Sfu, reconnect: false }),
            Message::MediaRoute(RouteChange { media: MediaRoute::Sfu, reconnect: true }),
            Message::MediaSdp(MediaDescription {
                kind: SdpType::Offer,
                sdp: "v=0\r\n".into(),
                tracks: vec![Track { mid: "3".into(), peer_id: PeerId(8) }],
            }),
        ];
        for message in all {
            let text = message.to_json();
            assert_eq!(serde_json::from_str::<Message>(&text).unwrap(), message, "{text}");
        }
    }

    #[test]
    fn the_envelope_is_read_in_any_order_with_escapes_and_extra_fields() {
        let read = |text: &str| serde_json::from_str::<Message>(text);
        let sdp = Message::Sdp(SessionDescription { kind: SdpType::Offer, sdp: "v=0".into() });
        for text in [
            r#"{"message_type":"SDP","content":{"type":"offer","sdp":"v=0"}}"#,
            r#"{"content":{"type":"offer","sdp":"v=0"},"message_type":"SDP"}"#,
            r#"{"to":8,"message_type":"S\u0044P","from":7,"content":{"sdp":"v=0","type":"offer"}}"#,
        ] {
            assert_eq!(read(text).unwrap(), sdp, "{text}");
        }
        for text in [
            r#"{"message_type":"BYE"}"#,
            r#"{"message_type":"BYE","content":"bye"}"#,
            r#"{"message_type":"BYE","content":null}"#,
        ] {
            assert_eq!(read(text).unwrap(), Message::Bye(None), "{text}");
        }
        assert_eq!(read(r#"{"message_type":"CANDIDATE","content":null}"#).unwrap(), Message::Candidate(None));
        for bad in [
            r#"{"message_type":"HELLO","content":{}}"#,
            r#"{"message_type":"SDP"}"#,
            r#"{"message_type":"SDP","content":{"type":"nonsense"}}"#,
            r#"{"content":{}}"#,
            r#"["SDP",{}]"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clients_may_send_tutorial_messages_with_extra_fields() {
        let ok = [
            (r#"{"message_type":"SDP","content":{"type":"offer","sdp":"v=0"}}"#, Relayed::Sdp),
            (r#"{"message_type":"SDP","content":{"type":"rollback"},"name":"x"}"#, Relayed::Sdp),
            (
                r#"{"message_type":"CANDIDATE","content":{"candidate":"c","sdpMid":"0","sdpMLineIndex":0}}"#,
                Relayed::Candidate,
            ),
            (
                r#"{"message_type":"CANDIDATE","content":{"candidate":"c\"q","sdpMid":null,"usernameFragment":"u"}}"#,
                Relayed::Candidate,
            ),
            (r#"{"message_type":"SDP","content":{"type":"answer","sdp":"v=0\r\n"}}"#, Relayed::Sdp),
            (r#"{"message_type":"CANDIDATE","content":null}"#, Relayed::Candidate),
            (r#"{"message_type":"CANDIDATE"}"#, Relayed::Candidate),
            (r#"{"message_type":"BYE"}"#, Relayed::Bye),
            (r#"{"message_type":"BYE","content":{"reason":"done"}}"#, Relayed::Bye),
        ];
        for (text, expected) in ok {
            let frame = relayed(text).expect(text);
            assert_eq!((frame.kind, frame.to), (expected, None), "{text}");
            assert_eq!(frame.stamped(PeerId(7)), None, "relayed as sent: {text}");
        }
    }

    #[test]
    fn an_addressed_frame_is_forwarded_with_the_servers_from_stamp() {
        let text = r#"{"message_type":"SDP", "content": {"type":"offer","sdp":"v=0\r\n"}, "to": 8}"#;
        let frame = relayed(text).unwrap();
        assert_eq!((frame.kind, frame.to), (Relayed::Sdp, Some(PeerId(8))));
        let stamped = frame.stamped(PeerId(7)).unwrap();
        assert_eq!(stamped, r#"{"message_type":"SDP","content":{"type":"offer","sdp":"v=0\r\n"},"to":8,"from":7}"#);
        assert!(matches!(serde_json::from_str(&stamped), Ok(Message::Sdp(_))));
        // A `from` the client wrote is replaced, with or without `to`.
        for forged in [r#"{"message_type":"BYE","from":99}"#, r#"{"message_type":"BYE","to":8,"from":99}"#] {
            let stamped = relayed(forged).unwrap().stamped(PeerId(7)).unwrap();
            let value: serde_json::Value = serde_json::from_str(&stamped).unwrap();
            assert_eq!(value["from"], 7, "{stamped}");
            assert!(!stamped.contains("99"), "{stamped}");
        }
        let top = (1u64 << 53) - 1;
        assert_eq!(relayed(&format!(r#"{{"message_type":"BYE","to":{top}}}"#)).unwrap().to, Some(PeerId(top)));
        for bad in [r#""8""#, "-1", "1.5", "9007199254740992", "[8]"] {
            let text = format!(r#"{{"message_type":"BYE","to":{bad}}}"#);
            assert_eq!(relayed(&text), Err(BadMessage::BadRecipient), "{text}");
        }
    }

    #[test]
    fn bad_frames_are_refused_with_a_reason() {
        type IsExpected = fn(&BadMessage) -> bool;
        let cases: &[(&str, IsExpected)] = &[
            ("hello", |e| matches!(e, BadMessage::NotJson(_))),
            ("{\"message_type\":", |e| matches!(e, BadMessage::NotJson(_))),
            ("[1,2]", |e| *e == BadMessage::NotAnObject),
            ("42", |e| *e == BadMessage::NotAnObject),
            (r#"{"message_type":7}"#, |e| *e == BadMessage::NotAnObject),
            (r#"{"content":{}}"#, |e| *e == BadMessage::MissingType),
            (r#"{"message_type":"DANCE"}"#, |e| *e == BadMessage::UnknownType("DANCE".into())),
            (r#"{"message_type":"WELCOME","content":{}}"#, |e| *e == BadMessage::ServerOnly("WELCOME")),
            (r#"{"message_type":"SDP","content":{"sdp":"v=0"}}"#, |e| {
                matches!(e, BadMessage::BadContent { message_type: "SDP", .. })
            }),
            (r#"{"message_type":"SDP","content":{"type":"hello","sdp":""}}"#, |e| {
                matches!(e, BadMessage::BadContent { .. })
            }),
            (r#"{"message_type":"SDP","content":"v=0"}"#, |e| matches!(e, BadMessage::BadContent { .. })),
            (r#"{"message_type":"CANDIDATE","content":{"sdpMid":"0"}}"#, |e| {
                matches!(e, BadMessage::BadContent { message_type: "CANDIDATE", .. })
            }),
            (r#"{"message_type":"CANDIDATE","content":{"candidate":"c","sdpMLineIndex":-1}}"#, |e| {
                matches!(e, BadMessage::BadContent { .. })
            }),
            (r#"{"message_type":"CANDIDATE","content":{"candidate":7}}"#, |e| {
                matches!(e, BadMessage::BadContent { .. })
            }),
            (r#"{"message_type":"CANDIDATE","content":{"candidate":"c","sdpMid":0}}"#, |e| {
                matches!(e, BadMessage::BadContent { .. })
            }),
            (r#"{"message_type":"SDP","content":{"type":"offer","sdp":["v=0"]}}"#, |e| {
                matches!(e, BadMessage::BadContent { .. })
            }),
        ];
        for (text, is_expected) in cases {
            let err = check_client_frame(text).expect_err(text);
            assert!(is_expected(&err), "{text}: got {err:?}");
        }
    }

    #[test]
    fn a_connection_that_joins_later_may_only_ask_to_join_until_it_has() {
        assert_eq!(check_join_frame(&Message::Join(None).to_json()), Ok(None));
        assert_eq!(check_join_frame(r#"{"message_type":"JOIN","content":{"x":1}}"#), Ok(None));
        assert_eq!(check_join_frame(r#"{"message_type":"JOIN","content":"Ada"}"#), Ok(None), "not an object: ignored");
        for early in [r#"{"message_type":"BYE"}"#, r#"{"message_type":"SDP","content":{"type":"offer","sdp":""}}"#] {
            assert_eq!(check_join_frame(early), Err(BadMessage::NotJoined), "{early}");
        }
        assert_eq!(check_join_frame("{}"), Err(BadMessage::MissingType));
        assert!(matches!(check_join_frame("JOIN"), Err(BadMessage::NotJson(_))));
        // Once in the room, JOIN is a mistake, not a relayed message.
        assert_eq!(check_client_frame(r#"{"message_type":"JOIN"}"#), Err(BadMessage::JoinedAlready));
    }

    #[test]
    fn a_name_comes_with_join_or_in_name_cleaned_as_the_browsers_clean_it_and_only_as_a_string() {
        let join = Message::Join(Some(JoinRequest { name: Some(" Ada\u{202e} ".into()) }));
        assert_eq!(
            serde_json::to_value(&join).unwrap(),
            json!({"message_type": "JOIN", "content": {"name": " Ada\u{202e} "}})
        );
        assert_eq!(check_join_frame(&join.to_json()), Ok(Some("Ada".into())));
        assert_eq!(check_join_frame(r#"{"message_type":"JOIN","content":{"name":null}}"#), Ok(None));
        assert_eq!(check_join_frame(r#"{"message_type":"JOIN","content":{"name":"\u200b"}}"#), Ok(None));
        let rename = Message::Name(format!("{}!", "B".repeat(MAX_NAME_CHARS)));
        assert_eq!(check_client_frame(&rename.to_json()), Ok(ClientMessage::Name(Some("B".repeat(MAX_NAME_CHARS)))));
        assert_eq!(check_client_frame(r#"{"message_type":"NAME","content":""}"#), Ok(ClientMessage::Name(None)));
        assert_eq!(
            check_client_frame(r#"{"message_type":"NAME","content":"Eve","to":8}"#),
            Ok(ClientMessage::Name(Some("Eve".into())))
        );
        for bad in ["7", "null", r#"{"name":"Ada"}"#, r#"["Ada"]"#, "true"] {
            let name = format!(r#"{{"message_type":"NAME","content":{bad}}}"#);
            assert!(
                matches!(check_client_frame(&name), Err(BadMessage::BadContent { message_type: "NAME", .. })),
                "{name}"
            );
            let join = format!(r#"{{"message_type":"JOIN","content":{{"name":{bad}}}}}"#);
            if bad != "null" {
                assert!(
                    matches!(check_join_frame(&join), Err(BadMessage::BadContent { message_type: "JOIN", .. })),
                    "{join}"
                );
            }
        }
        assert!(matches!(check_client_frame(r#"{"message_type":"NAME"}"#), Err(BadMessage::BadContent { .. })));
        // Before joining, a name comes only with JOIN.
        assert_eq!(check_join_frame(&rename.to_json()), Err(BadMessage::NotJoined));
    }

    #[test]
    fn presence_names_people_by_public_id_and_name_only() {
        let present = Message::Present(Present {
            people: vec![
                Person { public_id: Some("p1".into()), name: Some("Ada".into()) },
                Person { public_id: None, name: None },
            ],
        });
        assert_eq!(
            serde_json::to_value(&present).unwrap(),
            json!({"message_type": "PRESENT", "content": {"people": [
                {"public_id": "p1", "name": "Ada"},
                {"public_id": null, "name": null},
            ]}})
        );
        assert_eq!(
            check_client_frame(&present.to_json()),
            Err(BadMessage::ServerOnly("PRESENT")),
            "no client may send it"
        );
    }

    #[test]
    fn escaped_type_names_are_understood() {
        assert_eq!(relayed(r#"{"message_type":"\u0042YE"}"#).map(|frame| frame.kind), Ok(Relayed::Bye));
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::{json, Value};

        use super::super::*;

        /// What the server does with a frame: a kind to relay, or an `ERROR` that stays short.
        fn judge(text: &str) -> Result<Option<Relayed>, TestCaseError> {
            match check_client_frame(text) {
                Ok(ClientMessage::Relay(frame)) => Ok(Some(frame.kind)),
                Ok(ClientMessage::Name(_) | ClientMessage::Media(_)) => Ok(None),
                Err(bad) => {
                    let Message::Error(body) = Message::error(ErrorCode::BadMessage, bad.to_string()) else {
                        unreachable!()
                    };
                    prop_assert!(body.message.chars().count() <= MAX_ERROR_CHARS + 1, "{} chars", body.message.len());
                    Ok(None)
                }
            }
        }

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
                ".{0,40}".prop_map(Value::from),
                "[a-z]{1000,3000}".prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("type".to_owned()),
                            Just("sdp".to_owned()),
                            Just("candidate".to_owned()),
                            Just("sdpMid".to_owned()),
                            ".{0,8}"
                        ],
                        inner,
                        0..5
                    )
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            })
        }

        /// Strings mostly of what shows nothing by itself, with now and then anything at all.
        fn nearly_invisible() -> impl Strategy<Value = String> {
            let nothing = "[\\p{Default_Ignorable_Code_Point}\\p{Mn}\\p{Me}\\p{White_Space}\\p{Cc}\\p{Cf}\\p{Co}\\p{Cn}\\p{Grapheme_Cluster_Break=V}\\u{2800}\\u{1d159}]";
            let char = prop_oneof![8 => nothing, 1 => any::<char>().prop_map(String::from)];
            prop::collection::vec(char, 0..60).prop_map(|chars| chars.concat())
        }

        /// Whether a character draws a glyph by itself: a letter, number, punctuation, symbol or
        /// spacing mark (not a mark that sits on another, a separator or "other") that is not
        /// ignorable, and not one of the two blank by design.
        fn draws_a_glyph(c: char) -> bool {
            use icu_properties::{
                props::{GeneralCategory, GeneralCategoryGroup},
                CodePointMapData,
            };
            let category = CodePointMapData::<GeneralCategory>::new().get(c);
            let drawn = [
                GeneralCategoryGroup::Letter,
                GeneralCategoryGroup::Number,
                GeneralCategoryGroup::Punctuation,
                GeneralCategoryGroup::Symbol,
            ];
            (drawn.iter().any(|group| group.contains(category)) || category == GeneralCategory::SpacingMark)
                && !ignorable(c)
                && !matches!(c, '\u{2800}' | '\u{1d159}')
        }

        fn ignorable(c: char) -> bool {
            icu_properties::CodePointSetData::new::<icu_properties::props::DefaultIgnorableCodePoint>().contains(c)
        }

        fn bidi_control(c: char) -> bool {
            icu_properties::CodePointSetData::new::<icu_properties::props::BidiControl>().contains(c)
        }

        proptest! {
            #[test]
            fn any_text_is_a_kind_or_a_short_error(text in any::<String>()) {
                judge(&text)?;
            }

            #[test]
            fn any_bytes_are_a_kind_or_a_short_error(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
                judge(&String::from_utf8_lossy(&bytes))?;
            }

            #[test]
            fn envelopes_with_any_content_are_judged_by_their_type(
                message_type in prop_oneof![
                    Just("SDP"), Just("CANDIDATE"), Just("BYE"), Just("WELCOME"), Just("ERROR"), Just("sdp"), Just("")
                ],
                content in json_value(),
                extra in json_value(),
            ) {
                let frame = json!({"message_type": message_type, "content": content, "extra": extra}).to_string();
                let kind = judge(&frame)?;
                match message_type {
                    "BYE" => prop_assert_eq!(kind, Some(Relayed::Bye)),
                    "SDP" | "CANDIDATE" => prop_assert!(kind.is_none_or(|kind| kind.message_type() == message_type)),
                    _ => prop_assert_eq!(kind, None),
                }
            }

            /// Whatever a name is made of, a name that comes out shows something: at least one
            /// character that draws a glyph, told by its general category rather than by the
            /// property the cleaning uses; and it holds no control, bidirectional control or
            /// ignorable character, no surrounding space, and no more than the limit.
            #[test]
            fn a_name_that_comes_out_shows_something(raw in prop_oneof![any::<String>(), nearly_invisible()]) {
                if let Some(name) = display_name(&raw) {
                    prop_assert!(name.chars().any(draws_a_glyph), "{raw:?} became {name:?}");
                    prop_assert!(name.chars().count() <= MAX_NAME_CHARS);
                    prop_assert_eq!(name.trim(), name.as_str());
                    prop_assert!(
                        !name.chars().any(|c| c.is_control() || bidi_control(c) || ignorable(c)),
                        "{name:?}"
                    );
                }
            }

            /// A name of characters that show (by the regex crate's Unicode tables, another source
            /// than the cleaning's) comes out as it went in.
            #[test]
            fn a_name_of_characters_that_show_is_kept(
                name in "[[\\p{L}\\p{N}\\p{P}\\p{S}]--[\\p{Default_Ignorable_Code_Point}\\p{Grapheme_Extend}\\u{2800}\\u{1d159}]]{1,40}",
            ) {
                prop_assert_eq!(display_name(&name), Some(name));
            }

            #[test]
            fn well_formed_candidates_always_pass(candidate in ".{0,300}", mid in proptest::option::of(".{0,8}"), index in proptest::option::of(any::<u16>())) {
                let frame = json!({"message_type": "CANDIDATE", "content": {"candidate": candidate, "sdpMid": mid, "sdpMLineIndex": index}});
                prop_assert_eq!(judge(&frame.to_string())?, Some(Relayed::Candidate));
            }
        }
    }
}
