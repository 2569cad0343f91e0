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
    runtime: Option<Runtime>,
    handle: Handle,
}

impl DeliveryThreads {
    /// Starts one worker thread per core, each `niceness` steps below the caller's priority.
    pub(crate) fn start(niceness: u8) -> Result<DeliveryThreads, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("herald-deliver")
            .on_thread_start(move || lower_priority(niceness))
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the delivery threads: {e}"))?;
        Ok(DeliveryThreads {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// Where the engine runs its scheduler and runners.
    pub(crate) fn handle(&self) -> Handle {
        self.handle.clone()
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

/// Lowers the calling thread's scheduling priority (Linux: `setpriority` on a thread id
/// applies to that thread alone). Failing is harmless: the thread keeps the normal priority.
fn lower_priority(niceness: u8) {
    #[cfg(target_os = "linux")]
    if niceness > 0 {
        let tid = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        if let Err(e) =
            rustix::process::setpriority_process(Some(tid), current + i32::from(niceness))
        {
            // Said once: the runtime starts blocking threads as it needs them.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(error = %e, "cannot lower the delivery threads' priority; they run at the API's");
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = niceness;
}
