//! `ClusterDns`: the cluster's DNS server (kube-dns / CoreDNS's place), a
//! supervised child of the node. It follows Services and EndpointSlices
//! through informers, keeps the names they make ([`zone`]) and serves them
//! over UDP and TCP with hickory-server on this node's DNS address (the pod
//! network's gateway, port 53, by default); `kube-system/kube-dns` points
//! there, and pods find it through the `nameserver` their `resolv.conf`
//! names. Names outside the cluster's zone are forwarded to the host's
//! resolvers and their answers relayed.

pub mod zone;

use crate::informer::{self, Informed, Mirror};
use crate::supervisor::TreeNode;
use actix::prelude::*;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Message, Metadata, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use peapod_core::kinds;
use peapod_core::store::Store;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use zone::{Lookup, Zone};

/// How the cluster's DNS is set up.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Where the server listens (UDP and TCP).
    pub listen: SocketAddr,
    /// The cluster's zone (`cluster.local`).
    pub domain: String,
    /// Resolvers for every other name.
    pub upstreams: Vec<SocketAddr>,
}

/// How long an upstream has to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// The nameservers of a `resolv.conf`, as resolvers to forward to.
pub fn upstreams_of(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The DNS server actor.
pub struct ClusterDns {
    store: Arc<dyn Store>,
    config: DnsConfig,
    node: TreeNode,
    services: Mirror,
    slices: Mirror,
    zone: Arc<RwLock<Arc<Zone>>>,
    /// Failed attempts to serve in a row (the back-off).
    failures: u32,
}

impl ClusterDns {
    pub fn new(store: Arc<dyn Store>, config: DnsConfig, node: TreeNode) -> Self {
        let zone = Arc::new(RwLock::new(Arc::new(Zone::build(&config.domain, &[], &[]))));
        Self {
            store,
            config,
            node,
            services: Mirror::default(),
            slices: Mirror::default(),
            zone,
            failures: 0,
        }
    }

    fn rebuild(&mut self) {
        let (services, slices) = (self.services.objects(), self.slices.objects());
        let zone = Arc::new(Zone::build(&self.config.domain, &services, &slices));
        if let Ok(mut z) = self.zone.write() {
            *z = zone;
        }
    }
}

/// A UDP socket and a TCP listener on `addr`, which need not be an address
/// of the node yet (`IP_FREEBIND`): the pod network's gateway appears with
/// its bridge, at the first pod.
fn bind(addr: SocketAddr) -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    use nix::sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let sockaddr = SockaddrStorage::from(addr);
    let udp = socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&udp, sockopt::IpFreebind, &true)?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&udp), &sockaddr)?;
    let tcp = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&tcp, sockopt::IpFreebind, &true)?;
    setsockopt(&tcp, sockopt::ReuseAddr, &true)?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&tcp), &sockaddr)?;
    listen(&tcp, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok((std::net::UdpSocket::from(udp), std::net::TcpListener::from(tcp)))
}

impl Actor for ClusterDns {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for kind in [kinds::service(), kinds::endpointslice()] {
            let informer = informer::run(self.store.clone(), kind.resource(), None, ctx.address().recipient());
            ctx.spawn(informer.into_actor(self));
        }
        self.serve(ctx);
    }
}

impl ClusterDns {
    /// Binds and serves; a failure (the address taken) is logged and tried
    /// again with a back-off, never a crash: a node without its DNS server
    /// still runs its pods.
    fn serve(&mut self, ctx: &mut Context<Self>) {
        let listen = self.config.listen;
        let retry = move |act: &mut Self, ctx: &mut Context<Self>, why: String| {
            act.failures = act.failures.saturating_add(1);
            let delay = Duration::from_secs(1u64 << act.failures.min(6));
            tracing::error!("cluster DNS on {listen}: {why}; trying again in {delay:?}");
            act.node.set_state(format!("Failing: {why}"));
            ctx.run_later(delay, |act, ctx| act.serve(ctx));
        };
        let (udp, tcp) = match bind(listen) {
            Ok(s) => s,
            Err(e) => return retry(self, ctx, format!("listen: {e}")),
        };
        let handler = Resolver {
            zone: self.zone.clone(),
            upstreams: Arc::new(self.config.upstreams.clone()),
        };
        let serve = async move {
            let mut server = hickory_server::Server::new(handler);
            let udp = tokio::net::UdpSocket::from_std(udp).map_err(|e| e.to_string())?;
            let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|e| e.to_string())?;
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 65535);
            tracing::info!("cluster DNS serving on {listen}");
            server.block_until_done().await.map_err(|e| e.to_string())?;
            Err::<(), String>("the server ended".into())
        };
        // The server ends with the actor (its sockets close when it is dropped).
        ctx.spawn(serve.into_actor(self).map(move |res, act, ctx| {
            if let Err(why) = res {
                retry(act, ctx, why);
            }
        }));
        self.failures = 0;
        self.node.set_state("Serving");
    }
}

impl Handler<Informed> for ClusterDns {
    type Result = ();

    fn handle(&mut self, msg: Informed, _ctx: &mut Context<Self>) {
        if msg.resource() == kinds::service().resource() {
            self.services.apply(msg);
        } else {
            self.slices.apply(msg);
        }
        self.rebuild();
    }
}

/// Answers one request: from the zone, or from the upstreams.
#[derive(Clone)]
struct Resolver {
    zone: Arc<RwLock<Arc<Zone>>>,
    upstreams: Arc<Vec<SocketAddr>>,
}

impl Resolver {
    fn zone(&self) -> Arc<Zone> {
        self.zone.read().map(|z| z.clone()).unwrap_or_default()
    }
}

/// Sends `query` (a whole DNS message) to the upstreams in turn, over UDP,
/// again over TCP when the answer was truncated; the first answer wins.
async fn ask_upstream(upstreams: &[SocketAddr], query: &[u8]) -> Option<Message> {
    for up in upstreams {
        let answer = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            let bind: SocketAddr = if up.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().ok()?;
            let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
            // Connected: only the upstream's datagrams are read, and only an
            // answer to this query (its ID) is taken.
            sock.connect(up).await.ok()?;
            sock.send(query).await.ok()?;
            let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
            let mut buf = vec![0u8; 65535];
            let msg = loop {
                let n = sock.recv(&mut buf).await.ok()?;
                match Message::from_vec(&buf[..n]) {
                    Ok(m) if m.metadata.id == id => break m,
                    _ => continue,
                }
            };
            if !msg.metadata.truncation {
                return Some(msg);
            }
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tcp = tokio::net::TcpStream::connect(up).await.ok()?;
            let len = u16::try_from(query.len()).ok()?;
            tcp.write_all(&len.to_be_bytes()).await.ok()?;
            tcp.write_all(query).await.ok()?;
            let mut len = [0u8; 2];
            tcp.read_exact(&mut len).await.ok()?;
            let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
            tcp.read_exact(&mut body).await.ok()?;
            Message::from_vec(&body).ok().filter(|m| m.metadata.id == id)
        })
        .await;
        if let Ok(Some(msg)) = answer {
            return Some(msg);
        }
    }
    None
}

/// The upstreams' answer for `name` and `qtype` (an alias's target).
async fn resolve_upstream(upstreams: &[SocketAddr], name: &Name, qtype: RecordType) -> Vec<Record> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name.clone(), qtype));
    let Ok(bytes) = msg.to_vec() else { return Vec::new() };
    ask_upstream(upstreams, &bytes)
        .await
        .map(|m| m.answers)
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl RequestHandler for Resolver {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let failed = |metadata: Metadata| -> ResponseInfo {
            Header {
                metadata,
                counts: HeaderCounts::default(),
            }
            .into()
        };
        let builder = MessageResponseBuilder::from_message_request(request);
        let query = match request.request_info() {
            Ok(info) if request.metadata.op_code == OpCode::Query => info.query.clone(),
            _ => {
                let reply = builder.error_msg(&request.metadata, ResponseCode::NotImp);
                return response.send_response(reply).await.unwrap_or_else(|_| failed(metadata));
            }
        };
        let name: Name = query.name().into();
        let zone = self.zone();
        let (mut answers, mut authorities, mut additionals) = (Vec::new(), Vec::new(), Vec::new());
        match zone.lookup(&name, query.query_type()) {
            Lookup::Records {
                answers: a,
                additionals: d,
            } => {
                metadata.authoritative = true;
                answers = a;
                additionals = d;
            }
            Lookup::Alias { cname, target } => {
                metadata.authoritative = true;
                answers.push(*cname);
                if matches!(query.query_type(), RecordType::A | RecordType::AAAA) {
                    // A target in the zone is answered here; one outside it by the upstreams.
                    match zone.lookup(&target, query.query_type()) {
                        Lookup::Records { answers: a, .. } => answers.extend(a),
                        Lookup::Elsewhere => {
                            answers.extend(resolve_upstream(&self.upstreams, &target, query.query_type()).await)
                        }
                        _ => {}
                    }
                }
            }
            Lookup::NoData => {
                metadata.authoritative = true;
                authorities.push(zone.soa());
            }
            Lookup::NxDomain => {
                metadata.authoritative = true;
                metadata.response_code = ResponseCode::NXDomain;
                authorities.push(zone.soa());
            }
            Lookup::Elsewhere => match ask_upstream(&self.upstreams, request.as_slice()).await {
                Some(up) => {
                    metadata.response_code = up.metadata.response_code;
                    answers = up.answers;
                    authorities = up.authorities;
                    additionals = up.additionals;
                }
                None => metadata.response_code = ResponseCode::ServFail,
            },
        }
        let reply = builder.build(
            metadata,
            answers.iter(),
            authorities.iter(),
            std::iter::empty(),
            additionals.iter(),
        );
        response.send_response(reply).await.unwrap_or_else(|_| failed(metadata))
    }
}
