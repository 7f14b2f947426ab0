//! The controller's client of the apiserver: kube's client with a token bucket in front of it,
//! and every request counted under KubeVirt's metric names.
//!
//! kube-rs has no client-side rate limit; client-go (and so KubeVirt's virt-controller, at
//! QPS 200 / burst 400) has one. Without one, a reconcile storm (500 VMs switched on at once,
//! a controller that lost its lease and relists) sends as fast as the apiserver answers, and
//! the apiserver's priority and fairness then queue every other client of the same level
//! behind it. With a bucket, a burst goes out at once and the rest is paced; the wait shows in
//! `kubevirt_rest_client_rate_limiter_duration_seconds`, so that a limit that binds is seen,
//! and `kubevirt_rest_client_requests_total` counts what was sent.
//!
//! kube's client runs its service behind one buffer worker, so a token taken in `poll_ready`
//! limits the whole client, watches included (a watch's start is one request, as in
//! client-go).

use crate::observability::Metrics;
use hyper::{Request, Response};
use kube::client::{Body, ClientBuilder};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service};

/// KubeVirt's virt-controller: `--client-qps 200`, `--client-burst 400`.
pub const DEFAULT_QPS: f64 = 200.0;
pub const DEFAULT_BURST: u32 = 400;

/// How fast the client may send: `qps` requests a second on average, `burst` at once. A `qps`
/// of 0 (or less) means no limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub qps: f64,
    pub burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            qps: DEFAULT_QPS,
            burst: DEFAULT_BURST,
        }
    }
}

/// A token bucket (pure: the caller gives the time).
#[derive(Debug)]
pub struct TokenBucket {
    limits: Limits,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            tokens: f64::from(limits.burst.max(1)),
            at: now,
        }
    }

    /// Takes a token at `now`, or says how long until there is one.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.limits.qps <= 0.0 {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        let capacity = f64::from(self.limits.burst.max(1));
        self.tokens = (self.tokens + elapsed * self.limits.qps).min(capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.limits.qps,
            ))
        }
    }
}

/// Builds the controller's client from `config`.
pub fn client(
    config: kube::Config,
    limits: Limits,
    metrics: Arc<Metrics>,
) -> kube::Result<kube::Client> {
    let layer = ThrottleLayer {
        bucket: Arc::new(Mutex::new(TokenBucket::new(limits, Instant::now()))),
        metrics,
    };
    Ok(ClientBuilder::try_from(config)?.with_layer(&layer).build())
}

/// Puts [`Throttled`] in front of a client's service.
#[derive(Clone, Debug)]
struct ThrottleLayer {
    bucket: Arc<Mutex<TokenBucket>>,
    metrics: Arc<Metrics>,
}

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttled<S>;

    fn layer(&self, inner: S) -> Throttled<S> {
        Throttled {
            inner,
            bucket: self.bucket.clone(),
            metrics: self.metrics.clone(),
            wait: None,
            since: None,
            waited: None,
        }
    }
}

/// The client's service, ready only when the bucket gave a token.
struct Throttled<S> {
    inner: S,
    bucket: Arc<Mutex<TokenBucket>>,
    metrics: Arc<Metrics>,
    /// The sleep until the next token, while waiting for one.
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When this request began to wait.
    since: Option<Instant>,
    /// Set once a token is held: how long it took.
    waited: Option<Duration>,
}

type Boxed<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<Request<Body>> for Throttled<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    B: 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Boxed<Response<B>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        while self.waited.is_none() {
            if let Some(wait) = self.wait.as_mut() {
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.wait = None;
            }
            let now = Instant::now();
            let since = *self.since.get_or_insert(now);
            let taken = self
                .bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(now);
            match taken {
                Ok(()) => {
                    self.waited = Some(now.saturating_duration_since(since));
                    self.since = None;
                }
                Err(wait) => self.wait = Some(Box::pin(tokio::time::sleep(wait))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let method = request.method().as_str().to_owned();
        let waited = self.waited.take().unwrap_or_default();
        self.metrics.rate_limited(&method, waited);
        let metrics = self.metrics.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            let code = answer.as_ref().ok().map(|r| r.status().as_u16());
            metrics.rest_request(&method, code);
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(
            Limits {
                qps: 10.0,
                burst: 3,
            },
            t0,
        );
        for _ in 0..3 {
            assert_eq!(bucket.take(t0), Ok(()));
        }
        let wait = bucket.take(t0).expect_err("the burst is spent");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // A tenth of a second later, one more; refills never exceed the burst.
        assert_eq!(bucket.take(t0 + Duration::from_millis(100)), Ok(()));
        assert!(bucket.take(t0 + Duration::from_millis(100)).is_err());
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(later), Ok(()));
        }
        assert!(bucket.take(later).is_err());
    }

    #[test]
    fn no_limit_when_qps_is_zero() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(Limits { qps: 0.0, burst: 1 }, t0);
        for _ in 0..10_000 {
            assert_eq!(bucket.take(t0), Ok(()));
        }
    }

    #[test]
    fn time_going_backwards_takes_nothing_extra() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut bucket = TokenBucket::new(Limits { qps: 1.0, burst: 1 }, t0);
        assert_eq!(bucket.take(t0), Ok(()));
        assert!(bucket.take(t0 - Duration::from_millis(500)).is_err());
        assert!(bucket.take(t0).is_err());
    }
}
