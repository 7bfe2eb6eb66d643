//! Errors that travel: the causes of a failure on another actor (perhaps on another node), kept as the chain
//! of their messages because the original error types do not cross the wire.

use serde::{Deserialize, Serialize};

/// One cause and the causes behind it, as the failing side's error chain showed them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    message: String,
    #[source]
    source: Option<Box<Failure>>,
}

impl Failure {
    /// `error` and its chain of sources.
    pub fn of(error: &(dyn std::error::Error + 'static)) -> Failure {
        Failure { message: error.to_string(), source: error.source().map(|s| Box::new(Failure::of(s))) }
    }

    /// A cause with no causes of its own.
    pub fn message(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), source: None }
    }
}

/// The whole chain of `error` in one line, `outer: inner: innermost`, for the texts people read (a server's
/// fault, a 503's message, a log line). Each error's Display says only its own part, so nothing repeats.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot add the bridge br100")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_failure_keeps_the_whole_chain() {
        let error = Outer(std::io::Error::other("operation not permitted"));
        let failure = Failure::of(&error);
        assert_eq!(chain(&failure), "cannot add the bridge br100: operation not permitted");
        assert_eq!(failure.to_string(), "cannot add the bridge br100", "the Display does not repeat the source");
        assert_eq!(chain(&Failure::message("alone")), "alone");
    }
}
