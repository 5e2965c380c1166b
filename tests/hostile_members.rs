//! A hostile member harms no one, second round (issue 31): what a member of a call can do to
//! the server and to the others with frames a browser would never send, tried against the real
//! server binary from real sockets.
#![cfg(feature = "ssr")]

mod common;

use std::time::Duration;

use common::{join, Client, Server, STEP};
use duo::protocol::{ErrorCode, Message};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{
    protocol::frame::{
        coding::{CloseCode, Data, OpCode},
        Frame,
    },
    Message as Ws,
};

/// A data frame of a fragmented message: the first (`Text`) or a later one (`Continue`).
fn fragment(opcode: Data, payload: Vec<u8>, last: bool) -> Ws {
    Ws::Frame(Frame::message(payload, OpCode::Data(opcode), last))
}

/// What the server says last: the close code and reason it closes with, skipping what comes
/// before; `None` if the connection ends without a close frame.
async fn close_of(client: &mut Client) -> Option<(CloseCode, String)> {
    loop {
        match tokio::time::timeout(STEP, client.socket.next()).await.expect("closed within the step timeout") {
            Some(Ok(Ws::Close(frame))) => return frame.map(|f| (f.code, f.reason.to_string())),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// Defect 1: a text frame marked "not final" and then an endless stream of empty continuation
/// frames (with a ping now and then to look alive) never made a message, so the rate limit
/// never saw them: one socket burned a core. Every fragment is paid for now, and the flood ends
/// with 1008 as other floods do.
#[tokio::test]
async fn a_message_that_never_ends_is_paid_for_frame_by_frame_and_closed_as_a_flood() {
    let server = Server::start(&[]); // the default rate: 50 a second, bursts of 200
    let (mut flooder, _) = join(&server, "fragments").await;
    flooder.socket.feed(fragment(Data::Text, b"{".to_vec(), false)).await.unwrap();
    // A bounded flood: 200,000 empty continuations, a ping every thousand; the write fails once
    // the server has closed.
    let flood = async {
        for i in 0..200_000 {
            let frame =
                if i % 1000 == 0 { Ws::Ping(Vec::new().into()) } else { fragment(Data::Continue, Vec::new(), false) };
            if flooder.socket.feed(frame).await.is_err() {
                return;
            }
        }
        let _ = flooder.socket.flush().await;
    };
    tokio::time::timeout(Duration::from_secs(30), flood).await.expect("the flood is sent or cut off in time");
    assert_eq!(close_of(&mut flooder).await, Some((CloseCode::Policy, "too many messages".into())));
    assert!(server.log_count("closing a flooding peer") >= 1);

    // A fragmented message may not grow past the message limit (64 KiB): 1009, as one big frame.
    let (mut grower, _) = join(&server, "fragments-grow").await;
    grower.socket.feed(fragment(Data::Text, vec![b' '; 40 * 1024], false)).await.unwrap();
    grower.socket.send(fragment(Data::Continue, vec![b' '; 40 * 1024], true)).await.unwrap();
    assert_eq!(close_of(&mut grower).await.map(|(code, _)| code), Some(CloseCode::Size));
}

/// Defect 1, continued: a message begun and never finished, kept open by pings, ends once it
/// has been unfinished for the idle timeout (a page's message takes milliseconds).
#[tokio::test]
async fn a_message_left_unfinished_ends_the_connection_after_the_idle_timeout() {
    let server = Server::start(&["--idle-timeout", "2"]);
    let (mut stalled, _) = join(&server, "unfinished").await;
    stalled.socket.send(fragment(Data::Text, b"{\"message_type\":".to_vec(), false)).await.unwrap();
    // Pings every 300 ms: alive, as far as the idle timeout goes. For at most 8 s.
    let started = tokio::time::Instant::now();
    let closed = loop {
        tokio::select! {
            frame = stalled.socket.next() => match frame {
                Some(Ok(Ws::Close(frame))) => break frame.map(|f| (f.code, f.reason.to_string())),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break None,
            },
            () = tokio::time::sleep(Duration::from_millis(300)) => {
                assert!(started.elapsed() < Duration::from_secs(8), "still open after 8 s of an unfinished message");
                if stalled.socket.send(Ws::Ping(Vec::new().into())).await.is_err() {
                    break None;
                }
            }
        }
    };
    assert_eq!(closed, Some((CloseCode::Policy, "unfinished_message".into())));
}

/// An addressed relay message, about `len` bytes.
fn candidate_for(to: u64, len: usize) -> String {
    let padding = "x".repeat(len);
    format!(r#"{{"message_type":"CANDIDATE","content":{{"candidate":"{padding}"}},"to":{to}}}"#)
}

/// Defect 2: limits were per sender only, so three members of a room of four, each within its
/// own rate limit, could fill the fourth one's outbound queue at once and get that member, who
/// reads promptly, closed with 4002 ("too slow") in front of everyone. Now each sender has a
/// share of each recipient's queue: past it the sender is refused (`rate_limited`), and the
/// reader is never closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_ganging_up_on_one_who_reads_get_refused_and_the_reader_stays() {
    let server = Server::start(&[]); // rooms of four, 50 messages a second, bursts of 200
    let (mut target, welcome) = join(&server, "gang").await;
    let target_id = welcome.peer_id.0;
    let (mut gang, mut gang_ids) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (member, welcome) = join(&server, "gang").await;
        gang.push(member);
        gang_ids.push(welcome.peer_id.0);
    }
    // The target reads everything, promptly, until told to stop.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut relayed = 0;
        loop {
            tokio::select! {
                frame = target.socket.next() => match frame {
                    Some(Ok(Ws::Text(text))) if text.contains("CANDIDATE") => relayed += 1,
                    Some(Ok(Ws::Close(frame))) => panic!("the reader was closed: {frame:?}"),
                    Some(Ok(_)) => {}
                    other => panic!("the reader's socket ended: {other:?}"),
                },
                _ = &mut stopped => return (target, relayed),
            }
        }
    });
    // Each sends its whole burst (200 messages, within its own limit) at once, three times over
    // with the bucket refilled in between.
    for _ in 0..3 {
        let bursts = gang.drain(..).map(|mut member| {
            tokio::spawn(async move {
                let message = candidate_for(target_id, 300);
                for _ in 0..200 {
                    member.socket.feed(Ws::text(message.as_str())).await.unwrap();
                }
                member.socket.flush().await.unwrap();
                member
            })
        });
        for burst in bursts.collect::<Vec<_>>() {
            gang.push(burst.await.unwrap());
        }
        tokio::time::sleep(Duration::from_secs(5)).await; // 250 tokens back: a full burst
    }
    stop.send(()).unwrap();
    let (mut target, relayed) = reader.await.unwrap();
    assert!(relayed > 0, "the target got some of it");
    // The senders hear why their messages went nowhere, and are not closed for what they sent
    // within their limits; the target still talks to them.
    let mut refused = 0;
    for member in &mut gang {
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_millis(200), member.socket.next()).await {
            match frame {
                Ws::Text(text) => match serde_json::from_str::<Message>(&text).unwrap() {
                    Message::Error(error) => {
                        assert_eq!(error.code, ErrorCode::RateLimited, "{}", error.message);
                        refused += 1;
                    }
                    Message::PeerLeft(left) => panic!("someone left: {left:?}"),
                    _ => {}
                },
                Ws::Close(frame) => panic!("a sender within its limits was closed: {frame:?}"),
                _ => {}
            }
        }
    }
    let total = 3 * 3 * 200;
    assert!(relayed + refused <= total, "{relayed} relayed and {refused} refusals of {total}");
    target.send_text(&candidate_for(gang_ids[0], 10)).await;
    let answer = gang[0].recv().await;
    assert!(matches!(answer, Message::Candidate(_)), "the target still talks to the others: {answer:?}");
}
