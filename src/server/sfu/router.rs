//! Which person a datagram on the media sockets belongs to, decided before any parsing that
//! allocates: by where it came from once that has proved itself, and for a first packet by the
//! ICE username in its STUN binding request. Anything else is dropped and counted. Pure: the
//! core asks it, and its tests need no socket.

use std::{collections::HashMap, hash::Hash};

/// What a datagram is, from its first byte (RFC 7983's demultiplexing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A STUN message (ICE connectivity checks).
    Stun,
    /// A DTLS record (the key exchange, and the data channel's SCTP).
    Dtls,
    /// An RTP or RTCP packet (media and its reports).
    Rtp,
    /// Anything else: no WebRTC peer sends it.
    Other,
}

/// The magic cookie every STUN message carries at bytes 4 to 8 (RFC 5389).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// A STUN header: type, length, cookie, transaction id.
const STUN_HEADER: usize = 20;
/// The USERNAME attribute's type.
const USERNAME: u16 = 0x0006;

pub fn classify(datagram: &[u8]) -> Kind {
    match datagram.first() {
        Some(0..=3) if datagram.len() >= STUN_HEADER && datagram[4..8] == MAGIC_COOKIE => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        Some(128..=191) => Kind::Rtp,
        _ => Kind::Other,
    }
}

/// The local part of a STUN request's USERNAME: the ufrag this server gave the person, which
/// comes first ("server:browser", RFC 8445 § 7.2.2). Borrowed from the datagram; `None` for a
/// message that is not STUN, has no USERNAME, or does not add up.
pub fn local_ufrag(datagram: &[u8]) -> Option<&str> {
    if classify(datagram) != Kind::Stun {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let mut attributes = datagram.get(STUN_HEADER..STUN_HEADER + length)?;
    while attributes.len() >= 4 {
        let kind = u16::from_be_bytes([attributes[0], attributes[1]]);
        let size = usize::from(u16::from_be_bytes([attributes[2], attributes[3]]));
        let value = attributes.get(4..4 + size)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split_once(':').map(|(local, _)| local);
        }
        // Values are padded to a multiple of four bytes.
        attributes = attributes.get(4 + size.next_multiple_of(4)..)?;
    }
    None
}

/// Who each ufrag and each proven address `A` belongs to (the core's addresses are a protocol
/// and a socket address: UDP and ICE-TCP are different paths).
#[derive(Debug)]
pub struct Router<K, A> {
    by_ufrag: HashMap<Box<str>, K>,
    by_address: HashMap<A, K>,
}

impl<K, A> Default for Router<K, A> {
    fn default() -> Self {
        Self { by_ufrag: HashMap::new(), by_address: HashMap::new() }
    }
}

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<K> {
    /// To this person, whose address it came from.
    Known(K),
    /// A STUN request naming this person's ufrag from an address not yet theirs: theirs once
    /// the person's ICE agent has checked its integrity (then [`Router::learn`]).
    Claimed(K),
    /// Nobody's: dropped without being looked at further.
    Unknown,
}

impl<K: Copy + PartialEq, A: Copy + Eq + Hash> Router<K, A> {
    /// `person` answers to the ufrag `ufrag` from now on.
    pub fn add(&mut self, ufrag: &str, person: K) {
        self.by_ufrag.insert(ufrag.into(), person);
    }

    /// Where the datagram from `source` goes.
    pub fn route(&self, source: A, datagram: &[u8]) -> Route<K> {
        if let Some(person) = self.by_address.get(&source) {
            return Route::Known(*person);
        }
        match local_ufrag(datagram).and_then(|ufrag| self.by_ufrag.get(ufrag)) {
            Some(person) => Route::Claimed(*person),
            None => Route::Unknown,
        }
    }

    /// `source` proved to be `person`'s (a request with their credentials came from it). A
    /// person may have several, one per network path ICE tries.
    pub fn learn(&mut self, source: A, person: K) {
        self.by_address.insert(source, person);
    }

    /// Forgets the address `source` (its connection closed): someone else may have it next.
    pub fn forget(&mut self, source: A) {
        self.by_address.remove(&source);
    }

    /// Forgets `person`: their ufrag and every address of theirs.
    pub fn remove(&mut self, person: K) {
        self.by_ufrag.retain(|_, p| *p != person);
        self.by_address.retain(|_, p| *p != person);
    }

    /// How many addresses are known.
    #[cfg(test)]
    pub fn addresses(&self) -> usize {
        self.by_address.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN binding request with these attributes (type, value), as a browser sends it.
    fn stun(attributes: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in attributes {
            body.extend(kind.to_be_bytes());
            body.extend((value.len() as u16).to_be_bytes());
            body.extend(*value);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let mut message = vec![0x00, 0x01];
        message.extend((body.len() as u16).to_be_bytes());
        message.extend(MAGIC_COOKIE);
        message.extend([7; 12]);
        message.extend(body);
        message
    }

    #[test]
    fn datagrams_are_told_apart_by_their_first_byte() {
        assert_eq!(classify(&stun(&[])), Kind::Stun);
        assert_eq!(classify(&[22, 254, 253, 0, 0]), Kind::Dtls);
        assert_eq!(classify(&[0x80, 96, 0, 1]), Kind::Rtp);
        assert_eq!(classify(&[]), Kind::Other);
        assert_eq!(classify(b"GET / HTTP/1.1"), Kind::Other);
        // A STUN-like first byte without the cookie is not STUN.
        let mut fake = stun(&[]);
        fake[4] = 0;
        assert_eq!(classify(&fake), Kind::Other);
    }

    #[test]
    fn the_ufrag_comes_from_the_username_after_any_other_attribute() {
        let priority: &[u8] = &[0, 0, 0, 1];
        let request = stun(&[(0x0024, priority), (0x8029, b"tiebreak"), (USERNAME, b"srv1:brw2")]);
        assert_eq!(local_ufrag(&request), Some("srv1"));
        // An odd-length attribute before it is padded.
        let request = stun(&[(0x8022, b"abc"), (USERNAME, b"x:y")]);
        assert_eq!(local_ufrag(&request), Some("x"));
    }

    #[test]
    fn a_message_that_does_not_add_up_has_no_ufrag() {
        assert_eq!(local_ufrag(&stun(&[])), None);
        assert_eq!(local_ufrag(&stun(&[(USERNAME, b"no-colon")])), None);
        assert_eq!(local_ufrag(&stun(&[(USERNAME, &[0xff, b':', b'a'])])), None);
        // The header claims more than there is.
        let mut long = stun(&[(USERNAME, b"a:b")]);
        long[3] = 200;
        assert_eq!(local_ufrag(&long), None);
        // An attribute claims more than there is.
        let mut cut = stun(&[(USERNAME, b"a:b")]);
        cut[STUN_HEADER + 3] = 100;
        assert_eq!(local_ufrag(&cut), None);
        assert_eq!(local_ufrag(&[0x80, 96, 0, 1]), None);
    }

    #[test]
    fn a_person_is_found_by_ufrag_first_and_by_address_once_learnt() {
        let mut router = Router::<_, std::net::SocketAddr>::default();
        router.add("ann", 1);
        router.add("bob", 2);
        let (a, b, stranger) =
            ("10.0.0.1:5000".parse().unwrap(), "10.0.0.2:5000".parse().unwrap(), "10.9.9.9:1".parse().unwrap());
        assert_eq!(router.route(a, &stun(&[(USERNAME, b"ann:x")])), Route::Claimed(1));
        assert_eq!(router.route(a, &[0x80, 96]), Route::Unknown, "media from an unproven address");
        router.learn(a, 1);
        assert_eq!(router.route(a, &[0x80, 96]), Route::Known(1));
        // Bob's credentials from Ann's address do not make it Bob's: the address decides.
        assert_eq!(router.route(a, &stun(&[(USERNAME, b"bob:x")])), Route::Known(1));
        assert_eq!(router.route(b, &stun(&[(USERNAME, b"bob:x")])), Route::Claimed(2));
        assert_eq!(router.route(stranger, &stun(&[(USERNAME, b"eve:x")])), Route::Unknown);
        router.learn(b, 2);
        router.forget(b);
        assert_eq!(router.route(b, &[0x80, 96]), Route::Unknown, "a forgotten address is nobody's");
        assert_eq!(router.route(b, &stun(&[(USERNAME, b"bob:x")])), Route::Claimed(2), "Bob is still known");
        router.remove(1);
        assert_eq!(router.route(a, &[0x80, 96]), Route::Unknown);
        assert_eq!(router.route(a, &stun(&[(USERNAME, b"ann:x")])), Route::Unknown);
        assert_eq!(router.addresses(), 0);
    }
}
