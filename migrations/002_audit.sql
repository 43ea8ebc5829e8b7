-- Issuance log: the authenticated chain head and the auditor's lookups.

-- The last committed record's seq and hash, with a MAC over both under the
-- audit chain key. Every batch updates it in the same transaction as its
-- records, so records cut off the end of the log (which a chain alone cannot
-- show) no longer match the head. At most one row.
CREATE TABLE issuance_log_head (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq  bigint NOT NULL,
    hash bytea NOT NULL,
    mac  bytea NOT NULL
);

-- Lookup by the fingerprint of a token an auditor holds.
CREATE INDEX issuance_log_token_fingerprint ON issuance_log (token_fingerprint)
    WHERE token_fingerprint <> '';
-- Search by account or uid, newest first.
CREATE INDEX issuance_log_account ON issuance_log (account, seq);
CREATE INDEX issuance_log_uid ON issuance_log (uid, seq);
