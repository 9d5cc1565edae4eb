//! The inventory's part of the running agent: its database opened and restored at start, and
//! the thread that saves it, reports orphaned operations and sends snapshots.

use std::{
    io,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use log::{debug, info, warn};

use crate::{
    analysis::{
        events::{self, ApiEvent, unix_ms_now},
        inventory::{
            Inventory, InventorySettings, SharedInventory, SpecBinding,
            store::{InventoryStore, StoreError},
        },
        sensitive::SensitiveScanner,
    },
    export::otlp::EventQueue,
};

/// How often the inventory looks for orphaned operations.
const INVENTORY_TICK: Duration = Duration::from_secs(1);

/// Opens the inventory's database and restores what it holds.
pub(super) fn open(
    settings: &InventorySettings,
    specs: Vec<SpecBinding>,
    scanner: Arc<SensitiveScanner>,
) -> Result<(SharedInventory, InventoryStore), StoreError> {
    let store = InventoryStore::open(&settings.directory)?;
    let saved = store.load()?;
    info!(
        "inventory: {} endpoints restored from {}",
        saved.len(),
        store.path().display()
    );
    let mut inventory = Inventory::new(settings.clone(), specs, scanner, unix_ms_now());
    inventory.restore(saved);
    Ok((Arc::new(Mutex::new(inventory)), store))
}

/// Where events go: the collector, or the log when there is none.
pub(super) fn emit(events: Option<&EventQueue>, raised: &[ApiEvent]) {
    for event in raised {
        match events {
            Some(queue) => queue.push(event, None),
            None => log_event(event),
        }
    }
}

/// Logs an event, for runs without a collector.
pub(super) fn log_event(event: &ApiEvent) {
    // A snapshot's body is the whole inventory, served at /inventory: the log names it only.
    if event.name == events::INVENTORY_SNAPSHOT {
        debug!("{}: {}", event.name, event.service.name);
    } else {
        info!("{}: {}", event.name, event.body);
    }
}

/// The thread that keeps the inventory: it saves what changed, reports orphaned operations
/// and sends periodic snapshots, and saves once more when stopped.
pub(super) struct InventoryKeeper {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl InventoryKeeper {
    pub(super) fn start(
        inventory: SharedInventory,
        mut store: InventoryStore,
        events: Option<EventQueue>,
        settings: &InventorySettings,
    ) -> io::Result<Self> {
        let (stop, stopped) = std::sync::mpsc::channel();
        let (persist_every, snapshot_every) =
            (settings.persist_interval, settings.snapshot_interval);
        let thread = std::thread::Builder::new()
            .name("inventory".into())
            .spawn(move || {
                let (mut saved_at, mut snapshot_at) = (Instant::now(), Instant::now());
                loop {
                    let stopping = !matches!(
                        stopped.recv_timeout(INVENTORY_TICK),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    );
                    let now_ms = unix_ms_now();
                    let save = stopping || saved_at.elapsed() >= persist_every;
                    let snapshot = !stopping && snapshot_at.elapsed() >= snapshot_every;
                    let (orphans, dirty, snapshots) = {
                        let mut inventory =
                            inventory.lock().unwrap_or_else(PoisonError::into_inner);
                        (
                            inventory.orphan_events(now_ms),
                            if save {
                                inventory.take_dirty()
                            } else {
                                Vec::new()
                            },
                            if snapshot {
                                inventory.snapshot_events(now_ms)
                            } else {
                                Vec::new()
                            },
                        )
                    };
                    emit(events.as_ref(), &orphans);
                    emit(events.as_ref(), &snapshots);
                    if save {
                        saved_at = Instant::now();
                        if let Err(error) = store.save(&dirty) {
                            warn!("inventory not saved: {error}");
                        }
                    }
                    if snapshot {
                        snapshot_at = Instant::now();
                    }
                    if stopping {
                        return;
                    }
                }
            })?;
        Ok(Self { stop, thread })
    }

    /// Saves what is left and waits for the thread.
    pub(super) fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            warn!("inventory thread panicked");
        }
    }
}
