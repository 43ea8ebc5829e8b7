-- A policy change made only if the policy is still at an expected version
-- (issue 17: `apply` after a `plan`), checked under the policy change lock in
-- the change's own statement, so that no change can land between the check
-- and the change. Expand only: policy_apply gains an argument; the previous
-- release keeps calling the 12-argument form, which becomes a wrapper passing
-- none, so the critical section keeps one definition.

CREATE FUNCTION policy_apply(actor text, request_id text, action text, remove_ids bigint[],
    add_ptypes text[], add_v0 text[], add_v1 text[], add_v2 text[], add_v3 text[], add_v4 text[], add_v5 text[],
    unless_ptype text, expected_version bigint,
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
        skipped := true;
        SELECT coalesce(max(id), 0) INTO version FROM policy_history;
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

    INSERT INTO policy_history (actor, request_id, action, before, after, scoped_before, scoped_after)
    SELECT actor, coalesce(request_id, ''), action,
        jsonb_agg(j ORDER BY id) FILTER (WHERE side = 'before' AND legacy),
        jsonb_agg(j ORDER BY id) FILTER (WHERE side = 'after' AND legacy),
        jsonb_agg(j ORDER BY id) FILTER (WHERE side = 'before' AND NOT legacy),
        jsonb_agg(j ORDER BY id) FILTER (WHERE side = 'after' AND NOT legacy)
    FROM (
        SELECT side, (l->>0)::bigint AS id, policy_line_is_legacy(l->>1, l->>7) AS legacy,
               policy_rule_json_v2((l->>0)::bigint, l->>1, l->>2, l->>3, l->>4, l->>5, l->>6, l->>7) AS j
        FROM (SELECT 'before' AS side, l FROM jsonb_array_elements(coalesce(removed, '[]')) l
              UNION ALL SELECT 'after', l FROM jsonb_array_elements(coalesce(added, '[]')) l) sides
    ) rules
    RETURNING id INTO version;
    PERFORM pg_notify('broker_policy', version::text);
END
$$;

CREATE OR REPLACE FUNCTION policy_apply(actor text, request_id text, action text, remove_ids bigint[],
    add_ptypes text[], add_v0 text[], add_v1 text[], add_v2 text[], add_v3 text[], add_v4 text[], add_v5 text[],
    unless_ptype text,
    OUT version bigint, OUT skipped boolean, OUT removed jsonb, OUT added jsonb)
LANGUAGE sql AS $$
    SELECT * FROM policy_apply(actor, request_id, action, remove_ids, add_ptypes, add_v0, add_v1, add_v2,
        add_v3, add_v4, add_v5, unless_ptype, NULL::bigint)
$$;
