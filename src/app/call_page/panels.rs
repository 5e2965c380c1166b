//! The side panel of a call, showing one of three at a time: the chat, the people, and the
//! rest (this side's name, the devices, the statistics, the keyboard shortcuts). Beside the
//! stage on a wide window, a sheet over it on a phone. Opening one moves the focus into it;
//! closing it (its Close button, or Escape) moves the focus back to the button that opened it.
//! One frame for the three, and each shut one kept in the page (hidden), so that a draft or a
//! scroll position survives closing it, and the page's wasm stays small.

use leptos::{either::Either, ev, prelude::*, wasm_bindgen::JsCast};

use super::{bar::SHORTCUTS, link::Actions, CallState, Panel};
use crate::{
    app::{
        clock,
        icons::{markup, Icon},
        use_hydrated,
    },
    call::{Author, CallCommand, CallStats, ChatLine},
    protocol::{Layer, MediaState, Reason, MAX_CHAT_CHARS, MAX_NAME_CHARS},
};

pub(super) fn panels(state: CallState, actions: Actions) -> impl IntoView {
    // Focus follows the panel: into the one that opens, back to the button of the one that shut.
    Effect::new(move |before: Option<Option<Panel>>| {
        let now = state.panel.get();
        let target = match (before.flatten(), now) {
            (_, Some(open)) => Some(open.first_focus()),
            (Some(shut), None) => Some(shut.button_id()),
            (None, None) => None,
        };
        if let Some(id) = target {
            // After the panel is shown: a hidden element takes no focus.
            request_animation_frame(move || {
                if let Some(element) = document().get_element_by_id(id) {
                    let _ = element.unchecked_into::<leptos::web_sys::HtmlElement>().focus();
                }
            });
        }
        now
    });
    // What is read while the chat is open has been seen.
    Effect::new(move |_| {
        if state.panel.get() == Some(Panel::Chat) {
            state.chat_seen.set(state.chat.with(Vec::len));
        }
    });
    view! {
        <aside class="panel" id="panel" aria-labelledby="panel-heading" hidden=shut(state, None)>
            <header>
                <h2 id="panel-heading">{move || state.panel.get().map(Panel::title)}</h2>
                <button class="icon-button" id="panel-close" aria-label="Close" title="Close (Escape)"
                    on:click=move |_| state.panel.set(None) inner_html=markup(&[Icon::Close], None)></button>
            </header>
            <div hidden=shut(state, Some(Panel::Chat))>{chat(state, actions)}</div>
            <div hidden=shut(state, Some(Panel::People))>{people(state)}</div>
            <div hidden=shut(state, Some(Panel::More))>{more(state, actions)}</div>
        </aside>
    }
}

/// Whether `panel` is shut (`None`: whether every one is). One function for all four, so that
/// the four are one type of reactive attribute in the wasm.
fn shut(state: CallState, panel: Option<Panel>) -> impl Fn() -> bool + Copy + Send + Sync + 'static {
    move || match panel {
        Some(panel) => state.panel.get() != Some(panel),
        None => state.panel.get().is_none(),
    }
}

fn chat(state: CallState, actions: Actions) -> impl IntoView {
    let draft = state.draft;
    let send = move |event: ev::SubmitEvent| {
        event.prevent_default();
        let text = draft.get_untracked().trim().to_owned();
        if !text.is_empty() {
            actions.command(CallCommand::Chat(text));
            draft.set(String::new());
        }
    };
    view! {
        <section class="chat" aria-label="Chat">
            <ol class="messages" aria-live="polite">
                <For each=move || state.chat.get().into_iter().enumerate() key=|(index, _)| *index let:((_, line))>
                    {chat_line(line)}
                </For>
            </ol>
            <form on:submit=send>
                <input id="chat-message" aria-label="Message" placeholder="Write a message" prop:value=draft
                    on:input=move |event| draft.set(event_target_value(&event)) maxlength=MAX_CHAT_CHARS.to_string()/>
                <button type="submit" disabled=move || !state.active()>"Send"</button>
            </form>
        </section>
    }
}

/// Who wrote it (the page's own notes name no one), when, and what.
fn chat_line(line: ChatLine) -> impl IntoView {
    let mine = line.from == Author::You;
    let who = match line.from {
        Author::You => Some("You".to_owned()),
        Author::Them(name) => Some(name),
        Author::Page => None,
    };
    view! {
        <li class:mine=mine>
            {who.map(|who| view! { <span class="who">{who}</span> " " })}
            <time>{clock(line.sent_at)}</time> " "
            <span class="text">{line.text}</span>
        </li>
    }
}

/// Everyone in the call, this side first: their name, and in words whether they are speaking,
/// muted or have their camera off.
fn people(state: CallState) -> impl IntoView {
    let everyone = move || {
        let own = state.local.get();
        let mut rows = vec![("You".to_owned(), states(state.speaking.get(), Some(own)))];
        state.remotes.with(|remotes| {
            let group = remotes.len() > 1;
            rows.extend(remotes.iter().map(|remote| (remote.named(group), states(remote.speaking, remote.media))));
        });
        rows
    };
    view! {
        <ul class="people">
            {move || everyone().into_iter().map(|(name, states)| view! {
                <li><span class="who">{name}</span> <span class="states">{states}</span></li>
            }).collect_view()}
        </ul>
    }
}

/// "speaking", "muted", "camera off", as many as apply.
fn states(speaking: bool, media: Option<MediaState>) -> String {
    let muted = media.is_some_and(|m| !m.audio);
    let camera_off = media.is_some_and(|m| !m.video && !m.screen);
    [(speaking, "speaking"), (muted, "muted"), (camera_off, "camera off")]
        .into_iter()
        .filter_map(|(on, word)| on.then_some(word))
        .collect::<Vec<_>>()
        .join(", ")
}

/// This side's name, the cameras and microphones, the statistics and the keyboard shortcuts.
fn more(state: CallState, actions: Actions) -> impl IntoView {
    view! {
        // Before Start, the join screen has it.
        {move || state.active().then(|| name_field(state, actions))}
        {device_picker(state, actions, true)}
        <section class="stats" aria-labelledby="stats-heading">
            <h3 id="stats-heading">"Statistics"</h3>
            {move || match state.stats.get() {
                None => Either::Left(view! { <p>"No connection yet."</p> }),
                Some(stats) => Either::Right(view! { <StatsTable stats/> }),
            }}
        </section>
        <section class="shortcuts" aria-labelledby="shortcuts-heading">
            <h3 id="shortcuts-heading">"Keyboard shortcuts"</h3>
            <dl>
                {SHORTCUTS.into_iter().map(|(key, what)| view! { <dt><kbd>{key}</kbd></dt><dd>{what}</dd> }).collect_view()}
            </dl>
        </section>
    }
}

/// The name this side goes by: kept by the browser, sent to the others when it changes.
pub(super) fn name_field(state: CallState, actions: Actions) -> impl IntoView {
    // Until hydrated, what is typed would be lost: hydration sets the field to the kept name.
    let hydrated = use_hydrated();
    view! {
        <label class="name-field">
            "Your name "
            <input placeholder="Guest" autocomplete="nickname" maxlength=MAX_NAME_CHARS.to_string()
                disabled=move || !hydrated.get()
                prop:value=state.name on:input=move |event| state.name.set(event_target_value(&event))
                on:change=move |event| actions.rename(event_target_value(&event))/>
        </label>
    }
}

/// The cameras and microphones to choose from, once the browser has named them: on the join
/// screen while the preview shows, and `in_call` in the More panel (one place at a time).
pub(super) fn device_picker(state: CallState, actions: Actions, in_call: bool) -> impl IntoView {
    let devices = state.devices;
    let use_device = move |event: ev::Event| {
        let id = event_target_value(&event);
        if let Some(device) = devices.get_untracked().into_iter().find(|d| d.id == id) {
            actions.use_device(state, device);
        }
    };
    let options = move |cameras: bool| {
        devices
            .get()
            .into_iter()
            .filter(|d| d.is_camera == cameras)
            .map(|d| {
                let chosen = state.chosen.with_untracked(|chosen| chosen.contains(&d));
                view! { <option value=d.id.clone() selected=chosen>{d.label.clone()}</option> }
            })
            .collect_view()
    };
    let here = move || if in_call { state.active() } else { state.previewing.get() };
    let shown = Memo::new(move |_| here() && !devices.with(Vec::is_empty));
    move || {
        shown.get().then(|| {
            view! {
                <div class="devices">
                    <label>"Camera " <select on:change=use_device>{move || options(true)}</select></label>
                    <label>"Microphone " <select on:change=use_device>{move || options(false)}</select></label>
                </div>
            }
        })
    }
}

#[component]
fn StatsTable(stats: CallStats) -> impl IntoView {
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "–".into());
    let rows = [
        ("Round trip", or_dash(stats.round_trip_ms.map(|ms| format!("{ms:.0} ms")))),
        ("Received", format!("{:.0} kbit/s", stats.kbps_in)),
        ("Sent", format!("{:.0} kbit/s", stats.kbps_out)),
        ("Video", or_dash(stats.width.zip(stats.height).map(|(w, h)| format!("{w}×{h}")))),
        ("Frame rate", or_dash(stats.frames_per_second.map(|fps| format!("{fps:.0} fps")))),
        ("Packet loss", format!("{:.1} %", stats.packet_loss_percent)),
        ("Path", or_dash(stats.relayed.map(|relayed| if relayed { "relayed (TURN)" } else { "direct" }.into()))),
    ];
    // Through the server, each camera comes in the size the page needs and the link allows.
    let layers = stats.layers.into_iter().map(|(who, layer, reason)| {
        let size = match layer {
            Some(Layer::Full) => "full size",
            Some(Layer::Half) => "half size",
            Some(Layer::Quarter) => "quarter size",
            None => "none",
        };
        let why = match reason {
            Reason::Tile => "as large as its tile is shown",
            Reason::Bandwidth => "your connection is too slow for more",
            Reason::Hidden => "not shown",
        };
        (format!("Video from {who}"), format!("{size}: {why}"))
    });
    view! {
        <dl>
            {rows.into_iter().map(|(name, value)| (name.to_owned(), value)).chain(layers)
                .map(|(name, value)| view! { <dt>{name}</dt><dd>{value}</dd> }).collect_view()}
        </dl>
    }
}
