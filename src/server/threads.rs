//! The daemon's delivery threads: a runtime of their own, at a lower CPU priority.
//!
//! Accepting a message is what a producer waits for; delivering it is not. On one runtime the
//! two share the CPU by task, so a saturated machine slowed `POST /v1/messages` to the pace of
//! the deliveries it queued (measured on two cores: 21,500 POSTs/s alone, 13,000/s while
//! delivering). With the scheduler, the runners and their HTTP connections on threads of
//! their own, niced, the kernel serves the API first under contention, and idle cores still
//! go to deliveries. The recorder and group-commit threads keep the normal priority: they hold
//! the store's write lock, which the API also needs.

use tokio::runtime::{Handle, Runtime};

/// The delivery runtime; dropping it stops its threads (after the engine has shut down).
pub(crate) struct DeliveryThreads {
    /// `Some` until dropped.
    runtime: Option<Runtime>,
}

impl DeliveryThreads {
    /// Starts one worker thread per core, each `niceness` steps below the calling thread's
    /// priority.
    pub(crate) fn start(niceness: u8) -> Result<DeliveryThreads, String> {
        // Counted from the caller, once: a thread inherits its creator's priority, and the
        // runtime's blocking threads are created by its (already lowered) workers.
        let lowered = match niceness {
            0 => None,
            n => current_priority().map(|p| p + i32::from(n)),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("herald-deliver")
            .on_thread_start(move || {
                if let Some(priority) = lowered {
                    set_priority(priority);
                }
            })
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the delivery threads: {e}"))?;
        Ok(DeliveryThreads {
            runtime: Some(runtime),
        })
    }

    /// Where the engine runs its scheduler and runners.
    pub(crate) fn handle(&self) -> Option<Handle> {
        self.runtime
            .as_ref()
            .map(|runtime| runtime.handle().clone())
    }
}

impl Drop for DeliveryThreads {
    fn drop(&mut self) {
        // Dropped on the API's runtime, where a blocking shutdown would panic. What is left
        // after the engine's shutdown is idle connections and timers.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The calling thread's scheduling priority (its nice value), where threads have their own.
fn current_priority() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// Sets the calling thread's nice value (Linux: `setpriority` on a thread id applies to that
/// thread alone). Failing is harmless: the thread keeps the priority it inherited.
fn set_priority(priority: i32) {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), priority) {
        // Said once: the runtime starts blocking threads as it needs them.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(error = %e, "cannot lower the delivery threads' priority; they run at the API's");
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
}
