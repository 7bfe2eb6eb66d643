//! The nimbus integration suite: one test binary for everything that runs a cloud.

mod admin_cli;
mod api_errors;
mod chaos;
mod cluster;
mod dataplane;
mod floating_ips;
mod fuzz;
mod hardening;
mod images;
mod key_pairs;
mod metadata;
mod microversions;
mod network_api;
mod networks;
mod observability;
mod openstack_cli;
mod persistence;
mod properties;
mod security_groups;
mod servers;
mod supervision;
mod tidy;
