//! Connections: one [`ConnectionManager`] to a standalone server, or one
//! [`ClusterConnection`] to a Redis Cluster, behind one type.

use std::time::Duration;

use redis::aio::{
    AsyncPushSender, ConnectionLike, ConnectionManager, ConnectionManagerConfig,
    MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value,
};

use crate::error::{Error, redis_error, unavailable};
use idweb::StoreError;

/// How long to wait for a TCP (and TLS) connection to a node.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long to wait for one reply.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long opening the store may take in all.
pub(crate) const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection of its own to `node`, subscribed to `channels`, whose
/// pushes (messages and loss notices) go to `on_push`: what the in-process
/// cache and the sign-out bus each listen on.
pub(crate) async fn subscribed_connection(
    node: ConnectionInfo,
    channels: &[&str],
    on_push: impl AsyncPushSender,
) -> Result<MultiplexedConnection, redis::RedisError> {
    let client = redis::Client::open(node)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_push_sender(on_push);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    conn.subscribe(channels).await?;
    Ok(conn)
}

/// The connection to the data.
#[derive(Clone)]
pub(crate) enum Conn {
    /// A standalone server (reconnects by itself).
    Single(ConnectionManager),
    /// A Redis Cluster (follows slot moves, reconnects by itself).
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// An opened connection and where to subscribe for invalidations.
pub(crate) struct Opened {
    pub(crate) conn: Conn,
    /// Nodes to subscribe on, in order of preference (any node of a cluster
    /// hears every `PUBLISH`).
    pub(crate) subscribe_to: Vec<ConnectionInfo>,
}

/// What a URL names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `redis://`, `rediss://`, `redis+unix://`, `unix://`: one server.
    Single(String),
    /// `redis+cluster://` / `rediss+cluster://`: seed nodes, as single-node URLs.
    Cluster(Vec<String>),
}

/// Parses a store URL. `redis+cluster://[USER:PASSWORD@]HOST:PORT,HOST:PORT`
/// becomes one `redis://` URL per seed node (`rediss` likewise), each with the
/// same credentials.
pub(crate) fn parse_target(url: &str) -> Result<Target, Error> {
    let bad = |why: &str| Error::BadUrl(why.to_string());
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected SCHEME://..."))?;
    let node_scheme = match scheme {
        "redis+cluster" => "redis",
        "rediss+cluster" => "rediss",
        "redis" | "rediss" | "redis+unix" | "unix" => return Ok(Target::Single(url.to_string())),
        _ => {
            return Err(bad(
                "the scheme must be redis, rediss, redis+unix, unix, redis+cluster or rediss+cluster",
            ));
        }
    };
    let rest = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{node_scheme}://{auth}{h}"))
        .collect();
    if nodes.is_empty() {
        return Err(bad("a cluster URL names at least one HOST:PORT"));
    }
    Ok(Target::Cluster(nodes))
}

/// The same node, spoken to in RESP3 (whose push messages carry pub/sub).
fn resp3(info: ConnectionInfo) -> ConnectionInfo {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    info.set_redis_settings(settings)
}

/// Connects; fails with [`StoreError::Unavailable`] within [`OPEN_TIMEOUT`].
pub(crate) async fn open(url: &str) -> Result<Opened, StoreError> {
    let target = parse_target(url).map_err(unavailable)?;
    let connect = async {
        match target {
            Target::Single(url) => {
                let info = url.as_str().into_connection_info().map_err(redis_error)?;
                let client = redis::Client::open(info.clone()).map_err(redis_error)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    // Reconnection is tried again on the next command: a
                    // call made while Redis is down fails at once instead
                    // of waiting through a long backoff.
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                let manager = ConnectionManager::new_with_config(client, config)
                    .await
                    .map_err(redis_error)?;
                Ok(Opened {
                    conn: Conn::Single(manager),
                    subscribe_to: vec![resp3(info)],
                })
            }
            Target::Cluster(nodes) => {
                let infos = nodes
                    .iter()
                    .map(|n| n.as_str().into_connection_info())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(redis_error)?;
                let client = ClusterClientBuilder::new(infos.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(2)
                    .build()
                    .map_err(redis_error)?;
                let conn = client.get_async_connection().await.map_err(redis_error)?;
                Ok(Opened {
                    conn: Conn::Cluster(conn),
                    subscribe_to: infos.into_iter().map(resp3).collect(),
                })
            }
        }
    };
    tokio::time::timeout(OPEN_TIMEOUT, connect)
        .await
        .map_err(|_| unavailable(Error::Timeout(OPEN_TIMEOUT)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_server_or_cluster_seeds() {
        assert_eq!(
            parse_target("redis://127.0.0.1:6379/2").ok(),
            Some(Target::Single("redis://127.0.0.1:6379/2".into()))
        );
        assert_eq!(
            parse_target("rediss://cache.example:6380").ok(),
            Some(Target::Single("rediss://cache.example:6380".into()))
        );
        assert_eq!(
            parse_target("redis+cluster://10.0.0.1:7000, 10.0.0.2:7001/").ok(),
            Some(Target::Cluster(vec![
                "redis://10.0.0.1:7000".into(),
                "redis://10.0.0.2:7001".into()
            ]))
        );
        assert_eq!(
            parse_target("rediss+cluster://u:p%40ss@a:1,b:2").ok(),
            Some(Target::Cluster(vec![
                "rediss://u:p%40ss@a:1".into(),
                "rediss://u:p%40ss@b:2".into()
            ]))
        );
        for bad in [
            "127.0.0.1:6379",
            "http://x",
            "redis+cluster://",
            "redis+cluster://u@",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }
}
