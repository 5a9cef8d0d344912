// npm `oidc-provider` 6.31.1 (installed as `oidc-provider-6`) for idweb's
// front-channel logout tests: the 7.0 release removed Front-Channel Logout,
// 6.31.1 is the last release with it. Development only, like server.mjs, and
// configured the same way (see server.mjs); front-channel clients set
// `frontchannel_logout_uri` (and `frontchannel_logout_session_required`).
//
// 6.x asks for consent and grants offline_access (a refresh token) only when
// the authorization request says `prompt=consent`.

'use strict';

const { createServer } = require('node:http');
const { randomBytes } = require('node:crypto');

const { Provider } = require('oidc-provider-6');

const { clientDefaults, readConfig, eventLine } = require('./common.cjs');

async function main() {
  const config = readConfig(process.argv[2] || process.env.OIDC_PROVIDER_CONFIG);

  const server = createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, resolve);
  });
  const { port } = server.address();
  const issuer = config.issuer || `http://${config.host}:${port}`;

  const provider = new Provider(issuer, {
    clients: config.clients.map(clientDefaults),
    cookies: { keys: [randomBytes(32).toString('base64')] },
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
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: true },
      // Drafts, acknowledged at the versions 6.31.1 implements.
      backchannelLogout: { enabled: true, ack: 'draft-06' },
      frontchannelLogout: { enabled: true, ack: 'draft-04' },
      issAuthResp: { enabled: true, ack: 'draft-00' },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    rotateRefreshToken: true,
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

  server.on('request', provider.callback);
  process.stdout.write(`ready ${issuer}\n`);

  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => server.close(() => process.exit(0)));
  }
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
