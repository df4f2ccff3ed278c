//! What a budget store does — check-and-reserve, settle, read, reset — dispatched to the store
//! in use (memory or Redis); the types both share are in `ledger`. Each operation covers the counters of one scope instance
//! (a session, a task, an agent, or global) and is atomic: no other call sees half of it.

pub use super::ledger::*;

use super::memory::MemoryStore;
use super::redis::RedisStore;

/// The configured store.
pub enum Store {
    /// In-process, snapshotted to a file.
    Memory(MemoryStore),
    /// Shared Redis.
    Redis(Box<RedisStore>),
}

// === impl Store ===

impl Store {
    /// Check every want against its limit and, only if all admit, reserve them.
    pub async fn reserve(
        &self,
        key: &str,
        now: u64,
        wants: &[Want],
        lease: Option<Lease>,
    ) -> Result<Reserved, StoreError> {
        match self {
            // A memory store's reservations die with its process (and are dropped on reload).
            Store::Memory(m) => Ok(m.reserve(key, now, wants)),
            // Boxed (as the settle below): inline, a Redis command's future (664 bytes, 3.6 KB
            // when it held the connection's setup) would size every call's future with the
            // memory store too.
            Store::Redis(r) => Ok(Box::pin(r.reserve(now, &[(key, wants, lease)]))
                .await?
                .into_one()),
        }
    }

    /// Replace reservations with actual spend and add to the totals; returns each counter's
    /// spent plus reserved afterwards.
    pub async fn settle(
        &self,
        key: &str,
        now: u64,
        charges: &[Charge],
        totals: Totals,
        lease: Option<u64>,
    ) -> Result<Vec<u64>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.settle(key, now, charges, totals)),
            Store::Redis(r) => {
                let mut all = Box::pin(r.settle(now, &[(key, charges, lease)], totals)).await?;
                Ok(all.pop().unwrap_or_default())
            }
        }
    }

    /// The record of one scope instance.
    pub async fn get(&self, key: &str) -> Result<Option<Group>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.get(key)),
            Store::Redis(r) => r.get(key).await,
        }
    }

    /// Session (`prefix` `s:`) or task (`t:`) ids with the most tokens (lifetime totals since
    /// reset), most first.
    pub async fn top(&self, prefix: &str, n: usize) -> Result<Vec<(String, Group)>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.top(prefix, n)),
            Store::Redis(r) => r.top(prefix, n).await,
        }
    }

    /// Forget a scope instance's spend; whether it had any.
    pub async fn reset(&self, key: &str) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.reset(key)),
            Store::Redis(r) => r.reset(key).await,
        }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> bool {
        match self {
            Store::Memory(_) => true,
            Store::Redis(r) => r.ping().await,
        }
    }
}
