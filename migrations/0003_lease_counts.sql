-- Live leases per endpoint and node, kept as two running totals: leases claimed (with the
-- latest expiry among them) and leases ended (recorded or handed back). A claim counts the
-- other nodes' claimed minus ended against the endpoint's concurrency cap, beside its own
-- node's leases, which that node knows. Counting the lease columns of `deliveries` instead read
-- every index entry written in the last lease period, dead row versions included (each claim
-- and each outcome rewrites the row): ~10,000 entries per claim at 3,000 deliveries/s.
--
-- Claims add to one row, outcomes to the other, so the claimer and the recorder never wait
-- for each other's row lock. Totals only grow while the node lives; a dead node's leases count
-- until the latest of them expires, as they did in `deliveries`. No total is in an index: an
-- addition is an update within the row's page.
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
