//! Saga tests in omicron's style, on a real store: a failure injected at every step of a build and of a
//! delete (the worker refuses, or acts and its answer is lost; the store step fails, or commits and the
//! conductor dies right after) unwinds and leaves nothing behind, and every step run twice changes nothing.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use nimbus_protocol::compute::{InstanceSpec, PowerAction};
use nimbus_protocol::failure::chain;
use nimbus_protocol::ids::{HostId, InstanceId};
use nimbus_protocol::network::NetworkChanges;
use nimbus_protocol::scheduler::{NoValidHost, PlaceRequest, SchedulerError};
use nimbus_protocol::trace::Trace;
use nimbus_runtime::{CallError, Namespace};
use nimbus_storage::records::{HostLoad, Instance, Operation, VmState};
use nimbus_storage::schema::{FIXED_IPS, HOST_LOADS, INSTANCES, MACS};
use nimbus_storage::{Reads, Store, StoreError};

use super::{Effects, Patience, StepFailure, drive};
use crate::app::bootstrap::{self, Defaults};
use crate::app::identity::{self, AuthContext};
use crate::app::instances::TransitionError;
use crate::app::servers::{self, NewServers};
use crate::app::{App, builds, interfaces, quota};
use crate::compute::virt::{FakeHypervisor, GuestPower, VirtDriver};
use crate::timing::Timing;

/// How an injected failure shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The step fails and does nothing (a worker answers it failed; a commit fails).
    Refused,
    /// The step does its work but the answer is lost (a worker's reply times out; the conductor dies right
    /// after the commit).
    Lost,
}

struct TestEffects {
    app: App,
    hosts: BTreeMap<HostId, FakeHypervisor>,
    fault: Mutex<Option<(usize, Fault)>>,
    twice: bool,
    calls: AtomicUsize,
    /// What the store steps the saga was told of changed, and no network apply has covered yet.
    owed: Mutex<NetworkChanges>,
}

fn store_fault() -> StoreError {
    StoreError::CommitFailed("injected".into())
}

impl TestEffects {
    /// Runs one step: `act` once (twice when every step runs twice), with the injected fault if this is the
    /// step it is for.
    async fn step<T, E, Fut>(&self, failure: impl Fn(Fault) -> E, act: impl Fn() -> Fut) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let fault = self.fault.lock().unwrap().filter(|(at, _)| *at == n).map(|(_, f)| f);
        if fault == Some(Fault::Refused) {
            return Err(failure(Fault::Refused));
        }
        let mut outcome = act().await;
        if self.twice {
            outcome = act().await;
        }
        match fault {
            Some(Fault::Lost) => Err(failure(Fault::Lost)),
            _ => outcome,
        }
    }

    fn hypervisor(&self, host: &HostId) -> &FakeHypervisor {
        &self.hosts[host]
    }
}

fn worker_failure(fault: Fault) -> StepFailure {
    match fault {
        Fault::Refused => StepFailure::Failed("injected".into()),
        Fault::Lost => StepFailure::Lost("injected".into()),
    }
}

impl Effects for TestEffects {
    async fn load(&self, id: InstanceId) -> Result<(Option<Operation>, Option<Instance>), StoreError> {
        self.step(|_| store_fault(), || async { builds::load(&self.app, id) }).await
    }

    async fn record_placed(&self, id: InstanceId, host: HostId) -> Result<(), TransitionError> {
        self.step(|_| store_fault().into(), || builds::record_placed(&self.app, id, host.clone())).await
    }

    async fn record_network_ready(&self, id: InstanceId, host: HostId) -> Result<InstanceSpec, TransitionError> {
        self.step(|_| store_fault().into(), || builds::record_network_ready(&self.app, id, host.clone())).await
    }

    async fn record_spawned(&self, id: InstanceId, host: HostId) -> Result<(), TransitionError> {
        self.step(|_| store_fault().into(), || builds::record_spawned(&self.app, id, host.clone())).await
    }

    async fn reschedule(&self, id: InstanceId, host: HostId) -> Result<Option<usize>, TransitionError> {
        self.step(|_| store_fault().into(), || builds::reschedule(&self.app, id, host.clone())).await
    }

    async fn fail_build(&self, id: InstanceId, message: String) -> Result<(), StoreError> {
        self.step(|_| store_fault(), || builds::fail_build(&self.app, id, message.clone())).await
    }

    async fn close_build(&self, id: InstanceId) -> Result<bool, StoreError> {
        self.step(|_| store_fault(), || builds::close_build(&self.app, id)).await
    }

    async fn finish_power(&self, id: InstanceId, done: bool) -> Result<bool, TransitionError> {
        self.step(|_| store_fault().into(), || builds::finish_power(&self.app, id, done)).await
    }

    async fn finish_interfaces(&self, id: InstanceId) -> Result<bool, StoreError> {
        self.step(|_| store_fault(), || builds::finish_interfaces(&self.app, id)).await
    }

    async fn remove(&self, id: InstanceId) -> Result<NetworkChanges, StoreError> {
        let changes = self.step(|_| store_fault(), || builds::release_and_remove(&self.app, id)).await?;
        self.owed.lock().unwrap().merge(changes.clone());
        Ok(changes)
    }

    /// A scheduler that takes the first host not tried yet.
    async fn place(&self, _trace: &Trace, request: PlaceRequest) -> Result<HostId, SchedulerError> {
        let failure = |fault| match fault {
            Fault::Refused => SchedulerError::NoValidHost(NoValidHost { detail: "injected".into() }),
            Fault::Lost => SchedulerError::NoAnswer(CallError::Timeout { target: "scheduler".into(), timeout_ms: 1 }),
        };
        self.step(failure, || async {
            let free = self.hosts.keys().find(|h| !request.demand.tried.contains(h)).cloned();
            free.ok_or_else(|| SchedulerError::NoValidHost(NoValidHost { detail: "All hosts were tried.".into() }))
        })
        .await
    }

    async fn allocate(&self, id: InstanceId) -> Result<NetworkChanges, StepFailure> {
        let changes = self
            .step(worker_failure, || async {
                interfaces::allocate(&self.app, id).await.map_err(|e| StepFailure::Failed(chain(&e)))
            })
            .await?;
        self.owed.lock().unwrap().merge(changes.clone());
        Ok(changes)
    }

    async fn deallocate(&self, id: InstanceId) -> Result<NetworkChanges, StepFailure> {
        let changes = self
            .step(worker_failure, || async {
                interfaces::deallocate(&self.app, id).await.map_err(|e| StepFailure::Failed(chain(&e)))
            })
            .await?;
        self.owed.lock().unwrap().merge(changes.clone());
        Ok(changes)
    }

    /// A network host without a dataplane. Changes it answered for are settled, even when it answered that
    /// it failed (its reconcilers then take over from the store): a network or a project applied covers every
    /// earlier change of it, as the real one reads the store; an ended lease is one event.
    async fn apply_network(&self, _trace: &Trace, changes: &NetworkChanges) -> Result<(), StepFailure> {
        let outcome = self.step(worker_failure, || async { Ok(()) }).await;
        if !matches!(outcome, Err(StepFailure::Lost(_))) {
            let mut owed = self.owed.lock().unwrap();
            owed.networks.retain(|n| !changes.networks.contains(n));
            owed.vlan_projects.retain(|p| !changes.vlan_projects.contains(p));
            owed.nat &= !changes.nat;
            owed.leases.retain(|l| !changes.leases.contains(l));
        }
        outcome
    }

    async fn spawn(&self, _trace: &Trace, host: &HostId, spec: InstanceSpec) -> Result<(), StepFailure> {
        self.step(worker_failure, || {
            let spec = spec.clone();
            async move { self.hypervisor(host).spawn(spec).await.map_err(|e| StepFailure::Failed(chain(&e))) }
        })
        .await
    }

    async fn destroy(
        &self,
        _trace: &Trace,
        host: &HostId,
        id: InstanceId,
        _patience: Patience,
    ) -> Result<(), StepFailure> {
        self.step(worker_failure, || async {
            self.hypervisor(host).destroy(id).await.map_err(|e| StepFailure::Failed(chain(&e)))
        })
        .await
    }

    async fn power(
        &self,
        _trace: &Trace,
        host: &HostId,
        id: InstanceId,
        action: PowerAction,
    ) -> Result<(), StepFailure> {
        self.step(worker_failure, || async {
            self.hypervisor(host).power(id, action).await.map_err(|e| StepFailure::Failed(chain(&e)))
        })
        .await
    }

    async fn set_interfaces(&self, _trace: &Trace, host: &HostId, id: InstanceId) -> Result<(), StepFailure> {
        self.step(worker_failure, || async {
            let spec = builds::current_spec(&self.app, id).map_err(|e| StepFailure::Lost(chain(&e)))?;
            self.hypervisor(host).set_interfaces(spec).await.map_err(|e| StepFailure::Failed(chain(&e)))
        })
        .await
    }

    async fn pause(&self, _attempt: u32) {}
}

static CLOUDS: AtomicUsize = AtomicUsize::new(0);

/// A fresh cloud's state (no actors: the saga's effects are the test's own), three fake hosts, and one logged
/// build of an m1.tiny instance.
async fn setup(twice: bool) -> (tempfile::TempDir, TestEffects, InstanceId) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("nimbus.redb")).unwrap();
    let ns = Namespace::new(&format!("saga-{}-{}", std::process::id(), CLOUDS.fetch_add(1, Ordering::SeqCst)));
    let app = App::new(store, ns, Timing::default(), false);
    let defaults = Defaults { admin_password: Some("pw".into()), ..Defaults::default() };
    bootstrap::ensure_defaults(&app, dir.path(), &defaults).await.unwrap();
    let auth = admin_auth(&app);
    let image = app.store().read(|r| r.scan(&nimbus_storage::schema::IMAGES)).unwrap()[0].0;
    let new = NewServers {
        name: "vm".into(),
        image: image.to_string(),
        flavor: "1".into(),
        networks: Default::default(),
        count: 1,
        key_name: None,
        security_groups: Vec::new(),
        user_data: None,
        metadata: Default::default(),
        description: None,
        nic_tags: Vec::new(),
    };
    let id = servers::create(&app, &Trace::none(), &auth, new).await.unwrap()[0].id;
    let hosts = (1..=3).map(|n| (HostId(format!("h{n}")), FakeHypervisor::new(Default::default()))).collect();
    let fx = TestEffects {
        app,
        hosts,
        fault: Mutex::new(None),
        twice,
        calls: AtomicUsize::new(0),
        owed: Mutex::new(NetworkChanges::default()),
    };
    (dir, fx, id)
}

/// Runs the saga as the conductor does: again after every stop (a store failure, or a crash), until it ends.
async fn run_to_end(fx: &TestEffects, id: InstanceId) {
    for _ in 0..5 {
        if drive(fx, id).await.is_ok() {
            return;
        }
    }
    panic!("the saga did not end after five runs");
}

/// What the store and the hosts hold for the instance, as one line; `Err` names what is left behind or out of
/// step.
fn outcome(fx: &TestEffects, id: InstanceId) -> Result<String, String> {
    let (op, instance) = builds::load(&fx.app, id).unwrap();
    let running: Vec<HostId> =
        fx.hosts.iter().filter(|(_, h)| h.running().iter().any(|s| s.id == id)).map(|(n, _)| n.clone()).collect();
    let rows: Vec<_> = fx
        .app
        .store()
        .read(|r| r.scan(&FIXED_IPS))
        .unwrap()
        .into_iter()
        .filter(|(_, row)| row.instance == Some(id) && row.allocated)
        .collect();
    let macs = fx.app.store().read(|r| r.scan(&MACS)).unwrap().len();
    if let Some(op) = op {
        return Err(format!("the {:?} is still logged", op.kind));
    }
    let instances = fx.app.store().read(|r| r.scan(&INSTANCES)).unwrap();
    let counted = HostLoad::count(instances.iter().map(|(_, i)| i));
    let kept: BTreeMap<HostId, HostLoad> =
        fx.app.store().read(|r| r.scan(&HOST_LOADS)).unwrap().into_iter().filter(|(_, l)| l.instances > 0).collect();
    if kept != counted {
        return Err(format!("the hosts' loads {kept:?} are not what their instances use: {counted:?}"));
    }
    let owed = fx.owed.lock().unwrap().clone();
    if !owed.is_empty() {
        return Err(format!("the network host was never asked to apply {owed:?}"));
    }
    let project = identity::find_project(&fx.app, "admin").unwrap().unwrap().id;
    let (_, usage) = quota::show(&fx.app, project).unwrap();
    let Some(instance) = instance else {
        if !running.is_empty() || !rows.is_empty() || macs != 0 || usage != Default::default() {
            return Err(format!(
                "deleted, but runs on {running:?}, holds {} addresses, {macs} MACs, uses {usage:?}",
                rows.len()
            ));
        }
        return Ok("deleted".into());
    };
    if usage.instances != 1 || usage.fixed_ips != instance.interfaces.len() as u64 {
        return Err(format!("usage {usage:?} for {} interfaces", instance.interfaces.len()));
    }
    match (instance.vm_state, &instance.host) {
        (VmState::Active, Some(host)) => {
            let holds = rows.len() == 1 && instance.interfaces.len() == 1 && macs == 1;
            if running != [host.clone()] || !holds || instance.task_state.is_some() {
                return Err(format!("ACTIVE on {host}, but runs on {running:?}, holds {} addresses", rows.len()));
            }
            Ok("active".into())
        }
        (VmState::Error, None) => {
            if !running.is_empty() || !rows.is_empty() || !instance.interfaces.is_empty() || macs != 0 {
                return Err(format!("ERROR, but runs on {running:?}, holds {} addresses", rows.len()));
            }
            Ok(format!("error: {}", instance.fault.map(|f| f.message).unwrap_or_default()))
        }
        (vm, host) => Err(format!("left in {vm:?}/{:?} on {host:?}", instance.task_state)),
    }
}

/// How many effects the build and then the delete have when nothing fails.
async fn happy_path() -> (usize, usize) {
    let (_dir, fx, id) = setup(false).await;
    run_to_end(&fx, id).await;
    assert_eq!(outcome(&fx, id).as_deref(), Ok("active"));
    let build = fx.calls.swap(0, Ordering::SeqCst);
    start_delete(&fx, id).await;
    run_to_end(&fx, id).await;
    assert_eq!(outcome(&fx, id).as_deref(), Ok("deleted"));
    (build, fx.calls.load(Ordering::SeqCst))
}

async fn start_delete(fx: &TestEffects, id: InstanceId) {
    let instance = builds::load(&fx.app, id).unwrap().1.unwrap();
    servers::delete(&fx.app, &Trace::none(), &instance).await.unwrap();
}

#[tokio::test]
async fn a_failure_at_any_step_of_a_build_leaves_it_active_or_in_error_with_nothing_behind() {
    let (steps, _) = happy_path().await;
    assert!(
        steps >= 10,
        "load, place, record with the allocation, load, allocate, apply, record, spawn, record and close, load: {steps}"
    );
    for at in 0..steps {
        for fault in [Fault::Refused, Fault::Lost] {
            let (_dir, fx, id) = setup(false).await;
            *fx.fault.lock().unwrap() = Some((at, fault));
            run_to_end(&fx, id).await;
            let settled = outcome(&fx, id);
            assert!(settled.is_ok(), "a {fault:?} failure at step {at}: {settled:?}");
            // Whatever the build ended as, the delete still removes everything.
            start_delete(&fx, id).await;
            run_to_end(&fx, id).await;
            assert_eq!(outcome(&fx, id).as_deref(), Ok("deleted"), "after a {fault:?} failure at build step {at}");
        }
    }
}

#[tokio::test]
async fn a_build_the_scheduler_refuses_ends_in_error_with_its_reason() {
    let (_dir, fx, id) = setup(false).await;
    *fx.fault.lock().unwrap() = Some((1, Fault::Refused));
    run_to_end(&fx, id).await;
    assert_eq!(outcome(&fx, id).as_deref(), Ok("error: No valid host was found. injected"));
}

#[tokio::test]
async fn a_build_failing_on_every_host_ends_in_error_after_three_hosts() {
    let (_dir, fx, id) = setup(false).await;
    for host in fx.hosts.values() {
        host.set_broken(true);
    }
    run_to_end(&fx, id).await;
    let settled = outcome(&fx, id).unwrap();
    assert!(settled.starts_with("error: No valid host was found. Exceeded max scheduling attempts 3"), "{settled}");
    assert!(settled.contains("injected failure"), "the last host's reason is kept: {settled}");
}

#[tokio::test]
async fn a_failure_at_any_step_of_a_delete_still_removes_everything() {
    let (_, steps) = happy_path().await;
    assert!(steps >= 4, "load, destroy, release and remove, apply: {steps}");
    for at in 0..steps {
        for fault in [Fault::Refused, Fault::Lost] {
            let (_dir, fx, id) = setup(false).await;
            run_to_end(&fx, id).await;
            start_delete(&fx, id).await;
            fx.calls.store(0, Ordering::SeqCst);
            *fx.fault.lock().unwrap() = Some((at, fault));
            run_to_end(&fx, id).await;
            assert_eq!(outcome(&fx, id).as_deref(), Ok("deleted"), "a {fault:?} failure at delete step {at}");
        }
    }
}

#[tokio::test]
async fn every_step_run_twice_changes_nothing() {
    let (_dir, fx, id) = setup(true).await;
    run_to_end(&fx, id).await;
    assert_eq!(outcome(&fx, id).as_deref(), Ok("active"));
    start_delete(&fx, id).await;
    run_to_end(&fx, id).await;
    assert_eq!(outcome(&fx, id).as_deref(), Ok("deleted"));
}

#[tokio::test]
async fn a_build_in_a_state_no_step_leads_to_ends_in_error() {
    let (_dir, fx, id) = setup(false).await;
    // Networking without a host: no step of a build leaves an instance so.
    let mut instance = builds::load(&fx.app, id).unwrap().1.unwrap();
    instance.task_state = Some(nimbus_storage::records::TaskState::Networking);
    let record = instance.clone();
    fx.app.store().write(move |tx| tx.put(&nimbus_storage::schema::INSTANCES, &record.id, &record)).await.unwrap();
    run_to_end(&fx, id).await;
    assert_eq!(outcome(&fx, id).as_deref(), Ok("error: Build interrupted in state Building/Some(Networking)"));
}

/// Logs a stop of the (active) instance, as the API does.
async fn start_stop(fx: &TestEffects, id: InstanceId) {
    let instance = builds::load(&fx.app, id).unwrap().1.unwrap();
    servers::power(&fx.app, &Trace::none(), &instance, PowerAction::Stop, "stop").await.unwrap();
}

/// The instance's state as the store and its host show it, once its power action is over.
fn power_outcome(fx: &TestEffects, id: InstanceId) -> Result<String, String> {
    let (op, instance) = builds::load(&fx.app, id).unwrap();
    let instance = instance.ok_or("the instance is gone")?;
    if let Some(op) = op {
        return Err(format!("the {:?} is still logged", op.kind));
    }
    let host = instance.host.clone().ok_or("the instance lost its host")?;
    let guest = fx.hypervisor(&host).power_of(id);
    match (instance.vm_state, instance.task_state, guest) {
        (VmState::Stopped, None, Some(GuestPower::Off)) => Ok("stopped".into()),
        (VmState::Active, None, Some(GuestPower::Running)) => Ok("active".into()),
        (vm, task, guest) => Err(format!("{vm:?}/{task:?} in the store, {guest:?} on {host}")),
    }
}

#[tokio::test]
async fn a_failure_at_any_step_of_a_stop_leaves_the_store_and_the_host_agreeing() {
    let (_dir, fx, id) = setup(false).await;
    run_to_end(&fx, id).await;
    start_stop(&fx, id).await;
    fx.calls.store(0, Ordering::SeqCst);
    run_to_end(&fx, id).await;
    assert_eq!(power_outcome(&fx, id).as_deref(), Ok("stopped"));
    let steps = fx.calls.load(Ordering::SeqCst);
    assert!(steps >= 3, "load, power, record and close: {steps}");
    for at in 0..steps {
        for fault in [Fault::Refused, Fault::Lost] {
            let (_dir, fx, id) = setup(false).await;
            run_to_end(&fx, id).await;
            start_stop(&fx, id).await;
            fx.calls.store(0, Ordering::SeqCst);
            *fx.fault.lock().unwrap() = Some((at, fault));
            run_to_end(&fx, id).await;
            let settled = power_outcome(&fx, id);
            assert!(settled.is_ok(), "a {fault:?} failure at stop step {at}: {settled:?}");
            // Stopped or not, the delete still removes everything.
            start_delete(&fx, id).await;
            run_to_end(&fx, id).await;
            assert_eq!(outcome(&fx, id).as_deref(), Ok("deleted"), "after a {fault:?} failure at stop step {at}");
        }
    }
}

/// Adds an interface on the default network to the ACTIVE instance, as `addFixedIp` does.
async fn start_interface_change(fx: &TestEffects, id: InstanceId) {
    let instance = builds::load(&fx.app, id).unwrap().1.unwrap();
    let auth = admin_auth(&fx.app);
    let network = crate::app::networks::list(&fx.app, &auth).unwrap()[0].id.to_string();
    let change = servers::NicChange::Add(network);
    // No network host answers here, so the call ends in an error after the change is recorded and logged (the
    // API's 503, whose change stands); the saga is what is tested.
    let answered = servers::change_interfaces(&fx.app, &Trace::none(), &auth, &instance, change, "addFixedIp").await;
    assert!(matches!(answered, Err(crate::app::error::CloudError::Unavailable { .. })), "{answered:?}");
    assert!(builds::load(&fx.app, id).unwrap().0.is_some(), "the change is logged");
}

/// The admin's context in the test cloud.
fn admin_auth(app: &App) -> AuthContext {
    let project = identity::find_project(app, "admin").unwrap().unwrap();
    let user = identity::find_user(app, "admin").unwrap().unwrap();
    AuthContext {
        user: user.id,
        user_name: user.name,
        project: project.id,
        project_name: project.name,
        roles: vec![nimbus_storage::records::Role::Admin],
        issued_at: 0,
        expires_at: u64::MAX,
    }
}

/// Whether the interface change is closed with the host plugging exactly the interfaces of the record.
fn interfaces_outcome(fx: &TestEffects, id: InstanceId) -> Result<usize, String> {
    let (op, instance) = builds::load(&fx.app, id).unwrap();
    let instance = instance.ok_or("the instance is gone")?;
    if let Some(op) = op {
        return Err(format!("the {:?} is still logged", op.kind));
    }
    let host = instance.host.clone().ok_or("no host")?;
    let plugged: Vec<_> =
        fx.hypervisor(&host).running().into_iter().find(|s| s.id == id).ok_or("not running")?.interfaces;
    let ports: Vec<_> = plugged.iter().map(|n| n.port).collect();
    let recorded: Vec<_> = instance.interfaces.iter().map(|i| i.id).collect();
    if ports != recorded {
        return Err(format!("the host plugs {ports:?}, the record has {recorded:?}"));
    }
    Ok(ports.len())
}

#[tokio::test]
async fn a_failure_at_any_step_of_an_interface_change_leaves_the_host_with_the_records_interfaces() {
    let (_dir, fx, id) = setup(false).await;
    run_to_end(&fx, id).await;
    start_interface_change(&fx, id).await;
    fx.calls.store(0, Ordering::SeqCst);
    run_to_end(&fx, id).await;
    assert_eq!(interfaces_outcome(&fx, id), Ok(2));
    let steps = fx.calls.load(Ordering::SeqCst);
    assert!(steps >= 3, "load, plug and close: {steps}");
    for at in 0..steps {
        for fault in [Fault::Refused, Fault::Lost] {
            let (_dir, fx, id) = setup(false).await;
            run_to_end(&fx, id).await;
            start_interface_change(&fx, id).await;
            fx.calls.store(0, Ordering::SeqCst);
            *fx.fault.lock().unwrap() = Some((at, fault));
            run_to_end(&fx, id).await;
            assert_eq!(interfaces_outcome(&fx, id), Ok(2), "a {fault:?} failure at step {at}");
            start_delete(&fx, id).await;
            run_to_end(&fx, id).await;
            assert_eq!(outcome(&fx, id).as_deref(), Ok("deleted"), "after a {fault:?} failure at step {at}");
        }
    }
}
