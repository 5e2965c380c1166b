//! The forwarding unit with rooms shared over a real Redis (`--redis`): a room's media lives on
//! one instance, its owner, which Redis names; people whose signaling is on another instance
//! send their media there, and when the owner dies the room moves to a survivor.
#![cfg(feature = "ssr")]

mod common;

use std::time::{Duration, Instant};

use common::{
    browser::{talk_round, until_everyone_hears_everyone, Browser},
    join, metrics_when, try_metric, Redis, Server,
};
use duo::protocol::{MediaRoute, Message, RouteChange};

const SFU: [&str; 2] = ["--media", "sfu"];

/// The one room's Redis key, and its media record: owner instance and epoch.
fn owner(redis: &Redis) -> (String, String, u64) {
    let keys = redis.cli(&["--scan", "--pattern", "duo:room:*"]);
    let key = keys.lines().next().expect("a room").to_owned();
    let record = redis.cli(&["HGET", &key, "media"]);
    let (instance, epoch) = record.trim().split_once(' ').unwrap_or_else(|| panic!("no media record: {record:?}"));
    (key, instance.to_owned(), epoch.parse().unwrap())
}

/// The instance id a server shares rooms under, from its log.
fn instance_of(server: &Server) -> String {
    let line = server.log_line("sharing rooms through Redis").expect("the server says so");
    line.split("instance=").nth(1).expect("an instance id").trim().to_owned()
}

/// Steps every browser, speaking, for `long`.
async fn talk_for(room: &mut [Browser], long: Duration) {
    let started = Instant::now();
    let mut frame = 0;
    while started.elapsed() < long {
        talk_round(room, frame).await;
        frame += 1;
    }
}

#[tokio::test]
async fn people_on_two_instances_meet_on_the_owners_unit_and_no_one_else_can_speak_for_them() {
    let redis = Redis::start();
    let (a, b) = Server::sharing(&redis, &SFU);
    let ann = Browser::join(&a, "shared").await;
    let (key, owner_instance, epoch) = owner(&redis);
    let mut room = [ann, Browser::join(&b, "shared").await, Browser::join(&b, "shared").await];
    until_everyone_hears_everyone(&mut room, Duration::from_secs(15)).await;
    // Everyone sends to one address: the first joiner's instance's unit, which Redis names.
    let addresses: Vec<_> = room.iter().map(|browser| browser.server.as_ref().unwrap().0).collect();
    assert!(addresses.iter().all(|address| *address == addresses[0]), "{addresses:?}");
    let people = |metrics: &str| try_metric(metrics, "duo_sfu_people ");
    let on_a = people(&metrics_when(&a, |metrics| people(metrics) == Some(3.0)).await);
    let on_b = people(&metrics_when(&b, |metrics| people(metrics) == Some(0.0)).await);
    assert_eq!((on_a, on_b), (Some(3.0), Some(0.0)), "all three on the owner's unit");
    assert_eq!(owner_instance, instance_of(&a));

    // Someone on the other instance leaves: their place on the owner's unit goes too.
    let [ann, bob, cy] = room;
    drop(cy);
    let on_a = people(&metrics_when(&a, |metrics| people(metrics) == Some(2.0)).await);
    assert_eq!(on_a, Some(2.0));

    // SDP that names Bob from no instance of the room, or from his own instance at another
    // epoch, is refused and counted; the call goes on. (The second, numbered far ahead, is the
    // last thing `b` is taken to send `a`: later numbers of `b`'s would count as seen.)
    let refused = |metrics: &str| try_metric(metrics, "duo_sfu_remote_requests_total{outcome=\"refused\"} ");
    let before = refused(&common::get(a.metrics_addr, "/metrics").await.body).unwrap_or(0.0);
    let rk = key.trim_start_matches("duo:room:");
    let channel = format!("duo:to:{owner_instance}");
    let from_b = instance_of(&b);
    for forged in [
        format!("S nobody 0 {rk} {} {epoch} offer\nv=0", bob.peer_id.0),
        format!("S {from_b} 1000000 {rk} {} {} offer\nv=0", bob.peer_id.0, epoch + 1),
    ] {
        redis.cli(&["PUBLISH", &channel, &forged]);
    }
    let metrics = metrics_when(&a, |metrics| refused(metrics) >= Some(before + 2.0)).await;
    assert_eq!(refused(&metrics), Some(before + 2.0));
    let mut pair = [ann, bob];
    for browser in &mut pair {
        browser.frames.clear();
    }
    until_everyone_hears_everyone(&mut pair, Duration::from_secs(5)).await;
    let [ann, bob] = pair;

    // When everyone left, Redis forgets the room, its owner included.
    drop((ann, bob));
    let started = Instant::now();
    while redis.cli(&["EXISTS", &key]).trim() != "0"
        || !redis.cli(&["SMEMBERS", &format!("duo:inst:{owner_instance}:rooms")]).trim().is_empty()
    {
        assert!(started.elapsed() < Duration::from_secs(5), "the room outlived its people");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn under_auto_the_fifth_person_moves_a_room_split_over_two_instances_and_everyone_hears_first() {
    let redis = Redis::start();
    let (a, b) = Server::sharing(&redis, &[]);
    let mut people = Vec::new();
    for server in [&a, &b, &a, &b] {
        let (client, welcome) = join(server, "five").await;
        assert_eq!(welcome.media, MediaRoute::Mesh);
        for earlier in &mut people {
            assert!(matches!(common::Client::recv(earlier).await, Message::PeerJoined(_)));
        }
        people.push(client);
    }
    assert_eq!(redis.cli(&["HGET", &owner_key(&redis), "media"]).trim(), "", "a mesh room has no owner");
    let (_fifth, welcome) = join(&b, "five").await;
    assert_eq!(welcome.media, MediaRoute::Sfu);
    for person in &mut people {
        assert_eq!(person.recv().await, Message::MediaRoute(RouteChange { media: MediaRoute::Sfu, reconnect: false }));
        assert!(matches!(person.recv().await, Message::PeerJoined(info) if info.peer_id == welcome.peer_id));
    }
    // Two people on each instance before the fifth, who came through `b`: `b` has the most.
    assert_eq!(owner(&redis).1, instance_of(&b));
}

fn owner_key(redis: &Redis) -> String {
    redis.cli(&["--scan", "--pattern", "duo:room:*"]).lines().next().expect("a room").to_owned()
}

#[tokio::test]
async fn the_owner_killed_its_room_moves_to_the_survivor_and_everyone_hears_everyone_within_ten_seconds() {
    let redis = Redis::start();
    let (mut a, b) = Server::sharing(&redis, &SFU);
    let ann = Browser::join(&a, "failover").await;
    let (key, first_owner, first_epoch) = owner(&redis);
    let mut room = vec![ann, Browser::join(&b, "failover").await, Browser::join(&b, "failover").await];
    until_everyone_hears_everyone(&mut room, Duration::from_secs(15)).await;

    a.kill();
    let killed = Instant::now();
    // Ann's page finds its socket gone and comes back through the survivor, as a new person.
    room.remove(0);
    room.push(Browser::join(&b, "failover").await);
    for browser in &mut room {
        browser.frames.clear();
    }
    until_everyone_hears_everyone(&mut room, Duration::from_secs(10).saturating_sub(killed.elapsed())).await;
    println!("everyone heard everyone again {:?} after the owner was killed", killed.elapsed());
    // (Two heartbeats more: a second move would show.)
    talk_for(&mut room, Duration::from_secs(2)).await;
    // Bob and Cy were told to connect afresh, once; Redis names the survivor, at a later epoch.
    assert_eq!(room[0].reconnects, 1);
    assert_eq!(room[1].reconnects, 1);
    let (_, owner_now, epoch_now) = owner(&redis);
    assert_ne!(owner_now, first_owner);
    assert!(epoch_now > first_epoch, "{epoch_now} after {first_epoch}");
    assert!(redis.cli(&["SMEMBERS", &format!("duo:inst:{first_owner}:rooms")]).trim().is_empty());
    assert_eq!(redis.cli(&["EXISTS", &key]).trim(), "1");
}

#[tokio::test]
async fn redis_flushed_mid_call_gets_the_same_owner_back_and_no_one_reconnects() {
    let redis = Redis::start();
    let (a, b) = Server::sharing(&redis, &SFU);
    let ann = Browser::join(&a, "flushed").await;
    let before = owner(&redis);
    let mut room = [ann, Browser::join(&b, "flushed").await, Browser::join(&b, "flushed").await];
    until_everyone_hears_everyone(&mut room, Duration::from_secs(15)).await;
    assert_eq!(redis.cli(&["FLUSHALL"]).trim(), "OK");
    // The instances put the room back within a heartbeat or two, its owner and epoch as they were.
    let started = Instant::now();
    while redis.cli(&["HGET", &before.0, "media"]).trim().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(5), "the room was not put back");
        for browser in &mut room {
            browser.step().await;
        }
    }
    assert_eq!(owner(&redis), before);
    for browser in &mut room {
        browser.frames.clear();
    }
    until_everyone_hears_everyone(&mut room, Duration::from_secs(5)).await;
    // (Two heartbeats more: a late move would show.)
    talk_for(&mut room, Duration::from_secs(2)).await;
    assert!(room.iter().all(|browser| browser.reconnects == 0), "someone was told to reconnect");
}

#[tokio::test]
async fn the_owner_shut_down_hands_its_rooms_media_to_another_instance_while_it_drains() {
    let redis = Redis::start();
    let (a, b) = Server::sharing(&redis, &[&SFU[..], &["--shutdown-grace", "10"]].concat());
    let ann = Browser::join(&a, "handover").await;
    let (_, first_owner, first_epoch) = owner(&redis);
    let mut room = [ann, Browser::join(&b, "handover").await, Browser::join(&b, "handover").await];
    until_everyone_hears_everyone(&mut room, Duration::from_secs(15)).await;

    a.signal("TERM");
    let drained = Instant::now();
    // Everyone, Ann too (her socket stays open while `a` drains), is told to connect afresh.
    while room.iter().any(|browser| browser.reconnects == 0) {
        assert!(drained.elapsed() < Duration::from_secs(3), "no one told to connect elsewhere");
        talk_for(&mut room, Duration::from_millis(20)).await;
    }
    // While `a` still beats (it drains for 10 s), so no sweep: `a` handed the room over.
    assert_eq!(a.log_count("handed this room's media to another instance"), 1);
    let (_, owner_now, epoch_now) = owner(&redis);
    assert_eq!((first_owner, owner_now), (instance_of(&a), instance_of(&b)));
    assert!(epoch_now > first_epoch);
    until_everyone_hears_everyone(&mut room, Duration::from_secs(5)).await;
    println!("everyone heard everyone again {:?} after the owner got SIGTERM", drained.elapsed());
    assert!(room.iter().all(|browser| browser.reconnects == 1));
}
