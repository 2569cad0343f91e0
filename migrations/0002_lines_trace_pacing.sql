-- Delivery controls on PostgreSQL: ordering-key lines, the accepting span's trace context, and
-- rate limits held by the whole cluster.

-- The W3C `traceparent` of the span that accepted a message: attempts made on any node join
-- the accept span's trace.
ALTER TABLE messages ADD COLUMN traceparent text;

-- Ordering-key lines. One row per (endpoint, ordering key) that has pending deliveries in
-- line: the delivery at its front (the only one of the line in the due index) and the place
-- the next delivery to join takes. A send that joins a line, and a write that makes a
-- delivery leave one, lock this row first, so concurrent sends of one key on several nodes
-- take their places in commit (= acknowledgement) order. Keys compare byte for byte ("C"),
-- the order every writer locks lines in.
CREATE TABLE ordering_lines (
    endpoint_id  uuid   NOT NULL,
    ordering_key text   COLLATE "C" NOT NULL,
    front        uuid   NOT NULL,
    next_place   bigint NOT NULL,
    PRIMARY KEY (endpoint_id, ordering_key)
);

-- A delivery's line: its message's ordering key, and its place while it waits behind the front
-- (NULL at the front, and for deliveries in no line). A waiting delivery is out of the due
-- index; the next one in line is the first place of the line's waiting index: a point read.
ALTER TABLE deliveries
    ADD COLUMN ordering_key text COLLATE "C",
    ADD COLUMN line_place   bigint;
CREATE INDEX deliveries_waiting ON deliveries (endpoint_id, ordering_key, line_place)
    WHERE line_place IS NOT NULL;
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (endpoint_id, next_attempt_at)
    WHERE status = 0 AND line_place IS NULL;

-- Rate limits for the cluster: the start last reserved for an attempt to each rate-limited
-- endpoint, in microseconds of the database's clock. Each node reserves the next start with
-- one statement. Unlogged: after a database crash the table is empty, which only lets the
-- next attempt start at once.
CREATE UNLOGGED TABLE endpoint_pacing (
    endpoint_id   uuid   PRIMARY KEY,
    last_start_us bigint NOT NULL
);
