//! A person's place on this instance's forwarding unit, as signaling sees it: their browser's
//! `MEDIA_SDP` in, the server's answers and offers out as ready frames. A connection here holds
//! one for its person; with `--redis`, a stand-in task holds one for a person whose signaling
//! is on another instance, and sends its frames back there.

use tokio::sync::mpsc;

use super::{
    core::{Offer, PersonId},
    sockets::{Sfu, Unanswered},
};
use crate::protocol::{ErrorCode, MediaDescription, Message, PeerId, SdpType, SessionDescription, Track};

/// What a `MEDIA_SDP` that is neither an offer nor an answer is told, wherever its unit is.
pub(crate) const OFFER_OR_ANSWER: &str = "MEDIA_SDP takes an offer or an answer";

/// A place on the forwarding unit; left when dropped.
pub(crate) struct SfuLink {
    sfu: Sfu,
    person: PersonId,
    /// The server's offers to this person's browser.
    offers: mpsc::UnboundedReceiver<Offer>,
}

impl SfuLink {
    /// Takes a place in `room` (its key: people of every instance share it) for `peer_id`.
    pub(crate) async fn join(sfu: &Sfu, room: &str, peer_id: PeerId) -> Result<Self, Unanswered> {
        let (sender, offers) = mpsc::unbounded_channel();
        let person = sfu.join(room, peer_id.0, sender).await?;
        Ok(Self { sfu: sfu.clone(), person, offers })
    }

    /// The browser's `MEDIA_SDP`: its offer gets the server's answer; its answer to the server's
    /// offer gets nothing back. An `ERROR`'s text when refused.
    pub(crate) async fn take(&self, description: SessionDescription) -> Result<Option<Message>, String> {
        match description.kind {
            SdpType::Offer => {
                let sdp = self.sfu.offer(self.person, description.sdp).await.map_err(|error| error.to_string())?;
                Ok(Some(Message::MediaSdp(MediaDescription { kind: SdpType::Answer, sdp, tracks: Vec::new() })))
            }
            SdpType::Answer => {
                self.sfu.answer(self.person, description.sdp).await.map_err(|error| error.to_string())?;
                Ok(None)
            }
            _ => Err(OFFER_OR_ANSWER.into()),
        }
    }

    /// The server's next offer to the browser, naming whose media each m-line carries; `None`
    /// once the forwarding unit stopped.
    pub(crate) async fn next_offer(&mut self) -> Option<Message> {
        let offer = self.offers.recv().await?;
        let tracks = offer.tracks.iter().map(|(mid, label)| Track { mid: mid.to_string(), peer_id: PeerId(*label) });
        Some(Message::MediaSdp(MediaDescription { kind: SdpType::Offer, sdp: offer.sdp, tracks: tracks.collect() }))
    }
}

impl Drop for SfuLink {
    fn drop(&mut self) {
        self.sfu.leave(self.person);
    }
}

/// Holds a place on `sfu` for someone whose signaling is on another instance: takes their
/// browser's descriptions from `requests` and gives every frame for them to `reply`. Ends, and
/// leaves, when `requests` closes (they left, or this instance no longer carries the room).
pub(crate) fn stand_in(
    sfu: Sfu,
    room: String,
    peer_id: PeerId,
    mut requests: mpsc::UnboundedReceiver<SessionDescription>,
    reply: impl Fn(Message) + Send + 'static,
) {
    tokio::spawn(async move {
        let mut link = match SfuLink::join(&sfu, &room, peer_id).await {
            Ok(link) => link,
            Err(error) => return reply(Message::error(ErrorCode::Unavailable, error.to_string())),
        };
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(description) = request else { return };
                    match link.take(description).await {
                        Ok(Some(answer)) => reply(answer),
                        Ok(None) => {}
                        Err(refused) => reply(Message::error(ErrorCode::BadMessage, refused)),
                    }
                }
                offer = link.next_offer() => match offer {
                    Some(offer) => reply(offer),
                    None => return reply(Message::error(ErrorCode::Unavailable, "the media server stopped")),
                },
            }
        }
    });
}
