// oidc-provider as a headless OAuth 2.0 authorization server for calsync's integration tests.
//
// Owns: turning the JSON config written by tests/support/oidc.rs into a running oidc-provider
// (clients, scopes, PKCE S256, token TTLs, refresh-token rotation) and the headless interaction
// handler that finishes login + consent on GET. It must not hold state outside this process and
// must not print secrets (client secrets, tokens) to its log: the Rust helper shows that log in
// failure messages.
//
// Usage: node server.mjs CONFIG.json
//   { "port": 0 (any free port) | N, "access_token_ttl_secs": 3600, "rotate_refresh_tokens": false,
//     "clients": [{ "client_id", "client_secret", "redirect_uris": [..], "auth_method"? }] }
// It binds 127.0.0.1 first (so no port race with other test binaries), then prints
// "listening http://127.0.0.1:PORT" (the issuer) once it accepts connections.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

// Startup stages go to the log with their time since the process began, so a start that stalls
// (it happened on CI: the runtime warning printed, then nothing for 90 s) shows where.
const stage = (what) => console.error(`startup: ${what} at ${Math.round(performance.now())} ms`);
stage('modules loaded');

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

// Resource-server scopes: oidc-provider only puts non-OIDC scopes into access tokens issued for a
// resource indicator, so every flow gets one default resource (the calendar APIs) and its tokens
// carry exactly the calendar scopes that were requested (visible to introspection).
const RESOURCE_SCOPES = [
  'https://www.googleapis.com/auth/calendar.events',
  'https://www.googleapis.com/auth/calendar.calendarlist.readonly',
  'https://www.googleapis.com/auth/calendar.freebusy',
  'https://www.googleapis.com/auth/calendar',
  'https://www.googleapis.com/auth/calendar.app.created',
  'Calendars.ReadWrite',
];
const RESOURCE = 'https://calendar.test/';
const ttl = Number(config.access_token_ttl_secs) || 3600;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: 'test-rs256' };
stage('signing key generated');

let provider;
function buildProvider(issuer) {
  provider = new Provider(issuer, {
    clients: config.clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      redirect_uris: c.redirect_uris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: c.auth_method || 'client_secret_basic',
    })),
    jwks: { keys: [jwk] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    scopes: ['openid', 'email', 'offline_access'],
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    async findAccount(_ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return { sub, email: `${sub}@example.com`, email_verified: true };
        },
      };
    },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      // The fake calendar APIs introspect with any confidential client's credentials (they play the
      // resource server); a client may revoke only its own tokens.
      introspection: { enabled: true, allowedPolicy: async (_ctx, client) => client.clientAuthMethod !== 'none' },
      revocation: { enabled: true, allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator) => {
          if (indicator !== RESOURCE) throw new errors.InvalidTarget();
          return {
            scope: RESOURCE_SCOPES.join(' '),
            audience: RESOURCE,
            accessTokenTTL: ttl,
            accessTokenFormat: 'opaque',
          };
        },
      },
    },
    // Google issues a refresh token on the first code exchange of an offline request without
    // prompt=consent, Microsoft whenever offline_access is asked for. oidc-provider drops
    // offline_access from requests without prompt=consent, so any calendar scope counts too.
    async issueRefreshToken(_ctx, client, code) {
      if (!client.grantTypeAllowed('refresh_token')) return false;
      return code.scopes.has('offline_access') || [...code.scopes].some((s) => RESOURCE_SCOPES.includes(s));
    },
    rotateRefreshToken: Boolean(config.rotate_refresh_tokens),
    ttl: {
      AccessToken: ttl,
      AuthorizationCode: 600,
      Grant: 14 * 24 * 3600,
      IdToken: 3600,
      Interaction: 600,
      RefreshToken: 14 * 24 * 3600,
      Session: 14 * 24 * 3600,
    },
    interactions: { url: async (_ctx, interaction) => `/interaction/${interaction.uid}` },
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });

  // Log only what helps a failing test: event names and error codes, never tokens or secrets.
  for (const event of ['grant.error', 'server_error', 'authorization.error', 'introspection.error', 'revocation.error']) {
    provider.on(event, (_ctx, err) => console.error(`${event}: ${err.name} ${err.message} ${err.error_detail || ''}`));
  }
  return provider.callback();
}

// The user: login_hint names the account (default alice); login_hint=deny is the user saying no.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  const account = (typeof params.login_hint === 'string' && params.login_hint) || 'alice';
  if (account === 'deny') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'The user denied the request',
    }, { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'login') {
    await provider.interactionFinished(req, res, { login: { accountId: account } }, { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'consent') {
    const accountId = session.accountId;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    const consent = details.grantId ? {} : { grantId };
    await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
    return;
  }
  res.statusCode = 500;
  res.end(`unsupported prompt ${prompt.name}`);
}

let callback;
const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      console.error(`interaction failed: ${err.name} ${err.message}`);
      if (!res.headersSent) {
        res.statusCode = 400;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ error: 'interaction_failed', error_description: err.message }));
      }
    });
    return;
  }
  callback(req, res);
});
server.listen(config.port || 0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  stage('port bound');
  callback = buildProvider(issuer);
  console.log(`listening ${issuer}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
