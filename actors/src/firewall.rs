//! The firewall publisher (`firewall`, topic `firewall`): tells each host that enforces security groups the
//! firewall the store implies for its instance ports, as soon as a commit changes it. Agents ask with the
//! version they hold and the answer waits until there is a newer one (a long poll), so a rule change reaches
//! every affected port within a tick, a restarted agent or publisher simply asks again, and hosts that do not
//! filter (the simulated ones of a benchmark) cost nothing: only hosts that asked are computed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nimbus_protocol::failure::Failure;
use nimbus_protocol::firewall::{
    self, FirewallAnswer, FirewallAsk, FirewallError, FirewallMsg, FirewallReply, FirewallVersion, HostFirewall,
};
use nimbus_protocol::ids::HostId;
use nimbus_runtime::{Wire, introspect};
use nimbus_storage::{StoreError, Watch};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::app::App;
use crate::app::security_groups::{host_firewalls, watch_firewalls};

/// How often the publisher looks for commits that changed some firewall.
const TICK: Duration = Duration::from_millis(100);

/// A host that has not asked for this long is forgotten (its agent stopped, or it no longer filters).
const FORGET_AFTER: Duration = Duration::from_secs(120);

struct Published {
    version: FirewallVersion,
    firewall: HostFirewall,
    asked_at: Instant,
}

struct Parked {
    host: HostId,
    have: FirewallVersion,
    until: Instant,
    reply: RpcReplyPort<FirewallReply>,
}

pub struct PublisherState {
    app: App,
    epoch: u64,
    sequence: u64,
    /// Started at the first ask: a cloud none of whose hosts filter watches nothing.
    watch: Option<Watch<()>>,
    hosts: HashMap<HostId, Published>,
    parked: Vec<Parked>,
    /// A commit changed what some firewall is made of, and no recompute has succeeded since.
    dirty: bool,
}

pub struct FirewallPublisher;

fn store_failure(e: StoreError) -> FirewallError {
    FirewallError::Store(Failure::of(&e))
}

impl PublisherState {
    fn next_version(&mut self) -> FirewallVersion {
        self.sequence += 1;
        FirewallVersion { epoch: self.epoch, sequence: self.sequence }
    }

    /// Recomputes the firewalls of `hosts`, giving a new version to each that changed.
    fn refresh(&mut self, hosts: &[HostId]) -> Result<(), StoreError> {
        for (host, firewall) in host_firewalls(&self.app, hosts)? {
            match self.hosts.get(&host) {
                Some(known) if known.firewall == firewall => {}
                known => {
                    let asked_at = known.map_or_else(Instant::now, |k| k.asked_at);
                    let version = self.next_version();
                    self.hosts.insert(host, Published { version, firewall, asked_at });
                }
            }
        }
        Ok(())
    }

    async fn ask(&mut self, ask: FirewallAsk, reply: RpcReplyPort<FirewallReply>) {
        if self.watch.is_none() {
            match watch_firewalls(&self.app).await {
                Ok(watch) => self.watch = Some(watch),
                Err(e) => {
                    let _ = reply.send(Wire(Err(store_failure(e))));
                    return;
                }
            }
        }
        if !self.hosts.contains_key(&ask.host)
            && let Err(e) = self.refresh(std::slice::from_ref(&ask.host))
        {
            let _ = reply.send(Wire(Err(store_failure(e))));
            return;
        }
        let known = self.hosts.get_mut(&ask.host).expect("refreshed above");
        known.asked_at = Instant::now();
        match ask.have {
            Some(have) if have == known.version => {
                self.parked.push(Parked { host: ask.host, have, until: Instant::now() + ask.hold, reply });
            }
            _ => {
                let _ = reply.send(Wire(Ok(Some((known.version, known.firewall.clone())))));
            }
        }
    }

    fn tick(&mut self, name: &str) {
        let now = Instant::now();
        self.hosts.retain(|_, known| now.duration_since(known.asked_at) < FORGET_AFTER);
        self.dirty |= self.watch.as_ref().is_some_and(Watch::changed);
        if self.dirty {
            let hosts: Vec<HostId> = self.hosts.keys().cloned().collect();
            let outcome = self.refresh(&hosts).map_err(|e| format!("cannot read the store: {e}"));
            self.dirty = outcome.is_err();
            introspect::reconciled(name, "firewalls", outcome);
        }
        for parked in std::mem::take(&mut self.parked) {
            let answer: FirewallAnswer = match self.hosts.get(&parked.host) {
                Some(known) if known.version != parked.have => Some((known.version, known.firewall.clone())),
                _ if parked.until > now => {
                    self.parked.push(parked);
                    continue;
                }
                _ => None,
            };
            let _ = parked.reply.send(Wire(Ok(answer)));
        }
    }
}

impl Actor for FirewallPublisher {
    type Msg = FirewallMsg;
    type State = PublisherState;
    type Arguments = App;

    async fn pre_start(&self, myself: ActorRef<FirewallMsg>, app: App) -> Result<PublisherState, ActorProcessingErr> {
        app.ns().join(&firewall::TOPIC, myself.get_cell());
        myself.send_interval(TICK, || FirewallMsg::Tick);
        Ok(PublisherState {
            app,
            epoch: rand::random(),
            sequence: 0,
            watch: None,
            hosts: HashMap::new(),
            parked: Vec::new(),
            dirty: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<FirewallMsg>,
        msg: FirewallMsg,
        state: &mut PublisherState,
    ) -> Result<(), ActorProcessingErr> {
        introspect::handled(&myself.get_cell());
        match msg {
            FirewallMsg::Ask(Wire(ask), reply) => state.ask(ask, reply).await,
            FirewallMsg::Tick => state.tick(&myself.get_name().unwrap_or_default()),
        }
        Ok(())
    }
}
