-- What a deleted endpoint leaves for the history of its deliveries: the URL they were sent
-- to, redacted (no credentials, no query), so it is kept in clear. Written in the deletion's
-- transaction.
CREATE TABLE deleted_endpoints (
    id         uuid   PRIMARY KEY,
    url        text   NOT NULL,
    deleted_at bigint NOT NULL
);
