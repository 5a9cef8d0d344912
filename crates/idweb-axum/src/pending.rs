//! At most [`MAX_PENDING_SIGN_INS`] pending sign-ins per browser.
//!
//! Each started sign-in sets a cookie of its own (so that two tabs signing
//! in at once both complete). Without a cap, a page that starts many
//! sign-ins grows the browser's `Cookie` header until the server refuses
//! it (`431`), the callback included. Starting one more sign-in when the
//! browser already holds the maximum deletes the oldest ones.

use axum::http::{HeaderMap, HeaderValue};
use idweb::RelyingParty;

use crate::cookies::{self, SetCookie};

/// The most sign-ins one browser can have in progress; starting another
/// drops the oldest. Five: enough for several tabs, and the `Cookie` header
/// stays around 2–3 KB.
pub const MAX_PENDING_SIGN_INS: usize = 5;

/// The name prefix of pending sign-in cookies (before `__Host-` on https),
/// as `idweb::pending_cookie_name` makes them.
pub(crate) const PENDING_PREFIX: &str = "idweb.signin.";

/// `Set-Cookie` headers deleting the oldest pending sign-ins of this
/// browser, so that with the one being started at most
/// [`MAX_PENDING_SIGN_INS`] remain. Cookies that are not readable count as
/// the oldest.
pub(crate) fn drop_oldest(
    headers: &HeaderMap,
    rp: &RelyingParty,
    secure: bool,
    path: &str,
) -> Vec<HeaderValue> {
    let prefix = cookies::host_name(PENDING_PREFIX, secure, rp.settings().path_base());
    let mut by_name = std::collections::HashMap::<String, i64>::new();
    for (name, value) in cookies::with_prefix(headers, &prefix) {
        let started = rp.sign_in().pending_started_at(&value).unwrap_or(i64::MIN);
        let oldest = by_name.entry(name).or_insert(started);
        *oldest = (*oldest).min(started);
    }
    let mut pending: Vec<(i64, String)> = by_name.into_iter().map(|(n, t)| (t, n)).collect();
    pending.sort();
    let excess = (pending.len() + 1).saturating_sub(MAX_PENDING_SIGN_INS);
    pending
        .into_iter()
        .take(excess)
        .filter_map(|(_, name)| SetCookie::removal(&name, path, secure))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_the_one_of_pending_cookie_names() {
        assert!(idweb::pending_cookie_name("some-state").starts_with(PENDING_PREFIX));
    }
}
