//! The vault with its master key in a PKCS#11 token: SoftHSM2, set up with tokens of these
//! tests' own by `tests/hsm/softhsm.sh` (which `.ci/run` runs first). Without it the tests
//! say they did not run; with `KEYGATE_TEST_PKCS11_REQUIRED=1` (set by `.ci/run`) they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use keygate_store::{AdminCredential, SqlStore, Store};
use keygate_testkit::SoftHsm;
use keygate_vault::{
    Kek, MasterKey, MasterKeyProvider, Pkcs11Config, Pkcs11KeyProvider, SecretName, SoftKek,
    TokenSelector, Vault, VaultError, VaultLimits,
};
use secrecy::{ExposeSecret, SecretString};

/// The SoftHSM2 set-up, or `None` (with a line saying so) when the script has not run.
fn hsm(test: &str) -> Option<Hsm> {
    SoftHsm::from_env(test).map(Hsm)
}

struct Hsm(SoftHsm);

impl Hsm {
    fn config(&self, token: &str, key_label: &str) -> Pkcs11Config {
        Pkcs11Config {
            module: self.0.module.clone(),
            token: TokenSelector::Label(token.into()),
            key_label: key_label.into(),
            pin_env: "KEYGATE_TEST_PKCS11_PIN".into(),
        }
    }

    fn provider(&self, token: &str, key_label: &str) -> Pkcs11KeyProvider {
        Pkcs11KeyProvider::new(self.config(token, key_label))
    }

    /// A session of the test's own on `token`, logged in, for setting up keys by hand.
    fn session(&self, token: &str) -> Session {
        let ctx = Pkcs11::new(&self.0.module).unwrap();
        // The vault's provider may already have initialised this module in-process.
        let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .map(|i| i.label().trim_end() == token)
                    .unwrap_or(false)
            })
            .unwrap();
        let session = ctx.open_rw_session(slot).unwrap();
        let pin = AuthPin::from(self.0.pin.clone());
        match session.login(UserType::User, Some(&pin)) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(e) => panic!("login: {e:?}"),
        }
        session
    }
}

fn admin() -> AdminCredential {
    AdminCredential {
        id: "root".into(),
        token_hash: vec![0; 32],
        created_ms: 0,
        label: "test".into(),
    }
}

fn n(s: &str) -> SecretName {
    SecretName::parse(s).unwrap()
}

async fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let url = format!("sqlite://{}/vault.db", dir.path().display());
    Arc::new(SqlStore::connect(&url).await.unwrap())
}

/// A SQLite store in `dir` initialised with the key labelled `master` in `token`
/// (generated if missing), and the vault opened on it with one secret `k` put.
async fn vault_on(
    hsm: &Hsm,
    token: &str,
    dir: &tempfile::TempDir,
) -> (Pkcs11KeyProvider, Arc<dyn Store>, Vault) {
    let provider = hsm.provider(token, "master");
    provider.ensure_key().unwrap();
    let store = sqlite(dir).await;
    Vault::initialize(store.as_ref(), provider.open().unwrap().as_ref(), admin())
        .await
        .unwrap();
    let vault = Vault::open(store.clone(), Some(&provider), VaultLimits::default())
        .await
        .unwrap();
    vault
        .put(&n("k"), SecretString::from("value"), None, "t")
        .await
        .unwrap();
    (provider, store, vault)
}

async fn value(vault: &Vault, name: &str) -> String {
    vault
        .get(&n(name), None, "t")
        .await
        .unwrap()
        .1
        .expose_secret()
        .to_string()
}

#[tokio::test]
async fn secrets_sealed_by_the_token_survive_a_restart() {
    let Some(hsm) = hsm("secrets_sealed_by_the_token_survive_a_restart") else {
        return;
    };
    let provider = hsm.provider("kg-vault", "master");
    assert!(provider.ensure_key().unwrap(), "the key is generated once");
    assert!(!provider.ensure_key().unwrap(), "and found the second time");
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    let kek = provider.open().unwrap();
    Vault::initialize(store.as_ref(), kek.as_ref(), admin())
        .await
        .unwrap();
    let vault = Vault::open(store.clone(), Some(&provider), VaultLimits::default())
        .await
        .unwrap();
    assert_eq!(vault.sealed(), None);
    for (name, v) in [
        ("openai", "sk-one"),
        ("maps", "AIza-two"),
        ("openai", "sk-three"),
    ] {
        vault
            .put(&n(name), SecretString::from(v), None, "t")
            .await
            .unwrap();
    }
    // What the store holds is wrapped by the token: no key file could open it.
    let keys = store.system_keys().await.unwrap().unwrap();
    assert!(keys.kcv.starts_with(b"pkcs11:"));
    drop(vault);
    store.close().await;

    // A new store handle and a new provider, as a restarted server has.
    let store = sqlite(&dir).await;
    let again = hsm.provider("kg-vault", "master");
    let vault = Vault::open(store.clone(), Some(&again), VaultLimits::default())
        .await
        .unwrap();
    assert_eq!(vault.sealed(), None);
    assert_eq!(value(&vault, "openai").await, "sk-three");
    assert_eq!(value(&vault, "maps").await, "AIza-two");
    let (_, first) = vault.get(&n("openai"), Some(1), "t").await.unwrap();
    assert_eq!(first.expose_secret(), "sk-one");

    // A file key does not open it, and says where the key is.
    let file = SoftKek::new(&MasterKey::from_bytes([7; 32]), "file other.key");
    struct Soft(Arc<SoftKek>);
    impl MasterKeyProvider for Soft {
        fn describe(&self) -> String {
            self.0.describe()
        }
        fn open(&self) -> Result<Arc<dyn Kek>, keygate_vault::MasterKeyError> {
            Ok(self.0.clone())
        }
    }
    let wrong = Vault::open(
        store.clone(),
        Some(&Soft(Arc::new(file))),
        VaultLimits::default(),
    )
    .await
    .unwrap();
    let reason = wrong.sealed().unwrap();
    assert!(reason.contains("held in a PKCS#11 token"), "{reason}");
    store.close().await;
}

#[tokio::test]
async fn rekey_moves_a_store_from_a_file_into_the_token_and_back() {
    let Some(hsm) = hsm("rekey_moves_a_store_from_a_file_into_the_token_and_back") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    let file = SoftKek::new(&MasterKey::from_bytes([0x11; 32]), "file a.key");
    Vault::initialize(store.as_ref(), &file, admin())
        .await
        .unwrap();
    let provider = hsm.provider("kg-rekey", "master");
    provider.ensure_key().unwrap();
    {
        struct Soft;
        impl MasterKeyProvider for Soft {
            fn describe(&self) -> String {
                "file a.key".into()
            }
            fn open(&self) -> Result<Arc<dyn Kek>, keygate_vault::MasterKeyError> {
                Ok(Arc::new(SoftKek::new(
                    &MasterKey::from_bytes([0x11; 32]),
                    "file a.key",
                )))
            }
        }
        let vault = Vault::open(store.clone(), Some(&Soft), VaultLimits::default())
            .await
            .unwrap();
        for (name, v) in [("a", "alpha"), ("b", "beta"), ("a", "alpha-2")] {
            vault
                .put(&n(name), SecretString::from(v), None, "t")
                .await
                .unwrap();
        }
    }
    let hsm_kek = provider.open().unwrap();
    // file -> HSM
    let count = Vault::rekey(store.as_ref(), &file, hsm_kek.as_ref(), "t")
        .await
        .unwrap();
    assert_eq!(count, 3);
    let vault = Vault::open(store.clone(), Some(&provider), VaultLimits::default())
        .await
        .unwrap();
    assert_eq!(vault.sealed(), None);
    assert_eq!(value(&vault, "a").await, "alpha-2");
    assert_eq!(value(&vault, "b").await, "beta");
    // Rekeying onto the key already in use is refused.
    let same = Vault::rekey(store.as_ref(), hsm_kek.as_ref(), hsm_kek.as_ref(), "t").await;
    assert!(matches!(same, Err(VaultError::Invalid(_))), "{same:?}");
    // The file key no longer opens the store.
    let stale = Vault::rekey(store.as_ref(), &file, hsm_kek.as_ref(), "t").await;
    assert!(matches!(stale, Err(VaultError::Sealed(_))), "{stale:?}");
    // HSM -> another file
    let back = SoftKek::new(&MasterKey::from_bytes([0x22; 32]), "file b.key");
    let count = Vault::rekey(store.as_ref(), hsm_kek.as_ref(), &back, "t")
        .await
        .unwrap();
    assert_eq!(count, 3);
    struct Back;
    impl MasterKeyProvider for Back {
        fn describe(&self) -> String {
            "file b.key".into()
        }
        fn open(&self) -> Result<Arc<dyn Kek>, keygate_vault::MasterKeyError> {
            Ok(Arc::new(SoftKek::new(
                &MasterKey::from_bytes([0x22; 32]),
                "file b.key",
            )))
        }
    }
    let vault = Vault::open(store.clone(), Some(&Back), VaultLimits::default())
        .await
        .unwrap();
    assert_eq!(vault.sealed(), None);
    assert_eq!(value(&vault, "a").await, "alpha-2");
    let (_, first) = vault.get(&n("a"), Some(1), "t").await.unwrap();
    assert_eq!(first.expose_secret(), "alpha");
    // The audit chain recorded both moves, naming the sources and never a key.
    let entries = store.audit_entries(0, 1000).await.unwrap();
    let rekeys: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "vault.rekey")
        .collect();
    assert_eq!(rekeys.len(), 2);
    assert!(
        rekeys[0].details.contains("PKCS#11"),
        "{}",
        rekeys[0].details
    );
    store.close().await;
}

#[tokio::test]
async fn a_removed_token_seals_the_vault_and_a_tampered_key_is_not_a_fault() {
    let Some(hsm) = hsm("a_removed_token_seals_the_vault_and_a_tampered_key_is_not_a_fault") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (provider, store, vault) = vault_on(&hsm, "kg-remove", &dir).await;

    // A wrapped data key changed in the database: refused as tampering, and the token
    // is still healthy (the vault stays unsealed).
    let url = format!("sqlite://{}/vault.db", dir.path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (mut wrapped,): (Vec<u8>,) =
        sqlx::query_as("SELECT wrapped_key FROM secret_versions WHERE name = 'k'")
            .fetch_one(&pool)
            .await
            .unwrap();
    wrapped[20] ^= 0x01;
    sqlx::query("UPDATE secret_versions SET wrapped_key = ? WHERE name = 'k'")
        .bind(&wrapped)
        .execute(&pool)
        .await
        .unwrap();
    let tampered = vault.get(&n("k"), None, "t").await;
    assert!(
        matches!(tampered, Err(VaultError::Tampered(_))),
        "{tampered:?}"
    );
    assert_eq!(vault.sealed(), None);
    pool.close().await;

    // The token goes away (its directory moved out of SoftHSM2's reach).
    let token_dir = hsm.0.token_dir("kg-remove");
    let away = dir.path().join("token-away");
    std::fs::rename(&token_dir, &away).unwrap();
    let put = vault
        .put(&n("k2"), SecretString::from("v"), None, "t")
        .await;
    let Err(VaultError::Sealed(reason)) = put else {
        panic!("a put with the token gone must be refused as sealed: {put:?}");
    };
    assert!(reason.contains("kg-remove"), "{reason}");
    let sealed = vault.sealed().expect("the vault reports itself sealed");
    assert!(sealed.contains("master key unavailable"), "{sealed}");
    assert!(vault.recheck().is_some(), "still gone");
    // Nothing was written while it was gone.
    assert!(matches!(
        vault.history(&n("k2")).await,
        Err(VaultError::NotFound)
    ));
    // A restart while it is gone comes up sealed, naming the token.
    let restarted = Vault::open(store.clone(), Some(&provider), VaultLimits::default())
        .await
        .unwrap();
    let reason = restarted.sealed().unwrap();
    assert!(
        reason.contains("no token \"kg-remove\" is present"),
        "{reason}"
    );
    std::fs::rename(&away, &token_dir).unwrap();
    store.close().await;
}

#[tokio::test]
async fn a_key_replaced_under_the_same_label_is_never_used() {
    let Some(hsm) = hsm("a_key_replaced_under_the_same_label_is_never_used") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (provider, store, vault) = vault_on(&hsm, "kg-swap", &dir).await;
    // Someone destroys the key and makes another with the same label.
    let session = hsm.session("kg-swap");
    let old = session
        .find_objects(&[Attribute::Label(b"master".to_vec())])
        .unwrap();
    session.destroy_object(old[0]).unwrap();
    drop(provider);
    let other = hsm.provider("kg-swap", "master");
    assert!(other.ensure_key().unwrap());
    // The vault notices the key is another and refuses, rather than wrap with it.
    let put = vault
        .put(&n("k"), SecretString::from("v2"), None, "t")
        .await;
    let Err(VaultError::Sealed(reason)) = put else {
        panic!("{put:?}");
    };
    assert!(
        reason.contains("not the key this vault opened with"),
        "{reason}"
    );
    assert!(vault.sealed().is_some());
    store.close().await;
}

#[tokio::test]
async fn bad_token_configurations_seal_with_a_clear_reason() {
    let Some(hsm) = hsm("bad_token_configurations_seal_with_a_clear_reason") else {
        return;
    };
    let good = hsm.provider("kg-refuse", "master");
    good.ensure_key().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    Vault::initialize(store.as_ref(), good.open().unwrap().as_ref(), admin())
        .await
        .unwrap();

    // An extractable key of the same token is refused by its attributes.
    let session = hsm.session("kg-refuse");
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Label(b"loose".to_vec()),
                Attribute::Token(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .unwrap();
    // PKCS#11 logs a whole process in at once: with this session open, a wrong PIN would
    // not even be asked for.
    drop(session);

    let with = |f: &dyn Fn(&mut Pkcs11Config)| {
        let mut c = hsm.config("kg-refuse", "master");
        f(&mut c);
        Pkcs11KeyProvider::new(c)
    };
    let cases: Vec<(&str, Pkcs11KeyProvider, &str)> = vec![
        (
            "wrong PIN",
            with(&|c| c.pin_env = "KEYGATE_TEST_PKCS11_WRONG_PIN".into()),
            "wrong PIN (from environment variable KEYGATE_TEST_PKCS11_WRONG_PIN)",
        ),
        (
            "PIN variable unset",
            with(&|c| c.pin_env = "KEYGATE_TEST_PKCS11_NO_SUCH_PIN".into()),
            "environment variable KEYGATE_TEST_PKCS11_NO_SUCH_PIN is not set",
        ),
        (
            "module missing",
            with(&|c| c.module = dir.path().join("no-such-module.so")),
            "the module file does not exist",
        ),
        (
            "token missing",
            with(&|c| c.token = TokenSelector::Label("kg-nowhere".into())),
            "no token \"kg-nowhere\" is present",
        ),
        (
            "key missing",
            with(&|c| c.key_label = "absent".into()),
            "no AES key labelled \"absent\"",
        ),
        (
            "extractable key",
            with(&|c| c.key_label = "loose".into()),
            "not CKA_SENSITIVE",
        ),
    ];
    for (case, provider, expected) in cases {
        let vault = Vault::open(store.clone(), Some(&provider), VaultLimits::default())
            .await
            .unwrap();
        let reason = vault
            .sealed()
            .unwrap_or_else(|| panic!("{case}: not sealed"));
        assert!(reason.contains(expected), "{case}: {reason}");
        assert!(
            !reason.contains(&std::env::var("KEYGATE_TEST_PKCS11_PIN").unwrap()),
            "{case}: the PIN must never be in a message"
        );
        let get = vault.get(&n("k"), None, "t").await;
        assert!(matches!(get, Err(VaultError::Sealed(_))), "{case}: {get:?}");
    }
    // The right configuration still opens it.
    let vault = Vault::open(store.clone(), Some(&good), VaultLimits::default())
        .await
        .unwrap();
    assert_eq!(vault.sealed(), None);
    store.close().await;
}
