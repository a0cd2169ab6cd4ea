-- Counts and clears that do not scan (issue 10): each audience keeps its current member count,
-- maintained in the transaction that changes its memberships; the live audiences are counted
-- the same way; a clear or delete only bumps cleared_version and leaves the superseded rows to
-- the workers' sweeper (membership_sweeps), which deletes them in small batches.

-- Writers lock membership rows before audience rows; so does this migration.
LOCK TABLE memberships IN SHARE ROW EXCLUSIVE MODE;
LOCK TABLE audiences IN SHARE ROW EXCLUSIVE MODE;

-- The number of current_memberships rows of the audience (0 once it is deleted).
ALTER TABLE audiences ADD COLUMN members_count bigint NOT NULL DEFAULT 0;

UPDATE audiences a SET members_count = c.n
FROM (SELECT audience_id, count(*) AS n FROM current_memberships GROUP BY audience_id) c
WHERE a.id = c.audience_id;

-- Pages of live audiences in id order, whatever number of deleted ones lie between them.
CREATE INDEX audiences_live ON audiences (id) WHERE deleted_at IS NULL;

-- The membership rows one statement changed (transition tables: now_rows as they are, +1 each;
-- was_rows as they were, -1 each) folded into their audiences' counts, one UPDATE per audience.
-- A row at or below its audience's cleared_version, or of a deleted audience, never counts again
-- (clears only go up; a deletion is final), so only audiences with other rows are locked: in id
-- order, as every writer does, after the membership rows. The UPDATE's fresh snapshot then reads
-- cleared_version again: a clear that committed meanwhile (it holds this lock while it takes its
-- version) is honoured, and none can commit before this transaction does. The sweeper's deletes
-- (superseded rows only) lock nothing here.
CREATE FUNCTION memberships_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM 1 FROM audiences a
        WHERE a.deleted_at IS NULL AND EXISTS (
            SELECT 1 FROM now_rows c
            WHERE c.audience_id = a.id AND c.member AND c.version > a.cleared_version)
        ORDER BY a.id FOR NO KEY UPDATE;
        UPDATE audiences a SET members_count = a.members_count + d.delta
        FROM (SELECT c.audience_id, count(*) AS delta FROM now_rows c
              JOIN audiences l ON l.id = c.audience_id
              WHERE c.member AND c.version > l.cleared_version AND l.deleted_at IS NULL
              GROUP BY c.audience_id) d
        WHERE a.id = d.audience_id;
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM 1 FROM audiences a
        WHERE a.deleted_at IS NULL AND EXISTS (
            SELECT 1 FROM now_rows c
            WHERE c.audience_id = a.id AND c.member AND c.version > a.cleared_version
            UNION ALL
            SELECT 1 FROM was_rows c
            WHERE c.audience_id = a.id AND c.member AND c.version > a.cleared_version)
        ORDER BY a.id FOR NO KEY UPDATE;
        UPDATE audiences a SET members_count = a.members_count + d.delta
        FROM (SELECT c.audience_id, sum(c.sign) AS delta
              FROM (SELECT audience_id, version, 1 AS sign FROM now_rows WHERE member
                    UNION ALL
                    SELECT audience_id, version, -1 FROM was_rows WHERE member) c
              JOIN audiences l ON l.id = c.audience_id
              WHERE c.version > l.cleared_version AND l.deleted_at IS NULL
              GROUP BY c.audience_id) d
        WHERE a.id = d.audience_id AND d.delta <> 0;
    ELSE
        PERFORM 1 FROM audiences a
        WHERE a.deleted_at IS NULL AND EXISTS (
            SELECT 1 FROM was_rows c
            WHERE c.audience_id = a.id AND c.member AND c.version > a.cleared_version)
        ORDER BY a.id FOR NO KEY UPDATE;
        UPDATE audiences a SET members_count = a.members_count - d.removed
        FROM (SELECT c.audience_id, count(*) AS removed FROM was_rows c
              JOIN audiences l ON l.id = c.audience_id
              WHERE c.member AND c.version > l.cleared_version AND l.deleted_at IS NULL
              GROUP BY c.audience_id) d
        WHERE a.id = d.audience_id;
    END IF;
    RETURN NULL;
END $$;

-- One trigger per event: a trigger with transition tables takes one. An INSERT ... ON CONFLICT
-- DO UPDATE fires the first for the rows it inserted and the second for those it updated.
CREATE TRIGGER memberships_counted_insert AFTER INSERT ON memberships
    REFERENCING NEW TABLE AS now_rows FOR EACH STATEMENT EXECUTE FUNCTION memberships_counted();
CREATE TRIGGER memberships_counted_update AFTER UPDATE ON memberships
    REFERENCING OLD TABLE AS was_rows NEW TABLE AS now_rows
    FOR EACH STATEMENT EXECUTE FUNCTION memberships_counted();
CREATE TRIGGER memberships_counted_delete AFTER DELETE ON memberships
    REFERENCING OLD TABLE AS was_rows FOR EACH STATEMENT EXECUTE FUNCTION memberships_counted();

CREATE FUNCTION memberships_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE audiences SET members_count = 0 WHERE members_count <> 0;
    RETURN NULL;
END $$;

CREATE TRIGGER memberships_truncated AFTER TRUNCATE ON memberships
    FOR EACH STATEMENT EXECUTE FUNCTION memberships_truncated();

-- The number of live audiences (the read API's totalResultSize), one row.
CREATE TABLE audience_totals (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    live     bigint  NOT NULL
);
INSERT INTO audience_totals (live) SELECT count(*) FROM audiences WHERE deleted_at IS NULL;

CREATE FUNCTION audiences_counted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta bigint;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE audience_totals SET live = 0;
        RETURN NULL;
    END IF;
    delta := (CASE WHEN TG_OP <> 'DELETE' AND NEW.deleted_at IS NULL THEN 1 ELSE 0 END)
           - (CASE WHEN TG_OP <> 'INSERT' AND OLD.deleted_at IS NULL THEN 1 ELSE 0 END);
    IF delta <> 0 THEN
        UPDATE audience_totals SET live = live + delta;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER audiences_counted AFTER INSERT OR DELETE OR UPDATE OF deleted_at ON audiences
    FOR EACH ROW EXECUTE FUNCTION audiences_counted();
CREATE TRIGGER audiences_truncated AFTER TRUNCATE ON audiences
    FOR EACH STATEMENT EXECUTE FUNCTION audiences_counted();

-- Audiences whose superseded membership rows are still to be deleted: rows at or below
-- up_to_version (every row of a deleted audience), walked in primary-key order from
-- after_profile_id, a small batch per transaction (worker/sweeper.py).
CREATE TABLE membership_sweeps (
    audience_id      bigint PRIMARY KEY REFERENCES audiences (id) ON DELETE CASCADE,
    up_to_version    bigint NOT NULL,
    after_profile_id text   NOT NULL DEFAULT ''
);
