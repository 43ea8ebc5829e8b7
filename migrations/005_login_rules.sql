-- Login rules: who may log in to RTM and Chat (policy type p3: subject,
-- service, effect, max TTL), in the same id sequence and history as every
-- other rule.
--
-- They live in their own table, not in casbin_rule, so that the previous
-- release keeps working during a rolling upgrade: it reads every row of
-- casbin_rule and knows no login rules (it lets every caller log in to RTM
-- with their own id, which is what the rule below keeps allowing). Restrict
-- RTM logins only once every replica runs a release that reads this table.
CREATE TABLE policy_login_rule (
    id    bigint PRIMARY KEY DEFAULT nextval('casbin_rule_id_seq'),
    ptype text NOT NULL CHECK (ptype = 'p3'),
    v0    text NOT NULL DEFAULT '',
    v1    text NOT NULL DEFAULT '',
    v2    text NOT NULL DEFAULT '',
    v3    text NOT NULL DEFAULT '',
    v4    text NOT NULL DEFAULT '',
    v5    text NOT NULL DEFAULT '',
    CONSTRAINT policy_login_rule_unique UNIQUE (ptype, v0, v1, v2, v3, v4, v5)
);

-- Upgrading changes nothing: everyone may still log in to RTM as themselves.
-- The rule is recorded in the policy history as made by this migration.
WITH added AS (
    INSERT INTO policy_login_rule (ptype, v0, v1, v2, v3) VALUES ('p3', '*', 'rtm', 'allow', '0')
    RETURNING id
)
INSERT INTO policy_history (actor, action, after)
SELECT 'migration:005_login_rules', 'migrate',
       jsonb_build_array(jsonb_build_object('id', id, 'subject', '*', 'channel', 'rtm',
           'role', 'login', 'effect', 'allow', 'maxTtlSeconds', 0))
FROM added;

SELECT pg_notify('broker_policy', (SELECT max(id)::text FROM policy_history));
