//! A TCP relay on a free loopback port in front of a server, which can cut every
//! connection through it at once: a network drop with the server still running, for
//! testing stream resumption (XEP-0198). Bytes pass untouched (TLS stays end to end).

use crate::process::free_port;
use crate::{Result, io};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A running relay. Stopped (and every connection through it closed) on drop.
pub struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    /// Relays 127.0.0.1:`port()` to 127.0.0.1:`target`.
    pub fn start(target: u16) -> Result<Relay> {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).map_err(io("bind relay"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (s, o) = (stop.clone(), open.clone());
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                let target = std::net::SocketAddr::from(([127, 0, 0, 1], target));
                let Ok(server) =
                    TcpStream::connect_timeout(&target, std::time::Duration::from_secs(2))
                else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let pair = (
                    client.try_clone(),
                    server.try_clone(),
                    client.try_clone(),
                    server.try_clone(),
                );
                let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = pair else {
                    continue;
                };
                if let Ok(mut list) = o.lock() {
                    list.push(client);
                    list.push(server);
                }
                std::thread::spawn(move || pipe(c1, s1));
                std::thread::spawn(move || pipe(s2, c2));
            }
        });
        Ok(Relay {
            port,
            stop,
            open,
            accept: Some(accept),
        })
    }

    /// The relay's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every connection through the relay, both ways; new ones still pass.
    pub fn cut(&self) {
        if let Ok(mut list) = self.open.lock() {
            for s in list.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag, and let it finish before cutting, so
        // a connection it was setting up is cut too. If the wake-up cannot connect, the
        // thread is left to end with the process rather than hang the test.
        let woke = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            std::time::Duration::from_secs(2),
        )
        .is_ok();
        if let Some(t) = self.accept.take()
            && woke
        {
            let _ = t.join();
        }
        self.cut();
    }
}
