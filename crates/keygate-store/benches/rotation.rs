//! Refresh-token rotations per second on SQLite with full durability (WAL,
//! `synchronous = FULL`): each rotation is the compare-and-set of S34, the new token's
//! row and an audit entry, committed and synced before its caller hears back. Both sides
//! in one run: with the group committer (what keygate runs) and without it (one commit
//! and one fsync per rotation). Run with `cargo bench -p keygate-store`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keygate_audit::{AuditEvent, Outcome};
use keygate_store::testing::TestDb;
use keygate_store::{
    AdminCredential, ClientRecord, FamilyRecord, RotationWrite, SqlStore, Store, SystemKeys,
    TokenStore,
};

async fn setup(families: usize) -> (TestDb, Arc<SqlStore>) {
    let db = TestDb::sqlite().unwrap();
    let store = SqlStore::connect(db.url()).await.unwrap();
    store
        .initialize(
            SystemKeys {
                kcv: vec![1],
                wrapped_system_key: vec![2],
            },
            AdminCredential {
                id: "root".into(),
                token_hash: vec![0; 32],
                created_ms: 0,
                label: "bench".into(),
            },
            AuditEvent::new("system", "system.init", Outcome::Success),
            0,
        )
        .await
        .unwrap();
    store
        .create_client(
            ClientRecord {
                id: "app".into(),
                name: "app".into(),
                kind: "public".into(),
                secret_hash: None,
                redirect_uris: vec!["com.example.app:/cb".into()],
                scopes: "ai".into(),
                created_ms: 0,
                removed_ms: None,
                auth_method: None,
                tls_identity: None,
                dpop: None,
                display_name: None,
                privacy_url: None,
                session_note: None,
            },
            AuditEvent::new("admin", "client.add", Outcome::Success),
            0,
        )
        .await
        .unwrap();
    for f in 0..families {
        store
            .insert_family(
                FamilyRecord {
                    id: format!("f{f}"),
                    user_id: "u".into(),
                    client_id: "app".into(),
                    jkt: Some("jkt".into()),
                    scopes: "ai".into(),
                    created_ms: 0,
                    last_used_ms: 0,
                    generation: 0,
                    previous_generation: None,
                    rotated_ms: None,
                    revoked_ms: None,
                    revoke_reason: None,
                    tier: None,
                    attest_key: None,
                    attest_counter: None,
                },
                format!("t{f}-0").into_bytes(),
                AuditEvent::new("u", "token.issue", Outcome::Success),
                0,
            )
            .await
            .unwrap();
    }
    (db, Arc::new(store))
}

/// Rotates every family once per round, `concurrency` families at a time.
async fn rotate(store: Arc<SqlStore>, families: usize, generation: &mut i64) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(families);
    for f in 0..families {
        let store = store.clone();
        let g = *generation;
        tasks.push(tokio::spawn(async move {
            let ok = store
                .rotate_family(
                    RotationWrite {
                        family_id: format!("f{f}"),
                        expected_generation: g,
                        new_generation: g + 1,
                        previous_generation: Some(g),
                        rotated_ms: Some(1),
                        now_ms: 1,
                        new_token_hash: format!("t{f}-{}", g + 1).into_bytes(),
                        attest_counter: None,
                    },
                    AuditEvent::new("u", "token.refresh", Outcome::Success),
                )
                .await
                .unwrap();
            assert!(ok);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    *generation += 1;
    start.elapsed()
}

fn rotations(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("refresh_rotation_sqlite_full_sync");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (grouped, concurrency) in [
        (false, 1usize),
        (false, 32),
        (true, 1),
        (true, 32),
        (true, 128),
    ] {
        let (_db, store) = rt.block_on(setup(concurrency));
        let store = if grouped {
            store
        } else {
            Arc::new(store.without_group_commit())
        };
        let mut generation = 0i64;
        let mode = if grouped {
            "grouped"
        } else {
            "one_commit_each"
        };
        group.throughput(Throughput::Elements(concurrency as u64));
        group.bench_function(format!("{mode}/{concurrency}_concurrent"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += rt.block_on(rotate(store.clone(), concurrency, &mut generation));
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, rotations);
criterion_main!(benches);
