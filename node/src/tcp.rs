//! The node's TCP transport: libp2p-tcp for dialling, listeners of its own that own their port.
//!
//! libp2p-tcp binds every listening socket with `SO_REUSEPORT`, so that dials may leave from
//! the listen port. On Linux that also lets a second process (another node, started by
//! mistake on the same port) bind and listen on the very same address without an error; the
//! kernel then hands each incoming connection to either process at random, and dials meant
//! for one node reach the other. Here a listener is bound with `SO_REUSEADDR` only (so a
//! restarted node binds again at once while its old connections sit in `TIME_WAIT`): a port
//! another socket listens on, with or without `SO_REUSEPORT`, makes [`Transport::listen_on`]
//! fail with `AddrInUse`, which stops the node's start with one line.
//!
//! Dials go through libp2p-tcp from a fresh port (`PortUse::New`): no socket of the node
//! shares a port, so TCP hole punching is not attempted (QUIC's is unaffected, its dials leave
//! from the listening UDP socket). Identify translates the peers' observed addresses to the
//! listen port, as it does for any ephemeral-port dial.
//!
//! A listener on an unspecified address (`0.0.0.0`, `::`) reports one listen address per
//! local interface address, and follows interfaces coming and going, as libp2p-tcp does.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::{Ready, ready};
use futures::stream::SelectAll;
use futures::{Stream, StreamExt};
use libp2p::Multiaddr;
use libp2p::core::transport::{
    DialOpts, ListenerId, PortUse, Transport as CoreTransport, TransportError, TransportEvent,
};
use libp2p::multiaddr::Protocol;
use libp2p::tcp::tokio::TcpStream;

/// Pending connections the kernel queues on a listener.
pub const LISTEN_BACKLOG: i32 = 1024;
/// Pause after an accept error (out of file descriptors, say) before accepting again.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

type Event = TransportEvent<Ready<io::Result<TcpStream>>, io::Error>;

/// TCP with exclusive listeners (see the module doc).
pub struct Transport {
    dialer: libp2p::tcp::tokio::Transport,
    listeners: SelectAll<Listener>,
    nodelay: bool,
    /// The task that found no listener to poll, woken when one is added.
    waker: Option<Waker>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A transport whose connections have `TCP_NODELAY` set as `nodelay` says.
    pub fn new(nodelay: bool) -> Self {
        Self {
            dialer: libp2p::tcp::tokio::Transport::new(
                libp2p::tcp::Config::default().nodelay(nodelay),
            ),
            listeners: SelectAll::new(),
            nodelay,
            waker: None,
        }
    }
}

/// The socket address of `/ip4|ip6/…/tcp/…`, optionally followed by `/p2p/…`; nothing else.
pub fn socket_addr_of(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    let ip: IpAddr = match parts.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let Protocol::Tcp(port) = parts.next()? else { return None };
    match (parts.next(), parts.next()) {
        (None, _) | (Some(Protocol::P2p(_)), None) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

fn tcp_multiaddr(ip: IpAddr, port: u16) -> Multiaddr {
    Multiaddr::empty().with(ip.into()).with(Protocol::Tcp(port))
}

/// A listening socket bound without `SO_REUSEPORT`: fails with `AddrInUse` on a taken port.
fn bind_exclusive(addr: SocketAddr) -> io::Result<StdListener> {
    use socket2::{Domain, Socket, Type};
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

impl CoreTransport for Transport {
    type Output = TcpStream;
    type Error = io::Error;
    type ListenerUpgrade = Ready<io::Result<TcpStream>>;
    type Dial = <libp2p::tcp::tokio::Transport as CoreTransport>::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<io::Error>> {
        let socket_addr =
            socket_addr_of(&addr).ok_or(TransportError::MultiaddrNotSupported(addr))?;
        let listener =
            Listener::bind(id, socket_addr, self.nodelay).map_err(TransportError::Other)?;
        self.listeners.push(listener);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        match self.listeners.iter_mut().find(|l| l.id == id) {
            Some(l) => {
                l.close();
                true
            }
            None => false,
        }
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<io::Error>> {
        self.dialer.dial(addr, DialOpts { port_use: PortUse::New, ..opts })
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Event> {
        match self.listeners.poll_next_unpin(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(event),
            Poll::Ready(None) | Poll::Pending => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// One listening socket and, on an unspecified address, the interface watcher that names its
/// addresses.
struct Listener {
    id: ListenerId,
    bound: SocketAddr,
    /// `None` once closed: the port is given back at once, not when the stream ends.
    socket: Option<tokio::net::TcpListener>,
    interfaces: Option<if_watch::tokio::IfWatcher>,
    nodelay: bool,
    events: VecDeque<Event>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    waker: Option<Waker>,
}

impl Listener {
    fn bind(id: ListenerId, addr: SocketAddr, nodelay: bool) -> io::Result<Self> {
        let socket = tokio::net::TcpListener::from_std(bind_exclusive(addr)?)?;
        let bound = socket.local_addr()?;
        let mut events = VecDeque::new();
        let interfaces = if bound.ip().is_unspecified() {
            Some(if_watch::tokio::IfWatcher::new()?)
        } else {
            events.push_back(TransportEvent::NewAddress {
                listener_id: id,
                listen_addr: tcp_multiaddr(bound.ip(), bound.port()),
            });
            None
        };
        Ok(Self {
            id,
            bound,
            socket: Some(socket),
            interfaces,
            nodelay,
            events,
            pause: None,
            waker: None,
        })
    }

    fn close(&mut self) {
        if self.socket.take().is_some() {
            self.interfaces = None;
            self.events
                .push_back(TransportEvent::ListenerClosed { listener_id: self.id, reason: Ok(()) });
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// The next interface change that adds or removes a listen address of this listener.
    fn poll_interfaces(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let Some(watcher) = self.interfaces.as_mut() else { return Poll::Pending };
        while let Poll::Ready(Some(event)) = watcher.poll_next_unpin(cx) {
            let (up, net) = match event {
                Ok(if_watch::IfEvent::Up(net)) => (true, net),
                Ok(if_watch::IfEvent::Down(net)) => (false, net),
                Err(error) => {
                    self.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
                    return Poll::Ready(TransportEvent::ListenerError {
                        listener_id: self.id,
                        error,
                    });
                }
            };
            if net.addr().is_ipv4() != self.bound.is_ipv4() {
                continue;
            }
            let listen_addr = tcp_multiaddr(net.addr(), self.bound.port());
            return Poll::Ready(if up {
                TransportEvent::NewAddress { listener_id: self.id, listen_addr }
            } else {
                TransportEvent::AddressExpired { listener_id: self.id, listen_addr }
            });
        }
        Poll::Pending
    }
}

impl Stream for Listener {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = &mut *self;
        if let Some(event) = this.events.pop_front() {
            return Poll::Ready(Some(event));
        }
        // Closed, and the close reported: the stream ends.
        if this.socket.is_none() {
            return Poll::Ready(None);
        }
        if let Some(pause) = this.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                this.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            this.pause = None;
        }
        if let Poll::Ready(event) = this.poll_interfaces(cx) {
            return Poll::Ready(Some(event));
        }
        let Some(socket) = this.socket.as_mut() else { return Poll::Ready(None) };
        match socket.poll_accept(cx) {
            Poll::Ready(Ok((stream, remote))) => {
                let local = stream.local_addr().unwrap_or(this.bound);
                if let Err(e) = stream.set_nodelay(this.nodelay) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
                }
                Poll::Ready(Some(TransportEvent::Incoming {
                    listener_id: this.id,
                    upgrade: ready(Ok(TcpStream(stream))),
                    local_addr: tcp_multiaddr(local.ip(), local.port()),
                    send_back_addr: tcp_multiaddr(remote.ip(), remote.port()),
                }))
            }
            Poll::Ready(Err(error)) => {
                this.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
                Poll::Ready(Some(TransportEvent::ListenerError { listener_id: this.id, error }))
            }
            Poll::Pending => {
                this.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(t: &mut Transport, addr: &str) -> Result<ListenerId, TransportError<io::Error>> {
        let id = ListenerId::next();
        t.listen_on(id, addr.parse().unwrap()).map(|()| id)
    }

    async fn next(t: &mut Transport) -> Event {
        futures::future::poll_fn(|cx| Pin::new(&mut *t).poll(cx)).await
    }

    #[tokio::test]
    async fn a_taken_port_fails_the_listen() {
        let mut a = Transport::new(true);
        listen(&mut a, "/ip4/127.0.0.1/tcp/0").unwrap();
        let TransportEvent::NewAddress { listen_addr, .. } = next(&mut a).await else {
            panic!("first event is not the address");
        };
        // A second listener of this kind, and one bound the way libp2p-tcp binds (with
        // SO_REUSEPORT), are both refused.
        let mut b = Transport::new(true);
        let Err(TransportError::Other(e)) = listen(&mut b, &listen_addr.to_string()) else {
            panic!("second listen on {listen_addr} did not fail");
        };
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        let mut libp2p = libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default());
        let taken = libp2p.listen_on(ListenerId::next(), listen_addr.clone());
        assert!(matches!(taken, Err(TransportError::Other(_))), "{taken:?}");
        // The other way round: a port libp2p-tcp listens on is refused as well.
        let mut libp2p = libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default());
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let addr = tcp_multiaddr(free.ip(), free.port());
        libp2p.listen_on(ListenerId::next(), addr.clone()).unwrap();
        assert!(listen(&mut b, &addr.to_string()).is_err());
    }

    #[tokio::test]
    async fn accepts_dials_and_closes() {
        let mut t = Transport::new(true);
        let id = listen(&mut t, "/ip4/127.0.0.1/tcp/0").unwrap();
        let TransportEvent::NewAddress { listen_addr, .. } = next(&mut t).await else {
            panic!("first event is not the address");
        };
        let port = socket_addr_of(&listen_addr).unwrap().port();
        let client = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let TransportEvent::Incoming { send_back_addr, upgrade, .. } = next(&mut t).await else {
            panic!("no incoming connection");
        };
        assert_eq!(socket_addr_of(&send_back_addr), Some(client.local_addr().unwrap()));
        assert!(upgrade.await.is_ok());
        assert!(t.remove_listener(id));
        assert!(matches!(
            next(&mut t).await,
            TransportEvent::ListenerClosed { reason: Ok(()), .. }
        ));
        // Its port is free again.
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    #[test]
    fn only_plain_tcp_addresses_are_taken() {
        let ok = |s: &str| socket_addr_of(&s.parse().unwrap());
        assert_eq!(ok("/ip4/127.0.0.1/tcp/5"), Some("127.0.0.1:5".parse().unwrap()));
        assert_eq!(ok("/ip6/::1/tcp/5"), Some("[::1]:5".parse().unwrap()));
        let peer =
            libp2p::identity::Keypair::ed25519_from_bytes([7u8; 32]).unwrap().public().to_peer_id();
        assert!(ok(&format!("/ip4/127.0.0.1/tcp/5/p2p/{peer}")).is_some());
        assert!(ok("/ip4/127.0.0.1/udp/5/quic-v1").is_none());
        assert!(ok(&format!("/ip4/127.0.0.1/tcp/5/p2p/{peer}/p2p-circuit")).is_none());
        assert!(ok("/dns4/localhost/tcp/5").is_none());
    }
}
