//! Helpers shared by the tests that run the sample web app as a process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts `idweb-demo webapp` with `env`; returns once it listens.
pub fn start_webapp(env: &[(&str, String)]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_idweb-demo"))
        .arg("webapp")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start idweb-demo webapp");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(
        line.contains("sample web app"),
        "unexpected first line: {line:?}"
    );
    // Keep reading, so the app's later output finds its reader.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while out.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    child
}

pub fn stop(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the web app did not stop on SIGTERM");
}

/// The PostgreSQL the tests share: `IDWEB_TEST_POSTGRES_URL`, or the local
/// default (a database the user may create schemas and databases in).
pub fn postgres_url() -> String {
    std::env::var("IDWEB_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The same server, database `db`.
pub fn postgres_url_of(db: &str) -> String {
    let base = postgres_url();
    let (head, _) = base.rsplit_once('/').unwrap();
    format!("{head}/{db}")
}

/// A connection for the test's own statements; fails the test when
/// PostgreSQL is down.
pub async fn postgres_admin() -> tokio_postgres::Client {
    let url = postgres_url();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("these tests need PostgreSQL at {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// Runs `sql` on a connection of its own from a plain thread (usable in `Drop`).
pub fn postgres_detached(sql: String) {
    let url = postgres_url();
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                tokio::spawn(conn);
                let _ = client.batch_execute(&sql).await;
            }
        });
    })
    .join();
}

/// Drops a schema when the test ends, however it ends.
pub struct DropSchema(pub String);

impl Drop for DropSchema {
    fn drop(&mut self) {
        postgres_detached(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0));
    }
}

/// A database of the test's own, dropped (with its connections) at the end.
pub struct TestDatabase(pub String);

impl TestDatabase {
    pub async fn create(what: &str) -> Self {
        let name = format!(
            "idweb_test_{what}_{}",
            idweb::SessionId::generate().fingerprint()
        );
        postgres_admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        Self(name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        postgres_detached(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
    }
}
