//! The per-call CPU cost of the engine outside the network: target parsing, allow-list
//! and scope check, rate limit + quota, header hygiene with injection, redactor set-up,
//! and the raw framing guard on a typical head. Run with `cargo bench --bench hot_path`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use keygate_proxy::h1guard::RequestScanner;
use keygate_proxy::headers::{ForwardedInfo, Injected, outbound_request_headers};
use keygate_proxy::redact::Redactor;
use keygate_proxy::{LimitGate, ProxyTarget, RouteTable};
use secrecy::SecretString;

const ROUTES: &str = r#"
[routes.openai]
upstream = "https://api.openai.com"
secret = "openai"
inject = { header = "Authorization", value = "Bearer {secret}" }
allow = ["POST /v1/chat/completions", "GET /v1/models", "GET /v1/models/*"]
scopes = ["ai"]
limits = { rate = "1000000/s", burst = 1000000, quota = "1000000000/day" }
"#;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let table = RouteTable::from_toml(ROUTES).unwrap();
    let route = table.iter().next().unwrap().clone();
    let access = rt.block_on(common::verified_access("alice", "ai"));
    let gate = LimitGate::in_memory(1_000_000);
    let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
    let secret = SecretString::from("sk-proj-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH");
    let mut inbound = HeaderMap::new();
    for (n, v) in [
        ("host", "gate.example.com"),
        ("authorization", "DPoP eyJhbGciOiJFUzI1NiJ9.e30.sig"),
        ("dpop", "eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.sig"),
        ("content-type", "application/json"),
        ("content-length", "120"),
        ("accept", "text/event-stream"),
        ("user-agent", "MyApp/1.0 (iOS 18)"),
    ] {
        inbound.insert(n, HeaderValue::from_static(v));
    }
    let forwarded = ForwardedInfo {
        client_ip: ip,
        proto: "https",
        host: HeaderValue::from_static("gate.example.com"),
    };

    c.bench_function("policy: target + authorize + admit", |b| {
        b.iter(|| {
            let target =
                ProxyTarget::parse("/proxy/", black_box("/proxy/openai/v1/chat/completions"))
                    .unwrap();
            let call = route.authorize(&access, &Method::POST, &target).unwrap();
            rt.block_on(gate.admit(&call, ip)).unwrap()
        })
    });
    let injected = Injected::new(route.injection(), &secret).unwrap();
    // The hygiene works on the request's own map, so each iteration clones one first (the
    // clone is in the figure; a call's map comes from the parser and is not cloned).
    c.bench_function("headers: hygiene + injection", |b| {
        b.iter(|| {
            outbound_request_headers(black_box(inbound.clone()), &injected, &forwarded).unwrap()
        })
    });
    c.bench_function("redactor: set-up", |b| {
        b.iter(|| Redactor::new(black_box(&secret), route.injection()))
    });
    let head = b"POST /proxy/openai/v1/chat/completions HTTP/1.1\r\nHost: gate.example.com\r\n\
Authorization: DPoP eyJhbGciOiJFUzI1NiJ9.e30.sig\r\nDPoP: eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.sig\r\n\
Content-Type: application/json\r\nContent-Length: 0\r\nUser-Agent: MyApp/1.0\r\n\r\n";
    c.bench_function("h1guard: one request head", |b| {
        b.iter(|| {
            let mut scanner = RequestScanner::default();
            let mut out = Vec::with_capacity(512);
            scanner.feed(black_box(head), &mut out).unwrap();
            out
        })
    });
    c.bench_function(
        "h1guard: one request head, checked where it was read",
        |b| {
            b.iter(|| {
                let mut scanner = RequestScanner::default();
                scanner.pass(black_box(head))
            })
        },
    );

    // One keep-alive connection, sequential requests: the difference between the two is
    // the latency the proxy adds per call (policy, hygiene, injection, a second hop).
    let up = rt.block_on(common::start_upstream());
    let routes = format!(
        "[routes.echo]\nupstream = \"{}\"\nsecret = \"echo\"\ninject = {{ header = \"X-Api-Key\" }}\nallow = [\"GET /ok\"]\nlimits = {{ rate = \"1000000/s\", burst = 1000000 }}\n",
        up.url()
    );
    let proxy = rt.block_on(common::start_proxy(&routes, &[("echo", "sk-bench")]));
    for (name, addr, path) in [
        ("loopback: direct to upstream", up.addr, "/ok"),
        ("loopback: through the proxy", proxy.addr, "/proxy/echo/ok"),
    ] {
        let mut sender = rt.block_on(async {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender
        });
        c.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    sender.ready().await.unwrap();
                    let req = http::Request::get(path)
                        .header("host", "gate")
                        .body(http_body_util::Empty::<bytes::Bytes>::new())
                        .unwrap();
                    let r = sender.send_request(req).await.unwrap();
                    assert_eq!(r.status(), 200);
                    http_body_util::BodyExt::collect(r.into_body())
                        .await
                        .unwrap()
                })
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
