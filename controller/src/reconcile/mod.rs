//! The reconcilers: kube-runtime controllers that read the cluster, call the pure decisions of
//! [`crate::decide`] and [`crate::status`], and carry them out.
//!
//! - [`vm`]: VirtualMachine → its VMI (run strategies, adoption, orphan delete) and VM status.
//! - [`vmi`]: VirtualMachineInstance → its pod (the pod contract) and VMI status from the pod.
//! - [`replicaset`]: VirtualMachineInstanceReplicaSet → N VMIs.
//!
//! Every status goes out as a server-side apply of only the fields the controller owns, under
//! one field manager. A failed pass is retried with a per-object exponential backoff. The
//! caches ([`Caches`]) run for the whole life of the process, on leader and standby alike, so
//! that readiness means "ready to take the lead"; the controllers themselves run only while
//! this replica holds the lease ([`run`] is dropped when it loses it). The VM and VMI
//! controllers are triggered by the caches' own change feeds, so a pass never reads a cached
//! VMI or pod older than the change that triggered it.

pub mod replicaset;
pub mod vm;
pub mod vmi;
pub mod written;

use crate::error::{Error, Result};
use crate::observability::Metrics;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use virtshim_api::pod::LABEL_APP;
use virtshim_api::types::{
    VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceReplicaSet,
};

/// The field manager of every write, and the events' reporting controller.
pub const FIELD_MANAGER: &str = "virtshim-controller";
/// The label selector of the pods the controller makes (`kubevirt.io=virt-launcher`).
pub fn launcher_pod_selector() -> String {
    format!("{LABEL_APP}=virt-launcher")
}

/// How long a pass that found nothing to wait for waits before looking again anyway.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How soon a pass looks again when a cache had not caught up with the cluster (a VMI the
/// VM's create found already there, a copy this controller's own write had replaced); the
/// change's watch event normally comes first.
pub const RACE_RETRY: Duration = Duration::from_secs(1);
/// The first retry after a failed pass; it doubles per consecutive failure.
pub const ERROR_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest retry delay after failed passes.
pub const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What a pass does when its cached copy of the object (`key`, at `cached`) is one this
/// controller's own write replaced ([`written`]): nothing but look again after [`RACE_RETRY`]
/// (the write's watch event normally comes first). Acting on that copy would fail its writes'
/// preconditions or, for a VMI whose pod cache lags too, make a second pod. `None`: go on.
pub fn await_own_write(ctx: &Context, key: &str, cached: Option<&str>) -> Option<Action> {
    ctx.written.behind(key, cached).then(|| {
        tracing::debug!("the cache does not show this controller's last write yet: its event brings the next pass");
        Action::requeue(RACE_RETRY)
    })
}

/// The retry delay after `failures` consecutive failed passes (1 s, 2 s, 4 s, … capped).
pub fn error_backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    ERROR_BACKOFF_BASE
        .saturating_mul(1u32 << exp)
        .min(ERROR_BACKOFF_MAX)
}

/// Consecutive failures per object, for [`error_backoff`].
#[derive(Debug, Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Counts one more failure of `key` and returns the delay before the retry.
    pub fn failed(&self, key: &str) -> Duration {
        self.count(key).1
    }

    /// Counts one more failure of `key`: how many in a row now, and the delay before the retry.
    pub fn count(&self, key: &str) -> (u32, Duration) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        (*n, error_backoff(*n))
    }

    /// Forgets the failures of `key` after a successful pass.
    pub fn succeeded(&self, key: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// How many changes a trigger stream may fall behind before it re-triggers everything cached.
const CHANGES_CAPACITY: usize = 4096;

/// Whether the caches hold a first full list yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Readiness {
    Syncing,
    Ready,
    /// A reflector's writer went away before its first list: the caches will never sync.
    Failed,
}

/// The caches will never sync: a reflector stopped before its first full list.
#[derive(Debug, thiserror::Error)]
#[error("a cache's reflector stopped before its first full list")]
pub struct NeverSynced;

/// The caches the reconcilers read besides their own watches: every VMI and every launcher
/// pod. They also trigger the controllers ([`Caches::vmi_changes`], [`Caches::pod_changes`]):
/// a change is announced only after it is in the store, so a pass it triggers never reads an
/// older copy than the one that triggered it. (With a trigger from a separate watch, the pass
/// could read the store before the store saw the change, find nothing to do and wait for the
/// next event — a VMI turned Running a minute late.)
#[derive(Clone)]
pub struct Caches {
    pub vmis: Store<VirtualMachineInstance>,
    pub pods: Store<Pod>,
    vmi_changes: broadcast::Sender<Arc<VirtualMachineInstance>>,
    pod_changes: broadcast::Sender<Arc<Pod>>,
    /// Set once by one task that awaits both stores. kube's `Store::wait_until_ready` wakes
    /// only the most recent of several concurrent waiters (its one-shot channel keeps one
    /// waker), so the readiness probe and the leader loop must not both wait on the stores.
    ready: watch::Receiver<Readiness>,
}

impl Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("vmis", &self.vmis.len())
            .field("pods", &self.pods.len())
            .field("ready", &*self.ready.borrow())
            .finish()
    }
}

/// Feeds `events` into the store behind `writer` and announces each object they touch on
/// `changes`, after the store holds it. Runs until `events` ends.
pub async fn feed_cache<K, S>(
    writer: reflector::store::Writer<K>,
    events: S,
    changes: broadcast::Sender<Arc<K>>,
    what: &'static str,
) where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
    S: futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send,
{
    let stream = reflector(writer, events);
    stream
        .for_each(|event| {
            match event {
                Ok(
                    watcher::Event::Apply(obj)
                    | watcher::Event::Delete(obj)
                    | watcher::Event::InitApply(obj),
                ) => {
                    // No receiver (a standby replica) is not an error: nothing to trigger.
                    let _ = changes.send(Arc::new(obj));
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                Err(e) => tracing::warn!(cache = what, error = %e, "watch failed, retrying"),
            }
            futures::future::ready(())
        })
        .await;
}

/// Starts a reflector for `api` in the background; returns its store and its change feed.
fn spawn_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    what: &'static str,
) -> (Store<K>, broadcast::Sender<Arc<K>>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
    let events = watcher(api, config)
        .default_backoff()
        .modify(|o: &mut K| o.managed_fields_mut().clear());
    tokio::spawn(feed_cache(writer, events, changes.clone(), what));
    (reader, changes)
}

/// A controller trigger: every object announced on `changes` from now on. Should the stream
/// fall behind and miss some, it yields everything in `store` instead (nothing is lost, some
/// objects are reconciled once more than needed).
pub fn trigger_stream<K>(
    changes: &broadcast::Sender<Arc<K>>,
    store: Store<K>,
) -> impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let rx = changes.subscribe();
    futures::stream::unfold((rx, store), |(mut rx, store)| async move {
        let batch: Vec<Arc<K>> = match rx.recv().await {
            Ok(obj) => vec![obj],
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "trigger fell behind: re-triggering every cached object"
                );
                store.state()
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((batch, (rx, store)))
    })
    .flat_map(|batch| futures::stream::iter(batch.into_iter().map(|o| Ok((*o).clone()))))
}

use kube::runtime::reflector::reflector;

impl Caches {
    /// Starts the VMI and pod caches.
    pub fn start(client: &Client) -> Self {
        let (vmis, vmi_changes) = spawn_reflector(
            Api::<VirtualMachineInstance>::all(client.clone()),
            watcher::Config::default(),
            "vmis",
        );
        let (pods, pod_changes) = spawn_reflector(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().labels(&launcher_pod_selector()),
            "pods",
        );
        Self::from_stores(vmis, pods, vmi_changes, pod_changes)
    }

    /// Caches over stores that something else fills; one task waits for them to sync.
    pub fn from_stores(
        vmis: Store<VirtualMachineInstance>,
        pods: Store<Pod>,
        vmi_changes: broadcast::Sender<Arc<VirtualMachineInstance>>,
        pod_changes: broadcast::Sender<Arc<Pod>>,
    ) -> Self {
        let (tx, ready) = watch::channel(Readiness::Syncing);
        {
            let (vmis, pods) = (vmis.clone(), pods.clone());
            tokio::spawn(async move {
                let synced = async {
                    vmis.wait_until_ready().await?;
                    pods.wait_until_ready().await
                };
                tx.send_replace(match synced.await {
                    Ok(()) => Readiness::Ready,
                    Err(_) => Readiness::Failed,
                });
            });
        }
        Self {
            vmis,
            pods,
            vmi_changes,
            pod_changes,
            ready,
        }
    }

    /// Waits until both caches hold a first full list. Any number of callers may wait at once.
    pub async fn wait_until_ready(&self) -> std::result::Result<(), NeverSynced> {
        let mut ready = self.ready.clone();
        let state = ready
            .wait_for(|r| *r != Readiness::Syncing)
            .await
            .map(|r| *r);
        match state {
            Ok(Readiness::Ready) => Ok(()),
            _ => Err(NeverSynced),
        }
    }

    /// A trigger for every VMI change, seen by [`Caches::vmis`] before it is yielded.
    pub fn vmi_changes(
        &self,
    ) -> impl futures::Stream<Item = std::result::Result<VirtualMachineInstance, watcher::Error>>
           + Send
           + 'static {
        trigger_stream(&self.vmi_changes, self.vmis.clone())
    }

    /// A trigger for every launcher pod change, seen by [`Caches::pods`] before it is yielded.
    pub fn pod_changes(
        &self,
    ) -> impl futures::Stream<Item = std::result::Result<Pod, watcher::Error>> + Send + 'static
    {
        trigger_stream(&self.pod_changes, self.pods.clone())
    }
}

/// What every reconcile pass gets.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub caches: Caches,
    pub metrics: Arc<Metrics>,
    pub failures: Failures,
    /// What the passes wrote that the caches may not show yet.
    pub written: written::Written,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("caches", &self.caches)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client, caches: Caches, metrics: Arc<Metrics>, instance: String) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance: Some(instance),
            },
        );
        Self {
            client,
            recorder,
            caches,
            metrics,
            failures: Failures::default(),
            written: written::Written::default(),
        }
    }

    /// Publishes an event about `regarding`. Failing to publish is logged, never fatal.
    pub async fn event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            // A namespace being deleted refuses every event: thousands of lines that say
            // nothing. Other failures are worth a warning.
            if crate::error::is_namespace_terminating(&e) || crate::error::is_status(&e, 404) {
                tracing::debug!(reason, error = %e, "cannot publish event");
            } else {
                tracing::warn!(reason, error = %e, "cannot publish event");
            }
        }
    }
}

/// The time now, as the API writes it.
pub fn now() -> Time {
    Time(Timestamp::now())
}

/// A random number (the crash-loop jitter).
pub fn random() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(Instant::now())
}

/// An object's namespace and name, or an error naming the missing one.
pub fn namespace_and_name<K: Resource>(obj: &K, kind: &'static str) -> Result<(String, String)> {
    let ns = obj.namespace().ok_or(Error::MissingField {
        kind,
        field: "metadata.namespace",
    })?;
    let name = obj.meta().name.clone().ok_or(Error::MissingField {
        kind,
        field: "metadata.name",
    })?;
    Ok((ns, name))
}

/// An object's uid, or an error.
pub fn uid<K: Resource>(obj: &K, kind: &'static str) -> Result<String> {
    obj.meta().uid.clone().ok_or(Error::MissingField {
        kind,
        field: "metadata.uid",
    })
}

/// Server-side applies `status` to the status subresource of `name`. With `resource_version`
/// the apiserver refuses the write (409) if the object changed since it was read. Returns the
/// object's resourceVersion after the write.
pub async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    resource_version: Option<&str>,
    status: serde_json::Value,
) -> Result<Option<String>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let mut body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": name },
        "status": status,
    });
    if let Some(rv) = resource_version {
        body["metadata"]["resourceVersion"] = serde_json::Value::String(rv.to_owned());
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let written = api
        .patch_status(name, &params, &Patch::Apply(&body))
        .await?;
    Ok(written.meta().resource_version.clone())
}

/// The JSON patch that turns `old` finalizers into `new`, guarded by a test of the old list
/// (so a concurrent change makes the apiserver refuse it).
pub fn finalizers_patch(old: &[String], new: &[String]) -> Result<json_patch::Patch> {
    let ops = if old.is_empty() {
        serde_json::json!([{ "op": "add", "path": "/metadata/finalizers", "value": new }])
    } else {
        serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": old },
            { "op": "replace", "path": "/metadata/finalizers", "value": new },
        ])
    };
    Ok(serde_json::from_value(ops)?)
}

/// Adds `finalizer` to the object unless it has it. Returns the patched object, if it patched.
pub async fn add_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<Option<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let old = obj.finalizers();
    if old.iter().any(|f| f == finalizer) {
        return Ok(None);
    }
    let mut new = old.to_vec();
    new.push(finalizer.to_owned());
    let name = obj.name_any();
    let patched = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Json::<()>(finalizers_patch(old, &new)?),
        )
        .await?;
    Ok(Some(patched))
}

/// Removes `finalizer` from the object if it has it. Returns whether it patched. An object
/// already gone counts as done.
pub async fn remove_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    remove_finalizers(api, obj, &[finalizer]).await
}

/// Removes every one of `finalizers` the object has, in one patch (two removals in two
/// patches need a read between them, the second testing the list the first changed). Returns
/// whether it patched. An object already gone counts as done.
pub async fn remove_finalizers<K>(api: &Api<K>, obj: &K, finalizers: &[&str]) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let old = obj.finalizers();
    let new: Vec<String> = old
        .iter()
        .filter(|f| !finalizers.contains(&f.as_str()))
        .cloned()
        .collect();
    if new.len() == old.len() {
        return Ok(false);
    }
    let name = obj.name_any();
    match api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Json::<()>(finalizers_patch(old, &new)?),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if crate::error::is_status(&e, 404) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether the `failures`-th failure in a row of one object is logged as a warning: the 1st,
/// 2nd, 4th, 8th… The others go to debug, so an object failing for a long time writes a few
/// lines, not one per retry (a namespace deletion once wrote 11,000 in 10 s).
pub fn worth_a_warning(failures: u32) -> bool {
    failures.is_power_of_two()
}

/// The retry after a failed pass: logged (sparingly), counted, with the object's backoff.
fn error_policy<K>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    move |obj, error, ctx| {
        let key = format!(
            "{controller}/{}/{}",
            obj.namespace().unwrap_or_default(),
            obj.name_any()
        );
        let (failures, delay) = ctx.failures.count(&key);
        let namespace = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        if worth_a_warning(failures) {
            tracing::warn!(controller, %namespace, %name, error = %error, failures,
                retry_in = ?delay, "reconcile failed");
        } else {
            tracing::debug!(controller, %namespace, %name, error = %error, failures,
                retry_in = ?delay, "reconcile failed");
        }
        Action::requeue(delay)
    }
}

/// Runs `pass`, counting it and resetting the object's backoff when it succeeds.
pub async fn measured<K, F>(
    controller: &'static str,
    obj: &K,
    ctx: &Context,
    pass: F,
) -> Result<Action>
where
    K: Resource,
    F: std::future::Future<Output = Result<Action>>,
{
    let started = Instant::now();
    let result = pass.await;
    ctx.metrics.reconciled(
        controller,
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    if result.is_ok() {
        let key = format!(
            "{controller}/{}/{}",
            obj.namespace().unwrap_or_default(),
            obj.name_any()
        );
        ctx.failures.succeeded(&key);
    }
    result
}

/// Logs what a controller's stream yields (one item per finished pass).
async fn drain<T: Debug, E: std::fmt::Display>(
    controller: &'static str,
    stream: impl futures::Stream<Item = std::result::Result<T, E>>,
) {
    stream
        .for_each(|result| async move {
            match result {
                Ok(obj) => tracing::trace!(controller, ?obj, "reconciled"),
                Err(e) => tracing::debug!(controller, error = %e, "controller"),
            }
        })
        .await;
}

/// How many objects of one kind are reconciled at once.
pub const CONCURRENCY: u16 = 16;

/// Runs the three controllers until the future is dropped (leadership lost, or shutdown).
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let config = ControllerConfig::default().concurrency(CONCURRENCY);
    let wc = watcher::Config::default();

    let vms = Controller::new(Api::<VirtualMachine>::all(client.clone()), wc.clone())
        .with_config(config.clone())
        // Every VMI maps to the VM of the same name: owned ones, and orphans it may adopt.
        // The trigger is the VMI cache's own feed: the pass reads the VMI from that cache.
        .watches_stream(ctx.caches.vmi_changes(), |vmi| {
            let ns = vmi.namespace()?;
            Some(reflector::ObjectRef::new(&vmi.name_any()).within(&ns))
        })
        .run(vm::reconcile, error_policy("vm"), ctx.clone());

    let vmis = Controller::new(
        Api::<VirtualMachineInstance>::all(client.clone()),
        wc.clone(),
    )
    .with_config(config.clone())
    // The trigger is the pod cache's own feed: the pass reads the pod from that cache.
    .owns_stream(ctx.caches.pod_changes())
    .run(vmi::reconcile, error_policy("vmi"), ctx.clone());

    let replicasets = Controller::new(
        Api::<VirtualMachineInstanceReplicaSet>::all(client.clone()),
        wc.clone(),
    )
    .with_config(config)
    .owns(Api::<VirtualMachineInstance>::all(client), wc)
    .run(replicaset::reconcile, error_policy("replicaset"), ctx);

    tokio::join!(
        drain("vm", vms),
        drain("vmi", vmis),
        drain("replicaset", replicasets)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_backoff_doubles_and_caps() {
        let table = [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 4),
            (5, 16),
            (9, 256),
            (10, 300),
            (u32::MAX, 300),
        ];
        for (failures, secs) in table {
            assert_eq!(
                error_backoff(failures),
                Duration::from_secs(secs),
                "{failures}"
            );
        }
    }

    #[test]
    fn repeated_failures_warn_sparingly() {
        let warned: Vec<u32> = (1..=40).filter(|n| worth_a_warning(*n)).collect();
        assert_eq!(warned, [1, 2, 4, 8, 16, 32]);
        let f = Failures::default();
        assert_eq!(f.count("a"), (1, Duration::from_secs(1)));
        assert_eq!(f.count("a"), (2, Duration::from_secs(2)));
    }

    #[test]
    fn failures_reset_on_success() {
        let f = Failures::default();
        assert_eq!(f.failed("a"), Duration::from_secs(1));
        assert_eq!(f.failed("a"), Duration::from_secs(2));
        assert_eq!(f.failed("b"), Duration::from_secs(1));
        f.succeeded("a");
        assert_eq!(f.failed("a"), Duration::from_secs(1));
    }

    fn pod(name: &str, rv: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.resource_version = Some(rv.into());
        p
    }

    fn synced<K>(writer: &mut reflector::store::Writer<K>)
    where
        K: Resource + Clone + 'static,
        K::DynamicType: Default + Eq + Hash + Clone,
    {
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
    }

    /// The readiness probe and the leader loop wait at the same time; both must see the
    /// caches ready. (Waiting on kube's `Store::wait_until_ready` from both, as before, woke
    /// only the later waiter: the leader never turned Ready.)
    #[tokio::test]
    async fn every_waiter_sees_the_caches_ready() {
        let (vmis, mut vmi_writer) = reflector::store::<VirtualMachineInstance>();
        let (pods, mut pod_writer) = reflector::store::<Pod>();
        let caches =
            Caches::from_stores(vmis, pods, broadcast::channel(1).0, broadcast::channel(1).0);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let caches = caches.clone();
                tokio::spawn(async move { caches.wait_until_ready().await })
            })
            .collect();
        // Let every waiter poll (and park) before the stores sync.
        tokio::time::sleep(Duration::from_millis(50)).await;
        synced(&mut vmi_writer);
        synced(&mut pod_writer);
        for waiter in waiters {
            let done = tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("every waiter wakes up");
            assert!(done.expect("joined").is_ok());
        }
        // And one that comes later returns at once.
        assert!(caches.wait_until_ready().await.is_ok());
    }

    #[tokio::test]
    async fn caches_whose_writer_is_gone_never_sync() {
        let (vmis, vmi_writer) = reflector::store::<VirtualMachineInstance>();
        let (pods, _pod_writer) = reflector::store::<Pod>();
        let caches =
            Caches::from_stores(vmis, pods, broadcast::channel(1).0, broadcast::channel(1).0);
        drop(vmi_writer);
        let done = tokio::time::timeout(Duration::from_secs(5), caches.wait_until_ready())
            .await
            .expect("an answer");
        assert!(done.is_err());
    }

    /// A pass triggered by a pod change reads the pod from the cache: the cache must already
    /// hold that version when the trigger fires.
    #[tokio::test]
    async fn a_change_is_announced_after_the_store_has_it() {
        let (store, writer) = reflector::store::<Pod>();
        let (changes, _) = broadcast::channel(16);
        let (events_tx, events_rx) = futures::channel::mpsc::unbounded();
        let mut trigger = Box::pin(trigger_stream(&changes, store.clone()));
        tokio::spawn(feed_cache(
            writer,
            events_rx.map(Ok),
            changes.clone(),
            "pods",
        ));
        let sent = [
            watcher::Event::Init,
            watcher::Event::InitApply(pod("a", "1")),
            watcher::Event::InitDone,
            watcher::Event::Apply(pod("a", "2")),
            watcher::Event::Apply(pod("b", "3")),
            watcher::Event::Apply(pod("a", "4")),
        ];
        for event in sent {
            events_tx.unbounded_send(event).expect("feed");
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            let p = tokio::time::timeout(Duration::from_secs(5), trigger.next())
                .await
                .expect("a trigger")
                .expect("open")
                .expect("ok");
            let cached = store
                .get(&reflector::ObjectRef::from_obj(&p))
                .expect("the triggering pod is cached");
            // The cache may be newer than the trigger (later events), never older.
            let rv = |p: &Pod| p.metadata.resource_version.clone().unwrap_or_default();
            assert!(rv(&cached) >= rv(&p), "{} < {}", rv(&cached), rv(&p));
            seen.push((p.name_any(), rv(&p)));
        }
        let names: Vec<_> = seen.iter().map(|(n, v)| format!("{n}@{v}")).collect();
        assert_eq!(names, ["a@1", "a@2", "b@3", "a@4"]);
    }

    #[tokio::test]
    async fn a_trigger_that_falls_behind_triggers_everything_cached() {
        let (store, mut writer) = reflector::store::<Pod>();
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(pod("a", "1")));
        writer.apply_watcher_event(&watcher::Event::InitApply(pod("b", "1")));
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let (changes, _) = broadcast::channel(1);
        let mut trigger = Box::pin(trigger_stream(&changes, store));
        for _ in 0..3 {
            changes.send(Arc::new(pod("a", "2"))).expect("a receiver");
        }
        let mut names = Vec::new();
        for _ in 0..2 {
            let p = trigger.next().await.expect("open").expect("ok");
            names.push(p.name_any());
        }
        names.sort();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn finalizer_patches() {
        let add = serde_json::to_value(finalizers_patch(&[], &["f".into()]).unwrap()).unwrap();
        assert_eq!(
            add,
            serde_json::json!([{"op": "add", "path": "/metadata/finalizers", "value": ["f"]}])
        );
        let remove = serde_json::to_value(
            finalizers_patch(&["a".into(), "f".into()], &["a".into()]).unwrap(),
        )
        .unwrap();
        assert_eq!(
            remove,
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["a", "f"]},
                {"op": "replace", "path": "/metadata/finalizers", "value": ["a"]},
            ])
        );
    }
}
