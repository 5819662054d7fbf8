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

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = keygate_store::testing::TestDb::sqlite().unwrap();
                super::$name(&db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = keygate_store::testing::TestDb::postgres(stringify!($name)).await {
                    super::$name(&db).await;
                }
            }
        }
    )*};
}

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
