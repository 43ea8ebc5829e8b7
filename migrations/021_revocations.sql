-- Revocations (issue 18): a user's tokens ended before they expire. Each
-- one keeps the deny rule that blocks new tokens to the user for its scope
-- (a policy rule, so that every replica stops granting within a second) and
-- the Agora ban rules that end the live sessions, until its end. Expand
-- only: a new table the previous release does not know.

CREATE TABLE revocation (
    id         bigserial PRIMARY KEY,
    project    text NOT NULL CHECK (octet_length(project) BETWEEN 1 AND 64),
    subject    text NOT NULL CHECK (octet_length(subject) BETWEEN 1 AND 300),
    channel    text NOT NULL CHECK (octet_length(channel) BETWEEN 1 AND 64),
    publish_only boolean NOT NULL,
    reason     text NOT NULL CHECK (octet_length(reason) BETWEEN 1 AND 512),
    actor      text NOT NULL,
    created    timestamptz NOT NULL DEFAULT now(),
    until      timestamptz NOT NULL,
    rule_id    bigint NOT NULL, -- 0: no deny rule of its own (the policy refused already)
    bans       jsonb NOT NULL DEFAULT '[]',
    bans_error text NOT NULL DEFAULT '',
    lifted     timestamptz,
    lifted_by  text NOT NULL DEFAULT ''
);

-- The revocations still in force, for the expiry sweep and the listing.
CREATE INDEX revocation_active ON revocation (until) WHERE lifted IS NULL;
-- One revocation in force per user and scope: the row is made first, as a
-- claim, so that two replicas (or admins) revoking the same at once make
-- one, and neither holds a lock while it talks to Agora.
CREATE UNIQUE INDEX revocation_one_active ON revocation (project, subject, channel, publish_only) WHERE lifted IS NULL;
