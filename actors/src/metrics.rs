//! The Prometheus metrics of one cloud, in a registry of its own (clouds sharing a process, as the tests do,
//! do not mix their numbers): HTTP requests and their latency by route and status, counted as they are
//! answered; the store's commits (and writes per commit, observed by the store's writer), actor restarts,
//! reconciler runs and errors, and instances by status, read from their sources at every scrape.

use std::time::Duration;

use nimbus_runtime::introspect;
use nimbus_storage::Store;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::app::{App, servers};

/// Why the metrics could not be set up or rendered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("the metrics registry refused a metric")]
    Registry(#[from] prometheus::Error),
    #[error("the instances could not be counted")]
    Store(#[from] nimbus_storage::StoreError),
    #[error("the metrics are not UTF-8")]
    Encoding(#[from] std::string::FromUtf8Error),
}

pub struct Metrics {
    app: App,
    /// The namespace prefix of this cloud's actor names, stripped from the `actor` labels.
    prefix: String,
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    commits: IntCounter,
    writes: IntCounter,
    rolled_back: IntCounter,
    restarts: IntCounterVec,
    reconcile_runs: IntCounterVec,
    reconcile_errors: IntCounterVec,
    reconcile_failing: IntGaugeVec,
    instances: IntGaugeVec,
    /// One scrape at a time: catching counters up is a read then an add.
    scraping: std::sync::Mutex<()>,
}

impl Metrics {
    /// The metrics of the cloud `app` runs on `store`; the store reports each commit's size from now on.
    pub fn new(app: App, store: &Store) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let register = |c: Box<dyn prometheus::core::Collector>| registry.register(c);
        let requests = IntCounterVec::new(
            Opts::new("nimbus_http_requests_total", "API requests answered, by route, method and status."),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("nimbus_http_request_duration_seconds", "How long API requests took to answer."),
            &["route", "method", "status"],
        )?;
        let commits = IntCounter::new("nimbus_store_commits_total", "Durable commits of the store.")?;
        let writes = IntCounter::new("nimbus_store_writes_total", "Writes kept, summed over all commits.")?;
        let rolled_back =
            IntCounter::new("nimbus_store_rolled_back_total", "Writes whose closure failed and were undone.")?;
        let per_commit = Histogram::with_opts(
            HistogramOpts::new("nimbus_store_writes_per_commit", "How many writes each durable commit held.")
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 10)?),
        )?;
        let restarts =
            IntCounterVec::new(Opts::new("nimbus_actor_restarts_total", "Restarts of each actor."), &["actor"])?;
        let reconcile_runs = IntCounterVec::new(
            Opts::new("nimbus_reconcile_runs_total", "Passes of each reconciler."),
            &["actor", "reconciler"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new("nimbus_reconcile_errors_total", "Failed passes of each reconciler."),
            &["actor", "reconciler"],
        )?;
        let reconcile_failing = IntGaugeVec::new(
            Opts::new("nimbus_reconcile_consecutive_errors", "Failed passes of each reconciler in a row, now."),
            &["actor", "reconciler"],
        )?;
        let instances = IntGaugeVec::new(Opts::new("nimbus_instances", "Instances by API status."), &["status"])?;
        register(Box::new(requests.clone()))?;
        register(Box::new(latency.clone()))?;
        register(Box::new(commits.clone()))?;
        register(Box::new(writes.clone()))?;
        register(Box::new(rolled_back.clone()))?;
        register(Box::new(per_commit.clone()))?;
        register(Box::new(restarts.clone()))?;
        register(Box::new(reconcile_runs.clone()))?;
        register(Box::new(reconcile_errors.clone()))?;
        register(Box::new(reconcile_failing.clone()))?;
        register(Box::new(instances.clone()))?;
        store.on_commit(move |n| per_commit.observe(n as f64));
        let prefix = app.ns().actor_name("");
        Ok(Metrics {
            app,
            prefix,
            registry,
            requests,
            latency,
            commits,
            writes,
            rolled_back,
            restarts,
            reconcile_runs,
            reconcile_errors,
            reconcile_failing,
            instances,
            scraping: std::sync::Mutex::new(()),
        })
    }

    /// Counts an answered API request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let status = status.to_string();
        let labels = [route, method, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency.with_label_values(&labels).observe(took.as_secs_f64());
    }

    /// The text exposition of every metric, with the ones kept elsewhere read now.
    pub fn render(&self) -> Result<String, MetricsError> {
        let _one_at_a_time = self.scraping.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.read_sources()?;
        let mut text = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut text)?;
        Ok(String::from_utf8(text)?)
    }

    fn read_sources(&self) -> Result<(), MetricsError> {
        let stats = self.app.store_stats();
        catch_up(&self.commits, stats.commits);
        catch_up(&self.writes, stats.writes);
        catch_up(&self.rolled_back, stats.rolled_back);
        let local = |name: &str| name.strip_prefix(&self.prefix).unwrap_or(name).to_string();
        for (actor, restarts) in introspect::restarts(&self.prefix) {
            catch_up(&self.restarts.with_label_values(&[local(&actor).as_str()]), restarts);
        }
        for (actor, kind, status) in introspect::reconcilers(&self.prefix) {
            let actor = local(&actor);
            let labels = [actor.as_str(), kind];
            catch_up(&self.reconcile_runs.with_label_values(&labels), status.runs);
            catch_up(&self.reconcile_errors.with_label_values(&labels), status.errors);
            self.reconcile_failing.with_label_values(&labels).set(status.consecutive_errors as i64);
        }
        // Statuses nothing is in any more disappear rather than stay at their last count.
        self.instances.reset();
        for (status, count) in servers::count_by_status(&self.app)? {
            self.instances.with_label_values(&[status]).set(count as i64);
        }
        Ok(())
    }
}

/// Brings a counter kept by the registry up to a total kept elsewhere (totals only grow).
fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}
