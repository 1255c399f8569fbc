//! Savepoints: checkpoints the user owns, at `<target>/_metadata` with one database per
//! subtask, `<target>/state/v<vertex>-s<subtask>`. Two formats (Flink's names):
//!
//! - [`begin`] clones each subtask's database at the checkpoint into the savepoint's folder. A
//!   SlateDB clone reads the job's SSTs by reference and pins them with a checkpoint of its own
//!   in the job's database, so the job may retire the checkpoint right after.
//! - Canonical, [`Pinned::finish`]: each clone is made to own its data. One full compaction
//!   rewrites every SST it reads into its own folder, then SlateDB's detach pass drops its
//!   references to the job's databases (deleting their pins); only then is `_metadata` written.
//!   Such a savepoint depends on nothing else: its job may be cancelled and its databases and
//!   checkpoints deleted, and any job whose state is in the same store (the same bucket, or the
//!   local file system) restores from it. The compaction runs on a thread of its own, off the
//!   tasks' runtime; it reads and writes the state once, like Flink's savepoints.
//! - Native, [`Pinned::by_reference`]: `_metadata` at once; the savepoint reads the job's SSTs,
//!   kept for it by SlateDB's pins (reference counts) whatever the job's retention and
//!   compactions do, so it is valid while the job's state folder is kept. A rescale's.
//!
//! A job restored from a savepoint is in turn a clone of it, reading its SSTs by reference until
//! its own compactions rewrite them: a savepoint must outlive the jobs started from it until
//! their state has been compacted (Flink's "no claim" mode keeps the same rule until the first
//! full checkpoint).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use slatedb::CloneSourceSpec;
use slatedb::admin::Admin;
use slatedb::compactor::{CompactionSpec, CompactionStatus, SourceId};
use slatedb::config::{CheckpointOptions, GarbageCollectorOptions, GarbageCollectorScheduleOptions};
use slatedb::object_store::path::Path;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::checkpoint::{CompletedCheckpoint, METADATA_FILE, put_create_only, read_metadata};
use crate::compaction::CompactorSettings;
use crate::error::{Result, StateError};
use crate::location::StateLocation;

/// How long one compaction of a savepoint's database may take before the savepoint fails.
const COMPACTION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long a compaction may be refused while the compactor starts.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Full compactions tried before giving up on a database that still reads its parents' SSTs
/// (a compaction can be refused if the tree changed under it; nothing else writes a savepoint).
const MAX_COMPACTIONS: usize = 3;

/// A savepoint whose databases are cloned and pinned, not yet self-contained.
#[must_use = "a savepoint exists only once it is finished"]
pub struct Pinned {
    target: StateLocation,
    savepoint: CompletedCheckpoint,
    started: Instant,
}

/// Clones every state handle of `checkpoint` (stored in `state`) into `target`'s folder. Fast:
/// no data is read or written, only manifests.
pub async fn begin(state: &StateLocation, target: &StateLocation, checkpoint: &CompletedCheckpoint) -> Result<Pinned> {
    if !state.shares_store_with(target) {
        return Err(StateError::InvalidLocation {
            location: target.url().to_string(),
            reason: format!(
                "a savepoint must be in the same store as the checkpoints it is taken from ({}): the same \
                 bucket, or a local folder",
                state.url()
            ),
        });
    }
    let mut pinned = Pinned { target: target.clone(), savepoint: checkpoint.clone(), started: Instant::now() };
    pinned.savepoint.is_savepoint = true;
    for index in 0..pinned.savepoint.state_handles.len() {
        let handle = &mut pinned.savepoint.state_handles[index];
        let db = target.child(&["state", &format!("v{}-s{}", handle.vertex.0, handle.subtask.0)]);
        let source = CloneSourceSpec::with_checkpoint(Path::from(handle.db_path.as_str()), handle.slatedb_checkpoint);
        let cloned = target.admin(&db).create_clone_builder_from_source(source).build().await;
        if let Err(e) = cloned {
            // Let go of what the clones made so far pinned.
            pinned.savepoint.state_handles.truncate(index);
            pinned.release().await;
            return Err(StateError::db(db.as_ref(), e));
        }
        handle.db_path = db.to_string();
    }
    Ok(pinned)
}

impl Pinned {
    /// Writes `_metadata` of a savepoint that keeps reading the job's SSTs (Flink's "native"
    /// format, as a rescale uses it): each clone gets a checkpoint to restore from, and its pins
    /// in the job's databases keep those SSTs from retention and compaction while the job's
    /// state folder is kept. About as fast as the checkpoint it is made from.
    pub async fn by_reference(mut self) -> Result<CompletedCheckpoint> {
        if let Err(e) = self.checkpoint_every_database().await {
            self.release().await;
            return Err(e);
        }
        self.write_metadata().await
    }

    /// Makes every cloned database own its data, then writes `_metadata`; returns the
    /// savepoint as written.
    pub async fn finish(self) -> Result<CompletedCheckpoint> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new().name("weir-savepoint".into()).spawn(move || {
            let finished = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(self.make_self_contained()),
                Err(e) => Err(StateError::Compaction(format!("cannot start the savepoint's runtime: {e}"))),
            };
            let _ = sender.send(finished);
        });
        if let Err(e) = spawned {
            return Err(StateError::Compaction(format!("cannot start the savepoint's thread: {e}")));
        }
        receiver.await.map_err(|_| StateError::Compaction("the savepoint's thread died".into()))?
    }

    async fn make_self_contained(mut self) -> Result<CompletedCheckpoint> {
        let mut owned = Ok(());
        for handle in &self.savepoint.state_handles {
            owned = own_every_sst(&self.target, &Path::from(handle.db_path.as_str())).await;
            if owned.is_err() {
                break;
            }
        }
        if let Err(e) = owned.and(self.checkpoint_every_database().await) {
            self.release().await;
            return Err(e);
        }
        self.write_metadata().await
    }

    /// A savepoint that failed lets go of the job's SSTs: the pins its clones hold in the job's
    /// databases are deleted (best effort; the clones themselves stay, unreferenced).
    async fn release(&self) {
        for handle in &self.savepoint.state_handles {
            let db = Path::from(handle.db_path.as_str());
            let Ok(Some(manifest)) = self.target.admin(&db).read_manifest(None).await else { continue };
            for parent in manifest.external_dbs() {
                if let Some(pin) = parent.final_checkpoint_id {
                    let parent_db = Path::from(parent.path.as_str());
                    if let Err(e) = self.target.admin(&parent_db).delete_checkpoint(pin).await {
                        tracing::warn!(db = %parent.path, error = %e, "a failed savepoint's pin stays");
                    }
                }
            }
        }
    }

    /// A SlateDB checkpoint in each of the savepoint's databases: what a restore clones.
    async fn checkpoint_every_database(&mut self) -> Result<()> {
        for handle in &mut self.savepoint.state_handles {
            let db = Path::from(handle.db_path.as_str());
            let options = CheckpointOptions {
                name: Some(format!("weir-savepoint-{}", self.savepoint.id)),
                ..CheckpointOptions::default()
            };
            let created = self
                .target
                .admin(&db)
                .create_detached_checkpoint(&options)
                .await
                .map_err(|e| StateError::db(db.as_ref(), e))?;
            handle.slatedb_checkpoint = created.id;
        }
        Ok(())
    }

    async fn write_metadata(self) -> Result<CompletedCheckpoint> {
        let path = self.target.child(&[METADATA_FILE]);
        put_create_only(&self.target, &path, crate::checkpoint::encode_metadata(&self.savepoint)).await?;
        info!(path = %path, checkpoint = %self.savepoint.id, elapsed_ms = self.started.elapsed().as_millis() as u64,
            "savepoint written");
        Ok(self.savepoint)
    }
}

/// Takes a self-contained savepoint of `checkpoint` at `target` ([`begin`], then
/// [`Pinned::finish`]).
pub async fn write(
    state: &StateLocation,
    target: &StateLocation,
    checkpoint: &CompletedCheckpoint,
) -> Result<CompletedCheckpoint> {
    begin(state, target, checkpoint).await?.finish().await
}

/// Reads the savepoint at `target` (the folder given to [`begin`]).
pub async fn read(target: &StateLocation) -> Result<CompletedCheckpoint> {
    read_metadata(target, &target.child(&[METADATA_FILE])).await
}

/// Refuses a savepoint at `savepoint_location` whose databases a job with its state in `state`
/// cannot see: a clone reads its sources in its own store.
pub fn check_visible(state: &StateLocation, savepoint_location: &StateLocation) -> Result<()> {
    if state.shares_store_with(savepoint_location) {
        return Ok(());
    }
    Err(StateError::InvalidRestore(format!(
        "the savepoint at `{}` is in another store than this job's state (`{}`): restore it into state in the \
         same bucket, or copy it there",
        savepoint_location.url(),
        state.url()
    )))
}

/// Compacts the clone at `db` until it reads no SST of another database, then detaches it from
/// those databases.
async fn own_every_sst(location: &StateLocation, db: &Path) -> Result<()> {
    let admin = location.admin(db);
    let failed = |e: slatedb::Error| StateError::db(db.as_ref(), e);
    let mut compactions = 0;
    loop {
        let current = read_manifest(&admin, db).await?;
        if current.external_dbs().iter().all(|parent| parent.sst_ids.is_empty()) {
            break;
        }
        if compactions == MAX_COMPACTIONS {
            return Err(StateError::Compaction(format!(
                "`{db}` still reads its job's SSTs after {MAX_COMPACTIONS} full compactions"
            )));
        }
        compactions += 1;
        // Every source, newest first (L0, then the sorted runs), into the oldest sorted run.
        let runs: Vec<u32> = current.compacted().iter().map(|run| run.id).collect();
        let sources = current
            .l0()
            .iter()
            .map(|view| SourceId::SstView(view.id))
            .chain(runs.iter().map(|&id| SourceId::SortedRun(id)))
            .collect();
        let destination = runs.iter().copied().min().unwrap_or(0);
        compact(&admin, db, CompactionSpec::new(sources, destination)).await?;
    }
    // The compactor pins the manifests it replaced with checkpoints that expire later; nothing
    // reads this database yet, and the detach pass waits for every pinned manifest to be free of
    // the job's SSTs.
    for checkpoint in admin.list_checkpoints(None).await.map_err(failed)? {
        admin.delete_checkpoint(checkpoint.id).await.map_err(failed)?;
    }
    let detach = GarbageCollectorOptions {
        manifest_options: None,
        wal_options: None,
        wal_fence_options: None,
        compacted_options: None,
        compactions_options: None,
        detach_options: Some(GarbageCollectorScheduleOptions::default()),
        boundary_files_enabled: location.supports_conditional_update(),
        ..GarbageCollectorOptions::default()
    };
    admin.run_gc_once(detach).await.map_err(failed)?;
    let after = read_manifest(&admin, db).await?;
    if let Some(parent) = after.external_dbs().first() {
        return Err(StateError::Compaction(format!(
            "`{db}` is still attached to `{}` (and {} more)",
            parent.path,
            after.external_dbs().len() - 1
        )));
    }
    Ok(())
}

async fn read_manifest(admin: &Admin, db: &Path) -> Result<slatedb::manifest::VersionedManifest> {
    admin
        .read_manifest(None)
        .await
        .map_err(|e| StateError::db(db.as_ref(), e))?
        .ok_or_else(|| StateError::Compaction(format!("the savepoint's database `{db}` is gone")))
}

/// Runs SlateDB's compactor on `db` until the compaction `spec` is committed. The compactor
/// schedules nothing of its own meanwhile.
async fn compact(admin: &Admin, db: &Path, spec: CompactionSpec) -> Result<()> {
    let failed = |e: slatedb::Error| StateError::db(db.as_ref(), e);
    let settings = CompactorSettings::default();
    let mut options = settings.compactor_options();
    options.scheduler_options = HashMap::from([("min_compaction_sources".to_string(), usize::MAX.to_string())]);
    let stop = CancellationToken::new();
    let run = admin.run_compactor_with_options(stop.clone(), options);
    tokio::pin!(run);
    let started = Instant::now();
    let mut submitted = None;
    let outcome = loop {
        tokio::select! {
            ended = &mut run => {
                let why = match ended {
                    Ok(()) => "it stopped".to_string(),
                    Err(e) => e.to_string(),
                };
                return Err(StateError::Compaction(format!("the compactor of `{db}` ended early: {why}")));
            },
            _ = tokio::time::sleep(settings.poll_interval) => {}
        }
        if started.elapsed() > COMPACTION_TIMEOUT {
            break Err(StateError::Compaction(format!("compacting `{db}` took over {COMPACTION_TIMEOUT:?}")));
        }
        let Some(id) = submitted else {
            // Refused until the compactor has started and stored its (empty) compactions.
            match admin.submit_compaction(spec.clone()).await {
                Ok(compaction) => submitted = Some(compaction.id()),
                Err(e) if started.elapsed() > SUBMIT_TIMEOUT => break Err(failed(e)),
                Err(_) => {}
            }
            continue;
        };
        match admin.read_compaction(id, None).await.map(|c| c.map(|c| c.status())) {
            // Refused (failed) if the tree changed under it: the caller plans again.
            Ok(Some(CompactionStatus::Completed | CompactionStatus::Failed)) => break Ok(()),
            Ok(_) => {}
            // The compactor is stopped below either way.
            Err(e) => break Err(failed(e)),
        }
    };
    stop.cancel();
    run.await.map_err(failed)?;
    outcome
}
