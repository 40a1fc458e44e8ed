//! Network namespaces, made by one dedicated thread. `unshare` and `setns` change only the
//! calling thread's namespace, so this thread does the switching and the rest of the
//! runner stays in the root namespace. It also creates sockets *inside* a namespace
//! (netlink, UDP): a socket belongs to the namespace it was created in.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;

use nix::sched::{setns, unshare, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("Cannot start the namespace thread")]
    Thread(#[source] std::io::Error),
    #[error("Cannot read the thread's network namespace")]
    Open(#[source] std::io::Error),
    #[error("unshare(CLONE_NEWNET) failed: {0}")]
    Unshare(nix::errno::Errno),
    #[error("setns into a network namespace failed: {0}")]
    Setns(nix::errno::Errno),
    #[error("The namespace thread is gone (it could not return to the root namespace)")]
    Gone,
}

type Job = Box<dyn FnOnce(&Home) + Send>;

/// The root namespace the factory thread returns to after every job, and whether it
/// failed to.
struct Home {
    ns: OwnedFd,
    broken: std::cell::Cell<bool>,
}

/// Hands out namespaces and runs code inside them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NetnsFactory {
    tx: mpsc::Sender<Job>,
}

impl NetnsFactory {
    pub fn start() -> Result<NetnsFactory, NetnsError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("kchaos-netns".into())
            .spawn(move || {
                let home = match File::open("/proc/thread-self/ns/net") {
                    Ok(f) => Home {
                        ns: f.into(),
                        broken: std::cell::Cell::new(false),
                    },
                    Err(e) => {
                        let _ = ready_tx.send(Err(NetnsError::Open(e)));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while let Ok(job) = rx.recv() {
                    job(&home);
                    if home.broken.get() {
                        // Dropping the receiver makes every later call fail with `Gone`.
                        return;
                    }
                }
            })
            .map_err(NetnsError::Thread)?;
        ready_rx.recv().map_err(|_| NetnsError::Gone)??;
        Ok(NetnsFactory { tx })
    }

    async fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Home) -> Result<T, NetnsError> + Send + 'static,
    ) -> Result<T, NetnsError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |home| {
            let _ = tx.send(job(home));
        });
        self.tx.send(job).map_err(|_| NetnsError::Gone)?;
        rx.await.map_err(|_| NetnsError::Gone)?
    }

    /// A fresh network namespace, alive as long as the returned fd (and anything created
    /// inside it) is.
    pub async fn create(&self) -> Result<OwnedFd, NetnsError> {
        self.call(|home| {
            unshare(CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)?;
            let ns = File::open("/proc/thread-self/ns/net").map_err(NetnsError::Open);
            return_home(home)?;
            ns.map(Into::into)
        })
        .await
    }

    /// Runs `op` on the factory thread while it is inside `ns`; sockets `op` creates
    /// belong to `ns`. `op` runs inside the tokio runtime's context, so it can create
    /// tokio-registered sockets.
    pub async fn within<T: Send + 'static>(
        &self,
        ns: &OwnedFd,
        op: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NetnsError> {
        let ns = ns.try_clone().map_err(NetnsError::Open)?;
        let runtime = tokio::runtime::Handle::current();
        self.call(move |home| {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(NetnsError::Setns)?;
            let out = {
                let _context = runtime.enter();
                op()
            };
            return_home(home)?;
            Ok(out)
        })
        .await
    }
}

impl std::fmt::Debug for Home {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Home")
    }
}

/// Back to the root namespace. If this fails the thread must not take more jobs: every
/// namespace it made afterwards would be nested wrongly.
fn return_home(home: &Home) -> Result<(), NetnsError> {
    setns(home.ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
        tracing::error!("the namespace thread cannot return to the root namespace: {e}");
        home.broken.set(true);
        NetnsError::Setns(e)
    })
}
