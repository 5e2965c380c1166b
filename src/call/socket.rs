//! The signaling WebSocket: decodes the server's messages into machine inputs and sends ours.
//!
//! It connects with `join=later` (docs/protocol.md): the page can open it before the person
//! presses Start, and taking the place in the room is then one `JOIN` message.

use std::{cell::RefCell, rc::Rc};

use wasm_bindgen::{closure::Closure, JsCast, JsValue};
use web_sys::{CloseEvent, MessageEvent, WebSocket, Window};

use super::{
    js::{describe, mark},
    machine::Input,
};
use crate::{
    protocol::{JoinRequest, Message, PeerId},
    room::RoomId,
};

/// Who is in the room, as the call last knew: whom a closing page says `BYE` to. Shared by
/// the call's sockets, one after another.
pub type Everyone = Rc<RefCell<Vec<PeerId>>>;

/// The sender the server stamps on a relayed message.
#[derive(serde::Deserialize)]
struct Sender {
    from: Option<PeerId>,
}

pub struct Socket {
    ws: WebSocket,
    window: Window,
    /// `JOIN`, once the engine asked to join: it goes out as soon as the socket is open.
    joining: Rc<RefCell<Option<String>>>,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
    on_page_hide: Closure<dyn FnMut()>,
}

impl Socket {
    /// Opens `/ws/{room}?session=...&join=later` on the page's own host. What it reports carries
    /// `generation`, so that late events of a socket already replaced can be told apart.
    pub fn open(
        room: &RoomId,
        session: &str,
        generation: u32,
        everyone: Everyone,
        report: Rc<dyn Fn(Input)>,
    ) -> Result<Self, JsValue> {
        let window = web_sys::window().ok_or("no window")?;
        let location = window.location();
        let scheme = if location.protocol()? == "https:" { "wss" } else { "ws" };
        let ws = WebSocket::new(&format!("{scheme}://{}/ws/{room}?session={session}&join=later", location.host()?))?;
        let joining = Rc::new(RefCell::new(None::<String>));
        let on_message = {
            let (report, joining) = (report.clone(), joining.clone());
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                let Some(text) = event.data().as_string() else { return };
                match serde_json::from_str::<Message>(&text) {
                    // Who was in the room while this socket waited: old news once it joins.
                    Ok(Message::Present(_)) if joining.borrow().is_some() => {}
                    Ok(message) => {
                        let from = serde_json::from_str::<Sender>(&text).ok().and_then(|sender| sender.from);
                        report(Input::Server { socket: generation, from, message })
                    }
                    // A newer server may send types this client does not know yet.
                    Err(error) => leptos::logging::warn!("ignoring signaling message {text}: {error}"),
                }
            })
        };
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            report(Input::SocketClosed { socket: generation, code: event.code() });
        });
        // Leaving or reloading the page hangs up: the others must not wait for a person who is
        // gone (a socket that merely drops is someone who may come back). A socket that has
        // not joined has no one to tell.
        let on_page_hide = {
            let (ws, joining) = (ws.clone(), joining.clone());
            Closure::<dyn FnMut()>::new(move || {
                if joining.borrow().is_some() {
                    for to in everyone.borrow().iter() {
                        let _ = ws.send_with_str(&addressed(&Message::Bye(None), Some(*to)));
                    }
                }
            })
        };
        let on_open = {
            let (ws, joining) = (ws.clone(), joining.clone());
            Closure::<dyn FnMut()>::new(move || {
                mark("socket-open");
                if let Some(join) = joining.borrow().as_deref() {
                    let _ = ws.send_with_str(join);
                }
            })
        };
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        window.add_event_listener_with_callback("pagehide", on_page_hide.as_ref().unchecked_ref())?;
        Ok(Self { ws, window, joining, _on_open: on_open, _on_message: on_message, _on_close: on_close, on_page_hide })
    }

    /// Takes this person's place in the room, under their display name (for those waiting to
    /// join): now if the socket is open, else once it opens.
    pub fn join(&self, name: Option<String>) {
        let join = Message::Join(name.map(|name| JoinRequest { name: Some(name) })).to_json();
        if self.ws.ready_state() == WebSocket::OPEN {
            if let Err(error) = self.ws.send_with_str(&join) {
                leptos::logging::warn!("could not join: {}", describe(&error));
            }
        }
        *self.joining.borrow_mut() = Some(join);
    }

    /// Sends `message` to `to`, or (`None`) to the only other person.
    pub fn send(&self, message: &Message, to: Option<PeerId>) {
        let text = addressed(message, to);
        if let Err(error) = self.ws.send_with_str(&text) {
            leptos::logging::warn!("could not send {text}: {}", describe(&error));
        }
    }
}

/// The message's JSON, with its recipient.
fn addressed(message: &Message, to: Option<PeerId>) -> String {
    let json = message.to_json();
    match to {
        // The envelope is an object: `to` goes in before its closing brace.
        Some(to) => format!(r#"{},"to":{}}}"#, &json[..json.len() - 1], to.0),
        None => json,
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = self.window.remove_event_listener_with_callback("pagehide", self.on_page_hide.as_ref().unchecked_ref());
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close_with_code(1000);
    }
}
