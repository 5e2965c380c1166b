//! The server-rendered pages of the real server binary: which path shows what, with which status.
#![cfg(feature = "ssr")]

mod common;

use common::{http_get, Server};

#[tokio::test]
async fn each_path_renders_its_page() {
    let server = Server::start(&[]);
    let (status, home) = http_get(&server, "/").await;
    assert_eq!(status, 200);
    assert!(home.contains("New call"), "{home}");

    let (status, call) = http_get(&server, "/call/abc-DEF_123").await;
    assert_eq!(status, 200);
    assert!(call.contains("Local video") && call.contains("Hang up"), "{call}");

    for path in ["/call/not.a.room", "/call/", "/no/such/page"] {
        let (status, page) = http_get(&server, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(page.contains("This call link doesn"), "{path}: {page}");
    }
}
