//! Helpers shared by the unit tests of several modules.

use std::future::Future;

/// Size of the future a function of three arguments returns, in bytes.
pub(crate) fn future_size<A, B, C, F: Future>(_: fn(A, B, C) -> F) -> usize {
    std::mem::size_of::<F>()
}

/// A connection's task (`task`, bytes) fits a 384-byte task cell (tokio
/// adds 104 bytes to a task's future and rounds up to 128), and `boxed`
/// (bytes), the part of its work the task keeps in a box, is what makes
/// the difference (the control).
pub(crate) fn assert_task_fits(task: usize, boxed: usize, what: &str) {
    assert!(task <= 280, "a connection's task is {task} bytes: more than a 384-byte task cell");
    assert!(boxed >= 4 * task, "control: {what} ({boxed} bytes) is what the box keeps out of the task");
}
