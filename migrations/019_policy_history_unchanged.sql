-- An import's history entry keeps how many of its document's rules were in
-- force already (issue 24: a bulk change is one entry with its summary:
-- added, removed, unchanged). Expand only: a nullable column the previous
-- release does not read, and a 14-argument policy_apply that makes the change
-- through the 13-argument one (migration 018), unchanged, then notes the
-- count on the change's entry in the same transaction; the previous release
-- keeps calling the 12- and 13-argument forms.

SET LOCAL lock_timeout = '2s';
ALTER TABLE policy_history ADD COLUMN unchanged integer;

CREATE FUNCTION policy_apply(actor text, request_id text, action text, remove_ids bigint[],
    add_ptypes text[], add_v0 text[], add_v1 text[], add_v2 text[], add_v3 text[], add_v4 text[], add_v5 text[],
    unless_ptype text, expected_version bigint, unchanged_rules integer,
    OUT version bigint, OUT skipped boolean, OUT removed jsonb, OUT added jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    before_version bigint;
BEGIN
    SELECT a.version, a.skipped, a.removed, a.added INTO version, skipped, removed, added
        FROM policy_apply(actor, request_id, action, remove_ids, add_ptypes, add_v0, add_v1, add_v2, add_v3,
            add_v4, add_v5, unless_ptype, expected_version) a;
    -- A change that made no entry (skipped, or nothing to change) has
    -- nothing to note; an apply's entries are one per rule, with no count.
    IF unchanged_rules IS NOT NULL AND NOT skipped AND action <> 'apply' THEN
        UPDATE policy_history SET unchanged = unchanged_rules WHERE id = version AND policy_history.action = policy_apply.action;
    END IF;
END
$$;
