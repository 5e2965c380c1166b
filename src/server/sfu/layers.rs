//! Which simulcast layer each receiver gets of each camera it shows. Pure: the core gives it what
//! it measured (each layer's size and rate, each receiver's tiles and bandwidth estimate) and
//! switches to what it decides at the sender's next keyframe.
//!
//! - A tile gets the smallest layer that covers its rendered size; a tile not shown (scrolled
//!   away, page hidden) gets none.
//! - When the receiver's bandwidth cannot carry that, every tile shown gets its least layer,
//!   and the rest goes to raising them: the speaker's tile first, then larger tiles before
//!   smaller ones.
//! - Hysteresis, as Galène does it: the layers in use stay while they cost at most 3/2 of the
//!   budget (a short dip of the estimate does not cost everyone a keyframe), and a better choice
//!   is taken only if it fits in 7/8 of it (room for the estimate to wobble).

use std::time::{Duration, Instant};

pub use crate::protocol::{Layer, Reason};

/// A layer a sender offers: its size (from its last keyframe; 0 until one is seen) and what it
/// costs a receiver, in bits per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offered {
    pub layer: Layer,
    pub width: u32,
    pub height: u32,
    pub bps: u64,
}

/// One camera a receiver is sent, as the decision sees it.
#[derive(Clone, Debug)]
pub struct Item<K> {
    pub key: K,
    /// The sender's layers, smallest first.
    pub layers: Vec<Offered>,
    /// The tile's rendered video size in device pixels, or `None` when it is not shown.
    pub tile: Option<(u32, u32)>,
    /// Whose voice is heard: served first when the budget is short.
    pub speaking: bool,
    /// The layer the receiver is being sent now, or switching to.
    pub current: Option<Layer>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub layer: Option<Layer>,
    pub reason: Reason,
}

/// A layer covers a tile when it has at least this share of the tile's pixels in each
/// dimension: a 632-pixel layer in a 640-pixel tile is as good as it gets, not a reason to send
/// a layer four times the size.
const COVERS: (u64, u64) = (9, 10);

/// The smallest layer that covers `tile`, or the largest there is. Layers not seen yet get the
/// size of one that was, scaled; with none seen, the smallest is taken until one is.
pub fn wanted(layers: &[Offered], tile: (u32, u32)) -> Option<Layer> {
    let known = layers.iter().find(|offered| offered.width > 0)?;
    let size = |offered: &Offered| match offered.width {
        0 => {
            let (from, to) = (known.layer.scale_down(), offered.layer.scale_down());
            (known.width * from / to, known.height * from / to)
        }
        _ => (offered.width, offered.height),
    };
    let covers = |(width, height): (u32, u32)| {
        u64::from(width) * COVERS.1 >= u64::from(tile.0) * COVERS.0
            && u64::from(height) * COVERS.1 >= u64::from(tile.1) * COVERS.0
    };
    layers.iter().find(|offered| covers(size(offered))).or(layers.last()).map(|offered| offered.layer)
}

fn wanted_or_first<K>(item: &Item<K>) -> Option<Layer> {
    let tile = item.tile?;
    wanted(&item.layers, tile).or(item.layers.first().map(|offered| offered.layer))
}

fn cost<K>(item: &Item<K>, layer: Option<Layer>) -> u64 {
    layer.and_then(|layer| item.layers.iter().find(|offered| offered.layer == layer)).map_or(0, |offered| offered.bps)
}

/// The items in the order they are served: the speaker first, then by tile size.
fn served_order<K>(items: &[Item<K>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    let area = |item: &Item<K>| item.tile.map_or(0, |(width, height)| u64::from(width) * u64::from(height));
    order.sort_by_key(|index| std::cmp::Reverse((items[*index].speaking, area(&items[*index]))));
    order
}

/// The best layers within `budget`, served in [`served_order`].
fn allocate<K>(items: &[Item<K>], caps: &[Option<Layer>], budget: u64) -> Vec<Option<Layer>> {
    let order = served_order(items);
    let mut given = vec![None; items.len()];
    let mut used = 0;
    for &index in &order {
        // Every tile shown gets its least layer whatever the budget: the estimate is only
        // raised by what is sent, and one that fell at a call's start (seen with every browser
        // on a busy machine, docs/performance.md) must not leave tiles dark. The budget decides
        // how far above that each goes.
        let Some(least) = caps[index].and(items[index].layers.first()) else { continue };
        used += least.bps;
        given[index] = Some(least.layer);
    }
    for &index in &order {
        let item = &items[index];
        for offered in item.layers.iter().filter(|offered| Some(offered.layer) <= caps[index]) {
            let Some(now) = given[index] else { break };
            if offered.layer <= now {
                continue;
            }
            let more = offered.bps.saturating_sub(cost(item, Some(now)));
            if used + more > budget {
                break;
            }
            used += more;
            given[index] = Some(offered.layer);
        }
    }
    given
}

/// What each receiver's camera tiles get now: `budget` is what the receiver's link carries for
/// video, in bits per second (`None`: not known yet, no limit).
pub fn choose<K: Copy>(items: &[Item<K>], budget: Option<u64>) -> Vec<(K, Choice)> {
    let caps: Vec<Option<Layer>> = items.iter().map(wanted_or_first).collect();
    // The layer in use, or the offered one below it, but never above what the tile needs.
    let held: Vec<Option<Layer>> = items
        .iter()
        .zip(&caps)
        .map(|(item, cap)| {
            let current = item.current.min(*cap)?;
            item.layers.iter().rev().map(|offered| offered.layer).find(|layer| *layer <= current)
        })
        .collect();
    let layers = match budget {
        None => caps.clone(),
        Some(budget) => {
            let used: u64 = items.iter().zip(&held).map(|(item, layer)| cost(item, *layer)).sum();
            if used > budget * 3 / 2 {
                allocate(items, &caps, budget)
            } else {
                // Taken only if it raises some tile and lowers none: a tile kept above what 7/8
                // of the budget gives it keeps its layer.
                let better = allocate(items, &caps, budget * 7 / 8);
                let raises = better.iter().zip(&held).any(|(better, held)| better > held);
                let lowers = better.iter().zip(&held).any(|(better, held)| better < held);
                if raises && !lowers {
                    better
                } else {
                    held
                }
            }
        }
    };
    items
        .iter()
        .zip(layers.into_iter().zip(caps))
        .map(|(item, (layer, cap))| {
            let reason = match (item.tile, layer == cap) {
                (None, _) => Reason::Hidden,
                (Some(_), true) => Reason::Tile,
                (Some(_), false) => Reason::Bandwidth,
            };
            (item.key, Choice { layer, reason })
        })
        .collect()
}

/// Which layers of a camera its sender should encode (dynacast): those some receiver is sent or
/// is switching to, and for [`Dynacast::KEEP`] after the last one stopped, so that a receiver
/// wavering between two layers does not cost the sender a keyframe at each resume.
#[derive(Clone, Debug)]
pub struct Dynacast {
    needed_at: [Option<Instant>; 3],
}

impl Dynacast {
    pub const KEEP: Duration = Duration::from_secs(3);

    /// A camera starts with every layer on: the server learns their sizes from their first
    /// keyframes, before anyone's choice needs them.
    pub fn new(now: Instant) -> Self {
        Self { needed_at: [Some(now); 3] }
    }

    /// The layers to send now, given those `needed` now.
    pub fn active(&mut self, now: Instant, needed: impl IntoIterator<Item = Layer>) -> Vec<Layer> {
        for layer in needed {
            self.needed_at[layer as usize] = Some(now);
        }
        Layer::ALL
            .into_iter()
            .filter(|layer| {
                self.needed_at[*layer as usize].is_some_and(|at| now.saturating_duration_since(at) < Self::KEEP)
            })
            .collect()
    }
}

/// A rate in bits per second, measured over windows of [`Rate::WINDOW`] and smoothed.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    bytes: u64,
    since: Instant,
    bps: Option<u64>,
}

impl Rate {
    pub const WINDOW: Duration = Duration::from_millis(500);

    pub fn new(now: Instant) -> Self {
        Self { bytes: 0, since: now, bps: None }
    }

    pub fn add(&mut self, now: Instant, bytes: usize) {
        self.roll(now);
        self.bytes += bytes as u64;
    }

    /// The rate, once a window has passed; a stream that stopped falls to 0 within two.
    pub fn bps(&mut self, now: Instant) -> Option<u64> {
        self.roll(now);
        self.bps
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < Self::WINDOW {
            return;
        }
        let measured = (self.bytes as f64 * 8.0 / elapsed.as_secs_f64()) as u64;
        // Half the last window, half the one before: a keyframe does not look like a new rate.
        self.bps = Some(self.bps.map_or(measured, |before| (before + measured) / 2));
        self.bytes = 0;
        self.since = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Layer = Layer::Quarter;
    const H: Layer = Layer::Half;
    const F: Layer = Layer::Full;

    /// A 1280×720 camera's three layers at their usual rates.
    fn hd() -> Vec<Offered> {
        vec![
            Offered { layer: Q, width: 320, height: 180, bps: 150_000 },
            Offered { layer: H, width: 640, height: 360, bps: 500_000 },
            Offered { layer: F, width: 1280, height: 720, bps: 1_500_000 },
        ]
    }

    fn item(key: u32, tile: Option<(u32, u32)>, current: Option<Layer>) -> Item<u32> {
        Item { key, layers: hd(), tile, speaking: false, current }
    }

    fn layers(choices: &[(u32, Choice)]) -> Vec<Option<Layer>> {
        choices.iter().map(|(_, choice)| choice.layer).collect()
    }

    #[test]
    fn a_tile_gets_the_smallest_layer_that_covers_it() {
        assert_eq!(wanted(&hd(), (160, 90)), Some(Q));
        assert_eq!(wanted(&hd(), (320, 180)), Some(Q));
        // Nearly covered is covered.
        assert_eq!(wanted(&hd(), (350, 197)), Some(Q));
        assert_eq!(wanted(&hd(), (400, 225)), Some(H));
        assert_eq!(wanted(&hd(), (1280, 720)), Some(F));
        // Larger than the camera: its largest layer.
        assert_eq!(wanted(&hd(), (2560, 1440)), Some(F));
        // A tall tile of a wide picture needs its height covered as well.
        assert_eq!(wanted(&hd(), (300, 500)), Some(F));
    }

    #[test]
    fn layers_not_seen_yet_are_sized_from_one_that_was() {
        let mut layers = hd();
        layers[0].width = 0;
        layers[0].height = 0;
        layers[2].width = 0;
        layers[2].height = 0;
        assert_eq!(wanted(&layers, (300, 170)), Some(Q));
        assert_eq!(wanted(&layers, (1000, 560)), Some(F));
        for offered in &mut layers {
            offered.width = 0;
        }
        assert_eq!(wanted(&layers, (300, 170)), None);
        assert_eq!(
            choose(&[Item { key: 1, layers, tile: Some((1000, 560)), speaking: false, current: None }], None)[0]
                .1
                .layer,
            Some(Q)
        );
    }

    #[test]
    fn with_no_estimate_yet_each_tile_gets_what_covers_it_and_hidden_ones_nothing() {
        let items = [item(1, Some((320, 180)), None), item(2, Some((1280, 720)), None), item(3, None, Some(F))];
        let choices = choose(&items, None);
        assert_eq!(layers(&choices), [Some(Q), Some(F), None]);
        assert_eq!(choices[0].1.reason, Reason::Tile);
        assert_eq!(choices[2].1.reason, Reason::Hidden);
    }

    #[test]
    fn a_slow_link_gets_smaller_layers_the_speaker_first() {
        let mut items = [item(1, Some((1280, 720)), Some(F)), item(2, Some((1280, 720)), Some(F))];
        items[1].speaking = true;
        // 3 Mbit/s in use on a link that carries 800 kbit/s.
        let choices = choose(&items, Some(800_000));
        assert_eq!(layers(&choices), [Some(Q), Some(H)]);
        assert!(choices.iter().all(|(_, choice)| choice.reason == Reason::Bandwidth));
        // 300 kbit/s: both quarters.
        assert_eq!(layers(&choose(&items, Some(300_000))), [Some(Q), Some(Q)]);
        // Less than two quarter layers cost: each still gets its quarter, and says why.
        let choices = choose(&items, Some(200_000));
        assert_eq!(layers(&choices), [Some(Q), Some(Q)]);
        assert_eq!(choices[0].1.reason, Reason::Bandwidth);
    }

    #[test]
    fn larger_tiles_are_served_before_smaller_ones() {
        let items = [item(1, Some((320, 180)), Some(Q)), item(2, Some((1280, 720)), Some(F))];
        // Each gets its quarter, then the big tile rises as far as the rest allows.
        assert_eq!(layers(&choose(&items, Some(900_000))), [Some(Q), Some(H)]);
    }

    #[test]
    fn layers_in_use_stay_through_a_dip_of_up_to_three_halves() {
        let items = [item(1, Some((640, 360)), Some(H))];
        // 500 kbit/s in use: kept down to an estimate of 334 kbit/s...
        assert_eq!(layers(&choose(&items, Some(340_000))), [Some(H)]);
        // ...and left below it.
        assert_eq!(layers(&choose(&items, Some(330_000))), [Some(Q)]);
    }

    #[test]
    fn a_better_layer_is_taken_only_within_seven_eighths() {
        let items = [item(1, Some((640, 360)), Some(Q))];
        // The half layer needs 500 kbit/s: 7/8 of 560 is 490, not enough; 7/8 of 580 is 507.
        assert_eq!(layers(&choose(&items, Some(560_000))), [Some(Q)]);
        assert_eq!(layers(&choose(&items, Some(580_000))), [Some(H)]);
    }

    #[test]
    fn a_larger_layer_that_costs_no_more_is_taken() {
        // A still picture: every layer at about the same rate.
        let mut still = hd();
        for offered in &mut still {
            offered.bps = 50_000;
        }
        let items = [Item { key: 1, layers: still, tile: Some((1280, 720)), speaking: false, current: Some(Q) }];
        assert_eq!(layers(&choose(&items, Some(100_000))), [Some(F)]);
    }

    #[test]
    fn no_flapping_between_the_two_thresholds() {
        let mut items = [item(1, Some((640, 360)), Some(Q))];
        let mut switches = 0;
        // An estimate wobbling between 400 and 560 kbit/s never moves the quarter layer up, nor
        // does one between 340 and 560 move a half layer down.
        for (step, estimate) in [400_000, 560_000, 450_000, 520_000, 400_000].into_iter().cycle().take(20).enumerate() {
            let layer = choose(&items, Some(estimate))[0].1.layer;
            switches += usize::from(layer != items[0].current);
            items[0].current = layer;
            if step == 9 {
                items[0].current = Some(H);
            }
        }
        assert_eq!(switches, 0);
        assert_eq!(items[0].current, Some(H));
    }

    #[test]
    fn a_tile_that_shrinks_or_hides_goes_down_at_once_whatever_the_budget() {
        let items = [item(1, Some((320, 180)), Some(F)), item(2, None, Some(H))];
        let choices = choose(&items, Some(10_000_000));
        assert_eq!(layers(&choices), [Some(Q), None]);
        assert_eq!(choices[1].1.reason, Reason::Hidden);
    }

    #[test]
    fn a_tile_shown_again_comes_back_when_the_budget_allows() {
        let items = [item(1, Some((320, 180)), None), item(2, Some((320, 180)), Some(Q))];
        assert_eq!(layers(&choose(&items, Some(1_000_000))), [Some(Q), Some(Q)]);
    }

    #[test]
    fn a_two_layer_camera_gets_its_half_layer_for_small_tiles() {
        let layers = hd()[1..].to_vec();
        let items = [Item { key: 1, layers, tile: Some((100, 56)), speaking: false, current: None }];
        assert_eq!(choose(&items, None)[0].1, Choice { layer: Some(H), reason: Reason::Tile });
    }

    #[test]
    fn a_layer_nobody_needs_is_paused_after_a_while_and_resumed_at_once() {
        let start = Instant::now();
        let mut dynacast = Dynacast::new(start);
        assert_eq!(dynacast.active(start, []), [Q, H, F]);
        let later = start + Duration::from_secs(1);
        assert_eq!(dynacast.active(later, [Q]), [Q, H, F]);
        let paused = start + Dynacast::KEEP;
        assert_eq!(dynacast.active(paused, []), [Q]);
        assert_eq!(dynacast.active(paused, [F]), [Q, F]);
        assert_eq!(dynacast.active(later + Dynacast::KEEP, []), [F]);
        assert_eq!(dynacast.active(paused + Dynacast::KEEP, []), []);
    }

    #[test]
    fn a_rate_is_measured_over_windows_and_falls_when_the_stream_stops() {
        let start = Instant::now();
        let mut rate = Rate::new(start);
        assert_eq!(rate.bps(start), None);
        // 100 kB a second: 800 kbit/s.
        for tenth in 0..10 {
            rate.add(start + Duration::from_millis(tenth * 100), 10_000);
        }
        assert_eq!(rate.bps(start + Duration::from_millis(1_000)), Some(800_000));
        assert_eq!(rate.bps(start + Duration::from_millis(1_500)), Some(400_000));
        assert_eq!(rate.bps(start + Duration::from_millis(2_000)), Some(200_000));
    }
}
