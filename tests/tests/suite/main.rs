//! The end-to-end tests, one binary: each module checks one part of the promise against private
//! servers the harness starts (see each module's opening lines).
#![allow(clippy::unwrap_used)]

mod backup_lock;
mod cloud_agents;
mod cloud_aws;
mod core;
mod faults;
mod faults_mysql;
mod galera;
mod guest_agent;
mod guest_agent_mysql;
mod install;
mod matrix;
mod metrics;
mod monitoring;
mod packages;
mod replica_safe;
mod replication;
mod security;
mod soak;
mod surroundings;
mod sync_filesystems;
mod vm;
mod vmtools;
