//! Security headers: what every response carries, and the Content-Security-Policy of a page,
//! whose per-response nonce lets only the page's own hydration script run inline.

use axum::{
    http::{header, HeaderValue},
    Router,
};
use tower_http::set_header::SetResponseHeaderLayer;

/// For responses that set no policy of their own (static files, health checks, errors): they
/// may run nothing, load nothing and be framed by no one.
const DEFAULT_POLICY: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The policy of a server-rendered page. Scripts come only from the site, or inline with this
/// response's `nonce` (Leptos's hydration script carries it); wasm needs `'wasm-unsafe-eval'`.
/// `connect-src 'self'` covers the signaling socket: CSP 3 lets `'self'` match `ws:`/`wss:`
/// to the page's own host and port. `dev_reload_port` admits `cargo leptos watch`'s reload
/// socket, during development only.
pub(crate) fn page_policy(nonce: &str, dev_reload_port: Option<u32>) -> String {
    let reload = dev_reload_port.map(|port| format!(" ws://*:{port} wss://*:{port}")).unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data:; connect-src 'self'{reload}; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

/// Adds the headers every response carries. `strict_transport` only when serving HTTPS with a
/// certificate browsers trust (see [`crate::server::tls::Tls::strict_transport`]).
pub(crate) fn add(router: Router, strict_transport: bool) -> Router {
    let set = |name, value: &'static str| SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value));
    let router = router
        // The call link is the call's only secret: it must never leave in a Referer header.
        .layer(set(header::REFERRER_POLICY, "no-referrer"))
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(
            header::HeaderName::from_static("permissions-policy"),
            "camera=(self), microphone=(self), display-capture=(self)",
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DEFAULT_POLICY),
        ));
    if strict_transport {
        router.layer(set(header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"))
    } else {
        router
    }
}

/// Sets a server-rendered page's own headers: its policy with this response's nonce, and no
/// caching (a call page names its call, and a nonce must not be reused).
pub(crate) fn for_page(options: &leptos::prelude::LeptosOptions) {
    use leptos::prelude::use_context;
    let Some(response) = use_context::<leptos_axum::ResponseOptions>() else { return };
    let nonce = leptos::nonce::use_nonce().map(|nonce| nonce.to_string()).unwrap_or_default();
    let reload = std::env::var_os("LEPTOS_WATCH").map(|_| options.reload_external_port.unwrap_or(options.reload_port));
    if let Ok(policy) = HeaderValue::from_str(&page_policy(&nonce, reload)) {
        response.insert_header(header::CONTENT_SECURITY_POLICY, policy);
    }
    response.insert_header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_runs_only_its_own_scripts() {
        let policy = page_policy("abc123", None);
        let directive = |name: &str| {
            policy.split(';').map(str::trim).find(|d| d.split(' ').next() == Some(name)).unwrap_or_default().to_owned()
        };
        assert_eq!(directive("script-src"), "script-src 'self' 'nonce-abc123' 'wasm-unsafe-eval'");
        assert_eq!(directive("connect-src"), "connect-src 'self'");
        assert_eq!(directive("frame-ancestors"), "frame-ancestors 'none'");
        assert_eq!(directive("object-src"), "object-src 'none'");
        assert_eq!(directive("base-uri"), "base-uri 'none'");
        assert!(!policy.contains("unsafe-inline") && !policy.contains("'unsafe-eval'"), "{policy}");
    }

    #[test]
    fn the_reload_socket_is_allowed_only_in_development() {
        assert!(page_policy("n", Some(3001)).contains("connect-src 'self' ws://*:3001 wss://*:3001;"));
        assert!(!page_policy("n", None).contains("3001"));
    }
}
