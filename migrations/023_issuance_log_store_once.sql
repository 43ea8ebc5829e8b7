-- The issuance log's Postgres time a record (issue 19): issuance_log_store
-- made every record's row twice through issuance_log_rows (its context's
-- JSON each time), once to find the batch's distinct values, through eight
-- rows a record, and once to store it; and it checked each fingerprint and
-- trace id in a PL/pgSQL call. Now each record's context is made once, the
-- distinct values come from each column's array, and the rows read only the
-- arrays they store; the hex check is inline, with issuance_log_hex still
-- refusing what is not hex. 26 → 23 µs a record in issuance_log_append
-- (BenchmarkAppendPostgresTime). Same signature and
-- the same rows: writers of the previous release call this body too.
-- issuance_log_rows, which nothing calls any more, is dropped, under the
-- chain lock: no append is storing a batch with the old body meanwhile
-- (appends wait for it, briefly). No table changes.

SET LOCAL lock_timeout = '2s';
SELECT pg_advisory_xact_lock(3173581853742769109);

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
    keys  bytea[];
    ids   jsonb;
    missing bigint;
    stale bigint[];
    touched bigint;
    contexts text[];
BEGIN
    -- Each record's context as issuance_log_rows makes it, made once.
    contexts := ARRAY(SELECT json_build_array(r.issuer, r.service, r.role, coalesce(r.project, 'default'),
            coalesce(r.app_id, ''), r.key_id, r.rule)::text
        FROM unnest(issuers, services, roles, projects, app_ids, key_ids, rules, seqs)
            WITH ORDINALITY AS r(issuer, service, role, project, app_id, key_id, rule, seq, i)
        ORDER BY r.i);
    -- The batch's distinct values, each with its key, computed once
    -- (issuance_log_value_key is a function call each time).
    SELECT array_agg(p.kind ORDER BY p.kind, p.value), array_agg(p.value ORDER BY p.kind, p.value),
        array_agg(issuance_log_value_key(p.value) ORDER BY p.kind, p.value)
    INTO kinds, vals, keys
    FROM (SELECT 2::smallint AS kind, v AS value FROM unnest(subjects) v
        UNION SELECT 3::smallint, v FROM unnest(accounts) v
        UNION SELECT 4::smallint, v FROM unnest(groups_json) v
        UNION SELECT 6::smallint, v FROM unnest(channels) v
        UNION SELECT 8::smallint, v FROM unnest(reasons) v
        UNION SELECT 10::smallint, v FROM unnest(client_ips) v
        UNION SELECT 11::smallint, v FROM unnest(user_agents) v
        UNION SELECT 15::smallint, v FROM unnest(contexts) v) p
    WHERE p.value <> '';
    -- Each value's id, by kind and value ('2:alice'), found by its key and
    -- compared whole; and the ids whose day of last use is not today. The
    -- values new to the dictionary are added (no lock on those it has) and
    -- looked up again: most batches have none, and look each value up once.
    FOR attempt IN 1..2 LOOP
        SELECT count(*) FILTER (WHERE v.id IS NULL), jsonb_object_agg(p.kind || ':' || p.value, v.id),
            array_agg(v.id) FILTER (WHERE v.used < today)
        INTO missing, ids, stale
        FROM unnest(kinds, vals, keys) AS p(kind, value, key)
        LEFT JOIN issuance_log_value v ON v.kind = p.kind
            AND issuance_log_value_key(v.value) = p.key AND v.value = p.value;
        EXIT WHEN missing = 0 OR attempt = 2;
        INSERT INTO issuance_log_value (kind, value)
        SELECT p.kind, p.value FROM unnest(kinds, vals, keys) AS p(kind, value, key)
        WHERE NOT EXISTS (SELECT 1 FROM issuance_log_value v WHERE v.kind = p.kind
            AND issuance_log_value_key(v.value) = p.key AND v.value = p.value)
        ORDER BY p.kind, p.value
        ON CONFLICT (kind, issuance_log_value_key(value)) DO NOTHING;
    END LOOP;
    -- The day each value was last used (retention's clock): one write a
    -- value and a day. Once it is today, retention keeps the value; one
    -- that retention deleted since it was looked up is not touched here.
    touched := 0;
    IF stale IS NOT NULL THEN
        UPDATE issuance_log_value SET used = today WHERE id = ANY (stale) AND used < today;
        GET DIAGNOSTICS touched = ROW_COUNT;
    END IF;
    -- A value without a row (another value holds its key, or retention
    -- deleted it as the batch was stored) fails the batch rather than be
    -- stored as none.
    IF missing > 0 OR touched < coalesce(cardinality(stale), 0) THEN
        RAISE EXCEPTION 'issuance_log_store: % of the batch''s values have no row in issuance_log_value',
            greatest(missing, coalesce(cardinality(stale), 0) - touched)
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
        CASE WHEN b.token_fingerprint ~ '^([0-9a-f]{2})*$' THEN decode(b.token_fingerprint, 'hex')
            ELSE issuance_log_hex(b.token_fingerprint) END,
        b.hash,
        CASE WHEN b.trace_id IS NULL THEN '\x'::bytea WHEN b.trace_id ~ '^([0-9a-f]{2})*$' THEN decode(b.trace_id, 'hex')
            ELSE issuance_log_hex(b.trace_id) END
    FROM unnest(seqs, ats, request_ids, subjects, accounts, uids, groups_json, channels,
            requested_ttls, granted_ttls, decisions, reasons, policy_versions, client_ips, user_agents,
            token_fingerprints, hashes, trace_ids, contexts)
        AS b(seq, at, request_id, subject, account, uid, groups, channel, requested_ttl, granted_ttl,
            decision, reason, policy_version, client_ip, user_agent, token_fingerprint, hash, trace_id, context)
    ORDER BY b.seq;

    -- The minutes' seq ranges, updated in place; a minute's row is made
    -- when the minute starts. (INSERT … ON CONFLICT DO UPDATE locks the row
    -- it updates with a WAL record of its own: one more a batch. Batches are
    -- stored under the chain lock, one at a time, so the update cannot miss
    -- a row another batch is making; the ON CONFLICT stays as a safeguard.)
    WITH m AS (
        SELECT date_trunc('minute', u.at, 'UTC') AS minute, min(u.seq) AS first_seq, max(u.seq) AS last_seq
        FROM unnest(seqs, ats) AS u(seq, at) GROUP BY 1
    ), updated AS (
        UPDATE issuance_log_minute im SET first_seq = least(im.first_seq, m.first_seq),
            last_seq = greatest(im.last_seq, m.last_seq)
        FROM m WHERE im.minute = m.minute
        RETURNING im.minute
    )
    INSERT INTO issuance_log_minute (minute, first_seq, last_seq)
    SELECT m.minute, m.first_seq, m.last_seq FROM m
    WHERE NOT EXISTS (SELECT 1 FROM updated WHERE updated.minute = m.minute)
    ON CONFLICT (minute) DO UPDATE SET
        first_seq = least(issuance_log_minute.first_seq, EXCLUDED.first_seq),
        last_seq = greatest(issuance_log_minute.last_seq, EXCLUDED.last_seq);
END
$$;

-- No function calls issuance_log_rows now (the Go code never did).
DROP FUNCTION issuance_log_rows(bigint[], timestamptz[], text[], text[], text[], text[], bigint[],
    text[], text[], text[], text[], integer[], integer[], text[], text[], text[], bigint[], text[],
    text[], text[], text[], bytea[], text[], text[], text[]);
