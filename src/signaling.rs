//! One signaling connection: reads a peer's frames, checks them against the protocol, relays
//! the good ones through the hub, answers bad ones with `ERROR`, and enforces the limits
//! (frame size, rate, outbound queue, liveness) so one misbehaving browser harms nobody else.

use std::{future::Future, sync::Arc, time::Duration};

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::{future::Either, SinkExt, StreamExt};
use tokio::time::{interval, timeout, Instant, MissedTickBehavior};
use tracing::{debug, info, warn, Instrument};

use crate::{
    hub::{room_log_name, Delivery, Hub, Mailbox, Membership, Outbound, RoomFull},
    protocol::{check_client_frame, close_code, BadMessage, ErrorCode, Message},
    room::RoomId,
};

/// How long one write may take before the reader on the other end is given up on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    /// Sustained messages per second; bursts of four times as many pass.
    pub messages_per_second: u32,
    pub idle_timeout: Duration,
}

/// Runs one connection until it closes. Never panics on anything the peer sends.
///
/// A plain function that joins the room and returns the connection's future: an `async fn`
/// would keep its arguments (the WebSocket alone is 368 bytes, moved into the session) and the
/// join's result in that future for the whole connection, which every idle connection pays.
pub fn run(
    socket: WebSocket,
    hub: Arc<Hub>,
    room: RoomId,
    session_id: Option<String>,
    limits: SessionLimits,
) -> impl Future<Output = ()> {
    crate::metrics::connection_opened();
    let open = OnDrop(crate::metrics::connection_closed);
    let session = Session { socket, limits, _open: open };
    match hub.join(room.clone(), session_id) {
        Ok(membership) => {
            let span = tracing::info_span!("peer", room = %room_log_name(&room), peer = membership.peer_id.0);
            span.in_scope(|| info!(polite = membership.welcome.polite, "joined"));
            Either::Left(session.serve(membership).instrument(span))
        }
        Err(full) => {
            info!(room = %room_log_name(&room), "refused a third person");
            crate::metrics::rejected(ErrorCode::RoomFull.as_str());
            Either::Right(session.refuse(full))
        }
    }
}

/// One task both reads and writes the socket, taking turns, so it is not split (which would put
/// it behind a lock).
struct Session {
    socket: WebSocket,
    limits: SessionLimits,
    _open: OnDrop,
}

impl Session {
    async fn refuse(mut self, full: RoomFull) {
        if self.send(Message::error(ErrorCode::RoomFull, full.to_string()).to_json()).await {
            self.close(close_code::ROOM_FULL, "room full").await;
        }
    }

    /// Like [`run`], a plain function: an `async fn` would hold its arguments twice.
    #[allow(clippy::manual_async_fn)]
    fn serve(mut self, membership: Membership) -> impl Future<Output = ()> {
        async move {
            let _left = OnDrop(|| info!("left"));
            if !self.send(Message::Welcome(membership.welcome.clone()).to_json()).await {
                return;
            }
            let mut rate = TokenBucket::new(self.limits.messages_per_second);
            let mut last_heard = Instant::now();
            let mut heartbeat = interval(self.limits.idle_timeout / 3);
            heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
            heartbeat.tick().await;
            loop {
                tokio::select! {
                    biased;
                    delivery = membership.mailbox.next() => match delivery {
                        Delivery::Close(kick) => {
                            debug!(code = kick.code, "closed by the hub");
                            self.close(kick.code, kick.reason).await;
                            return;
                        }
                        Delivery::Write(outbound) => {
                            if !self.write_queued(outbound, &membership.mailbox).await {
                                return;
                            }
                        }
                    },
                    incoming = self.socket.next() => {
                        last_heard = Instant::now();
                        match incoming {
                            None | Some(Ok(WsMessage::Close(_))) => {
                                debug!("the peer closed the socket");
                                return;
                            }
                            Some(Ok(WsMessage::Text(text))) => {
                                if !rate.take(last_heard) {
                                    rate.refused += 1;
                                    crate::metrics::rejected(ErrorCode::RateLimited.as_str());
                                    if rate.refused > rate.burst {
                                        warn!("closing a flooding peer");
                                        self.close(close_code::POLICY_VIOLATION, "too many messages").await;
                                        return;
                                    }
                                    if rate.refused == 1 && !self.error(ErrorCode::RateLimited, "too many messages; slow down".into()).await {
                                        return;
                                    }
                                    continue;
                                }
                                match check_client_frame(&text) {
                                    Ok(kind) => {
                                        crate::metrics::relayed(kind);
                                        membership.relay(text, last_heard.into_std());
                                    }
                                    Err(bad) => {
                                        debug!(%bad, "refused a frame");
                                        if !self.error(ErrorCode::BadMessage, bad.to_string()).await {
                                            return;
                                        }
                                    }
                                }
                            }
                            Some(Ok(WsMessage::Binary(_))) => {
                                if !self.error(ErrorCode::BadMessage, BadMessage::Binary.to_string()).await {
                                    return;
                                }
                            }
                            // axum answers pings itself; a pong only proves liveness.
                            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                            Some(Err(error)) => {
                                debug!(%error, "socket error");
                                if is_too_big(error) {
                                    crate::metrics::rejected("message_too_big");
                                    self.close(close_code::MESSAGE_TOO_BIG, "frame over 64 KiB").await;
                                }
                                return;
                            }
                        }
                    }
                    _ = heartbeat.tick() => {
                        if last_heard.elapsed() >= self.limits.idle_timeout {
                            info!("dropping a silent peer");
                            self.close(close_code::IDLE_TIMEOUT, "no sign of life").await;
                            return;
                        }
                        if !self.send_message(WsMessage::Ping(Default::default())).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn error(&mut self, code: ErrorCode, message: String) -> bool {
        if code == ErrorCode::BadMessage {
            crate::metrics::rejected(code.as_str());
        }
        self.send(Message::error(code, message).to_json()).await
    }

    async fn send(&mut self, text: String) -> bool {
        self.send_message(WsMessage::Text(text.into())).await
    }

    /// Writes one message; false when the connection is gone or the peer stopped reading.
    async fn send_message(&mut self, message: WsMessage) -> bool {
        matches!(timeout(WRITE_TIMEOUT, self.socket.send(message)).await, Ok(Ok(())))
    }

    /// Writes `first` and every frame already queued behind it, flushing once: a busy peer's
    /// frames share system calls and packets. Gives up at once if the hub kicks this peer.
    async fn write_queued(&mut self, first: Outbound, mailbox: &Mailbox) -> bool {
        let socket = &mut self.socket;
        let write = async {
            let mut next = Some(first);
            while let Some(outbound) = next {
                socket.feed(WsMessage::Text(outbound.frame)).await?;
                if let Some(received_at) = outbound.relayed_at {
                    crate::metrics::relay_latency(received_at.elapsed());
                }
                next = mailbox.try_next();
            }
            socket.flush().await
        };
        tokio::select! {
            written = timeout(WRITE_TIMEOUT, write) => matches!(written, Ok(Ok(()))),
            _ = mailbox.kicked() => false,
        }
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = timeout(Duration::from_secs(1), self.socket.send(WsMessage::Close(Some(frame)))).await;
    }
}

/// Runs its function when dropped, however the connection ends.
struct OnDrop(fn());

impl Drop for OnDrop {
    fn drop(&mut self) {
        (self.0)()
    }
}

fn is_too_big(error: axum::Error) -> bool {
    matches!(error.into_inner().downcast_ref::<tungstenite::Error>(), Some(tungstenite::Error::Capacity(_)))
}

/// A token bucket: `rate` tokens a second, holding at most `burst`.
struct TokenBucket {
    rate: f64,
    burst: u32,
    tokens: f64,
    refilled: Instant,
    /// Messages refused since the limit was first hit.
    refused: u32,
}

impl TokenBucket {
    fn new(messages_per_second: u32) -> Self {
        let burst = messages_per_second.saturating_mul(4).max(1);
        Self {
            rate: f64::from(messages_per_second),
            burst,
            tokens: f64::from(burst),
            refilled: Instant::now(),
            refused: 0,
        }
    }

    /// Takes a token at `now` (the time the frame was read: one clock read per frame).
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(f64::from(self.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses() {
        let mut bucket = TokenBucket::new(10);
        let now = Instant::now();
        assert_eq!((0..40).filter(|_| bucket.take(now)).count(), 40);
        assert!(!bucket.take(now));
        assert!(bucket.take(now + Duration::from_millis(100)), "a token comes back after 1/10 s");
    }
}
