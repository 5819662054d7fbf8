//! Wall-clock time in Unix milliseconds: the clock is keygate-auth's, so the server hands
//! the monitor, the token service, the proxy's throttles and secret rotation one clock,
//! and tests and the replay benchmark drive hours of traffic through a [`ManualClock`].

pub use keygate_auth::clock::{Clock, ManualClock, SystemClock};
