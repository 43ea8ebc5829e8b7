-- Policies per Agora project (issue 15). A rule's project is its v5: "" for
-- the project a rule without one has (channel and login rules: 'default';
-- admin rights: '*', global), '*' for a channel or login rule of every
-- project, else the project's name.
--
-- Expand only, so that the previous release keeps working during a rolling
-- upgrade. It reads every row of casbin_rule and policy_login_rule and
-- ignores v5, so those tables keep only the rules it reads as they are meant:
-- channel and login rules of the default project or of '*' (both apply to
-- the default project, the only one it serves), and global admin rights.
-- Every other rule (a rule of another project, a right limited to one
-- project) goes to policy_project_rule, which it never reads; and the
-- history records those rules in scoped_before/scoped_after, which it never
-- reads either, so that its catch-up from the history cannot apply them.
SET LOCAL lock_timeout = '2s';

CREATE TABLE policy_project_rule (
    id    bigint PRIMARY KEY DEFAULT nextval('casbin_rule_id_seq'),
    ptype text NOT NULL CHECK (ptype IN ('p', 'p2', 'p3')),
    v0    text NOT NULL DEFAULT '',
    v1    text NOT NULL DEFAULT '',
    v2    text NOT NULL DEFAULT '',
    v3    text NOT NULL DEFAULT '',
    v4    text NOT NULL DEFAULT '',
    v5    text NOT NULL CHECK (v5 <> ''),
    CONSTRAINT policy_project_rule_unique UNIQUE (ptype, v0, v1, v2, v3, v4, v5)
);

ALTER TABLE policy_history ADD COLUMN scoped_before jsonb, ADD COLUMN scoped_after jsonb;

-- policy_rule_project is the project a stored line's rule applies in.
CREATE FUNCTION policy_rule_project(ptype text, v5 text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v5 <> '' THEN v5 WHEN ptype = 'p2' THEN '*' ELSE 'default' END
$$;

-- policy_line_is_legacy says whether a line belongs in casbin_rule or
-- policy_login_rule (see above) rather than policy_project_rule.
CREATE FUNCTION policy_line_is_legacy(ptype text, v5 text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT v5 = '' OR (ptype <> 'p2' AND v5 = '*')
$$;

-- policy_rule_json_v2 is policy_rule_json with the rule's project.
CREATE FUNCTION policy_rule_json_v2(id bigint, ptype text, v0 text, v1 text, v2 text, v3 text, v4 text, v5 text)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT policy_rule_json(id, ptype, v0, v1, v2, v3, v4) || jsonb_build_object('project', policy_rule_project(ptype, v5))
$$;

-- policy_apply keeps its signature and its contract (migration 007); it now
-- removes from all three tables, puts each added line in its table, and
-- records the rules of policy_project_rule in the scoped columns.
CREATE OR REPLACE FUNCTION policy_apply(actor text, request_id text, action text, remove_ids bigint[],
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

-- Every existing rule now names its project: the migration records that in
-- the history (the same rules, before without a project, after with the one
-- they are read as), so the history says when and why they got one.
INSERT INTO policy_history (actor, action, before, after)
SELECT 'migration:011_policy_projects', 'migrate',
       jsonb_agg(policy_rule_json(id, ptype, v0, v1, v2, v3, v4) ORDER BY id),
       jsonb_agg(policy_rule_json_v2(id, ptype, v0, v1, v2, v3, v4, v5) ORDER BY id)
FROM (SELECT * FROM casbin_rule UNION ALL SELECT * FROM policy_login_rule) existing
HAVING count(*) > 0;

SELECT pg_notify('broker_policy', (SELECT max(id)::text FROM policy_history));
