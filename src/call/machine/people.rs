//! The other people in the call, one [`Peer`] each: the connection to them and what is
//! known of them (their name, number, media and voice).

use super::{
    chat::{ChatRate, Withheld},
    ConnectionState, Signaling, SPEAKING_HOLD_MS, SPEAKING_LEVEL,
};
use crate::{
    call::{stats::Traffic, Remote},
    protocol::{ChatMessage, IceCandidate, MediaState, PeerId},
};

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
