//! The server-rendered pages of the real server binary: which path shows what, with which status.
#![cfg(feature = "ssr")]

mod common;

use common::{get, http_get, Server};

#[tokio::test]
async fn each_path_renders_its_page() {
    let server = Server::start(&[]);
    let (status, home) = http_get(&server, "/").await;
    assert_eq!(status, 200);
    assert!(home.contains("New call"), "{home}");

    let (status, call) = http_get(&server, "/call/abc-DEF_123").await;
    assert_eq!(status, 200);
    assert!(call.contains("Your video") && call.contains("Hang up"), "{call}");

    for path in ["/call/not.a.room", "/call/", "/no/such/page"] {
        let (status, page) = http_get(&server, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(page.contains("This call link doesn"), "{path}: {page}");
    }
}

/// The `nonce-…` of a Content-Security-Policy's script-src.
fn script_nonce(policy: &str) -> String {
    let script_src = policy.split(';').map(str::trim).find(|d| d.starts_with("script-src ")).expect("a script-src");
    assert!(!script_src.contains("'unsafe-inline'") && !script_src.contains("'unsafe-eval'"), "{script_src}");
    assert!(script_src.contains("'wasm-unsafe-eval'"), "{script_src}");
    let nonce = script_src.split(' ').find_map(|s| s.strip_prefix("'nonce-")?.strip_suffix('\'')).expect("a nonce");
    nonce.to_owned()
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let server = Server::start(&[]);
    for path in ["/", "/call/abc-DEF_123", "/no/such/page", "/pkg/duo.css", "/healthz", "/readyz"] {
        let response = get(server.addr, path).await;
        assert_eq!(response.header("referrer-policy"), ["no-referrer"], "{path}");
        assert_eq!(response.header("x-content-type-options"), ["nosniff"], "{path}");
        assert_eq!(
            response.header("permissions-policy"),
            ["camera=(self), microphone=(self), display-capture=(self)"],
            "{path}"
        );
        let policy = response.header("content-security-policy");
        assert_eq!(policy.len(), 1, "{path}: one policy");
        for directive in ["frame-ancestors 'none'", "base-uri 'none'"] {
            assert!(policy[0].contains(directive), "{path}: {}", policy[0]);
        }
        // Plain HTTP: no HSTS (that comes only with a real certificate; see tests/tls.rs).
        assert!(response.header("strict-transport-security").is_empty(), "{path}");
    }
}

#[tokio::test]
async fn pages_run_only_the_scripts_their_nonce_admits_and_are_never_cached() {
    let server = Server::start(&[]);
    let mut nonces = Vec::new();
    for path in ["/", "/call/abc-DEF_123", "/call/abc-DEF_123", "/no/such/page"] {
        let page = get(server.addr, path).await;
        let policy = page.header("content-security-policy")[0].to_owned();
        let nonce = script_nonce(&policy);
        assert!(nonce.len() >= 16, "{nonce}");
        for directive in ["connect-src 'self'", "object-src 'none'", "default-src 'self'"] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        // Every inline script of the page carries this response's nonce.
        let scripts: Vec<_> = page.body.match_indices("<script").map(|(at, _)| &page.body[at..]).collect();
        assert!(!scripts.is_empty(), "{path}: the hydration script");
        for script in scripts {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains(&format!("nonce=\"{nonce}\"")), "{path}: {tag}");
        }
        assert_eq!(page.header("cache-control"), ["no-store"], "{path}");
        nonces.push(nonce);
    }
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), 4, "a fresh nonce for every response");
}
