//! The vault on a real store: SQLite always, PostgreSQL when `KEYGATE_TEST_POSTGRES_URL`
//! is set. Tampering is done with raw SQL, as an attacker with database access would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use keygate_store::testing::TestDb;
use keygate_store::{AdminCredential, SqlStore, Store};
use keygate_vault::{
    Kek, MasterKey, MasterKeyError, MasterKeyProvider, SecretName, SoftKek, Vault, VaultError,
    VaultLimits,
};
use secrecy::{ExposeSecret, SecretString};
use sqlx::Row;

use keygate_store::on_both_backends;

on_both_backends!(
    put_get_and_check_and_set,
    tampered_ciphertext_is_an_error_never_plaintext,
    swapped_rows_are_detected,
    wrong_or_missing_master_key_seals_the_vault,
    rollback_and_destroy,
    master_key_rotation_rewraps_every_data_key,
    limits_and_deletion,
    fingerprints_are_keyed_hmacs_of_current_values,
);

struct Fixed([u8; 32]);

impl MasterKeyProvider for Fixed {
    fn describe(&self) -> String {
        "test key".into()
    }
    fn open(&self) -> Result<Arc<dyn Kek>, MasterKeyError> {
        Ok(Arc::new(soft(self.0)))
    }
}

fn soft(key: [u8; 32]) -> SoftKek {
    SoftKek::new(&MasterKey::from_bytes(key), "test key")
}

const KEY: [u8; 32] = [0x11; 32];

async fn setup(db: &TestDb) -> (Arc<dyn Store>, Vault) {
    let store: Arc<dyn Store> = Arc::new(SqlStore::connect(db.url()).await.unwrap());
    Vault::initialize(
        store.as_ref(),
        &soft(KEY),
        AdminCredential {
            id: "root".into(),
            token_hash: vec![0; 32],
            created_ms: 0,
            label: "test".into(),
        },
    )
    .await
    .unwrap();
    let vault = Vault::open(store.clone(), Some(&Fixed(KEY)), VaultLimits::default())
        .await
        .unwrap();
    assert!(vault.sealed().is_none());
    (store, vault)
}

fn n(s: &str) -> SecretName {
    SecretName::parse(s).unwrap()
}

fn v(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

async fn raw(db: &TestDb) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(db.url()).await.unwrap()
}

async fn put_get_and_check_and_set(db: &TestDb) {
    let (_s, vault) = setup(db).await;
    let name = n("openai");
    assert_eq!(
        vault.put(&name, v("sk-one"), Some(0), "t").await.unwrap(),
        1
    );
    assert_eq!(vault.put(&name, v("sk-two"), None, "t").await.unwrap(), 2);
    let (ver, val) = vault.get(&name, None, "t").await.unwrap();
    assert_eq!((ver, val.expose_secret()), (2, "sk-two"));
    let (_, old) = vault.get(&name, Some(1), "t").await.unwrap();
    assert_eq!(old.expose_secret(), "sk-one");
    let stale = vault.put(&name, v("sk-three"), Some(1), "t").await;
    assert!(
        matches!(stale, Err(VaultError::Conflict { current: 2 })),
        "{stale:?}"
    );
    let not_new = vault.put(&name, v("sk-three"), Some(0), "t").await;
    assert!(matches!(not_new, Err(VaultError::Conflict { current: 2 })));
    assert_eq!(
        vault.put(&name, v("sk-three"), Some(2), "t").await.unwrap(),
        3
    );
    assert!(matches!(
        vault.get(&n("nope"), None, "t").await,
        Err(VaultError::NotFound)
    ));
    assert!(matches!(
        vault.get(&name, Some(9), "t").await,
        Err(VaultError::NoSuchVersion(9))
    ));
}

async fn tampered_ciphertext_is_an_error_never_plaintext(db: &TestDb) {
    let (_s, vault) = setup(db).await;
    let name = n("stripe");
    vault
        .put(&name, v("sk_live_canary_value"), None, "t")
        .await
        .unwrap();
    let pool = raw(db).await;
    for column in ["ciphertext", "wrapped_key"] {
        let row = sqlx::query(&format!(
            "SELECT {column} FROM secret_versions WHERE name = 'stripe' AND version = 1"
        ))
        .fetch_one(&pool)
        .await
        .unwrap();
        let original: Vec<u8> = row.try_get(0).unwrap();
        let mut bad = original.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x80;
        sqlx::query(&format!(
            "UPDATE secret_versions SET {column} = $1 WHERE name = 'stripe' AND version = 1"
        ))
        .bind(bad)
        .execute(&pool)
        .await
        .unwrap();
        let r = vault.get(&name, None, "t").await;
        assert!(matches!(r, Err(VaultError::Tampered(_))), "{column}: {r:?}");
        sqlx::query(&format!(
            "UPDATE secret_versions SET {column} = $1 WHERE name = 'stripe' AND version = 1"
        ))
        .bind(original)
        .execute(&pool)
        .await
        .unwrap();
    }
    let (_, ok) = vault.get(&name, None, "t").await.unwrap();
    assert_eq!(ok.expose_secret(), "sk_live_canary_value");
    pool.close().await;
}

async fn swap(pool: &sqlx::AnyPool, a: (&str, i64), b: (&str, i64)) {
    let read = |name: &str, version: i64| {
        let (name, pool) = (name.to_owned(), pool.clone());
        async move {
            let r = sqlx::query(
                "SELECT wrapped_key, ciphertext FROM secret_versions WHERE name = $1 AND version = $2",
            )
            .bind(name)
            .bind(version)
            .fetch_one(&pool)
            .await
            .unwrap();
            (
                r.try_get::<Vec<u8>, _>(0).unwrap(),
                r.try_get::<Vec<u8>, _>(1).unwrap(),
            )
        }
    };
    let ra = read(a.0, a.1).await;
    let rb = read(b.0, b.1).await;
    for ((name, version), (wk, ct)) in [(a, rb), (b, ra)] {
        sqlx::query(
            "UPDATE secret_versions SET wrapped_key = $1, ciphertext = $2 WHERE name = $3 AND version = $4",
        )
        .bind(wk)
        .bind(ct)
        .bind(name)
        .bind(version)
        .execute(pool)
        .await
        .unwrap();
    }
}

async fn swapped_rows_are_detected(db: &TestDb) {
    let (_s, vault) = setup(db).await;
    vault
        .put(&n("a"), v("value-of-a"), None, "t")
        .await
        .unwrap();
    vault
        .put(&n("b"), v("value-of-b"), None, "t")
        .await
        .unwrap();
    vault
        .put(&n("a"), v("value-of-a-2"), None, "t")
        .await
        .unwrap();
    let pool = raw(db).await;
    // Across secrets.
    swap(&pool, ("a", 1), ("b", 1)).await;
    for name in ["a", "b"] {
        let r = vault.get(&n(name), Some(1), "t").await;
        assert!(matches!(r, Err(VaultError::Tampered(_))), "{name}: {r:?}");
    }
    swap(&pool, ("a", 1), ("b", 1)).await;
    // Across versions of one secret (a rollback attack).
    swap(&pool, ("a", 1), ("a", 2)).await;
    let r = vault.get(&n("a"), None, "t").await;
    assert!(matches!(r, Err(VaultError::Tampered(_))), "{r:?}");
    pool.close().await;
}

async fn wrong_or_missing_master_key_seals_the_vault(db: &TestDb) {
    let (store, vault) = setup(db).await;
    vault.put(&n("k"), v("value"), None, "t").await.unwrap();
    let wrong = Vault::open(
        store.clone(),
        Some(&Fixed([0x22; 32])),
        VaultLimits::default(),
    )
    .await
    .unwrap();
    let reason = wrong.sealed().unwrap();
    assert!(reason.contains("does not match"), "{reason}");
    let missing = Vault::open(store.clone(), None, VaultLimits::default())
        .await
        .unwrap();
    assert!(missing.sealed().is_some());
    for sealed in [&wrong, &missing] {
        assert!(sealed.keyring().is_none());
        assert!(matches!(
            sealed.get(&n("k"), None, "t").await,
            Err(VaultError::Sealed(_))
        ));
        assert!(matches!(
            sealed.put(&n("k"), v("x"), None, "t").await,
            Err(VaultError::Sealed(_))
        ));
        assert!(matches!(sealed.list().await, Err(VaultError::Sealed(_))));
        assert!(matches!(
            sealed.delete(&n("k"), "t").await,
            Err(VaultError::Sealed(_))
        ));
        assert!(matches!(
            sealed.destroy(&n("k"), 1, "t").await,
            Err(VaultError::Sealed(_))
        ));
        assert!(matches!(
            sealed.rollback(&n("k"), 1, "t").await,
            Err(VaultError::Sealed(_))
        ));
    }
    // Nothing changed behind the sealed vaults.
    assert_eq!(vault.get(&n("k"), None, "t").await.unwrap().0, 1);
}

async fn rollback_and_destroy(db: &TestDb) {
    let (_s, vault) = setup(db).await;
    let name = n("maps");
    vault.put(&name, v("first"), None, "t").await.unwrap();
    vault.put(&name, v("second"), None, "t").await.unwrap();
    assert_eq!(vault.rollback(&name, 1, "t").await.unwrap(), 3);
    let (ver, val) = vault.get(&name, None, "t").await.unwrap();
    assert_eq!((ver, val.expose_secret()), (3, "first"));
    vault.destroy(&name, 1, "t").await.unwrap();
    assert!(matches!(
        vault.get(&name, Some(1), "t").await,
        Err(VaultError::Destroyed(1))
    ));
    assert!(matches!(
        vault.rollback(&name, 1, "t").await,
        Err(VaultError::Destroyed(1))
    ));
    assert!(matches!(
        vault.destroy(&name, 8, "t").await,
        Err(VaultError::NoSuchVersion(8))
    ));
    let pool = raw(db).await;
    let row = sqlx::query(
        "SELECT COUNT(*) FROM secret_versions WHERE name = 'maps' AND version = 1 \
         AND wrapped_key IS NULL AND ciphertext IS NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        row.try_get::<i64, _>(0).unwrap(),
        1,
        "data key and ciphertext erased"
    );
    pool.close().await;
    let (_, history) = vault.history(&name).await.unwrap();
    assert_eq!(history.len(), 3);
    assert!(history[0].destroyed_ms.is_some());
}

async fn master_key_rotation_rewraps_every_data_key(db: &TestDb) {
    let (store, vault) = setup(db).await;
    for (name, value) in [("a", "alpha"), ("b", "beta"), ("a", "alpha-2")] {
        vault.put(&n(name), v(value), None, "t").await.unwrap();
    }
    let new_key = [0x33; 32];
    let count = Vault::rekey(store.as_ref(), &soft(KEY), &soft(new_key), "t")
        .await
        .unwrap();
    assert_eq!(count, 3);
    // The process still holding the old key may not write with it.
    let stale = vault.put(&n("a"), v("alpha-3"), None, "t").await;
    assert!(matches!(stale, Err(VaultError::KeyRotated)), "{stale:?}");
    let old = Vault::open(store.clone(), Some(&Fixed(KEY)), VaultLimits::default())
        .await
        .unwrap();
    assert!(
        old.sealed().is_some(),
        "the old key no longer opens the vault"
    );
    let fresh = Vault::open(store.clone(), Some(&Fixed(new_key)), VaultLimits::default())
        .await
        .unwrap();
    assert!(fresh.sealed().is_none());
    assert_eq!(
        fresh
            .get(&n("a"), Some(1), "t")
            .await
            .unwrap()
            .1
            .expose_secret(),
        "alpha"
    );
    assert_eq!(
        fresh
            .get(&n("a"), None, "t")
            .await
            .unwrap()
            .1
            .expose_secret(),
        "alpha-2"
    );
    assert_eq!(
        fresh
            .get(&n("b"), None, "t")
            .await
            .unwrap()
            .1
            .expose_secret(),
        "beta"
    );
    // The audit keys survive rotation (they derive from the system key).
    assert_eq!(
        fresh.keyring().unwrap().audit.reference("t", b"x"),
        vault.keyring().unwrap().audit.reference("t", b"x")
    );
    // Rotating with the wrong current key is refused.
    let wrong = Vault::rekey(store.as_ref(), &soft(KEY), &soft([0x44; 32]), "t").await;
    assert!(matches!(wrong, Err(VaultError::Sealed(_))), "{wrong:?}");
}

async fn limits_and_deletion(db: &TestDb) {
    let store: Arc<dyn Store> = Arc::new(SqlStore::connect(db.url()).await.unwrap());
    Vault::initialize(
        store.as_ref(),
        &soft(KEY),
        AdminCredential {
            id: "root".into(),
            token_hash: vec![0; 32],
            created_ms: 0,
            label: "test".into(),
        },
    )
    .await
    .unwrap();
    let limits = VaultLimits {
        max_value_bytes: 16,
        max_versions: 2,
    };
    let vault = Vault::open(store, Some(&Fixed(KEY)), limits).await.unwrap();
    let name = n("k");
    assert!(matches!(
        vault.put(&name, v(&"x".repeat(17)), None, "t").await,
        Err(VaultError::TooLarge {
            size: 17,
            limit: 16
        })
    ));
    assert!(matches!(
        vault.put(&name, v(""), None, "t").await,
        Err(VaultError::Empty)
    ));
    for i in 0..3 {
        vault
            .put(&name, v(&format!("value-{i}")), None, "t")
            .await
            .unwrap();
    }
    assert!(matches!(
        vault.get(&name, Some(1), "t").await,
        Err(VaultError::Destroyed(1))
    ));
    assert_eq!(
        vault
            .get(&name, Some(2), "t")
            .await
            .unwrap()
            .1
            .expose_secret(),
        "value-1"
    );
    vault.delete(&name, "t").await.unwrap();
    assert!(matches!(
        vault.get(&name, None, "t").await,
        Err(VaultError::Deleted)
    ));
    vault.undelete(&name, "t").await.unwrap();
    assert_eq!(vault.get(&name, None, "t").await.unwrap().0, 3);
    assert!(matches!(
        vault.set_max_versions(&name, Some(0), "t").await,
        Err(VaultError::Invalid(_))
    ));
}

async fn fingerprints_are_keyed_hmacs_of_current_values(db: &TestDb) {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let (_s, vault) = setup(db).await;
    vault
        .put(&n("a"), v("old-value-of-a"), None, "t")
        .await
        .unwrap();
    vault
        .put(&n("a"), v("current-value-of-a"), None, "t")
        .await
        .unwrap();
    vault
        .put(&n("gone"), v("deleted-value"), None, "t")
        .await
        .unwrap();
    vault.delete(&n("gone"), "t").await.unwrap();
    let file = vault.fingerprints("t").await.unwrap();
    assert_eq!(file.format, "keygate-fingerprints/v1");
    assert_eq!(file.secrets.len(), 1, "deleted secrets are not exported");
    let fp = &file.secrets[0];
    assert_eq!((fp.name.as_str(), fp.version, fp.length), ("a", 2, 18));
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&file.key)
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(b"current-value-of-a");
    assert_eq!(fp.fingerprint, hex::encode(mac.finalize().into_bytes()));
    let text = serde_json::to_string(&file).unwrap();
    assert!(!text.contains("current-value-of-a"));
}

/// Random hex of `len` characters, without a dependency: each block is a freshly keyed
/// SipHash.
fn random_hex(len: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < len {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(out.len());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(len);
    out
}

/// Issue 19: after `secret destroy`, the version's wrapped data key and ciphertext stayed
/// in the SQLite file's free space and in the WAL, where the master key still opened them.
/// Covers a value in its row, one spilling to overflow pages, and a version pruned by
/// `max_versions`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroyed_version_is_not_left_in_the_sqlite_files() {
    let db = TestDb::sqlite().unwrap();
    let (store, vault) = setup(&db).await;
    let values = [
        ("small", format!("sk-canary-{}", random_hex(40))),
        ("large", random_hex(20_000)),
        ("pruned", format!("sk-canary-{}", random_hex(40))),
    ];
    let mut erased = Vec::new();
    for (name, value) in &values {
        vault.put(&n(name), v(value), None, "t").await.unwrap();
        let pool = raw(&db).await;
        let row = sqlx::query(
            "SELECT wrapped_key, ciphertext FROM secret_versions WHERE name = $1 AND version = 1",
        )
        .bind(*name)
        .fetch_one(&pool)
        .await
        .unwrap();
        erased.push((
            *name,
            "wrapped data key",
            row.try_get::<Vec<u8>, _>(0).unwrap(),
        ));
        erased.push((*name, "ciphertext", row.try_get::<Vec<u8>, _>(1).unwrap()));
        erased.push((*name, "plaintext", value.as_bytes().to_vec()));
        pool.close().await;
    }
    for name in ["small", "large"] {
        vault.put(&n(name), v("next"), None, "t").await.unwrap();
        vault.destroy(&n(name), 1, "t").await.unwrap();
    }
    vault
        .set_max_versions(&n("pruned"), Some(1), "t")
        .await
        .unwrap();
    vault.put(&n("pruned"), v("next"), None, "t").await.unwrap();
    let (_, history) = vault.history(&n("pruned")).await.unwrap();
    assert!(history[0].destroyed_ms.is_some(), "version 1 was pruned");

    let path = db.url().strip_prefix("sqlite://").unwrap().to_owned();
    let assert_gone = |when: &str| {
        for suffix in ["", "-wal", "-shm"] {
            let Ok(bytes) = std::fs::read(format!("{path}{suffix}")) else {
                continue;
            };
            for (name, what, value) in &erased {
                // A prefix also finds a copy that was only partly overwritten.
                let needle = &value[..value.len().min(32)];
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{when}: the {what} of destroyed version 1 of {name} is still in keygate.db{suffix}"
                );
            }
        }
    };
    assert_gone("store open");
    for (name, _) in &values {
        let (ver, val) = vault.get(&n(name), None, "t").await.unwrap();
        assert_eq!((ver, val.expose_secret()), (2, "next"));
    }
    store.close().await;
    assert_gone("store closed");
}

/// A key that can be made to fail, as a removed HSM does: the vault reports itself
/// sealed while it fails, writes nothing, and unseals when `recheck` finds it back.
#[tokio::test]
async fn a_key_that_fails_at_run_time_seals_until_it_answers_again() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use zeroize::Zeroizing;

    struct Flaky {
        inner: SoftKek,
        down: AtomicBool,
    }
    impl Flaky {
        fn gate(&self) -> Result<(), keygate_vault::KekError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(keygate_vault::KekError::Unavailable("token removed".into()));
            }
            Ok(())
        }
    }
    impl Kek for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn check_value(&self) -> Result<Vec<u8>, keygate_vault::KekError> {
            self.gate()?;
            self.inner.check_value()
        }
        fn wrap(&self, key: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>, keygate_vault::KekError> {
            self.gate()?;
            self.inner.wrap(key, aad)
        }
        fn unwrap(
            &self,
            wrapped: &[u8],
            aad: &[u8],
        ) -> Result<Zeroizing<[u8; 32]>, keygate_vault::KekError> {
            self.gate()?;
            self.inner.unwrap(wrapped, aad)
        }
    }
    struct Provider(Arc<Flaky>);
    impl MasterKeyProvider for Provider {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn open(&self) -> Result<Arc<dyn Kek>, MasterKeyError> {
            Ok(self.0.clone())
        }
    }

    let db = TestDb::sqlite().unwrap();
    let (store, _) = setup(&db).await;
    let flaky = Arc::new(Flaky {
        inner: soft(KEY),
        down: AtomicBool::new(false),
    });
    let vault = Vault::open(
        store.clone(),
        Some(&Provider(flaky.clone())),
        VaultLimits::default(),
    )
    .await
    .unwrap();
    vault.put(&n("k"), v("one"), None, "t").await.unwrap();
    assert_eq!(vault.recheck(), None);

    flaky.down.store(true, Ordering::SeqCst);
    let put = vault.put(&n("k"), v("two"), None, "t").await;
    assert!(
        matches!(put, Err(VaultError::Sealed(ref r)) if r.contains("token removed")),
        "{put:?}"
    );
    assert!(vault.sealed().unwrap().contains("token removed"));
    assert!(matches!(
        vault.get(&n("k"), None, "t").await,
        Err(VaultError::Sealed(_))
    ));
    assert!(vault.recheck().is_some(), "still down");
    let (meta, _) = vault.history(&n("k")).await.unwrap();
    assert_eq!(meta.current_version, 1, "nothing was written while down");

    flaky.down.store(false, Ordering::SeqCst);
    assert_eq!(vault.recheck(), None, "back: unsealed without a restart");
    assert_eq!(
        vault
            .get(&n("k"), None, "t")
            .await
            .unwrap()
            .1
            .expose_secret(),
        "one"
    );
}
