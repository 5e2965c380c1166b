//! The m-lines on which the server sends one person everyone else's tracks: which carries whom,
//! and what the next offer must change. Pure: the core applies a [`Plan`] to the person's `Rtc`.
//!
//! An m-line once added stays in every later offer (a browser never forgets one), so they are
//! reused: an m-line whose person left is turned `inactive`, and a newcomer's track goes on an
//! inactive one of its kind before a new one is added. The m-lines are as many as the most people
//! the room has had at once, not as many as have come and gone. An m-line never passes straight
//! from one person to another: it goes inactive in between, so each change of who is on it is an
//! offer of its own, which names who is on it.

use str0m::media::{Direction, MediaKind, Mid};

/// A track of someone else's: the person (`K`, the core's id for them) and their m-line.
pub type Source<K> = (K, Mid);

#[derive(Clone, Copy, Debug)]
struct Slot<K> {
    mid: Mid,
    kind: MediaKind,
    /// In the browser's hands since an answer: the offer that added it was answered.
    exists: bool,
    /// What the browser last agreed it carries (`None`: inactive).
    agreed: Option<Source<K>>,
    /// What the offer waiting for an answer says it carries.
    offered: Option<Source<K>>,
    /// What it should carry.
    wanted: Option<Source<K>>,
}

/// What the next offer changes: m-lines to turn on or off, and m-lines to add.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan<K> {
    pub directions: Vec<(Mid, Direction)>,
    pub add: Vec<(MediaKind, Source<K>)>,
}

impl<K> Plan<K> {
    pub fn is_empty(&self) -> bool {
        self.directions.is_empty() && self.add.is_empty()
    }
}

#[derive(Debug)]
pub struct Slots<K> {
    slots: Vec<Slot<K>>,
}

impl<K> Default for Slots<K> {
    fn default() -> Self {
        Self { slots: Vec::new() }
    }
}

impl<K: Copy + PartialEq> Slots<K> {
    /// What must change for the browser to receive exactly `sources` (each with its kind).
    /// Call only with no offer out.
    pub fn plan(&mut self, sources: &[(Source<K>, MediaKind)]) -> Plan<K> {
        for slot in &mut self.slots {
            if slot.wanted.is_some_and(|wanted| !sources.iter().any(|(source, _)| *source == wanted)) {
                slot.wanted = None;
            }
        }
        let mut plan = Plan { directions: Vec::new(), add: Vec::new() };
        for (source, kind) in sources {
            if self.slots.iter().any(|slot| slot.wanted == Some(*source)) {
                continue;
            }
            let free = self
                .slots
                .iter_mut()
                .find(|slot| slot.exists && slot.kind == *kind && slot.wanted.is_none() && slot.agreed.is_none());
            match free {
                Some(slot) => slot.wanted = Some(*source),
                None => plan.add.push((*kind, *source)),
            }
        }
        for slot in self.slots.iter().filter(|slot| slot.wanted != slot.agreed) {
            let direction = if slot.wanted.is_some() { Direction::SendOnly } else { Direction::Inactive };
            plan.directions.push((slot.mid, direction));
        }
        plan
    }

    /// The offer of the last [`Self::plan`] was made; `added` are the m-lines it added, in the
    /// plan's order.
    pub fn offered(&mut self, added: &[(Mid, MediaKind, Source<K>)]) {
        for slot in &mut self.slots {
            slot.offered = slot.wanted;
        }
        for (mid, kind, source) in added {
            let source = Some(*source);
            self.slots.push(Slot {
                mid: *mid,
                kind: *kind,
                exists: false,
                agreed: None,
                offered: source,
                wanted: source,
            });
        }
    }

    /// The browser answered the offer: returns the tracks it now receives that it did not before.
    pub fn answered(&mut self) -> Vec<Source<K>> {
        let mut started = Vec::new();
        for slot in &mut self.slots {
            if slot.offered != slot.agreed {
                started.extend(slot.offered);
            }
            slot.agreed = slot.offered;
            slot.exists = true;
        }
        started
    }

    /// The browser's own offer rolled the server's back: m-lines it added are gone, the others
    /// carry what they did, and the next plan offers the change again.
    pub fn rolled_back(&mut self) {
        self.slots.retain(|slot| slot.exists);
        for slot in &mut self.slots {
            slot.offered = slot.agreed;
        }
    }

    /// The m-line that carries `source` to the browser now, if one does.
    pub fn carrying(&self, source: Source<K>) -> Option<Mid> {
        self.slots.iter().find(|slot| slot.agreed == Some(source) && slot.wanted == Some(source)).map(|slot| slot.mid)
    }

    /// The m-lines that carry a track now, and whose.
    pub fn carried(&self) -> impl Iterator<Item = (Mid, Source<K>)> + '_ {
        self.slots.iter().filter(|slot| slot.agreed == slot.wanted).filter_map(|slot| Some((slot.mid, slot.agreed?)))
    }

    /// How many m-lines carry a track now.
    pub fn carrying_count(&self) -> usize {
        self.carried().count()
    }

    /// Whose track the m-line `mid` carries.
    pub fn source_of(&self, mid: Mid) -> Option<Source<K>> {
        self.slots.iter().find(|slot| slot.mid == mid).and_then(|slot| slot.agreed)
    }

    /// What the offer out says each m-line carries (the inactive ones are left out).
    pub fn offered_tracks(&self) -> impl Iterator<Item = (Mid, K)> + '_ {
        self.slots.iter().filter_map(|slot| slot.offered.map(|(person, _)| (slot.mid, person)))
    }

    /// How many m-lines the server has for the browser.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIO: MediaKind = MediaKind::Audio;
    const VIDEO: MediaKind = MediaKind::Video;

    fn mid(text: &str) -> Mid {
        Mid::from(text)
    }

    /// Offers and answers `plan`, the added m-lines numbered from `next`.
    fn agree(slots: &mut Slots<u32>, plan: Plan<u32>, next: &mut u32) -> Vec<Source<u32>> {
        let added: Vec<_> = plan
            .add
            .iter()
            .map(|(kind, source)| {
                *next += 1;
                (mid(&next.to_string()), *kind, *source)
            })
            .collect();
        slots.offered(&added);
        slots.answered()
    }

    #[test]
    fn each_track_gets_an_m_line_and_is_carried_once_answered() {
        let mut slots = Slots::default();
        let (ann_mic, ann_cam) = ((1, mid("a0")), (1, mid("a1")));
        let plan = slots.plan(&[(ann_mic, AUDIO), (ann_cam, VIDEO)]);
        assert_eq!(plan.add, [(AUDIO, ann_mic), (VIDEO, ann_cam)]);
        slots.offered(&[(mid("5"), AUDIO, ann_mic), (mid("6"), VIDEO, ann_cam)]);
        assert_eq!(slots.offered_tracks().collect::<Vec<_>>(), [(mid("5"), 1), (mid("6"), 1)]);
        assert_eq!(slots.carrying(ann_mic), None, "not before the answer");
        assert_eq!(slots.answered(), [ann_mic, ann_cam]);
        assert_eq!(slots.carrying(ann_mic), Some(mid("5")));
        assert_eq!(slots.source_of(mid("6")), Some(ann_cam));
        assert!(slots.plan(&[(ann_mic, AUDIO), (ann_cam, VIDEO)]).is_empty(), "nothing more to change");
    }

    #[test]
    fn a_leavers_m_lines_go_inactive_and_a_newcomer_reuses_them_so_the_offer_does_not_grow() {
        let mut slots = Slots::default();
        let mut next = 10;
        let (bob_mic, bob_cam) = ((2, mid("b0")), (2, mid("b1")));
        let (cy_mic, cy_cam) = ((3, mid("c0")), (3, mid("c1")));
        let plan = slots.plan(&[(bob_mic, AUDIO), (bob_cam, VIDEO)]);
        agree(&mut slots, plan, &mut next);
        // Bob leaves: his two m-lines are turned off, and carry no one.
        let plan = slots.plan(&[]);
        assert_eq!(plan.directions, [(mid("11"), Direction::Inactive), (mid("12"), Direction::Inactive)]);
        assert!(plan.add.is_empty());
        assert_eq!(agree(&mut slots, plan, &mut next), []);
        assert_eq!(slots.carrying(bob_mic), None);
        assert_eq!(slots.offered_tracks().count(), 0);
        // Cy comes: his tracks go on the same two m-lines, by kind.
        let plan = slots.plan(&[(cy_cam, VIDEO), (cy_mic, AUDIO)]);
        assert!(plan.add.is_empty());
        assert_eq!(plan.directions, [(mid("11"), Direction::SendOnly), (mid("12"), Direction::SendOnly)]);
        assert_eq!(agree(&mut slots, plan, &mut next), [cy_mic, cy_cam]);
        assert_eq!((slots.carrying(cy_mic), slots.carrying(cy_cam)), (Some(mid("11")), Some(mid("12"))));
        assert_eq!(slots.len(), 2);
    }

    #[test]
    fn an_m_line_never_passes_straight_from_one_person_to_another() {
        let mut slots = Slots::default();
        let mut next = 0;
        let (bob_mic, cy_mic) = ((2, mid("b0")), (3, mid("c0")));
        let plan = slots.plan(&[(bob_mic, AUDIO)]);
        agree(&mut slots, plan, &mut next);
        // Bob leaves as Cy comes: Bob's m-line goes off, and Cy gets a new one, in one offer.
        let plan = slots.plan(&[(cy_mic, AUDIO)]);
        assert_eq!(plan.directions, [(mid("1"), Direction::Inactive)]);
        assert_eq!(plan.add, [(AUDIO, cy_mic)]);
        agree(&mut slots, plan, &mut next);
        assert_eq!(slots.carrying(cy_mic), Some(mid("2")));
        assert_eq!(slots.source_of(mid("1")), None);
    }

    #[test]
    fn a_rolled_back_offer_is_made_again() {
        let mut slots = Slots::default();
        let mut next = 0;
        let (bob_mic, cy_mic) = ((2, mid("b0")), (3, mid("c0")));
        let plan = slots.plan(&[(bob_mic, AUDIO)]);
        agree(&mut slots, plan, &mut next);
        // Bob leaves and Cy comes; the browser offers at the same moment, which rolls it back.
        let plan = slots.plan(&[(cy_mic, AUDIO)]);
        slots.offered(&[(mid("9"), AUDIO, cy_mic)]);
        assert_eq!(plan.directions.len(), 1);
        slots.rolled_back();
        assert_eq!(slots.len(), 1, "the added m-line is gone");
        assert_eq!(slots.carrying(bob_mic), None, "Bob is wanted no more");
        let again = slots.plan(&[(cy_mic, AUDIO)]);
        assert_eq!(again.directions, [(mid("1"), Direction::Inactive)]);
        assert_eq!(again.add, [(AUDIO, cy_mic)]);
    }
}
