//! Where a room's media goes once it leaves the mesh. Without Redis: this instance's forwarding
//! unit. With `--redis`: the one of the room's owner, which Redis names (`Owner`, with the epoch
//! of its ownership). A person whose signaling is here and whose room another instance owns
//! sends their SDP there ([`RemoteSfu`]); the owner holds their place on its unit (a stand-in,
//! `sfu::link::stand_in`) and sends the answers and offers back. The epoch fences both ways,
//! so nothing a former owner says reaches a browser.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{
    lock,
    shared::{Link, Owner, SfuVerb},
    Frame, Hub, Outbound, Places, RoomKey, Seat, Source,
};
use crate::{
    protocol::{MediaRoute, Message, PeerId, RouteChange, SdpType, SessionDescription},
    server::{
        config::MediaMode,
        sfu::link::{stand_in, OFFER_OR_ANSWER},
    },
};

/// Where a person's media goes, once the room's goes through a forwarding unit.
pub(crate) enum MediaHome {
    /// This instance's unit: the room's owner since `epoch` (0 without Redis).
    Here { epoch: u64 },
    /// Another instance's.
    There(Owner),
}

impl MediaHome {
    pub(crate) fn epoch(&self) -> u64 {
        match self {
            MediaHome::Here { epoch } => *epoch,
            MediaHome::There(owner) => owner.epoch,
        }
    }
}

/// What a new media record means for the people here.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum MediaNews {
    /// Nothing new (an older or the same record).
    Stale,
    /// The room leaves the mesh.
    Moved,
    /// Its media moves to another owner: everyone connects to it afresh.
    Reconnect,
}

/// Decides what a record naming `new` means when this instance knew `old`.
pub(super) fn media_news(old: Option<&Owner>, new: &Owner) -> MediaNews {
    match old {
        None => MediaNews::Moved,
        Some(old) if old.epoch >= new.epoch => MediaNews::Stale,
        Some(_) => MediaNews::Reconnect,
    }
}

/// A person's place on another instance's forwarding unit, through Redis: their SDP goes to the
/// owner; its frames come back into their mailbox. Left when dropped.
pub(crate) struct RemoteSfu {
    link: Link,
    owner: Owner,
    key: RoomKey,
    peer: PeerId,
}

impl RemoteSfu {
    pub(crate) fn epoch(&self) -> u64 {
        self.owner.epoch
    }

    /// Sends the browser's offer or answer to the owner.
    pub(crate) fn send(&self, description: SessionDescription) -> Result<(), String> {
        let verb = match description.kind {
            SdpType::Offer => SfuVerb::Offer,
            SdpType::Answer => SfuVerb::Answer,
            _ => return Err(OFFER_OR_ANSWER.into()),
        };
        self.link.to_sfu(&self.owner, &self.key, self.peer, verb, description.sdp);
        Ok(())
    }
}

impl Drop for RemoteSfu {
    fn drop(&mut self) {
        self.link.to_sfu(&self.owner, &self.key, self.peer, SfuVerb::Leave, String::new());
    }
}

impl Hub {
    /// Takes in the room's media record as Redis has it (`None`: it has none, or none yet).
    /// Everyone here hears of a move before the change that caused it (the record comes first).
    pub(super) fn set_media(&self, places: &mut Places, media: Option<Owner>) {
        let Some(new) = media.filter(|_| self.shared.is_some()) else { return };
        let news = media_news(places.media.as_ref(), &new);
        if news == MediaNews::Stale {
            return;
        }
        let was_mine = self.carries(places);
        let mine = self.is_mine(&new);
        places.media = Some(new.clone());
        places.route = MediaRoute::Sfu;
        if was_mine && !mine {
            // The stand-ins leave this unit: their people go to the new owner.
            places.hosted.clear();
        }
        if mine && !was_mine {
            info!(room = places.key.0, epoch = new.epoch, "carries the media of this room");
        }
        let reconnect = news == MediaNews::Reconnect;
        if reconnect {
            warn!(room = places.key.0, owner = %new.instance, "the media of this room moved to another instance");
            crate::server::metrics::owner_changed(mine);
        } else if self.settings.media == MediaMode::Auto {
            crate::server::metrics::room_moved();
        }
        self.tell(places, usize::MAX, |_| Message::MediaRoute(RouteChange { media: MediaRoute::Sfu, reconnect }));
    }

    /// Redis deletes a room that empties, its media record with it: a room object kept here
    /// meanwhile (someone waits to join it) starts afresh, as the scripts then say.
    pub(super) fn forget_media_if_empty(&self, places: &mut Places) {
        if self.shared.is_some() && places.seats.iter().all(|place| place.seat.is_none()) {
            places.media = None;
            places.hosted.clear();
            places.route = MediaRoute::Mesh;
        }
    }

    /// As this instance shuts down: every room whose media it carries goes to another instance,
    /// where its people (those here too) connect at once.
    pub(crate) fn hand_over_media(&self) {
        let Some(link) = &self.shared else { return };
        for room in lock(&self.rooms).values() {
            let places = lock(&room.places);
            if self.carries(&places) {
                link.hand_over(&places.key);
            }
        }
    }

    /// Where a person of this room sends their media now; `None` while it is a mesh.
    pub(super) fn media_home(&self, places: &Places) -> Option<MediaHome> {
        if self.shared.is_none() {
            return (places.route == MediaRoute::Sfu).then_some(MediaHome::Here { epoch: 0 });
        }
        let owner = places.media.as_ref()?;
        Some(if self.is_mine(owner) { MediaHome::Here { epoch: owner.epoch } } else { MediaHome::There(owner.clone()) })
    }

    /// A place for `peer` of room `key` on `owner`'s unit.
    pub(super) fn remote_sfu(&self, owner: Owner, key: RoomKey, peer: PeerId) -> Option<RemoteSfu> {
        Some(RemoteSfu { link: self.shared.clone()?, owner, key, peer })
    }

    /// Whether `owner` names this instance (with Redis).
    pub(super) fn is_mine(&self, owner: &Owner) -> bool {
        self.shared.as_ref().is_some_and(|link| link.instance == owner.instance)
    }

    /// Whether this instance carries the room's media, as Redis names its owner.
    fn carries(&self, places: &Places) -> bool {
        places.media.as_ref().is_some_and(|owner| self.is_mine(owner))
    }

    /// Whether this instance carries the room's media and must keep the room though no one
    /// here is in it (someone elsewhere is).
    pub(super) fn owns(&self, places: &Places) -> bool {
        self.carries(places) && places.seats.iter().any(|place| place.seat.is_some())
    }

    /// SDP that instance `from` sent for its person `peer` of room `key`, for this instance's
    /// unit as the room's owner since `epoch`. Taken only if this instance owns the room at that
    /// epoch and the room has that person there; anything else is counted and dropped.
    pub(super) fn sfu_request(
        &self,
        from: &Arc<str>,
        key: &RoomKey,
        peer: PeerId,
        epoch: u64,
        verb: SfuVerb,
        sdp: String,
    ) {
        let (Some(room), Some(link), Some(sfu)) = (self.room(key), &self.shared, &self.settings.sfu) else {
            return crate::server::metrics::remote_request(false);
        };
        let mut places = lock(&room.places);
        let owner = places.media.as_ref().is_some_and(|owner| self.is_mine(owner) && owner.epoch == epoch);
        let theirs = places
            .seats
            .iter()
            .filter_map(|place| place.seat.as_ref())
            .any(|seat| matches!(seat, Seat::There(remote) if remote.peer_id == peer && remote.instance == *from));
        if !(owner && theirs) {
            debug!(room = key.0, peer = peer.0, owner, theirs, "refused SDP from another instance");
            return crate::server::metrics::remote_request(false);
        }
        crate::server::metrics::remote_request(true);
        let kind = match verb {
            SfuVerb::Leave => {
                places.hosted.remove(&peer);
                return;
            }
            SfuVerb::Offer => SdpType::Offer,
            SfuVerb::Answer => SdpType::Answer,
        };
        if places.hosted.get(&peer).is_some_and(mpsc::UnboundedSender::is_closed) {
            // Its stand-in ended (the unit did not take them, or stopped): a new one tries again.
            places.hosted.remove(&peer);
        }
        let requests = places.hosted.entry(peer).or_insert_with(|| {
            let (requests, taken) = mpsc::unbounded_channel();
            let (link, home, room) = (link.clone(), from.clone(), key.clone());
            let reply = move |message: Message| {
                link.to_home(home.clone(), &room, peer, epoch, Frame::from(message.to_json()));
            };
            stand_in(sfu.clone(), key.0.clone(), peer, taken, reply);
            requests
        });
        let _ = requests.send(SessionDescription { kind, sdp });
    }

    /// A frame the unit of `from` sent for `peer` here: delivered as the hub's own (never
    /// refused: a lost offer would wedge the negotiation), if `from` owns the room now.
    pub(super) fn sfu_reply(&self, from: &Arc<str>, key: &RoomKey, peer: PeerId, epoch: u64, frame: Frame) {
        let Some(room) = self.room(key) else { return };
        let mut places = lock(&room.places);
        if places.media.as_ref().is_none_or(|owner| owner.epoch != epoch || owner.instance != *from) {
            return;
        }
        if let Some(index) = super::place_of(&places.seats, peer) {
            let outbound = Outbound { frame, relayed_at: None, from: Source::Hub };
            let _ = self.deliver_frame(&mut places, index, outbound, std::time::Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_record_moves_the_room_a_newer_one_reconnects_and_an_older_one_is_nothing() {
        let owner = |instance: &str, epoch| Owner { instance: instance.into(), epoch };
        assert_eq!(media_news(None, &owner("a", 5)), MediaNews::Moved);
        assert_eq!(media_news(Some(&owner("a", 5)), &owner("a", 5)), MediaNews::Stale);
        assert_eq!(media_news(Some(&owner("a", 5)), &owner("b", 4)), MediaNews::Stale, "a former owner");
        assert_eq!(media_news(Some(&owner("a", 5)), &owner("b", 9)), MediaNews::Reconnect);
    }
}
