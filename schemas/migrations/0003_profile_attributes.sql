-- Customer profile attributes (Amplitude's user_properties): one row per profile, latest value
-- of each attribute wins. Audience-wide attributes stay on audiences.attributes; readers merge.

CREATE TABLE profile_attributes (
    profile_id  text        PRIMARY KEY,
    attributes  jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
