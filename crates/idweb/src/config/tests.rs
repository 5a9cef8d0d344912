use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const KEY64: &str =
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==";

fn base() -> Vec<(String, String)> {
    env(&[
        ("IDWEB_AUTHORITY", "https://login.example.com/tenant"),
        ("IDWEB_CLIENT_ID", "app"),
        ("IDWEB_CLIENT_SECRET", "secret"),
        ("IDWEB_PUBLIC_URL", "https://app.example.com/"),
        ("IDWEB_COOKIE_KEY", KEY64),
        ("IDWEB_CACHE_KEYS", CACHE_KEYS),
    ])
}

const CACHE_KEYS: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

fn with(mut v: Vec<(String, String)>, k: &str, val: &str) -> Vec<(String, String)> {
    v.retain(|(key, _)| key != k);
    v.push((k.into(), val.into()));
    v
}

fn without(mut v: Vec<(String, String)>, k: &str) -> Vec<(String, String)> {
    v.retain(|(key, _)| key != k);
    v
}

fn err(toml: Option<&str>, env: Vec<(String, String)>) -> String {
    Settings::from_sources(toml, env)
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn defaults_and_derived_values() {
    let s = Settings::from_sources(None, base()).unwrap();
    assert_eq!(
        s.redirect_uri().as_str(),
        "https://app.example.com/signin-oidc"
    );
    assert_eq!(s.scopes, ["openid", "profile", "offline_access"]);
    assert_eq!(s.store, StoreUrl::memory());
    assert!(s.store.is_memory() && s.store.options().next().is_none());
    assert_eq!(s.client_auth, ClientAuthMethod::ClientSecretBasic);
    assert_eq!(s.listen, "127.0.0.1:5000".parse().unwrap());
    assert!(s.secure_cookies());
    assert_eq!(s.cookie_key_source(), KeySource::Configured);
    assert_eq!(s.public_origin(), "https://app.example.com");
}

#[test]
fn missing_required_keys_are_named() {
    for (var, key) in [
        ("IDWEB_AUTHORITY", "authority"),
        ("IDWEB_CLIENT_ID", "client_id"),
        ("IDWEB_CLIENT_SECRET", "client_secret"),
        ("IDWEB_PUBLIC_URL", "public_url"),
    ] {
        let e = err(None, without(base(), var));
        assert!(e.contains(var) && e.contains(key), "{e}");
    }
}

#[test]
fn plain_http_only_for_loopback() {
    let e = err(
        None,
        with(base(), "IDWEB_AUTHORITY", "http://login.example.com"),
    );
    assert!(e.contains("IDWEB_AUTHORITY") && e.contains("https"), "{e}");
    let e = err(
        None,
        with(base(), "IDWEB_PUBLIC_URL", "http://app.example.com"),
    );
    assert!(e.contains("IDWEB_PUBLIC_URL"), "{e}");
    for ok in [
        "http://127.0.0.1:9000",
        "http://localhost:9000",
        "http://[::1]:9000",
    ] {
        let s = Settings::from_sources(
            None,
            with(with(base(), "IDWEB_AUTHORITY", ok), "IDWEB_PUBLIC_URL", ok),
        )
        .unwrap();
        assert!(!s.secure_cookies());
    }
    let e = err(None, with(base(), "IDWEB_AUTHORITY", "ftp://x.example.com"));
    assert!(e.contains("IDWEB_AUTHORITY"), "{e}");
}

#[test]
fn cookie_key_rules() {
    let e = err(None, without(base(), "IDWEB_COOKIE_KEY"));
    assert!(e.contains("IDWEB_COOKIE_KEY"), "{e}");
    let local = with(
        without(base(), "IDWEB_COOKIE_KEY"),
        "IDWEB_PUBLIC_URL",
        "http://127.0.0.1:5000",
    );
    let s = Settings::from_sources(None, local).unwrap();
    assert_eq!(s.cookie_key_source(), KeySource::Generated);
    assert!(s.cookie_key_bytes().len() >= 64);
    let e = err(None, with(base(), "IDWEB_COOKIE_KEY", "c2hvcnQ="));
    assert!(e.contains("IDWEB_COOKIE_KEY") && e.contains("64"), "{e}");
    let e = err(None, with(base(), "IDWEB_COOKIE_KEY", "not base64 !!"));
    assert!(e.contains("IDWEB_COOKIE_KEY"), "{e}");
    let dbg = format!("{:?}", Settings::from_sources(None, base()).unwrap());
    assert!(!dbg.contains(KEY64) && !dbg.contains("\"secret\""), "{dbg}");
}

#[test]
fn scopes_store_and_auth_method() {
    let s = Settings::from_sources(
        None,
        with(base(), "IDWEB_SCOPES", "profile api://todo/read"),
    )
    .unwrap();
    assert_eq!(s.scopes, ["openid", "profile", "api://todo/read"]);
    let e = err(None, with(base(), "IDWEB_SCOPES", "openid bad\"scope"));
    assert!(e.contains("IDWEB_SCOPES"), "{e}");
    // The core takes any store URL opaquely (the store crates judge it)...
    let s = Settings::from_sources(None, with(base(), "IDWEB_STORE", "cassandra://x")).unwrap();
    assert_eq!(s.store.scheme(), "cassandra");
    // ...but not a value that is no URL at all.
    let e = err(None, with(base(), "IDWEB_STORE", "idweb.db"));
    assert!(e.contains("IDWEB_STORE") && e.contains("memory"), "{e}");
    let s = Settings::from_sources(
        None,
        with(base(), "IDWEB_CLIENT_AUTH", "client_secret_post"),
    )
    .unwrap();
    assert_eq!(s.client_auth, ClientAuthMethod::ClientSecretPost);
    let e = err(None, with(base(), "IDWEB_CLIENT_AUTH", "private_key_jwt"));
    assert!(e.contains("IDWEB_CLIENT_AUTH"), "{e}");
    let e = err(None, with(base(), "IDWEB_LISTEN", "nowhere"));
    assert!(e.contains("IDWEB_LISTEN"), "{e}");
    let e = err(None, with(base(), "IDWEB_SESSION_LIFETIME", "5"));
    assert!(e.contains("IDWEB_SESSION_LIFETIME"), "{e}");
}

#[test]
fn toml_file_and_env_precedence() {
    let toml = r#"
        authority = "https://file.example.com"
        client_id = "from-file"
        client_secret = "file-secret"
        public_url = "https://app.example.com"
        scopes = ["openid", "email"]
        session_lifetime = 3600
    "#;
    let s = Settings::from_sources(
        Some(toml),
        env(&[
            ("IDWEB_CLIENT_ID", "from-env"),
            ("IDWEB_COOKIE_KEY", KEY64),
            ("IDWEB_CACHE_KEYS", CACHE_KEYS),
        ]),
    )
    .unwrap();
    assert_eq!(s.client_id, "from-env");
    assert_eq!(s.authority.as_str(), "https://file.example.com/");
    assert_eq!(s.scopes, ["openid", "email"]);
    assert_eq!(s.session_lifetime, Duration::from_secs(3600));
}

#[test]
fn unknown_or_bad_toml_keys_are_named() {
    let e = err(Some("clientid = \"x\""), base());
    assert!(e.contains("clientid") && e.contains("unknown"), "{e}");
    let e = err(Some("[AzureAd]\nClientID = \"x\""), base());
    assert!(e.contains("AzureAd.ClientID"), "{e}");
    let e = err(Some("client_id = { a = 1 }"), base());
    assert!(e.contains("client_id"), "{e}");
    assert!(Settings::from_sources(Some("not toml ["), base()).is_err());
}

#[test]
fn azure_ad_section_maps_to_settings() {
    let toml = r#"
        public_url = "https://app.example.com"
        [AzureAd]
        Instance = "https://login.microsoftonline.com/"
        TenantId = "contoso.onmicrosoft.com"
        ClientId = "11111111-2222-3333-4444-555555555555"
        ClientSecret = "shh"
        CallbackPath = "/signin-oidc-custom"
    "#;
    let s = Settings::from_sources(
        Some(toml),
        env(&[
            ("IDWEB_COOKIE_KEY", KEY64),
            ("IDWEB_CACHE_KEYS", CACHE_KEYS),
        ]),
    )
    .unwrap();
    assert_eq!(
        s.authority.as_str(),
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0"
    );
    assert_eq!(s.client_id, "11111111-2222-3333-4444-555555555555");
    assert_eq!(
        s.redirect_uri().as_str(),
        "https://app.example.com/signin-oidc-custom"
    );

    // Environment AzureAd__* overrides the file; IDWEB_* overrides both.
    let s = Settings::from_sources(
        Some(toml),
        env(&[
            ("IDWEB_COOKIE_KEY", KEY64),
            ("IDWEB_CACHE_KEYS", CACHE_KEYS),
            ("AzureAd__ClientId", "env-azure"),
            ("AzureAd__TenantId", "t2"),
        ]),
    )
    .unwrap();
    assert_eq!(s.client_id, "env-azure");
    assert_eq!(
        s.authority.as_str(),
        "https://login.microsoftonline.com/t2/v2.0"
    );

    let e = err(
        Some("[AzureAd]\nInstance = \"https://login.microsoftonline.com/\""),
        base(),
    );
    assert!(e.contains("AzureAd.TenantId"), "{e}");
}

#[test]
fn route_paths_default_to_microsoft_identity_web_names() {
    let s = Settings::from_sources(None, base()).unwrap();
    assert_eq!(s.path_base(), "");
    assert_eq!(s.callback_path, "/signin-oidc");
    assert_eq!(s.signed_out_callback_path, "/signout-callback-oidc");
    assert_eq!(s.remote_sign_out_path, "/signout-oidc");
    assert_eq!(s.back_channel_logout_path, "/backchannel-logout");
    assert_eq!(s.sign_in_path, "/account/signin");
    assert_eq!(s.sign_out_path, "/account/signout");
    assert_eq!(s.app_path("/"), "/");
    assert_eq!(
        s.post_logout_redirect_uri().as_str(),
        "https://app.example.com/signout-callback-oidc"
    );
    assert_eq!(
        s.front_channel_logout_uri().as_str(),
        "https://app.example.com/signout-oidc"
    );
    assert_eq!(
        s.back_channel_logout_uri().as_str(),
        "https://app.example.com/backchannel-logout"
    );
}

#[test]
fn route_paths_from_env_and_file_below_the_public_urls_path() {
    let toml = r#"
        public_url = "https://app.example.com/portal/"
        sign_in_path = "/auth/in"
        sign_out_path = "/auth/out"
        back_channel_logout_path = "/auth/bcl"
    "#;
    let s = Settings::from_sources(
        Some(toml),
        without(
            with(
                with(base(), "IDWEB_SIGNED_OUT_CALLBACK_PATH", "/auth/signed-out"),
                "IDWEB_REMOTE_SIGN_OUT_PATH",
                "/auth/fcl",
            ),
            "IDWEB_PUBLIC_URL",
        ),
    )
    .unwrap();
    assert_eq!(s.path_base(), "/portal");
    assert_eq!(s.public_url.as_str(), "https://app.example.com/portal");
    assert_eq!(s.sign_in_path, "/auth/in");
    assert_eq!(s.sign_out_path, "/auth/out");
    assert_eq!(s.app_path(&s.sign_in_path), "/portal/auth/in");
    assert_eq!(s.app_path("/"), "/portal");
    assert_eq!(
        s.redirect_uri().as_str(),
        "https://app.example.com/portal/signin-oidc"
    );
    assert_eq!(
        s.post_logout_redirect_uri().as_str(),
        "https://app.example.com/portal/auth/signed-out"
    );
    assert_eq!(
        s.front_channel_logout_uri().as_str(),
        "https://app.example.com/portal/auth/fcl"
    );
    assert_eq!(
        s.back_channel_logout_uri().as_str(),
        "https://app.example.com/portal/auth/bcl"
    );
    // The environment wins over the file.
    let s = Settings::from_sources(
        Some(toml),
        with(
            without(base(), "IDWEB_PUBLIC_URL"),
            "IDWEB_SIGN_IN_PATH",
            "/login",
        ),
    )
    .unwrap();
    assert_eq!(s.sign_in_path, "/login");
}

#[test]
fn azure_ad_route_names_map_to_settings() {
    let toml = r#"
        [AzureAd]
        CallbackPath = "/cb"
        SignedOutCallbackPath = "/signed-out"
        RemoteSignOutPath = "/remote-signout"
    "#;
    let s = Settings::from_sources(Some(toml), base()).unwrap();
    assert_eq!(s.callback_path, "/cb");
    assert_eq!(s.signed_out_callback_path, "/signed-out");
    assert_eq!(s.remote_sign_out_path, "/remote-signout");
    assert_eq!(
        s.post_logout_redirect_uri().as_str(),
        "https://app.example.com/signed-out"
    );

    // AzureAd__* variables override the file; IDWEB_* override both.
    let s = Settings::from_sources(
        Some(toml),
        with(
            with(base(), "AzureAd__SignedOutCallbackPath", "/env-signed-out"),
            "AzureAd__RemoteSignOutPath",
            "/env-remote",
        ),
    )
    .unwrap();
    assert_eq!(s.signed_out_callback_path, "/env-signed-out");
    assert_eq!(s.remote_sign_out_path, "/env-remote");
    let s = Settings::from_sources(
        Some(toml),
        with(
            with(base(), "AzureAd__RemoteSignOutPath", "/env-remote"),
            "IDWEB_REMOTE_SIGN_OUT_PATH",
            "/idweb-remote",
        ),
    )
    .unwrap();
    assert_eq!(s.remote_sign_out_path, "/idweb-remote");

    let e = err(Some("[AzureAd]\nRemoteSignOutPath = \"signout\""), base());
    assert!(
        e.contains("AzureAd.RemoteSignOutPath") && e.contains("must start with `/`"),
        "{e}"
    );
    let e = err(
        None,
        with(base(), "AzureAd__SignedOutCallbackPath", "/a?b=c"),
    );
    assert!(
        e.contains("AzureAd__SignedOutCallbackPath") && e.contains("query or fragment"),
        "{e}"
    );
}

#[test]
fn bad_route_paths_are_refused_naming_the_setting() {
    for (var, value, expect) in [
        (
            "IDWEB_SIGN_IN_PATH",
            "account/signin",
            "must start with `/`",
        ),
        ("IDWEB_SIGN_OUT_PATH", "/out?x=1", "query or fragment"),
        (
            "IDWEB_REMOTE_SIGN_OUT_PATH",
            "/fcl#top",
            "query or fragment",
        ),
        (
            "IDWEB_BACK_CHANNEL_LOGOUT_PATH",
            "https://x.example/bcl",
            "must start with `/`",
        ),
        (
            "IDWEB_SIGNED_OUT_CALLBACK_PATH",
            "/signed-out/",
            "must not end with `/`",
        ),
        ("IDWEB_CALLBACK_PATH", "/", "the app's home"),
        ("IDWEB_CALLBACK_PATH", "//evil.example.com", "empty"),
        ("IDWEB_SIGN_IN_PATH", "/a/../b", "`..` segments"),
        ("IDWEB_SIGN_IN_PATH", "/users/{id}", "has `{`"),
        ("IDWEB_SIGN_IN_PATH", "/in out", "has ` `"),
        ("IDWEB_SIGN_IN_PATH", "/a%2fb", "has `%`"),
    ] {
        let e = err(None, with(base(), var, value));
        assert!(e.contains(var) && e.contains(expect), "{var}={value}: {e}");
    }
    let e = err(Some("sign_out_path = \"/out/\""), base());
    assert!(e.contains("`sign_out_path` (file)"), "{e}");
}

#[test]
fn two_routes_on_one_path_are_refused_naming_both() {
    let e = err(
        None,
        with(
            base(),
            "IDWEB_REMOTE_SIGN_OUT_PATH",
            "/signout-callback-oidc",
        ),
    );
    assert!(
        e.contains("IDWEB_REMOTE_SIGN_OUT_PATH")
            && e.contains("`signed_out_callback_path` (IDWEB_SIGNED_OUT_CALLBACK_PATH)")
            && e.contains("every route needs its own path"),
        "{e}"
    );
    let e = err(
        Some("[AzureAd]\nCallbackPath = \"/x\""),
        with(base(), "IDWEB_SIGN_OUT_PATH", "/x"),
    );
    assert!(
        e.contains("IDWEB_SIGN_OUT_PATH") && e.contains("AzureAd.CallbackPath"),
        "{e}"
    );
}

#[test]
fn public_url_path_and_route_paths_must_agree() {
    let portal = with(base(), "IDWEB_PUBLIC_URL", "https://app.example.com/portal");
    let e = err(
        None,
        with(portal.clone(), "IDWEB_CALLBACK_PATH", "/portal/signin-oidc"),
    );
    assert!(
        e.contains("IDWEB_CALLBACK_PATH")
            && e.contains("repeats the public URL's path `/portal`")
            && e.contains("write `/signin-oidc`"),
        "{e}"
    );
    // A path that merely starts with the same letters is another path.
    let s = Settings::from_sources(None, with(portal, "IDWEB_CALLBACK_PATH", "/portal-signin"))
        .unwrap();
    assert_eq!(s.redirect_uri().path(), "/portal/portal-signin");
    for (url, expect) in [
        ("https://app.example.com/a//b", "empty"),
        ("https://app.example.com/my%20app", "has `%`"),
        ("https://app.example.com/{tenant}", "has `%`"),
    ] {
        let e = err(None, with(base(), "IDWEB_PUBLIC_URL", url));
        assert!(
            e.contains("IDWEB_PUBLIC_URL")
                && e.contains("where the app is served")
                && e.contains(expect),
            "{url}: {e}"
        );
    }
}

#[test]
fn bad_callback_path() {
    let e = err(
        None,
        with(base(), "IDWEB_CALLBACK_PATH", "//evil.example.com"),
    );
    assert!(e.contains("IDWEB_CALLBACK_PATH"), "{e}");
}

#[test]
fn cache_keys_rules() {
    let e = err(None, without(base(), "IDWEB_CACHE_KEYS"));
    assert!(e.contains("IDWEB_CACHE_KEYS"), "{e}");
    let local = with(
        without(base(), "IDWEB_CACHE_KEYS"),
        "IDWEB_PUBLIC_URL",
        "http://127.0.0.1:5000",
    );
    let s = Settings::from_sources(None, local).unwrap();
    assert_eq!(s.cache_keys_source(), KeySource::Generated);
    let e = err(None, with(base(), "IDWEB_CACHE_KEYS", "k1:c2hvcnQ="));
    assert!(
        e.contains("IDWEB_CACHE_KEYS") && e.contains("32 bytes"),
        "{e}"
    );
    let s = Settings::from_sources(None, base()).unwrap();
    assert_eq!(s.cache_keys().current_key_id(), "k1");
    assert!(!format!("{s:?}").contains("AQEBAQEB"));
}

#[test]
fn sqlite_store_setting() {
    let s = Settings::from_sources(None, with(base(), "IDWEB_STORE", "sqlite://data/idweb.db"))
        .unwrap();
    assert_eq!(s.store.scheme(), "sqlite");
    assert_eq!(s.store.url_with_credentials(), "sqlite://data/idweb.db");
    assert!(!s.store.is_memory());
    let s = Settings::from_sources(Some("store = \"sqlite:idweb.db\""), base()).unwrap();
    assert_eq!(s.store.url_with_credentials(), "sqlite:idweb.db");
    let e = err(None, with(base(), "IDWEB_STORE", "sqlite:"));
    assert!(e.contains("IDWEB_STORE"), "{e}");
}

#[test]
fn downstream_apis_from_file_and_env() {
    let toml = r#"
        [downstream.todo]
        base_url = "https://api.example.com/v1"
        scopes = "api://todo/todos.read api://todo/todos.write"
    "#;
    let s = Settings::from_sources(Some(toml), base()).unwrap();
    let todo = &s.downstream["todo"];
    assert_eq!(todo.base_url.as_str(), "https://api.example.com/v1/");
    assert_eq!(
        todo.scopes,
        ["api://todo/todos.read", "api://todo/todos.write"]
    );
    let s = Settings::from_sources(
        Some(toml),
        with(
            base(),
            "IDWEB_DOWNSTREAM__TODO__BASE_URL",
            "http://127.0.0.1:5200",
        ),
    )
    .unwrap();
    assert_eq!(
        s.downstream["todo"].base_url.as_str(),
        "http://127.0.0.1:5200/"
    );
    let e = err(
        None,
        with(
            base(),
            "IDWEB_DOWNSTREAM__GRAPH__BASE_URL",
            "https://graph.example.com",
        ),
    );
    assert!(e.contains("IDWEB_DOWNSTREAM__GRAPH__SCOPES"), "{e}");
    let e = err(
        Some("[downstream.todo]\nbase_url = \"http://api.example.com\"\nscopes = \"x\""),
        base(),
    );
    assert!(e.contains("downstream.todo.base_url"), "{e}");
    let e = err(
        Some("[downstream.todo]\nbaseurl = \"https://api.example.com\""),
        base(),
    );
    assert!(e.contains("downstream.todo.baseurl"), "{e}");
}

#[test]
fn sign_out_settings() {
    let s = Settings::from_sources(None, base()).unwrap();
    assert!(s.revoke_on_sign_out);
    assert!(s.logout_tokens.require_exp && !s.logout_tokens.require_typ);
    assert_eq!(s.logout_tokens.max_age, Duration::from_secs(600));
    let s = Settings::from_sources(
        None,
        with(
            with(
                with(base(), "IDWEB_REVOKE_ON_SIGN_OUT", "false"),
                "IDWEB_DANGER_ACCEPT_LOGOUT_TOKENS_WITHOUT_EXP",
                "true",
            ),
            "IDWEB_LOGOUT_TOKEN_MAX_AGE",
            "120",
        ),
    )
    .unwrap();
    assert!(!s.revoke_on_sign_out && !s.logout_tokens.require_exp);
    assert_eq!(s.logout_tokens.max_age, Duration::from_secs(120));
    let e = err(None, with(base(), "IDWEB_REVOKE_ON_SIGN_OUT", "maybe"));
    assert!(e.contains("IDWEB_REVOKE_ON_SIGN_OUT"), "{e}");
}

#[test]
fn store_options_from_file_and_env() {
    let env = with(
        with(
            with(base(), "IDWEB_STORE", "redis+cluster://a:1,b:2"),
            "IDWEB_STORE_L1",
            "false",
        ),
        "IDWEB_STORE_PREFIX",
        "app-a",
    );
    let s = Settings::from_sources(None, env).unwrap();
    assert_eq!(s.store.scheme(), "redis+cluster");
    assert_eq!(s.store.url_with_credentials(), "redis+cluster://a:1,b:2");
    assert_eq!(s.store.option("l1"), Some("false"));
    assert_eq!(s.store.option("prefix"), Some("app-a"));

    // Any store_* key is an option (a new store needs no change here); the
    // environment wins over the file.
    let toml = r#"
        store = "postgres://db.internal/idweb"
        store_pool_size = 16
        store_prefix = "from-file"
    "#;
    let s =
        Settings::from_sources(Some(toml), with(base(), "IDWEB_STORE_PREFIX", "from-env")).unwrap();
    assert_eq!(s.store.scheme(), "postgres");
    assert_eq!(s.store.option("pool_size"), Some("16"));
    assert_eq!(s.store.option("prefix"), Some("from-env"));

    // An option with `memory` (IDWEB_STORE forgotten) is refused, naming it.
    let e = err(None, with(base(), "IDWEB_STORE_L1", "true"));
    assert!(e.contains("IDWEB_STORE_L1") && e.contains("memory"), "{e}");
    let e = err(Some("store_prefix = \"x\""), base());
    assert!(e.contains("store_prefix"), "{e}");
    let e = err(
        None,
        with(
            with(base(), "IDWEB_STORE", "redis://h:1"),
            "IDWEB_STORE_",
            "x",
        ),
    );
    assert!(e.contains("IDWEB_STORE_"), "{e}");
}

#[test]
fn store_credentials_never_shown() {
    let s = Settings::from_sources(
        None,
        with(
            base(),
            "IDWEB_STORE",
            "redis://app:hunter2@cache.internal:6379",
        ),
    )
    .unwrap();
    assert_eq!(
        s.store.url_with_credentials(),
        "redis://app:hunter2@cache.internal:6379"
    );
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert!(dbg.contains("redis://app:***@cache.internal:6379"), "{dbg}");
    let e = err(
        None,
        with(base(), "IDWEB_STORE", "mongodb//user:hunter2@db"),
    );
    assert!(e.contains("IDWEB_STORE") && !e.contains("hunter2"), "{e}");
}

#[test]
fn purge_interval_defaults_to_five_minutes_and_is_checked() {
    let s = Settings::from_sources(None, base()).unwrap();
    assert_eq!(s.purge_interval, Duration::from_secs(300));
    let mut with = base();
    with.push(("IDWEB_PURGE_INTERVAL".into(), "0".into()));
    assert_eq!(
        Settings::from_sources(None, with).unwrap().purge_interval,
        Duration::ZERO
    );
    let mut bad = base();
    bad.push(("IDWEB_PURGE_INTERVAL".into(), "soon".into()));
    let e = err(None, bad);
    assert!(e.contains("IDWEB_PURGE_INTERVAL"), "{e}");
}

#[test]
fn allowed_tenants_and_client_capabilities() {
    const T1: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const T2: &str = "f8cdef31-a31e-4b4a-93e4-5f571e91255a";
    let s = Settings::from_sources(None, base()).unwrap();
    assert_eq!(s.allowed_tenants, None);
    assert!(s.client_capabilities.is_empty());

    let v = with(
        with(
            base(),
            "IDWEB_ALLOWED_TENANTS",
            &format!("{}, {T2} {T2}", T1.to_uppercase()),
        ),
        "IDWEB_CLIENT_CAPABILITIES",
        "cp1,cp1",
    );
    let s = Settings::from_sources(None, v).unwrap();
    assert_eq!(
        s.allowed_tenants,
        Some(vec![T1.to_string(), T2.to_string()])
    );
    assert_eq!(s.client_capabilities, vec!["cp1".to_string()]);

    // The [AzureAd] spelling, with TenantId = organizations.
    let toml = format!(
        "[AzureAd]\nTenantId = \"organizations\"\nAllowedTenants = [\"{T1}\"]\nClientCapabilities = [\"cp1\"]\n"
    );
    let s = Settings::from_sources(Some(&toml), without(base(), "IDWEB_AUTHORITY")).unwrap();
    assert_eq!(
        s.authority.as_str(),
        "https://login.microsoftonline.com/organizations/v2.0"
    );
    assert_eq!(s.allowed_tenants, Some(vec![T1.to_string()]));
    assert_eq!(s.client_capabilities, vec!["cp1".to_string()]);
    let s = Settings::from_sources(None, with(base(), "AzureAd__AllowedTenants", T2)).unwrap();
    assert_eq!(s.allowed_tenants, Some(vec![T2.to_string()]));

    let e = err(None, with(base(), "IDWEB_ALLOWED_TENANTS", "contoso.com"));
    assert!(
        e.contains("IDWEB_ALLOWED_TENANTS") && e.contains("not a tenant id"),
        "{e}"
    );
    let e = err(None, with(base(), "IDWEB_ALLOWED_TENANTS", " , "));
    assert!(e.contains("empty list"), "{e}");
    let e = err(None, with(base(), "IDWEB_CLIENT_CAPABILITIES", "cp1 \"x\""));
    assert!(e.contains("not a client capability"), "{e}");
}
