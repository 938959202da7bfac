// A real OpenID provider (the oidc-provider package) on a free local port, issuing real JWT
// access tokens by the client-credentials grant, for the tests of JWT bearer tokens. Its signing
// keys are made here, so tests can also sign tokens with the very same key (expired ones, for
// another audience) and know its kid.
import { createServer, type Server } from 'node:http';
import { exportJWK, generateKeyPair, type CryptoKey as JoseCryptoKey, type JWK } from 'jose';
import Provider from 'oidc-provider';

export const AUDIENCE = 'https://motive.test/api';

export interface ClientSpec {
  readonly id: string;
  readonly secret: string;
  /** Claims added to its access tokens (tenant, roles, …). */
  readonly claims?: Record<string, unknown>;
}

export interface StartedProvider {
  readonly issuer: string;
  /** The private signing key (with its kid), to sign tokens by hand. */
  readonly privateJwk: JWK & { kid: string };
  readonly privateKey: JoseCryptoKey;
  readonly publicJwk: JWK & { kid: string };
  /** A real access token for a client, by the client-credentials grant. */
  token(client: ClientSpec, resource?: string): Promise<string>;
  close(): Promise<void>;
}

export async function startProvider(clients: readonly ClientSpec[], options: { kid?: string; accessTokenTtl?: number } = {}): Promise<StartedProvider> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const kid = options.kid ?? `k-${Math.random().toString(36).slice(2, 10)}`;
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' } as JWK & { kid: string };
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } as JWK & { kid: string };
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const issuer = `http://127.0.0.1:${port}`;
  const claimsOf = new Map(clients.map((c) => [c.id, c.claims ?? {}]));
  const provider = new Provider(issuer, {
    clients: clients.map((c) => ({
      client_id: c.id,
      client_secret: c.secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_post',
    })),
    jwks: { keys: [privateJwk] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx: unknown, resource: string) => ({
          audience: resource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: options.accessTokenTtl ?? 600,
          scope: 'chat',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    ttl: { ClientCredentials: 600 },
    extraTokenClaims: (_ctx: unknown, token: { clientId?: string }) => claimsOf.get(token.clientId ?? '') ?? {},
  } as never);
  const callback = provider.callback();
  server.on('request', callback);
  return {
    issuer,
    privateJwk,
    privateKey,
    publicJwk,
    async token(client, resource = AUDIENCE) {
      const response = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials', client_id: client.id, client_secret: client.secret, resource, scope: 'chat' }),
      });
      const body = (await response.json()) as { access_token?: string; error?: string; error_description?: string };
      if (!body.access_token) throw new Error(`the provider issued no token: ${body.error ?? response.status} ${body.error_description ?? ''}`);
      return body.access_token;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
