//! A route's key, prepared once for the calls that use it.
//!
//! Besides the key itself, every proxied call needs the forms of it that responses are
//! searched for ([`Redactor`]: the clear key, its percent-, JSON- and base64 forms at every
//! alignment). Building them costs a few dozen allocations and encodings, so the
//! gatekeeper builds a [`RouteKey`] when it reads the key and shares it, through its key
//! cache, between the calls of the next moments. The derived forms live exactly as long as
//! the cached key and are zeroized with it.

use std::sync::Arc;

use secrecy::SecretString;

use crate::redact::Redactor;
use crate::route::Route;

/// A route's current key and the forms of it its responses are searched for.
pub struct RouteKey {
    route: Arc<Route>,
    secret: SecretString,
    redactor: Redactor,
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
        Self {
            route: Arc::clone(route),
            secret,
            redactor,
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
}
