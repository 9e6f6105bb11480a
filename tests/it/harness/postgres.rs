//! PostgreSQL for the tests: with `GBDS_TEST_STORE=postgres` every service a test starts uses
//! a database of its own on 127.0.0.1:5432 instead of a SQLite file. A test's database path
//! names its database (a service restarted on the same path finds the same database); a
//! database is dropped once the directory of its path is gone (its test ended), checked each
//! time another is made, and what a killed test run left is dropped by the next run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The server the tests use (the machine and CI run it; trust authentication).
pub const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// Whether this run tests the PostgreSQL store.
pub fn enabled() -> bool {
    std::env::var("GBDS_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// The URL of the database a test names by `path` (made on first use).
pub fn url_for(path: &Path) -> String {
    format!("{SERVER}/{}", database_for(path))
}

/// A database of its own, not tied to a path: dropped when this is dropped.
pub struct TestDatabase {
    pub name: String,
}

impl TestDatabase {
    pub fn new() -> Self {
        let name = fresh_name();
        admin(&format!("CREATE DATABASE {name}"));
        TestDatabase { name }
    }

    pub fn url(&self) -> String {
        format!("{SERVER}/{}", self.name)
    }

    /// An open [`super::Proxy`] to the server, and this database's URL through it: cutting the
    /// proxy cuts the service off the database while the server itself is left alone.
    pub async fn behind_proxy(&self) -> (super::Proxy, String) {
        let mut proxy = super::Proxy::closed_to("127.0.0.1:5432");
        proxy.open().await;
        let url = self.url().replace(":5432/", &format!(":{}/", proxy.port));
        (proxy, url)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        admin(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

fn fresh_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "gbds_it_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst),
        fastrand::u32(..)
    )
}

/// The databases made for paths, by path.
fn made() -> &'static Mutex<HashMap<PathBuf, String>> {
    static MADE: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    MADE.get_or_init(|| {
        drop_leftovers();
        Mutex::new(HashMap::new())
    })
}

fn database_for(path: &Path) -> String {
    let mut made = made().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(name) = made.get(path) {
        return name.clone();
    }
    // Databases whose tests ended (their directories are gone).
    let ended: Vec<PathBuf> = made
        .keys()
        .filter(|p| p.parent().is_some_and(|d| !d.exists()))
        .cloned()
        .collect();
    for p in ended {
        if let Some(name) = made.remove(&p) {
            admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
    let name = fresh_name();
    admin(&format!("CREATE DATABASE {name}"));
    made.insert(path.to_owned(), name.clone());
    name
}

/// Drops the test databases of runs whose processes are gone.
fn drop_leftovers() {
    let names = query_names("SELECT datname FROM pg_database WHERE datname LIKE 'gbds\\_it\\_%'");
    for name in names {
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// Runs `f` on a connection to `url`, on a thread and runtime of its own (callable from sync
/// code and from inside a test's runtime alike).
pub fn blocking<T: Send + 'static>(
    url: String,
    f: impl for<'c> FnOnce(&'c tokio_postgres::Client) -> futures_util::future::BoxFuture<'c, T>
        + Send
        + 'static,
) -> T {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "GBDS_TEST_STORE=postgres needs PostgreSQL on 127.0.0.1:5432 (user postgres, \
                         trust authentication): cannot connect to {url}: {e}"
                    )
                });
            tokio::spawn(connection);
            f(&client).await
        })
    })
    .join()
    .expect("the PostgreSQL helper thread did not panic")
}

/// Runs `sql` on the server's `postgres` database.
fn admin(sql: &str) {
    let sql = sql.to_owned();
    blocking(format!("{SERVER}/postgres"), move |c| {
        Box::pin(async move {
            c.batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        })
    });
}

fn query_names(sql: &str) -> Vec<String> {
    let sql = sql.to_owned();
    blocking(format!("{SERVER}/postgres"), move |c| {
        Box::pin(async move {
            c.query(&sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .map(|r| r.get(0))
                .collect()
        })
    })
}

/// Runs `sql` (several statements) on the database a test names by `path`.
pub fn execute(path: &Path, sql: &str) {
    let sql = sql.to_owned();
    blocking(url_for(path), move |c| {
        Box::pin(async move {
            c.batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        })
    });
}
