//! `meridian certs init|issue`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use meridian_transport::Role;

use crate::certs::{self, CA_CERT, CertError};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the federation's CA in DIR (ca.pem, ca.key).
    Init(InitArgs),
    /// Issue a certificate for a plane node or an agent, signed by the CA in DIR.
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory for the CA files.
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// The CA's common name.
    #[arg(long, default_value = "Meridian federation CA")]
    pub name: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Plane,
    Agent,
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The node's hostname: its identity, checked by TLS.
    #[arg(long)]
    pub hostname: String,
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// For agents: the cluster the agent may act for.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Directory holding the CA (from `certs init`); the certificate is written there too
    /// unless --out is given.
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// Where to write `<hostname>.pem` and `<hostname>.key`.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs a `certs` command and returns what to print.
pub fn run(command: &CertsCommand) -> Result<String, CertError> {
    match command {
        CertsCommand::Init(args) => {
            let ca = certs::new_ca(&args.name)?;
            let (cert, key) = certs::write(&args.dir, "ca", &ca)?;
            Ok(format!(
                "created CA {}\n  certificate: {}\n  private key: {} (keep it safe: it can issue certificates)",
                args.name,
                cert.display(),
                key.display()
            ))
        }
        CertsCommand::Issue(args) => {
            let ca = certs::read_ca(&args.dir)?;
            let role = match args.role {
                RoleArg::Plane => Role::Plane,
                RoleArg::Agent => Role::Agent,
            };
            let pem = certs::issue(&ca, &args.hostname, role, args.cluster.as_deref())?;
            let out = args.out.clone().unwrap_or_else(|| args.dir.clone());
            let (cert, key) = certs::write(&out, &args.hostname, &pem)?;
            Ok(format!(
                "issued a {} certificate for {}\n  certificate: {}\n  private key: {}\n  CA: {}",
                match role {
                    Role::Plane => "plane",
                    Role::Agent => "agent",
                },
                args.hostname,
                cert.display(),
                key.display(),
                args.dir.join(CA_CERT).display()
            ))
        }
    }
}
