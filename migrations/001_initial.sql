-- Initial schema: policies (Casbin layout), their change history, identity
-- bindings and the issuance log.

CREATE TABLE casbin_rule (
    id    bigserial PRIMARY KEY,
    ptype text NOT NULL,
    v0    text NOT NULL DEFAULT '',
    v1    text NOT NULL DEFAULT '',
    v2    text NOT NULL DEFAULT '',
    v3    text NOT NULL DEFAULT '',
    v4    text NOT NULL DEFAULT '',
    v5    text NOT NULL DEFAULT '',
    CONSTRAINT casbin_rule_unique UNIQUE (ptype, v0, v1, v2, v3, v4, v5)
);

-- Every change to casbin_rule, by whom and why.
CREATE TABLE policy_history (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    request_id text NOT NULL DEFAULT '',
    action     text NOT NULL,
    before     jsonb,
    after      jsonb
);
CREATE INDEX policy_history_at ON policy_history (at);

-- One Agora uid per (issuer, subject), allocated once and kept forever.
CREATE TABLE identities (
    issuer     text NOT NULL,
    subject    text NOT NULL,
    uid        bigint NOT NULL CHECK (uid BETWEEN 1 AND 4294967295),
    account    text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer, subject),
    CONSTRAINT identities_uid_unique UNIQUE (uid)
);

-- One row per decision; seq orders the hash chain.
CREATE TABLE issuance_log (
    seq               bigint PRIMARY KEY,
    at                timestamptz NOT NULL,
    request_id        text NOT NULL DEFAULT '',
    issuer            text NOT NULL DEFAULT '',
    subject           text NOT NULL DEFAULT '',
    account           text NOT NULL DEFAULT '',
    uid               bigint,
    groups            text[] NOT NULL DEFAULT '{}',
    service           text NOT NULL DEFAULT '',
    channel           text NOT NULL DEFAULT '',
    role              text NOT NULL DEFAULT '',
    requested_ttl     integer,
    granted_ttl       integer,
    decision          text NOT NULL,
    reason            text NOT NULL DEFAULT '',
    rule              text NOT NULL DEFAULT '',
    policy_version    bigint NOT NULL DEFAULT 0,
    client_ip         text NOT NULL DEFAULT '',
    user_agent        text NOT NULL DEFAULT '',
    token_fingerprint text NOT NULL DEFAULT '',
    prev_hash         bytea NOT NULL,
    hash              bytea NOT NULL
);
CREATE INDEX issuance_log_at ON issuance_log (at);
CREATE INDEX issuance_log_subject ON issuance_log (subject, seq);
CREATE INDEX issuance_log_channel ON issuance_log (channel, seq);
