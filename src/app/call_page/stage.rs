//! The stage: a tile for each other person and one for this side, laid out to use the space.
//! Alone (and before Start) this side's view fills it; with one other person, theirs does and
//! this side's sits small in a corner, clear of their name and state; with more, everyone gets
//! an even share; a shared screen goes large with the people as a strip.

use leptos::{html::Video, prelude::*};

use super::{link::Actions, CallState};
use crate::{
    app::icons::{icon, markup, Icon},
    call::Remote,
};

/// How the stage is laid out, from the number of other people and whether one shares a screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    /// No one else: this side fills the stage.
    Alone,
    /// One other person fills it; this side is a small corner tile.
    Pair,
    /// Everyone, this side too, in an even grid.
    Grid,
    /// The screen of the person `peer` large, everyone else in a strip.
    Presenting(u32),
}

pub(super) fn stage(state: CallState, actions: Actions) -> impl IntoView {
    let layout = Memo::new(move |_| state.remotes.with(|remotes| Layout::of(remotes)));
    // Tiles in the grid, this side's included: the CSS picks columns from it.
    let count = move || state.remotes.with(Vec::len) + 1;
    let peers = move || state.remotes.with(|remotes| remotes.iter().map(|remote| remote.peer).collect::<Vec<_>>());
    // Whoever speaks, or spoke last (while they are here), else whoever came first: the tile a
    // phone shows large when the others are too many to share its screen.
    let spotlight = Memo::new(move |before: Option<&Option<u32>>| {
        state.remotes.with(|remotes| {
            let here = |peer: &u32| remotes.iter().any(|remote| remote.peer == *peer);
            let speaking = remotes.iter().find(|remote| remote.speaking).map(|remote| remote.peer);
            speaking.or(before.copied().flatten().filter(here)).or(remotes.first().map(|remote| remote.peer))
        })
    });
    view! {
        <div class=move || format!("stage {}", layout.get().class()) data-count=count data-columns=move || columns(count())>
            <For each=peers key=|peer| *peer let:peer>
                {tile(state, actions, peer, layout, spotlight)}
            </For>
            {own_tile(state)}
            // What just happened, told politely; a newer event replaces the one before.
            <p class="event" aria-live="polite">{move || state.event.get()}</p>
        </div>
    }
}

/// The grid's columns for `tiles` tiles: the fewest that make it about square (two up to four).
fn columns(tiles: usize) -> usize {
    (2..).find(|columns| columns * columns >= tiles).unwrap_or(2)
}

impl Layout {
    /// The layout for these other people: a shared screen first, then by how many they are.
    fn of(remotes: &[Remote]) -> Layout {
        if let Some(sharing) = remotes.iter().find(|r| r.media.is_some_and(|m| m.screen)) {
            return Layout::Presenting(sharing.peer);
        }
        match remotes.len() {
            0 => Layout::Alone,
            1 => Layout::Pair,
            _ => Layout::Grid,
        }
    }

    fn class(self) -> &'static str {
        match self {
            Layout::Alone => "alone",
            Layout::Pair => "pair",
            Layout::Grid => "grid",
            Layout::Presenting(_) => "presenting",
        }
    }
}

/// This side's view, ringed (as a tile is) while this side is heard speaking.
fn own_tile(state: CallState) -> impl IntoView {
    let local = state.local;
    view! {
        <div class="tile own" class:speaking=state.speaking>
            <video class="local" class:screen=move || local.get().screen node_ref=state.local_video
                aria-label="Your video" autoplay playsinline muted prop:muted=true></video>
            <p class="name" class:muted=move || !local.get().audio aria-hidden="true">{icon(Icon::MicrophoneOff)} "You"</p>
        </div>
    }
}

/// One other person: their video and name, whether they are speaking, whether their camera is
/// off, they are muted or they share their screen; and a way to see them full screen.
fn tile(
    state: CallState,
    actions: Actions,
    peer: u32,
    layout: Memo<Layout>,
    spotlight: Memo<Option<u32>>,
) -> impl IntoView {
    let called = Memo::new(move |_| {
        state.remotes.with(|remotes| {
            let group = remotes.len() > 1;
            remotes.iter().find(|r| r.peer == peer).and_then(|remote| remote.called(group))
        })
    });
    let who = move || called.get().unwrap_or_else(|| Remote::UNNAMED.into());
    // Within a sentence.
    let whom = move || called.get().unwrap_or_else(|| "the other person".into());
    let media = move || state.remotes.with(|remotes| remotes.iter().find(|r| r.peer == peer).and_then(|r| r.media));
    let muted = Memo::new(move |_| media().is_some_and(|m| !m.audio));
    let sharing = Memo::new(move |_| media().is_some_and(|m| m.screen));
    let speaking =
        Memo::new(move |_| state.remotes.with(|remotes| remotes.iter().any(|r| r.peer == peer && r.speaking)));
    let video = NodeRef::<Video>::new();
    video.on_load(move |video| actions.show_remote(peer, video));
    let tile = NodeRef::<leptos::html::Div>::new();
    let full_screen = move || {
        if let Some(tile) = tile.get_untracked() {
            actions.full_screen(&tile);
        }
    };
    view! {
        <div class="tile" class:speaking=speaking class:spotlight=move || spotlight.get() == Some(peer) node_ref=tile
            class:featured=move || layout.get() == Layout::Presenting(peer) on:dblclick=move |_| full_screen()>
            <video class="remote" node_ref=video aria-label=move || format!("{}'s video", who()) autoplay playsinline></video>
            // The video's accessible name says it already.
            <p class="name" class:muted=muted aria-hidden="true" hidden=move || called.get().is_none()>
                {icon(Icon::MicrophoneOff)}
                {move || called.get()}
            </p>
            <div class="tile-actions">
                <button class="icon-button" on:click=move |_| full_screen() title="Full screen (or double-click)"
                    aria-label=move || format!("Show {} full screen", whom()) inner_html=markup(&[Icon::FullScreen], None)></button>
                <button class="icon-button" title="Picture in picture" hidden=move || !state.picture_in_picture.get()
                    aria-label=move || format!("Show {} in picture-in-picture", whom())
                    on:click=move |_| if let Some(video) = video.get_untracked() { actions.picture_in_picture(&video) }
                    inner_html=markup(&[Icon::PictureInPicture], None)>
                </button>
            </div>
            // Always in the page, so screen readers announce what appears in it.
            <div aria-live="polite">
                <p class="camera-off" hidden=move || media().is_none_or(|m| m.video)>
                    {move || format!("{}'s camera is off", who())}
                </p>
                <ul class="remote-state">
                    <li hidden=move || !muted.get()>{move || format!("{} is muted", who())}</li>
                    <li hidden=move || !sharing.get()>{move || format!("{} is sharing their screen", who())}</li>
                </ul>
            </div>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::{columns, Layout};
    use crate::{call::Remote, protocol::MediaState};

    fn remote(peer: u32, screen: bool) -> Remote {
        let media = Some(MediaState { audio: true, video: true, screen });
        Remote { peer, number: peer, receiving: true, media, name: None, speaking: false }
    }

    #[test]
    fn the_stage_is_laid_out_by_how_many_others_there_are_and_a_shared_screen_first() {
        assert_eq!(Layout::of(&[]), Layout::Alone);
        assert_eq!(Layout::of(&[remote(1, false)]), Layout::Pair);
        assert_eq!(Layout::of(&[remote(1, false), remote(2, false), remote(3, false)]), Layout::Grid);
        assert_eq!(Layout::of(&[remote(1, false), remote(2, true)]), Layout::Presenting(2));
        assert_eq!(Layout::of(&[remote(1, true)]), Layout::Presenting(1));
    }

    #[test]
    fn the_grid_is_about_square() {
        let by_tiles: Vec<usize> = (1..=26).map(columns).collect();
        assert_eq!(&by_tiles[..4], [2, 2, 2, 2]);
        assert_eq!((by_tiles[4], by_tiles[8], by_tiles[9], by_tiles[15], by_tiles[16]), (3, 3, 4, 4, 5));
        // A room of 25: five by five on a desktop.
        assert_eq!((by_tiles[24], by_tiles[25]), (5, 6));
        assert_eq!(columns(50), 8);
    }
}
