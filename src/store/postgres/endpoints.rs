//! Endpoint records and their health. The configuration is one sealed column; the health
//! (enabled, failure count, why and when disabled) is plain columns, changed only by
//! conditional updates, so that of concurrent callers on any node exactly one disables an
//! endpoint.

use std::time::Duration;

use super::rows::{self, ENDPOINT_COLUMNS};
use super::{PgStore, ms};
use crate::model::{Endpoint, EndpointId};
use crate::store::{Closing, Notice, StartRequest, StoreResult, codec};

impl PgStore {
    pub(super) async fn put_endpoint_now(&self, endpoint: &Endpoint) -> StoreResult<()> {
        let record = codec::seal_endpoint(&self.sealer, endpoint)?;
        let mut tx = self.pool.begin().await?;
        // Health columns change only through enable/disable and outcomes: a configuration
        // change read before a concurrent disable must not enable the endpoint again.
        sqlx::query(
            "INSERT INTO endpoints (id, tenant, record, enabled, created_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET tenant = EXCLUDED.tenant, record = EXCLUDED.record",
        )
        .bind(endpoint.id.0)
        .bind(&endpoint.tenant)
        .bind(&record)
        .bind(endpoint.enabled)
        .bind(ms(endpoint.created_at))
        .execute(&mut *tx)
        .await?;
        Self::notify(&mut tx, [Notice::Endpoint(endpoint.id)]).await?;
        tx.commit().await?;
        self.cache.clear();
        Ok(())
    }

    pub(super) async fn endpoint_now(&self, id: EndpointId) -> StoreResult<Option<Endpoint>> {
        if let Some(found) = self.cache.endpoint(id) {
            return Ok(found);
        }
        let generation = self.cache.generation();
        let found = self.read_endpoint(id).await?;
        self.cache.put_endpoint(generation, id, &found);
        Ok(found)
    }

    async fn read_endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>> {
        let row = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| rows::endpoint(&self.sealer, &row))
            .transpose()
    }

    pub(super) async fn endpoints_now(&self, tenant: Option<&str>) -> StoreResult<Vec<Endpoint>> {
        let Some(tenant) = tenant else {
            return self.read_endpoints(None).await;
        };
        if let Some(found) = self.cache.tenant(tenant) {
            return Ok(found);
        }
        let generation = self.cache.generation();
        let found = self.read_endpoints(Some(tenant)).await?;
        self.cache.put_tenant(generation, tenant, &found);
        Ok(found)
    }

    async fn read_endpoints(&self, tenant: Option<&str>) -> StoreResult<Vec<Endpoint>> {
        let found = match tenant {
            Some(tenant) => {
                sqlx::query(&format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE tenant = $1 ORDER BY id"
                ))
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM endpoints ORDER BY id"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        found
            .iter()
            .map(|row| rows::endpoint(&self.sealer, row))
            .collect()
    }

    pub(super) async fn disable_endpoint_now(
        &self,
        id: EndpointId,
        now_ms: u64,
        reason: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let disabled = sqlx::query(
            "UPDATE endpoints SET enabled = false, disabled_reason = $2, disabled_at = $3 \
             WHERE id = $1 AND enabled",
        )
        .bind(id.0)
        .bind(reason)
        .bind(ms(now_ms))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if disabled {
            Self::notify(&mut tx, [Notice::Endpoint(id)]).await?;
        }
        tx.commit().await?;
        self.cache.clear();
        Ok(disabled)
    }

    pub(super) async fn enable_endpoint_now(
        &self,
        id: EndpointId,
        now_ms: u64,
    ) -> StoreResult<Option<Endpoint>> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE endpoints SET failures = 0, disabled_reason = NULL, disabled_at = NULL, \
             released_at = CASE WHEN enabled THEN released_at ELSE $2 END, enabled = true \
             WHERE id = $1 RETURNING {ENDPOINT_COLUMNS}"
        ))
        .bind(id.0)
        .bind(ms(now_ms))
        .fetch_optional(&mut *tx)
        .await?;
        if row.is_some() {
            Self::notify(&mut tx, [Notice::Endpoint(id)]).await?;
        }
        tx.commit().await?;
        self.cache.clear();
        row.map(|row| rows::endpoint(&self.sealer, &row))
            .transpose()
    }

    pub(super) async fn delete_endpoint_now(
        &self,
        id: EndpointId,
        closing: &Closing,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.pool.begin().await?;
        // Lines first, then deliveries in id order: the order every writer locks them in.
        sqlx::query(
            "WITH locked AS (SELECT ordering_key FROM ordering_lines WHERE endpoint_id = $1 \
             ORDER BY ordering_key FOR UPDATE) \
             DELETE FROM ordering_lines l USING locked \
             WHERE l.endpoint_id = $1 AND l.ordering_key = locked.ordering_key",
        )
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
        // Finishing the pending deliveries (those waiting in lines too: each partial index
        // finds its own) clears their leases: a late outcome is stale.
        let closed = sqlx::query(
            "UPDATE deliveries SET status = $2, next_attempt_at = NULL, last_error = $3, \
             updated_at = $4, lease_token = NULL, lease_expires = NULL, line_place = NULL \
             WHERE id IN (SELECT id FROM deliveries WHERE endpoint_id = $1 \
                 AND ((status = 0 AND line_place IS NULL) OR (line_place IS NOT NULL AND status = 0)) \
                 ORDER BY id FOR UPDATE)",
        )
        .bind(id.0)
        .bind(rows::status_code(closing.status))
        .bind(&closing.reason)
        .bind(ms(closing.at_ms))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        for table in ["endpoint_pacing", "lease_counts", "lease_ends"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE endpoint_id = $1"))
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query("DELETE FROM endpoints WHERE id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if deleted {
            sqlx::query(
                "INSERT INTO deleted_endpoints (id, url, deleted_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, deleted_at = EXCLUDED.deleted_at",
            )
            .bind(id.0)
            .bind(&closing.url)
            .bind(ms(closing.at_ms))
            .execute(&mut *tx)
            .await?;
            Self::notify(&mut tx, [Notice::Endpoint(id)]).await?;
        }
        tx.commit().await?;
        self.cache.clear();
        Ok(deleted.then_some(closed))
    }

    pub(super) async fn deleted_endpoint_url_now(
        &self,
        id: EndpointId,
    ) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT url FROM deleted_endpoints WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Reserves the next start of an attempt to a rate-limited endpoint in one statement, as
    /// [`Store::reserve_start`](crate::store::Store::reserve_start) says, on the database's
    /// clock (so the nodes' clocks need not agree). Returns how long from now that start is.
    pub(super) async fn reserve_start_now(
        &self,
        id: EndpointId,
        request: StartRequest,
    ) -> StoreResult<Duration> {
        // clock_timestamp(), not now(): the time after the row lock was granted. A tolerance
        // is remembered for a minute unless a larger one is declared meanwhile.
        macro_rules! db_now {
            () => {
                "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
            };
        }
        macro_rules! slack_kept {
            () => {
                concat!(
                    "(p.slack_at_us > ",
                    db_now!(),
                    " - 60000000 AND p.slack_us > $4)"
                )
            };
        }
        const RESERVE: &str = concat!(
            "INSERT INTO endpoint_pacing AS p (endpoint_id, last_start_us, slack_us, slack_at_us) \
             VALUES ($1, ",
            db_now!(),
            ", $4, ",
            db_now!(),
            ") \
             ON CONFLICT (endpoint_id) DO UPDATE SET \
                 last_start_us = GREATEST(p.last_start_us + $2 \
                     + (CASE WHEN ",
            slack_kept!(),
            " THEN p.slack_us ELSE $4 END + $3 - 1) / $3, \
                     ",
            db_now!(),
            "), \
                 slack_us = CASE WHEN ",
            slack_kept!(),
            " THEN p.slack_us ELSE $4 END, \
                 slack_at_us = CASE WHEN ",
            slack_kept!(),
            " THEN p.slack_at_us ELSE ",
            db_now!(),
            " END \
             RETURNING last_start_us - ",
            db_now!()
        );
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        let wait_us: i64 = sqlx::query_scalar(RESERVE)
            .bind(id.0)
            .bind(micros(request.interval))
            .bind(i64::from(request.per_second.max(1)))
            .bind(micros(request.tolerance))
            .fetch_one(&self.pool)
            .await?;
        Ok(Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)))
    }
}
