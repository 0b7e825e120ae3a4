//! Read replicas (issue 16), against the private primary and replicas of
//! `scripts/pg-replica.sh` (skipped, with a note, when its URLs are unset;
//! CI sets `LARDER_REQUIRE_BACKENDS=…,pg-replicas` so that they fail instead).
//!
//! What users rely on: a lagging replica never puts a row older than an
//! applied invalidation into the cache (this store's own writes and other
//! processes'), a down replica costs no error, and reads do reach a replica
//! that has caught up.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use larder::{Error, Store};
use larder_blog::schema::users;
use larder_blog::Blog;

/// Iterations of each write-then-read loop.
const OWN_ROUNDS: i64 = 2000;
const PEER_ROUNDS: i64 = 1000;

/// How long a row may take to become current after a change: a liveness
/// deadline (failing means "never"), far beyond the staleness bound.
const DEADLINE: Duration = Duration::from_secs(10);

/// One test at a time: one of them stops the shared lagging replica.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn script(action: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-replica.sh");
    let status = Command::new(script)
        .arg(action)
        .status()
        .expect("run pg-replica.sh");
    assert!(status.success(), "pg-replica.sh {action}");
}

/// User `id`'s name through the identity map.
fn cached_name(store: &Store, id: i64) -> i64 {
    let user = store
        .users()
        .get(id)
        .expect("get")
        .expect("the user exists");
    user.name.parse().expect("numeric name")
}

/// User `id`'s name through the query cache (a `cached_value` load).
fn listed_name(store: &Store, id: i64) -> i64 {
    let name: String = store
        .users()
        .cached_value(&format!("name of {id}"), &["users"], move |conn| {
            larder::with_connection!(conn, |c| users::table
                .find(id)
                .select(users::name)
                .get_result::<String>(c))
        })
        .expect("cached_value");
    name.parse().expect("numeric name")
}

/// Reads user `id` both ways in a loop until stopped, so that loads race
/// the invalidations. (It asserts no order between its reads: a reader can
/// see a row go back one version for a moment even without replicas, see
/// the report of issue 16; what must never happen is an old row that stays,
/// which the writers' loops check.)
fn hammer(store: Store, id: i64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut reads = 0;
        while !stop.load(Ordering::Relaxed) {
            let _ = cached_name(&store, id);
            let _ = listed_name(&store, id);
            reads += 2;
        }
        reads
    })
}

/// Waits until both replicas have user `id` (a liveness deadline), so that
/// the loops below test old rows, not missing ones.
fn replicated_user(db: &common::Replicated, id: i64) {
    use diesel::connection::SimpleConnection;
    for url in [&db.lagging, &db.fast] {
        let started = Instant::now();
        let mut conn = larder::Connection::establish(url).expect("replica connection");
        loop {
            let found = conn
                .batch_execute(&format!(
                    "DO $$ BEGIN PERFORM 1 / (SELECT count(*) FROM users WHERE id = {id})::int; END $$"
                ))
                .is_ok();
            if found {
                break;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the replica never got user {id}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn rename(store: &Store, id: i64, name: i64) {
    store
        .users()
        .update(id, common::rename(&name.to_string()))
        .expect("rename");
}

#[test]
fn this_stores_writes_are_never_read_back_stale_through_a_lagging_replica() {
    let _serial = serial();
    let Some(db) = common::replicated() else {
        return;
    };
    let store = larder_blog::builder(&db.primary)
        .replica(&db.lagging)
        .replica(&db.fast)
        .build()
        .expect("store with replicas");
    let ann = common::user(&store, "0");
    replicated_user(&db, ann.id);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = hammer(store.clone(), ann.id, Arc::clone(&stop));
    for round in 1..=OWN_ROUNDS {
        rename(&store, ann.id, round);
        // The list was retired by the commit: this is a load.
        assert_eq!(
            listed_name(&store, ann.id),
            round,
            "cached_value after own write"
        );
        assert_eq!(cached_name(&store, ann.id), round, "get after own write");
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("the concurrent reader failed");
    eprintln!(
        "{OWN_ROUNDS} rounds, {reads} concurrent reads: {:?}",
        store.stats().replicas
    );
}

/// Port of the server a load that holds its connection runs on; the load
/// waits for `release` before it ends, so that its connection stays taken.
fn held_load(store: &Store, release: mpsc::Receiver<()>) -> (i32, std::thread::JoinHandle<()>) {
    use std::sync::atomic::AtomicU64;
    static HELD: AtomicU64 = AtomicU64::new(0);
    let key = format!("held {}", HELD.fetch_add(1, Ordering::Relaxed));
    let (inside, port) = mpsc::channel();
    let store = store.clone();
    let load = std::thread::spawn(move || {
        let _: i32 = store
            .users()
            .cached_value(&key, &["users"], move |conn| {
                let port = larder::with_connection!(conn, |c| diesel::select(diesel::dsl::sql::<
                    diesel::sql_types::Integer,
                >(
                    "inet_server_port()"
                ))
                .get_result::<i32>(c))?;
                inside.send(port).unwrap();
                let _ = release.recv();
                Ok(port)
            })
            .expect("held load");
    });
    (port.recv().expect("the load ran"), load)
}

/// Waits until the server of `url` shows user `id` named `name`.
fn replayed_name(url: &str, id: i64, name: i64) {
    let started = Instant::now();
    let mut conn = larder::Connection::establish(url).expect("replica connection");
    loop {
        let found: Option<String> = larder::with_connection!(&mut conn, |c| users::table
            .find(id)
            .select(users::name)
            .get_result(c)
            .optional())
        .expect("a read of the user");
        if found == Some(name.to_string()) {
            return;
        }
        assert!(started.elapsed() < DEADLINE, "{url} never replayed {name}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One replica URL whose connections reach different servers: a load
/// balancer in front of replicas, or a replica's name moved to another
/// server while connections to the old one live on. A replay position read
/// on a connection to the server that keeps up says nothing of the lagging
/// one: trusted for every connection of the URL, it let a load read the
/// lagging server's old row and cache it for good.
#[test]
fn a_replica_url_whose_connections_reach_different_servers_never_serves_an_old_row() {
    let _serial = serial();
    let Some(db) = common::replicated() else {
        return;
    };
    let fast_port = server_port(&db.fast);
    // The first connection to the fast server, the second to the lagging one.
    let balancer = common::proxy::Proxy::start_between(&[&db.fast, &db.lagging]);
    let store = larder_blog::builder(&db.primary)
        .replica(&balancer.url())
        .pool_size(2)
        .build()
        .expect("store with a balanced replica");
    let ann = common::user(&store, "0");
    let mut attacks = 0;
    for round in 1..=20 {
        rename(&store, ann.id, round);
        replayed_name(&db.lagging, ann.id, round);
        // Both replica connections taken at once, each proven caught up,
        // then the fast one returned last: the next load takes it.
        let (release_a, a) = mpsc::channel();
        let (first, load_a) = held_load(&store, a);
        let (release_b, b) = mpsc::channel();
        let (second, load_b) = held_load(&store, b);
        let fast_last = if first == fast_port {
            [(release_b, load_b), (release_a, load_a)]
        } else {
            [(release_a, load_a), (release_b, load_b)]
        };
        for (release, load) in fast_last {
            release.send(()).unwrap();
            load.join().unwrap();
        }
        if ![first, second].contains(&fast_port) || first == second {
            continue; // a load went to the primary: not arranged
        }
        let name = round + 100;
        rename(&store, ann.id, name);
        replayed_name(&db.fast, ann.id, name);
        // The fast server proves itself caught up and holds on to its
        // connection; the next load can only take the lagging one.
        let (release, held) = mpsc::channel();
        let (port, load) = held_load(&store, held);
        if port == fast_port {
            attacks += 1;
            assert_eq!(cached_name(&store, ann.id), name, "get after own write");
        }
        release.send(()).unwrap();
        load.join().unwrap();
    }
    let stats = store.stats().replicas;
    eprintln!("{attacks} attacks: {stats:?}");
    assert!(attacks > 0, "never arranged: {stats:?}");
}

/// The port in a server URL.
fn server_port(url: &str) -> i32 {
    let after_host = url.rsplit_once(':').expect("a port").1;
    after_host
        .split('/')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("a numeric port")
}

#[test]
fn other_processes_writes_are_never_read_back_stale_through_a_lagging_replica() {
    let _serial = serial();
    let Some(db) = common::replicated() else {
        return;
    };
    let ann = users_on_primary(&db, &["0"])[0];
    replicated_user(&db, ann);
    let store = larder_blog::builder(&db.primary)
        .replica(&db.lagging)
        .replica(&db.fast)
        .build()
        .expect("store with replicas");
    let exe = std::env::current_exe().expect("test binary");
    let mut peer = Command::new(exe)
        .args([
            "--exact",
            "replica_peer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env("LARDER_REPLICA_PEER_URL", &db.primary)
        .env("LARDER_REPLICA_PEER_USER", ann.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the peer");
    let mut to_peer = peer.stdin.take().unwrap();
    let mut from_peer = BufReader::new(peer.stdout.take().unwrap()).lines();
    let mut wrote = |round: i64| {
        writeln!(to_peer, "{round}").unwrap();
        loop {
            let line = from_peer.next().expect("peer output").expect("read");
            if line == format!("peer: {round}") {
                return;
            }
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let reader = hammer(store.clone(), ann, Arc::clone(&stop));
    for round in 1..=PEER_ROUNDS {
        wrote(round);
        // Committed by the peer: within the staleness bound this store
        // serves it, and never goes back (the hammer checks that).
        let started = Instant::now();
        loop {
            let (cached, listed) = (cached_name(&store, ann), listed_name(&store, ann));
            if cached == round && listed == round {
                break;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "round {round}: still serving get={cached} cached_value={listed}: a stale fill"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    drop(to_peer);
    assert!(peer.wait().unwrap().success(), "the peer failed");
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("the concurrent reader failed");
    let stats = store.stats();
    eprintln!(
        "{PEER_ROUNDS} peer rounds, {reads} concurrent reads: {:?}",
        stats.replicas
    );
    eprintln!("flushes: {:?}", stats.coherence.flushes_by_reason);
}

/// The other process: renames the user to each number read from stdin and
/// says so once committed.
#[test]
#[ignore = "the peer process of a replica test, started by it"]
fn replica_peer() {
    let (Ok(url), Ok(id)) = (
        std::env::var("LARDER_REPLICA_PEER_URL"),
        std::env::var("LARDER_REPLICA_PEER_USER"),
    ) else {
        return;
    };
    let id: i64 = id.parse().unwrap();
    let store = larder_blog::builder(&url).coherence(false).build().unwrap();
    for line in std::io::stdin().lock().lines() {
        let round: i64 = line.unwrap().trim().parse().unwrap();
        rename(&store, id, round);
        println!("peer: {round}");
    }
}

/// Loads until one is served by a replica (it has caught up).
fn until_a_replica_serves(store: &Store, id: i64) {
    let started = Instant::now();
    while store.stats().replicas.replica_loads == 0 {
        assert!(
            started.elapsed() < DEADLINE * 3,
            "no replica ever served a load"
        );
        let _ = probe(store, id); // a load each time
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `cached_value` load under a key never used before: always a load,
/// without forgetting the required position as `clear_cache` would.
fn probe(store: &Store, id: i64) -> String {
    use std::sync::atomic::AtomicU64;
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let key = format!("probe {}", PROBES.fetch_add(1, Ordering::Relaxed));
    store
        .users()
        .cached_value(&key, &["users"], move |conn| {
            larder::with_connection!(conn, |c| users::table
                .find(id)
                .select(users::name)
                .get_result::<String>(c))
        })
        .expect("probe")
}

/// Every load a replica serves was checked on its own connection, once: a
/// replay position remembered from an earlier load proves nothing once the
/// server may have been promoted since (see
/// `a_replica_promoted_while_connected_is_not_read_on_its_remembered_position`).
#[test]
fn loads_go_to_a_replica_that_has_caught_up_each_after_one_position_check() {
    let _serial = serial();
    let Some(db) = common::replicated() else {
        return;
    };
    let names: Vec<String> = (0..200).map(|n| n.to_string()).collect();
    let ids = users_on_primary(&db, &names);
    // Built after the writes: its required position covers them.
    let store = larder_blog::builder(&db.primary)
        .replica(&db.lagging)
        .build()
        .unwrap();
    until_a_replica_serves(&store, ids[0]);
    let before = store.stats().replicas;
    for &id in &ids[1..] {
        let _ = cached_name(&store, id); // each a miss
    }
    let after = store.stats().replicas;
    let loads = after.replica_loads - before.replica_loads;
    let checks = after.position_checks - before.position_checks;
    eprintln!("{loads} replica loads, {checks} position checks: {after:?}");
    assert_eq!(
        loads,
        ids.len() as u64 - 1,
        "every load went to the caught-up replica"
    );
    assert_eq!(checks, loads, "one position check per replica load");
}

#[test]
fn a_replica_nobody_listens_on_is_skipped_without_errors() {
    let _serial = serial();
    let Some(db) = common::replicated() else {
        return;
    };
    let ann = users_on_primary(&db, &["7"])[0];
    let store = larder_blog::builder(&db.primary)
        .replica("postgres://postgres:s3cret@127.0.0.1:9/nothing")
        .build()
        .expect("an unreachable replica is no build error");
    for _ in 0..20 {
        assert_eq!(probe(&store, ann), "7");
    }
    let stats = store.stats().replicas;
    assert_eq!(stats.replica_loads, 0);
    assert!(stats.skipped_down >= 1, "{stats:?}");
    assert_eq!(stats.primary_loads, 20, "{stats:?}");
}

#[test]
fn a_replica_stopped_mid_load_is_skipped_and_used_again_once_back() {
    let _serial = serial();
    let Some(db) = common::replicated() else {
        return;
    };
    let ann = users_on_primary(&db, &["5"])[0];
    // No cache: every read is a load, so loads are in flight when it stops.
    let store = larder_blog::builder(&db.primary)
        .replica(&db.lagging)
        .cache_capacity(0)
        .build()
        .unwrap();
    until_a_replica_serves(&store, ann);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop) = (store.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(cached_name(&store, ann), 5, "a read failed or was wrong");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    script("replica-stop");
    let stopped = store.stats().replicas;
    std::thread::sleep(Duration::from_millis(1500));
    let while_down = store.stats().replicas;
    assert!(
        while_down.skipped_down > stopped.skipped_down,
        "{while_down:?}"
    );
    assert!(
        while_down.primary_loads > stopped.primary_loads,
        "{while_down:?}"
    );
    script("replica-start");
    let started = Instant::now();
    while store.stats().replicas.replica_loads <= while_down.replica_loads {
        assert!(
            started.elapsed() < DEADLINE * 6,
            "the replica was never used again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader
            .join()
            .expect("no read failed while the replica was down");
    }
    eprintln!("{:?}", store.stats().replicas);
}

/// Stops and removes the promoted server of `pg-replica.sh promoted-start`
/// however the test ends.
struct Promoted;

impl Drop for Promoted {
    fn drop(&mut self) {
        script("promoted-stop");
    }
}

/// A promoted replica still reports the position its recovery ended at
/// (`pg_last_wal_replay_lsn()` is NULL only on a server that never
/// recovered). Its rows are its own from then on: a store that took that
/// position for replay served a row written nowhere but there, and cached
/// it for good, since the primary never changes it.
#[test]
fn a_promoted_replica_is_not_read_however_far_it_replayed() {
    let _serial = serial();
    let Some(db) = common::replicated() else {
        return;
    };
    let ann = users_on_primary(&db, &["1"])[0];
    let promoted_url = db.fast.replace(":55434/", ":25435/");
    // Built first: its required position lies before the promoted server's
    // copy of the primary, whose recovery ends past it.
    let store = larder_blog::builder(&db.primary)
        .replica(&promoted_url)
        .build()
        .unwrap();
    let _promoted = Promoted;
    script("promoted-start");
    let mut diverged = larder::Connection::establish(&promoted_url).expect("promoted server");
    diesel::connection::SimpleConnection::batch_execute(
        &mut diverged,
        &format!("UPDATE users SET name = '666' WHERE id = {ann}"),
    )
    .expect("a promoted server takes writes");
    assert_eq!(cached_name(&store, ann), 1, "the primary's row, not its");
    let stats = store.stats().replicas;
    assert_eq!(stats.replica_loads, 0, "{stats:?}");
}

/// The URL of the replica of `pg-replica.sh standby-start`: the primary's,
/// on its port.
fn standby_url(db: &common::Replicated) -> String {
    let port = server_port(&db.primary);
    let standby = std::env::var("LARDER_PG_STANDBY_PORT").unwrap_or_else(|_| "25436".into());
    db.primary
        .replace(&format!(":{port}/"), &format!(":{standby}/"))
}

/// Stops and removes the replica of `pg-replica.sh standby-start` however
/// the test ends.
struct Standby;

impl Drop for Standby {
    fn drop(&mut self) {
        script("standby-stop");
    }
}

/// A replica promoted while this store holds a connection to it: promotion
/// ends neither the server nor its sessions, so the replay position that
/// connection remembers from before is no proof of anything afterwards.
/// Trusted without asking, it let a `get` read a row written on the
/// promoted server alone and cache it for good (the primary never changes
/// it).
#[test]
fn a_replica_promoted_while_connected_is_not_read_on_its_remembered_position() {
    let _serial = serial();
    let Some(db) = common::replicated() else {
        return;
    };
    let ann = users_on_primary(&db, &["1"])[0];
    let _standby = Standby;
    script("standby-start");
    let standby_url = standby_url(&db);
    // One connection, so the load after the promotion takes the one that
    // proved a replay position before it.
    let store = larder_blog::builder(&db.primary)
        .replica(&standby_url)
        .pool_size(1)
        .build()
        .unwrap();
    until_a_replica_serves(&store, ann);
    let mut admin = larder::Connection::establish(&standby_url).expect("the standby");
    larder::with_connection!(&mut admin, |c| diesel::select(diesel::dsl::sql::<
        diesel::sql_types::Bool,
    >("pg_promote()"))
    .get_result::<bool>(c))
    .expect("promote the standby");
    diesel::connection::SimpleConnection::batch_execute(
        &mut admin,
        &format!("UPDATE users SET name = '666' WHERE id = {ann}"),
    )
    .expect("a promoted server takes writes");
    let served = store.stats().replicas.replica_loads;
    assert_eq!(cached_name(&store, ann), 1, "the primary's row, not its");
    let stats = store.stats().replicas;
    assert_eq!(stats.replica_loads, served, "{stats:?}");
}

/// A replica promoted while a load runs on it, after the load's position
/// check: the check saw a server in recovery that had replayed enough, and
/// each statement of the load took a snapshot of its own afterwards, so a
/// statement after the promotion read a row written on the promoted server
/// alone, and the list cached it for good (the primary never changes it).
/// The same split lets a transaction-mode pooler in front of several
/// replicas run the check on one server and the load on another. The check
/// and the load now share one transaction, ended by a recovery check.
#[test]
fn a_replica_promoted_during_a_load_serves_it_nothing_written_after_its_check() {
    let _serial = serial();
    let Some(db) = common::replicated() else {
        return;
    };
    let ann = users_on_primary(&db, &["1"])[0];
    let _standby = Standby;
    script("standby-start");
    let standby_url = standby_url(&db);
    let store = larder_blog::builder(&db.primary)
        .replica(&standby_url)
        .build()
        .unwrap();
    until_a_replica_serves(&store, ann);
    let standby_port = server_port(&standby_url);
    let (inside, port) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    const KEY: &str = "name during a promotion";
    let name_of = move |conn: &mut larder::Connection| {
        larder::with_connection!(conn, |c| users::table
            .find(ann)
            .select(users::name)
            .get_result::<String>(c))
    };
    let loader = store.clone();
    let load = std::thread::spawn(move || {
        loader.users().cached_value(KEY, &["users"], move |conn| {
            let port = larder::with_connection!(conn, |c| diesel::select(diesel::dsl::sql::<
                diesel::sql_types::Integer,
            >(
                "inet_server_port()"
            ))
            .get_result::<i32>(c))?;
            inside.send(port).unwrap();
            let _ = released.recv();
            name_of(conn)
        })
    });
    if port.recv().expect("the load ran") != standby_port {
        release.send(()).unwrap();
        let _ = load.join().unwrap();
        panic!("the load went to the primary: {:?}", store.stats().replicas);
    }
    let mut admin = larder::Connection::establish(&standby_url).expect("the standby");
    larder::with_connection!(&mut admin, |c| diesel::select(diesel::dsl::sql::<
        diesel::sql_types::Bool,
    >("pg_promote()"))
    .get_result::<bool>(c))
    .expect("promote the standby");
    diesel::connection::SimpleConnection::batch_execute(
        &mut admin,
        &format!("UPDATE users SET name = '666' WHERE id = {ann}"),
    )
    .expect("a promoted server takes writes");
    release.send(()).unwrap();
    // The row the check proved, or an error: never the promoted server's.
    match load.join().unwrap() {
        Ok(served) => assert_eq!(served, "1", "the promoted server's row was served"),
        Err(err) => assert!(matches!(err, Error::ConnectionLost { .. }), "{err}"),
    }
    // Nothing of it cached: the list as the primary has it.
    let cached = store
        .users()
        .cached_value(KEY, &["users"], name_of)
        .expect("the list");
    assert_eq!(cached, "1", "the promoted server's row was cached");
}

/// A replica holds the locks it replays until it replays their release: a
/// schema change or a `LOCK TABLE` on the primary takes an ACCESS EXCLUSIVE
/// lock the standby's startup process then holds. With replay paused
/// (`pg_wal_replay_pause()`) after the lock and before its release, the
/// primary has long moved on, the replica has replayed every change this
/// store invalidated (the lock changed no row), and a load of the table
/// waited on the replica for as long as replay stayed paused: a `get` hung.
#[test]
fn a_load_blocked_by_a_lock_a_paused_replica_holds_falls_back_to_the_primary() {
    use diesel::connection::SimpleConnection;
    let _serial = serial();
    let Some(db) = common::replicated() else {
        return;
    };
    let ids = users_on_primary(&db, &["1", "2"]);
    let _standby = Standby;
    script("standby-start");
    let standby_url = standby_url(&db);
    let store = larder_blog::builder(&db.primary)
        .replica(&standby_url)
        .connection_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    until_a_replica_serves(&store, ids[0]);
    let mut standby = larder::Connection::establish(&standby_url).expect("the standby");
    let mut locker = larder::Connection::establish(&db.primary).expect("the primary");
    locker
        .batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .expect("lock on the primary");
    // Held by the standby's startup process once replayed. The lock's WAL
    // record is sent once flushed: a commit elsewhere flushes it.
    let mut flusher = larder::Connection::establish(&db.primary).expect("the primary");
    let started = Instant::now();
    loop {
        flusher
            .batch_execute("SELECT txid_current()")
            .expect("a commit that flushes the WAL");
        let replayed = standby
            .batch_execute(
                "DO $$ BEGIN PERFORM 1 / (SELECT count(*) FROM pg_locks \
                 WHERE mode = 'AccessExclusiveLock' AND relation = 'users'::regclass)::int; END $$",
            )
            .is_ok();
        if replayed {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "the lock was never replayed");
        std::thread::sleep(Duration::from_millis(10));
    }
    standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .expect("pause replay");
    locker
        .batch_execute("COMMIT")
        .expect("release on the primary");
    let (done, finished) = mpsc::channel();
    let (loader, id) = (store.clone(), ids[1]);
    std::thread::spawn(move || {
        let _ = done.send(loader.users().get(id).map(|u| u.map(|u| u.name.clone())));
    });
    let got = finished.recv_timeout(Duration::from_secs(20));
    standby
        .batch_execute("SELECT pg_wal_replay_resume()")
        .expect("resume replay");
    let got = got.expect("a get waited on a paused replica's lock");
    assert_eq!(got.expect("get").as_deref(), Some("2"));
}

#[test]
fn bad_replica_urls_are_typed_errors_without_the_password() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("r.db").display());
    let primary = "postgres://app:s3cret@127.0.0.1:1/blog";
    let cases = [
        (primary, "mysql://root:s3cret@127.0.0.1/blog"),
        (primary, "sqlite:///tmp/replica.db"),
        (primary, "postgres://"),
        (primary, "nonsense://app:s3cret@db/blog"),
        (sqlite.as_str(), "postgres://app:s3cret@127.0.0.1/blog"),
    ];
    for (primary, replica) in cases {
        let err = Store::builder(primary)
            .replica(replica)
            .build()
            .expect_err(replica);
        assert!(
            matches!(err, Error::InvalidUrl { .. } | Error::InvalidConfig { .. }),
            "{replica}: {err:?}"
        );
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains("s3cret"), "{replica}: {shown}");
        }
    }
    let builder = Store::builder(primary).replica("postgres://app:s3cret@replica/blog");
    let shown = format!("{builder:?}");
    assert!(
        shown.contains("replica/blog") && !shown.contains("s3cret"),
        "{shown}"
    );
    let err = Store::builder(&sqlite)
        .replica("postgres://app@127.0.0.1/blog")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("PostgreSQL"), "{err}");
}

/// Users named `names` written on the primary by a store of its own (no
/// watcher), before the store under test exists; their ids.
fn users_on_primary(db: &common::Replicated, names: &[impl AsRef<str>]) -> Vec<i64> {
    let setup = larder_blog::builder(&db.primary)
        .coherence(false)
        .build()
        .unwrap();
    names
        .iter()
        .map(|name| common::user(&setup, name.as_ref()).id)
        .collect()
}

/// The check proves the replay position after its statement took its
/// snapshot; only a later statement's snapshot (READ COMMITTED) is sure to
/// hold every commit up to that position. A replica whose sessions default
/// to REPEATABLE READ (`default_transaction_isolation`, set in
/// postgresql.conf, which a replica copies from its primary, or on the
/// database or role) ran the load in the check's snapshot: a commit
/// replayed between that snapshot and the position read passed the check
/// and was missing from the load, whose old row was cached for good. Here
/// the load's statement runs after a change the replica replayed once the
/// check had answered; it must see it.
#[test]
fn a_load_on_a_replica_whose_sessions_default_to_repeatable_read_reads_a_snapshot_of_its_own() {
    use diesel::connection::SimpleConnection;
    let _serial = serial();
    let Some(db) = common::replicated() else {
        return;
    };
    let ann = users_on_primary(&db, &["1"])[0];
    let mut primary = larder::Connection::establish(&db.primary).expect("the primary");
    let name: String =
        larder::with_connection!(&mut primary, |c| diesel::select(diesel::dsl::sql::<
            diesel::sql_types::Text,
        >(
            "current_database()"
        ))
        .get_result(c))
        .unwrap();
    primary
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'"
        ))
        .unwrap();
    // New sessions on the replica read the setting once it replayed.
    let started = Instant::now();
    loop {
        let mut conn = larder::Connection::establish(&db.fast).expect("the replica");
        let level: String =
            larder::with_connection!(&mut conn, |c| diesel::select(diesel::dsl::sql::<
                diesel::sql_types::Text,
            >(
                "current_setting('default_transaction_isolation')"
            ))
            .get_result(c))
            .unwrap();
        if level == "repeatable read" {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "the replica never got it");
        std::thread::sleep(Duration::from_millis(20));
    }
    let store = larder_blog::builder(&db.primary)
        .replica(&db.fast)
        .build()
        .unwrap();
    until_a_replica_serves(&store, ann);
    let before = store.stats().replicas.replica_loads;
    let (primary_url, replica_url) = (db.primary.clone(), db.fast.clone());
    let served = store
        .users()
        .cached_value("name after a replayed rename", &["users"], move |conn| {
            // After the check: a rename committed on the primary, and
            // replayed by this replica, before the load's statement.
            let mut writer = larder::Connection::establish(&primary_url).unwrap();
            writer
                .batch_execute(&format!("UPDATE users SET name = '2' WHERE id = {ann}"))
                .unwrap();
            let mut watcher = larder::Connection::establish(&replica_url).unwrap();
            let started = Instant::now();
            while larder::with_connection!(&mut watcher, |c| users::table
                .find(ann)
                .select(users::name)
                .get_result::<String>(c))
            .unwrap()
                != "2"
            {
                assert!(started.elapsed() < DEADLINE, "never replayed");
                std::thread::sleep(Duration::from_millis(10));
            }
            larder::with_connection!(conn, |c| users::table
                .find(ann)
                .select(users::name)
                .get_result::<String>(c))
        })
        .expect("the load");
    assert_eq!(
        store.stats().replicas.replica_loads,
        before + 1,
        "the load went to the replica"
    );
    assert_eq!(
        served, "2",
        "the load read the check's snapshot, older than the replica's replay"
    );
}
