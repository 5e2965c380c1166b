//! Load for the forwarding unit, and the floor it is measured against (docs/performance.md,
//! "Media through the server"). One room of `--size` synthetic people, each sending Opus (50
//! packets a second, 100 bytes) and VP8 (15 a second, 1,000 bytes: a thumbnail's bitrate, one
//! packet a frame), each receiving everyone else's; every packet carries its send time, so
//! each receiver knows each packet's trip through the server.
//!
//!   sfu-load duo --url ws://127.0.0.1:3420 --size 25 --pid <server pid>
//!   sfu-load floor --addr 127.0.0.1:3421           # the floor itself, until killed
//!   sfu-load floor-load --addr 127.0.0.1:3421 --size 25 --pid <floor pid>
//!
//! `duo`: each person is a str0m peer that joins over Duo's signaling and sends real SRTP over
//! ICE and DTLS, as a browser does. `floor`: what no forwarding unit can do with less, a loop
//! that decrypts each packet with its sender's key and encrypts it once per receiver with
//! theirs (str0m's own AES-256-GCM, the cipher Duo's peers agree on), on keys fixed in advance
//! (no ICE, DTLS or RTCP: a floor, not a server). Each prints one `RESULT` line: packets
//! received in the measured window, the server's CPU per packet received (from
//! `/proc/<pid>/stat`), the trip's p50 and p99, and the share of expected packets that never came.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use duo::protocol::{MediaDescription, Message, SdpType};
use futures_util::{SinkExt, StreamExt};
use str0m::{
    change::{SdpAnswer, SdpOffer},
    crypto::AeadAes256GcmCipher,
    media::{Direction, Frequency, MediaKind, MediaTime, Mid},
    net::{Protocol, Receive},
    Candidate, Event, Input, Output, RtcConfig,
};
use tokio::{net::UdpSocket, time::sleep_until};
use tokio_tungstenite::tungstenite;

#[derive(Parser)]
#[command(about = "Load for Duo's forwarding unit, and the floor it is measured against")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// People in one room on a Duo server whose media goes through it (`--media sfu`).
    Duo {
        #[arg(long)]
        url: String,
        #[command(flatten)]
        load: Load,
    },
    /// The bare forwarder, on `--addr`, until killed.
    Floor {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// People in one room on the floor at `--addr`.
    FloorLoad {
        #[arg(long)]
        addr: SocketAddr,
        #[command(flatten)]
        load: Load,
    },
}

#[derive(clap::Args, Clone, Copy)]
struct Load {
    /// People in the room.
    #[arg(long, default_value_t = 5)]
    size: usize,
    /// Seconds measured, once everyone receives everyone.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// The server's process, whose CPU time is read over the measured window.
    #[arg(long)]
    pid: u32,
}

const AUDIO_EVERY: Duration = Duration::from_millis(20);
const VIDEO_EVERY: Duration = Duration::from_micros(66_667);
const AUDIO_BYTES: usize = 100;
const VIDEO_BYTES: usize = 1_000;
/// Where in a payload its send time (nanoseconds since the tool started) is: after a VP8
/// keyframe's first ten bytes, so that every video frame parses as one.
const STAMP_AT: usize = 10;
/// How long everyone may take to receive everyone before the run fails.
const WARM_UP: Duration = Duration::from_secs(30);

/// How long packets sent in the window may take to arrive after it.
const DRAIN: Duration = Duration::from_secs(2);

/// What the people share: whether the run is over, the measured window (send times, in
/// nanoseconds since the start), and how many receive everyone.
struct Run {
    started: Instant,
    done: AtomicBool,
    window: [AtomicU64; 2],
    ready: AtomicUsize,
}

impl Run {
    /// Whether a payload sent at `sent` is in the measured window.
    fn measures(&self, sent: u64) -> bool {
        (self.window[0].load(Ordering::Relaxed)..self.window[1].load(Ordering::Relaxed)).contains(&sent)
    }
}

/// What one person counted while measured.
#[derive(Default)]
struct Tally {
    sent: u64,
    received: u64,
    trips_us: Vec<u32>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match args.command {
        Command::Floor { addr } => floor(addr).await,
        Command::Duo { url, load } => {
            let room = format!("load-{}-{}", load.size, std::process::id());
            measure(load, move |index, run| duo_person(format!("{url}/ws/{room}"), index, load.size, run)).await;
        }
        Command::FloorLoad { addr, load } => {
            let room = (std::process::id() & 0xffff) as u16;
            measure(load, move |index, run| floor_person(addr, room, index as u16, load.size, run)).await;
        }
    }
}

/// Starts `load.size` people, waits until each receives everyone, measures for
/// `load.seconds`, and prints the result.
async fn measure<F, P>(load: Load, person: P)
where
    F: std::future::Future<Output = Tally> + Send + 'static,
    P: Fn(usize, Arc<Run>) -> F,
{
    let window = [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)];
    let run =
        Arc::new(Run { started: Instant::now(), done: AtomicBool::new(false), window, ready: AtomicUsize::new(0) });
    let now_ns = |run: &Run| run.started.elapsed().as_nanos() as u64;
    let people: Vec<_> = (0..load.size).map(|index| tokio::spawn(person(index, run.clone()))).collect();
    let deadline = Instant::now() + WARM_UP;
    while run.ready.load(Ordering::Relaxed) < load.size {
        assert!(Instant::now() < deadline, "not everyone received everyone within {WARM_UP:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu_before = cpu_seconds(load.pid);
    run.window[0].store(now_ns(&run), Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(load.seconds)).await;
    run.window[1].store(now_ns(&run), Ordering::Relaxed);
    let cpu = cpu_seconds(load.pid) - cpu_before;
    tokio::time::sleep(DRAIN).await;
    run.done.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for person in people {
        let tally = person.await.expect("a person's task failed");
        all.sent += tally.sent;
        all.received += tally.received;
        all.trips_us.extend(tally.trips_us);
    }
    all.trips_us.sort_unstable();
    let percentile = |p: f64| all.trips_us.get(((all.trips_us.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0);
    // Packets sent in the window, and those of them that arrived (within `DRAIN` of its end).
    let expected = all.sent * (load.size as u64 - 1);
    let lost = expected.saturating_sub(all.received) as f64 / expected.max(1) as f64 * 100.0;
    assert!(all.received <= expected, "more packets arrived ({}) than were sent ({expected})", all.received);
    println!(
        "RESULT size={} received={} per_sec={:.0} cpu_us_per_packet={:.2} p50_us={} p99_us={} lost_percent={:.2}",
        load.size,
        all.received,
        all.received as f64 / load.seconds,
        cpu * 1e6 / all.received.max(1) as f64,
        percentile(0.5),
        percentile(0.99),
        lost,
    );
}

/// User and system CPU seconds of process `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's process is running");
    // Fields after the command name (which may hold spaces), from the third: utime is 14th.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let hertz = std::process::Command::new("getconf").arg("CLK_TCK").output().expect("getconf runs");
    ticks / String::from_utf8_lossy(&hertz.stdout).trim().parse::<f64>().expect("CLK_TCK is a number")
}

/// A payload of `length` bytes stamped with the time since the run started.
fn stamped(run: &Run, length: usize, video: bool) -> Vec<u8> {
    let mut data = vec![0x55; length];
    if video {
        // A VP8 keyframe's header: the show-frame bit, the size fields and the start code.
        data[..10].copy_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]);
    }
    let nanos = run.started.elapsed().as_nanos() as u64;
    data[STAMP_AT..STAMP_AT + 8].copy_from_slice(&nanos.to_be_bytes());
    data
}

/// When a payload made by [`stamped`] was sent (nanoseconds since the start), and its trip
/// (microseconds).
fn stamp(run: &Run, data: &[u8]) -> Option<(u64, u32)> {
    let sent = u64::from_be_bytes(data.get(STAMP_AT..STAMP_AT + 8)?.try_into().ok()?);
    let now = run.started.elapsed().as_nanos() as u64;
    Some((sent, (now.saturating_sub(sent) / 1_000) as u32))
}

/// Counts what came while measured, and says when this person first received `needed` streams.
struct Receiving {
    streams: Vec<u64>,
    needed: usize,
    counted_ready: bool,
    tally: Tally,
}

impl Receiving {
    fn new(needed: usize) -> Self {
        Self { streams: Vec::new(), needed, counted_ready: false, tally: Tally::default() }
    }

    fn got(&mut self, run: &Run, stream: u64, data: &[u8]) {
        if !self.streams.contains(&stream) {
            self.streams.push(stream);
        }
        if !self.counted_ready && self.streams.len() >= self.needed {
            self.counted_ready = true;
            run.ready.fetch_add(1, Ordering::Relaxed);
        }
        // Counted if it was sent in the window, whenever it arrives.
        let Some((sent, trip)) = stamp(run, data) else { return };
        if run.measures(sent) {
            self.tally.received += 1;
            self.tally.trips_us.push(trip);
        }
    }

    /// A payload went out; counted if made in the window, as its receivers count it.
    fn sent(&mut self, run: &Run, data: &[u8]) {
        if stamp(run, data).is_some_and(|(sent, _)| run.measures(sent)) {
            self.tally.sent += 1;
        }
    }
}

/// When a person next sends audio and video.
struct Schedule {
    audio: Instant,
    video: Instant,
    frames: u64,
}

impl Schedule {
    fn new(index: usize) -> Self {
        // People start apart, as people do, rather than all in the same millisecond.
        let start = Instant::now() + Duration::from_micros(index as u64 * 797 % 20_000);
        Self { audio: start, video: start, frames: 0 }
    }

    fn next(&self) -> Instant {
        self.audio.min(self.video)
    }

    /// Makes each audio and video payload whose time has come, counts it sent, and gives it to
    /// `send` with whether it is video and its RTP time (48 kHz audio, 90 kHz video).
    fn due(&mut self, now: Instant, run: &Run, receiving: &mut Receiving, mut send: impl FnMut(bool, Vec<u8>, u64)) {
        while self.audio <= now {
            let frame = self.audio.duration_since(run.started).as_millis() as u64 / 20;
            let data = stamped(run, AUDIO_BYTES, false);
            receiving.sent(run, &data);
            send(false, data, frame * 960);
            self.audio += AUDIO_EVERY;
        }
        while self.video <= now {
            let data = stamped(run, VIDEO_BYTES, true);
            receiving.sent(run, &data);
            send(true, data, self.frames * 6_000);
            self.frames += 1;
            self.video += VIDEO_EVERY;
        }
    }
}

/// One person on Duo: signaling over its WebSocket, media through a str0m peer.
async fn duo_person(url: String, index: usize, size: usize, run: Arc<Run>) -> Tally {
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("signaling connects");
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = udp.local_addr().unwrap();
    let mut rtc = RtcConfig::new().clear_codecs().enable_opus(true, false).enable_vp8(true).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut change = rtc.sdp_api();
    let microphone = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let camera = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    let mut pending = Some(pending);
    let text = |message: Message| tungstenite::Message::text(message.to_json());
    let offer = MediaDescription { kind: SdpType::Offer, sdp: offer.to_sdp_string(), tracks: Vec::new() };
    socket.send(text(Message::MediaSdp(offer))).await.unwrap();
    let mut receiving = Receiving::new(2 * (size - 1));
    let mut schedule = Schedule::new(index);
    let mut buffer = vec![0; 2048];
    let mut timeout = Instant::now();
    while !run.done.load(Ordering::Relaxed) {
        let wake = timeout.min(schedule.next());
        tokio::select! {
            received = udp.recv_from(&mut buffer) => {
                let (length, source) = received.unwrap();
                if let Ok(receive) = Receive::new(Protocol::Udp, source, local, &buffer[..length]) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), receive));
                }
            }
            message = socket.next() => {
                let message = match message {
                    Some(Ok(tungstenite::Message::Text(message))) => message,
                    Some(Ok(_)) => continue,
                    other => panic!("signaling closed: {other:?}"),
                };
                if let Ok(Message::MediaSdp(description)) = serde_json::from_str::<Message>(&message) {
                    match description.kind {
                        SdpType::Answer => {
                            let answer = SdpAnswer::from_sdp_string(&description.sdp).unwrap();
                            rtc.sdp_api().accept_answer(pending.take().unwrap(), answer).unwrap();
                        }
                        SdpType::Offer => {
                            let offer = SdpOffer::from_sdp_string(&description.sdp).unwrap();
                            let answer = rtc.sdp_api().accept_offer(offer).unwrap();
                            let answer = MediaDescription { kind: SdpType::Answer, sdp: answer.to_sdp_string(), tracks: Vec::new() };
                            socket.send(text(Message::MediaSdp(answer))).await.unwrap();
                        }
                        _ => {}
                    }
                }
            }
            () = sleep_until(wake.into()) => {}
        }
        let now = Instant::now();
        let _ = rtc.handle_input(Input::Timeout(now));
        if rtc.is_connected() {
            schedule.due(now, &run, &mut receiving, |video, data, ticks| {
                let (mid, time) = match video {
                    true => (camera, MediaTime::new(ticks, Frequency::NINETY_KHZ)),
                    false => (microphone, MediaTime::new(ticks, Frequency::FORTY_EIGHT_KHZ)),
                };
                let writer = rtc.writer(mid).unwrap();
                let pt = writer.payload_params().next().unwrap().pt();
                // Everyone speaking, as a browser says it (RFC 6464): a room of more than ten
                // forwards only the loudest voices and whoever speaks, and the load is everyone's.
                let writer = if video { writer } else { writer.audio_level(-30, true) };
                writer.write(pt, now, time, data).expect("the peer takes the frame");
            });
            // What was written leaves once the peer is given the clock (str0m's pacer).
            let _ = rtc.handle_input(Input::Timeout(now));
        }
        loop {
            match rtc.poll_output() {
                Ok(Output::Transmit(transmit)) => {
                    let _ = udp.try_send_to(&transmit.contents, transmit.destination);
                }
                Ok(Output::Event(Event::MediaData(frame))) => {
                    receiving.got(&run, mid_key(frame.mid), &frame.data);
                }
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(at)) => {
                    timeout = at;
                    break;
                }
                Err(error) => panic!("a person's peer failed: {error}"),
            }
        }
    }
    receiving.tally
}

fn mid_key(mid: Mid) -> u64 {
    mid.as_bytes().iter().fold(0, |key, byte| key << 8 | u64::from(*byte))
}

/// The floor's and its people's keys, fixed in advance: person `person` of room `room` sends
/// with its key and receives with it (a benchmark's, never a call's).
fn key(ssrc: u32) -> ([u8; 32], [u8; 12]) {
    let person = ssrc >> 1;
    let mut key = [0; 32];
    key[..4].copy_from_slice(&person.to_be_bytes());
    let mut salt = [0; 12];
    salt[..4].copy_from_slice(&person.to_be_bytes());
    (key, salt)
}

/// A cipher of `key`, from str0m's provider (Duo's: aws-lc-rs).
fn cipher(key: [u8; 32], encrypt: bool) -> Box<dyn AeadAes256GcmCipher> {
    str0m::crypto::from_feature_flags().srtp_provider.aead_aes_256_gcm().create_cipher(key, encrypt)
}

/// RFC 7714's IV: the salt, XORed with the SSRC, the rollover counter (0: runs are short) and
/// the sequence number.
fn iv(salt: &[u8; 12], header: &[u8]) -> [u8; 12] {
    let mut iv = [0; 12];
    iv[2..6].copy_from_slice(&header[8..12]);
    iv[10..12].copy_from_slice(&header[2..4]);
    for (byte, salt) in iv.iter_mut().zip(salt) {
        *byte ^= salt;
    }
    iv
}

const HEADER: usize = 12;
const TAG: usize = 16;

/// Someone the floor has heard from.
struct FloorPerson {
    address: SocketAddr,
    decrypt: Box<dyn AeadAes256GcmCipher>,
    encrypt: Box<dyn AeadAes256GcmCipher>,
    salt: [u8; 12],
}

/// The bare forwarder: one task, as Duo's forwarding unit is.
async fn floor(addr: SocketAddr) {
    let socket = UdpSocket::bind(addr).await.expect("the floor's address is free");
    // As Duo's media socket asks.
    let buffers = socket2::SockRef::from(&socket);
    buffers.set_recv_buffer_size(4 << 20).and(buffers.set_send_buffer_size(4 << 20)).expect("socket buffers");
    let mut people: HashMap<u32, FloorPerson> = HashMap::new();
    let mut rooms: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut buffer = vec![0; 2048];
    let mut plain = vec![0; 2048];
    let mut sealed = vec![0; 2048];
    loop {
        let Ok((length, source)) = socket.recv_from(&mut buffer).await else { continue };
        if length < HEADER + TAG {
            continue;
        }
        let ssrc = u32::from_be_bytes(buffer[8..12].try_into().unwrap());
        let (person, room) = (ssrc >> 1, ssrc >> 16);
        let sender = people.entry(person).or_insert_with(|| {
            rooms.entry(room).or_default().push(person);
            let (key, salt) = key(ssrc);
            FloorPerson { address: source, decrypt: cipher(key, false), encrypt: cipher(key, true), salt }
        });
        let (header, body) = buffer[..length].split_at(HEADER);
        let iv = iv(&sender.salt, header);
        let Ok(plain_length) = sender.decrypt.decrypt(&iv, &[header], body, &mut plain) else { continue };
        for other in rooms.get(&room).into_iter().flatten().filter(|other| **other != person) {
            let Some(receiver) = people.get_mut(other) else { continue };
            sealed[..HEADER].copy_from_slice(header);
            let iv = self::iv(&receiver.salt, header);
            let end = HEADER + plain_length + TAG;
            if receiver.encrypt.encrypt(&iv, header, &plain[..plain_length], &mut sealed[HEADER..end]).is_ok() {
                let _ = socket.try_send_to(&sealed[..end], receiver.address);
            }
        }
    }
}

/// One person on the floor: the same packets, sealed with its fixed key.
async fn floor_person(floor: SocketAddr, room: u16, index: u16, size: usize, run: Arc<Run>) -> Tally {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ssrc = |kind: u32| u32::from(room) << 16 | u32::from(index) << 1 | kind;
    let (key, salt) = key(ssrc(0));
    let (mut seal, mut open) = (cipher(key, true), cipher(key, false));
    let mut receiving = Receiving::new(2 * (size - 1));
    let mut schedule = Schedule::new(usize::from(index));
    let mut sequence = [0u16; 2];
    let mut buffer = vec![0; 2048];
    let mut plain = vec![0; 2048];
    while !run.done.load(Ordering::Relaxed) {
        tokio::select! {
            received = udp.recv_from(&mut buffer) => {
                let (length, _) = received.unwrap();
                if length < HEADER + TAG {
                    continue;
                }
                let (header, body) = buffer[..length].split_at(HEADER);
                if let Ok(plain_length) = open.decrypt(&iv(&salt, header), &[header], body, &mut plain) {
                    let stream = u64::from(u32::from_be_bytes(header[8..12].try_into().unwrap()));
                    receiving.got(&run, stream, &plain[..plain_length]);
                }
            }
            () = sleep_until(schedule.next().into()) => {
                let now = Instant::now();
                schedule.due(now, &run, &mut receiving, |video, payload, ticks| {
                    let kind = u32::from(video);
                    let sequence = &mut sequence[kind as usize];
                    *sequence = sequence.wrapping_add(1);
                    let mut packet = vec![0x80, if kind == 0 { 111 } else { 96 }];
                    packet.extend_from_slice(&sequence.to_be_bytes());
                    packet.extend_from_slice(&(ticks as u32).to_be_bytes());
                    packet.extend_from_slice(&ssrc(kind).to_be_bytes());
                    let end = HEADER + payload.len() + TAG;
                    packet.resize(end, 0);
                    let (header, body) = packet.split_at_mut(HEADER);
                    if seal.encrypt(&iv(&salt, header), header, &payload, body).is_ok() {
                        let _ = udp.try_send_to(&packet, floor);
                    }
                });
            }
        }
    }
    receiving.tally
}
