//! Chat and names: the lines sent and received over the data channels, each side's allowance,
//! the notes of lines not shown, and this side's name.

use super::{CallMachine, Effect, Timer, SEND_BURST, WITHHELD_NOTE_MS};
use crate::{
    call::{Author, ChatLine},
    protocol::{display_name, ChatMessage, Message, PeerMessage, CHAT_EVERY_MS, MAX_CHAT_CHARS},
};

/// Chat lines allowed: a burst at once, then one every [`CHAT_EVERY_MS`] (a token bucket,
/// counted as the lines used, which drain away with time).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ChatRate {
    pub(super) used: f64,
    pub(super) at_ms: f64,
}

impl ChatRate {
    /// Whether one more line fits in `burst` at `now_ms`; if so, it is counted.
    pub(super) fn take(&mut self, now_ms: f64, burst: u32) -> bool {
        // A clock set back refills nothing.
        let drained = (now_ms - self.at_ms).max(0.0) / CHAT_EVERY_MS;
        self.used = (self.used - drained).max(0.0);
        self.at_ms = now_ms;
        let fits = self.used + 1.0 <= f64::from(burst);
        if fits {
            self.used += 1.0;
        }
        fits
    }
}

/// Someone's messages the page did not show (too long, too many at once, or too big to read).
#[derive(Clone, Copy, Debug)]
pub(super) struct Withheld {
    pub(super) count: u32,
    /// When the first of them came: the note's time.
    pub(super) since_ms: f64,
}

impl CallMachine {
    /// This side's chat line `text`, written at `now_ms`: shown here and sent to everyone, unless
    /// it is more at once than the others' pages show.
    pub(super) fn say(&mut self, text: String, now_ms: f64) {
        if !self.chat_rate.take(now_ms, SEND_BURST) {
            let note = "Your message was not sent: that is more messages at once than the others' pages \
                        show. It is back in the message field; send it again in a moment."
                .to_owned();
            self.push(Effect::Chat(ChatLine { from: Author::Page, text: note, sent_at: now_ms as u64 }));
            self.push(Effect::Unsent(text));
            return;
        }
        // The page's field takes no more, and the others would drop a longer line.
        let text = text.chars().take(MAX_CHAT_CHARS).collect();
        let message = ChatMessage { text, sent_at: now_ms as u64 };
        let line = ChatLine { from: Author::You, text: message.text.clone(), sent_at: message.sent_at };
        self.push(Effect::Chat(line));
        self.send_chat(message);
    }

    /// This side's display name, as typed: to everyone in the call, and to those waiting to join.
    pub(super) fn rename(&mut self, name: &str) {
        self.name = display_name(name);
        let message = PeerMessage::Name(self.name.clone().unwrap_or_default());
        for peer in self.open_channels() {
            self.push(Effect::ToPeer { peer, message: message.clone() });
        }
        // For those waiting to join. Until a WELCOME, the next join carries it.
        if self.welcomed && !self.signaling_lost {
            self.send(None, Message::Name(self.name.clone().unwrap_or_default()));
        }
    }

    /// What a data channel that opened is told first: this side's name (what the page says of
    /// them, "… is muted", names them), its media state, then the chat that waited for it.
    pub(super) fn greet(&mut self, channel: u32, unsent: Vec<ChatMessage>) {
        if let Some(name) = self.name.clone() {
            self.push(Effect::ToPeer { peer: channel, message: PeerMessage::Name(name) });
        }
        let state = self.media.state();
        self.push(Effect::ToPeer { peer: channel, message: PeerMessage::MediaState(state) });
        for message in unsent {
            self.push(Effect::ToPeer { peer: channel, message: PeerMessage::Chat(message) });
        }
    }

    /// The connections whose data channel is open, by generation (on the server, its one).
    pub(super) fn open_channels(&self) -> Vec<u32> {
        match &self.sfu {
            Some(sfu) if sfu.channel_open => vec![sfu.generation],
            // A mesh's channels, also while a room moves to the server.
            _ => {
                let open = self.peers.iter().filter(|peer| peer.own_connection && peer.channel_open);
                open.map(|peer| peer.generation).collect()
            }
        }
    }

    /// Counts a message of theirs that is not shown; the first since the last note arms the next.
    pub(super) fn withhold(&mut self, index: usize, now_ms: f64) {
        let peer = &mut self.peers[index];
        match &mut peer.withheld {
            Some(withheld) => withheld.count += 1,
            None => {
                peer.withheld = Some(Withheld { count: 1, since_ms: now_ms });
                let timer = Timer::Withheld { peer: peer.generation };
                self.push(Effect::Arm { timer, after_ms: WITHHELD_NOTE_MS });
            }
        }
    }

    /// Says in the chat how many of their messages were not shown since the last note, if any.
    pub(super) fn note_withheld(&mut self, index: usize) {
        let group = self.peers.len() > 1;
        let peer = &mut self.peers[index];
        let Some(Withheld { count, since_ms }) = peer.withheld.take() else { return };
        let who = peer.remote().called(group).unwrap_or_else(|| "the other person".into());
        let text = match count {
            1 => format!("1 message from {who} was not shown: too long, or too many at once."),
            _ => format!("{count} messages from {who} were not shown: too long, or too many at once."),
        };
        self.push(Effect::Chat(ChatLine { from: Author::Page, text, sent_at: since_ms as u64 }));
    }

    pub(super) fn send_chat(&mut self, message: ChatMessage) {
        if self.peers.is_empty() {
            self.unsent_chat.push(message);
            return;
        }
        let meshed = self.peers.iter().any(|peer| peer.own_connection && peer.channel_open);
        if let Some(sfu) = &mut self.sfu {
            // One channel, to the server, which passes it on to the room; sent when it opens
            // (while a room moves to the server, on the mesh's channels till then). While a
            // connection of the mesh is still up, the line goes on it too: its person may not
            // be on the server yet, and their page shows a line that comes both ways once.
            if sfu.channel_open {
                let peer = sfu.generation;
                self.push(Effect::ToPeer { peer, message: PeerMessage::Chat(message.clone()) });
                if !meshed {
                    return;
                }
            } else if !meshed {
                return sfu.unsent_chat.push(message);
            }
        }
        let mut sends = Vec::new();
        for peer in self.peers.iter_mut().filter(|peer| peer.own_connection) {
            if peer.channel_open {
                sends.push(Effect::ToPeer { peer: peer.generation, message: PeerMessage::Chat(message.clone()) });
            } else {
                peer.unsent_chat.push(message.clone());
            }
        }
        self.effects.extend(sends);
    }
}
