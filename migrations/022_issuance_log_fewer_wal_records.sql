-- The issuance log's cost per batch (issue 19). Each batch moved the chain
-- head and its minute's seq range with INSERT … ON CONFLICT DO UPDATE,
-- which writes a lock record to WAL before each update; they are updated in
-- place now, the rows made only when missing (the first batch ever, a new
-- minute). And each batch looked every value up in the dictionary three
-- times (is it new, mark it used today, its id), computing its key each
-- time: it is looked up once now, with its key computed once, and looked up
-- again only when the batch brought new values. issuance_log_store and
-- issuance_log_append as migrations 017 and 015 made them otherwise. Same
-- signatures: writers of the previous release call these bodies too. No
-- table changes.

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
BEGIN
    -- The batch's distinct values, each with its key, computed once
    -- (issuance_log_value_key is a function call each time).
    SELECT array_agg(p.kind ORDER BY p.kind, p.value), array_agg(p.value ORDER BY p.kind, p.value),
        array_agg(issuance_log_value_key(p.value) ORDER BY p.kind, p.value)
    INTO kinds, vals, keys
    FROM (SELECT DISTINCT v.kind, v.value
        FROM issuance_log_rows(seqs, ats, request_ids, issuers, subjects, accounts, uids, groups_json,
            services, channels, roles, requested_ttls, granted_ttls, decisions, reasons, rules,
            policy_versions, client_ips, user_agents, token_fingerprints, key_ids, hashes,
            trace_ids, projects, app_ids) b
        CROSS JOIN LATERAL (VALUES (2::smallint, b.subject), (3::smallint, b.account), (4::smallint, b.groups),
            (6::smallint, b.channel), (8::smallint, b.reason), (10::smallint, b.client_ip), (11::smallint, b.user_agent),
            (15::smallint, b.context)) AS v(kind, value)
        WHERE v.value <> '') p;
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
        issuance_log_hex(b.token_fingerprint), b.hash, issuance_log_hex(b.trace_id)
    FROM issuance_log_rows(seqs, ats, request_ids, issuers, subjects, accounts, uids, groups_json,
        services, channels, roles, requested_ttls, granted_ttls, decisions, reasons, rules,
        policy_versions, client_ips, user_agents, token_fingerprints, key_ids, hashes,
        trace_ids, projects, app_ids) b
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

CREATE OR REPLACE FUNCTION issuance_log_append(
    expected_seq bigint, expected_hash bytea, expected_mac bytea, expected_key_id text,
    new_mac bytea, batch_key_id text,
    seqs bigint[], ats timestamptz[], request_ids text[], issuers text[],
    subjects text[], accounts text[], uids bigint[],
    group_offsets integer[], group_counts integer[], group_names text[],
    services text[], channels text[], roles text[],
    requested_ttls integer[], granted_ttls integer[], decisions text[],
    reasons text[], rules text[], policy_versions bigint[], client_ips text[],
    user_agents text[], token_fingerprints text[], prev_hashes bytea[], hashes bytea[],
    trace_ids text[], projects text[], app_ids text[], tree_first bigint, tree_hashes bytea,
    OUT outcome text, OUT head_seq bigint, OUT head_hash bytea, OUT head_mac bytea,
    OUT head_key_id text, OUT has_records boolean, OUT policy_version bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(cardinality(seqs), 0);
    tree_next bigint;
BEGIN
    IF n = 0 THEN
        RAISE EXCEPTION 'issuance_log_append: empty batch' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF batch_key_id IS NULL OR batch_key_id = '' THEN
        RAISE EXCEPTION 'issuance_log_append: batch_key_id is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Every holder of this lock holds it for one statement: waiting is short.
    PERFORM set_config('lock_timeout', '1500', true);
    PERFORM pg_advisory_xact_lock(3173581853742769109);

    SELECT coalesce(max(id), 0) INTO policy_version FROM policy_history;
    IF EXISTS (SELECT 1 FROM unnest(decisions, policy_versions) AS d(decision, version)
               WHERE d.decision = 'granted' AND d.version < policy_version) THEN
        outcome := 'stale';
        RETURN;
    END IF;

    SELECT h.seq, h.hash, h.mac, h.key_id INTO head_seq, head_hash, head_mac, head_key_id
        FROM issuance_log_head h;
    IF NOT FOUND THEN
        has_records := EXISTS (SELECT 1 FROM issuance_log_record);
        IF expected_seq <> 0 OR has_records THEN
            outcome := 'moved';
            RETURN;
        END IF;
    ELSIF (head_seq, head_hash, head_mac, head_key_id)
        IS DISTINCT FROM (expected_seq, expected_hash, expected_mac, expected_key_id) THEN
        -- This writer links to this head next: unless another already
        -- holds a live turn at it, the turn is its own.
        INSERT INTO issuance_log_turn AS t (id, seq, first_at, first_request_id, until)
            VALUES (true, head_seq, ats[1], request_ids[1], clock_timestamp() + interval '300 milliseconds')
            ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, first_at = EXCLUDED.first_at,
                first_request_id = EXCLUDED.first_request_id, until = EXCLUDED.until
            WHERE t.until < clock_timestamp() OR t.seq <> EXCLUDED.seq;
        outcome := 'moved';
        RETURN;
    ELSIF EXISTS (SELECT 1 FROM issuance_log_turn t WHERE t.seq = head_seq AND t.until > clock_timestamp()
                  AND (t.first_at, t.first_request_id) IS DISTINCT FROM (ats[1], request_ids[1])) THEN
        -- Another writer was told the head moved and is linking its batch
        -- to this head: it goes first. This one is answered as if the head
        -- had moved (to where it is) and links again.
        outcome := 'moved';
        RETURN;
    END IF;

    PERFORM issuance_log_store(seqs, ats, request_ids, issuers, subjects, accounts, uids,
        ARRAY(SELECT CASE WHEN g.count = 0 THEN '' ELSE to_json(group_names[g.off + 1 : g.off + g.count])::text END
              FROM unnest(group_offsets, group_counts) WITH ORDINALITY AS g(off, count, i) ORDER BY g.i),
        services, channels, roles, requested_ttls, granted_ttls, decisions, reasons, rules,
        policy_versions, client_ips, user_agents, token_fingerprints,
        array_fill(batch_key_id, ARRAY[n]), hashes, trace_ids, projects, app_ids);

    -- The tree's stored hashes of these records, when the caller gives them
    -- (this release does; the previous one does not, and this release's
    -- writers then build them from the records): they must continue the
    -- stored hashes exactly.
    IF tree_hashes IS NOT NULL THEN
        -- As issuance_log_tree_next(), inline so that its plan is cached.
        SELECT t.first_idx + length(t.hashes) / 32 INTO tree_next FROM issuance_log_tree t
            ORDER BY t.first_idx DESC LIMIT 1;
        tree_next := coalesce(tree_next, 0);
        IF tree_first IS DISTINCT FROM tree_next OR length(tree_hashes) = 0 OR length(tree_hashes) % 32 <> 0 THEN
            RAISE EXCEPTION 'issuance_log_append: tree hashes from % do not continue the stored ones (next %)',
                tree_first, tree_next USING ERRCODE = 'raise_exception';
        END IF;
        INSERT INTO issuance_log_tree (first_idx, hashes) VALUES (tree_first, tree_hashes);
    END IF;

    -- The head moves on in place (an upsert would write a lock record
    -- first); its row is made by the first batch ever. Under the chain lock.
    UPDATE issuance_log_head SET seq = seqs[n], hash = hashes[n], mac = new_mac, key_id = batch_key_id WHERE id;
    IF NOT FOUND THEN
        INSERT INTO issuance_log_head (id, seq, hash, mac, key_id)
            VALUES (true, seqs[n], hashes[n], new_mac, batch_key_id);
    END IF;
    outcome := 'appended';
    head_seq := seqs[n];
    head_hash := hashes[n];
    head_mac := new_mac;
    head_key_id := batch_key_id;
END
$$;
