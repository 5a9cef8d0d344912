"""MSAL Python against idweb's token cache documents, offline.

Run by crates/idweb-cli/tests/msal.rs with the interpreter of the virtual
environment that scripts/setup/30-python.sh makes (.test-deps/venv). Every
mode builds an MSAL ``ConfidentialClientApplication`` for a generic OpenID
provider (``oidc_authority``) whose ``http_client`` is a stub: it answers the
provider's discovery document and, in ``write`` mode only, one token request.
Any other request fails the run (MSAL asks for no instance discovery with
``oidc_authority``, so none is answered). Output is JSON on standard output;
tokens are never printed, except inside the cache documents that ``remove``
and ``write`` print, which is their purpose.

Modes:

``load``
    Loads a document (as ``idweb cache export --format msal`` writes it) into
    ``SerializableTokenCache``, then ``get_accounts()`` and
    ``acquire_token_silent(scopes, account)``. Prints
    ``{"msal_version", "accounts", "account", "token_source",
    "access_token_sha256", "token_type", "expires_in", "requests"}``.
``remove``
    Loads a document, finds the account by ``home_account_id`` among
    ``get_accounts()``, calls ``remove_account(account)`` and prints the
    remaining cache document (``serialize()``).
``write``
    Makes MSAL write a cache itself: ``initiate_auth_code_flow`` then
    ``acquire_token_by_auth_code_flow``, the stub answering the token request
    with the response described by ``--response FILE`` (JSON: ``scope``,
    ``access_token``, ``refresh_token``, ``expires_in``, ``id_token_claims``,
    optionally ``client_info`` as ``{"uid", "utid"}``; the ID token is built
    from the claims, with MSAL's nonce, unsigned as MSAL does not check it).
    Prints the cache document.

Exit status: 0 on success; 1 with a message on standard error otherwise.
"""

import argparse
import base64
import hashlib
import json
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True

import msal  # noqa: E402  (after the bytecode switch)

REDIRECT_URI = "https://app.example.test/signin-oidc"
AUTH_CODE = "offline-authorization-code"


class Refused(RuntimeError):
    """A request the stub does not answer."""


class StubResponse:
    """The response interface MSAL's http_client must return."""

    def __init__(self, status_code, body):
        self.status_code = status_code
        self.text = json.dumps(body)
        self.headers = {"Content-Type": "application/json"}

    def raise_for_status(self):
        if self.status_code >= 400:
            raise RuntimeError("HTTP error %d" % self.status_code)


class StubHttpClient:
    """Answers the provider's discovery and, when given, one token request."""

    def __init__(self, authority, token_endpoint, token_answer=None):
        self.authority = authority
        self.token_endpoint = token_endpoint
        # MSAL's `Authority` asks exactly `oidc_authority + "/.well-known/..."`.
        self.discovery_url = authority + "/.well-known/openid-configuration"
        self.token_answer = token_answer
        self.token_requests = 0
        self.requests = []
        self.refused = []

    def _refuse(self, method, url):
        line = "%s %s" % (method, url.split("?")[0])
        self.refused.append(line)
        raise Refused(
            "MSAL made a request this offline check does not answer: " + line)

    def get(self, url, params=None, headers=None, **kwargs):
        self.requests.append("GET " + url)
        if url == self.discovery_url and not params:
            return StubResponse(200, {
                "issuer": self.authority,
                "authorization_endpoint":
                    self.authority + "/protocol/openid-connect/auth",
                "token_endpoint": self.token_endpoint,
                "jwks_uri": self.authority + "/protocol/openid-connect/certs",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            })
        self._refuse("GET", url)

    def post(self, url, params=None, data=None, headers=None, **kwargs):
        self.requests.append("POST " + url)
        if (self.token_answer is not None and url == self.token_endpoint
                and self.token_requests == 0):
            self.token_requests += 1
            return StubResponse(200, self.token_answer(data or {}))
        self._refuse("POST", url)

    def close(self):
        pass


def fail(message):
    print("error: " + message, file=sys.stderr)
    sys.exit(1)


def sha256_hex(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def read_text(path):
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def build_app(args, stub, cache):
    return msal.ConfidentialClientApplication(
        args.client_id,
        client_credential="offline-check-secret",
        oidc_authority=args.authority,
        http_client=stub,
        token_cache=cache,
    )


def load_cache(path):
    cache = msal.SerializableTokenCache()
    cache.deserialize(read_text(path))
    return cache


def find_account(accounts, home_account_id):
    if home_account_id is None:
        if len(accounts) != 1:
            fail("get_accounts() returned %d accounts; pass --account"
                 % len(accounts))
        return accounts[0]
    found = [a for a in accounts if a.get("home_account_id") == home_account_id]
    if len(found) != 1:
        fail("get_accounts() returned no account %r (it returned %s)" % (
            home_account_id, [a.get("home_account_id") for a in accounts]))
    return found[0]


def check_stub(stub):
    if stub.refused:
        fail("MSAL made requests this offline check does not answer: "
             + ", ".join(stub.refused))


def mode_load(args):
    cache = load_cache(args.cache)
    stub = StubHttpClient(args.authority, args.token_endpoint)
    app = build_app(args, stub, cache)
    accounts = app.get_accounts()
    account = find_account(accounts, args.account)
    result = app.acquire_token_silent(args.scope, account=account)
    check_stub(stub)
    if not result or "access_token" not in result:
        detail = {k: v for k, v in (result or {}).items()
                  if k in ("error", "error_description", "suberror")}
        fail("acquire_token_silent served no token offline: %s"
             % (detail or "no cached token matched"))
    return {
        "msal_version": msal.__version__,
        "accounts": accounts,
        "account": account,
        "token_source": result.get("token_source"),
        "access_token_sha256": sha256_hex(result["access_token"]),
        "token_type": result.get("token_type"),
        "expires_in": result.get("expires_in"),
        "requests": stub.requests,
    }


def mode_remove(args):
    cache = load_cache(args.cache)
    stub = StubHttpClient(args.authority, args.token_endpoint)
    app = build_app(args, stub, cache)
    account = find_account(app.get_accounts(), args.account)
    app.remove_account(account)
    check_stub(stub)
    return json.loads(cache.serialize())


def mode_write(args):
    response = json.loads(read_text(args.response))
    now = int(time.time())
    scopes = [s for s in response["scope"].split()
              if s not in ("openid", "profile", "offline_access")]
    state = {}

    def token_answer(data):
        if data.get("grant_type") != "authorization_code" \
                or data.get("code") != AUTH_CODE \
                or not data.get("code_verifier"):
            fail("the token request is not the expected code redemption")
        claims = {
            "iss": args.authority,
            "aud": args.client_id,
            "iat": now,
            "exp": now + 3600,
            "nonce": state["nonce"],
        }
        claims.update(response.get("id_token_claims", {}))
        header = {"alg": "RS256", "kid": "k1", "typ": "JWT"}
        id_token = ".".join([
            b64url(json.dumps(header).encode()),
            b64url(json.dumps(claims).encode()),
            b64url(b"unsigned"),
        ])
        answer = {
            "token_type": "Bearer",
            "access_token": response["access_token"],
            "expires_in": response.get("expires_in", 3600),
            "scope": response["scope"],
            "id_token": id_token,
        }
        if response.get("refresh_token"):
            answer["refresh_token"] = response["refresh_token"]
        if response.get("client_info"):
            answer["client_info"] = b64url(
                json.dumps(response["client_info"]).encode())
        return answer

    cache = msal.SerializableTokenCache()
    stub = StubHttpClient(args.authority, args.token_endpoint, token_answer)
    app = build_app(args, stub, cache)
    flow = app.initiate_auth_code_flow(
        scopes, redirect_uri=REDIRECT_URI, response_mode="form_post")
    query = urllib.parse.parse_qs(urllib.parse.urlparse(flow["auth_uri"]).query)
    state["nonce"] = query["nonce"][0]  # already hashed, as the provider echoes it
    result = app.acquire_token_by_auth_code_flow(
        flow, {"code": AUTH_CODE, "state": flow["state"]})
    check_stub(stub)
    if "error" in result:
        fail("acquire_token_by_auth_code_flow failed: %s %s" % (
            result.get("error"), result.get("error_description")))
    if stub.token_requests != 1:
        fail("MSAL did not redeem the code at the token endpoint")
    return json.loads(cache.serialize())


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)

    def common(p):
        p.add_argument("--authority", required=True,
                       help="issuer URL (https, with a path), used as oidc_authority")
        p.add_argument("--token-endpoint", required=True)
        p.add_argument("--client-id", required=True)

    p = sub.add_parser("load", help="acquire_token_silent from a document")
    common(p)
    p.add_argument("--cache", required=True, help="MSAL document, or - for stdin")
    p.add_argument("--scope", action="append", required=True)
    p.add_argument("--account", help="home_account_id (default: the only one)")
    p = sub.add_parser("remove", help="remove_account, print what remains")
    common(p)
    p.add_argument("--cache", required=True, help="MSAL document, or - for stdin")
    p.add_argument("--account", help="home_account_id (default: the only one)")
    p = sub.add_parser("write", help="let MSAL write a cache for a token response")
    common(p)
    p.add_argument("--response", required=True, help="JSON file, or - for stdin")
    args = parser.parse_args(argv)

    modes = {"load": mode_load, "remove": mode_remove, "write": mode_write}
    try:
        out = modes[args.mode](args)
    except Refused as e:
        fail(str(e))
    print(json.dumps(out, indent=4, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
