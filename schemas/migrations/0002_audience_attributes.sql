-- Profile attributes set on all members of an audience (PUT /v2/audience_customers/{id}/attributes).
-- Stored on the audience and applied lazily by readers, instead of rewriting every membership.

ALTER TABLE audiences ADD COLUMN attributes jsonb;
