//! The gRPC handlers: validate → call the store → convert. Errors map to status codes in
//! [`crate::error`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use switchyard_proto::EncodedWatchEvent;
use switchyard_proto::secrets;
use switchyard_proto::shared_watch::metadata_service_server::MetadataService;
use switchyard_proto::state::{State, Touched};
use switchyard_proto::v1::admin_service_server::AdminService;
use switchyard_proto::v1::{
    ApplyRequest, ApplyResponse, DiffAction, GetHistoryRequest, GetHistoryResponse,
    GetSnapshotRequest, GetVersionRequest, HistoryEntry, ListClientsRequest, ListClientsResponse,
    ListMigrationsRequest, ListMigrationsResponse, Migration, MigrationRef, ReportStatusRequest,
    ReportStatusResponse, RollbackRequest, Snapshot, StartMigrationRequest, WatchRequest,
};
use switchyard_proto::validate::{self, Errors, ValidationError};
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::clients::{Clients, unix_ms};
use crate::error::ServiceError;
use crate::hub::{Hub, View};
use crate::migration::Coordinator;
use crate::store::Store;

/// Default and largest page of history.
const HISTORY_DEFAULT: usize = 50;
const HISTORY_MAX: usize = 1000;

/// Shared state of the config service: the store, the watch hub and the client inventory.
#[derive(Clone)]
pub struct ConfigService {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    clients: Arc<Clients>,
    /// Serializes writers so versions are committed and published in order.
    write: Arc<tokio::sync::Mutex<()>>,
    /// The migration coordinator, once the server wiring has started it.
    migrations: crate::migration::Slot,
    /// The store reports every applied version (a replicated log): versions are published
    /// from there ([`ConfigService::spawn_publisher`]), not after this process's commits.
    external: bool,
    /// An admin token guards the AdminService, so it may return secret values on request.
    secrets_on_request: bool,
}

impl std::fmt::Debug for ConfigService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigService")
            .field("version", &self.store.latest().version)
            .field("watchers", &self.hub.watchers())
            .finish()
    }
}

impl ConfigService {
    /// A service over `store`.
    pub fn new(store: Arc<dyn Store>, hub: Arc<Hub>, clients: Arc<Clients>) -> Self {
        Self {
            external: store.applied_versions().is_some(),
            store,
            hub,
            clients,
            write: Arc::new(tokio::sync::Mutex::new(())),
            migrations: Arc::default(),
            secrets_on_request: false,
        }
    }

    /// For a store that reports applied versions (see [`Store::applied_versions`]): publishes
    /// every version it applies — from this replica's writes and from other replicas' — to the
    /// watch hub, in version order, until `shutdown`. Does nothing for other stores.
    pub fn spawn_publisher(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(mut rx) = self.store.applied_versions() else {
            return;
        };
        let store = self.store.clone();
        let hub = self.hub.clone();
        // Watchers that connect from now on start from the store's latest version.
        let mut last = store.latest().version;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = shutdown.wait_for(|v| *v) => return,
                }
                let now = *rx.borrow_and_update();
                if now <= last {
                    continue;
                }
                match store.deltas_since(last) {
                    Some(ds) => {
                        for d in ds {
                            if d.from_version >= last && d.to_version <= now {
                                last = d.to_version;
                                // The latest state is at hand; the hub finds older ones in
                                // the store when a scoped view needs them.
                                let latest = store.latest();
                                let state = (latest.version == d.to_version).then_some(latest);
                                hub.publish((*d).clone(), state);
                            }
                        }
                    }
                    None => {
                        // Compacted past (a very slow publisher): watchers resynchronize from a
                        // full snapshot when the next delta does not follow what they have.
                        tracing::warn!(
                            from = last,
                            to = now,
                            "versions were compacted before they were published"
                        );
                        last = now;
                    }
                }
            }
        });
    }

    /// Lets admin requests ask for secret property values (`include_secrets`). Set it only
    /// when an admin token guards the AdminService: without one, such requests are refused.
    pub fn with_secrets_on_request(mut self, allowed: bool) -> Self {
        self.secrets_on_request = allowed;
        self
    }

    fn check_include_secrets(&self, include: bool) -> Result<(), Status> {
        if include && !self.secrets_on_request {
            return Err(Status::permission_denied(
                "secret values are returned only by a server with an admin token (serve --admin-token-file)",
            ));
        }
        Ok(())
    }

    /// Installs (or, at shutdown, removes) the migration coordinator.
    pub fn set_coordinator(&self, c: Option<Arc<Coordinator>>) {
        *self.migrations.write() = c;
    }

    /// The migration coordinator, if one runs.
    pub fn coordinator(&self) -> Option<Arc<Coordinator>> {
        self.migrations.read().clone()
    }

    fn coord(&self) -> Result<Arc<Coordinator>, ServiceError> {
        self.coordinator().ok_or_else(|| {
            ServiceError::Precondition(
                "this replica does not run the migration coordinator: with a replicated store \
                 (--store kafka://…) only the replica started with --data-dir runs it; send \
                 migration requests to that replica"
                    .into(),
            )
        })
    }

    /// The watch hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The client inventory.
    pub fn clients(&self) -> &Arc<Clients> {
        &self.clients
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Validates and (unless a dry run or a no-op) commits a batch of changes.
    pub async fn apply(&self, req: ApplyRequest) -> Result<ApplyResponse, ServiceError> {
        self.apply_inner(req, true).await
    }

    /// [`ConfigService::apply`] for the migration coordinator, whose writes are the ones that
    /// may change a migrating topic's route and `migrating_from`.
    pub(crate) async fn apply_as_coordinator(
        &self,
        req: ApplyRequest,
    ) -> Result<ApplyResponse, ServiceError> {
        self.apply_inner(req, false).await
    }

    async fn apply_inner(
        &self,
        req: ApplyRequest,
        guard_migrations: bool,
    ) -> Result<ApplyResponse, ServiceError> {
        let mut errs = Errors::default();
        validate::check_meta(&mut errs, &req.author, &req.comment);
        errs.finish()?;
        let _w = self.write.lock().await;
        let store = self.store.clone();
        let (resp, delta) = tokio::task::spawn_blocking(move || {
            let cur = store.latest();
            if req.expected_version != cur.version {
                return Err(ServiceError::Conflict {
                    expected: req.expected_version,
                    current: cur.version,
                });
            }
            let (next, touched) = cur.apply_changes_touched(&req.changes)?;
            let mut errs = Errors::default();
            crate::properties::check_changed(&cur, &next, &mut errs);
            errs.finish()?;
            if guard_migrations {
                check_migrating(&cur, &next)?;
            }
            commit(
                &*store,
                &cur,
                next,
                Some(&touched),
                req.dry_run,
                req.author,
                req.comment,
            )
        })
        .await??;
        if let Some((d, state, acked)) = delta
            && !self.external
        {
            self.hub.publish_acked(d, Some(state), acked);
        }
        Ok(resp)
    }

    /// Makes a new version with the content of `to_version`.
    pub async fn rollback(&self, req: RollbackRequest) -> Result<ApplyResponse, ServiceError> {
        let mut errs = Errors::default();
        validate::check_meta(&mut errs, &req.author, &req.comment);
        errs.finish()?;
        let _w = self.write.lock().await;
        let store = self.store.clone();
        let (resp, delta) = tokio::task::spawn_blocking(move || {
            let cur = store.latest();
            if let Some(expected) = req.expected_version
                && expected != cur.version
            {
                return Err(ServiceError::Conflict {
                    expected,
                    current: cur.version,
                });
            }
            if req.to_version > cur.version {
                return Err(ValidationError::one(
                    "to_version",
                    format!(
                        "{} is newer than the current version {}",
                        req.to_version, cur.version
                    ),
                )
                .into());
            }
            let target = store.get(req.to_version)?;
            let mut next = (*cur).clone();
            next.clusters = target.clusters.clone();
            next.topics = target.topics.clone();
            next.quotas = target.quotas.clone();
            next.profiles = target.profiles.clone();
            let comment = if req.comment.is_empty() {
                format!("rollback to version {}", req.to_version)
            } else {
                format!("rollback to version {}: {}", req.to_version, req.comment)
            };
            // Validation rules may have changed since that version: check it whole.
            validate::check_state(&next)?;
            check_migrating(&cur, &next)?;
            commit(&*store, &cur, next, None, req.dry_run, req.author, comment)
        })
        .await??;
        if let Some((d, state, acked)) = delta
            && !self.external
        {
            self.hub.publish_acked(d, Some(state), acked);
        }
        Ok(resp)
    }

    /// History, newest first. Secret values in diffs are redacted unless `include_secrets`
    /// (the handler checks the caller may ask).
    pub async fn history(
        &self,
        req: GetHistoryRequest,
    ) -> Result<GetHistoryResponse, ServiceError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || -> Result<_, ServiceError> {
            let limit = match req.limit as usize {
                0 => HISTORY_DEFAULT,
                n => n.min(HISTORY_MAX),
            };
            let items = store.history(req.before_version, limit);
            let current_version = store.latest().version;
            let mut entries = Vec::with_capacity(items.len());
            // Walk forward from the version before the oldest item to attribute each change.
            if let Some(oldest) = items.last() {
                let mut state = (*store.get(oldest.delta.from_version)?).clone();
                for item in items.iter().rev() {
                    let diff = if req.include_secrets {
                        state.diff_delta_revealing(&item.delta)
                    } else {
                        state.diff_delta(&item.delta)
                    };
                    let count =
                        |a: DiffAction| diff.iter().filter(|d| d.action == a as i32).count() as u32;
                    entries.push(HistoryEntry {
                        version: item.version,
                        created_unix_ms: item.delta.created_unix_ms,
                        author: item.delta.author.clone(),
                        comment: item.delta.comment.clone(),
                        added: count(DiffAction::Added),
                        changed: count(DiffAction::Changed),
                        removed: count(DiffAction::Removed),
                        diff: if req.include_diff { diff } else { Vec::new() },
                    });
                    state
                        .apply_delta_mut(&item.delta)
                        .map_err(|e| ServiceError::Internal(e.to_string()))?;
                }
            }
            entries.reverse();
            Ok(GetHistoryResponse {
                entries,
                oldest_version: store.oldest(),
                current_version,
            })
        })
        .await?
    }
}

/// A committed version to publish: its delta, the stored state and when the store acked it.
type Committed = (switchyard_proto::v1::Delta, Arc<State>, Instant);

/// Diffs `cur` → `next` and, unless a dry run or a no-op, stores `next` as the next version.
fn commit(
    store: &dyn Store,
    cur: &State,
    mut next: State,
    touched: Option<&Touched>,
    dry_run: bool,
    author: String,
    comment: String,
) -> Result<(ApplyResponse, Option<Committed>), ServiceError> {
    let diff = match touched {
        Some(t) => cur.diff_touched(&next, t),
        None => cur.diff(&next),
    };
    if dry_run || diff.is_empty() {
        return Ok((
            ApplyResponse {
                version: cur.version,
                applied: false,
                diff,
            },
            None,
        ));
    }
    next.version = cur.version + 1;
    next.created_unix_ms = unix_ms();
    next.author = if author.is_empty() {
        "anonymous".into()
    } else {
        author
    };
    next.comment = comment;
    let delta = match touched {
        Some(t) => cur.delta_touched(&next, t),
        None => cur.delta_to(&next),
    };
    let stored = store.commit(cur.version, next, delta.clone())?;
    let state = stored.clone();
    let acked = Instant::now();
    tracing::info!(
        version = stored.version,
        author = %stored.author,
        changes = diff.len(),
        "committed version"
    );
    Ok((
        ApplyResponse {
            version: stored.version,
            applied: true,
            diff,
        },
        Some((delta, state, acked)),
    ))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<EncodedWatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl MetadataService for ConfigService {
    async fn get_snapshot(
        &self,
        req: Request<GetSnapshotRequest>,
    ) -> Result<Response<Snapshot>, Status> {
        let view = View::from(&caller(&req));
        let latest = self.store.latest();
        Ok(Response::new(
            self.hub.view_state(&view, &latest).to_snapshot(),
        ))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = caller(&req);
        let revocable = req.extensions().get::<crate::auth::Revocable>().cloned();
        let req = req.into_inner();
        if !req.app.is_empty() {
            validate::check_name("app", &req.app)
                .map_err(|e| ServiceError::Invalid(ValidationError(vec![e])))?;
        }
        check_app(&caller, &req.app, "watch")?;
        let stream = self.hub.stream(
            self.store.clone(),
            req.known_version,
            View::from(&caller),
            revocable,
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_status(
        &self,
        req: Request<ReportStatusRequest>,
    ) -> Result<Response<ReportStatusResponse>, Status> {
        let caller = caller(&req);
        let status = req
            .into_inner()
            .status
            .ok_or_else(|| ServiceError::Invalid(ValidationError::one("status", "is required")))?;
        check_app(&caller, &status.app, "report status")?;
        self.clients.report(status).map_err(ServiceError::from)?;
        Ok(Response::new(ReportStatusResponse {
            lease_seconds: self
                .clients
                .lease()
                .as_secs()
                .try_into()
                .unwrap_or(u32::MAX),
            current_version: self.store.latest().version,
        }))
    }
}

/// Who sent `req` (set by [`crate::auth::MetadataAuth`]; a service used without it is open).
fn caller<T>(req: &Request<T>) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anonymous)
}

/// Refuses a change (an apply or a rollback, not the migration coordinator's own writes) that
/// would re-route, delete or re-mark a topic a migration is moving: that would abandon the move
/// without its hold, drain or copy-back, and lose or reorder records. `migrating_from` is the
/// coordinator's alone, so a change may not set it on another topic either.
fn check_migrating(cur: &State, next: &State) -> Result<(), ServiceError> {
    use switchyard_proto::state::normalize_topic;
    for (name, t) in &cur.topics {
        let Some(f) = &t.migrating_from else {
            continue;
        };
        let t = normalize_topic(t.clone());
        let changed = match next.topics.get(name).cloned().map(normalize_topic) {
            None => Some("delete it"),
            Some(n) if n.cluster != t.cluster || n.physical != t.physical => Some("re-route it"),
            Some(n) if n.migrating_from != t.migrating_from => Some("change its migrating_from"),
            Some(_) => None,
        };
        if let Some(what) = changed {
            return Err(ServiceError::Precondition(format!(
                "topic {name:?} is being moved by migration {} ({} {}/{}); a change may not \
                 {what} while the migration runs: let it complete, abort it (switchyard \
                 move-topic --abort {}) or force it on (--advance {})",
                f.migration_id,
                if f.aborted {
                    "aborting, back from"
                } else {
                    "from"
                },
                f.cluster,
                f.physical,
                f.migration_id,
                f.migration_id
            )));
        }
    }
    for (name, n) in &next.topics {
        let before = cur.topics.get(name).and_then(|t| t.migrating_from.as_ref());
        if n.migrating_from.is_some() && before.is_none() {
            return Err(ServiceError::Precondition(format!(
                "topic {name:?}: migrating_from is set by the migration coordinator only (start \
                 a move with switchyard move-topic)"
            )));
        }
    }
    Ok(())
}

/// A client token acts for its own app only.
fn check_app(caller: &Caller, app: &str, what: &str) -> Result<(), Status> {
    match caller {
        Caller::App(own) if own != app && !(app.is_empty() && what == "watch") => {
            Err(Status::permission_denied(format!(
                "the client token is for app {own:?}; it cannot {what} as app {app:?}"
            )))
        }
        _ => Ok(()),
    }
}

#[tonic::async_trait]
impl AdminService for ConfigService {
    async fn start_migration(
        &self,
        req: Request<StartMigrationRequest>,
    ) -> Result<Response<Migration>, Status> {
        Ok(Response::new(self.coord()?.start(req.into_inner()).await?))
    }

    async fn advance_migration(
        &self,
        req: Request<MigrationRef>,
    ) -> Result<Response<Migration>, Status> {
        Ok(Response::new(
            self.coord()?.advance(req.into_inner()).await?,
        ))
    }

    async fn abort_migration(
        &self,
        req: Request<MigrationRef>,
    ) -> Result<Response<Migration>, Status> {
        Ok(Response::new(self.coord()?.abort(req.into_inner()).await?))
    }

    async fn list_migrations(
        &self,
        req: Request<ListMigrationsRequest>,
    ) -> Result<Response<ListMigrationsResponse>, Status> {
        let migrations = self.coord()?.list(&req.into_inner())?;
        Ok(Response::new(ListMigrationsResponse { migrations }))
    }

    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        Ok(Response::new(
            ConfigService::apply(self, req.into_inner()).await?,
        ))
    }

    async fn get_history(
        &self,
        req: Request<GetHistoryRequest>,
    ) -> Result<Response<GetHistoryResponse>, Status> {
        self.check_include_secrets(req.get_ref().include_secrets)?;
        Ok(Response::new(self.history(req.into_inner()).await?))
    }

    async fn rollback(
        &self,
        req: Request<RollbackRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        Ok(Response::new(
            ConfigService::rollback(self, req.into_inner()).await?,
        ))
    }

    async fn list_clients(
        &self,
        req: Request<ListClientsRequest>,
    ) -> Result<Response<ListClientsResponse>, Status> {
        let req = req.into_inner();
        let current_version = self.store.latest().version;
        Ok(Response::new(ListClientsResponse {
            clients: self.clients.list(&req.app, current_version),
            current_version,
        }))
    }

    async fn get_version(
        &self,
        req: Request<GetVersionRequest>,
    ) -> Result<Response<Snapshot>, Status> {
        let req = req.into_inner();
        self.check_include_secrets(req.include_secrets)?;
        let v = req.version;
        let store = self.store.clone();
        let s = tokio::task::spawn_blocking(move || {
            if v == 0 {
                Ok(store.latest())
            } else {
                store.get(v)
            }
        })
        .await
        .map_err(ServiceError::from)?
        .map_err(ServiceError::from)?;
        let snap = s.to_snapshot();
        Ok(Response::new(if req.include_secrets {
            snap
        } else {
            secrets::redact_snapshot(snap)
        }))
    }
}
