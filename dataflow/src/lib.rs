//! Weir's shared core: what every part of the system agrees on.
//!
//! - credentials every role checks alike: the root token, bearer headers, fresh ids ([`auth`]);
//! - the one clock, injected where protocol logic reads time ([`clock`]);
//! - identifiers and fencing tokens ([`ids`]), key groups ([`keygroup`]);
//! - civil-date arithmetic on epoch days ([`calendar`]), for every part that reads or writes dates;
//! - what flows along edges: changelog batches and in-band control events ([`event`]);
//! - the physical stream plan ([`plan`]) and the job graph of chained vertices ([`graph`]);
//! - job configuration with Flink's option names ([`config`]), the autoscaler's options
//!   ([`autoscale`]) and restart strategies ([`restart`]);
//! - the Flink SQL planner ([`sql`]): script → plan, pure, no I/O;
//! - the control plane ↔ worker protocol's messages ([`wire`]).
//!
//! No other crate of the workspace is a dependency of this one.

pub mod auth;
pub mod autoscale;
pub mod calendar;
pub mod clock;
pub mod config;
pub mod event;
pub mod graph;
pub mod ids;
pub mod keygroup;
pub mod plan;
pub mod restart;
pub mod secrets;
pub mod sql;
pub mod wire;
