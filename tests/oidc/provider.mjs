// A throwaway OpenID provider for the [oauth2] tests: node's oidc-provider (v8, which runs on
// Debian 12's Node 18) on a loopback port, with keys it makes at start, one for each of
// RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 and EdDSA (a token's alg picks it;
// their kids begin with KID_PREFIX, so a restart with another prefix is a key rotation). Tokens come from the client-credentials grant of the test clients; the token
// request's extra parameters say what the test wants: username (the email and
// preferred_username claims), alg, format (jwt or opaque), ttl (seconds), resource (the
// audience). Introspection and revocation are on.
//
// node provider.mjs PORT KID_PREFIX [CERT KEY]   (with CERT and KEY: HTTPS)
// Prints LOADED once its keys are made, READY once it listens (it waits for the port).
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK } from 'jose';

const [port, prefix, cert, key] = process.argv.slice(2);
const scheme = cert ? 'https' : 'http';
const issuer = `${scheme}://127.0.0.1:${port}`;

async function signing(alg, kid, options = {}) {
  const { privateKey } = await generateKeyPair(alg, { extractable: true, ...options });
  return { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
}

const jwks = {
  keys: [
    await signing('RS256', `${prefix}-rs256`),
    await signing('RS384', `${prefix}-rs384`),
    await signing('RS512', `${prefix}-rs512`),
    await signing('PS256', `${prefix}-ps256`),
    await signing('PS384', `${prefix}-ps384`),
    await signing('PS512', `${prefix}-ps512`),
    await signing('ES256', `${prefix}-es256`),
    await signing('ES384', `${prefix}-es384`),
    await signing('EdDSA', `${prefix}-eddsa`, { crv: 'Ed25519' }),
  ],
};

const client = (id, secret) => ({
  client_id: id,
  client_secret: secret,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: 'client_secret_basic',
});

// The token endpoint's own parameters (extraParams covers the authorization endpoints only).
const param = (ctx, name) =>
  (ctx.oidc.body && ctx.oidc.body[name]) || (ctx.oidc.params && ctx.oidc.params[name]) || undefined;

const provider = new Provider(issuer, {
  clients: [client('mail-client', 'mail-client-secret'), client('smtp-server', 'smtp-server-secret')],
  jwks,
  extraParams: ['username', 'alg', 'format', 'ttl'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:smtp',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: 'mail openid email',
        audience: resource,
        accessTokenTTL: Number(param(ctx, 'ttl')) || 600,
        accessTokenFormat: param(ctx, 'format') === 'opaque' ? 'opaque' : 'jwt',
        jwt: { sign: { alg: param(ctx, 'alg') || 'RS256' } },
      }),
    },
  },
  extraTokenClaims: (ctx) => {
    const username = param(ctx, 'username');
    return username ? { email: username, preferred_username: username.split('@')[0] } : undefined;
  },
});
provider.proxy = false;

const server = cert
  ? https.createServer({ cert: readFileSync(cert), key: readFileSync(key) }, provider.callback())
  : http.createServer(provider.callback());
// Idle connections stay open a minute: Node's default (5 s) closes one under a client that
// is about to reuse it.
server.keepAliveTimeout = 60000;
// A successor started while this port's provider still runs (a key rotation without the
// keys' making in the gap) waits for the port.
server.on('error', (e) => {
  if (e.code !== 'EADDRINUSE') throw e;
  setTimeout(() => server.listen(Number(port), '127.0.0.1'), 20);
});
server.on('listening', () => console.log(`READY ${issuer}`));
console.log('LOADED');
server.listen(Number(port), '127.0.0.1');
