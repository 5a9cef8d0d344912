-- Version 3: a session's `created_at` and a tombstone's `logged_out_at` in
-- Unix microseconds instead of whole seconds, so that a sign-out by subject
-- covers the sessions created up to its instant and not a sign-in later in
-- the same second. Every other time stays in seconds.
--
-- Existing rows keep what they meant: a session created in second S is
-- taken as created at its first microsecond, and a tombstone of second L
-- as signed out at its last microsecond, so each tombstone still covers
-- exactly the sessions it covered (created_at <= logged_out_at). The JSON
-- copy of the session in `data` is rewritten with its column. Values too
-- large to scale are left as they are (no idweb version wrote any).
UPDATE sessions
   SET created_at = created_at * 1000000,
       data = json_set(data, '$.created_at', created_at * 1000000)
 WHERE abs(created_at) < 9000000000000;

UPDATE tombstones
   SET logged_out_at = logged_out_at * 1000000 + 999999
 WHERE abs(logged_out_at) < 9000000000000;
