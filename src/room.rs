//! Room ids: the part of a call link that names the call, e.g. `/call/Zk3Q…`.
//!
//! A fresh id carries 128 random bits, so a link cannot be guessed; the accepted form is wider
//! (`[A-Za-z0-9_-]{1,64}`) so that people can also pick readable names.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted room id, in bytes (all accepted characters are ASCII).
pub const MAX_ROOM_ID_LEN: usize = 64;

/// A validated room id: 1 to 64 characters from `[A-Za-z0-9_-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomId(String);

/// Why a string is not a room id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRoomId {
    #[error("a room id cannot be empty")]
    Empty,
    #[error("a room id is at most {MAX_ROOM_ID_LEN} characters")]
    TooLong,
    #[error("a room id may only contain letters, digits, '-' and '_'")]
    BadCharacter,
}

impl RoomId {
    /// A fresh, unguessable id: 22 characters of the URL-safe base64 alphabet, each chosen by
    /// 6 random bits (132 bits in all). Not base64 of some bytes, only its alphabet: that keeps
    /// a base64 encoder out of the browser's wasm.
    pub fn generate() -> Self {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bytes = [0u8; 22];
        getrandom::getrandom(&mut bytes).expect("the platform has a random number source");
        Self(bytes.iter().map(|byte| char::from(ALPHABET[usize::from(byte & 63)])).collect())
    }

    pub fn parse(candidate: &str) -> Result<Self, InvalidRoomId> {
        if candidate.is_empty() {
            return Err(InvalidRoomId::Empty);
        }
        if candidate.len() > MAX_ROOM_ID_LEN {
            return Err(InvalidRoomId::TooLong);
        }
        if !candidate.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(InvalidRoomId::BadCharacter);
        }
        Ok(Self(candidate.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RoomId {
    type Error = InvalidRoomId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<RoomId> for String {
    fn from(id: RoomId) -> Self {
        id.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_ids_are_valid_unique_and_use_the_whole_alphabet() {
        let ids: HashSet<RoomId> = (0..1000).map(|_| RoomId::generate()).collect();
        assert_eq!(ids.len(), 1000, "no two fresh ids collide");
        for id in &ids {
            assert_eq!(id.as_str().len(), 22);
            assert_eq!(RoomId::parse(id.as_str()).as_ref(), Ok(id));
        }
        // 22 000 characters from 64: every one of them turns up (each is missing with a
        // chance of about e^-344), so each character carries its 6 bits.
        let seen: HashSet<char> = ids.iter().flat_map(|id| id.as_str().chars()).collect();
        assert_eq!(seen.len(), 64);
    }

    #[test]
    fn accepts_the_documented_alphabet_and_lengths() {
        for ok in ["a", "A-z_09", &"x".repeat(64)] {
            assert!(RoomId::parse(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn rejects_everything_else_with_a_reason() {
        assert_eq!(RoomId::parse(""), Err(InvalidRoomId::Empty));
        assert_eq!(RoomId::parse(&"x".repeat(65)), Err(InvalidRoomId::TooLong));
        for bad in ["a b", "a/b", "a.b", "é", "a%20", "<script>", "a\0"] {
            assert_eq!(RoomId::parse(bad), Err(InvalidRoomId::BadCharacter), "{bad:?}");
        }
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<RoomId>("\"ok-id\"").is_ok());
        assert!(serde_json::from_str::<RoomId>("\"not ok\"").is_err());
    }
}
