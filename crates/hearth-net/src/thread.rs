//! Namespace work runs on a thread of its own: entering a namespace changes
//! the calling thread, and a tokio worker must never be left in a VM's
//! namespace. The thread runs a small runtime for the netlink sockets it
//! opens, and ends when the work does.

use std::future::Future;

use crate::NetError;

/// Runs `work` on a new thread (with its own current-thread runtime) and
/// answers what it returns.
pub(crate) async fn run<T, F, Fut>(work: F) -> Result<T, NetError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetError>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hearth-net".to_owned())
        .spawn(move || {
            let answer = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(NetError::Runtime)
                .and_then(|rt| rt.block_on(work()));
            let _ = tx.send(answer);
        })
        .map_err(NetError::Runtime)?;
    rx.await.unwrap_or(Err(NetError::ThreadDied))
}
