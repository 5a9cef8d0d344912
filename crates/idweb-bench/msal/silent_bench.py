"""Times MSAL Python's ``acquire_token_silent`` cache hits, offline.

Run by ``crates/idweb-bench/benches/msal.rs`` (and its test) with the
interpreter of the virtual environment that ``scripts/setup/30-python.sh``
makes (``.test-deps/venv``, MSAL 1.39). For each size N it builds a
``ConfidentialClientApplication`` for a generic OpenID provider
(``oidc_authority``) whose ``http_client`` is a stub answering only the
provider's discovery document (any other request fails the run), and fills
its ``SerializableTokenCache`` with N signed-in users: for each, the token
response of an authorization-code redemption is handed to
``TokenCache.add`` exactly as MSAL does after a code redemption (an access
token for ``api://todo/todos.read api://todo/todos.write`` valid for an
hour, a refresh token, an ID token; account, ID token, refresh token and
access token entries result).

Then, for the user in the middle of the cache, it times
``acquire_token_silent(scopes, account)`` with

* ``exact``: both cached scopes (MSAL's O(1) key lookup), and
* ``subset``: ``api://todo/todos.read`` only (MSAL scans every access token).

Each call is checked to be a cache hit returning that user's token before
timing. Timing: the calls per sample are doubled until a sample lasts at
least ``--min-sample-ms``; then ``--samples`` samples are timed and each gives
the mean time of one call. The output (standard output) is one JSON
document; tokens are never printed.
"""

import argparse
import base64
import json
import platform
import sys
import time

sys.dont_write_bytecode = True

import msal  # noqa: E402  (after the bytecode switch)

AUTHORITY = "https://idp.example.test/realms/bench"
TOKEN_ENDPOINT = AUTHORITY + "/protocol/openid-connect/token"
CLIENT_ID = "idweb-bench"
SCOPES = ["api://todo/todos.read", "api://todo/todos.write"]
CASES = {"exact": SCOPES, "subset": SCOPES[:1]}
# Sizes of the placeholder tokens, as in idweb's benchmark fixtures.
ACCESS_TOKEN_LEN = 1200
REFRESH_TOKEN_LEN = 400


class Refused(RuntimeError):
    """A request the stub does not answer."""


class StubResponse:
    def __init__(self, status_code, body):
        self.status_code = status_code
        self.text = json.dumps(body)
        self.headers = {"Content-Type": "application/json"}

    def raise_for_status(self):
        if self.status_code >= 400:
            raise RuntimeError("HTTP error %d" % self.status_code)


class StubHttpClient:
    """Answers the provider's discovery document, refuses everything else."""

    def __init__(self):
        self.discovery_url = AUTHORITY + "/.well-known/openid-configuration"
        self.refused = []

    def get(self, url, params=None, headers=None, **kwargs):
        if url == self.discovery_url and not params:
            return StubResponse(200, {
                "issuer": AUTHORITY,
                "authorization_endpoint": AUTHORITY + "/protocol/openid-connect/auth",
                "token_endpoint": TOKEN_ENDPOINT,
                "jwks_uri": AUTHORITY + "/protocol/openid-connect/certs",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            })
        self.refused.append("GET " + url.split("?")[0])
        raise Refused("GET " + url.split("?")[0])

    def post(self, url, params=None, data=None, headers=None, **kwargs):
        self.refused.append("POST " + url.split("?")[0])
        raise Refused("POST " + url.split("?")[0])

    def close(self):
        pass


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def id_token(claims):
    header = {"alg": "RS256", "kid": "k1", "typ": "JWT"}
    return ".".join([
        b64url(json.dumps(header).encode()),
        b64url(json.dumps(claims).encode()),
        b64url(b"unsigned"),  # MSAL does not check a cached ID token's signature
    ])


def access_token_for(i):
    prefix = "at-%07d-" % i
    return prefix + "a" * (ACCESS_TOKEN_LEN - len(prefix))


def sub_for(i):
    return "user-%07d" % i


def fill(app, accounts):
    """Adds one signed-in user per account, as a code redemption does."""
    now = int(time.time())
    for i in range(accounts):
        sub = sub_for(i)
        claims = {
            "iss": AUTHORITY, "aud": CLIENT_ID, "sub": sub,
            "sid": "sid-%07d" % i, "iat": now, "exp": now + 3600,
            "preferred_username": sub, "name": sub,
        }
        app.token_cache.add({
            "client_id": CLIENT_ID,
            "scope": SCOPES,
            "token_endpoint": app.authority.token_endpoint,
            "environment": app.authority.instance,
            "grant_type": "authorization_code",
            "params": {},
            "data": {},
            "response": {
                "token_type": "Bearer",
                "access_token": access_token_for(i),
                "expires_in": 3600,
                "refresh_token": "r" * REFRESH_TOKEN_LEN,
                "id_token": id_token(claims),
                "scope": " ".join(SCOPES),
            },
        })


def timed(call, samples, min_sample_s):
    iterations = 1
    while True:
        start = time.perf_counter_ns()
        for _ in range(iterations):
            call()
        if (time.perf_counter_ns() - start) / 1e9 >= min_sample_s or iterations >= 1 << 40:
            break
        iterations *= 2
    per_call = []
    for _ in range(max(samples, 1)):
        start = time.perf_counter_ns()
        for _ in range(iterations):
            call()
        per_call.append((time.perf_counter_ns() - start) / iterations)
    per_call.sort()
    return iterations, per_call


def median(values):
    n = len(values)
    if n == 0:
        return float("nan")
    if n % 2:
        return values[n // 2]
    return (values[n // 2 - 1] + values[n // 2]) / 2


def bench(accounts, samples, min_sample_s):
    stub = StubHttpClient()
    cache = msal.SerializableTokenCache()
    app = msal.ConfidentialClientApplication(
        CLIENT_ID,
        client_credential="offline-bench-secret",
        oidc_authority=AUTHORITY,
        http_client=stub,
        token_cache=cache,
    )
    started = time.perf_counter()
    fill(app, accounts)
    fill_s = time.perf_counter() - started
    access_tokens = len(cache._cache.get("AccessToken", {}))
    if access_tokens != accounts:
        raise SystemExit("error: the cache holds %d access tokens, not %d"
                         % (access_tokens, accounts))
    target = accounts // 2
    found = app.get_accounts(username=sub_for(target))
    if len(found) != 1:
        raise SystemExit("error: get_accounts found %d accounts for the user" % len(found))
    account = found[0]
    expected = access_token_for(target)
    results = []
    for case, scopes in CASES.items():
        result = app.acquire_token_silent(list(scopes), account=account)
        if (not result or result.get("token_source") != "cache"
                or result.get("access_token") != expected):
            raise SystemExit("error: %s: acquire_token_silent was not a cache hit "
                             "for the user's token" % case)

        def call(scopes=scopes):
            return app.acquire_token_silent(list(scopes), account=account)

        iterations, per_call = timed(call, samples, min_sample_s)
        # The last call is still a hit for the same token.
        last = call()
        if not last or last.get("access_token") != expected:
            raise SystemExit("error: %s: a timed call was not a hit" % case)
        results.append({
            "accounts": accounts,
            "case": case,
            "scopes": list(scopes),
            "iterations": iterations,
            "median_ns": median(per_call),
            "min_ns": per_call[0],
            "max_ns": per_call[-1],
            "samples_ns": per_call,
        })
    if stub.refused:
        raise SystemExit("error: MSAL made requests this offline bench does not answer: "
                         + ", ".join(stub.refused))
    return fill_s, results


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", default="1000,10000",
                        help="comma-separated cache sizes (users)")
    parser.add_argument("--samples", type=int, default=21)
    parser.add_argument("--min-sample-ms", type=float, default=50.0)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.accounts.split(",") if s]
    if not sizes or min(sizes) < 1:
        parser.error("--accounts needs sizes of at least 1")
    out = {
        "msal_version": msal.__version__,
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "fill_seconds": {},
        "results": [],
    }
    for n in sizes:
        fill_s, results = bench(n, args.samples, args.min_sample_ms / 1000.0)
        out["fill_seconds"][str(n)] = fill_s
        out["results"].extend(results)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except Refused as e:
        print("error: MSAL made a request this offline bench does not answer: %s" % e,
              file=sys.stderr)
        sys.exit(1)
