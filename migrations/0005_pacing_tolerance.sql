-- Rate limits for the cluster: each reservation now declares how late after its reserved
-- start its node may begin the attempt (the round trip to the database included), and later
-- reservations are spaced to leave room for the largest tolerance declared over the last
-- minute (`slack_us`, declared at `slack_at_us`, both on the database's clock).
ALTER TABLE endpoint_pacing
    ADD COLUMN slack_us    bigint NOT NULL DEFAULT 0,
    ADD COLUMN slack_at_us bigint NOT NULL DEFAULT 0;
