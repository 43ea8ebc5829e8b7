-- The issuance log as a transparency log (issue 16): the stored hashes of an
-- RFC 6962 Merkle tree over the records (golang.org/x/mod/sumdb/tlog's
-- layout: stored-hash index i is tlog.StoredHashIndex, record seq s is leaf
-- s-1), written in the same statement as the records they cover, and the
-- latest signed checkpoint. The hashes a statement adds are contiguous, so
-- they are stored as one row: the 32-byte hashes from index first_idx on,
-- concatenated (one heap tuple and one index entry per batch, not per hash).
--
-- Expand only. issuance_log_append gains two arguments, the batch's stored
-- hashes; the previous release keeps calling the 33-argument form, which
-- becomes a wrapper passing none, and this release's writers build the
-- missing hashes from the records (issuance_log_tree_extend) before they
-- append. The HMAC chain and its head stay as they are.
SET LOCAL lock_timeout = '2s';

CREATE TABLE issuance_log_tree (
    first_idx bigint PRIMARY KEY CHECK (first_idx >= 0),
    hashes    bytea NOT NULL CHECK (length(hashes) > 0 AND length(hashes) % 32 = 0)
);
-- Hashes do not compress: never try; and a batch's row stays in its heap
-- page up to the largest tuple target (a batch of ~250 records), rather
-- than going to TOAST from 2 kB on (a batch of ~30).
ALTER TABLE issuance_log_tree ALTER COLUMN hashes SET STORAGE EXTERNAL;
ALTER TABLE issuance_log_tree SET (toast_tuple_target = 8160);

-- issuance_log_tree_next is the index of the next stored hash.
CREATE FUNCTION issuance_log_tree_next() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT first_idx + length(hashes) / 32 FROM issuance_log_tree
        ORDER BY first_idx DESC LIMIT 1), 0)
$$;

-- The latest checkpoint a replica signed: one row, only ever replaced by a
-- larger tree (replicas check consistency before they sign).
CREATE TABLE issuance_log_checkpoint (
    id        boolean PRIMARY KEY DEFAULT true CHECK (id),
    size      bigint NOT NULL CHECK (size >= 0),
    note      text NOT NULL,
    signed_at timestamptz NOT NULL DEFAULT now()
);

-- Operators' acknowledgements of a log that went back (a restored database):
-- the checkpoint replicas had seen, and the tree they accept instead.
CREATE TABLE issuance_log_rollback_ack (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    reason     text NOT NULL,
    seen_note  text NOT NULL,
    to_size    bigint NOT NULL,
    to_root    bytea NOT NULL
);

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
    trace_ids text[], projects text[], app_ids text[],
    OUT outcome text, OUT head_seq bigint, OUT head_hash bytea, OUT head_mac bytea,
    OUT head_key_id text, OUT has_records boolean, OUT policy_version bigint)
LANGUAGE sql AS $$
    SELECT * FROM issuance_log_append(expected_seq, expected_hash, expected_mac, expected_key_id,
        new_mac, batch_key_id, seqs, ats, request_ids, issuers, subjects, accounts, uids,
        group_offsets, group_counts, group_names, services, channels, roles,
        requested_ttls, granted_ttls, decisions, reasons, rules, policy_versions, client_ips,
        user_agents, token_fingerprints, prev_hashes, hashes, trace_ids, projects, app_ids,
        NULL::bigint, NULL::bytea)
$$;

-- issuance_log_tree_extend stores the hashes of records the tree does not
-- cover yet (written by the previous release, or before the tree existed),
-- which this release's writers compute from the records: under the chain
-- lock, and only when they continue the stored hashes exactly (first is the
-- next index); otherwise nothing. Returns the next index after it.
CREATE FUNCTION issuance_log_tree_extend(first bigint, hashes bytea, OUT next_idx bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('lock_timeout', '1500', true);
    PERFORM pg_advisory_xact_lock(3173581853742769109);
    next_idx := issuance_log_tree_next();
    IF next_idx = first AND length(hashes) > 0 AND length(hashes) % 32 = 0 THEN
        INSERT INTO issuance_log_tree (first_idx, hashes) VALUES (first, hashes);
        next_idx := first + length(hashes) / 32;
    END IF;
END
$$;
