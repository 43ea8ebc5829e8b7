-- Token URLs: capability URLs that stand in for a bearer token for clients
-- that cannot send one (Agora's UI Kits). Only a keyed hash of each secret is
-- stored, with the identity it was made for (as at creation), its expiry and
-- its revocation. A new table: releases before it never touch it.
CREATE TABLE token_urls (
    id            text PRIMARY KEY,
    secret_hash   bytea NOT NULL UNIQUE,
    issuer        text NOT NULL,
    subject       text NOT NULL,
    account       text NOT NULL DEFAULT '',
    account_error text NOT NULL DEFAULT '',
    groups        text[] NOT NULL DEFAULT '{}',
    uid_claim     bigint CHECK (uid_claim BETWEEN 1 AND 4294967295),
    downgrade     boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX token_urls_owner ON token_urls (issuer, subject);
