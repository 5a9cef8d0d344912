// npm `oidc-provider` (9.x) as an independent OpenID Provider for idweb's
// interoperability tests. Development only: in-memory state, generated keys,
// the package's development login and consent pages.
//
// Configuration: JSON in the first argument, or in OIDC_PROVIDER_CONFIG:
//   {
//     "port": 0,                        // 0 = any free port
//     "host": "127.0.0.1",              // listen address (default)
//     "issuer": "http://127.0.0.1:PORT", // default: http://HOST:PORT
//     "clients": [ { client metadata (RFC 7591 names) }, ... ]
//   }
// Clients get defaults: grant types authorization_code + refresh_token,
// response type code, client_secret_basic.
//
// Output on stdout, one line each:
//   ready ISSUER             when it listens
//   event NAME {JSON}        provider events the tests look at (no secrets)

import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';

import Provider from 'oidc-provider';

import { clientDefaults, readConfig, eventLine } from './common.cjs';

const config = readConfig(process.argv[2] ?? process.env.OIDC_PROVIDER_CONFIG);

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(config.port, config.host, resolve);
});
const { port } = server.address();
const issuer = config.issuer ?? `http://${config.host}:${port}`;

const provider = new Provider(issuer, {
  clients: config.clients.map(clientDefaults),
  // idweb sends RP-initiated logout by POST (the OP must accept GET and POST,
  // RP-Initiated Logout 1.0 §2); 9.x serves POST at its end-session (and
  // authorization) endpoint only with enableHttpPostMethods, which in turn
  // requires its long-lived cookies to be SameSite=None.
  enableHttpPostMethods: true,
  cookies: {
    keys: [randomBytes(32).toString('base64url')],
    long: { sameSite: 'none' },
  },
  // Any login name is an account; its name is the login.
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, name: sub, preferred_username: sub };
      },
    };
  },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
  },
  // The requested profile claims go into the ID token too.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  // offline_access gives a refresh token. oidc-provider honours offline_access
  // only when the request says prompt=consent (OpenID Connect Core 1.0 §11),
  // so the tests sign in with /account/signin?prompt=consent. Every
  // redemption of a refresh token rotates it.
  issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token')
    && code.scopes.has('offline_access'),
  rotateRefreshToken: true,
  // 9.x refuses outgoing requests (back-channel logout tokens) to special-use
  // addresses such as 127.0.0.1 through the dispatcher it passes in; the apps
  // under test listen on loopback, so send without that dispatcher.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
});

for (const name of [
  'authorization.error',
  'backchannel.error',
  'backchannel.success',
  'end_session.error',
  'end_session.success',
  'end_session_confirm.error',
  'grant.error',
  'grant.revoked',
  'grant.success',
  'refresh_token.consumed',
  'refresh_token.destroyed',
  'revocation.error',
  'server_error',
]) {
  provider.on(name, (...args) => process.stdout.write(eventLine(name, args)));
}

server.on('request', provider.callback());
process.stdout.write(`ready ${issuer}\n`);

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
