//! The cost of redacting the injected key from streamed response bodies: a 4 KiB and a
//! 64 KiB JSON body (no key in it: the common case) in 8 KiB chunks, passed through as
//! before vs through `StreamRedactor`. Run with `cargo bench --bench redact_stream`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use http::header::HeaderName;
use keygate_proxy::redact::StreamRedactor;
use keygate_proxy::route::Injection;
use secrecy::SecretString;

const CHUNK: usize = 8 * 1024;

/// Chat-completion-like JSON, with `sk-` fragments so the matcher's prefilter is exercised.
fn body(len: usize) -> Vec<Bytes> {
    let unit = br#"{"id":"chatcmpl-9x","object":"chat.completion.chunk","choices":[{"delta":{"content":"the task-sk-proj list is "},"index":0}]}"#;
    let mut text = Vec::with_capacity(len);
    while text.len() < len {
        text.extend_from_slice(unit);
        text.push(b'\n');
    }
    text.truncate(len);
    text.chunks(CHUNK).map(Bytes::copy_from_slice).collect()
}

fn bench(c: &mut Criterion) {
    let secret = SecretString::from("sk-proj-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH");
    let injection = Injection::Header {
        name: HeaderName::from_static("authorization"),
        prefix: "Bearer ".into(),
        suffix: String::new(),
    };
    let mut group = c.benchmark_group("response body");
    for size in [4 * 1024, 64 * 1024] {
        let chunks = body(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("passthrough", size),
            &chunks,
            |b, chunks| {
                b.iter(|| {
                    let mut n = 0;
                    for c in chunks {
                        n += black_box(c.clone()).len();
                    }
                    n
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("redacting", size), &chunks, |b, chunks| {
            b.iter(|| {
                // Built once per call, as the forwarder does.
                let mut r = StreamRedactor::new(&secret, &injection);
                let mut n = 0;
                for c in chunks {
                    n += black_box(r.push(c.clone())).len();
                }
                n + r.finish().len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
