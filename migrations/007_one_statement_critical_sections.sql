-- Critical sections shared by replicas run inside one statement and commit
-- in it: no replica ever holds a lock that another waits for across a round
-- trip to the broker (a replica whose link goes dark must not stall the
-- others).
--
-- 1. issuance_log_append waits for the chain lock server-side, bounded by a
--    local lock_timeout, instead of answering 'busy' (which made writers wait
--    for the lock inside a transaction of their own). It no longer answers
--    'busy'.
-- 2. A grant is made on the committed policy: under the chain lock, a batch
--    with a granted record whose policy_version is older than the newest
--    policy change (max(policy_history.id)) is not written; the answer is
--    'stale' with that version in policy_version, and the writer drops the
--    stale grants (their requests decide again on the new rules) and appends
--    the rest. Denials and invalid requests may be recorded on the version
--    they were made on.
-- 3. policy_apply makes a policy change in one statement, taking the policy
--    change lock and then the chain lock, so that a change and a grant are
--    ordered: once a change has committed, no append of a grant decided
--    before it commits.
--
-- Writers of the previous release call the same issuance_log_append: they
-- select the columns they know, never see 'busy', and fail closed (503) on
-- 'stale', which they do not know.

DROP FUNCTION issuance_log_append(bigint, bytea, bytea, text, bytea, text,
    bigint[], timestamptz[], text[], text[], text[], text[], bigint[],
    integer[], integer[], text[], text[], text[], text[],
    integer[], integer[], text[], text[], text[], bigint[], text[],
    text[], text[], bytea[], bytea[]);

CREATE FUNCTION issuance_log_append(
    expected_seq bigint, expected_hash bytea, expected_mac bytea, expected_key_id text,
    new_mac bytea, batch_key_id text,
    seqs bigint[], ats timestamptz[], request_ids text[], issuers text[],
    subjects text[], accounts text[], uids bigint[],
    group_offsets integer[], group_counts integer[], group_names text[],
    services text[], channels text[], roles text[],
    requested_ttls integer[], granted_ttls integer[], decisions text[],
    reasons text[], rules text[], policy_versions bigint[], client_ips text[],
    user_agents text[], token_fingerprints text[], prev_hashes bytea[], hashes bytea[],
    OUT outcome text, OUT head_seq bigint, OUT head_hash bytea, OUT head_mac bytea,
    OUT head_key_id text, OUT has_records boolean, OUT policy_version bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(cardinality(seqs), 0);
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
        has_records := EXISTS (SELECT 1 FROM issuance_log);
        IF expected_seq <> 0 OR has_records THEN
            outcome := 'moved';
            RETURN;
        END IF;
    ELSIF (head_seq, head_hash, head_mac, head_key_id)
        IS DISTINCT FROM (expected_seq, expected_hash, expected_mac, expected_key_id) THEN
        outcome := 'moved';
        RETURN;
    END IF;

    INSERT INTO issuance_log (seq, at, request_id, issuer, subject, account, uid, groups,
        service, channel, role, requested_ttl, granted_ttl, decision, reason, rule,
        policy_version, client_ip, user_agent, token_fingerprint, key_id, prev_hash, hash)
    SELECT r.seq, r.at, r.request_id, r.issuer, r.subject, r.account, r.uid,
        group_names[r.group_offset + 1 : r.group_offset + r.group_count],
        r.service, r.channel, r.role, r.requested_ttl, r.granted_ttl, r.decision, r.reason, r.rule,
        r.policy_version, r.client_ip, r.user_agent, r.token_fingerprint,
        batch_key_id, r.prev_hash, r.hash
    FROM unnest(seqs, ats, request_ids, issuers, subjects, accounts, uids,
        group_offsets, group_counts, services, channels, roles,
        requested_ttls, granted_ttls, decisions, reasons, rules,
        policy_versions, client_ips, user_agents, token_fingerprints, prev_hashes, hashes)
        AS r(seq, at, request_id, issuer, subject, account, uid,
        group_offset, group_count, service, channel, role,
        requested_ttl, granted_ttl, decision, reason, rule,
        policy_version, client_ip, user_agent, token_fingerprint, prev_hash, hash);

    INSERT INTO issuance_log_head (id, seq, hash, mac, key_id)
        VALUES (true, seqs[n], hashes[n], new_mac, batch_key_id)
        ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, mac = EXCLUDED.mac,
            key_id = EXCLUDED.key_id;
    outcome := 'appended';
    head_seq := seqs[n];
    head_hash := hashes[n];
    head_mac := new_mac;
    head_key_id := batch_key_id;
END
$$;

-- A rule line as the policy history shows it (the broker's Rule JSON).
CREATE FUNCTION policy_rule_json(id bigint, ptype text, v0 text, v1 text, v2 text, v3 text, v4 text)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE ptype
        WHEN 'p2' THEN jsonb_build_object('id', id, 'subject', v0, 'channel', v1, 'role', v2,
            'effect', 'allow', 'maxTtlSeconds', 0)
        WHEN 'p3' THEN jsonb_build_object('id', id, 'subject', v0, 'channel', v1, 'role', 'login',
            'effect', v2, 'maxTtlSeconds', coalesce(nullif(v3, '')::integer, 0))
        ELSE jsonb_build_object('id', id, 'subject', v0, 'channel', v1, 'role', v2,
            'effect', v3, 'maxTtlSeconds', coalesce(nullif(v4, '')::integer, 0))
    END
$$;

-- policy_apply removes the rules remove_ids names and adds the lines given
-- (ids from casbin_rule_id_seq in the order given; login rules, ptype p3, in
-- policy_login_rule), records the change in policy_history and announces its
-- version on the broker_policy channel, all in the caller's one statement.
-- With unless_ptype set, it does nothing when a line of that type exists
-- (skipped). Unknown ids raise no_data_found; a duplicate raises
-- unique_violation; nothing is changed then.
CREATE FUNCTION policy_apply(actor text, request_id text, action text, remove_ids bigint[],
    add_ptypes text[], add_v0 text[], add_v1 text[], add_v2 text[], add_v3 text[], add_v4 text[], add_v5 text[],
    unless_ptype text,
    OUT version bigint, OUT skipped boolean, OUT removed jsonb, OUT added jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    want integer := (SELECT count(DISTINCT x) FROM unnest(remove_ids) x);
    got integer;
    ids bigint[];
BEGIN
    PERFORM set_config('lock_timeout', '2000', true);
    PERFORM pg_advisory_xact_lock(27710370586391041);  -- policy changes in commit order (policy.changeLock)
    PERFORM pg_advisory_xact_lock(3173581853742769109);  -- ordered with every append
    skipped := false;
    IF coalesce(unless_ptype, '') <> '' AND (
        EXISTS (SELECT 1 FROM casbin_rule WHERE ptype = unless_ptype) OR
        EXISTS (SELECT 1 FROM policy_login_rule WHERE ptype = unless_ptype)) THEN
        skipped := true;
        SELECT coalesce(max(id), 0) INTO version FROM policy_history;
        RETURN;
    END IF;

    WITH gone AS (
        DELETE FROM casbin_rule WHERE id = ANY(remove_ids) RETURNING id, ptype, v0, v1, v2, v3, v4, v5
    ), gone_login AS (
        DELETE FROM policy_login_rule WHERE id = ANY(remove_ids) RETURNING id, ptype, v0, v1, v2, v3, v4, v5
    ), all_gone AS (
        SELECT * FROM gone UNION ALL SELECT * FROM gone_login
    )
    SELECT count(*), jsonb_agg(jsonb_build_array(id, ptype, v0, v1, v2, v3, v4, v5) ORDER BY id)
        INTO got, removed FROM all_gone;
    IF got <> coalesce(want, 0) THEN
        RAISE EXCEPTION 'no policy rule has that id' USING ERRCODE = 'no_data_found';
    END IF;

    SELECT array_agg(nextval('casbin_rule_id_seq') ORDER BY g) INTO ids
        FROM generate_series(1, coalesce(cardinality(add_ptypes), 0)) g;
    WITH lines AS (
        SELECT ids[i] AS id, add_ptypes[i] AS ptype, add_v0[i] AS v0, add_v1[i] AS v1, add_v2[i] AS v2,
               add_v3[i] AS v3, add_v4[i] AS v4, add_v5[i] AS v5
        FROM generate_series(1, coalesce(cardinality(add_ptypes), 0)) i
    ), put AS (
        INSERT INTO casbin_rule (id, ptype, v0, v1, v2, v3, v4, v5)
        SELECT * FROM lines WHERE ptype <> 'p3' RETURNING id, ptype, v0, v1, v2, v3, v4, v5
    ), put_login AS (
        INSERT INTO policy_login_rule (id, ptype, v0, v1, v2, v3, v4, v5)
        SELECT * FROM lines WHERE ptype = 'p3' RETURNING id, ptype, v0, v1, v2, v3, v4, v5
    ), all_put AS (
        SELECT * FROM put UNION ALL SELECT * FROM put_login
    )
    SELECT jsonb_agg(jsonb_build_array(id, ptype, v0, v1, v2, v3, v4, v5) ORDER BY id) INTO added FROM all_put;

    INSERT INTO policy_history (actor, request_id, action, before, after)
    VALUES (actor, coalesce(request_id, ''), action,
        (SELECT jsonb_agg(policy_rule_json((l->>0)::bigint, l->>1, l->>2, l->>3, l->>4, l->>5, l->>6) ORDER BY (l->>0)::bigint)
            FROM jsonb_array_elements(removed) l),
        (SELECT jsonb_agg(policy_rule_json((l->>0)::bigint, l->>1, l->>2, l->>3, l->>4, l->>5, l->>6) ORDER BY (l->>0)::bigint)
            FROM jsonb_array_elements(added) l))
    RETURNING id INTO version;
    PERFORM pg_notify('broker_policy', version::text);
END
$$;
