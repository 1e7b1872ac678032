//! An in-process plane cluster over real mutual TLS on loopback: every node has its own
//! certificate from a fresh CA, its own data directory and port, and reaches the others by
//! hostname through its hosts map.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_domain::{Clock, SystemClock};
use meridian_plane::certs::{self, Pem};
use meridian_plane::history_store::HistoryConfig;
use meridian_plane::raft::node::{NodeConfig, PlaneNode, Timing};
use meridian_transport::{HostsMap, Role, TlsMaterial};
use openraft::ServerState;
use tempfile::TempDir;
use tokio::net::TcpListener;

pub struct Cluster {
    pub dir: TempDir,
    pub ca: Pem,
    configs: Vec<NodeConfig>,
    /// Each node's SMTP relay for email alerts (its courier's; see `set_mail`).
    mail: Vec<Option<meridian_plane::courier::MailConfig>>,
    nodes: Vec<Option<Arc<PlaneNode>>>,
    /// Links cut by `partition`, re-applied to a node when it restarts.
    cuts: BTreeSet<(usize, usize)>,
    pub timing: Timing,
}

/// How long harness helpers wait for the plane to do something before failing the test.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub fn hostname(i: usize) -> String {
    format!("plane-{}.test", i + 1)
}

impl Cluster {
    /// Starts `n` nodes with default timings and forms one plane of them.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, Timing::default()).await
    }

    pub async fn start_with(n: usize, timing: Timing) -> Self {
        Self::start_on(n, timing, Arc::new(SystemClock)).await
    }

    /// Starts `n` nodes that stamp agents' heartbeats and reports with `clock` (share a
    /// `ManualClock` with the agents to drive leases and firing from the test).
    pub async fn start_on(n: usize, timing: Timing, clock: Arc<dyn Clock>) -> Self {
        Self::start_full(n, timing, clock, |_| HistoryConfig::default()).await
    }

    /// Starts `n` nodes whose history stores `history` says (node `i`'s: `history(i)`).
    pub async fn start_with_history(
        n: usize,
        timing: Timing,
        history: impl Fn(usize) -> HistoryConfig,
    ) -> Self {
        Self::start_full(n, timing, Arc::new(SystemClock), history).await
    }

    async fn start_full(
        n: usize,
        timing: Timing,
        clock: Arc<dyn Clock>,
        history: impl Fn(usize) -> HistoryConfig,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = certs::new_ca("test federation CA").expect("CA");
        let mut listeners = Vec::new();
        let mut hosts = BTreeMap::new();
        for i in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0".parse::<SocketAddr>().unwrap())
                .await
                .expect("bind");
            hosts.insert(hostname(i), "127.0.0.1".to_string());
            listeners.push(listener);
        }
        let mut configs = Vec::new();
        for (i, listener) in listeners.iter().enumerate() {
            let leaf = certs::issue(&ca, &hostname(i), Role::Plane, None).expect("certificate");
            configs.push(NodeConfig {
                hostname: hostname(i),
                port: listener.local_addr().unwrap().port(),
                data_dir: dir.path().join(hostname(i)),
                tls: TlsMaterial {
                    ca: ca.cert.clone().into_bytes(),
                    cert: leaf.cert.into_bytes(),
                    key: leaf.key.into_bytes(),
                },
                hosts: HostsMap(hosts.clone()),
                timing,
                clock: clock.clone(),
                logs: Default::default(),
                history: history(i),
            });
        }
        let mut nodes = Vec::new();
        for (config, listener) in configs.iter().zip(listeners) {
            let node = PlaneNode::start(
                config.clone(),
                listener,
                Some(meridian_plane::agents::beside(config.clock.clone())),
            )
            .await
            .expect("start node");
            meridian_plane::courier::start(&node, config.clock.clone(), None);
            meridian_plane::retirement::start(&node, config.clock.clone(), 24, false);
            nodes.push(Some(Arc::new(node)));
        }
        let cluster = Self {
            dir,
            ca,
            mail: vec![None; configs.len()],
            configs,
            nodes,
            cuts: BTreeSet::new(),
            timing,
        };
        cluster.node(0).initialize().await.expect("initialise");
        cluster.wait_for_leader().await;
        for i in 1..n {
            let node = cluster.node(i).node.clone();
            cluster
                .node(cluster.leader().await)
                .add_voter(node, PATIENCE)
                .await
                .expect("add voter");
        }
        cluster
    }

    /// Node `i`; panics if it was killed.
    pub fn node(&self, i: usize) -> &PlaneNode {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Node `i`, shared (for servers built on it, such as the REST API).
    pub fn shared(&self, i: usize) -> Arc<PlaneNode> {
        self.nodes[i].clone().expect("node is running")
    }

    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].is_some())
    }

    /// The index of the node that leads, waiting (up to 10 s) until a running node does.
    pub async fn leader(&self) -> usize {
        self.wait_for_leader().await
    }

    pub async fn wait_for_leader(&self) -> usize {
        let all: Vec<usize> = self.running().collect();
        self.wait_for_leader_among(&all).await
    }

    /// Waits until one of `nodes` leads. After a partition the old leader may still think it
    /// leads on its side, so tests name the side they expect the leader on.
    pub async fn wait_for_leader_among(&self, nodes: &[usize]) -> usize {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            for &i in nodes.iter().filter(|i| self.nodes[**i].is_some()) {
                let metrics = self.node(i).raft.metrics().borrow().clone();
                if metrics.state == ServerState::Leader {
                    return i;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader among the running nodes after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cuts the link between nodes `a` and `b`, both ways.
    pub fn partition(&mut self, a: usize, b: usize) {
        self.cuts.insert((a, b));
        self.cuts.insert((b, a));
        self.apply_cuts();
    }

    /// Cuts node `i` off from every other node.
    pub fn isolate(&mut self, i: usize) {
        for j in (0..self.size()).filter(|j| *j != i) {
            self.partition(i, j);
        }
    }

    /// Restores every cut link.
    pub fn heal(&mut self) {
        self.cuts.clear();
        for i in self.running() {
            self.node(i).links().heal_all();
        }
    }

    fn apply_cuts(&self) {
        for &(from, to) in &self.cuts {
            if let Some(node) = &self.nodes[from] {
                node.links().cut(&hostname(to));
            }
        }
    }

    /// The SMTP relay node `i` sends email alerts through, from its next restart.
    pub fn set_mail(&mut self, i: usize, mail: Option<meridian_plane::courier::MailConfig>) {
        self.mail[i] = mail;
    }

    /// Stops node `i` abruptly (no graceful handover).
    pub async fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.abort().await;
        }
    }

    /// Starts node `i` again on its port and data directory.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is still running");
        let config = self.configs[i].clone();
        let addr: SocketAddr = format!("127.0.0.1:{}", config.port).parse().unwrap();
        // The killed server's socket may take a moment to be released.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("rebinding {addr}: {e}"),
            }
        };
        // Replication tasks of the stopped Raft may hold the log file a little longer, and an
        // apply it had under way its model's write lock (in process, an aborted node's threads
        // finish what they were doing; a killed process's locks go with it).
        let node = loop {
            let agents = meridian_plane::agents::beside(config.clock.clone());
            match PlaneNode::start(config.clone(), listener, Some(agents)).await {
                Ok(node) => break node,
                Err(e)
                    if tokio::time::Instant::now() < deadline
                        && (e.to_string().contains("already open")
                            || e.to_string().contains("database is locked")) =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    listener = TcpListener::bind(addr).await.expect("rebind");
                }
                Err(e) => panic!("restarting {}: {e}", hostname(i)),
            }
        };
        meridian_plane::courier::start(&node, config.clock.clone(), self.mail[i].clone());
        meridian_plane::retirement::start(&node, config.clock.clone(), 24, false);
        self.nodes[i] = Some(Arc::new(node));
        self.apply_cuts();
    }

    /// Waits until every running node has applied at least `index`.
    pub async fn wait_applied(&self, index: u64) {
        for i in self.running() {
            self.node(i)
                .raft
                .wait(Some(Duration::from_secs(15)))
                .applied_index_at_least(Some(index), "catching up")
                .await
                .unwrap_or_else(|e| panic!("{} did not apply {index}: {e}", hostname(i)));
        }
    }

    /// Waits until every running node has applied everything the leader has committed, so
    /// every acknowledged write is visible on every node. (Metrics lag behind acknowledgements,
    /// so they cannot say what "everything" is; the leader's read index can.)
    pub async fn wait_converged(&self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let committed = loop {
            let leader = self.wait_for_leader().await;
            match self.node(leader).raft.ensure_linearizable().await {
                Ok(read) => break read.map_or(0, |l| l.index),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("no read index from the leader: {e}"),
            }
        };
        self.wait_applied(committed).await;
    }

    /// The TLS material of a node, for tests that dial like a peer.
    pub fn tls(&self, i: usize) -> TlsMaterial {
        self.configs[i].tls.clone()
    }

    /// The peer (and agent) port of node `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.configs[i].port
    }

    pub fn hosts(&self) -> HostsMap {
        self.configs[0].hosts.clone()
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            if let Some(node) = self.nodes[i].take() {
                node.shutdown().await;
            }
        }
    }
}
