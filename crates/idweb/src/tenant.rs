//! Multi-tenant authorities (Microsoft Entra ID's `common` and
//! `organizations`): a discovery document whose issuer is a template such as
//! `https://login.microsoftonline.com/{tenantid}/v2.0`, and the rule that
//! every token's `iss` is that template with the token's own `tid`.
//!
//! See `docs/decisions/0021-multi-tenant-issuers.md`.

use std::collections::BTreeSet;

/// The placeholder Entra puts in the issuer of its multi-tenant discovery documents.
pub const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// The tenant of personal Microsoft accounts. Tokens of this tenant are
/// refused by an `organizations` authority, as Entra itself refuses them there.
pub const CONSUMER_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// How a provider's tokens must name their issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IssuerPolicy {
    /// `iss` is exactly the discovery document's issuer.
    Fixed(String),
    /// `iss` is `prefix + tid + suffix`, `tid` being the token's own claim.
    Template(TenantTemplate),
}

/// An issuer template split around its `{tenantid}` placeholder, with the
/// tenant segment of the configured authority (`common`, `organizations`,
/// or a tenant id that pins the template to that tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TenantTemplate {
    prefix: String,
    suffix: String,
    authority_tenant: String,
}

impl TenantTemplate {
    /// The template of `issuer` when it carries exactly one `{tenantid}`
    /// and the authority (without a trailing slash) is that template with a
    /// single path segment in place of the placeholder — that is, when the
    /// document belongs to this authority: same scheme, host, port and path
    /// around the tenant.
    pub(crate) fn matching(issuer: &str, authority: &str) -> Option<Self> {
        let (prefix, suffix) = issuer.split_once(TENANT_PLACEHOLDER)?;
        if suffix.contains(TENANT_PLACEHOLDER) || !prefix.ends_with('/') {
            return None;
        }
        let authority = authority.trim_end_matches('/');
        let suffix_trimmed = suffix.trim_end_matches('/');
        let middle = authority
            .strip_prefix(prefix)?
            .strip_suffix(suffix_trimmed)?;
        if middle.is_empty() || middle.contains(['/', '?', '#', '{', '}']) {
            return None;
        }
        Some(Self {
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
            authority_tenant: middle.to_ascii_lowercase(),
        })
    }

    /// The issuer of tenant `tid`: the template with `tid` in place of the placeholder.
    pub(crate) fn issuer_for(&self, tid: &str) -> String {
        format!("{}{tid}{}", self.prefix, self.suffix)
    }

    /// The template as the discovery document wrote it.
    pub(crate) fn template(&self) -> String {
        self.issuer_for(TENANT_PLACEHOLDER)
    }
}

/// Why a token's issuer or tenant is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssuerError {
    /// `iss` is not the provider's issuer (for a multi-tenant provider: not
    /// the issuer template filled in with the token's own `tid`).
    #[error("the token was issued by someone else (iss)")]
    Mismatch,
    /// The provider is multi-tenant (or an allow-list of tenants is set) and
    /// the token has no `tid` claim that is a tenant id (a GUID).
    #[error("the token has no valid tenant id (tid)")]
    NoTenant,
    /// The token's tenant is not one the app accepts: not on the allow-list
    /// (`allowed_tenants`), not the tenant the authority names, or a
    /// personal-account tenant under an `organizations` authority.
    #[error("users of tenant {tenant} may not sign in to this app")]
    TenantNotAllowed {
        /// The token's `tid`.
        tenant: String,
    },
}

/// Whether `s` is a GUID in its 8-4-4-4-12 hexadecimal form (Entra tenant ids).
pub(crate) fn is_tenant_id(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks a token's `iss` and `tid` against the provider's issuer policy
/// and the app's allow-list (lower-cased tenant ids; `None` = every tenant).
pub(crate) fn check(
    policy: &IssuerPolicy,
    allowed: Option<&BTreeSet<String>>,
    iss: &str,
    tid: Option<&str>,
) -> Result<(), IssuerError> {
    let tenant = match policy {
        IssuerPolicy::Fixed(issuer) => {
            if iss != issuer {
                return Err(IssuerError::Mismatch);
            }
            match allowed {
                None => return Ok(()),
                Some(_) => tid
                    .filter(|t| is_tenant_id(t))
                    .ok_or(IssuerError::NoTenant)?,
            }
        }
        IssuerPolicy::Template(t) => {
            let tid = tid
                .filter(|t| is_tenant_id(t))
                .ok_or(IssuerError::NoTenant)?;
            // Exact comparison: the tid is used as the token wrote it.
            if iss != t.issuer_for(tid) {
                return Err(IssuerError::Mismatch);
            }
            let lower = tid.to_ascii_lowercase();
            let refused = match t.authority_tenant.as_str() {
                "common" => false,
                "organizations" => lower == CONSUMER_TENANT,
                "consumers" => lower != CONSUMER_TENANT,
                pinned => pinned != lower,
            };
            if refused {
                return Err(IssuerError::TenantNotAllowed { tenant: lower });
            }
            tid
        }
    };
    let lower = tenant.to_ascii_lowercase();
    match allowed {
        Some(list) if !list.contains(&lower) => {
            Err(IssuerError::TenantNotAllowed { tenant: lower })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const T2: &str = "f8cdef31-a31e-4b4a-93e4-5f571e91255a";
    const TEMPLATE: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";

    fn template(authority: &str) -> IssuerPolicy {
        IssuerPolicy::Template(TenantTemplate::matching(TEMPLATE, authority).unwrap())
    }

    #[test]
    fn templates_must_belong_to_the_authority() {
        assert!(
            TenantTemplate::matching(TEMPLATE, "https://login.microsoftonline.com/common/v2.0")
                .is_some()
        );
        assert!(
            TenantTemplate::matching(TEMPLATE, "https://login.microsoftonline.com/common/v2.0/")
                .is_some()
        );
        for bad in [
            "https://evil.example.com/common/v2.0",
            "https://login.microsoftonline.com/common/v1.0",
            "https://login.microsoftonline.com/a/b/v2.0",
            "https://login.microsoftonline.com//v2.0",
            "http://login.microsoftonline.com/common/v2.0",
        ] {
            assert!(TenantTemplate::matching(TEMPLATE, bad).is_none(), "{bad}");
        }
        assert!(
            TenantTemplate::matching("https://x/{tenantid}/{tenantid}/v2.0", "https://x/a/a/v2.0")
                .is_none()
        );
        assert!(TenantTemplate::matching("https://x/v2.0", "https://x/v2.0").is_none());
    }

    #[test]
    fn iss_must_be_the_template_with_the_tokens_own_tid() {
        let p = template("https://login.microsoftonline.com/common/v2.0");
        let iss1 = format!("https://login.microsoftonline.com/{T1}/v2.0");
        assert_eq!(check(&p, None, &iss1, Some(T1)), Ok(()));
        assert_eq!(check(&p, None, &iss1, Some(T2)), Err(IssuerError::Mismatch));
        assert_eq!(check(&p, None, &iss1, None), Err(IssuerError::NoTenant));
        assert_eq!(
            check(&p, None, TEMPLATE, Some("{tenantid}")),
            Err(IssuerError::NoTenant)
        );
        assert_eq!(
            check(
                &p,
                None,
                "https://login.microsoftonline.com/x/v2.0",
                Some("x")
            ),
            Err(IssuerError::NoTenant)
        );
        assert_eq!(
            check(
                &p,
                None,
                &format!("https://sts.windows.net/{T1}/"),
                Some(T1)
            ),
            Err(IssuerError::Mismatch)
        );
    }

    #[test]
    fn allow_lists_and_authority_tenants_restrict() {
        let allowed: BTreeSet<String> = [T1.to_string()].into();
        let p = template("https://login.microsoftonline.com/organizations/v2.0");
        let iss = |t: &str| format!("https://login.microsoftonline.com/{t}/v2.0");
        assert_eq!(check(&p, Some(&allowed), &iss(T1), Some(T1)), Ok(()));
        assert_eq!(
            check(&p, Some(&allowed), &iss(T2), Some(T2)),
            Err(IssuerError::TenantNotAllowed { tenant: T2.into() })
        );
        assert!(matches!(
            check(&p, None, &iss(CONSUMER_TENANT), Some(CONSUMER_TENANT)),
            Err(IssuerError::TenantNotAllowed { .. })
        ));
        let pinned = template(&format!("https://login.microsoftonline.com/{T1}/v2.0"));
        assert_eq!(check(&pinned, None, &iss(T1), Some(T1)), Ok(()));
        assert!(check(&pinned, None, &iss(T2), Some(T2)).is_err());
        let fixed = IssuerPolicy::Fixed(iss(T1));
        assert_eq!(check(&fixed, None, &iss(T1), None), Ok(()));
        assert_eq!(
            check(&fixed, Some(&allowed), &iss(T1), None),
            Err(IssuerError::NoTenant)
        );
        assert_eq!(check(&fixed, Some(&allowed), &iss(T1), Some(T1)), Ok(()));
        assert_eq!(
            check(&fixed, None, &iss(T2), Some(T2)),
            Err(IssuerError::Mismatch)
        );
    }

    #[test]
    fn tenant_ids_are_guids() {
        assert!(is_tenant_id(T1));
        assert!(!is_tenant_id("common"));
        assert!(!is_tenant_id("72f988bf86f141af91ab2d7cd011db47"));
        assert!(!is_tenant_id("72f988bf-86f1-41af-91ab-2d7cd011db4g"));
    }
}
