-- The issuance log's verified point (issue 23): the latest checkpoint up to
-- which a full verification found the log intact. Incremental verification
-- checks that the tree still matches it, then only what came after. It is a
-- signed checkpoint, so it cannot be forged without the log's signing key.
-- A new table: the previous release never touches it.
CREATE TABLE issuance_log_verified (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    size        bigint NOT NULL CHECK (size >= 0),
    note        text NOT NULL,
    verified_at timestamptz NOT NULL DEFAULT now()
);
