//! The metadata store: API keys and roles, and named definitions (the
//! experiments and alerts users create); docs, owners, lineage and the audit
//! log as they arrive. SQLite, embedded in the data directory (`plinth.db`).
//!
//! Definitions are stored as text by kind and name; the crates that own a
//! kind (`plinth-experiments`, `plinth-alerts`) parse and validate them, the
//! catalog does not. Alerts also keep here the points they flagged (once
//! per alert and bucket) and the log of every webhook delivery attempt.
//!
//! Keys are random 256-bit secrets shown once at creation; only their SHA-256
//! is stored. A slow password hash buys nothing for secrets that cannot be
//! guessed, and a fast one keeps authentication off the request's critical
//! path.
//!
//! This crate knows nothing of HTTP or SQL engines.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

/// What a personal secret key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Analyst,
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        })
    }
}

impl FromStr for Role {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Role> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "analyst" => Ok(Role::Analyst),
            "admin" => Ok(Role::Admin),
            other => bail!("unknown role {other:?}: expected admin, analyst or viewer"),
        }
    }
}

/// The two kinds of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A personal secret key (`phx_…`): reads and administers, by role.
    Secret(Role),
    /// A project write key (`phc_…`): may only send events.
    Capture,
}

/// A key that authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: i64,
    pub kind: KeyKind,
}

/// The metadata database.
pub struct Catalog {
    connection: Mutex<Connection>,
}

impl Catalog {
    /// Opens (creating if needed) `plinth.db` in the data directory.
    pub fn open(data_dir: &Path) -> Result<Catalog> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("plinth.db");
        let connection =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS api_keys (
                id INTEGER PRIMARY KEY,
                hash TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                role TEXT,
                created_at TEXT NOT NULL,
                revoked_at TEXT
            );
            CREATE TABLE IF NOT EXISTS definitions (
                kind TEXT NOT NULL,
                name TEXT NOT NULL,
                body TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (kind, name)
            );
            CREATE TABLE IF NOT EXISTS alert_points (
                alert TEXT NOT NULL,
                bucket INTEGER NOT NULL,
                point TEXT NOT NULL,
                detected_at TEXT NOT NULL,
                PRIMARY KEY (alert, bucket)
            );
            CREATE TABLE IF NOT EXISTS alert_deliveries (
                id INTEGER PRIMARY KEY,
                alert TEXT NOT NULL,
                bucket INTEGER NOT NULL,
                attempt INTEGER NOT NULL,
                url TEXT NOT NULL,
                status INTEGER,
                error TEXT,
                delivered INTEGER NOT NULL,
                at TEXT NOT NULL
            );",
        )?;
        Ok(Catalog {
            connection: Mutex::new(connection),
        })
    }

    /// Creates a key and returns its secret; the secret is not kept.
    pub fn create_key(&self, kind: KeyKind) -> Result<String> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let (prefix, kind_name, role) = match kind {
            KeyKind::Secret(role) => ("phx_", "secret", Some(role.to_string())),
            KeyKind::Capture => ("phc_", "capture", None),
        };
        let secret = format!("{prefix}{}", hex::encode(bytes));
        self.connection.lock().expect("catalog lock").execute(
            "INSERT INTO api_keys (hash, kind, role, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                hash(&secret),
                kind_name,
                role,
                chrono::Utc::now().to_rfc3339()
            ],
        )?;
        Ok(secret)
    }

    /// The key behind `secret`, if it exists and is not revoked.
    pub fn authenticate(&self, secret: &str) -> Result<Option<KeyInfo>> {
        let connection = self.connection.lock().expect("catalog lock");
        let row: Option<(i64, String, Option<String>)> = connection
            .query_row(
                "SELECT id, kind, role FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL",
                params![hash(secret)],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let Some((id, kind, role)) = row else {
            return Ok(None);
        };
        let kind = match (kind.as_str(), role) {
            ("capture", _) => KeyKind::Capture,
            ("secret", Some(role)) => KeyKind::Secret(role.parse()?),
            (other, _) => bail!("api_keys row {id} has an unknown kind {other:?}"),
        };
        Ok(Some(KeyInfo { id, kind }))
    }

    /// Revokes a key by its secret; returns whether one was revoked.
    pub fn revoke_key(&self, secret: &str) -> Result<bool> {
        let changed = self.connection.lock().expect("catalog lock").execute(
            "UPDATE api_keys SET revoked_at = ?1 WHERE hash = ?2 AND revoked_at IS NULL",
            params![chrono::Utc::now().to_rfc3339(), hash(secret)],
        )?;
        Ok(changed > 0)
    }
}

impl Catalog {
    /// Creates or replaces the definition `name` of `kind`.
    pub fn put_definition(&self, kind: &str, name: &str, body: &str) -> Result<()> {
        self.connection.lock().expect("catalog lock").execute(
            "INSERT INTO definitions (kind, name, body, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
            params![kind, name, body, chrono::Utc::now().to_rfc3339()],
        )?;
        Ok(())
    }

    /// The definition `name` of `kind`, if there is one.
    pub fn definition(&self, kind: &str, name: &str) -> Result<Option<String>> {
        Ok(self
            .connection
            .lock()
            .expect("catalog lock")
            .query_row(
                "SELECT body FROM definitions WHERE kind = ?1 AND name = ?2",
                params![kind, name],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Deletes the definition `name` of `kind`; returns whether there was
    /// one. Nothing else goes with it: an alert's flagged points and
    /// delivery log stay, under its name.
    pub fn delete_definition(&self, kind: &str, name: &str) -> Result<bool> {
        let deleted = self.connection.lock().expect("catalog lock").execute(
            "DELETE FROM definitions WHERE kind = ?1 AND name = ?2",
            params![kind, name],
        )?;
        Ok(deleted > 0)
    }

    /// Every definition of `kind` as (name, body), by name.
    pub fn definitions(&self, kind: &str) -> Result<Vec<(String, String)>> {
        let connection = self.connection.lock().expect("catalog lock");
        let mut statement = connection
            .prepare("SELECT name, body FROM definitions WHERE kind = ?1 ORDER BY name")?;
        let rows = statement.query_map(params![kind], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// One attempt to deliver a flagged point to a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub alert: String,
    /// The flagged bucket (UTC microseconds).
    pub bucket: i64,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub url: String,
    /// The HTTP status answered, if any.
    pub status: Option<u16>,
    /// Why the attempt failed (connection error, timeout, non-2xx status).
    pub error: Option<String>,
    pub delivered: bool,
    /// RFC 3339.
    pub at: String,
}

impl Catalog {
    /// Records a flagged point of `alert` (JSON text) unless that bucket was
    /// recorded before; returns whether it is new.
    pub fn record_alert_point(&self, alert: &str, bucket: i64, point: &str) -> Result<bool> {
        let inserted = self.connection.lock().expect("catalog lock").execute(
            "INSERT INTO alert_points (alert, bucket, point, detected_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (alert, bucket) DO NOTHING",
            params![alert, bucket, point, chrono::Utc::now().to_rfc3339()],
        )?;
        Ok(inserted > 0)
    }

    /// The flagged points of `alert` as JSON text, newest bucket first.
    pub fn alert_points(&self, alert: &str) -> Result<Vec<String>> {
        let connection = self.connection.lock().expect("catalog lock");
        let mut statement = connection
            .prepare("SELECT point FROM alert_points WHERE alert = ?1 ORDER BY bucket DESC")?;
        let rows = statement.query_map(params![alert], |row| row.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The points of `alert` that no attempt delivered, as (bucket, point,
    /// attempts made so far), oldest bucket first.
    pub fn undelivered_alert_points(&self, alert: &str) -> Result<Vec<(i64, String, u32)>> {
        let connection = self.connection.lock().expect("catalog lock");
        let mut statement = connection.prepare(
            "SELECT p.bucket, p.point,
                    (SELECT count(*) FROM alert_deliveries d WHERE d.alert = p.alert AND d.bucket = p.bucket)
             FROM alert_points p
             WHERE p.alert = ?1 AND NOT EXISTS (
                 SELECT 1 FROM alert_deliveries d
                 WHERE d.alert = p.alert AND d.bucket = p.bucket AND d.delivered)
             ORDER BY p.bucket",
        )?;
        let rows = statement.query_map(params![alert], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Appends one delivery attempt to the log.
    pub fn log_delivery(&self, delivery: &Delivery) -> Result<()> {
        self.connection.lock().expect("catalog lock").execute(
            "INSERT INTO alert_deliveries (alert, bucket, attempt, url, status, error, delivered, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                delivery.alert,
                delivery.bucket,
                delivery.attempt,
                delivery.url,
                delivery.status,
                delivery.error,
                delivery.delivered,
                delivery.at
            ],
        )?;
        Ok(())
    }

    /// Every delivery attempt of `alert`, oldest first.
    pub fn deliveries(&self, alert: &str) -> Result<Vec<Delivery>> {
        let connection = self.connection.lock().expect("catalog lock");
        let mut statement = connection.prepare(
            "SELECT alert, bucket, attempt, url, status, error, delivered, at
             FROM alert_deliveries WHERE alert = ?1 ORDER BY id",
        )?;
        let rows = statement.query_map(params![alert], |row| {
            Ok(Delivery {
                alert: row.get(0)?,
                bucket: row.get(1)?,
                attempt: row.get(2)?,
                url: row.get(3)?,
                status: row.get(4)?,
                error: row.get(5)?,
                delivered: row.get(6)?,
                at: row.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_keys_authenticate_with_their_kind_and_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let admin = catalog.create_key(KeyKind::Secret(Role::Admin)).unwrap();
        let capture = catalog.create_key(KeyKind::Capture).unwrap();
        assert!(admin.starts_with("phx_") && capture.starts_with("phc_"));
        assert_eq!(
            catalog.authenticate(&admin).unwrap().unwrap().kind,
            KeyKind::Secret(Role::Admin)
        );
        assert_eq!(
            catalog.authenticate(&capture).unwrap().unwrap().kind,
            KeyKind::Capture
        );
        assert_eq!(catalog.authenticate("phx_wrong").unwrap(), None);
        drop(catalog);
        let raw = std::fs::read(dir.path().join("plinth.db")).unwrap();
        let needle = admin.as_bytes();
        assert!(!raw.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn revoked_keys_no_longer_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let key = catalog.create_key(KeyKind::Secret(Role::Viewer)).unwrap();
        assert!(catalog.revoke_key(&key).unwrap());
        assert_eq!(catalog.authenticate(&key).unwrap(), None);
        assert!(!catalog.revoke_key(&key).unwrap());
    }

    #[test]
    fn definitions_are_replaced_by_name_and_listed_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        catalog.put_definition("experiment", "b", "{1}").unwrap();
        catalog.put_definition("experiment", "a", "{2}").unwrap();
        catalog.put_definition("experiment", "b", "{3}").unwrap();
        catalog.put_definition("alert", "a", "{4}").unwrap();
        assert_eq!(
            catalog.definitions("experiment").unwrap(),
            vec![("a".into(), "{2}".into()), ("b".into(), "{3}".into())]
        );
        assert_eq!(
            catalog.definition("alert", "a").unwrap().as_deref(),
            Some("{4}")
        );
        assert_eq!(catalog.definition("alert", "b").unwrap(), None);
    }

    #[test]
    fn deleting_a_definition_keeps_other_kinds_and_the_alert_history() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        catalog.put_definition("alert", "a", "{1}").unwrap();
        catalog.put_definition("experiment", "a", "{2}").unwrap();
        catalog.record_alert_point("a", 10, "{}").unwrap();
        assert!(catalog.delete_definition("alert", "a").unwrap());
        assert!(!catalog.delete_definition("alert", "a").unwrap());
        assert_eq!(catalog.definition("alert", "a").unwrap(), None);
        assert_eq!(
            catalog.definition("experiment", "a").unwrap().as_deref(),
            Some("{2}")
        );
        assert_eq!(catalog.alert_points("a").unwrap(), ["{}"]);
    }

    #[test]
    fn alert_points_are_recorded_once_and_deliveries_logged_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        assert!(catalog.record_alert_point("a", 10, "{}").unwrap());
        assert!(
            !catalog
                .record_alert_point("a", 10, "{\"again\": 1}")
                .unwrap()
        );
        assert!(catalog.record_alert_point("a", 20, "{\"b\": 2}").unwrap());
        assert_eq!(catalog.alert_points("a").unwrap(), ["{\"b\": 2}", "{}"]);
        let attempt = |attempt, delivered| Delivery {
            alert: "a".into(),
            bucket: 10,
            attempt,
            url: "http://127.0.0.1:1/hook".into(),
            status: Some(if delivered { 200 } else { 503 }),
            error: None,
            delivered,
            at: "2026-01-01T00:00:00Z".into(),
        };
        catalog.log_delivery(&attempt(1, false)).unwrap();
        let undelivered = catalog.undelivered_alert_points("a").unwrap();
        assert_eq!(
            undelivered,
            [(10, "{}".to_string(), 1), (20, "{\"b\": 2}".to_string(), 0)]
        );
        catalog.log_delivery(&attempt(2, true)).unwrap();
        assert_eq!(catalog.undelivered_alert_points("a").unwrap().len(), 1);
        assert_eq!(
            catalog.deliveries("a").unwrap(),
            [attempt(1, false), attempt(2, true)]
        );
    }

    #[test]
    fn unknown_roles_are_refused_with_the_choices() {
        let err = "owner".parse::<Role>().unwrap_err().to_string();
        assert!(err.contains("admin, analyst or viewer"), "{err}");
    }
}
