//! The inventory on disk: one SQLite database (`inventory.sqlite` in the configured
//! directory), so that what was learned survives restarts. A file that is not an apiscope
//! inventory, is corrupt, or was written by a newer format is refused with its path and the
//! reason, and left as it is: the agent never overwrites what it cannot read.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, params};

use super::Endpoint;
use super::endpoint::Latency;
use crate::analysis::events::ServiceRef;

/// The database's file name inside the inventory directory.
pub const FILE_NAME: &str = "inventory.sqlite";
/// `PRAGMA application_id` of an apiscope inventory: "apis".
const APPLICATION_ID: i32 = 0x6170_6973;
/// `PRAGMA user_version`: the layout of the tables below.
const FORMAT_VERSION: i32 = 1;

/// An endpoint as stored, with the service it belongs to.
#[derive(Debug, Clone)]
pub struct SavedEndpoint {
    /// Its service.
    pub service: ServiceRef,
    /// The service runs elsewhere.
    pub external: bool,
    /// The endpoint.
    pub endpoint: Endpoint,
}

/// Why the inventory cannot be kept.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory cannot be made.
    #[error("cannot create the inventory directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not one this agent can use; it was left as it is.
    #[error(
        "inventory database {path}: {reason}; it was left as it is (move it away, or set inventory.directory)"
    )]
    Unusable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("inventory database {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's reason.
        #[source]
        source: rusqlite::Error,
    },
}

/// The open inventory database.
#[derive(Debug)]
pub struct InventoryStore {
    connection: Connection,
    path: PathBuf,
}

impl InventoryStore {
    /// Opens (or creates) the database in `directory`, refusing a file that is not an
    /// apiscope inventory this version can read.
    pub fn open(directory: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(directory).map_err(|source| StoreError::Directory {
            path: directory.to_owned(),
            source,
        })?;
        let path = directory.join(FILE_NAME);
        let existing = std::fs::metadata(&path).is_ok_and(|metadata| metadata.len() > 0);
        let connection = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let store = Self { connection, path };
        if existing {
            store.check()?;
        } else {
            store.create()?;
        }
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn unusable(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Unusable {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Checks that an existing file is an inventory of a format this agent reads.
    fn check(&self) -> Result<(), StoreError> {
        let pragma = |name: &str| {
            self.connection
                .query_row(&format!("PRAGMA {name}"), [], |row| row.get::<_, i32>(0))
                .map_err(|error| self.unusable(format!("not a readable SQLite database ({error})")))
        };
        let application = pragma("application_id")?;
        if application != APPLICATION_ID {
            return Err(self.unusable(format!(
                "not an apiscope inventory (a SQLite database with application_id {application:#x})"
            )));
        }
        let version = pragma("user_version")?;
        if version > FORMAT_VERSION {
            return Err(self.unusable(format!(
                "written in format {version} by a newer apiscope; this one reads format {FORMAT_VERSION}"
            )));
        }
        let verdict: String = self
            .connection
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(|error| self.unusable(format!("corrupt ({error})")))?;
        if verdict != "ok" {
            return Err(self.unusable(format!("corrupt ({verdict})")));
        }
        Ok(())
    }

    fn create(&self) -> Result<(), StoreError> {
        self.connection
            .execute_batch(&format!(
                "BEGIN;
                 PRAGMA application_id = {APPLICATION_ID};
                 PRAGMA user_version = {FORMAT_VERSION};
                 CREATE TABLE IF NOT EXISTS endpoints (
                     service TEXT NOT NULL,
                     namespace TEXT NOT NULL,
                     endpoint_key TEXT NOT NULL,
                     external INTEGER NOT NULL,
                     endpoint TEXT NOT NULL,
                     latency TEXT NOT NULL,
                     PRIMARY KEY (service, namespace, endpoint_key)
                 );
                 COMMIT;"
            ))
            .map_err(|source| self.sqlite(source))
    }

    /// Every stored endpoint. A row that cannot be read makes the whole file unusable:
    /// saving over it would lose what it holds.
    pub fn load(&self) -> Result<Vec<SavedEndpoint>, StoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT service, namespace, external, endpoint, latency FROM endpoints")
            .map_err(|source| self.sqlite(source))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, bool>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })
            .map_err(|source| self.sqlite(source))?;
        let mut saved = Vec::new();
        for row in rows {
            let (name, namespace, external, endpoint, latency) =
                row.map_err(|source| self.sqlite(source))?;
            let unreadable = |error: serde_json::Error| {
                self.unusable(format!("an endpoint of {name} is unreadable ({error})"))
            };
            let mut endpoint: Endpoint = serde_json::from_str(&endpoint).map_err(unreadable)?;
            endpoint.latency = serde_json::from_str::<Latency>(&latency).map_err(unreadable)?;
            saved.push(SavedEndpoint {
                service: ServiceRef {
                    name,
                    namespace: (!namespace.is_empty()).then_some(namespace),
                },
                external,
                endpoint,
            });
        }
        Ok(saved)
    }

    /// Writes `endpoints` (new or changed) in one transaction.
    pub fn save(&mut self, endpoints: &[SavedEndpoint]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let failed = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let transaction = self.connection.transaction().map_err(failed)?;
        {
            let mut statement = transaction
                .prepare(
                    "INSERT OR REPLACE INTO endpoints
                     (service, namespace, endpoint_key, external, endpoint, latency)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(failed)?;
            for saved in endpoints {
                let key = encode(&saved.endpoint.key);
                let endpoint = encode(&saved.endpoint);
                let latency = encode(&saved.endpoint.latency);
                statement
                    .execute(params![
                        saved.service.name,
                        saved.service.namespace.as_deref().unwrap_or(""),
                        key,
                        saved.external,
                        endpoint,
                        latency,
                    ])
                    .map_err(failed)?;
            }
        }
        transaction.commit().map_err(failed)
    }

    /// How many endpoints are stored.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.connection
            .query_row("SELECT count(*) FROM endpoints", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|count| u64::try_from(count).unwrap_or(0))
            .map_err(|source| self.sqlite(source))
    }
}

/// The JSON of a value whose serialisation cannot fail (plain data, string keys).
fn encode<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::inventory::{Conformance, EndpointKey};

    fn directory(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "apiscope-store-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        path
    }

    fn saved(route: &str) -> SavedEndpoint {
        let key = EndpointKey {
            protocol: "http".to_owned(),
            method: "GET".into(),
            route: route.into(),
            operation: None,
        };
        let mut endpoint = Endpoint::new(key, Conformance::Documented, 1_000);
        endpoint.calls = 7;
        endpoint.latency.add_ms(12.5);
        SavedEndpoint {
            service: ServiceRef {
                name: "shop".into(),
                namespace: Some("prod".into()),
            },
            external: false,
            endpoint,
        }
    }

    #[test]
    fn endpoints_survive_a_reopen() {
        let directory = directory("reopen");
        let mut store = InventoryStore::open(&directory).unwrap();
        store
            .save(&[saved("/users/{id}"), saved("/orders")])
            .unwrap();
        store.save(&[saved("/orders")]).unwrap();
        drop(store);
        let store = InventoryStore::open(&directory).unwrap();
        assert_eq!(store.count().unwrap(), 2);
        let loaded = store.load().unwrap();
        let users = loaded
            .iter()
            .find(|saved| saved.endpoint.key.route == "/users/{id}")
            .unwrap();
        assert_eq!(users.endpoint.calls, 7);
        assert_eq!(users.service.namespace.as_deref(), Some("prod"));
        assert!(users.endpoint.latency.summary().is_some());
        let key: EndpointKey = serde_json::from_str(&encode(&users.endpoint.key)).unwrap();
        assert_eq!(key, users.endpoint.key);
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn foreign_and_corrupt_files_are_refused_and_kept() {
        let directory = directory("foreign");
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join(FILE_NAME);
        let garbage = b"this is not a database, and it is someone's file\n".repeat(100);
        std::fs::write(&path, &garbage).unwrap();
        let error = InventoryStore::open(&directory).unwrap_err().to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("not a readable SQLite database"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), garbage);

        std::fs::remove_file(&path).unwrap();
        let other = Connection::open(&path).unwrap();
        other
            .execute_batch("CREATE TABLE notes (text TEXT); INSERT INTO notes VALUES ('mine');")
            .unwrap();
        drop(other);
        let before = std::fs::read(&path).unwrap();
        let error = InventoryStore::open(&directory).unwrap_err().to_string();
        assert!(error.contains("not an apiscope inventory"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
