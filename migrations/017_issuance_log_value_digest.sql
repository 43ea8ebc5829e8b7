-- The dictionary's values unique by their SHA-256, not by themselves. Its
-- unique index on (kind, value) (migration 015) held each value whole, and a
-- btree entry is at most 2,704 bytes after compression: a groups value (64
-- groups of up to 255 bytes, as a JSON array) is 16 kB and more, and when its
-- groups do not compress (random ids, such as Azure AD's group GUIDs) every
-- append of a record with them failed ("index row size exceeds btree
-- maximum"), and the token it recorded with it, every time. A value is now
-- unique by (kind, issuance_log_value_key(value)), 32 bytes whatever its
-- size, and every lookup finds it by that key and compares the value itself,
-- so that two values never share a row even were their keys to collide.
-- Channels (63 bytes at most) keep a C-collated index of their own, for the
-- auditor's channel patterns (LIKE 'prefix%').
--
-- Expand only. The rows and their ids stay; issuance_log_store keeps its
-- signature, so the previous release, whose appends reach it through
-- issuance_log_append, stores through the new one. Its own lookups
-- (v.kind = K AND v.value = $1) stay correct and find one row at most (equal
-- values have equal keys), but only channels keep an index for them: until
-- its replicas are replaced, their searches by subject or account read the
-- dictionary sequentially (under 0.1 s a million values), and their channel
-- patterns (v.kind = $1) use the channel index while Postgres plans them
-- with their values (it does as long as a generic plan, which cannot prove
-- the index's condition, would cost more).
--
-- The indexes are built under the chain lock and the dictionary's exclusive
-- lock, each waited for at most 2 s (or the migration fails; run it again).
-- Until the migration commits, appends wait for the chain lock, each for its
-- lock timeout (1.5 s) and then fail (503), and reads of the dictionary
-- wait: the builds take about 2 s a million values (2 million took 3 to 4 s
-- on two cores; SELECT count(*) FROM issuance_log_value tells how many), so
-- upgrade a large log at a quiet hour. Appends wait for the chain lock rather
-- than for the dictionary because one that waited inside the old
-- issuance_log_store would resume at its ON CONFLICT (kind, value), whose
-- constraint is gone, and fail; one that waited for the chain lock calls the
-- new one. Not CONCURRENTLY: tern would run the file outside a transaction,
-- and a concurrent build waits for every older snapshot, among them that of
-- a second `broker migrate up` waiting for tern's session lock, which this
-- one holds: Postgres detects the deadlock and aborts the build.

-- issuance_log_value_key is a value's key in the dictionary. The UTF-8 bytes
-- of a text never change: IMMUTABLE, which convert_to is not (STABLE: it
-- looks its conversion up), so Postgres does not inline the function and
-- indexes the call itself. PARALLEL SAFE, so that parallel workers build the
-- index.
CREATE FUNCTION issuance_log_value_key(value text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT sha256(convert_to(value, 'UTF8'))
$$;

SET LOCAL lock_timeout = '2s';
SELECT pg_advisory_xact_lock(3173581853742769109);
LOCK TABLE issuance_log_value IN ACCESS EXCLUSIVE MODE;

CREATE UNIQUE INDEX issuance_log_value_digest ON issuance_log_value (kind, issuance_log_value_key(value));
ALTER TABLE issuance_log_value DROP CONSTRAINT issuance_log_value_kind_value_key;
-- Channel patterns: the query names kind 6 as a literal, so that the planner
-- can use the index.
CREATE INDEX issuance_log_value_channel ON issuance_log_value (value) WHERE kind = 6;
-- The key's statistics (an expression index has its own): without them the
-- planner takes a lookup by key to match 0.5% of the dictionary and reads it
-- all instead, seconds a batch. Autovacuum's analyses keep them.
ANALYZE issuance_log_value;

-- issuance_log_store as migration 015 made it, each value found by its key
-- and compared whole, once: the records take their values' ids from the map
-- that lookup makes. Each record looking its eight values up by key, as it
-- did by value, made a batch of 500 records cost half as much again under
-- the chain lock (25 ms instead of 16); with the map it costs 11 ms.
CREATE OR REPLACE FUNCTION issuance_log_store(
    seqs bigint[], ats timestamptz[], request_ids text[], issuers text[],
    subjects text[], accounts text[], uids bigint[], groups_json text[],
    services text[], channels text[], roles text[],
    requested_ttls integer[], granted_ttls integer[], decisions text[],
    reasons text[], rules text[], policy_versions bigint[], client_ips text[],
    user_agents text[], token_fingerprints text[], key_ids text[], hashes bytea[],
    trace_ids text[], projects text[], app_ids text[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    kinds smallint[];
    vals  text[];
    ids   jsonb;
    missing bigint;
BEGIN
    SELECT array_agg(p.kind ORDER BY p.kind, p.value), array_agg(p.value ORDER BY p.kind, p.value)
    INTO kinds, vals
    FROM (SELECT DISTINCT v.kind, v.value
        FROM issuance_log_rows(seqs, ats, request_ids, issuers, subjects, accounts, uids, groups_json,
            services, channels, roles, requested_ttls, granted_ttls, decisions, reasons, rules,
            policy_versions, client_ips, user_agents, token_fingerprints, key_ids, hashes,
            trace_ids, projects, app_ids) b
        CROSS JOIN LATERAL (VALUES (2::smallint, b.subject), (3::smallint, b.account), (4::smallint, b.groups),
            (6::smallint, b.channel), (8::smallint, b.reason), (10::smallint, b.client_ip), (11::smallint, b.user_agent),
            (15::smallint, b.context)) AS v(kind, value)
        WHERE v.value <> '') p;
    -- The values new to the dictionary (no lock on those it has).
    INSERT INTO issuance_log_value (kind, value)
    SELECT p.kind, p.value FROM unnest(kinds, vals) AS p(kind, value)
    WHERE NOT EXISTS (SELECT 1 FROM issuance_log_value v WHERE v.kind = p.kind
        AND issuance_log_value_key(v.value) = issuance_log_value_key(p.value) AND v.value = p.value)
    ORDER BY p.kind, p.value
    ON CONFLICT (kind, issuance_log_value_key(value)) DO NOTHING;
    -- The day each value was last used (retention's clock): one write a
    -- value and a day.
    UPDATE issuance_log_value v SET used = today
    FROM unnest(kinds, vals) AS p(kind, value)
    WHERE v.kind = p.kind AND issuance_log_value_key(v.value) = issuance_log_value_key(p.value)
        AND v.value = p.value AND v.used < today;
    -- Each value's id, by kind and value ('2:alice'). A value without a row
    -- (another value holds its key, or retention deleted it as the batch was
    -- stored) fails the batch rather than be stored as none; once its day of
    -- last use is today, retention keeps it.
    SELECT count(*) FILTER (WHERE v.id IS NULL), jsonb_object_agg(p.kind || ':' || p.value, v.id)
    INTO missing, ids
    FROM unnest(kinds, vals) AS p(kind, value)
    LEFT JOIN issuance_log_value v ON v.kind = p.kind
        AND issuance_log_value_key(v.value) = issuance_log_value_key(p.value) AND v.value = p.value;
    IF missing > 0 THEN
        RAISE EXCEPTION 'issuance_log_store: % of the batch''s values have no row in issuance_log_value', missing
            USING ERRCODE = 'serialization_failure';
    END IF;

    INSERT INTO issuance_log_record (seq, at, policy_version, uid, context, subject, account,
        channel, groups, reason, client_ip, user_agent, requested_ttl, granted_ttl, decision,
        request_id, token_fingerprint, hash, trace_id)
    SELECT b.seq, b.at, b.policy_version,
        CASE WHEN b.uid > 2147483647 THEN b.uid - 4294967296 ELSE coalesce(b.uid, 0) END,
        (ids->>('15:' || b.context))::integer,
        coalesce((ids->>('2:' || b.subject))::integer, 0), coalesce((ids->>('3:' || b.account))::integer, 0),
        coalesce((ids->>('6:' || b.channel))::integer, 0), coalesce((ids->>('4:' || b.groups))::integer, 0),
        coalesce((ids->>('8:' || b.reason))::integer, 0), coalesce((ids->>('10:' || b.client_ip))::integer, 0),
        coalesce((ids->>('11:' || b.user_agent))::integer, 0),
        coalesce(b.requested_ttl, 0), coalesce(b.granted_ttl, 0),
        CASE b.decision WHEN 'granted' THEN 1 WHEN 'denied' THEN 2 WHEN 'invalid' THEN 3 END,
        CASE WHEN b.request_id = '' THEN '\x'::bytea
            WHEN b.request_id ~ '^([0-9a-f]{2})+$' THEN '\x01'::bytea || decode(b.request_id, 'hex')
            ELSE '\x00'::bytea || convert_to(b.request_id, 'UTF8') END,
        issuance_log_hex(b.token_fingerprint), b.hash, issuance_log_hex(b.trace_id)
    FROM issuance_log_rows(seqs, ats, request_ids, issuers, subjects, accounts, uids, groups_json,
        services, channels, roles, requested_ttls, granted_ttls, decisions, reasons, rules,
        policy_versions, client_ips, user_agents, token_fingerprints, key_ids, hashes,
        trace_ids, projects, app_ids) b
    ORDER BY b.seq;

    INSERT INTO issuance_log_minute (minute, first_seq, last_seq)
    SELECT date_trunc('minute', u.at, 'UTC'), min(u.seq), max(u.seq)
    FROM unnest(seqs, ats) AS u(seq, at) GROUP BY 1
    ON CONFLICT (minute) DO UPDATE SET
        first_seq = least(issuance_log_minute.first_seq, EXCLUDED.first_seq),
        last_seq = greatest(issuance_log_minute.last_seq, EXCLUDED.last_seq);
END
$$;
