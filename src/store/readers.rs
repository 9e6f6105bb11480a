//! The read side of the store, whichever database it is: `Readers` answers the GET routes
//! from SQLite's read-only connections or from PostgreSQL's pool, with the same types.

use super::pg::PgReaders;
use super::reader::{ReadError, SqliteReaders};
use super::{
    DeliveryFilter, DeliveryListRow, EndpointRow, FeedFilter, FeedRow, QueueCount,
    TransactionDetail, TransactionPage,
};
use crate::domain::{Operation, State};

/// The store's readers.
#[derive(Clone)]
pub enum Readers {
    Sqlite(SqliteReaders),
    Postgres(PgReaders),
}

impl Readers {
    pub async fn transaction(&self, tguid: String) -> Result<Option<TransactionDetail>, ReadError> {
        match self {
            Readers::Sqlite(r) => Ok(r.transaction(tguid).await?),
            Readers::Postgres(r) => r.transaction(&tguid).await,
        }
    }

    /// The review queues (PENDING and EXCEPTION) by operation, with counts.
    pub async fn queues(&self) -> Result<Vec<QueueCount>, ReadError> {
        match self {
            Readers::Sqlite(r) => Ok(r.queues().await?),
            Readers::Postgres(r) => r.queues().await,
        }
    }

    pub async fn list(
        &self,
        state: Option<State>,
        operation: Option<Operation>,
        cursor: i64,
        limit: usize,
    ) -> Result<TransactionPage, ReadError> {
        match self {
            Readers::Sqlite(r) => Ok(r.list(state, operation, cursor, limit).await?),
            Readers::Postgres(r) => r.list(state, operation, cursor, limit).await,
        }
    }

    pub async fn deliveries(
        &self,
        filter: DeliveryFilter,
    ) -> Result<(Vec<DeliveryListRow>, Option<i64>), ReadError> {
        match self {
            Readers::Sqlite(r) => Ok(r.deliveries(filter).await?),
            Readers::Postgres(r) => r.deliveries(filter).await,
        }
    }

    pub async fn endpoints(&self) -> Result<Vec<EndpointRow>, ReadError> {
        match self {
            Readers::Sqlite(r) => Ok(r.endpoints().await?),
            Readers::Postgres(r) => r.endpoints().await,
        }
    }

    /// Notifications in commit order after `filter.after`: a consumer that resumes after the
    /// last cursor it read misses nothing.
    pub async fn feed(&self, filter: FeedFilter) -> Result<Vec<FeedRow>, ReadError> {
        match self {
            Readers::Sqlite(r) => Ok(r.feed(filter).await?),
            Readers::Postgres(r) => r.feed(filter).await,
        }
    }
}
