-- Claims rewrite only `lease_token` and `lease_expires`, which no index covers any more, so that
-- PostgreSQL can make the new row version a heap-only tuple (HOT): no new entry in any of the
-- deliveries' indexes, which the next claims would otherwise read past, dead, until a vacuum.
-- Fill new pages to 70 % so that there is room for that version beside the old one.
--
-- The index dropped here served two reads: counting an endpoint's live leases (now
-- `lease_counts` and `lease_ends`) and finding when the first lease ends (now the nodes'
-- published lease expiries, in `lease_counts`).
DROP INDEX deliveries_leased;
ALTER TABLE deliveries SET (fillfactor = 70);
