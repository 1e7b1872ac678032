//! Meridian's data-center agent.
//!
//! # Layout
//!
//! - [`config`]: the agent's one config file (`agent.toml`), read strictly: an unknown or
//!   missing field is an error that names it.
//! - [`store`]: the agent's SQLite database; [`outbox`] and [`buffer`] are tables in it, so
//!   taking a fire record and writing its outbox entry are one transaction.
//! - [`outbox`]: run events and log chunks, durable from the moment they happen until the
//!   plane has committed them; keyed so nothing counts twice.
//! - [`buffer`]: the next 50 fire records of every schedule this agent holds, the cursor of
//!   what it has taken, and the runs it has going; what is due, and taking it.
//! - [`take`]: what a firing pass took ([`take::Take`], each record with how: [`take::Took`]),
//!   the runs it starts and the reports they make (pure data; the store writes takes and the
//!   buffer makes them, neither imports the other).
//! - [`lease`]: the partitions held, with deadlines on the agent's own clock (pure).
//! - [`firing`]: on time, catch-up or skip; and the overlap policy (pure).
//! - [`pass`]: a firing pass decided — what it takes and how, what to do with each run once
//!   the take is durable — from the due records, leases and run counts (pure).
//! - [`link`]: mutual TLS to any plane node through the hosts map, moving on when one fails.
//! - [`task`]: one attempt of a shell or HTTP task; [`runner`]: a whole run, its DAG, retries
//!   and logs.
//! - [`supervisor`]: the small process (one per agent) that starts shell tasks with their
//!   output to files and outlives the agent; [`resume`]: how a run a previous agent process had
//!   going goes on from what the supervisor knows (pure); [`leftovers`]: killing what a run
//!   left running when nothing supervises it any more.
//! - [`identity`]: who a run's shell tasks run as — the tenant's OS user from its
//!   environment's `run_as`, looked up on this host — and the refusal of root or the agent's
//!   own user (pure decision, then the lookups and the child's setgroups/setgid/setuid).
//! - [`run_dir`]: run directories (0700, the task user's) and the modes of the agent's own
//!   data directory, database, cache and key, so no task user can read them.
//! - [`figures`]: what `/metrics` shows: starts and their lateness, ends, waits by reason,
//!   leases, the buffer and the outbox, beside the resource cache's figures.
//! - [`resources`]: the cache (over `meridian_bucket`, the S3 client the plane shares) of the
//!   objects tasks need (revalidated with HEAD, downloaded only when changed, one flight per
//!   object, a byte budget that never removes a file in use).
//! - The workers, each a struct holding the parts it is given and a `state` it owns (private
//!   fields, `Default` to start), with a `run(self: Arc<Self>)` that returns when [`shutdown`]
//!   says stop:
//!   [`keeper`] keeps leases (heartbeat, giving partitions back once their reports are
//!   committed, fetching schedules, the plane's run-now and kill commands); [`firer`] fires
//!   (reads due records, decides a [`pass`], writes its take, applies it; the catch-up rate);
//!   [`reporter`] reports (the outbox sent in order, what the plane committed dropped, what it
//!   cannot read yet kept).
//! - [`runs`]: the runs going here, and the registry that launches them (a slot first), lets
//!   caught-up ones go under the overlap policy, starts a schedule's waiting run when the one
//!   before ends, and kills them.
//! - [`agent`]: the runtime — builds the parts above, recovers what a previous process left,
//!   starts the workers, and stops them gracefully or at once; [`shutdown`]: the one handle
//!   that asks them to drain, then to stop.
//!
//! Data flows: heartbeat → leases → fetch → buffer (records from `meridian_domain::calendar`)
//! → firing at fire time → runner (its OS user from identity, resources from the cache, the
//! directory from run_dir) → outbox → report → plane.

pub mod agent;
pub mod buffer;
pub mod config;
pub mod figures;
pub mod firer;
pub mod firing;
pub mod identity;
pub mod keeper;
pub mod lease;
pub mod leftovers;
pub mod link;
pub mod load;
pub mod outbox;
pub mod pass;
pub mod quota;
pub mod reporter;
pub mod resources;
pub mod resume;
pub mod run_dir;
pub mod runner;
pub mod runs;
pub mod shutdown;
pub mod store;
pub mod supervisor;
pub mod take;
pub mod task;
