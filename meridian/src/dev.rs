//! `meridian dev`: the one place a plane and an agent share a process. The plane half (a
//! one-node plane with an example federation) is `meridian_plane::cli::plane::DevPlane`; this
//! module starts the embedded agent beside it, prints where everything is, and stops both on
//! Ctrl-C or SIGTERM, the agent first so it hands its runs' reports to the plane.

use std::path::Path;

use meridian_agent::agent::Agent;
use meridian_agent::config::AgentConfig;
use meridian_plane::cli::client::ClientError;
use meridian_plane::cli::plane::{
    DEV_AGENT, DEV_HOSTNAME, DevArgs, DevPlane, dev_agent_tls, failed, shutdown_signal,
};
use meridian_transport::HostsMap;

pub async fn run(args: &DevArgs, dir: &Path) -> Result<String, ClientError> {
    let plane = DevPlane::start(args, dir).await?;
    let agent = match start_agent(&plane, dir, args.slots).await {
        Ok(agent) => agent,
        Err(e) => {
            plane.shutdown().await;
            return Err(e);
        }
    };
    eprintln!("{}", plane.banner());
    shutdown_signal().await;
    eprintln!("stopping");
    agent.shutdown().await;
    plane.shutdown().await;
    Ok(String::new())
}

/// The embedded agent: cluster `local`, dialling the plane on `localhost:<port>`, its state in
/// `<dir>/agent`, running `slots` runs at once.
async fn start_agent(plane: &DevPlane, dir: &Path, slots: u32) -> Result<Agent, ClientError> {
    let tls = dev_agent_tls(dir)?;
    let config = AgentConfig {
        hostname: DEV_AGENT.into(),
        cluster: "local".into(),
        plane: vec![format!("{DEV_HOSTNAME}:{}", plane.port)],
        data_dir: dir.join("agent"),
        tls: tls.clone(),
        hosts: HostsMap(
            [(DEV_HOSTNAME.to_owned(), "127.0.0.1".to_owned())]
                .into_iter()
                .collect(),
        ),
        slots,
        catch_up_rate: 10.0,
        kill_grace_seconds: 10,
        heartbeat_ms: 1000,
        work_dir: None,
        bucket: plane.bucket.clone(),
        resources: Default::default(),
        metrics_listen: None,
        // `meridian supervise`: tasks go on through a restart of `meridian dev`.
        supervisor: Default::default(),
        load: Default::default(),
    };
    let material = tls.load().map_err(failed)?;
    Agent::start(&config, &material, plane.clock.clone())
        .await
        .map_err(failed)
}
