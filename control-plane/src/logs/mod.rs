//! Task logs across the plane: reading one attempt's log from every member's logbook or from
//! its copy in the bucket ([`across`]), and the leader's archiver that makes those copies and
//! deletes them past retention ([`archive`]). Above `raft` (it asks the other members and
//! proposes commands); each node's own store is the [`logbook`](crate::logbook).

pub mod across;
pub mod archive;
