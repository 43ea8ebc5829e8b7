-- The Agora project of each token URL (issue 15): a request through the URL
-- is for that project. Expand only: a column with a constant default (no
-- table rewrite); URLs made before, and by the previous release during a
-- rolling upgrade, are for 'default', the only project it serves. The
-- previous release ignores the column, so token URLs of other projects are
-- to be handed out only once every replica runs this release (README).
SET LOCAL lock_timeout = '2s';
ALTER TABLE token_urls ADD COLUMN project text NOT NULL DEFAULT 'default';
