-- Live leases per endpoint and node, as two totals: `lease_ends.ended`, leases ended (recorded
-- or handed back), which every outcome group and hand-back adds to; and `lease_counts.claimed`,
-- which every claim sets to that total plus the node's live leases (it knows them), with the
-- latest expiry among them. The other nodes count `claimed - ended` against the endpoint's
-- concurrency cap. Counting the lease columns of `deliveries` instead read every index entry
-- written in the last lease period, dead row versions included (each claim and each outcome
-- rewrites the row): ~10,000 entries per claim at 3,000 deliveries/s.
--
-- Claims write one row, outcomes the other, so the claimer and the recorder never wait for
-- each other's row lock. A dead node's leases count until the latest of them expires, as they
-- did in `deliveries`. No total is in an index: a change is an update within the row's page.
CREATE TABLE lease_counts (
    endpoint_id uuid   NOT NULL,
    node        uuid   NOT NULL,
    claimed     bigint NOT NULL,
    expires     bigint NOT NULL,
    PRIMARY KEY (endpoint_id, node)
) WITH (fillfactor = 50);

CREATE TABLE lease_ends (
    endpoint_id uuid   NOT NULL,
    node        uuid   NOT NULL,
    ended       bigint NOT NULL,
    PRIMARY KEY (endpoint_id, node)
) WITH (fillfactor = 50);
