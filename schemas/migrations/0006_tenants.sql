-- Tenants (issue 11): one fleet serves many Talon.One deployments, each named by its hostname
-- (the CDP API's destination-hostname), with its own account id, API keys, audiences, profile
-- attributes and rate. Everything from before belongs to the default tenant, id 1
-- (schemas/keys.py DEFAULT_TENANT), named 'default' (schemas/tenants.py DEFAULT_HOSTNAME): it
-- has no real hostname, so its keys take whatever destination-hostname the edge serves
-- (README.md, Tenants). Its account id is the one the audiences so far report (the latest
-- audience's, COHORTSYNC_ACCOUNT_ID when it was created), else 1; cohortsync-admin migrate then
-- writes COHORTSYNC_ACCOUNT_ID there on every run (core/migrations.py), as edges used it before.

-- Writers lock membership rows, then audience rows; so does this migration.
LOCK TABLE memberships IN SHARE ROW EXCLUSIVE MODE;
LOCK TABLE audiences IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE tenants (
    id              bigserial   PRIMARY KEY,
    -- Stored lower-case, as cohortsync-admin and the edge compare it.
    hostname        text        NOT NULL UNIQUE CHECK (hostname = lower(hostname)),
    account_id      bigint      NOT NULL,
    -- NULL: the workers' own COHORTSYNC_RATE_LIMIT_PER_MINUTE / COHORTSYNC_RATE_BURST.
    rate_per_minute integer     CHECK (rate_per_minute >= 0),
    burst           integer     CHECK (burst >= 0),
    -- The tenant's live audiences (the read API's totalResultSize), kept by audiences_counted().
    live_audiences  bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);

INSERT INTO tenants (id, hostname, account_id, live_audiences)
SELECT 1, 'default',
       coalesce((SELECT account_id FROM audiences ORDER BY id DESC LIMIT 1), 1),
       (SELECT count(*) FROM audiences WHERE deleted_at IS NULL);
-- The row above took id 1 by hand: the next tenant gets 2.
SELECT setval('tenants_id_seq', 1);

-- A constant default fills the existing rows without rewriting the table.
ALTER TABLE audiences ADD COLUMN tenant_id bigint NOT NULL DEFAULT 1 REFERENCES tenants (id);

-- One live audience per tenant + integration + integrationId (the 409 of POST /v2/audiences).
DROP INDEX audiences_integration_key;
CREATE UNIQUE INDEX audiences_integration_key
    ON audiences (tenant_id, coalesce(integration, ''), integration_id)
    WHERE deleted_at IS NULL AND integration_id IS NOT NULL;
-- A tenant's pages of live audiences in id order (audiences_live keeps serving the fleet's).
CREATE INDEX audiences_live_by_tenant ON audiences (tenant_id, id) WHERE deleted_at IS NULL;

-- Every key belongs to one tenant, but an 'ops' key (status and metrics of every tenant). A key
-- written without one (by hand, or by an older cohortsync-admin) is the default tenant's.
ALTER TABLE api_keys ADD COLUMN tenant_id bigint DEFAULT 1 REFERENCES tenants (id);
UPDATE api_keys SET tenant_id = NULL WHERE scope = 'ops';
ALTER TABLE api_keys ADD CONSTRAINT api_keys_tenant
    CHECK ((tenant_id IS NULL) = (scope IS NOT DISTINCT FROM 'ops'));
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id);

-- The same profile id in two tenants is two profiles.
ALTER TABLE profile_attributes ADD COLUMN tenant_id bigint NOT NULL DEFAULT 1
    REFERENCES tenants (id);
ALTER TABLE profile_attributes ALTER COLUMN tenant_id DROP DEFAULT;
ALTER TABLE profile_attributes DROP CONSTRAINT profile_attributes_pkey;
ALTER TABLE profile_attributes ADD PRIMARY KEY (tenant_id, profile_id);

-- The live audiences counted per tenant too, in the same step as the fleet's count.
CREATE OR REPLACE FUNCTION audiences_counted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta bigint;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE audience_totals SET live = 0;
        UPDATE tenants SET live_audiences = 0 WHERE live_audiences <> 0;
        RETURN NULL;
    END IF;
    delta := (CASE WHEN TG_OP <> 'DELETE' AND NEW.deleted_at IS NULL THEN 1 ELSE 0 END)
           - (CASE WHEN TG_OP <> 'INSERT' AND OLD.deleted_at IS NULL THEN 1 ELSE 0 END);
    IF delta <> 0 THEN
        UPDATE audience_totals SET live = live + delta;
        UPDATE tenants SET live_audiences = live_audiences + delta
        WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
    END IF;
    RETURN NULL;
END $$;
