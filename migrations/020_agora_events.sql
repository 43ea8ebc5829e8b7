-- Agora's channel events as its Notification Center Service reports them
-- (issue 18: who actually joined): one row per notification, its project
-- and notice id the key, so that Agora's resends are kept once. Expand only: a new table
-- the previous release does not know.

CREATE TABLE agora_event (
    notice_id  text NOT NULL CHECK (octet_length(notice_id) BETWEEN 1 AND 256),
    project    text NOT NULL CHECK (octet_length(project) BETWEEN 1 AND 64),
    event_type smallint NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('channel_created', 'channel_destroyed', 'joined', 'left', 'role_changed')),
    role       text NOT NULL CHECK (role IN ('', 'broadcaster', 'audience', 'communication')),
    channel    text NOT NULL CHECK (octet_length(channel) <= 64),
    uid        bigint NOT NULL CHECK (uid BETWEEN 0 AND 4294967295),
    platform   integer NOT NULL,
    client_seq bigint NOT NULL,
    at         timestamptz NOT NULL,
    received   timestamptz NOT NULL DEFAULT now(),
    -- joins only: whether a token the broker granted covered the join
    -- (NULL for the other events).
    explained  boolean CHECK ((kind = 'joined') = (explained IS NOT NULL)),
    PRIMARY KEY (project, notice_id)
);

-- The questions are per channel (or uid) and period.
CREATE INDEX agora_event_channel ON agora_event (project, channel, at);
CREATE INDEX agora_event_uid ON agora_event (project, uid, at) WHERE uid <> 0;
-- The joins no grant explains, for GET /v1/audit/unexplained.
CREATE INDEX agora_event_unexplained ON agora_event (project, at) WHERE NOT explained;
