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

/// The middleware (`axum::middleware::from_fn_with_state`) of every endpoint the router
/// serves. (`/proxy/…` does not go through the router: see [`proxied`].)
pub async fn enforce(State(limits): State<Deadlines>, req: Request, next: Next) -> Response {
    let tripped = Arc::new(AtomicBool::new(false));
    let req = req.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            sleep: Some(Box::pin(tokio::time::sleep(limits.body_read))),
            idle: None,
            tripped: Some(tripped.clone()),
        })
    });
    let response = match tokio::time::timeout(limits.request, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::info!("request refused: no response within http.request_timeout");
            return timed_out();
        }
    };
    // However the handler reported the failed read, the client hears 408.
    if tripped.load(Ordering::Relaxed) {
        tracing::info!("request refused: body not received within http.body_read_timeout");
        return timed_out();
    }
    response
}

/// The deadline of a proxied call: its body may be a long upload, so the limit is on the
/// wait for each next piece (`body_read`); the response is never cut. A call without a
/// body (most: GETs) skips the wrapper and its timer. `Err(408 response)` when the body
/// stalled, however the handler reported the failed read.
pub async fn proxied<B, F, Fut, R>(
    body_read: Duration,
    req: axum::http::Request<B>,
    handle: F,
) -> Result<R, Response>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
    F: FnOnce(axum::http::Request<DeadlineBody<B>>) -> Fut,
    Fut: Future<Output = R>,
{
    let tripped = (!req.body().is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
    let req = req.map(|body| DeadlineBody {
        inner: body,
        sleep: tripped
            .is_some()
            .then(|| Box::pin(tokio::time::sleep(body_read))),
        idle: Some(body_read),
        tripped: tripped.clone(),
    });
    let response = handle(req).await;
    if tripped.is_some_and(|t| t.load(Ordering::Relaxed)) {
        tracing::info!("request refused: body not received within http.body_read_timeout");
        return Err(timed_out());
    }
    Ok(response)
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
/// Without a deadline (`sleep` and `tripped` unset), it passes the body through: a body
/// that has already ended needs none.
pub struct DeadlineBody<B = Body> {
    inner: B,
    sleep: Option<Pin<Box<Sleep>>>,
    idle: Option<Duration>,
    tripped: Option<Arc<AtomicBool>>,
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        // What has already arrived is taken first: a late reader is not the client's fault.
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let (Some(idle), Some(sleep), Some(Ok(_))) = (this.idle, this.sleep.as_mut(), &frame)
            {
                sleep.as_mut().reset(Instant::now() + idle);
            }
            return Poll::Ready(frame.map(|f| f.map_err(axum::Error::new)));
        }
        if let (Some(sleep), Some(tripped)) = (this.sleep.as_mut(), &this.tripped) {
            if sleep.as_mut().poll(cx).is_ready() {
                tripped.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    type Pieces = tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>;

    /// A request body fed by a task: `pieces` pieces `gap` apart, then (after `stall`)
    /// its end.
    fn fed(pieces: usize, gap: Duration, stall: Duration) -> Body {
        let (tx, mut rx): (_, Pieces) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..pieces {
                let _ = tx.send(Ok(Bytes::from_static(b"x"))).await;
                tokio::time::sleep(gap).await;
            }
            tokio::time::sleep(stall).await;
        });
        Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }

    /// The handler: reads the whole body; `true` when it arrived.
    async fn read_all(req: axum::http::Request<DeadlineBody>) -> bool {
        axum::body::to_bytes(Body::new(req.into_body()), usize::MAX)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_proxied_body_that_stalls_past_the_limit_gets_408() {
        let body = fed(1, Duration::ZERO, Duration::from_millis(600));
        let out = proxied(
            Duration::from_millis(150),
            axum::http::Request::new(body),
            read_all,
        )
        .await;
        let refused = out.expect_err("a stalled body is refused");
        assert_eq!(refused.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(refused.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn a_proxied_body_is_limited_per_piece_not_in_total() {
        // Pieces 100 ms apart, 500 ms in all, under a limit of 250 ms per piece.
        let body = fed(5, Duration::from_millis(100), Duration::ZERO);
        let out = proxied(
            Duration::from_millis(250),
            axum::http::Request::new(body),
            read_all,
        )
        .await;
        assert!(
            out.expect("a steady body is never cut"),
            "the body was read whole"
        );
    }

    #[tokio::test]
    async fn a_proxied_call_without_a_body_gets_no_timer() {
        let req = axum::http::Request::new(Body::empty());
        let out = proxied(Duration::from_millis(1), req, |req| async move {
            // Nothing to wait for: the ended body passes through without a deadline.
            assert!(req.body().sleep.is_none() && req.body().tripped.is_none());
            tokio::time::sleep(Duration::from_millis(20)).await;
            read_all(req).await
        })
        .await;
        assert!(out.expect("no body, no deadline"));
    }
}
