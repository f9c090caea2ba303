//! How libxcrypt itself scales from one thread to two on this machine, with no daemon in
//! between: the ceiling for `saslauthd-rs -a shadow -n 2` against `-n 1`. `cargo bench
//! --bench crypt_scaling`.
//!
//! `crypt_scaling THREADS SECONDS LABEL HASH`: how many times THREADS threads verify
//! `secret` against HASH in SECONDS, as one row of the compare scripts (`LABEL: N req/s`),
//! so that a run puts what the `-n` pool can hash beside what the daemon made, round for
//! round (`benches/compare-sql.sh`).

use std::time::{Duration, Instant};

use saslauthd_rs::crypt;

fn rate(stored: &str, threads: usize, run_for: Duration) -> f64 {
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let stored = stored.to_owned();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while start.elapsed() < run_for {
                    assert_eq!(crypt::verify(b"secret", &stored), Some(true));
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [threads, seconds, label, stored] = &args[..] {
        let threads: usize = threads.parse().expect("THREADS: a number");
        let seconds: f64 = seconds.parse().expect("SECONDS: a number");
        let rate = rate(stored, threads, Duration::from_secs_f64(seconds));
        println!("{label}: {rate:.0} req/s  ({threads} threads, libxcrypt alone)");
        return;
    }
    for (name, prefix) in [("yescrypt", "$y$"), ("sha512-crypt", "$6$")] {
        let stored = crypt::hash(b"secret", prefix).unwrap();
        let one = rate(&stored, 1, Duration::from_secs(3));
        let two = rate(&stored, 2, Duration::from_secs(3));
        println!(
            "{name:<14} 1 thread {one:>7.0}/s   2 threads {two:>7.0}/s   ({:.2}x)",
            two / one
        );
    }
}
