//! Request/reply between actors: every call has a timeout and a typed error.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::topic::{Namespace, Topic};

/// Why a call got no answer. The caller turns it into its own error; the user sees a clear message, never a
/// hang.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CallError {
    #[error("no {topic} worker is running")]
    NoRoute { topic: String },
    #[error("{target} did not answer within {timeout_ms} ms")]
    Timeout { target: String, timeout_ms: u64 },
    #[error("{target} stopped before answering")]
    Dropped { target: String },
    #[error("{target} is not running")]
    Unreachable { target: String },
}

/// An actor's name, or its id when it has none (for messages and events).
pub(crate) fn describe<M: Message>(target: &ActorRef<M>) -> String {
    target.get_name().unwrap_or_else(|| target.get_id().to_string())
}

/// Sends the message built by `make` to `target` and waits at most `timeout` for the reply.
pub async fn call<M, T>(
    target: &ActorRef<M>,
    make: impl FnOnce(RpcReplyPort<T>) -> M,
    timeout: Duration,
) -> Result<T, CallError>
where
    M: Message,
    T: Send + 'static,
{
    match target.call(make, Some(timeout)).await {
        Ok(CallResult::Success(reply)) => Ok(reply),
        Ok(CallResult::Timeout) => {
            Err(CallError::Timeout { target: describe(target), timeout_ms: timeout.as_millis() as u64 })
        }
        Ok(CallResult::SenderError) => Err(CallError::Dropped { target: describe(target) }),
        Err(_) => Err(CallError::Unreachable { target: describe(target) }),
    }
}

/// How long a caller waits for a topic to get a member again (an actor being restarted) before giving up.
const RESTART_GRACE: Duration = Duration::from_millis(500);

/// Resolves `topic` now (never a cached reference) and calls one of its members. If the topic has no member
/// at the moment — its actor is being restarted — waits up to half a second for one, so a restart is not
/// seen by callers.
pub async fn call_topic<M, T>(
    ns: &Namespace,
    topic: &Topic,
    make: impl FnOnce(RpcReplyPort<T>) -> M,
    timeout: Duration,
) -> Result<T, CallError>
where
    M: Message,
    T: Send + 'static,
{
    let target = resolve::<M>(ns, topic, RESTART_GRACE.min(timeout)).await?;
    call(&target, make, timeout).await
}

async fn resolve<M: Message>(ns: &Namespace, topic: &Topic, grace: Duration) -> Result<ActorRef<M>, CallError> {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        if let Some(target) = ns.pick::<M>(topic) {
            return Ok(target);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CallError::NoRoute { topic: topic.to_string() });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Sends a one-way message to one member of `topic`.
pub fn cast_topic<M: Message>(ns: &Namespace, topic: &Topic, msg: M) -> Result<(), CallError> {
    let target = ns.pick::<M>(topic).ok_or_else(|| CallError::NoRoute { topic: topic.to_string() })?;
    target.cast(msg).map_err(|_| CallError::Unreachable { target: describe(&target) })
}
