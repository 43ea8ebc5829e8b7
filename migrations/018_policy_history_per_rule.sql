-- An apply (issue 17: `broker policy apply`, a whole policy document) is
-- recorded as one history entry per rule it changes, grouped by an apply id,
-- rather than one entry holding every rule removed and added: the history of
-- a rule then reads as the history of that rule. A removed and an added rule
-- with the same subject, channel, role and project are one entry (the rule
-- changed: its effect or its maxTTL); the others are one entry each. Every
-- other change keeps its one entry (apply_id NULL).
--
-- Expand only. apply_id is a new nullable column, which the previous release
-- does not read; policy_apply keeps both signatures. The version is still
-- the last history id: an apply moves it by its number of entries, and the
-- previous release's engines catch up on every entry after their version in
-- one read, as they always did (all the entries of one apply commit in one
-- transaction, so no read sees a part of them).

CREATE SEQUENCE policy_apply_id_seq;

SET LOCAL lock_timeout = '2s';
ALTER TABLE policy_history ADD COLUMN apply_id bigint;

CREATE OR REPLACE FUNCTION policy_apply(actor text, request_id text, action text, remove_ids bigint[],
    add_ptypes text[], add_v0 text[], add_v1 text[], add_v2 text[], add_v3 text[], add_v4 text[], add_v5 text[],
    unless_ptype text, expected_version bigint,
    OUT version bigint, OUT skipped boolean, OUT removed jsonb, OUT added jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    want integer := (SELECT count(DISTINCT x) FROM unnest(remove_ids) x);
    got integer;
    ids bigint[];
    apply bigint;
BEGIN
    PERFORM set_config('lock_timeout', '2000', true);
    PERFORM pg_advisory_xact_lock(27710370586391041);  -- policy changes in commit order (policy.changeLock)
    PERFORM pg_advisory_xact_lock(3173581853742769109);  -- ordered with every append
    IF expected_version IS NOT NULL THEN
        SELECT coalesce(max(id), 0) INTO version FROM policy_history;
        IF version <> expected_version THEN
            RAISE EXCEPTION 'the policy is at version %, not %', version, expected_version USING ERRCODE = 'P0004';
        END IF;
    END IF;
    skipped := false;
    IF coalesce(unless_ptype, '') <> '' AND (
        EXISTS (SELECT 1 FROM casbin_rule WHERE ptype = unless_ptype) OR
        EXISTS (SELECT 1 FROM policy_login_rule WHERE ptype = unless_ptype) OR
        EXISTS (SELECT 1 FROM policy_project_rule WHERE ptype = unless_ptype)) THEN
        SELECT coalesce(max(id), 0) INTO version FROM policy_history;
        skipped := true;
        RETURN;
    END IF;

    WITH gone AS (
        DELETE FROM casbin_rule WHERE id = ANY(remove_ids) RETURNING id, ptype, v0, v1, v2, v3, v4, v5
    ), gone_login AS (
        DELETE FROM policy_login_rule WHERE id = ANY(remove_ids) RETURNING id, ptype, v0, v1, v2, v3, v4, v5
    ), gone_project AS (
        DELETE FROM policy_project_rule WHERE id = ANY(remove_ids) RETURNING id, ptype, v0, v1, v2, v3, v4, v5
    ), all_gone AS (
        SELECT * FROM gone UNION ALL SELECT * FROM gone_login UNION ALL SELECT * FROM gone_project
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
        SELECT * FROM lines WHERE ptype <> 'p3' AND policy_line_is_legacy(ptype, v5)
        RETURNING id, ptype, v0, v1, v2, v3, v4, v5
    ), put_login AS (
        INSERT INTO policy_login_rule (id, ptype, v0, v1, v2, v3, v4, v5)
        SELECT * FROM lines WHERE ptype = 'p3' AND policy_line_is_legacy(ptype, v5)
        RETURNING id, ptype, v0, v1, v2, v3, v4, v5
    ), put_project AS (
        INSERT INTO policy_project_rule (id, ptype, v0, v1, v2, v3, v4, v5)
        SELECT * FROM lines WHERE NOT policy_line_is_legacy(ptype, v5)
        RETURNING id, ptype, v0, v1, v2, v3, v4, v5
    ), all_put AS (
        SELECT * FROM put UNION ALL SELECT * FROM put_login UNION ALL SELECT * FROM put_project
    )
    SELECT jsonb_agg(jsonb_build_array(id, ptype, v0, v1, v2, v3, v4, v5) ORDER BY id) INTO added FROM all_put;

    IF action <> 'apply' THEN
        INSERT INTO policy_history (actor, request_id, action, before, after, scoped_before, scoped_after)
        SELECT actor, coalesce(request_id, ''), action,
            jsonb_agg(j ORDER BY id) FILTER (WHERE side = 'before' AND legacy),
            jsonb_agg(j ORDER BY id) FILTER (WHERE side = 'after' AND legacy),
            jsonb_agg(j ORDER BY id) FILTER (WHERE side = 'before' AND NOT legacy),
            jsonb_agg(j ORDER BY id) FILTER (WHERE side = 'after' AND NOT legacy)
        FROM policy_change_rules(removed, added) rules
        RETURNING id INTO version;
    ELSE
        -- One entry per rule: the n-th removed and the n-th added rule of a
        -- key (in id order) are one entry, in the order of their first id.
        apply := nextval('policy_apply_id_seq');
        WITH rules AS (
            SELECT *, row_number() OVER (PARTITION BY side, k ORDER BY id) AS n FROM (
                SELECT *, jsonb_build_array(j->'subject', j->'channel', j->'role', j->'project') AS k
                FROM policy_change_rules(removed, added)) r
        ), pairs AS (
            SELECT b.id AS before_id, b.legacy AS before_legacy, b.j AS before_j,
                   a.id AS after_id, a.legacy AS after_legacy, a.j AS after_j
            FROM (SELECT * FROM rules WHERE side = 'before') b
            FULL JOIN (SELECT * FROM rules WHERE side = 'after') a ON a.k = b.k AND a.n = b.n
        ), entries AS (
            INSERT INTO policy_history (actor, request_id, action, before, after, scoped_before, scoped_after, apply_id)
            SELECT actor, coalesce(request_id, ''), action,
                CASE WHEN before_legacy THEN jsonb_build_array(before_j) END,
                CASE WHEN after_legacy THEN jsonb_build_array(after_j) END,
                CASE WHEN NOT before_legacy THEN jsonb_build_array(before_j) END,
                CASE WHEN NOT after_legacy THEN jsonb_build_array(after_j) END,
                apply
            FROM pairs ORDER BY least(before_id, after_id)
            RETURNING id
        )
        SELECT max(id) INTO version FROM entries;
        IF version IS NULL THEN  -- an apply that changes nothing records nothing
            SELECT coalesce(max(id), 0) INTO version FROM policy_history;
            RETURN;
        END IF;
    END IF;
    PERFORM pg_notify('broker_policy', version::text);
END
$$;

-- policy_change_rules lists the rules a change removed (side 'before') and
-- added ('after'), given as policy_apply's removed and added, each with its
-- id, whether it is a legacy line (its own table, not policy_project_rule)
-- and its JSON as the history records it.
CREATE FUNCTION policy_change_rules(removed jsonb, added jsonb,
    OUT side text, OUT id bigint, OUT legacy boolean, OUT j jsonb)
RETURNS SETOF record LANGUAGE sql IMMUTABLE AS $$
    SELECT side, (l->>0)::bigint, policy_line_is_legacy(l->>1, l->>7),
           policy_rule_json_v2((l->>0)::bigint, l->>1, l->>2, l->>3, l->>4, l->>5, l->>6, l->>7)
    FROM (SELECT 'before' AS side, l FROM jsonb_array_elements(coalesce(removed, '[]')) l
          UNION ALL SELECT 'after', l FROM jsonb_array_elements(coalesce(added, '[]')) l) sides
$$;
