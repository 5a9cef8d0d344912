// Shared by server.mjs (oidc-provider 9.x) and server-6.cjs (6.31.1): the
// configuration and the event lines printed for the tests.

'use strict';

function readConfig(json) {
  if (!json) {
    throw new Error('missing configuration: pass JSON as the first argument or in OIDC_PROVIDER_CONFIG');
  }
  const config = JSON.parse(json);
  return {
    port: Number(config.port ?? 0),
    host: config.host ?? '127.0.0.1',
    issuer: config.issuer,
    clients: Array.isArray(config.clients) ? config.clients : [],
  };
}

function clientDefaults(client) {
  return {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...client,
  };
}

function errorOf(err) {
  if (!err) return undefined;
  return {
    error: err.error ?? err.name,
    error_description: err.error_description ?? err.message,
  };
}

function sidInToken(client, sid) {
  return client.backchannelLogoutSessionRequired ? sid : undefined;
}

function clientIdOf(ctx) {
  return ctx?.oidc?.client?.clientId;
}

// What each event tells, without secrets.
function summary(name, args) {
  switch (name) {
    // `sid` as the logout token carries it: only for clients that require it.
    case 'backchannel.success': {
      const [, client, accountId, sid] = args;
      return { client_id: client.clientId, sub: accountId, sid: sidInToken(client, sid) };
    }
    case 'backchannel.error': {
      const [, err, client, accountId, sid] = args;
      return {
        client_id: client.clientId, sub: accountId, sid: sidInToken(client, sid), ...errorOf(err),
      };
    }
    case 'grant.success': {
      const [ctx] = args;
      return { client_id: clientIdOf(ctx), grant_type: ctx.oidc.params?.grant_type };
    }
    case 'grant.revoked': {
      const [ctx, grantId] = args;
      return { client_id: clientIdOf(ctx), grant_id: grantId, route: ctx?.oidc?.route };
    }
    case 'end_session.success': {
      const [ctx] = args;
      return { client_id: clientIdOf(ctx) };
    }
    case 'refresh_token.consumed':
    case 'refresh_token.destroyed': {
      const [token] = args;
      return { client_id: token.clientId, grant_id: token.grantId };
    }
    default: {
      // *.error and server_error: (ctx, err)
      const [ctx, err] = args;
      return { client_id: clientIdOf(ctx), ...errorOf(err) };
    }
  }
}

function eventLine(name, args) {
  let detail;
  try {
    detail = summary(name, args);
  } catch (e) {
    detail = { summary_failed: String(e) };
  }
  return `event ${name} ${JSON.stringify(detail)}\n`;
}

module.exports = { readConfig, clientDefaults, eventLine };
