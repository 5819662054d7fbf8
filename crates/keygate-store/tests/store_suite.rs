//! One suite, two back ends: every test runs on SQLite, and on PostgreSQL when
//! `KEYGATE_TEST_POSTGRES_URL` is set (otherwise it prints that it was skipped).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use keygate_audit::{AuditEvent, Outcome, verify_chain};
use keygate_store::testing::TestDb;
use keygate_store::{
    AdminCredential, NewVersion, Sealed, SqlStore, Store, StoreError, SystemKeys, WrappedKey,
};

use keygate_store::on_both_backends;

on_both_backends!(
    initialize_happens_once,
    versions_are_appended_with_check_and_set,
    stale_master_key_cannot_write,
    old_versions_are_pruned_to_max_versions,
    audited_read_commits_its_entry,
    delete_undelete_destroy,
    rewrap_is_all_or_nothing,
    concurrent_writers_get_distinct_versions_and_an_intact_chain,
);

const KCV: &[u8] = b"kcv-one";

async fn open(db: &TestDb) -> SqlStore {
    let store = SqlStore::connect(db.url()).await.unwrap();
    store
        .initialize(
            SystemKeys {
                kcv: KCV.to_vec(),
                wrapped_system_key: vec![1, 2, 3],
            },
            AdminCredential {
                id: "root".into(),
                token_hash: vec![9; 32],
                created_ms: 1,
                label: "first admin".into(),
            },
            AuditEvent::new("system", "system.init", Outcome::Success),
            1,
        )
        .await
        .unwrap();
    store
}

fn sealed(tag: u8) -> Sealed {
    Sealed {
        wrapped_key: vec![tag; 60],
        ciphertext: vec![tag; 40],
    }
}

fn new_version(name: &str, expected: i64, tag: u8) -> NewVersion {
    NewVersion {
        name: name.into(),
        expected_current: expected,
        sealed: sealed(tag),
        now_ms: 1000 + i64::from(tag),
        keep_versions: 10,
        kcv: KCV.to_vec(),
    }
}

fn ev(action: &str) -> AuditEvent {
    AuditEvent::new("admin:root", action, Outcome::Success)
}

async fn assert_chain_intact(store: &SqlStore) -> i64 {
    let entries = store.audit_entries(0, 1_000_000).await.unwrap();
    let report = verify_chain(entries.into_iter().map(Ok::<_, String>), &[]).unwrap();
    assert_eq!(
        store.audit_head().await.unwrap(),
        (report.head_seq, report.head_hash)
    );
    report.head_seq
}

async fn initialize_happens_once(db: &TestDb) {
    let store = open(db).await;
    let again = store
        .initialize(
            SystemKeys {
                kcv: b"other".to_vec(),
                wrapped_system_key: vec![],
            },
            AdminCredential {
                id: "second".into(),
                token_hash: vec![8; 32],
                created_ms: 2,
                label: "x".into(),
            },
            ev("system.init"),
            2,
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::AlreadyInitialized)),
        "{again:?}"
    );
    let keys = store.system_keys().await.unwrap().unwrap();
    assert_eq!(keys.kcv, KCV);
    assert_eq!(keys.wrapped_system_key, vec![1, 2, 3]);
    let admins = store.admin_credentials().await.unwrap();
    assert_eq!(admins.len(), 1);
    assert_eq!(admins[0].id, "root");
    assert_eq!(assert_chain_intact(&store).await, 1);
    store.integrity_check().await.unwrap();
    if store.backend() == "sqlite" {
        // S33: WAL, and every commit synced (synchronous = FULL = 2).
        let (mode, sync) = store.sqlite_durability().await.unwrap().unwrap();
        assert_eq!((mode.as_str(), sync), ("wal", 2));
    }
    store.close().await;
}

async fn versions_are_appended_with_check_and_set(db: &TestDb) {
    let store = open(db).await;
    assert_eq!(
        store
            .write_version(new_version("openai", 0, 1), ev("secret.put"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .write_version(new_version("openai", 1, 2), ev("secret.put"))
            .await
            .unwrap(),
        2
    );
    let stale = store
        .write_version(new_version("openai", 1, 3), ev("secret.put"))
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { current: 2 })),
        "{stale:?}"
    );
    let meta = store.secret_meta("openai").await.unwrap().unwrap();
    assert_eq!(meta.current_version, 2);
    let v1 = store
        .read_version("openai", 1, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v1.sealed, Some(sealed(1)));
    assert!(
        store
            .read_version("openai", 3, None)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.list_secrets().await.unwrap().len(), 1);
    assert_eq!(store.secret_versions("openai").await.unwrap().len(), 2);
    assert_eq!(assert_chain_intact(&store).await, 3);
    store.close().await;
}

async fn stale_master_key_cannot_write(db: &TestDb) {
    let store = open(db).await;
    let mut nv = new_version("s", 0, 1);
    nv.kcv = b"a different key".to_vec();
    let r = store.write_version(nv, ev("secret.put")).await;
    assert!(matches!(r, Err(StoreError::KeyMismatch)), "{r:?}");
    assert!(
        store.secret_meta("s").await.unwrap().is_none(),
        "nothing partial stored"
    );
    assert_eq!(
        assert_chain_intact(&store).await,
        1,
        "no audit entry for a failed write"
    );
    store.close().await;
}

async fn old_versions_are_pruned_to_max_versions(db: &TestDb) {
    let store = open(db).await;
    for i in 0..5u8 {
        let mut nv = new_version("k", i64::from(i), i);
        nv.keep_versions = 3;
        store.write_version(nv, ev("secret.put")).await.unwrap();
    }
    let versions = store.secret_versions("k").await.unwrap();
    let destroyed: Vec<i64> = versions
        .iter()
        .filter(|v| v.destroyed_ms.is_some())
        .map(|v| v.version)
        .collect();
    assert_eq!(destroyed, vec![1, 2]);
    assert!(
        store
            .read_version("k", 1, None)
            .await
            .unwrap()
            .unwrap()
            .sealed
            .is_none()
    );
    assert!(
        store
            .read_version("k", 3, None)
            .await
            .unwrap()
            .unwrap()
            .sealed
            .is_some()
    );
    // A per-secret limit wins over the default.
    store
        .set_max_versions("k", Some(1), 2000, ev("secret.configure"))
        .await
        .unwrap();
    store
        .write_version(new_version("k", 5, 9), ev("secret.put"))
        .await
        .unwrap();
    let live = store
        .secret_versions("k")
        .await
        .unwrap()
        .iter()
        .filter(|v| v.destroyed_ms.is_none())
        .count();
    assert_eq!(live, 1);
    store.close().await;
}

async fn audited_read_commits_its_entry(db: &TestDb) {
    let store = open(db).await;
    store
        .write_version(new_version("k", 0, 1), ev("secret.put"))
        .await
        .unwrap();
    let before = store.audit_head().await.unwrap().0;
    let rec = store
        .read_version("k", 1, Some((ev("secret.read").target("k"), 5000)))
        .await
        .unwrap();
    assert!(rec.is_some());
    let entries = store.audit_entries(before, 10).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].action, "secret.read");
    assert_eq!(entries[0].target.as_deref(), Some("k"));
    store.close().await;
}

/// Issue 19: after one "database or disk is full", every later write failed with
/// "attempted to call begin_with at non-zero transaction depth" until a restart: SQLite had
/// rolled the failed transaction back itself, sqlx's ROLLBACK then failed, and the only
/// writer connection went back to the pool counted as inside a transaction. The full disk
/// is simulated with `max_page_count` (see `SqlStore::simulate_full_disk`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_does_not_wedge_the_store() {
    let db = TestDb::sqlite().unwrap();
    let store = open(&db).await;
    store
        .write_version(new_version("k", 0, 1), ev("secret.put"))
        .await
        .unwrap();
    store.check_writes().await.unwrap();

    store.simulate_full_disk(true).await.unwrap();
    let big = NewVersion {
        sealed: Sealed {
            wrapped_key: vec![7; 60],
            ciphertext: vec![7; 64 * 1024],
        },
        ..new_version("k", 1, 2)
    };
    let err = store
        .write_version(big.clone(), ev("secret.put"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("full"), "{err}");
    // Small writes still fit into pages the file has; fill them, as a full disk would.
    for pad in [500, 50, 0] {
        let mut filled = false;
        for i in 0..10_000 {
            let event = ev("filler").detail("pad", "x".repeat(pad)).detail("i", i);
            if store.append_audit(event, 2000).await.is_err() {
                filled = true;
                break;
            }
        }
        assert!(filled, "the simulated disk never filled up");
    }
    store.check_writes().await.unwrap_err();
    let read = store
        .read_version("k", 1, Some((ev("secret.read").target("k"), 3000)))
        .await;
    match read {
        Err(e @ StoreError::AuditUnavailable(_)) => {
            assert!(
                e.to_string().contains("audit entry could not be written"),
                "{e}"
            )
        }
        other => panic!("an audited read must fail on its audit entry: {other:?}"),
    }

    // Space is back: the very next write succeeds on the same store handle.
    store.simulate_full_disk(false).await.unwrap();
    assert_eq!(store.write_version(big, ev("secret.put")).await.unwrap(), 2);
    store
        .read_version("k", 2, Some((ev("secret.read").target("k"), 4000)))
        .await
        .unwrap()
        .unwrap();
    store.check_writes().await.unwrap();
    assert_chain_intact(&store).await;
    store.close().await;
}

async fn delete_undelete_destroy(db: &TestDb) {
    let store = open(db).await;
    store
        .write_version(new_version("k", 0, 1), ev("secret.put"))
        .await
        .unwrap();
    store
        .set_deleted("k", true, 10, ev("secret.delete"))
        .await
        .unwrap();
    assert!(
        store
            .secret_meta("k")
            .await
            .unwrap()
            .unwrap()
            .deleted_ms
            .is_some()
    );
    store
        .set_deleted("k", false, 11, ev("secret.undelete"))
        .await
        .unwrap();
    assert!(
        store
            .secret_meta("k")
            .await
            .unwrap()
            .unwrap()
            .deleted_ms
            .is_none()
    );
    assert!(matches!(
        store
            .set_deleted("missing", true, 12, ev("secret.delete"))
            .await,
        Err(StoreError::NotFound)
    ));
    store
        .destroy_version("k", 1, 13, ev("secret.destroy"))
        .await
        .unwrap();
    let rec = store.read_version("k", 1, None).await.unwrap().unwrap();
    assert!(rec.sealed.is_none());
    assert_eq!(rec.meta.destroyed_ms, Some(13));
    assert!(matches!(
        store
            .destroy_version("k", 7, 14, ev("secret.destroy"))
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(assert_chain_intact(&store).await, 5);
    store.close().await;
}

async fn rewrap_is_all_or_nothing(db: &TestDb) {
    let store = open(db).await;
    store
        .write_version(new_version("a", 0, 1), ev("secret.put"))
        .await
        .unwrap();
    store
        .write_version(new_version("b", 0, 2), ev("secret.put"))
        .await
        .unwrap();
    let keys = store.wrapped_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    let rewrapped: Vec<WrappedKey> = keys
        .iter()
        .cloned()
        .map(|mut k| {
            k.wrapped_key = vec![0xee; 60];
            k
        })
        .collect();
    let system = SystemKeys {
        kcv: b"kcv-two".to_vec(),
        wrapped_system_key: vec![4, 5, 6],
    };
    let wrong = store
        .rewrap(
            b"not-it",
            rewrapped.clone(),
            system.clone(),
            ev("vault.rekey"),
            50,
        )
        .await;
    assert!(matches!(wrong, Err(StoreError::KeyMismatch)), "{wrong:?}");
    let partial = store
        .rewrap(
            KCV,
            rewrapped[..1].to_vec(),
            system.clone(),
            ev("vault.rekey"),
            50,
        )
        .await;
    assert!(
        matches!(partial, Err(StoreError::Conflict { .. })),
        "{partial:?}"
    );
    assert_eq!(
        store.system_keys().await.unwrap().unwrap().kcv,
        KCV,
        "nothing changed"
    );
    store
        .rewrap(KCV, rewrapped, system, ev("vault.rekey"), 50)
        .await
        .unwrap();
    assert_eq!(store.system_keys().await.unwrap().unwrap().kcv, b"kcv-two");
    let rec = store.read_version("a", 1, None).await.unwrap().unwrap();
    assert_eq!(rec.sealed.unwrap().wrapped_key, vec![0xee; 60]);
    store.close().await;
}

async fn concurrent_writers_get_distinct_versions_and_an_intact_chain(db: &TestDb) {
    let store = Arc::new(open(db).await);
    let mut tasks = Vec::new();
    for i in 0..24u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Each writer retries on conflict, as the vault does.
            loop {
                let current = store
                    .secret_meta("hot")
                    .await
                    .unwrap()
                    .map_or(0, |m| m.current_version);
                match store
                    .write_version(new_version("hot", current, i), ev("secret.put"))
                    .await
                {
                    Ok(v) => return v,
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=24).collect::<Vec<i64>>());
    assert_eq!(assert_chain_intact(&store).await, 25);
    store.close().await;
}

// --- token service ---

on_both_backends!(
    users_are_unique_and_disabling_revokes_their_sessions,
    totp_steps_are_accepted_once,
    a_code_redeems_once_and_a_replay_revokes_its_family,
    parallel_rotations_leave_one_successor,
    dpop_replay_keys_are_seen_once_until_they_expire,
);

use keygate_store::{FamilyRecord, Redemption, RotationWrite, TokenStore, UserRecord};

fn user_rec(id: &str, name: &str) -> UserRecord {
    UserRecord {
        id: id.into(),
        name: name.into(),
        password_hash: Some("$argon2id$...".into()),
        scopes: "ai".into(),
        created_ms: 1,
        disabled_ms: None,
        totp_sealed: None,
        totp_last_step: None,
        issuer: None,
        subject: None,
    }
}

fn client_rec(id: &str) -> keygate_store::ClientRecord {
    keygate_store::ClientRecord {
        id: id.into(),
        name: format!("{id}-name"),
        kind: "public".into(),
        secret_hash: None,
        redirect_uris: vec!["com.example.app:/cb".into(), "http://127.0.0.1/cb".into()],
        scopes: "ai".into(),
        created_ms: 1,
        removed_ms: None,
        auth_method: None,
        tls_identity: None,
        dpop: None,
        display_name: None,
        privacy_url: None,
        session_note: None,
    }
}

fn family_rec(id: &str, user: &str, client: &str) -> FamilyRecord {
    FamilyRecord {
        id: id.into(),
        user_id: user.into(),
        client_id: client.into(),
        jkt: Some("jkt".into()),
        scopes: "ai".into(),
        created_ms: 10,
        last_used_ms: 10,
        generation: 0,
        previous_generation: None,
        rotated_ms: None,
        revoked_ms: None,
        revoke_reason: None,
        tier: None,
        attest_key: None,
        attest_counter: None,
    }
}

async fn users_are_unique_and_disabling_revokes_their_sessions(db: &TestDb) {
    let store = open(db).await;
    store
        .create_user(user_rec("u1", "alice"), ev("user.add"), 5)
        .await
        .unwrap();
    let dup = store
        .create_user(user_rec("u2", "alice"), ev("user.add"), 5)
        .await;
    assert!(matches!(dup, Err(StoreError::Duplicate(_))), "{dup:?}");
    store
        .create_client(client_rec("app"), ev("client.add"), 5)
        .await
        .unwrap();
    assert_eq!(
        store
            .client_by_id("app")
            .await
            .unwrap()
            .unwrap()
            .redirect_uris
            .len(),
        2
    );
    // A certificate-authenticated client (RFC 8705) keeps its method and identity.
    let mut mtls = client_rec("svc");
    mtls.kind = "confidential".into();
    mtls.secret_hash = None;
    mtls.auth_method = Some("tls_client_auth".into());
    mtls.tls_identity = Some(r#"{"san_dns":"svc.example.com"}"#.into());
    store
        .create_client(mtls.clone(), ev("client.add"), 5)
        .await
        .unwrap();
    let back = store.client_by_id("svc").await.unwrap().unwrap();
    assert_eq!(back.auth_method, mtls.auth_method);
    assert_eq!(back.tls_identity, mtls.tls_identity);
    assert_eq!(back.secret_hash, None);
    // What the login page shows for a client round-trips.
    let mut shown = client_rec("shown");
    shown.display_name = Some("Acme Chat".into());
    shown.privacy_url = Some("https://acme.example/privacy".into());
    shown.session_note = Some("You stay signed in for 30 days.".into());
    store
        .create_client(shown.clone(), ev("client.add"), 5)
        .await
        .unwrap();
    let back_shown = store.client_by_id("shown").await.unwrap().unwrap();
    assert_eq!(back_shown.display_name, shown.display_name);
    assert_eq!(back_shown.privacy_url, shown.privacy_url);
    assert_eq!(back_shown.session_note, shown.session_note);
    // A client's own DPoP policy: stored, changed as a security-relevant write (the
    // change epoch moves, so caches read again), and refused for an unknown client.
    assert_eq!(back.dpop, None);
    let epoch = store.change_epoch();
    store
        .set_client_dpop("app", Some("optional"), ev("client.dpop"), 5)
        .await
        .unwrap();
    assert!(
        store.change_epoch() > epoch,
        "a policy change bumps the epoch"
    );
    let app = store.client_by_id("app").await.unwrap().unwrap();
    assert_eq!(app.dpop.as_deref(), Some("optional"));
    store
        .set_client_dpop("app", None, ev("client.dpop"), 5)
        .await
        .unwrap();
    assert_eq!(store.client_by_id("app").await.unwrap().unwrap().dpop, None);
    let missing = store
        .set_client_dpop("nobody", Some("required"), ev("client.dpop"), 5)
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    for f in ["f1", "f2"] {
        store
            .insert_family(
                family_rec(f, "u1", "app"),
                f.as_bytes().to_vec(),
                ev("token.issue"),
                6,
            )
            .await
            .unwrap();
    }
    assert!(!store.family_revoked("f1").await.unwrap());
    assert_eq!(
        store
            .disable_user("u1", ev("user.disable"), 7)
            .await
            .unwrap(),
        2
    );
    assert!(store.family_revoked("f1").await.unwrap());
    assert!(
        store.family_revoked("unknown").await.unwrap(),
        "unknown families count as revoked"
    );
    assert!(
        store
            .list_families(Some("u1"), false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.list_families(Some("u1"), true).await.unwrap().len(),
        2
    );
    assert!(store.enable_user("u1", ev("user.enable"), 8).await.unwrap());
    assert_eq!(
        store.user_by_id("u1").await.unwrap().unwrap().disabled_ms,
        None
    );
    assert!(
        store.family_revoked("f1").await.unwrap(),
        "enabling revives no session"
    );
    assert!(
        !store.enable_user("u1", ev("user.enable"), 9).await.unwrap(),
        "already enabled"
    );
    assert!(matches!(
        store.enable_user("nobody", ev("user.enable"), 9).await,
        Err(keygate_store::StoreError::NotFound)
    ));
    assert_chain_intact(&store).await;
    store.close().await;
}

async fn totp_steps_are_accepted_once(db: &TestDb) {
    let store = open(db).await;
    store
        .create_user(user_rec("u1", "alice"), ev("user.add"), 5)
        .await
        .unwrap();
    store
        .set_user_totp("u1", vec![1, 2, 3], ev("user.mfa"), 6)
        .await
        .unwrap();
    assert!(store.consume_totp_step("u1", 100).await.unwrap());
    assert!(
        !store.consume_totp_step("u1", 100).await.unwrap(),
        "same code twice"
    );
    assert!(
        !store.consume_totp_step("u1", 99).await.unwrap(),
        "an older code after a newer one"
    );
    assert!(store.consume_totp_step("u1", 101).await.unwrap());
    store.close().await;
}

async fn a_code_redeems_once_and_a_replay_revokes_its_family(db: &TestDb) {
    let store = open(db).await;
    store
        .create_client(client_rec("app"), ev("client.add"), 5)
        .await
        .unwrap();
    store
        .create_user(user_rec("u1", "alice"), ev("user.add"), 5)
        .await
        .unwrap();
    let code = keygate_store::CodeRecord {
        hash: vec![7; 32],
        client_id: "app".into(),
        user_id: "u1".into(),
        redirect_uri: "com.example.app:/cb".into(),
        scopes: "ai".into(),
        challenge: "challenge".into(),
        dpop_jkt: None,
        expires_ms: 100_000,
        used_ms: None,
        family_id: None,
    };
    store
        .insert_code(code.clone(), ev("login"), 10)
        .await
        .unwrap();
    assert_eq!(
        store
            .code_by_hash(&[7; 32])
            .await
            .unwrap()
            .unwrap()
            .client_id,
        "app"
    );
    let first = store
        .redeem_code(
            &[7; 32],
            family_rec("f1", "u1", "app"),
            vec![1; 32],
            ev("token.issue"),
            11,
        )
        .await
        .unwrap();
    assert_eq!(first, Redemption::Redeemed);
    assert!(!store.family_revoked("f1").await.unwrap());
    let again = store
        .redeem_code(
            &[7; 32],
            family_rec("f2", "u1", "app"),
            vec![2; 32],
            ev("token.issue"),
            12,
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        Redemption::AlreadyUsed {
            revoked_family: Some("f1".into())
        }
    );
    assert!(store.family_revoked("f1").await.unwrap());
    assert!(
        store.family("f2").await.unwrap().is_none(),
        "no family for a replayed code"
    );
    assert_chain_intact(&store).await;
    store.close().await;
}

/// Client `app`, user `alice` (`u1`) and her session `f1` with its first refresh token.
async fn alice_signed_in(store: &SqlStore, first_token: Vec<u8>) {
    alice_signed_in_as(store, family_rec("f1", "u1", "app"), first_token).await;
}

/// Client `app`, user `alice` (`u1`) and the session `family`.
async fn alice_signed_in_as(store: &SqlStore, family: FamilyRecord, first_token: Vec<u8>) {
    store
        .create_client(client_rec("app"), ev("client.add"), 5)
        .await
        .unwrap();
    store
        .create_user(user_rec("u1", "alice"), ev("user.add"), 5)
        .await
        .unwrap();
    store
        .insert_family(family, first_token, ev("token.issue"), 6)
        .await
        .unwrap();
}

async fn parallel_rotations_leave_one_successor(db: &TestDb) {
    let store = Arc::new(open(db).await);
    alice_signed_in(&store, vec![0; 32]).await;
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .rotate_family(
                    RotationWrite {
                        family_id: "f1".into(),
                        expected_generation: 0,
                        new_generation: 1,
                        previous_generation: Some(0),
                        rotated_ms: Some(100),
                        now_ms: 100,
                        new_token_hash: vec![i + 1; 32],
                        attest_counter: None,
                    },
                    ev("token.refresh"),
                )
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one rotation commits");
    let f = store.family("f1").await.unwrap().unwrap();
    assert_eq!(f.generation, 1);
    let live: usize = {
        let mut n = 0;
        for i in 0..50u8 {
            if let Some((_, generation)) = store.refresh_token(&[i + 1; 32]).await.unwrap() {
                n += usize::from(generation == f.generation);
            }
        }
        n
    };
    assert_eq!(live, 1, "one live successor");
    assert_eq!(assert_chain_intact(&store).await, 5);
    store.close().await;
}

async fn dpop_replay_keys_are_seen_once_until_they_expire(db: &TestDb) {
    let store = open(db).await;
    assert!(store.dpop_seen(&[1; 32], 1000, 10).await.unwrap());
    assert!(
        !store.dpop_seen(&[1; 32], 1000, 20).await.unwrap(),
        "replay"
    );
    assert!(store.dpop_seen(&[2; 32], 1000, 20).await.unwrap());
    assert!(
        store.dpop_seen(&[1; 32], 3000, 1000).await.unwrap(),
        "expired entry reused"
    );
    assert_eq!(store.purge_dpop(1500).await.unwrap(), 1);
    store.close().await;
}

on_both_backends!(an_attested_session_keeps_its_key_and_its_counter_only_grows);

/// App Attest: the family keeps the tier and attested key it started with, and a
/// rotation carrying an assertion counter only happens if the counter grows.
async fn an_attested_session_keeps_its_key_and_its_counter_only_grows(db: &TestDb) {
    let store = open(db).await;
    let mut f = family_rec("f1", "u1", "app");
    f.tier = Some("attested".into());
    f.attest_key = Some(vec![4; 65]);
    f.attest_counter = Some(1);
    alice_signed_in_as(&store, f, vec![0; 32]).await;
    let read = store.family("f1").await.unwrap().unwrap();
    assert_eq!(read.tier.as_deref(), Some("attested"));
    assert_eq!(read.attest_key, Some(vec![4; 65]));
    assert_eq!(read.attest_counter, Some(1));

    let rotate = |generation: i64, counter: Option<i64>, token: u8| RotationWrite {
        expected_generation: generation,
        new_generation: generation + 1,
        previous_generation: Some(generation),
        attest_counter: counter,
        ..rotation("f1", vec![token; 32])
    };
    // The same counter again (a replayed assertion): nothing happens.
    assert!(
        !store
            .rotate_family(rotate(0, Some(1), 1), ev("token.refresh"))
            .await
            .unwrap()
    );
    assert!(
        store
            .rotate_family(rotate(0, Some(5), 2), ev("token.refresh"))
            .await
            .unwrap()
    );
    let read = store.family("f1").await.unwrap().unwrap();
    assert_eq!((read.generation, read.attest_counter), (1, Some(5)));
    // A lower counter loses too; a rotation without an assertion keeps the counter.
    assert!(
        !store
            .rotate_family(rotate(1, Some(3), 3), ev("token.refresh"))
            .await
            .unwrap()
    );
    assert!(
        store
            .rotate_family(rotate(1, None, 4), ev("token.refresh"))
            .await
            .unwrap()
    );
    let read = store.family("f1").await.unwrap().unwrap();
    assert_eq!((read.generation, read.attest_counter), (2, Some(5)));
    assert_eq!(read.tier.as_deref(), Some("attested"));
    store.close().await;
}

on_both_backends!(signing_keys_are_replaced_only_from_the_set_read);

fn key_rec(kid: &str, state: &str) -> keygate_store::SigningKeyRecord {
    keygate_store::SigningKeyRecord {
        kid: kid.into(),
        alg: "EdDSA".into(),
        sealed_private: vec![1; 40],
        state: state.into(),
        created_ms: 1,
        changed_ms: 1,
    }
}

/// Two replicas starting (or rotating) at once: the first writer wins, the second is
/// told so and writes nothing.
async fn signing_keys_are_replaced_only_from_the_set_read(db: &TestDb) {
    let store = open(db).await;
    assert!(store.signing_keys().await.unwrap().is_empty());
    assert!(
        store
            .save_signing_keys(vec![key_rec("a", "active")], &[], ev("keys.bootstrap"), 2)
            .await
            .unwrap()
    );
    // A second first set loses.
    assert!(
        !store
            .save_signing_keys(vec![key_rec("b", "active")], &[], ev("keys.bootstrap"), 2)
            .await
            .unwrap()
    );
    // A rotation from the stored set wins; one from a stale set loses.
    let rotated = vec![key_rec("a", "active"), key_rec("c", "next")];
    assert!(
        store
            .save_signing_keys(rotated, &["a".into()], ev("keys.rotate"), 3)
            .await
            .unwrap()
    );
    assert!(
        !store
            .save_signing_keys(
                vec![key_rec("a", "retired"), key_rec("d", "active")],
                &["a".into()],
                ev("keys.rotate"),
                3,
            )
            .await
            .unwrap()
    );
    let mut kids: Vec<String> = store
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    kids.sort();
    assert_eq!(kids, ["a", "c"]);
    assert_chain_intact(&store).await;
}

on_both_backends!(quotas_count_atomically_per_window);

async fn quotas_count_atomically_per_window(db: &TestDb) {
    let store = Arc::new(open(db).await);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .quota_consume("user:alice/openai", 0, 86_400, 5)
                .await
                .unwrap()
        }));
    }
    let mut counted = 0;
    for t in tasks {
        counted += usize::from(t.await.unwrap().is_some());
    }
    assert_eq!(counted, 5, "exactly the limit is counted under concurrency");
    assert_eq!(
        store
            .quota_consume("user:bob/openai", 0, 86_400, 5)
            .await
            .unwrap(),
        Some(4)
    );
    assert_eq!(
        store
            .quota_consume("user:alice/openai", 86_400, 172_800, 5)
            .await
            .unwrap(),
        Some(4),
        "a new window starts over"
    );
    assert_eq!(
        store.purge_quotas(86_401).await.unwrap(),
        2,
        "ended windows are purged"
    );
    store.close().await;
}

on_both_backends!(quota_counts_from_elsewhere_add_up_and_read_back);

async fn quota_counts_from_elsewhere_add_up_and_read_back(db: &TestDb) {
    use keygate_store::QuotaRow;
    let store = open(db).await;
    assert_eq!(store.quota_used("user:carol/maps", 0).await.unwrap(), 0);
    let row = |used| QuotaRow {
        key: "user:carol/maps".into(),
        start: 0,
        end: 86_400,
        used,
    };
    store.quota_add(vec![row(3), row(4)]).await.unwrap();
    store.quota_add(vec![row(-9)]).await.unwrap();
    assert_eq!(
        store.quota_used("user:carol/maps", 0).await.unwrap(),
        7,
        "added up; a negative count adds nothing"
    );
    // The limit check sees what was added.
    assert_eq!(
        store
            .quota_consume("user:carol/maps", 0, 86_400, 8)
            .await
            .unwrap(),
        Some(0)
    );
    assert_eq!(
        store
            .quota_consume("user:carol/maps", 0, 86_400, 8)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.quota_used("user:carol/maps", 86_400).await.unwrap(),
        0
    );
    store.close().await;
}

on_both_backends!(
    usage_aggregates_add_up,
    alerts_are_kept_until_acknowledged_once
);

async fn alerts_are_kept_until_acknowledged_once(db: &TestDb) {
    use keygate_store::{AlertRecord, AlertStore};
    let store = open(db).await;
    let alert = |id: &str, at: i64| AlertRecord {
        id: id.into(),
        incident: "spike/user:u1".into(),
        rule: "spike".into(),
        kind: "spike".into(),
        subject: "user:u1".into(),
        action: "throttle".into(),
        step: 0,
        evidence: r#"{"calls":400,"baseline_per_min":20.0}"#.into(),
        created_ms: at,
        acked_ms: None,
        acked_by: None,
    };
    let (_, head0) = store.audit_head().await.unwrap();
    store
        .insert_alert(alert("al_1", 10), ev("monitor.alert"), 10)
        .await
        .unwrap();
    store
        .insert_alert(alert("al_2", 20), ev("monitor.alert"), 20)
        .await
        .unwrap();
    assert_ne!(store.audit_head().await.unwrap().1, head0, "audited");
    let open = store.list_alerts(true, 10).await.unwrap();
    assert_eq!(
        open.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["al_2", "al_1"],
        "newest first"
    );
    assert_eq!(open[1], alert("al_1", 10), "every field round-trips");
    assert!(
        store
            .ack_alert("al_1", "admin:ops", ev("alert.ack"), 30)
            .await
            .unwrap()
    );
    assert!(
        !store
            .ack_alert("al_1", "admin:other", ev("alert.ack"), 40)
            .await
            .unwrap(),
        "a second acknowledgement changes nothing"
    );
    let acked = store.alert("al_1").await.unwrap().unwrap();
    assert_eq!(
        (acked.acked_ms, acked.acked_by.as_deref()),
        (Some(30), Some("admin:ops"))
    );
    assert_eq!(store.list_alerts(true, 10).await.unwrap().len(), 1);
    assert_eq!(store.list_alerts(false, 10).await.unwrap().len(), 2);
    assert!(matches!(
        store
            .ack_alert("al_9", "admin:ops", ev("alert.ack"), 50)
            .await,
        Err(keygate_store::StoreError::NotFound)
    ));
    assert!(
        store
            .insert_alert(alert("al_1", 60), ev("monitor.alert"), 60)
            .await
            .is_err(),
        "ids are unique"
    );
    assert_chain_intact(&store).await;
    store.close().await;
}

async fn usage_aggregates_add_up(db: &TestDb) {
    use keygate_store::UsageRow;
    let store = open(db).await;
    let row = |user: &str, calls: i64, max: i64| UsageRow {
        minute: 100,
        user_id: user.into(),
        route: "openai".into(),
        status_class: "2xx".into(),
        calls,
        latency_ms_sum: calls * 10,
        latency_ms_max: max,
    };
    store
        .record_usage(vec![row("u1", 3, 40), row("u2", 1, 5)])
        .await
        .unwrap();
    store.record_usage(vec![row("u1", 2, 25)]).await.unwrap();
    let all = store.usage(0, None, None, 100).await.unwrap();
    assert_eq!(all.len(), 2);
    let u1 = store
        .usage(0, Some("u1"), Some("openai"), 100)
        .await
        .unwrap();
    assert_eq!(
        (u1[0].calls, u1[0].latency_ms_sum, u1[0].latency_ms_max),
        (5, 50, 40)
    );
    assert!(store.usage(101, None, None, 100).await.unwrap().is_empty());
    store.close().await;
}

on_both_backends!(
    grouped_rotations_commit_together_and_fail_alone,
    the_change_epoch_moves_only_on_writes_a_cache_could_contradict,
);

fn rotation(family: &str, token: Vec<u8>) -> RotationWrite {
    RotationWrite {
        family_id: family.into(),
        expected_generation: 0,
        new_generation: 1,
        previous_generation: Some(0),
        rotated_ms: Some(100),
        now_ms: 100,
        new_token_hash: token,
        attest_counter: None,
    }
}

/// Rotations of 20 families at once share the group committer's transactions; two of
/// them collide on the new token's hash. The loser fails alone: its family is untouched,
/// everyone else's rotation is kept, and the chain holds one entry per kept rotation.
async fn grouped_rotations_commit_together_and_fail_alone(db: &TestDb) {
    let store = Arc::new(open(db).await);
    store
        .create_client(client_rec("app"), ev("client.add"), 5)
        .await
        .unwrap();
    for f in 0..20u8 {
        store
            .insert_family(
                family_rec(&format!("f{f}"), "u1", "app"),
                vec![200 + f; 32],
                ev("token.issue"),
                6,
            )
            .await
            .unwrap();
    }
    let before = store.audit_head().await.unwrap().0;
    let mut tasks = Vec::new();
    for f in 0..20u8 {
        let store = store.clone();
        // Families 3 and 4 both try to store the token hash [42; 32].
        let token = if f == 3 || f == 4 {
            vec![42; 32]
        } else {
            vec![f; 32]
        };
        tasks.push(tokio::spawn(async move {
            store
                .rotate_family(rotation(&format!("f{f}"), token), ev("token.refresh"))
                .await
        }));
    }
    let mut rotated = Vec::new();
    let mut failed = Vec::new();
    for (f, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(true) => rotated.push(f),
            Ok(false) => panic!("family f{f} was not contended but lost"),
            Err(_) => failed.push(f),
        }
    }
    assert_eq!(rotated.len(), 19, "all but one rotation is kept");
    assert_eq!(failed.len(), 1, "the colliding hash fails exactly once");
    let loser = failed[0];
    assert!(loser == 3 || loser == 4);
    let f = store.family(&format!("f{loser}")).await.unwrap().unwrap();
    assert_eq!(
        f.generation, 0,
        "the failed rotation left its family as it was"
    );
    for &f in &rotated {
        let fam = store.family(&format!("f{f}")).await.unwrap().unwrap();
        assert_eq!(fam.generation, 1);
    }
    let after = assert_chain_intact(&store).await;
    assert_eq!(after - before, 19, "one audit entry per kept rotation");
    store.close().await;
}

/// Caches key their entries to the change epoch, so it must move on revocations and
/// secret writes, and stay put on sign-ins, rotations and replay inserts (or every
/// sign-in would empty the proxy's caches).
async fn the_change_epoch_moves_only_on_writes_a_cache_could_contradict(db: &TestDb) {
    let store = open(db).await;
    let e0 = store.change_epoch();
    alice_signed_in(&store, vec![1; 32]).await;
    assert!(
        store
            .rotate_family(rotation("f1", vec![2; 32]), ev("token.refresh"))
            .await
            .unwrap()
    );
    assert!(store.dpop_seen(&[3; 32], 1000, 10).await.unwrap());
    store.append_audit(ev("login.success"), 7).await.unwrap();
    assert_eq!(
        store.change_epoch(),
        e0,
        "additive writes leave the epoch alone"
    );

    assert!(
        store
            .revoke_family("f1", "test", ev("session.revoke"), 8)
            .await
            .unwrap()
    );
    let e1 = store.change_epoch();
    assert!(e1 > e0, "a revocation moves the epoch");
    store
        .disable_user("u1", ev("user.disable"), 9)
        .await
        .unwrap();
    let e2 = store.change_epoch();
    assert!(e2 > e1, "disabling a user moves the epoch");
    store
        .write_version(
            NewVersion {
                name: "openai".into(),
                expected_current: 0,
                sealed: sealed(1),
                now_ms: 10,
                keep_versions: 5,
                kcv: KCV.to_vec(),
            },
            ev("secret.put"),
        )
        .await
        .unwrap();
    assert!(store.change_epoch() > e2, "a secret write moves the epoch");
    store.close().await;
}

on_both_backends!(budget_spending_adds_up_per_day_and_range);

async fn budget_spending_adds_up_per_day_and_range(db: &TestDb) {
    use keygate_store::{BudgetRow, BudgetSpent, BudgetStore};
    let store = Arc::new(open(db).await);
    let row = |user: &str, route: &str, day: i64, cost: i64| BudgetRow {
        user_id: user.into(),
        route: route.into(),
        day,
        cost,
    };
    let epoch = store.change_epoch();
    store
        .budget_add(vec![
            row("alice", "openai", 100, 30),
            row("alice", "openai", 101, 5),
            row("alice", "other", 101, 1000),
            row("bob", "openai", 101, 7),
            row("alice", "openai", 90, 9),
        ])
        .await
        .unwrap();
    // Concurrent batches from several replicas add, never overwrite.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .budget_add(vec![row("alice", "openai", 101, 2)])
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        store
            .budget_spent("alice", "openai", 95, 101)
            .await
            .unwrap(),
        BudgetSpent { day: 25, range: 55 },
        "day 90 is outside the range; other routes and users do not count"
    );
    assert_eq!(
        store
            .budget_spent("carol", "openai", 95, 101)
            .await
            .unwrap(),
        BudgetSpent::default()
    );
    assert_eq!(
        store.change_epoch(),
        epoch,
        "spending is no state a security cache holds"
    );
    assert_eq!(store.purge_budgets(100).await.unwrap(), 1);
    assert_eq!(
        store
            .budget_spent("alice", "openai", 0, 101)
            .await
            .unwrap()
            .range,
        55
    );
    store.close().await;
}

on_both_backends!(
    rotation_schedules_keep_their_history,
    dead_letters_are_kept_newest_first,
);

/// A schedule is audited when set and cleared; a replaced schedule keeps its rotation
/// history; a success clears the last error and the overdue mark.
async fn rotation_schedules_keep_their_history(db: &TestDb) {
    use keygate_store::{RotationDone, RotationStore, ScheduleWrite};
    let store = open(db).await;
    let write = |every: i64| ScheduleWrite {
        secret: "openai".into(),
        every_ms: every,
        overlap_ms: 500,
        hook: "rotate-openai".into(),
        next_due_ms: 1000 + every,
    };
    store
        .set_schedule(write(100), ev("secret.schedule"), 1000)
        .await
        .unwrap();
    let s = store.schedule("openai").await.unwrap().unwrap();
    assert_eq!((s.every_ms, s.next_due_ms, s.created_ms), (100, 1100, 1000));
    assert_eq!(s.last_rotated_ms, None);

    store
        .record_rotation_failure("openai", "hook exited with status 1", 1200)
        .await
        .unwrap();
    store.mark_overdue_notified("openai", 1300).await.unwrap();
    let s = store.schedule("openai").await.unwrap().unwrap();
    assert_eq!(s.last_error.as_deref(), Some("hook exited with status 1"));
    assert_eq!(
        (s.last_error_ms, s.overdue_notified_ms),
        (Some(1200), Some(1300))
    );

    store
        .record_rotation(
            "openai",
            RotationDone {
                rotated_ms: 1400,
                next_due_ms: 1500,
                previous_version: Some(1),
                overlap_ends_ms: Some(1900),
            },
        )
        .await
        .unwrap();
    // Replacing the schedule keeps the pending previous version.
    store
        .set_schedule(write(200), ev("secret.schedule"), 1450)
        .await
        .unwrap();
    let s = store.schedule("openai").await.unwrap().unwrap();
    assert_eq!(s.every_ms, 200);
    assert_eq!(
        s.created_ms, 1000,
        "a replaced schedule keeps its creation time"
    );
    assert_eq!(
        (s.last_rotated_ms, s.previous_version),
        (Some(1400), Some(1))
    );
    assert_eq!(s.overlap_ends_ms, Some(1900));
    assert_eq!((s.last_error, s.overdue_notified_ms), (None, None));

    store.clear_previous_version("openai").await.unwrap();
    let s = store.schedule("openai").await.unwrap().unwrap();
    assert_eq!((s.previous_version, s.overlap_ends_ms), (None, None));

    assert_eq!(store.schedules().await.unwrap().len(), 1);
    store
        .clear_schedule("openai", ev("secret.unschedule"), 2000)
        .await
        .unwrap();
    assert!(store.schedule("openai").await.unwrap().is_none());
    assert!(matches!(
        store
            .clear_schedule("openai", ev("secret.unschedule"), 2001)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.record_rotation_failure("openai", "x", 1).await,
        Err(StoreError::NotFound)
    ));
    let entries = store.audit_entries(0, 100).await.unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "secret.schedule").count(),
        2
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "secret.unschedule")
            .count(),
        1,
        "the refused second clear writes no entry"
    );
    assert_chain_intact(&store).await;
    store.close().await;
}

async fn dead_letters_are_kept_newest_first(db: &TestDb) {
    use keygate_store::{DeadLetter, RotationStore};
    let store = open(db).await;
    for (id, at) in [("d1", 10), ("d2", 30), ("d3", 20)] {
        store
            .add_dead_letter(DeadLetter {
                id: id.into(),
                webhook: "0 hooks.example.com".into(),
                event: "secret.rotated".into(),
                attempts: 3,
                last_error: "status 500".into(),
                failed_ms: at,
            })
            .await
            .unwrap();
    }
    let all = store.dead_letters(10).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["d2", "d3", "d1"]);
    assert_eq!(all[0].attempts, 3);
    assert_eq!(store.dead_letters(1).await.unwrap().len(), 1);
    store.close().await;
}

on_both_backends!(machine_tokens_end_with_their_policy_machine_or_lifetime);

async fn machine_tokens_end_with_their_policy_machine_or_lifetime(db: &TestDb) {
    use keygate_store::{MachineRecord, MachineStore, MachineTokenRecord, PolicyRecord};
    let store = open(db).await;
    let ev = |a: &str| AuditEvent::new("admin:test", a, Outcome::Success);
    let policy = |name: &str, secrets: &str| PolicyRecord {
        name: name.into(),
        secrets: secrets.into(),
        token_ttl_secs: 600,
        any_version: false,
        created_ms: 1,
        updated_ms: 1,
    };
    assert!(
        store
            .put_policy(policy("p", r#"["a"]"#), ev("policy.put"), 1)
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_policy(policy("p", r#"["a","b.*"]"#), ev("policy.put"), 2)
            .await
            .unwrap(),
        "a second put replaces"
    );
    let p = store.policy("p").await.unwrap().unwrap();
    assert_eq!((p.secrets.as_str(), p.created_ms), (r#"["a","b.*"]"#, 1));
    store
        .put_policy(policy("q", "[]"), ev("policy.put"), 3)
        .await
        .unwrap();
    let machine = MachineRecord {
        id: "m_1".into(),
        name: "runner".into(),
        policy: "q".into(),
        secret_hash: vec![1; 32],
        previous_hash: None,
        previous_until_ms: None,
        created_ms: 1,
        rotated_ms: None,
    };
    store
        .insert_machine(machine.clone(), ev("machine.add"), 3)
        .await
        .unwrap();
    assert!(matches!(
        store.insert_machine(machine, ev("machine.add"), 3).await,
        Err(StoreError::Duplicate(_))
    ));
    store
        .rotate_machine_secret("runner", vec![2; 32], 5000, ev("machine.rotate"), 4)
        .await
        .unwrap();
    let m = store.machine_by_id("m_1").await.unwrap().unwrap();
    assert_eq!(m.secret_hash, vec![2; 32]);
    assert_eq!(m.previous_hash, Some(vec![1; 32]));
    assert_eq!((m.previous_until_ms, m.rotated_ms), (Some(5000), Some(4)));

    let token = |hash: u8, identity: &str, policy: &str, expires_ms: i64| MachineTokenRecord {
        hash: vec![hash; 32],
        identity: identity.into(),
        policy: policy.into(),
        claims: r#"{"repository":"acme/app"}"#.into(),
        created_ms: 10,
        expires_ms,
    };
    for t in [
        token(1, "ci:gh:x", "p", 1000),
        token(2, "machine:runner", "q", 1000),
        token(3, "ci:gh:y", "q", 100),
    ] {
        store
            .insert_machine_token(t, ev("ci.login"), 10)
            .await
            .unwrap();
    }
    assert!(store.machine_token(&[1; 32], 50).await.unwrap().is_some());
    assert!(
        store.machine_token(&[3; 32], 100).await.unwrap().is_none(),
        "expired"
    );
    assert_eq!(store.purge_machine_tokens(100).await.unwrap(), 1);
    // Deleting the policy ends its tokens; deleting the machine ends its own.
    store
        .delete_policy("p", ev("policy.delete"), 20)
        .await
        .unwrap();
    assert!(store.machine_token(&[1; 32], 50).await.unwrap().is_none());
    assert!(matches!(
        store.delete_policy("p", ev("policy.delete"), 20).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.machine_token(&[2; 32], 50).await.unwrap().is_some());
    store
        .delete_machine("runner", ev("machine.delete"), 21)
        .await
        .unwrap();
    assert!(store.machine_token(&[2; 32], 50).await.unwrap().is_none());
    assert!(store.machine_by_name("runner").await.unwrap().is_none());
    assert_eq!(store.list_policies().await.unwrap().len(), 1);
    assert_chain_intact(&store).await;
    store.close().await;
}

on_both_backends!(console_admins_and_sessions_round_trip);

async fn console_admins_and_sessions_round_trip(db: &TestDb) {
    use keygate_store::{ConsoleAdminRecord, ConsoleSessionRecord, ConsoleStore};
    let store = open(db).await;
    let admin = ConsoleAdminRecord {
        id: "ca_1".into(),
        name: "ops".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        totp_sealed: vec![9; 40],
        totp_last_step: None,
        role: "read-only".into(),
        created_ms: 5,
        disabled_ms: None,
    };
    store
        .create_console_admin(admin.clone(), ev("console_admin.add"), 5)
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_console_admin(
                ConsoleAdminRecord {
                    id: "ca_2".into(),
                    ..admin.clone()
                },
                ev("console_admin.add"),
                6
            )
            .await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(
        store.console_admin_by_name("ops").await.unwrap(),
        Some(admin.clone())
    );
    assert_eq!(
        store.console_admin_by_id("ca_1").await.unwrap(),
        Some(admin)
    );
    assert_eq!(store.list_console_admins().await.unwrap().len(), 1);

    // Each TOTP step once, and never an older one after a newer one.
    assert!(store.consume_console_totp_step("ca_1", 100).await.unwrap());
    assert!(!store.consume_console_totp_step("ca_1", 100).await.unwrap());
    assert!(!store.consume_console_totp_step("ca_1", 99).await.unwrap());
    assert!(!store.consume_console_totp_step("ca_x", 200).await.unwrap());

    let session = |hash: u8, expires: i64| ConsoleSessionRecord {
        id_hash: vec![hash; 32],
        admin_id: "ca_1".into(),
        created_ms: 10,
        last_seen_ms: 10,
        expires_ms: expires,
    };
    store
        .create_console_session(session(1, 20), ev("console.login"), 10)
        .await
        .unwrap();
    // The idle clock only moves forward.
    store.touch_console_session(&[1; 32], 15).await.unwrap();
    store.touch_console_session(&[1; 32], 12).await.unwrap();
    let got = store.console_session(&[1; 32]).await.unwrap().unwrap();
    assert_eq!((got.last_seen_ms, got.expires_ms), (15, 20));
    // A new sign-in sweeps sessions past their absolute end.
    store
        .create_console_session(session(2, 100), ev("console.login"), 25)
        .await
        .unwrap();
    assert!(store.console_session(&[1; 32]).await.unwrap().is_none());
    store
        .end_console_session(&[2; 32], Some(ev("console.logout")), 30)
        .await
        .unwrap();
    assert!(store.console_session(&[2; 32]).await.unwrap().is_none());
    // Ending one that is gone is not an error.
    store.end_console_session(&[2; 32], None, 31).await.unwrap();
    // Disabling ends the account's sessions in the same write.
    store
        .create_console_session(session(3, 500), ev("console.login"), 40)
        .await
        .unwrap();
    store
        .disable_console_admin("ops", ev("console_admin.disable"), 41)
        .await
        .unwrap();
    assert!(store.console_session(&[3; 32]).await.unwrap().is_none());
    let ops = store.console_admin_by_name("ops").await.unwrap().unwrap();
    assert_eq!(ops.disabled_ms, Some(41));
    store
        .disable_console_admin("ops", ev("console_admin.disable"), 42)
        .await
        .unwrap();
    assert_eq!(
        store
            .console_admin_by_name("ops")
            .await
            .unwrap()
            .unwrap()
            .disabled_ms,
        Some(41),
        "the first time stands"
    );
    assert!(matches!(
        store
            .disable_console_admin("nobody", ev("console_admin.disable"), 43)
            .await,
        Err(StoreError::NotFound)
    ));
    assert_chain_intact(&store).await;
    store.close().await;
}
