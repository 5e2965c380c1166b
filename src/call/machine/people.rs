//! The other people in the call, one [`Peer`] each: the connection to them and what is
//! known of them (their name, number, media and voice).

use std::collections::VecDeque;

use super::{
    chat::{ChatRate, Withheld},
    CallMachine, ConnectionState, Effect, Signaling, SPEAKING_HOLD_MS, SPEAKING_LEVEL,
};
use crate::{
    call::{stats::Traffic, Author, ChatLine, Remote},
    protocol::{
        display_name, ChatMessage, IceCandidate, MediaState, PeerId, PeerInfo, PeerMessage, CHAT_BURST, MAX_CHAT_CHARS,
    },
};

/// How many of a person's last chat lines are remembered to show each once.
const HEARD_CHAT: usize = 16;

/// The peer connection to one other person.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) generation: u32,
    /// Their connection's id on the server: what `to` names, and `from` says. It changes when
    /// they reconnect; `public_id` does not.
    pub(super) peer_id: PeerId,
    pub(super) public_id: Option<String>,
    /// This side's role in the pair.
    pub(super) polite: bool,
    pub(super) connection: ConnectionState,
    /// It has been connected: a call that can outlive its signaling. One that never connected
    /// is started afresh when its person comes back, the same way by both sides.
    pub(super) ever_connected: bool,
    /// The connection took longer than [`CONNECT_TIMEOUT_MS`] and has not connected since.
    pub(super) timed_out: bool,
    pub(super) signaling: Signaling,
    pub(super) has_remote_description: bool,
    /// Made to answer: until their offer comes, `negotiationneeded` (the data channel raises
    /// it) must not make an offer of our own.
    pub(super) awaits_offer: bool,
    /// Whether the last incoming offer was ignored (then its candidates may fail to apply).
    pub(super) ignore_offer: bool,
    /// Candidates that arrived before the remote description they belong to.
    pub(super) early_candidates: Vec<IceCandidate>,
    pub(super) channel_open: bool,
    /// Chat for them typed before their channel was open; sent when it opens.
    pub(super) unsent_chat: Vec<ChatMessage>,
    pub(super) receiving: bool,
    pub(super) media: Option<MediaState>,
    /// They came after this side: the page says they joined, once their name is known.
    pub(super) newcomer: bool,
    pub(super) traffic: Option<Traffic>,
    /// Their number in this call: people are numbered as they come, and keep their number.
    pub(super) number: u32,
    pub(super) name: Option<String>,
    pub(super) voice: Voice,
    /// How many of their chat lines may be shown now.
    pub(super) chat_rate: ChatRate,
    /// Their messages not shown since the last note of them.
    pub(super) withheld: Option<Withheld>,
    /// In a room on the server: the server's m-lines that carry their media to this side.
    pub(super) mids: Vec<String>,
    /// Their last chat lines (when sent, and what): while a room moves to the server, a line
    /// comes both ways, over their connection and through the server, and is shown once.
    pub(super) heard_chat: VecDeque<(u64, String)>,
    /// A connection of its own to them (a mesh), rather than their media on the server's.
    pub(super) own_connection: bool,
}

/// Whether someone is speaking, from successive audio levels: above [`SPEAKING_LEVEL`] within
/// the last [`SPEAKING_HOLD_MS`].
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Voice {
    pub(super) loud_at: Option<f64>,
    pub(super) speaking: bool,
}

impl Voice {
    /// A reading at `now_ms`; no level (nothing played out or captured since the last) is
    /// silence.
    pub(super) fn hear(&mut self, level: Option<f64>, now_ms: f64) {
        if level.is_some_and(|level| level > SPEAKING_LEVEL) {
            self.loud_at = Some(now_ms);
        }
        self.speaking = self.loud_at.is_some_and(|loud| now_ms - loud < SPEAKING_HOLD_MS);
    }
}

impl Peer {
    /// `member`, shown as tile `generation` (in a mesh, also their connection's), number
    /// `number` in the call; `newcomer` when they came after this side.
    pub(super) fn new(generation: u32, member: &PeerInfo, polite: bool, number: u32, newcomer: bool) -> Self {
        Self {
            generation,
            peer_id: member.peer_id,
            public_id: member.public_id.clone(),
            polite: member.polite.unwrap_or(polite),
            connection: ConnectionState::New,
            ever_connected: false,
            timed_out: false,
            signaling: Signaling::Stable,
            has_remote_description: false,
            awaits_offer: newcomer,
            ignore_offer: false,
            early_candidates: Vec::new(),
            channel_open: false,
            unsent_chat: Vec::new(),
            receiving: false,
            media: None,
            newcomer,
            traffic: None,
            number,
            name: None,
            voice: Voice::default(),
            chat_rate: ChatRate::default(),
            withheld: None,
            mids: Vec::new(),
            heard_chat: VecDeque::new(),
            own_connection: false,
        }
    }

    /// It never connected, and the browser gave up on it (or took too long): nothing left to try.
    pub(super) fn could_not_connect(&self) -> bool {
        !self.ever_connected && (self.connection == ConnectionState::Failed || self.timed_out)
    }

    pub(super) fn remote(&self) -> Remote {
        Remote {
            peer: self.generation,
            number: self.number,
            receiving: self.receiving,
            media: self.media,
            name: self.name.clone(),
            // Muted is silent, whatever the last reading said.
            speaking: self.voice.speaking && self.media.is_none_or(|media| media.audio),
        }
    }
}

impl CallMachine {
    /// Someone joins those shown (with a connection of their own or not): the count of people
    /// this call has had goes up, and theirs is the next number.
    pub(super) fn count_in(&mut self) -> u32 {
        self.someone_left = false;
        if self.peers.is_empty() {
            self.company = 0;
        }
        self.company = self.company.max(self.peers.len() + 1);
        self.people += 1;
        self.people
    }

    /// A message from the other person shown as `index`, over a data channel (theirs, or the
    /// server's passing it on).
    pub(super) fn heard(&mut self, index: usize, message: PeerMessage, now_ms: f64) {
        let peer = &mut self.peers[index];
        match message {
            PeerMessage::MediaState(state) => {
                // Their first media state follows their name on the channel: now the page can
                // say who joined.
                let arrived = peer.media.is_none() && std::mem::take(&mut peer.newcomer);
                // A microphone going off or on is worth a word: a tile's icon is easily missed,
                // and a screen reader hears no icon at all.
                let muted = peer.media.filter(|before| before.audio != state.audio).map(|_| !state.audio);
                peer.media = Some(state);
                let who = || self.peers[index].remote().named(self.peers.len() > 1);
                let event = match (arrived, muted) {
                    (true, _) => Some(format!("{} joined", who())),
                    (false, Some(true)) => Some(format!("{} muted", who())),
                    (false, Some(false)) => Some(format!("{} unmuted", who())),
                    (false, None) => None,
                };
                if let Some(text) = event {
                    self.push(Effect::Event(text));
                }
            }
            PeerMessage::Name(name) => peer.name = display_name(&name),
            // A line longer than any page sends is dropped whole: a part of it would be a line
            // they never wrote. It takes nothing from their allowance.
            PeerMessage::Chat(message) if message.text.chars().count() > MAX_CHAT_CHARS => self.withhold(index, now_ms),
            // The same line a second way (see `heard_chat`): shown, and counted, once.
            PeerMessage::Chat(message) if peer.heard_chat.contains(&(message.sent_at, message.text.clone())) => {}
            PeerMessage::Chat(_) if !peer.chat_rate.take(now_ms, CHAT_BURST) => self.withhold(index, now_ms),
            PeerMessage::Chat(message) => {
                if peer.heard_chat.len() == HEARD_CHAT {
                    peer.heard_chat.pop_front();
                }
                peer.heard_chat.push_back((message.sent_at, message.text.clone()));
                // Named as the page names them now (their name comes first on the channel).
                let from = peer.remote().called(self.peers.len() > 1).unwrap_or_else(|| "Them".into());
                let line = ChatLine { from: Author::Them(from), text: message.text, sent_at: message.sent_at };
                self.push(Effect::Chat(line));
            }
            // For the server, which keeps it: another page has no say in what this one is sent.
            PeerMessage::View(_) => {}
        }
    }
}
