-- API keys, audiences and memberships.

CREATE TABLE api_keys (
    id          bigserial PRIMARY KEY,
    name        text        NOT NULL,
    -- sha256 of the whole key; the key itself is shown once and never stored.
    key_hash    bytea       NOT NULL UNIQUE,
    -- The first characters of the key, so an operator can tell keys apart.
    key_prefix  text        NOT NULL,
    -- NULL: every surface; otherwise the one integration this key may use.
    scope       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE audiences (
    id                          bigserial PRIMARY KEY,
    account_id                  bigint      NOT NULL,
    name                        text        NOT NULL,
    description                 text,
    sandbox                     boolean,
    integration                 text,
    integration_id              text,
    created_in_3rd_party        boolean,
    subscribed_applications_ids bigint[],
    created_at                  timestamptz NOT NULL DEFAULT now(),
    -- Last time the audience's memberships changed.
    last_update                 timestamptz,
    deleted_at                  timestamptz,
    -- Version of the latest clear or delete: memberships at or below it do not count.
    cleared_version             bigint      NOT NULL DEFAULT 0
);

-- One live audience per integration + integrationId (the 409 of POST /v2/audiences).
CREATE UNIQUE INDEX audiences_integration_key
    ON audiences (coalesce(integration, ''), integration_id)
    WHERE deleted_at IS NULL AND integration_id IS NOT NULL;

CREATE TABLE memberships (
    audience_id bigint      NOT NULL REFERENCES audiences (id) ON DELETE CASCADE,
    profile_id  text        NOT NULL,
    -- false keeps a tombstone, so an older "add" arriving late cannot win over a newer "delete".
    member      boolean     NOT NULL,
    version     bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (audience_id, profile_id)
);

-- "Which audiences is this profile a member of?" is an index lookup.
CREATE INDEX memberships_profile ON memberships (profile_id) INCLUDE (audience_id, version)
    WHERE member;
-- Paging through and counting an audience's current members.
CREATE INDEX memberships_members ON memberships (audience_id, profile_id) INCLUDE (version)
    WHERE member;
