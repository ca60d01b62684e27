//! `Server-Timing` on every answer: the phases of the request's own handling (`validate`,
//! `store`, `enqueue`, …) and its `total`.
//!
//! [`crate::handle_request`] runs each request inside [`recorded`], which gives it a recorder
//! of its own (a tokio task-local, so concurrent requests never mix). Handlers mark a phase by
//! wrapping a step in [`timed`] (async) or [`timed_sync`], or by holding a [`phase`] guard; the
//! times of one phase add up. A step outside any request (a test calling a handler directly)
//! records nothing.

use std::cell::RefCell;
use std::future::Future;
use std::time::{Duration, Instant};

use lambda_http::{Body, Response};

pub const HEADER: &str = "server-timing";

tokio::task_local! {
    static PHASES: RefCell<Phases>;
}

/// The phases of one request, in the order they first happened.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Phases(Vec<(&'static str, Duration)>);

impl Phases {
    pub fn add(&mut self, name: &'static str, took: Duration) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += took,
            None => self.0.push((name, took)),
        }
    }

    /// The header's value: each phase, then `total`, in milliseconds.
    pub fn header(&self, total: Duration) -> String {
        let entry =
            |name: &str, took: &Duration| format!("{name};dur={:.2}", took.as_secs_f64() * 1000.0);
        self.0
            .iter()
            .map(|(name, took)| entry(name, took))
            .chain(std::iter::once(entry("total", &total)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Runs one request with a recorder of its own; returns its output and the phases it marked.
pub async fn recorded<F: Future>(request: F) -> (F::Output, Phases) {
    PHASES
        .scope(RefCell::new(Phases::default()), async move {
            let output = request.await;
            (output, PHASES.with(RefCell::take))
        })
        .await
}

fn record(name: &'static str, took: Duration) {
    // Outside a request there is nothing to record into.
    let _ = PHASES.try_with(|phases| phases.borrow_mut().add(name, took));
}

/// Runs an async step as phase `name`.
pub async fn timed<F: Future>(name: &'static str, step: F) -> F::Output {
    let started = Instant::now();
    let output = step.await;
    record(name, started.elapsed());
    output
}

/// Runs a synchronous step as phase `name`.
pub fn timed_sync<T>(name: &'static str, step: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let output = step();
    record(name, started.elapsed());
    output
}

/// A phase that lasts until the guard is dropped (early returns included).
#[must_use = "the phase ends when the guard is dropped"]
pub struct Phase {
    name: &'static str,
    started: Instant,
}

pub fn phase(name: &'static str) -> Phase {
    Phase {
        name,
        started: Instant::now(),
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        record(self.name, self.started.elapsed());
    }
}

/// Puts the phases and the total on the answer, unless it carries a `Server-Timing` of its
/// own (a conversation turn's, which names its agents).
pub fn add_header(response: &mut Response<Body>, phases: &Phases, total: Duration) {
    if response.headers().contains_key(HEADER) {
        return;
    }
    if let Ok(value) = phases.header(total).parse() {
        response.headers_mut().insert(HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_of_one_name_add_up_and_total_comes_last() {
        let ((), phases) = recorded(async {
            timed_sync("validate", || ());
            timed("store", tokio::time::sleep(Duration::from_millis(5))).await;
            {
                let _enqueue = phase("enqueue");
            }
            timed("store", tokio::time::sleep(Duration::from_millis(5))).await;
        })
        .await;
        let names: Vec<&str> = phases.0.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["validate", "store", "enqueue"]);
        assert!(phases.0[1].1 >= Duration::from_millis(10), "{phases:?}");
        let header = phases.header(Duration::from_micros(12_346));
        assert!(header.starts_with("validate;dur=0."), "{header}");
        assert!(header.ends_with(", total;dur=12.35"), "{header}");
    }

    #[tokio::test]
    async fn requests_do_not_see_each_others_phases_and_none_is_recorded_outside_one() {
        timed_sync("outside", || ());
        let (a, b) = tokio::join!(
            recorded(timed("store", tokio::task::yield_now())),
            recorded(timed("enqueue", tokio::task::yield_now())),
        );
        assert_eq!(a.1 .0.len(), 1);
        assert_eq!(a.1 .0[0].0, "store");
        assert_eq!(b.1 .0[0].0, "enqueue");
    }

    #[test]
    fn a_turns_own_header_is_kept() {
        let mut response = Response::new(Body::Empty);
        response
            .headers_mut()
            .insert(HEADER, "state;dur=1, total;dur=2".parse().unwrap());
        add_header(&mut response, &Phases::default(), Duration::from_millis(9));
        assert_eq!(response.headers()[HEADER], "state;dur=1, total;dur=2");
        let mut plain = Response::new(Body::Empty);
        add_header(&mut plain, &Phases::default(), Duration::from_millis(9));
        assert_eq!(plain.headers()[HEADER], "total;dur=9.00");
    }
}
