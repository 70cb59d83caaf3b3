//! Execution (async): walks the plan with a tokio task per host and emits `RunEvent`s.
