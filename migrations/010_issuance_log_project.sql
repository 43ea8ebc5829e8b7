-- The Agora project and App ID of each issuance-log record, so that auditors
-- can tell which project a decision was for and which App ID signed the
-- token (several projects, issue 15). Expand only: two columns with constant
-- defaults (no table rewrite) — records written before say project
-- 'default', the only project there was, and an empty App ID (not recorded
-- then) — and issuance_log_append gets an overload with two more arguments.
-- The previous release keeps calling the 31-argument form, which becomes a
-- wrapper of the new one (its records get 'default' and ''); the 30-argument
-- form still calls the 31-argument one. So the critical section (lock,
-- stale-policy check, head compare, insert) keeps one definition. Like the
-- trace id, the two are not part of the hash chain until the log's record
-- format is versioned. No index: building one here would block appends for
-- as long as it takes on a large log (migrations run in a transaction, so not
-- CONCURRENTLY); the project filter reads in seq order.
-- The ALTER needs the table's exclusive lock for an instant; were it to wait
-- behind a long auditor read, every append would queue behind it. Give up
-- after 2 s instead (the migration fails; run it again).
SET LOCAL lock_timeout = '2s';
ALTER TABLE issuance_log ADD COLUMN project text NOT NULL DEFAULT 'default',
    ADD COLUMN app_id text NOT NULL DEFAULT '';

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
    trace_ids text[], projects text[], app_ids text[],
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
        policy_version, client_ip, user_agent, token_fingerprint, key_id, prev_hash, hash, trace_id,
        project, app_id)
    SELECT r.seq, r.at, r.request_id, r.issuer, r.subject, r.account, r.uid,
        group_names[r.group_offset + 1 : r.group_offset + r.group_count],
        r.service, r.channel, r.role, r.requested_ttl, r.granted_ttl, r.decision, r.reason, r.rule,
        r.policy_version, r.client_ip, r.user_agent, r.token_fingerprint,
        batch_key_id, r.prev_hash, r.hash, coalesce(r.trace_id, ''),
        coalesce(r.project, 'default'), coalesce(r.app_id, '')
    FROM unnest(seqs, ats, request_ids, issuers, subjects, accounts, uids,
        group_offsets, group_counts, services, channels, roles,
        requested_ttls, granted_ttls, decisions, reasons, rules,
        policy_versions, client_ips, user_agents, token_fingerprints, prev_hashes, hashes, trace_ids,
        projects, app_ids)
        AS r(seq, at, request_id, issuer, subject, account, uid,
        group_offset, group_count, service, channel, role,
        requested_ttl, granted_ttl, decision, reason, rule,
        policy_version, client_ip, user_agent, token_fingerprint, prev_hash, hash, trace_id,
        project, app_id);

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
    trace_ids text[],
    OUT outcome text, OUT head_seq bigint, OUT head_hash bytea, OUT head_mac bytea,
    OUT head_key_id text, OUT has_records boolean, OUT policy_version bigint)
LANGUAGE sql AS $$
    SELECT * FROM issuance_log_append(expected_seq, expected_hash, expected_mac, expected_key_id,
        new_mac, batch_key_id, seqs, ats, request_ids, issuers, subjects, accounts, uids,
        group_offsets, group_counts, group_names, services, channels, roles,
        requested_ttls, granted_ttls, decisions, reasons, rules, policy_versions, client_ips,
        user_agents, token_fingerprints, prev_hashes, hashes, trace_ids, NULL::text[], NULL::text[])
$$;
