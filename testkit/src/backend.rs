//! Which store and bus a run uses, created fresh for it and removed with it:
//! [`Backend::Embedded`] (an SQLite file in a private data directory and the
//! in-process bus, whose streams live in that file: nothing to install or run)
//! or [`Backend::PostgresNats`] (a fresh Postgres database and fresh NATS
//! prefixes on the shared servers: the production path). One scenario, written
//! once, runs on either; the kit reads what the service published back the same
//! way on both ([`crate::streams::Streams`]).

use crate::Purpose;
use crate::bus::TestBus;
use crate::db::TestDb;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use subkeeper::Config;
use subkeeper::store::{Location, Store};
use subkeeper_actors::ports::clock::SystemClock;

/// The store and bus a service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite store and the in-process bus (no database or NATS URL).
    Embedded,
    /// PostgreSQL and NATS with JetStream.
    PostgresNats,
}

impl Backend {
    /// `embedded` / `postgres_nats`, as test names and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::PostgresNats => "postgres_nats",
        }
    }
}

/// A directory of its own under the temp directory, removed with everything in
/// it when dropped: an embedded run's `SUBKEEPER_DATA_DIR`.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// Creates `<tmp>/subkeeper-test-<random>` (or `subkeeper-bench-…`).
    pub fn create(purpose: Purpose) -> anyhow::Result<Self> {
        let kind = match purpose {
            Purpose::Test => "test",
            Purpose::Bench => "bench",
        };
        let path = std::env::temp_dir().join(format!("subkeeper-{kind}-{}", crate::fresh_id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The embedded store's file in it, as the service names it.
    pub fn store_file(&self) -> PathBuf {
        self.path.join("subkeeper.db")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("could not remove {}: {e}", self.path.display());
        }
    }
}

/// Where one run keeps its state.
#[derive(Debug)]
enum StoreHome {
    /// A fresh Postgres database (dropped with it).
    Postgres(TestDb),
    /// A fresh data directory holding the SQLite file (removed with it).
    Embedded(DataDir),
}

/// One run's store and bus, both fresh; both gone when this is dropped.
#[derive(Debug)]
pub struct TestBackend {
    /// Which pair this is.
    pub backend: Backend,
    /// The run's subjects and streams (on NATS, or in the store).
    pub bus: TestBus,
    store: StoreHome,
}

impl TestBackend {
    /// A fresh store and bus of `backend`. For Postgres + NATS both servers must
    /// answer: if one does not, the error is one line naming it and the script
    /// that starts it.
    pub async fn create(backend: Backend, purpose: Purpose) -> anyhow::Result<Self> {
        match backend {
            Backend::Embedded => Ok(Self {
                backend,
                bus: TestBus::local(purpose),
                store: StoreHome::Embedded(DataDir::create(purpose)?),
            }),
            Backend::PostgresNats => {
                let db = TestDb::create(purpose).await?;
                crate::bus::reachable_nats().await?;
                Ok(Self {
                    backend,
                    bus: TestBus::new(purpose),
                    store: StoreHome::Postgres(db),
                })
            }
        }
    }

    /// Points `config` at this run's store and bus (and nothing else).
    pub fn configure(&self, config: &mut Config) {
        match &self.store {
            StoreHome::Postgres(db) => config.database_url = db.url.clone(),
            StoreHome::Embedded(dir) => {
                config.database_url = String::new();
                config.data_dir = dir.path().to_owned();
            }
        }
        self.bus.configure(config);
    }

    /// Where the store is, as the service resolves it.
    pub fn location(&self) -> Location {
        match &self.store {
            StoreHome::Postgres(db) => Location::Postgres(db.url.clone()),
            StoreHome::Embedded(dir) => Location::Sqlite(dir.store_file()),
        }
    }

    /// The data directory of an embedded run (its store file and admin token).
    pub fn data_dir(&self) -> Option<&Path> {
        match &self.store {
            StoreHome::Postgres(_) => None,
            StoreHome::Embedded(dir) => Some(dir.path()),
        }
    }

    /// The Postgres database of a Postgres + NATS run.
    pub fn database(&self) -> Option<&TestDb> {
        match &self.store {
            StoreHome::Postgres(db) => Some(db),
            StoreHome::Embedded(_) => None,
        }
    }

    /// A store on this run's database (which the service has created and
    /// migrated), as the service's own adapters use it: for port calls, and for
    /// SQL through `Store::db()`.
    pub async fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::connect(&self.location(), 2, Arc::new(SystemClock)).await?)
    }
}

impl TestBackend {
    /// The bus the service would build on this run (over `store` for the
    /// in-process bus), for a test that drives an adapter or a task without the
    /// service.
    pub async fn bus(&self, store: &Store) -> anyhow::Result<subkeeper::bus::Bus> {
        use subkeeper::bus::{Bus, LocalBus, NatsBus};
        let topology = self.bus.topology();
        Ok(if self.bus.is_nats() {
            let bus = NatsBus::connect(&crate::bus::nats_url(), topology).await?;
            bus.ensure_streams(self.bus.limits()).await?;
            Bus::Nats(Box::new(bus))
        } else {
            Bus::Local(LocalBus::new(
                Arc::new(store.clone()),
                topology,
                Arc::new(SystemClock),
            ))
        })
    }

    /// What the service published on this run, read back through `store` (the
    /// in-process bus's streams live there) or through JetStream.
    pub async fn streams(&self, store: &Store) -> anyhow::Result<crate::streams::Streams> {
        Ok(if self.bus.is_nats() {
            crate::streams::Streams::Nats(async_nats::jetstream::new(
                crate::bus::reachable_nats().await?,
            ))
        } else {
            crate::streams::Streams::Local(store.clone())
        })
    }
}
