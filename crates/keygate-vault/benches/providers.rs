//! The vault's throughput with its master key in a file and in a PKCS#11 token (SoftHSM2),
//! in one run: raw wraps and unwraps, and `resolve` (what the proxy calls for a route's
//! key: a store read, an unwrap, a decryption) from several tasks at once on a SQLite
//! store. Run by `bench/vault/run.sh`, which sets up SoftHSM2 first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate_store::{AdminCredential, SqlStore, Store};
use keygate_vault::{
    Kek, MasterKey, MasterKeyError, MasterKeyProvider, Pkcs11Config, Pkcs11KeyProvider, SecretName,
    SoftKek, TokenSelector, Vault, VaultLimits,
};
use secrecy::SecretString;

const TASKS: usize = 8;
const SECRETS: usize = 16;

struct Fixed(Arc<dyn Kek>);

impl MasterKeyProvider for Fixed {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn open(&self) -> Result<Arc<dyn Kek>, MasterKeyError> {
        Ok(self.0.clone())
    }
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// Wraps and unwraps on one thread: the cost of the key alone.
fn raw(kek: &dyn Kek, n: usize) -> (f64, f64) {
    let key = [7u8; 32];
    let start = Instant::now();
    let mut wrapped = Vec::new();
    for _ in 0..n {
        wrapped = kek.wrap(&key, b"bench").unwrap();
    }
    let wrap = rate(n, start.elapsed());
    let start = Instant::now();
    for _ in 0..n {
        kek.unwrap(&wrapped, b"bench").unwrap();
    }
    (wrap, rate(n, start.elapsed()))
}

/// `resolve` from `TASKS` tasks for `duration`: calls per second.
async fn resolves(kek: Arc<dyn Kek>, duration: Duration) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&url).await.unwrap());
    Vault::initialize(
        store.as_ref(),
        kek.as_ref(),
        AdminCredential {
            id: "root".into(),
            token_hash: vec![0; 32],
            created_ms: 0,
            label: "bench".into(),
        },
    )
    .await
    .unwrap();
    let vault = Arc::new(
        Vault::open(store.clone(), Some(&Fixed(kek)), VaultLimits::default())
            .await
            .unwrap(),
    );
    for i in 0..SECRETS {
        let name = SecretName::parse(&format!("s{i}")).unwrap();
        vault
            .put(
                &name,
                SecretString::from(format!("sk-{i:040}")),
                None,
                "bench",
            )
            .await
            .unwrap();
    }
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let vault = vault.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while Instant::now() < deadline {
                vault
                    .resolve(&format!("s{}", (n + t) % SECRETS))
                    .await
                    .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let r = rate(total, start.elapsed());
    store.close().await;
    r
}

fn main() {
    let (Ok(module), Ok(_)) = (
        std::env::var("KEYGATE_TEST_PKCS11_MODULE"),
        std::env::var("KEYGATE_TEST_PKCS11_PIN"),
    ) else {
        eprintln!("vault providers bench: no SoftHSM2; run bench/vault/run.sh (it sets it up)");
        std::process::exit(2);
    };
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let hsm = Pkcs11KeyProvider::new(Pkcs11Config {
        module: module.into(),
        token: TokenSelector::Label("kg-bench".into()),
        key_label: "bench".into(),
        pin_env: "KEYGATE_TEST_PKCS11_PIN".into(),
    });
    hsm.ensure_key().unwrap();
    let providers: Vec<(&str, Arc<dyn Kek>)> = vec![
        (
            "file",
            Arc::new(SoftKek::new(&MasterKey::generate(), "file (bench)")),
        ),
        ("pkcs11 (SoftHSM2)", hsm.open().unwrap()),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "vault providers, one run: {} cores, {TASKS} tasks resolving {SECRETS} secrets for {seconds} s each",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<20} {:>14} {:>14} {:>16}",
        "provider", "wrap/s", "unwrap/s", "resolve/s"
    );
    let mut results = Vec::new();
    for (name, kek) in providers {
        let (wrap, unwrap) = raw(kek.as_ref(), 20_000);
        let resolve = runtime.block_on(resolves(kek, Duration::from_secs(seconds)));
        println!("{name:<20} {wrap:>14.0} {unwrap:>14.0} {resolve:>16.0}");
        results.push(resolve);
    }
    if let [file, hsm] = results[..] {
        println!(
            "pkcs11 resolve throughput = {:.2}x the file provider's (goal: >= 0.50x)",
            hsm / file
        );
    }
}
