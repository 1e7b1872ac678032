//! Every runbook in `runbooks/` executed in the lab (`meridian_tests::runbook` says how a
//! runbook's blocks run), with schedules firing throughout and the history checker at the end:
//! an operator procedure that drifts from the product, or that loses or doubles a fire record,
//! fails here.

use std::time::Duration;

use meridian_tests::lab::{LAB_DIR, Lab};
use meridian_tests::runbook::execute;

const EVERY_2S: &str = "*/2 * * * * ?";

/// Runs `runbook` in a fresh lab with schedules firing throughout, then checks the history.
async fn around(runbook: &str) {
    let mut lab = Lab::up(&[]);
    let schedules = lab.schedules(EVERY_2S);
    tokio::time::sleep(Duration::from_secs(4)).await;
    execute(runbook);
    tokio::time::sleep(Duration::from_secs(4)).await;
    lab.finish(&format!("runbook {runbook}"), &schedules).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_a_plane_node() {
    around("replace-plane-node.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_a_cluster_over_to_its_backup_and_back() {
    around("failover.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_after_a_plane_outage() {
    around("plane-outage.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_the_plane_from_a_snapshot() {
    around("restore-from-snapshot.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_certificates() {
    let mut lab = Lab::up(&[]);
    let schedules = lab.schedules(EVERY_2S);
    let files = [
        format!("{LAB_DIR}/plane-1/certs/plane-1.dc-a.example.pem"),
        format!("{LAB_DIR}/plane-3/certs/plane-3.dc-c.example.key"),
        format!("{LAB_DIR}/agent-c1/certs/agent-c1.dc-c.example.pem"),
    ];
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    tokio::time::sleep(Duration::from_secs(4)).await;
    execute("rotate-certificates.md");
    for (file, old) in files.iter().zip(&before) {
        assert_ne!(&std::fs::read(file).unwrap(), old, "{file} was rotated");
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    lab.finish("runbook rotate-certificates.md", &schedules)
        .await;
}
