//! The request a piece of work belongs to. The gateway names every request (`req-<uuid>`); the id travels in
//! every message the request causes and in the saga log, and every actor logs inside a span that carries it,
//! so one grep of a request id shows the request's whole path through the cloud.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Trace {
    /// `None` for work no request asked for (timers, sweeps, reconciles).
    pub request_id: Option<String>,
}

impl Trace {
    /// Work of no request.
    pub fn none() -> Trace {
        Trace { request_id: None }
    }

    pub fn request(id: impl Into<String>) -> Trace {
        Trace { request_id: Some(id.into()) }
    }
}

/// The request id, or `-` for work of no request (the form span fields take).
impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.request_id.as_deref().unwrap_or("-"))
    }
}

/// A request body and the request it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traced<T> {
    pub trace: Trace,
    pub body: T,
}

impl<T> Traced<T> {
    pub fn new(trace: &Trace, body: T) -> Traced<T> {
        Traced { trace: trace.clone(), body }
    }
}
