//! Opening the sled store again in the same process: a handle dropped meanwhile is waited for.

use std::time::{Duration, Instant};

use super::*;

#[test]
fn a_store_opens_once_a_handle_of_this_process_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let options = SledOptions {
        secret_key: Some([7; 32]),
        ..SledOptions::default()
    };
    let first = SledStore::open(dir.path(), &options).unwrap();
    // The handle is let go while the second opening waits (sled keeps the lock that long).
    let held_for = Duration::from_millis(300);
    let holder = std::thread::spawn(move || {
        std::thread::sleep(held_for);
        drop(first);
    });
    let asked = Instant::now();
    let second = SledStore::open(dir.path(), &options);
    holder.join().unwrap();
    assert!(second.is_ok(), "{:?}", second.err());
    assert!(asked.elapsed() >= held_for / 2, "opened while still held");
}
