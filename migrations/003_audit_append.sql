-- Issuance log: extend the chain by one batch in a single statement.
--
-- The writer links a batch to the chain head it last saw (hashes need the
-- audit key, which never reaches the database) and calls issuance_log_append
-- once. Under the chain lock the function checks that the stored head is
-- still that one, inserts the records and moves the head; the statement's own
-- transaction commits them together. Outcomes:
--   'appended' the records and the new head are written;
--   'moved'    the head is not the expected one (another writer appended, or
--              the head was tampered with): nothing is written, and head_*
--              return the stored head (has_records tells whether records
--              exist when there is none) for the writer to authenticate and
--              link to;
--   'busy'     another transaction holds the chain lock: nothing is written.
--              The function never waits for the lock, so that the writer can
--              wait in a transaction of its own and leave out the appends
--              whose callers gave up meanwhile.
-- The lock key is the one writers took before this function existed
-- (audit.lockID, the first 8 bytes of SHA-256("broker.issuance_log")), so
-- writers of both versions exclude each other during an upgrade.
--
-- expected_seq 0 with NULL expected_hash and expected_mac means "no head yet".
-- Each record's groups are group_names[group_offsets[i] + 1 : group_offsets[i]
-- + group_counts[i]], since SQL arrays cannot be ragged. All record arrays
-- have one element per record, in seq order.
CREATE FUNCTION issuance_log_append(
    expected_seq bigint, expected_hash bytea, expected_mac bytea, new_mac bytea,
    seqs bigint[], ats timestamptz[], request_ids text[], issuers text[],
    subjects text[], accounts text[], uids bigint[],
    group_offsets integer[], group_counts integer[], group_names text[],
    services text[], channels text[], roles text[],
    requested_ttls integer[], granted_ttls integer[], decisions text[],
    reasons text[], rules text[], policy_versions bigint[], client_ips text[],
    user_agents text[], token_fingerprints text[], prev_hashes bytea[], hashes bytea[],
    OUT outcome text, OUT head_seq bigint, OUT head_hash bytea, OUT head_mac bytea,
    OUT has_records boolean)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(cardinality(seqs), 0);
BEGIN
    IF n = 0 THEN
        RAISE EXCEPTION 'issuance_log_append: empty batch' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT pg_try_advisory_xact_lock(3173581853742769109) THEN
        outcome := 'busy';
        RETURN;
    END IF;

    SELECT h.seq, h.hash, h.mac INTO head_seq, head_hash, head_mac FROM issuance_log_head h;
    IF NOT FOUND THEN
        has_records := EXISTS (SELECT 1 FROM issuance_log);
        IF expected_seq <> 0 OR has_records THEN
            outcome := 'moved';
            RETURN;
        END IF;
    ELSIF (head_seq, head_hash, head_mac) IS DISTINCT FROM (expected_seq, expected_hash, expected_mac) THEN
        outcome := 'moved';
        RETURN;
    END IF;

    INSERT INTO issuance_log (seq, at, request_id, issuer, subject, account, uid, groups,
        service, channel, role, requested_ttl, granted_ttl, decision, reason, rule,
        policy_version, client_ip, user_agent, token_fingerprint, prev_hash, hash)
    SELECT r.seq, r.at, r.request_id, r.issuer, r.subject, r.account, r.uid,
        group_names[r.group_offset + 1 : r.group_offset + r.group_count],
        r.service, r.channel, r.role, r.requested_ttl, r.granted_ttl, r.decision, r.reason, r.rule,
        r.policy_version, r.client_ip, r.user_agent, r.token_fingerprint, r.prev_hash, r.hash
    FROM unnest(seqs, ats, request_ids, issuers, subjects, accounts, uids,
        group_offsets, group_counts, services, channels, roles,
        requested_ttls, granted_ttls, decisions, reasons, rules,
        policy_versions, client_ips, user_agents, token_fingerprints, prev_hashes, hashes)
        AS r(seq, at, request_id, issuer, subject, account, uid,
        group_offset, group_count, service, channel, role,
        requested_ttl, granted_ttl, decision, reason, rule,
        policy_version, client_ip, user_agent, token_fingerprint, prev_hash, hash);

    INSERT INTO issuance_log_head (id, seq, hash, mac) VALUES (true, seqs[n], hashes[n], new_mac)
        ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, mac = EXCLUDED.mac;
    outcome := 'appended';
    head_seq := seqs[n];
    head_hash := hashes[n];
    head_mac := new_mac;
END
$$;
