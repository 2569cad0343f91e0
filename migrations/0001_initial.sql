-- herald's schema on PostgreSQL. One row per domain record; times are milliseconds since the
-- Unix epoch (as in the embedded store); records that carry secrets are sealed with the
-- cluster's key before they reach the database.

-- One row: which store this is, and a known value sealed with the cluster's key, so that a node
-- given another key refuses to start instead of failing on every sealed record.
CREATE TABLE herald_meta (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    store_id   uuid    NOT NULL,
    key_check  bytea   NOT NULL
);

CREATE TABLE endpoints (
    id              uuid    PRIMARY KEY,
    tenant          text    NOT NULL,
    -- The configuration (URL, policy, secrets, token, headers, subscriptions), sealed.
    record          bytea   NOT NULL,
    enabled         boolean NOT NULL,
    failures        integer NOT NULL DEFAULT 0,
    disabled_reason text,
    disabled_at     bigint,
    released_at     bigint,
    created_at      bigint  NOT NULL
);
CREATE INDEX endpoints_by_tenant ON endpoints (tenant);

CREATE TABLE messages (
    id              uuid   PRIMARY KEY,
    tenant          text   NOT NULL,
    event_type      text   NOT NULL,
    -- The JSON payload byte for byte as received (not jsonb, which would re-serialize it).
    payload         text   NOT NULL,
    callback_url    bytea,             -- sealed: it may carry credentials or a token
    idempotency_key text,
    dedup_key       text,
    ordering_key    text,
    created_at      bigint NOT NULL
);
CREATE UNIQUE INDEX messages_by_idempotency_key ON messages (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_by_age ON messages (created_at);

CREATE TABLE deliveries (
    id               uuid     PRIMARY KEY,
    message_id       uuid     NOT NULL,
    endpoint_id      uuid     NOT NULL,
    url_override     bytea,             -- sealed
    status           smallint NOT NULL, -- 0 pending, 1 succeeded, 2 failed, 3 skipped
    cycle            integer  NOT NULL,
    cycle_attempts   integer  NOT NULL,
    total_attempts   integer  NOT NULL,
    anchor_ms        bigint   NOT NULL,
    next_attempt_at  bigint,
    last_status_code integer,
    last_error       text,
    created_at       bigint   NOT NULL,
    updated_at       bigint   NOT NULL,
    -- The claim: who holds the delivery for an attempt, and until when.
    lease_token      uuid,
    lease_expires    bigint
);
-- The due index: pending deliveries per endpoint in due order.
CREATE INDEX deliveries_due ON deliveries (endpoint_id, next_attempt_at) WHERE status = 0;
CREATE INDEX deliveries_by_message ON deliveries (message_id);
-- Live leases per endpoint (cleared when an outcome is recorded, so this stays small): when
-- the next one expires, and how many an endpoint holds.
CREATE INDEX deliveries_leased ON deliveries (endpoint_id, lease_expires)
    WHERE lease_expires IS NOT NULL;

CREATE TABLE attempts (
    delivery_id      uuid    NOT NULL,
    attempt          integer NOT NULL,
    cycle            integer NOT NULL,
    started_at       bigint  NOT NULL,
    duration_ms      bigint  NOT NULL,
    status_code      integer,
    error            text,
    error_detail     text,
    response_excerpt text    NOT NULL,
    success          boolean NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
CREATE INDEX attempts_by_age ON attempts (started_at);

-- The daily roll-up behind the stats route: counts, and the latency histogram by bucket.
CREATE TABLE rollups (
    endpoint_id uuid    NOT NULL,
    day         integer NOT NULL,
    attempts    bigint  NOT NULL,
    successes   bigint  NOT NULL,
    PRIMARY KEY (endpoint_id, day)
);
CREATE TABLE rollup_latency (
    endpoint_id uuid     NOT NULL,
    day         integer  NOT NULL,
    bucket      smallint NOT NULL,
    n           bigint   NOT NULL,
    PRIMARY KEY (endpoint_id, day, bucket)
);

CREATE TABLE dedup (
    endpoint_id uuid  NOT NULL,
    key         text  NOT NULL,
    digest      bytea NOT NULL,
    PRIMARY KEY (endpoint_id, key)
);

CREATE TABLE replay_jobs (
    id        uuid   PRIMARY KEY,
    record    jsonb  NOT NULL,
    running   boolean NOT NULL,
    -- The node running the job, and when it last made progress: a job whose node stopped
    -- making progress is taken over by another.
    owner     uuid,
    heartbeat bigint NOT NULL
);
