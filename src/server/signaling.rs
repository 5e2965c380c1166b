//! One signaling connection: reads a peer's frames, checks them against the protocol, relays
//! the good ones through the hub, answers bad ones with `ERROR`, and enforces the limits
//! (frame size, rate, outbound queue, liveness) so one misbehaving browser harms nobody else.

use std::{future::Future, sync::Arc, time::Duration};

use futures_util::{future::Either, SinkExt, StreamExt};
use tokio::time::{interval, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::{
    self,
    protocol::{frame::coding::CloseCode, CloseFrame},
    Message as WsMessage,
};
use tracing::{debug, info, warn, Instrument};

use crate::{
    protocol::{
        check_client_frame, check_join_frame, close_code, BadMessage, ClientMessage, ErrorCode, Message,
        SessionDescription,
    },
    room::RoomId,
    server::hub::{
        self, room_log_name, Delivery, Frame, Hub, Kick, Mailbox, MediaHome, Membership, Outbound, Refusal, Unsent,
        STALL,
    },
    server::limits::{Admit, LogThrottle, Open},
    server::sfu::{link::SfuLink, sockets::Unanswered},
    server::websocket::{Cut, Socket},
};

/// How long one write may take before the reader on the other end is given up on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection waits for the peer's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Frames read, at most, while waiting for it.
const CLOSE_READ_FRAMES: usize = 16;

#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionLimits {
    /// Sustained frames per second (of any kind); bursts of four times as many pass.
    pub(crate) messages_per_second: u32,
    pub(crate) idle_timeout: Duration,
}

/// Decides, when the connection joins its room, whether its `WELCOME` may carry TURN
/// credentials: a socket that waits for `JOIN` and never sends it spends none.
pub(crate) struct TurnGrant(Box<dyn FnOnce() -> bool + Send>);

impl TurnGrant {
    pub(crate) fn new(decide: impl FnOnce() -> bool + Send + 'static) -> Self {
        Self(Box::new(decide))
    }
}

/// When a connection takes its place in the room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Joining {
    /// As soon as it is open (the classic clients).
    Now,
    /// When it sends `JOIN` (`join=later`): a page opens its socket before the person presses
    /// Start, so that joining then costs one message, not a connection.
    Later,
}

/// An upgraded signaling socket's place to go: which room, as whom, under which limits.
pub(crate) struct Connection {
    pub(crate) hub: Arc<Hub>,
    pub(crate) room: RoomId,
    pub(crate) session_id: Option<String>,
    pub(crate) limits: SessionLimits,
    pub(crate) turn: TurnGrant,
    /// This socket, counted against its client's `--max-sockets-per-client`.
    pub(crate) per_client: Open,
}

impl Connection {
    /// Runs a connection that joins as it opens, until it closes. Never panics on anything the
    /// peer sends.
    ///
    /// A plain function that joins the room and returns the connection's future: an `async fn`
    /// would keep its arguments (the WebSocket alone is 368 bytes, moved into the session) and
    /// the join's result in that future for the whole connection, which every idle connection
    /// pays.
    pub(crate) fn run(self, socket: Socket) -> impl Future<Output = ()> {
        let Self { hub, room, session_id, limits, turn, per_client } = self;
        Session::open(socket, limits, per_client).enter(&hub, room, session_id, turn, None)
    }

    /// Runs a `join=later` connection: waits for its `JOIN`, then serves it in a task of its
    /// own. Two tasks rather than one future: a future holding both the wait and the
    /// connection after it is as large as both (2.6 KiB, against 1.4 for the connection
    /// alone), and every connection's task, joined or not, would be that large.
    pub(crate) fn run_after_join(self, socket: Socket) -> impl Future<Output = ()> {
        let Self { hub, room, session_id, limits, turn, per_client } = self;
        Session::open(socket, limits, per_client).until_join(hub, room, session_id, turn)
    }
}

/// One task both reads and writes the socket, taking turns, so it is not split (which would put
/// it behind a lock).
struct Session {
    socket: Socket,
    limits: SessionLimits,
    _open: OnDrop,
    /// This socket, counted against its client's `--max-sockets-per-client`.
    _per_client: Open,
}

/// A connection's place on a forwarding unit, once its room's media goes through one: this
/// instance's, or (with Redis) the room owner's, whose frames come through the mailbox. Left
/// when dropped.
enum MediaLink {
    Local { link: SfuLink, epoch: u64 },
    Remote(hub::RemoteSfu),
}

impl MediaLink {
    fn epoch(&self) -> u64 {
        match self {
            MediaLink::Local { epoch, .. } => *epoch,
            MediaLink::Remote(remote) => remote.epoch(),
        }
    }
}

/// The server's next offer to the browser from this instance's unit; never otherwise (an
/// owner elsewhere sends its offers through the mailbox).
async fn next_offer(link: &mut Option<MediaLink>) -> Option<Message> {
    match link {
        Some(MediaLink::Local { link, .. }) => link.next_offer().await,
        _ => std::future::pending().await,
    }
}

impl Session {
    fn open(socket: Socket, limits: SessionLimits, per_client: Open) -> Self {
        crate::server::metrics::connection_opened();
        let open = OnDrop(crate::server::metrics::connection_closed);
        Self { socket, limits, _open: open, _per_client: per_client }
    }

    /// Takes a place in the room, under the display name `name` (cleaned), and serves the
    /// connection, or refuses it when the room is full (or, with Redis, when Redis does not
    /// answer).
    fn enter(
        self,
        hub: &Arc<Hub>,
        room: RoomId,
        session_id: Option<String>,
        turn: TurnGrant,
        name: Option<String>,
    ) -> impl Future<Output = ()> {
        match hub.join(room.clone(), session_id, (turn.0)(), name) {
            // Decided at once (no Redis): the connection's future holds no join. Boxed, the one
            // that waits for Redis does not make every connection's future larger.
            hub::Joining::Now(joined) => Either::Left(self.joined(joined, room)),
            hub::Joining::Later(joining) => {
                Either::Right(Box::pin(async move { self.joined(joining.await, room).await }))
            }
        }
    }

    fn joined(self, joined: Result<Membership, Refusal>, room: RoomId) -> impl Future<Output = ()> {
        match joined {
            Ok(membership) => {
                let span = tracing::info_span!("peer", room = %room_log_name(&room), peer = membership.peer_id.0);
                span.in_scope(|| info!(polite = membership.welcome.polite, "joined"));
                Either::Left(self.serve(membership).instrument(span))
            }
            Err(refusal) => {
                match refusal {
                    Refusal::Full => info!(room = %room_log_name(&room), "refused someone: the room is full"),
                    Refusal::Unavailable => {
                        warn!(room = %room_log_name(&room), "refused someone: Redis does not answer")
                    }
                    Refusal::Restoring => {
                        info!(room = %room_log_name(&room), "refused someone: the room is being put back in Redis")
                    }
                }
                Either::Right(self.refuse(refusal))
            }
        }
    }

    /// Before `JOIN`: holds no place, and hears from the room only who is in it (`PRESENT`, at
    /// once and after each change); answers anything but `JOIN` with `ERROR`, under the same
    /// rate limit and liveness rules as a member. At `JOIN` the connection goes on in a new
    /// task, and this one ends. (Its own, not wrapped in another future, which would hold the
    /// session a second time.)
    async fn until_join(mut self, hub: Arc<Hub>, room: RoomId, session_id: Option<String>, turn: TurnGrant) {
        let mut waiting = hub.wait(&room);
        let present = waiting.present.borrow_and_update().clone();
        if !self.send_message(WsMessage::Text(present), None).await {
            return;
        }
        let mut pace = self.pace().await;
        loop {
            tokio::select! {
                biased;
                () = hub.stopping() => {
                    self.close(Kick::SHUTDOWN.code, Kick::SHUTDOWN.reason).await;
                    return;
                }
                incoming = self.socket.next() => {
                    let Some(frame) = self.admit(incoming, &mut pace, None).await else { return };
                    let refused = match frame {
                        Some(WsMessage::Text(text)) => match check_join_frame(&text) {
                            Ok(name) => {
                                // A member learns who is there from WELCOME and what follows.
                                drop(waiting);
                                tokio::spawn(self.enter(&hub, room, session_id, turn, name));
                                return;
                            }
                            Err(bad) => bad,
                        },
                        Some(WsMessage::Binary(_)) => BadMessage::Binary,
                        _ => continue,
                    };
                    crate::server::metrics::rejected(ErrorCode::BadMessage.as_str());
                    if !self.send(Message::error(ErrorCode::BadMessage, refused.to_string()).to_json(), None).await {
                        return;
                    }
                }
                changed = waiting.present.changed() => {
                    // (The room, and its sender, live as long as `waiting`.)
                    if changed.is_err() {
                        return;
                    }
                    // Only the latest: changes made while the last one was written coalesce.
                    let present = waiting.present.borrow_and_update().clone();
                    if !self.send_message(WsMessage::Text(present), None).await {
                        return;
                    }
                }
                _ = pace.heartbeat.tick() => {
                    if self.keep_alive(&pace, None).await.is_none() {
                        return;
                    }
                }
            }
        }
    }

    /// The rate limit and liveness of a connection from now on.
    async fn pace(&mut self) -> Pace {
        let mut heartbeat = interval(self.limits.idle_timeout / 3);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        heartbeat.tick().await;
        Pace { last_heard: Instant::now(), heartbeat }
    }

    /// At a heartbeat: closes a connection silent for the idle timeout, else pings it. `None`
    /// when the connection is over.
    async fn keep_alive(&mut self, pace: &Pace, mailbox: Option<&Mailbox>) -> Option<()> {
        if pace.last_heard.elapsed() >= self.limits.idle_timeout {
            info!("dropping a silent peer");
            self.close(close_code::IDLE_TIMEOUT, "no sign of life").await;
            return None;
        }
        self.send_message(WsMessage::Ping(Default::default()), mailbox).await.then_some(())
    }

    /// What the socket gave, checked before its content is: the end of the connection (closed
    /// with the code a broken frame earns), or a frame charged to the rate limit. `None` when
    /// the connection is over, `Some(None)` for a frame refused by the rate limit.
    async fn admit(
        &mut self,
        incoming: Option<Result<WsMessage, tungstenite::Error>>,
        pace: &mut Pace,
        mailbox: Option<&Mailbox>,
    ) -> Option<Option<WsMessage>> {
        pace.last_heard = Instant::now();
        let frame = match incoming {
            None | Some(Ok(WsMessage::Close(_))) => {
                debug!("the peer closed the socket");
                return None;
            }
            Some(Err(tungstenite::Error::Io(error))) if Cut::of(&error) == Some(Cut::Flood) => {
                self.flooded().await;
                return None;
            }
            Some(Err(error)) => {
                debug!(%error, "socket error");
                if let Some((code, reason)) = close_for(error) {
                    crate::server::metrics::rejected(reason);
                    self.close(code, reason).await;
                }
                return None;
            }
            Some(Ok(frame)) => frame,
        };
        // Every frame costs tokens, whatever its kind: a flood of pings or binary frames costs
        // the server as much as one of messages. And a flooding peer yields to the others now
        // and then.
        tokio::task::consume_budget().await;
        let verdict = self.socket.get_mut().meter.flood.admit(frame_len(&frame), pace.last_heard.into_std());
        let passed = self.obey(verdict, "too many messages; slow down", mailbox).await?;
        Some(passed.then_some(frame))
    }

    /// Carries out the rate limit's verdict on a frame: `Some(true)` to go on with it,
    /// `Some(false)` when it is refused (the first of a run of refusals is told `why`), `None`
    /// when the connection is over.
    async fn obey(&mut self, verdict: Admit, why: &str, mailbox: Option<&Mailbox>) -> Option<bool> {
        match verdict {
            Admit::Pass => Some(true),
            Admit::Refuse { first } => {
                crate::server::metrics::rejected(ErrorCode::RateLimited.as_str());
                if first && !self.send(Message::error(ErrorCode::RateLimited, why).to_json(), mailbox).await {
                    return None;
                }
                Some(false)
            }
            Admit::Close => {
                self.flooded().await;
                None
            }
        }
    }

    /// Closes a peer whose frames ran its rate limit's debt deeper than the burst.
    async fn flooded(&mut self) {
        crate::server::metrics::rejected(ErrorCode::RateLimited.as_str());
        if let Some(left_out) = FLOOD_LOG.allow(std::time::Instant::now()) {
            warn!(similar_left_out = left_out, "closing a flooding peer");
        }
        self.close(close_code::POLICY_VIOLATION, "too many messages").await;
    }

    async fn refuse(mut self, refusal: Refusal) {
        let (code, close, reason) = match refusal {
            Refusal::Full => (ErrorCode::RoomFull, close_code::ROOM_FULL, "room full"),
            Refusal::Unavailable | Refusal::Restoring => {
                (ErrorCode::Unavailable, close_code::TRY_AGAIN_LATER, "try again later")
            }
        };
        crate::server::metrics::rejected(code.as_str());
        if self.send(Message::error(code, refusal.to_string()).to_json(), None).await {
            self.close(close, reason).await;
        }
    }

    /// Like [`Connection::run`], a plain function: an `async fn` would hold its arguments twice.
    #[allow(clippy::manual_async_fn)]
    fn serve(mut self, membership: Membership) -> impl Future<Output = ()> {
        async move {
            let _left = OnDrop(|| info!("left"));
            let mailbox = &*membership.mailbox;
            if !self.send(Message::Welcome(membership.welcome.clone()).to_json(), Some(mailbox)).await {
                return;
            }
            // A place on a forwarding unit, taken at the browser's first offer to it (a room
            // may move there mid-call, and with Redis to another owner).
            let mut media: Option<MediaLink> = None;
            let mut pace = self.pace().await;
            loop {
                tokio::select! {
                    biased;
                    delivery = mailbox.next() => match delivery {
                        Delivery::Close(kick) => {
                            debug!(code = kick.code, "closed by the hub");
                            self.close(kick.code, kick.reason).await;
                            return;
                        }
                        Delivery::Write(outbound) => {
                            if !self.write_queued(outbound, &membership).await {
                                return;
                            }
                        }
                    },
                    incoming = self.socket.next() => {
                        let Some(frame) = self.admit(incoming, &mut pace, Some(mailbox)).await else { return };
                        let refused = match frame {
                            Some(WsMessage::Text(text)) => match check_client_frame(&text) {
                                Ok(ClientMessage::Name(name)) => {
                                    membership.rename(name);
                                    continue;
                                }
                                Ok(ClientMessage::Media(description)) => {
                                    let link = match media_link(&mut media, &membership).await {
                                        Ok(link) => link,
                                        Err(error) => {
                                            warn!(%error, "no place on the forwarding unit");
                                            self.close(close_code::TRY_AGAIN_LATER, "the media server is not answering").await;
                                            return;
                                        }
                                    };
                                    match media_sdp(link, description).await {
                                    Ok(Some(reply)) => {
                                        if !self.send(reply.to_json(), Some(mailbox)).await {
                                            return;
                                        }
                                        continue;
                                    }
                                    Ok(None) => continue,
                                    Err(refused) => refused,
                                }},
                                Ok(ClientMessage::Relay(checked)) => {
                                    let (to, kind, len) = (checked.to, checked.kind, text.len());
                                    let frame = checked.stamped(membership.peer_id).map_or(text, Frame::from);
                                    match membership.relay(frame, to, pace.last_heard.into_std()) {
                                        Ok(()) => {
                                            crate::server::metrics::relayed(kind);
                                            continue;
                                        }
                                        // Others filling a person's queue pay for it, as for
                                        // frames over their own rate.
                                        Err(Unsent::Busy(busy)) => {
                                            let verdict = self.socket.get_mut().meter.flood.refuse(len);
                                            if self.obey(verdict, &busy.to_string(), Some(mailbox)).await.is_none() {
                                                return;
                                            }
                                            continue;
                                        }
                                        Err(Unsent::Misaddressed(misaddressed)) => misaddressed.to_string(),
                                    }
                                }
                                Err(bad) => bad.to_string(),
                            },
                            Some(WsMessage::Binary(_)) => BadMessage::Binary.to_string(),
                            // Refused by the rate limit; or a ping or pong (the library answers
                            // pings itself; a pong only proves liveness).
                            _ => continue,
                        };
                        debug!(%refused, "refused a frame");
                        if !self.error(ErrorCode::BadMessage, refused, mailbox).await {
                            return;
                        }
                    }
                    offer = next_offer(&mut media) => {
                        let Some(offer) = offer else {
                            self.close(close_code::TRY_AGAIN_LATER, "the media server stopped").await;
                            return;
                        };
                        if membership.media_home().map(|home| home.epoch()) != media.as_ref().map(MediaLink::epoch) {
                            // The room's media moved elsewhere (this instance was taken for dead):
                            // the page was told to connect there, and this place goes.
                            media = None;
                            continue;
                        }
                        if !self.send(offer.to_json(), Some(mailbox)).await {
                            return;
                        }
                    }
                    _ = pace.heartbeat.tick() => {
                        if self.keep_alive(&pace, Some(mailbox)).await.is_none() {
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn error(&mut self, code: ErrorCode, message: String, mailbox: &Mailbox) -> bool {
        if code == ErrorCode::BadMessage {
            crate::server::metrics::rejected(code.as_str());
        }
        self.send(Message::error(code, message).to_json(), Some(mailbox)).await
    }

    async fn send(&mut self, text: String, mailbox: Option<&Mailbox>) -> bool {
        self.send_message(WsMessage::Text(text.into()), mailbox).await
    }

    /// Writes one message; false when the connection is gone, the peer stopped reading, or the
    /// hub kicked this connection meanwhile (a replaced connection must not linger in a write).
    async fn send_message(&mut self, message: WsMessage, mailbox: Option<&Mailbox>) -> bool {
        let write = timeout(WRITE_TIMEOUT, self.socket.send(message));
        match mailbox {
            Some(mailbox) => tokio::select! {
                written = write => matches!(written, Ok(Ok(()))),
                _ = mailbox.kicked() => false,
            },
            None => matches!(write.await, Ok(Ok(()))),
        }
    }

    /// Writes `first` and every frame already queued behind it, flushing once: a busy peer's
    /// frames share system calls and packets. Gives up at once if the hub kicks this peer, and
    /// drops it as too slow if the write is stuck while frames for it no longer fit.
    async fn write_queued(&mut self, first: Outbound, membership: &Membership) -> bool {
        let mailbox = &*membership.mailbox;
        let socket = &mut self.socket;
        let write = async {
            let mut next = Some(first);
            while let Some(outbound) = next {
                socket.feed(WsMessage::Text(outbound.frame)).await?;
                if let Some(received_at) = outbound.relayed_at {
                    crate::server::metrics::relay_latency(received_at.elapsed());
                }
                next = mailbox.try_next();
            }
            socket.flush().await
        };
        // Checked only while a write is stuck (a write that completes at once never arms it).
        let stuck = async {
            loop {
                tokio::time::sleep(STALL).await;
                if mailbox.overflowing(std::time::Instant::now()) {
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            written = timeout(WRITE_TIMEOUT, write) => matches!(written, Ok(Ok(()))),
            _ = mailbox.kicked() => false,
            () = stuck => {
                membership.too_slow();
                false
            }
        }
    }

    /// Sends a close frame and waits (briefly) for the peer's: dropping the connection while
    /// its frames still arrive would reset it, and the peer would lose the close frame too.
    /// A peer that goes on sending is read no further (reading a flood costs the server), but
    /// still given the time to read the close frame.
    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        let handshake = async {
            self.socket.send(WsMessage::Close(Some(frame))).await.ok()?;
            for _ in 0..CLOSE_READ_FRAMES {
                if let WsMessage::Close(_) = self.socket.next().await?.ok()? {
                    return Some(());
                }
            }
            std::future::pending().await
        };
        let _ = timeout(CLOSE_TIMEOUT, handshake).await;
    }
}

/// Runs its function when dropped, however the connection ends.
struct OnDrop(fn());

impl Drop for OnDrop {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// The person's place on a forwarding unit, as their room's media goes now: taken at their
/// browser's first `MEDIA_SDP` there, and again when the room's media moved to another owner
/// (the old place is left); none while the room is a mesh.
async fn media_link<'a>(
    link: &'a mut Option<MediaLink>,
    membership: &Membership,
) -> Result<Option<&'a MediaLink>, Unanswered> {
    let Some(home) = membership.media_home() else { return Ok(link.as_ref()) };
    if link.as_ref().map(MediaLink::epoch) != Some(home.epoch()) {
        *link = None;
        *link = Some(match home {
            MediaHome::Here { epoch } => {
                let sfu = membership.sfu().ok_or(Unanswered::Stopped)?;
                MediaLink::Local { link: SfuLink::join(sfu, &membership.sfu_room(), membership.peer_id).await?, epoch }
            }
            MediaHome::There(owner) => MediaLink::Remote(membership.remote_sfu(owner).ok_or(Unanswered::Stopped)?),
        });
    }
    Ok(link.as_ref())
}

/// A browser's `MEDIA_SDP` for the forwarding unit: its offer gets the server's answer (from an
/// owner elsewhere, later, through the mailbox); its answer to the server's offer gets nothing
/// back. An `ERROR`'s text when refused.
async fn media_sdp(link: Option<&MediaLink>, description: SessionDescription) -> Result<Option<Message>, String> {
    match link.ok_or("this room's media goes browser to browser")? {
        MediaLink::Local { link, .. } => link.take(description).await,
        MediaLink::Remote(remote) => remote.send(description).map(|()| None),
    }
}

/// The close frame a broken frame earns (RFC 6455 section 7.4.1), if the socket can still
/// take one: too big 1009, text that is not UTF-8 1007, any other protocol breach 1002.
fn close_for(error: tungstenite::Error) -> Option<(u16, &'static str)> {
    use tungstenite::error::ProtocolError;
    match error {
        // (A flood of fragments is closed as other floods are, before this.)
        tungstenite::Error::Io(error) if Cut::of(&error) == Some(Cut::Unfinished) => {
            Some((close_code::POLICY_VIOLATION, "unfinished_message"))
        }
        tungstenite::Error::Capacity(_) => Some((close_code::MESSAGE_TOO_BIG, "message_too_big")),
        tungstenite::Error::Utf8(_) => Some((close_code::INVALID_PAYLOAD, "invalid_utf8")),
        // The peer dropped the connection: there is no one to tell.
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        tungstenite::Error::Protocol(_) => Some((close_code::PROTOCOL_ERROR, "protocol_error")),
        _ => None,
    }
}

/// Flood lines for the whole server: a few a second, however many peers flood.
static FLOOD_LOG: LogThrottle = LogThrottle::new();

fn frame_len(frame: &WsMessage) -> usize {
    match frame {
        WsMessage::Text(text) => text.len(),
        WsMessage::Binary(bytes) | WsMessage::Ping(bytes) | WsMessage::Pong(bytes) => bytes.len(),
        WsMessage::Close(_) | WsMessage::Frame(_) => 0,
    }
}

/// A connection's liveness: `heartbeat` pings it and drops it once nothing was heard for the
/// idle timeout. (Its rate limit is its socket's [`crate::server::websocket::Meter`].)
struct Pace {
    last_heard: Instant,
    heartbeat: tokio::time::Interval,
}
