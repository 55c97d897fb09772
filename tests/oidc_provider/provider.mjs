// A real, certified OpenID Provider (panva's oidc-provider) for e6auth's single sign-on tests.
//
//   node provider.mjs REDIRECT_URI [REDIRECT_URI...]
//
// Listens on a free loopback port and prints "oidc-provider listening on http://127.0.0.1:PORT"
// once it serves. Clients: "e6auth" (the relying party under test; its redirect URIs are the
// arguments) and "other-app" (another application of the same provider, whose ID tokens are for
// another audience). Its own login form (devInteractions) takes any password; the login names an
// account below (only those are used). PKCE is required of every client.
//
// One test hook, for the audience refusal: POST /_test/replay-other-audience makes the provider's
// next token response to "e6auth" carry the ID token it last issued to "other-app" (signed by this
// provider, for another audience), as a mixed-up or compromised token endpoint would.
import crypto from "node:crypto";
import http from "node:http";
import { promisify } from "node:util";

import Provider from "oidc-provider";

const CLIENT_SECRET = process.env.OIDC_TEST_CLIENT_SECRET;
const OTHER_SECRET = process.env.OIDC_TEST_OTHER_SECRET;
if (!CLIENT_SECRET || !OTHER_SECRET || process.argv.length < 3) {
  console.error("usage: OIDC_TEST_CLIENT_SECRET=… OIDC_TEST_OTHER_SECRET=… node provider.mjs REDIRECT_URI…");
  process.exit(2);
}
const redirectUris = process.argv.slice(2);
const AUTH_METHOD = process.env.OIDC_TEST_AUTH_METHOD || "client_secret_basic";

// The login typed into the provider's form names one of these; any other login is refused.
const ACCOUNTS = {
  alice: { email: "alice@example.com", email_verified: true, name: "Alice Example" },
  bob: { email: "bob@example.com", email_verified: true, name: "Bob Example" },
  unverified: { email: "mallory@example.com", email_verified: false, name: "Mallory" },
  outsider: { email: "olga@elsewhere.test", email_verified: true, name: "Olga Outside" },
  etl: { email: "etl@example.com", email_verified: true, name: "Not a person" },
};

// Made on the thread pool: generateKeyPairSync now and then never returned under Node.js 20 (the
// main thread waiting on a futex), about one start in ten.
const { privateKey } = await promisify(crypto.generateKeyPair)("rsa", { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: "jwk" }), kid: "test-key-1", use: "sig", alg: "RS256" };

const server = http.createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "e6auth",
      client_secret: CLIENT_SECRET,
      redirect_uris: redirectUris,
      response_types: ["code"],
      grant_types: ["authorization_code"],
      token_endpoint_auth_method: AUTH_METHOD,
    },
    {
      client_id: "other-app",
      client_secret: OTHER_SECRET,
      redirect_uris: ["http://127.0.0.1:9/other-app/callback"],
      response_types: ["code"],
      grant_types: ["authorization_code"],
      token_endpoint_auth_method: "client_secret_post",
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString("hex")] },
  pkce: { required: () => true },
  // What Okta, Entra ID and Keycloak do by default: the scopes' claims in the ID token itself.
  conformIdTokenClaims: false,
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name"],
  },
  features: { devInteractions: { enabled: true } },
  ttl: {
    AuthorizationCode: 60,
    IdToken: 300,
    AccessToken: 300,
    Interaction: 600,
    Session: 600,
    Grant: 600,
  },
  async findAccount(ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) {
      return undefined;
    }
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...account };
      },
    };
  },
});

// oidc-provider takes client_secret_basic and client_secret_post alike, whichever is registered;
// Okta refuses a method other than the registered one. With e6auth registered for
// client_secret_post, this provider does as Okta: a Basic header at the token endpoint is refused.
provider.use(async (ctx, next) => {
  if (
    AUTH_METHOD === "client_secret_post" &&
    ctx.path === "/token" &&
    ctx.headers.authorization !== undefined
  ) {
    ctx.status = 401;
    ctx.body = { error: "invalid_client", error_description: "registered for client_secret_post" };
    return;
  }
  await next();
});

let lastOtherIdToken = null;
let replayArmed = false;
provider.use(async (ctx, next) => {
  if (ctx.method === "POST" && ctx.path === "/_test/replay-other-audience") {
    replayArmed = lastOtherIdToken !== null;
    ctx.status = replayArmed ? 204 : 409;
    return;
  }
  await next();
  if (ctx.path === "/token" && ctx.body && typeof ctx.body === "object" && ctx.body.id_token) {
    const client = ctx.oidc?.client?.clientId;
    if (client === "other-app") {
      lastOtherIdToken = ctx.body.id_token;
    } else if (client === "e6auth" && replayArmed) {
      replayArmed = false;
      ctx.body = { ...ctx.body, id_token: lastOtherIdToken };
    }
  }
});

// What went wrong inside the provider, for the test's failure message (never a secret of e6auth:
// the provider sees only its own).
provider.on("server_error", (ctx, error) => console.error("server_error", error));

server.on("request", provider.callback());
console.log(`oidc-provider listening on ${issuer}`);
