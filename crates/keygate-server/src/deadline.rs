//! Request deadlines: a client that trickles its body (one byte every few seconds) must
//! not hold a connection and a task for ever.
//!
//! - Every endpoint but the proxy: the whole body must arrive within
//!   `http.body_read_timeout` of the head, and the response head must be ready within
//!   `http.request_timeout`.
//! - `/proxy/…`: the body may be a long upload, so the limit is on the wait for its next
//!   piece (`http.body_read_timeout` again); the response is never cut, since proxied
//!   responses stream for as long as the upstream sends (server-sent events).
//!
//! Either answers 408 with `Connection: close` when a response can still be sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;

/// The two limits, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    pub body_read: Duration,
    pub request: Duration,
}

/// Why a body ended early.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn enforce(State(limits): State<Deadlines>, req: Request, next: Next) -> Response {
    let streaming = req.uri().path().starts_with("/proxy/");
    // A proxied call without a body (most of them: GETs) has nothing to time out and no
    // response deadline: it skips the wrapper and its timer on the hot path.
    if streaming && req.body().is_end_stream() {
        return next.run(req).await;
    }
    let tripped = Arc::new(AtomicBool::new(false));
    let req = req.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            sleep: Box::pin(tokio::time::sleep(limits.body_read)),
            idle: streaming.then_some(limits.body_read),
            tripped: tripped.clone(),
        })
    });
    let response = if streaming {
        next.run(req).await
    } else {
        match tokio::time::timeout(limits.request, next.run(req)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::info!("request refused: no response within http.request_timeout");
                return timed_out();
            }
        }
    };
    // However the handler reported the failed read, the client hears 408.
    if tripped.load(Ordering::Relaxed) {
        tracing::info!("request refused: body not received within http.body_read_timeout");
        return timed_out();
    }
    response
}

fn timed_out() -> Response {
    let mut r = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "timeout",
        "the request did not arrive in time",
    )
    .into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A request body that fails with [`BodyTimeout`] once its deadline passes: a fixed one,
/// or with `idle`, one moved forward by every piece that arrives.
struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    idle: Option<Duration>,
    tripped: Arc<AtomicBool>,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        // What has already arrived is taken first: a late reader is not the client's fault.
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let (Some(idle), Some(Ok(_))) = (this.idle, &frame) {
                this.sleep.as_mut().reset(Instant::now() + idle);
            }
            return Poll::Ready(frame);
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.tripped.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
