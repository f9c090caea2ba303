//! Micro-benchmarks of the request path's pieces, without a socket: decoding a saslauthd
//! request, the constant-time compare, and a sasldb lookup (which the daemon runs inline on
//! the reactor rather than on a thread pool; this shows why). `cargo bench`.

use std::hint::black_box;
use std::time::Instant;

use std::sync::Arc;

use saslauthd_rs::metrics::Metrics;
use saslauthd_rs::passdb::{Answer, Context, Passdb, Query, Sasldb};
use saslauthd_rs::pool::Pool;
use saslauthd_rs::protocol::saslauthd::{decode_request, encode_request};
use saslauthd_rs::sasldb::{OpenMode, Store};
use saslauthd_rs::secret::Password;
use saslauthd_rs::verdict::PassdbResult;

fn bench(name: &str, iterations: u32, mut f: impl FnMut()) {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(iterations);
    println!("{name:<48} {ns:>9.0} ns/op");
}

/// A check as the driver asks it, answered here (sasldb answers at once).
fn check(passdb: &Arc<dyn Passdb>, query: &Query<'_>, pool: &Arc<Pool>) -> PassdbResult {
    let password = Password::new(b"secret".to_vec());
    let cx = Context { cache: None, pool };
    match Arc::clone(passdb).verify(query, password, &cx) {
        Answer::Now(verdict) => verdict.unwrap(),
        Answer::Blocking(call) => call().unwrap(),
        Answer::Awaited(_) => unreachable!("sasldb never awaits"),
    }
}

fn main() {
    let wire = encode_request(b"alice", b"secret", b"smtp", b"example.org", None).unwrap();
    bench("decode_request (4 fields)", 2_000_000, || {
        black_box(decode_request(black_box(&wire)).unwrap());
    });
    let password = Password::new(b"correct horse battery staple".to_vec());
    bench("Password::matches (SHA-256 both sides)", 2_000_000, || {
        black_box(password.matches(black_box(b"correct horse battery staple")));
    });

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sasldb2");
    {
        let mut store = Store::open(&path, OpenMode::ReadWrite).unwrap();
        for i in 0..2000 {
            let user = format!("user{i}");
            store
                .set_password(user.as_bytes(), b"bulk.example", Some(b"pw"))
                .unwrap();
        }
        store
            .set_password(b"alice", b"example.org", Some(b"secret"))
            .unwrap();
    }
    let passdb: Arc<dyn Passdb> = Arc::new(Sasldb::new(&path).unwrap());
    let pool = Arc::new(Pool::new(1, Metrics::new(false).pool()));
    let peer = Default::default();
    let query = Query {
        authid: b"alice",
        realm: b"example.org",
        service: b"smtp",
        peer: &peer,
    };
    bench(
        "sasldb verify, 2001 users (poll + txn + cmp)",
        500_000,
        || {
            black_box(check(&passdb, black_box(&query), &pool));
        },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let start = Instant::now();
    let n = 100_000;
    rt.block_on(async {
        for _ in 0..n {
            let (db, pool) = (passdb.clone(), pool.clone());
            black_box(
                tokio::task::spawn_blocking(move || {
                    let peer = Default::default();
                    let q = Query {
                        authid: b"alice",
                        realm: b"example.org",
                        service: b"smtp",
                        peer: &peer,
                    };
                    check(&db, &q, &pool)
                })
                .await
                .unwrap(),
            );
        }
    });
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("{:<48} {ns:>9.0} ns/op", "the same through spawn_blocking");
}
