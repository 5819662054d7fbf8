//! keygate's usage monitor: counts proxied calls and refusals, learns each user's and
//! route's normal rate, and turns anomalies into graded actions.
//!
//! # Model
//!
//! - **Intervals.** [`Monitor::observe`] (the proxy's response path) and
//!   [`Monitor::signal`] (token service, refusals) only add to per-interval counters, held
//!   in 16 lock shards keyed by user; a subject already seen in the interval costs one map
//!   lookup and no allocation. Every `interval` (default 2 s) the server calls
//!   [`Monitor::evaluate`], which swaps each shard's counters for an empty set (the only
//!   work done under the hot-path locks) and evaluates the closed interval.
//! - **Baselines.** Per user and per route, two exponentially weighted moving averages of
//!   calls per minute, with time constants `baseline.short` (15 min) and `baseline.long`
//!   (3 h), kept as decayed sums so idle subjects cost nothing. The baseline is the larger
//!   of the two, and it counts only once the subject is `baseline.min_age` (30 min) old
//!   and has made `baseline.min_calls` (30) calls. Rules see the baseline from before the
//!   interval; while a spike rule fires (and for a cooldown after), an interval folds in
//!   at most twice the baseline, so an attack needs hours, not minutes, to become normal.
//! - **Rules** ([`config::RuleParams`]): `spike` (rate over a short window ≥ factor ×
//!   baseline and ≥ a floor of calls), `ceiling` (absolute calls per minute or cost per
//!   UTC day), `new_network` (a session family on a /24 or /48 prefix, or with a GeoIP
//!   database a country, it never used; the first sight sets its home), `impossible_travel`
//!   (two locations of a family implying a speed above the limit), `key_change` (a family's
//!   DPoP thumbprint changed, or [`Signal::KeyMismatch`]) and `refusals` (bursts per
//!   address prefix, client or user).
//! - **Incidents and the ladder.** A firing rule and its subject form an incident, keyed
//!   `rule:subject` ([`Finding::incident`]). The first firing emits the ladder's step 0;
//!   if it still fires `escalate_after` after the last step, the next step is emitted; at
//!   the last step nothing more is emitted however long it fires. An incident closes after
//!   `cooldown` without firing, or when the operator calls [`Monitor::reset_incident`].
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeSet;
//! use std::path::Path;
//! use std::sync::Arc;
//! use keygate_monitor::{Monitor, clock::ManualClock, config::RawMonitor};
//!
//! let config = RawMonitor::default().validate(Path::new("."), &BTreeSet::new())?;
//! let clock = Arc::new(ManualClock::new(1_700_000_000_000));
//! let monitor = Monitor::new(config, None, clock.clone());
//! // ... monitor.observe(&event) from the proxy; every interval:
//! clock.advance(monitor.interval());
//! assert!(monitor.evaluate().is_empty());
//! assert_eq!(monitor.snapshot().geoip, "none: prefix rules only");
//! # Ok::<(), keygate_monitor::config::MonitorConfigError>(())
//! ```

pub mod clock;
pub mod config;
pub mod delta;
pub mod finding;
pub mod geo;
mod monitor;

pub use delta::Delta;
pub use finding::{Action, Finding, RuleKind, Subject};
pub use monitor::{DroppedCounts, IncidentSnapshot, Monitor, Signal, Snapshot, SubjectSnapshot};

#[cfg(test)]
mod tests;
