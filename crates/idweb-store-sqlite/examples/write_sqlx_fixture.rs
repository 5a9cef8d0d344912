//! Writes `tests/fixtures/sqlx-0.1.db` with this (sqlx) version of the store.
//! Run once: `cargo run -p idweb-store-sqlite --example write_sqlx_fixture -- PATH`.

#[path = "../tests/common/fixture.rs"]
#[allow(dead_code)]
mod fixture;

use std::sync::Arc;

use idweb::{ManualClock, PartitionKey, PartitionWrite, Store, Tombstone};
use idweb_store_sqlite::SqliteStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: write_sqlx_fixture PATH")?;
    let clock = Arc::new(ManualClock::at_unix(fixture::WRITTEN_AT as u64));
    let store = SqliteStore::open_with_clock(&path, clock).await?;
    for s in [
        fixture::alice_1(),
        fixture::alice_2(),
        fixture::bob(),
        fixture::ended(),
    ] {
        store.put_session(&s).await?;
    }
    let alice = PartitionKey::Session(fixture::alice_1().id);
    store
        .write_partition(&alice, PartitionWrite::upsert(fixture::alice_1_first_write()))
        .await?;
    let (upsert, remove) = fixture::alice_1_second_write();
    let mut second = PartitionWrite::upsert(upsert).if_version(1);
    second.remove = remove;
    store.write_partition(&alice, second).await?;
    store
        .write_partition(
            &fixture::app_key(),
            PartitionWrite::upsert(fixture::app_entries()),
        )
        .await?;
    store
        .write_partition(
            &PartitionKey::Session(fixture::ended().id),
            PartitionWrite::upsert(fixture::ended_entries()),
        )
        .await?;
    for (selector, logged_out_at, expires_at) in [
        fixture::sid_tombstone(),
        fixture::sub_tombstone(),
        fixture::expired_tombstone(),
    ] {
        store
            .put_tombstone(&Tombstone::new(selector, logged_out_at, expires_at))
            .await?;
    }
    for (iss, jti, expires_at) in [fixture::live_jti(), fixture::expired_jti()] {
        assert!(store.record_jti(iss, jti, expires_at).await?);
    }
    for (name, ttl) in [fixture::held_lock(), fixture::expired_lock()] {
        assert!(store.try_lock(name, ttl).await?.is_some());
    }
    // The last connection to close checkpoints the log into the file.
    store.close().await;
    Ok(())
}
