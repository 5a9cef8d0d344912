//! Bounded HTTP helpers for talking to the provider.

use serde::de::DeserializeOwned;

/// Largest body idweb reads from a provider (discovery, JWKS, token responses).
pub(crate) const MAX_PROVIDER_BODY: usize = 512 * 1024;

/// Why a call to the provider failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The provider could not be reached, or the connection failed.
    #[error("cannot reach {url}")]
    Transport {
        /// The URL called (never carries secrets).
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The provider answered with an unexpected status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL called.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The body was larger than idweb accepts.
    #[error("{url} answered a body larger than {MAX_PROVIDER_BODY} bytes")]
    TooLarge {
        /// The URL called.
        url: String,
    },
    /// The body was not the JSON expected.
    #[error("{url} answered a body that is not the expected JSON")]
    Json {
        /// The URL called.
        url: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// The default HTTP client for provider calls: no redirects, bounded time.
pub(crate) fn default_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Reads a response body of at most [`MAX_PROVIDER_BODY`] bytes.
pub(crate) async fn read_body(
    url: &str,
    mut resp: reqwest::Response,
) -> Result<Vec<u8>, HttpError> {
    if resp
        .content_length()
        .is_some_and(|l| l > MAX_PROVIDER_BODY as u64)
    {
        return Err(HttpError::TooLarge {
            url: url.to_string(),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|source| HttpError::Transport {
        url: url.to_string(),
        source,
    })? {
        if body.len() + chunk.len() > MAX_PROVIDER_BODY {
            return Err(HttpError::TooLarge {
                url: url.to_string(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// GETs `url` and parses a JSON body; any status but 200 is an error.
pub(crate) async fn get_json<T: DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, HttpError> {
    let resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|source| HttpError::Transport {
            url: url.to_string(),
            source,
        })?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(HttpError::Status {
            url: url.to_string(),
            status,
        });
    }
    let body = read_body(url, resp).await?;
    serde_json::from_slice(&body).map_err(|source| HttpError::Json {
        url: url.to_string(),
        source,
    })
}

/// The HTTP client idweb uses for calls to a provider when none is given:
/// redirects are not followed, connecting may take at most 5 seconds and a
/// whole call at most 15 seconds.
pub fn provider_http_client() -> reqwest::Client {
    default_client()
}
