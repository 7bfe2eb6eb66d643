//! A property test: random interleavings of boots, deletes and floating-IP operations across projects of all
//! three modes never hand an address out twice, never leak one, keep quota usage equal to the usage
//! recomputed from the resources, and leave the dataplane equal to what the store implies.
//!
//! `PROPTEST_CASES` sets how many random workloads run (default 6); a failure prints the workload, and
//! proptest keeps its seed in `tests/proptest-regressions/properties.txt` so every later run replays it first.

use nimbus_tests::TestCloud;
use nimbus_tests::workload::{self, Op, Outcome};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    (0..Op::KINDS, 0..3usize, 0..8usize, 0..8usize).prop_map(|(k, p, a, b)| Op::from_numbers(k, p, a, b))
}

async fn run(batches: Vec<Vec<Op>>) -> Result<(), String> {
    let t = TestCloud::start().await;
    let clients = workload::clients(&workload::projects(&t.admin).await, t.url()).await;
    for batch in batches {
        // The operations of a batch run concurrently: their steps interleave.
        let mut set = tokio::task::JoinSet::new();
        for op in batch {
            let clients = clients.clone();
            set.spawn(async move { (workload::run(&op, &clients).await, op) });
        }
        while let Some(outcome) = set.join_next().await {
            match outcome.unwrap() {
                (Outcome::Failed(why), op) => return Err(format!("{op:?} failed: {why}")),
                (Outcome::Unreachable, op) => return Err(format!("{op:?}: the API did not answer")),
                _ => {}
            }
        }
    }
    let violations = workload::settle_and_check(&t).await;
    t.shutdown().await;
    if violations.is_empty() { Ok(()) } else { Err(format!("{violations:#?}")) }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(6),
        max_shrink_iters: 16,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_workloads_keep_every_address_and_quota_invariant(
        batches in prop::collection::vec(prop::collection::vec(op(), 1..5), 4..14)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let outcome = runtime.block_on(run(batches));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}
