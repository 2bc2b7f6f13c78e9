//! The actor's answers to [`Command`]s from the control API: read-only views built from the
//! engine's getters, publish and trust, which go through the engine like any other input, and
//! the operator's controls (in [`crate::control`]).

use std::collections::BTreeMap;

use starling_protocol::{Envelope, Input, ItemState, Reject, Roles, WorkItem, WorkKind};

use crate::actor::Actor;
use crate::client::{Command, ITEMS_LIST_MAX, ItemQuery};
use crate::clock::now_ms;
use crate::control::{Control, ControlIo};
use crate::net;
use crate::views::{
    ClaimInfo, DiskStats, FollowView, ItemInfo, Outcome, PeerInfo, ProjectInfo, RelayView,
    SeedInfo, SeedingView, StatusView, WorkView,
};

/// Most hosts listed by `/work`.
pub const HOSTS_LISTED_MAX: usize = 500;

impl Actor {
    pub(super) fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peers());
            }
            Command::Projects(reply) => {
                let _ = reply.send(self.projects());
            }
            Command::Items(q, reply) => {
                let _ = reply.send(self.items(&q));
            }
            Command::Publish(env, reply) => {
                let _ = reply.send(self.publish_file(*env));
            }
            Command::Trust(key, reply) => {
                let result = match self.store.trust(&key) {
                    Err(e) => Err(e.to_string()),
                    Ok(()) => {
                        let _ = self.handle(Input::Trust(key));
                        self.join_trusted_topics();
                        // Fetch what peers hold for this key now that it is trusted.
                        let peers: Vec<_> = self.swarm.connected_peers().copied().collect();
                        for p in peers {
                            self.start_sync(p);
                        }
                        Ok(Outcome { outcome: "applied".into(), what: key.to_hex() })
                    }
                };
                let _ = reply.send(result);
            }
            Command::Follow(key, reply) => {
                let _ = reply.send(self.follow(key));
            }
            Command::Work(reply) => {
                let _ = reply.send(self.work());
            }
            Command::Seeding(reply) => {
                let _ = reply.send(self.seeding());
            }
            Command::Relay(reply) => {
                let _ = reply.send(self.relay());
            }
            Command::Metrics(reply) => {
                let _ = reply.send(Box::new(crate::metrics::Snapshot {
                    status: self.status(),
                    peers: self.peers(),
                    projects: self.projects(),
                    seeding: self.seeding(),
                    relay: self.relay(),
                    actor: self.actor_metrics(),
                }));
            }
            Command::Pause(paused, reply) => {
                let (control, mut io) = self.control();
                let outcome = control.pause(&mut io, paused);
                self.drive();
                let _ = reply.send(outcome);
            }
            Command::SetCaps(caps, reply) => {
                let (control, mut io) = self.control();
                let r = control.set_caps(&mut io, caps);
                if matches!(r, Ok((_, true))) {
                    self.check_disk_cap();
                }
                self.drive();
                let _ = reply.send(r.map(|(caps, _)| caps));
            }
            Command::Subscribe(project, on, reply) => {
                let (control, mut io) = self.control();
                let r = control.subscribe(&mut io, project, on);
                self.drive();
                let _ = reply.send(r);
            }
            Command::Priority(project, priority, reply) => {
                let (control, mut io) = self.control();
                let r = control.set_priority(&mut io, project, priority);
                self.drive();
                let _ = reply.send(r);
            }
            Command::ExportPlan(project, reply) => {
                let plan =
                    crate::seed::node::export_plan(&self.engine, self.seed.as_ref(), &project);
                let _ = reply.send(plan);
            }
            Command::UrlOutcomes(project, failed_only, reply) => {
                let outcomes =
                    crate::urls::url_outcomes(&self.engine, &self.store, &project, failed_only);
                let _ = reply.send(outcomes);
            }
            #[cfg(debug_assertions)]
            Command::RawGossip { topic, bytes, reply } => {
                let t = libp2p::gossipsub::IdentTopic::new(topic.clone());
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(t, bytes)
                    .map(|_| Outcome { outcome: "sent".into(), what: topic })
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
        }
    }

    /// The operator's controls and what they are handed.
    pub(super) fn control(&mut self) -> (&mut Control, ControlIo<'_>) {
        let io = ControlIo {
            engine: &mut self.engine,
            store: &self.store,
            store_error: &mut self.store_error,
            crawler: self.runners.crawler(),
        };
        (&mut self.control, io)
    }

    /// Follows a curator: stored first, so a follow that was answered survives a restart;
    /// then its topic is joined and peers are asked for what they hold (its directory).
    fn follow(&mut self, key: starling_protocol::PublicKey) -> Result<Outcome, String> {
        let known = self.engine.following().any(|(k, _)| *k == key);
        if !known && self.engine.following().count() >= starling_protocol::limits::FOLLOWING_MAX {
            return Err(format!(
                "this node already follows {} curators, the most it may",
                starling_protocol::limits::FOLLOWING_MAX
            ));
        }
        self.store.follow(&key).map_err(|e| e.to_string())?;
        self.handle(Input::Follow(key)).map_err(|r| format!("follow refused: {r}"))?;
        self.join_trusted_topics();
        let peers: Vec<_> = self.swarm.connected_peers().copied().collect();
        for p in peers {
            self.start_sync(p);
        }
        Ok(Outcome { outcome: "applied".into(), what: key.to_hex() })
    }

    fn publish_file(&mut self, env: Envelope) -> Result<Outcome, String> {
        let what = env.kind().to_owned();
        let env_signer = match &env {
            Envelope::Batch(s) => Some(s.signer()),
            Envelope::Manifest(s) => Some(s.signer()),
            _ => None,
        };
        let curator = match &env {
            Envelope::Directory(s) => Some(s.signer()),
            _ => None,
        };
        match self.handle(Input::Publish(env)) {
            Ok(()) => Ok(Outcome { outcome: "applied".into(), what }),
            Err(Reject::Duplicate) => Ok(Outcome { outcome: "duplicate".into(), what }),
            // Parked until its manifest arrives: not what a publisher asked for, so an error
            // that says what to do (the batch stays parked and applies if the manifest comes).
            Err(Reject::UnknownProject) => Err(self.parked_reason(&env_signer, &what)),
            Err(Reject::UntrustedProject) if let Some(key) = curator => Err(format!(
                "directory refused: this node does not follow curator {key}: run `starling project follow {key}` first, then publish again"
            )),
            Err(r) => Err(format!("{what} refused: {r}")),
        }
    }

    /// Why a published file was parked: its owner is not trusted here, or its manifest is
    /// not known yet.
    fn parked_reason(&self, signer: &Option<starling_protocol::PublicKey>, what: &str) -> String {
        match signer {
            Some(key) if !self.engine.trusted().any(|k| k == key) => format!(
                "{what} parked: project key {key} is not trusted on this node: run `starling project trust {key}` first, then publish again"
            ),
            _ => format!(
                "{what} parked: this node does not know its project; publish the project's manifest first (the {what} applies once the manifest arrives)"
            ),
        }
    }

    fn status(&self) -> StatusView {
        // Gossip that did not even decode never reached the engine; count it as malformed.
        let mut engine = self.engine.stats().clone();
        if self.stats.gossip_undecodable > 0 {
            *engine.rejected.entry(Reject::Malformed).or_default() += self.stats.gossip_undecodable;
        }
        StatusView {
            node_id: self.engine.node_id().to_hex(),
            peer_id: self.swarm.local_peer_id().to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_ms: now_ms().saturating_sub(self.started_ms),
            listen: self.listen.iter().map(ToString::to_string).collect(),
            connected_peers: self.swarm.connected_peers().count(),
            live_peers: self.engine.peers().count(),
            roles: self.engine.config().roles.0,
            paused: self.engine.is_paused(),
            capacity: self.engine.config().capacity,
            over_disk_cap: self.faults.disk,
            projects: self.engine.projects().count(),
            items: self.engine.counts(None),
            holding: self.engine.local_work().count(),
            engine,
            runner: self.runners.counters().snapshot(),
            net: self.stats,
            store_error: self.store_error.clone(),
            health: {
                // The clock as the engine judges it now, the rest as last looked at.
                let clock = self.engine.clock();
                let margin = self.engine.config().skew_margin_ms;
                let faults = crate::health::Faults {
                    clock: clock.off.then(|| (clock.offset_ms.unwrap_or(0), margin)),
                    ..self.faults.clone()
                };
                faults.view(clock, self.engine.stats().gave_back)
            },
            now_ms: now_ms(),
            fetch: self.runners.crawler().map(|c| c.fetch_stats()).unwrap_or_default(),
            disk: DiskStats {
                results_bytes: self
                    .runners
                    .crawler()
                    .and_then(|c| c.stored_bytes().ok())
                    .unwrap_or_default(),
                store_bytes: self.store.file_bytes(),
            },
            caps: Control::caps(&self.engine, self.runners.crawler()),
            torrents: self.torrents.as_ref().map(|t| t.control.totals()).unwrap_or_default(),
            lifetime: self.lifetime(),
            following: self
                .engine
                .following()
                .map(|(key, dir)| FollowView {
                    curator: key.to_hex(),
                    name: dir.map(|d| d.name.clone()),
                    version: dir.map(|d| d.version),
                    projects: dir.map_or(0, |d| d.entries.len()),
                })
                .collect(),
            checks: crate::checks::views(&self.engine),
        }
    }

    fn peers(&self) -> Vec<PeerInfo> {
        let mut out: BTreeMap<String, PeerInfo> = BTreeMap::new();
        let gossip = &self.swarm.behaviour().gossipsub;
        for peer in self.swarm.connected_peers() {
            out.insert(
                peer.to_string(),
                PeerInfo {
                    peer_id: peer.to_string(),
                    node_id: net::node_id_of(peer).map(|n| n.to_hex()),
                    connected: true,
                    live: false,
                    score: gossip.peer_score(peer),
                    via_relay: self.relayed.contains_key(peer),
                    synced: self.synced_from.get(peer).copied().unwrap_or(0),
                    free: None,
                    capacity: None,
                },
            );
        }
        for p in self.engine.peers() {
            let Some(peer) = net::peer_id_of(&p.node) else { continue };
            let entry = out.entry(peer.to_string()).or_insert_with(|| PeerInfo {
                peer_id: peer.to_string(),
                node_id: Some(p.node.to_hex()),
                connected: false,
                live: false,
                score: None,
                via_relay: false,
                synced: 0,
                free: None,
                capacity: None,
            });
            entry.live = true;
            entry.free = Some(p.free);
            entry.capacity = Some(p.capacity);
        }
        out.into_values().collect()
    }

    fn projects(&self) -> Vec<ProjectInfo> {
        self.engine
            .projects()
            .map(|(id, m)| ProjectInfo {
                id: id.to_hex(),
                name: m.name.clone(),
                version: m.version,
                owner: m.owner.to_hex(),
                lease_ms: m.lease_ms,
                replication: m.replication,
                items: self.engine.counts(Some(id)),
                // A project a followed curator lists is as good as trusted.
                trusted: self.engine.trusted().any(|k| *k == m.owner)
                    || self.engine.curated_priority(&id).is_some(),
                subscribed: self.engine.is_subscribed(&id),
                priority: self.engine.priority(&id),
                urls: {
                    let [ok, refused, disallowed, transient] = self.engine.part_counts(&id);
                    crate::views::UrlCounts { ok, refused, disallowed, transient }
                },
                by_kind: Some(crate::views::KindCounts::from_kinds(
                    &self.engine.counts_by_kind(&id),
                )),
                rate_scope: m.rate.scope.name().into(),
                rate_per_s: f64::from(m.rate.per_s_milli) / 1000.0,
                lanes: m.rate.lanes,
                shard: self.shard_info(&id),
            })
            .collect()
    }

    fn items(&self, q: &ItemQuery) -> Vec<ItemInfo> {
        let limit = q.limit.unwrap_or(ITEMS_LIST_MAX).min(ITEMS_LIST_MAX);
        self.engine
            .items()
            // Host lanes are the mesh's hold on a host, shown with the hosts, not work items.
            .filter(|(id, _, _)| {
                self.engine.item_work(id).is_none_or(|(_, w)| w.kind() != WorkKind::Lane)
            })
            .filter(|(_, p, _)| q.project.as_ref().is_none_or(|want| p.to_hex() == *want))
            .filter(|(_, _, s)| q.state.as_deref().is_none_or(|want| state_name(s) == want))
            .take(limit)
            .map(|(id, p, s)| {
                let mut info = ItemInfo::new(id.to_hex(), p.to_hex(), &s);
                crate::checks::annotate(&self.engine, &id, &mut info);
                info
            })
            .collect()
    }
}

impl Actor {
    fn work(&self) -> WorkView {
        let now = now_ms();
        let mut claims: Vec<ClaimInfo> = self
            .engine
            .local_work()
            .map(|w| ClaimInfo {
                item: w.item.to_hex(),
                project: w.project.to_hex(),
                kind: w.kind.name().into(),
                epoch: w.epoch,
                lease_until_ms: w.lease_until_ms,
                started: w.started,
            })
            .collect();
        claims.sort_by(|a, b| a.lease_until_ms.cmp(&b.lease_until_ms).then(a.item.cmp(&b.item)));
        let hosts =
            self.runners.crawler().map(|c| c.host_views(now, HOSTS_LISTED_MAX)).unwrap_or_default();
        WorkView { now_ms: now, claims, hosts }
    }

    fn seeding(&self) -> SeedingView {
        let duties: Vec<SeedInfo> = self
            .engine
            .local_work()
            .filter(|w| w.kind == WorkKind::Seed)
            .filter_map(|w| match self.engine.item_work(&w.item) {
                Some((_, WorkItem::SeedDuty { result, size, .. })) => Some(SeedInfo {
                    item: w.item.to_hex(),
                    digest: result.to_hex(),
                    size: *size,
                    state: match (&self.seed, w.started) {
                        (Some(s), _) if s.store.has(result) => "stored",
                        (_, true) => "fetching",
                        _ => "claimed",
                    }
                    .into(),
                }),
                _ => None,
            })
            .collect();
        let (blobs, bytes_stored) = self.runners.stored_blobs();
        let stats = self.seed.as_ref().map(|s| s.stats()).unwrap_or_default();
        SeedingView {
            enabled: self.engine.config().roles.contains(Roles::SEED),
            capacity: self.engine.config().seed_capacity,
            duties,
            blobs,
            bytes_stored,
            bytes_served: stats.bytes_served,
            bytes_fetched: stats.bytes_fetched,
            chunks_rejected: stats.chunks_rejected,
        }
    }

    fn relay(&self) -> RelayView {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.relay_server.counters;
        let nat = self.nat.as_ref();
        let load = |f: fn(&crate::nat::Nat) -> &std::sync::atomic::AtomicU64| {
            nat.map_or(0, |n| f(n).load(Relaxed))
        };
        RelayView {
            enabled: self.engine.config().roles.contains(Roles::RELAY),
            reachability: nat
                .map_or(crate::nat::Reachable::Unknown, |n| n.reachable())
                .name()
                .into(),
            slots_offered: self.engine.config().relay_capacity,
            slots_held: self.engine.local_work().filter(|w| w.kind == WorkKind::Relay).count()
                as u64,
            reservations: c.reservations.load(Relaxed),
            circuits: c.circuits.load(Relaxed),
            circuits_open: c.circuits_open.load(Relaxed),
            refused: c.refused.load(Relaxed),
            relayed_via: nat.and_then(|n| n.relay()).map(|p| p.to_string()),
            reserved: load(|n| &n.reservations),
            circuits_in: load(|n| &n.circuits_in),
            relayed_bytes: crate::relay::relayed_bytes(&self.relay_server.bandwidth),
        }
    }
}

fn state_name(s: &ItemState) -> &'static str {
    match s {
        ItemState::Open { .. } => "open",
        ItemState::Held { .. } => "held",
        ItemState::Done { .. } => "done",
        ItemState::Failed { .. } => "failed",
    }
}

impl Actor {
    /// What the metrics need beyond the JSON views.
    pub(crate) fn actor_metrics(&self) -> crate::metrics::ActorMetrics {
        let mut items_by_kind = std::collections::BTreeMap::new();
        for (id, _, state) in self.engine.items() {
            if let Some((_, work)) = self.engine.item_work(&id) {
                *items_by_kind
                    .entry((work.kind().name(), crate::metrics::state_name(&state)))
                    .or_default() += 1;
            }
        }
        let mut held_by_kind = std::collections::BTreeMap::new();
        for w in self.engine.local_work() {
            *held_by_kind.entry(w.kind.name()).or_default() += 1;
        }
        let gossip = &self.swarm.behaviour().gossipsub;
        let topics = gossip
            .topics()
            .map(|t| {
                let subscribed = gossip.all_peers().filter(|(_, ts)| ts.contains(&t)).count();
                (t.as_str().to_owned(), gossip.mesh_peers(t).count(), subscribed)
            })
            .collect();
        let bytes = {
            let mut text = String::new();
            let registry = self.relay_server.bandwidth.lock().unwrap_or_else(|e| e.into_inner());
            let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
            crate::metrics::bandwidth_bytes(&text)
        };
        crate::metrics::ActorMetrics {
            items_by_kind,
            held_by_kind,
            topics,
            connections: self.conn_metrics.clone(),
            bytes,
            durations: self.runners.timer().durations(),
        }
    }
}
