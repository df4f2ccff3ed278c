//! A real `redis-server` for the tests of the Redis budget store: started on a free loopback
//! port, killed when dropped. Needs `redis-server` on PATH (`apt-get install redis-server`;
//! `.ci/run` and scripts/test.sh install it); missing → the test fails and says so.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` child process on 127.0.0.1.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    pub fn start_on(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install it with `apt-get install redis-server` (.ci/run does)")
            });
        let s = RedisServer {
            child: Some(child),
            port,
        };
        for _ in 0..500 {
            if s.ping() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {port} did not answer PING within 10 s");
    }

    pub fn ping(&self) -> bool {
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        c.write_all(b"PING\r\n").is_ok() && c.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of `redis-server` processes in cluster mode on loopback (primaries, each with
/// one replica), made with `redis-cli --cluster create`, in a temporary directory; every process
/// is killed when dropped. Needs `redis-server` and `redis-cli` on PATH (Debian `redis-server`,
/// which brings `redis-tools`); missing → the test fails and says so.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

/// `cluster-node-timeout` of the test clusters: a dead primary is failed over after about this
/// long plus an election.
pub const NODE_TIMEOUT_MS: u64 = 1000;

impl RedisCluster {
    /// `primaries` primaries and as many replicas.
    pub fn start(primaries: usize) -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for port in cluster_ports(primaries * 2) {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                .arg("--cluster-config-file")
                .arg(dir.path().join(format!("nodes-{port}.conf")))
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run redis-server ({e}): install it with `apt-get install redis-server` (.ci/run does)")
                });
            nodes.push(RedisServer {
                child: Some(child),
                port,
            });
        }
        for n in &nodes {
            assert!(
                (0..500).any(|_| n.ping() || {
                    std::thread::sleep(Duration::from_millis(20));
                    false
                }),
                "redis-server on port {} did not answer PING within 10 s",
                n.port
            );
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-cli ({e}): install it with `apt-get install redis-server` (.ci/run does)")
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = RedisCluster { nodes, _dir: dir };
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    /// Wait until every live node says the cluster is ok and every replica is in sync.
    pub fn wait_healthy(&self, within: Duration) {
        let until = std::time::Instant::now() + within;
        loop {
            let ok = self.live_ports().iter().all(|&p| {
                cli(p, &["cluster", "info"]).contains("cluster_state:ok") && {
                    let r = cli(p, &["info", "replication"]);
                    r.contains("role:master") || r.contains("master_link_status:up")
                }
            });
            if ok {
                return;
            }
            assert!(
                std::time::Instant::now() < until,
                "the Redis Cluster did not become healthy within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Seed node URLs for `budgets.store.nodes`.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// A live node's port (to ask the cluster things).
    pub fn any_port(&self) -> u16 {
        self.live_ports()[0]
    }

    /// The hash slot of `key`, as the cluster computes it.
    pub fn keyslot(&self, key: &str) -> u16 {
        cli(self.any_port(), &["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap()
    }

    /// The port of the primary that serves `slot` now (as a live node sees it).
    pub fn primary_of_slot(&self, slot: u16) -> u16 {
        self.cluster_nodes()
            .into_iter()
            .find(|n| n.primary && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
            .port
    }

    /// The port of the replica of the primary on `port`.
    pub fn replica_of(&self, port: u16) -> u16 {
        let nodes = self.cluster_nodes();
        let id = &nodes.iter().find(|n| n.port == port).unwrap().id;
        nodes
            .iter()
            .find(|n| n.primary_id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("the primary on {port} has no replica"))
            .port
    }

    /// `CLUSTER NODES` as a live node sees it, failed nodes left out.
    fn cluster_nodes(&self) -> Vec<ClusterNode> {
        cli(self.any_port(), &["cluster", "nodes"])
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() < 8 || f[2].contains("fail") {
                    return None;
                }
                let port = f[1].split(['@', ':']).nth(1)?.parse().ok()?;
                Some(ClusterNode {
                    id: f[0].to_string(),
                    port,
                    primary: f[2].contains("master"),
                    primary_id: (f[3] != "-").then(|| f[3].to_string()),
                    slots: f[8..]
                        .iter()
                        .filter_map(|s| {
                            let (a, b) = s.split_once('-').unwrap_or((s, s));
                            Some((a.parse().ok()?, b.parse().ok()?))
                        })
                        .collect(),
                })
            })
            .collect()
    }

    /// Kill (SIGKILL) the node on `port`.
    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap()
            .kill();
    }
}

struct ClusterNode {
    id: String,
    port: u16,
    primary: bool,
    primary_id: Option<String>,
    slots: Vec<(u16, u16)>,
}

/// `redis-cli -p PORT ARGS…` (no cluster redirection: asks that node itself); its stdout.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-cli ({e}): install it with `apt-get install redis-server` (.ci/run does)")
        });
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `n` free loopback ports whose cluster bus ports (port + 10000) are free too.
fn cluster_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port >= 55535 {
            continue;
        }
        let Ok(bus) = std::net::TcpListener::bind(("127.0.0.1", port + 10000)) else {
            continue;
        };
        ports.push(port);
        // Held until all are chosen, so no two picks collide.
        held.push((l, bus));
    }
    ports
}

/// What scope record `key` (`tw:{s:ID}`, …) on the node at `port` holds reserved: the sum of its
/// counters' reserved parts (`*:r` fields) and its live reservation leases (`l:*` fields plus
/// members of its lease set `key:l`).
pub fn reserved_in(port: u16, key: &str) -> (u64, usize) {
    let out = cli(port, &["hgetall", key]);
    let lines: Vec<&str> = out.lines().collect();
    let (mut reserved, mut leases) = (0, 0);
    for pair in lines.chunks_exact(2) {
        if pair[0].ends_with(":r") {
            reserved += pair[1].trim().parse::<u64>().unwrap_or(0);
        } else if pair[0].starts_with("l:") {
            leases += 1;
        }
    }
    let set = cli(port, &["zcard", &format!("{key}:l")]);
    (reserved, leases + set.trim().parse::<usize>().unwrap_or(0))
}
