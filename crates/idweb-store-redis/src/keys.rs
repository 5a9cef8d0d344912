//! Key names, hash tags and the names of the in-process cache's entries.
//!
//! See the crate documentation for the layout. Every name is built here, so
//! that the Lua scripts and the Rust code cannot disagree.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use idweb::{PartitionKey, SessionId, SessionLookup};
use idweb_l1::names;

use crate::error::Error;

/// The key prefix used when none is given.
pub(crate) const DEFAULT_PREFIX: &str = "idweb";

/// The hash tag of a session: the base64url SHA-256 of its id (the L1
/// layer's session tag). Key names and invalidation messages never carry a
/// session id (a bearer credential).
pub(crate) fn session_tag(id: &SessionId) -> String {
    names::session_tag(id)
}

/// The tag of a lookup (and of the tombstone with the same selector), as
/// the L1 layer names it.
pub(crate) fn selector_tag(lookup: &SessionLookup) -> Result<String, Error> {
    names::selector_tag(lookup).ok_or(Error::Unsupported("session lookup"))
}

/// Whether a selector tag is an `(iss, sid)` one (else `(iss, sub)`).
pub(crate) fn is_sid_tag(tag: &str) -> bool {
    tag.starts_with("sid:")
}

/// Which partition, as this store addresses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    /// The partition of the session with this tag.
    Session(String),
    /// An app partition, by its storage key.
    App(String),
}

impl Part {
    pub(crate) fn of(key: &PartitionKey) -> Result<Self, Error> {
        match key {
            PartitionKey::Session(id) => Ok(Part::Session(session_tag(id))),
            PartitionKey::App { .. } => Ok(Part::App(key.storage_key())),
            _ => Err(Error::Unsupported("partition key")),
        }
    }
}

/// Names of the in-process cache's entries, also the words of invalidation
/// messages (those of the L1 layer).
pub(crate) mod l1 {
    use super::Part;
    use idweb_l1::names;

    /// A session.
    pub(crate) fn session(tag: &str) -> String {
        names::session_word(tag)
    }

    /// A partition.
    pub(crate) fn partition(part: &Part) -> String {
        match part {
            Part::Session(tag) => names::session_partition_word(tag),
            Part::App(storage) => format!("p:{storage}"),
        }
    }

    /// A tombstone's selector: drops the cached sessions it names.
    pub(crate) fn tombstone(selector_tag: &str) -> String {
        names::tombstone_word(selector_tag)
    }
}

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    /// The keys and channels that do not depend on a session, named once
    /// (a sign-out names four of them).
    fixed: Box<Fixed>,
}

#[derive(Debug, Clone)]
struct Fixed {
    meta_expiry: String,
    meta_ids: String,
    meta_tombstones: String,
    meta_apps: String,
    channel: String,
    sign_out_channel: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Result<Self, Error> {
        let ok = !prefix.is_empty()
            && !prefix
                .chars()
                .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control());
        if !ok {
            return Err(Error::BadPrefix(prefix.to_string()));
        }
        let meta = |what: &str| format!("{p}:{{{p}.meta}}:{what}", p = prefix);
        Ok(Self {
            prefix: prefix.to_string(),
            fixed: Box::new(Fixed {
                meta_expiry: meta("sessions"),
                meta_ids: meta("ids"),
                meta_tombstones: meta("tombstones"),
                meta_apps: meta("apps"),
                channel: format!("{prefix}:invalidate"),
                sign_out_channel: format!("{prefix}:signout"),
            }),
        })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The session hash: `data` (JSON), `exp` and `idx` (its index keys).
    pub(crate) fn session(&self, tag: &str) -> String {
        format!("{}:{{s:{tag}}}:session", self.prefix)
    }

    /// A partition's entries (hash: cache key -> encoded entry).
    pub(crate) fn part(&self, part: &Part) -> String {
        match part {
            Part::Session(tag) => format!("{}:{{s:{tag}}}:part", self.prefix),
            Part::App(storage) => format!("{}:{{a:{storage}}}:part", self.prefix),
        }
    }

    /// A partition's version counter.
    pub(crate) fn version(&self, part: &Part) -> String {
        match part {
            Part::Session(tag) => format!("{}:{{s:{tag}}}:ver", self.prefix),
            Part::App(storage) => format!("{}:{{a:{storage}}}:ver", self.prefix),
        }
    }

    /// An index (sorted set: session id scored by the session's expiry).
    pub(crate) fn index(&self, selector_tag: &str) -> String {
        format!("{}:{{x:{selector_tag}}}:index", self.prefix)
    }

    /// The selector tag of an index key (one this store named), if it is one.
    pub(crate) fn tag_of_index<'a>(&self, index_key: &'a str) -> Option<&'a str> {
        index_key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{x:")?
            .strip_suffix("}:index")
    }

    /// A tombstone (string `uLOGGED_OUT_AT:EXPIRES_AT`, see `codec`), in its index's slot.
    /// Its name is its index's with `:tombstone` for `:index`: the scripts
    /// rely on it (`GET_SESSION`).
    pub(crate) fn tombstone(&self, selector_tag: &str) -> String {
        format!("{}:{{x:{selector_tag}}}:tombstone", self.prefix)
    }

    /// A logout token's replay record (string: its expiry).
    pub(crate) fn jti(&self, iss: &str, jti: &str) -> String {
        format!(
            "{}:jti:{}.{}",
            self.prefix,
            B64.encode(iss),
            B64.encode(jti)
        )
    }

    /// A lock (string `held_until_ms:token`).
    pub(crate) fn lock(&self, name: &str) -> String {
        format!("{}:lock:{}", self.prefix, B64.encode(name))
    }

    /// Session ids scored by expiry (counting).
    pub(crate) fn meta_expiry(&self) -> &str {
        &self.fixed.meta_expiry
    }

    /// Session ids, all scored 0 (listing in id order).
    pub(crate) fn meta_ids(&self) -> &str {
        &self.fixed.meta_ids
    }

    /// Tombstone tags scored by expiry (counting).
    pub(crate) fn meta_tombstones(&self) -> &str {
        &self.fixed.meta_tombstones
    }

    /// Storage keys of app partitions (statistics).
    pub(crate) fn meta_apps(&self) -> &str {
        &self.fixed.meta_apps
    }

    /// The invalidation channel of [`CachingStore`](crate::CachingStore).
    pub(crate) fn channel(&self) -> &str {
        &self.fixed.channel
    }

    /// The sign-out event channel of [`RedisSignOutBus`](crate::RedisSignOutBus).
    pub(crate) fn sign_out_channel(&self) -> &str {
        &self.fixed.sign_out_channel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash tag Redis Cluster uses: the text between the first `{` and
    /// the next `}`.
    fn hash_tag(key: &str) -> Option<&str> {
        let open = key.find('{')?;
        let close = key[open + 1..].find('}')? + open + 1;
        (close > open + 1).then(|| &key[open + 1..close])
    }

    #[test]
    fn one_session_shares_one_tag_and_keeps_its_id_out_of_names() {
        let k = Keys::new("app").expect("prefix");
        let id = SessionId::generate();
        let tag = session_tag(&id);
        let part = Part::Session(tag.clone());
        let names = [k.session(&tag), k.part(&part), k.version(&part)];
        for n in &names {
            assert_eq!(hash_tag(n), Some(format!("s:{tag}").as_str()), "{n}");
            assert!(!n.contains(id.secret()));
        }
        assert!(!l1::session(&tag).contains(id.secret()));
    }

    #[test]
    fn index_and_tombstone_of_a_selector_share_a_tag_and_never_collide() {
        let k = Keys::new("app").expect("prefix");
        let a = selector_tag(&SessionLookup::BySubject {
            iss: "https://i/{x}".into(),
            sub: "a.b".into(),
        })
        .expect("tag");
        let b = selector_tag(&SessionLookup::BySubject {
            iss: "https://i/{x}.a".into(),
            sub: "b".into(),
        })
        .expect("tag");
        assert_ne!(a, b, "components are encoded, so dots cannot shift");
        assert_eq!(hash_tag(&k.index(&a)), hash_tag(&k.tombstone(&a)));
        assert!(!a.contains('{') && !a.contains('}'));
        let sid = selector_tag(&SessionLookup::ByProviderSession {
            iss: "i".into(),
            sid: "s".into(),
        })
        .expect("tag");
        assert!(is_sid_tag(&sid) && !is_sid_tag(&a));
    }

    #[test]
    fn a_tombstone_is_named_after_its_index_and_the_tag_reads_back() {
        let k = Keys::new("app:1").expect("prefix");
        let tag = selector_tag(&SessionLookup::ByProviderSession {
            iss: "https://i".into(),
            sid: "s:1}".into(),
        })
        .expect("tag");
        let index = k.index(&tag);
        let from_index = index
            .strip_suffix(":index")
            .map(|base| format!("{base}:tombstone"));
        assert_eq!(from_index, Some(k.tombstone(&tag)));
        assert_eq!(k.tag_of_index(&index), Some(tag.as_str()));
        assert_eq!(k.tag_of_index(&k.tombstone(&tag)), None);
        assert_eq!(Keys::new("other").expect("p").tag_of_index(&index), None);
    }

    #[test]
    fn prefixes_with_braces_or_spaces_are_refused() {
        for bad in ["", "a{b", "a}b", "a b", "a\nb"] {
            assert!(Keys::new(bad).is_err(), "{bad:?}");
        }
        assert!(Keys::new("idweb-test:1").is_ok());
    }

    #[test]
    fn meta_keys_share_a_tag_per_prefix() {
        let k = Keys::new("p1").expect("prefix");
        let tags: Vec<_> = [
            k.meta_expiry(),
            k.meta_ids(),
            k.meta_tombstones(),
            k.meta_apps(),
        ]
        .iter()
        .map(|n| hash_tag(n).map(str::to_string))
        .collect();
        assert!(tags.iter().all(|t| t.as_deref() == Some("p1.meta")));
    }
}
