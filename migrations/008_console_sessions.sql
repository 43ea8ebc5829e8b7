-- Console sessions kept on the server, so that logging out, or an admin
-- signing a user out everywhere, ends a session even where its cookie was
-- copied. Only a hash of each session id is stored. A new table: releases
-- before it (sealed-cookie sessions) never touch it.
CREATE TABLE console_sessions (
    id_hash    bytea PRIMARY KEY,
    issuer     text NOT NULL,
    subject    text NOT NULL,
    email      text NOT NULL DEFAULT '',
    groups     text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX console_sessions_owner ON console_sessions (issuer, subject);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
