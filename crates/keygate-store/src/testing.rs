//! Throw-away databases for tests: a SQLite file in a temporary directory, or a fresh
//! PostgreSQL schema when `KEYGATE_TEST_POSTGRES_URL` is set. Both are removed on drop.

use rand::Rng;

/// The environment variable that turns on PostgreSQL tests.
pub const POSTGRES_ENV: &str = "KEYGATE_TEST_POSTGRES_URL";

/// A database that exists for one test.
pub struct TestDb {
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { base: String, schema: String },
}

impl TestDb {
    /// A new SQLite database file.
    pub fn sqlite() -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("keygate.db").display());
        Ok(Self {
            url,
            cleanup: Cleanup::Sqlite(dir),
        })
    }

    /// A new schema in the PostgreSQL database named by `KEYGATE_TEST_POSTGRES_URL`, or
    /// `None` (after printing that the test is skipped) when it is not set.
    pub async fn postgres(test: &str) -> Option<Self> {
        let Ok(base) = std::env::var(POSTGRES_ENV) else {
            println!("skipped: {test} on PostgreSQL ({POSTGRES_ENV} is not set)");
            return None;
        };
        let schema = format!("kg_test_{:016x}", rand::thread_rng().r#gen::<u64>());
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
            .await
            .unwrap_or_else(|e| fail(&format!("cannot reach {POSTGRES_ENV}: {e}")));
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| fail(&format!("cannot create schema: {e}")));
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        Some(Self {
            url,
            cleanup: Cleanup::Postgres { base, schema },
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

#[allow(clippy::panic)]
fn fail(msg: &str) -> ! {
    panic!("{msg}")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { base, schema } = &self.cleanup {
            let (base, schema) = (base.clone(), schema.clone());
            // Drop may run inside a runtime or during a panic: use a thread of our own.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async {
                    if let Ok(mut conn) =
                        <sqlx::AnyConnection as sqlx::Connection>::connect(&base).await
                    {
                        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                            .execute(&mut conn)
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Declares, for each named `async fn NAME(db: &TestDb)`, a module `NAME` with two tests:
/// `sqlite` (always) and `postgres` (when `KEYGATE_TEST_POSTGRES_URL` is set; otherwise it
/// prints that it was skipped). The suites of the store and the vault use it, so both back
/// ends always run the same tests.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::testing::TestDb::sqlite().unwrap();
                super::$name(&db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = $crate::testing::TestDb::postgres(stringify!($name)).await {
                    super::$name(&db).await;
                }
            }
        }
    )*};
}
