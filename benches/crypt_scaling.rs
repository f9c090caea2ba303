//! How libxcrypt itself scales from one thread to two on this machine, with no daemon in
//! between: the ceiling for `saslauthd-rs -a shadow -n 2` against `-n 1`. `cargo bench
//! --bench crypt_scaling`.

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
