-- The one definition of a current membership, which every reader selects from: a member, newer
-- than its audience's last clear or delete, in a live audience, so a change racing a clear never
-- resurrects anyone (ARCHITECTURE.md). A plain view: Postgres inlines it into each query, which
-- keeps the memberships indexes in use.

CREATE VIEW current_memberships AS
    SELECT m.audience_id, m.profile_id, m.version, m.updated_at
    FROM memberships m
    JOIN audiences a ON a.id = m.audience_id
    WHERE m.member AND m.version > a.cleared_version AND a.deleted_at IS NULL;
