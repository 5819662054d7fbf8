//! A route's key, prepared once for the calls that use it.
//!
//! Besides the key itself, every proxied call needs the forms of it that responses are
//! searched for ([`Redactor`]: the clear key, its percent-, JSON- and base64 forms at every
//! alignment; [`StreamRedactor`]'s searchers) and the header it is injected as
//! ([`Injected`]). Building them costs a few dozen allocations and encodings, so the
//! gatekeeper builds a [`RouteKey`] when it reads the key and shares it, through its key
//! cache, between the calls of the next moments. The derived forms live exactly as long as
//! the cached key. The redactor's forms are zeroized with it; the searchers' needles and
//! the header value are copies the `memchr` and `http` crates do not zeroize, as a header
//! value made for each call was not either (now there is one such copy per key read
//! instead of one per call).

use std::sync::Arc;

use secrecy::SecretString;

use crate::headers::Injected;
use crate::redact::{Redactor, StreamRedactor};
use crate::route::Route;

/// A route's current key and the forms of it its responses are searched for.
pub struct RouteKey {
    route: Arc<Route>,
    secret: SecretString,
    redactor: Redactor,
    /// The streaming search's finders, built once; each response gets a
    /// [`StreamRedactor::fresh`] copy.
    stream: StreamRedactor,
    /// The injected header, written once; `None` when the key cannot be a header value
    /// (every call through the route is then refused).
    injected: Option<Injected>,
}

impl std::fmt::Debug for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteKey")
            .field("route", self.route.name())
            .finish_non_exhaustive()
    }
}

impl RouteKey {
    /// `secret` as `route` injects it.
    pub fn new(secret: SecretString, route: &Arc<Route>) -> Self {
        let redactor = Redactor::new(&secret, route.injection());
        let stream = StreamRedactor::new(&secret, route.injection());
        let injected = Injected::new(route.injection(), &secret).ok();
        Self {
            route: Arc::clone(route),
            secret,
            redactor,
            stream,
            injected,
        }
    }

    /// Whether it was prepared for this very route (the same table entry: a route applied
    /// again, perhaps with another injection, is another route).
    pub fn is_for(&self, route: &Arc<Route>) -> bool {
        Arc::ptr_eq(&self.route, route)
    }

    /// The key.
    pub fn secret(&self) -> &SecretString {
        &self.secret
    }

    /// The key's searched forms.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The key as the route injects it, or `None` when it is not a valid header value.
    pub fn injected(&self) -> Option<&Injected> {
        self.injected.as_ref()
    }

    /// A streaming search for the key, for one response body.
    pub fn stream_redactor(&self) -> StreamRedactor {
        self.stream.fresh()
    }
}
