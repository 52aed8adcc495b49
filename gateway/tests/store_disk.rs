//! The store on a full disk, for real: a [`SledStore`] on a 4 MiB tmpfs that a filler file fills
//! up. Appends must fail (with an error, not a panic) while the disk is full, reads must return
//! only what was stored, and once the filler is deleted the same store instance must take
//! appends again by itself (it reopens its database; see `gateway/src/store.rs`), with every
//! record stored before still there, in order, and nothing of the failed appends.
//!
//! Mounting needs root. Where `mount` is refused the test fails under `CI=true` and prints
//! `SKIPPED` otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hj212_gateway::store::{REOPEN_INTERVAL, Record, SledStore, Store};

mod common;

/// A tmpfs mounted for the test; unmounted (lazily if still busy) when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `dir`, or returns the reason it cannot.
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`mount -t tmpfs` is not permitted here ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { dir: dir.to_path_buf() })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a failed assertion left the store open): detach it now, freed once closed.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

fn record(cn: u16, i: i64) -> Record {
    let frame = format!("##0060QN={i:020};ST=32;CN={cn};PW=123456;MN=010000A8900016F000169DC0;CP=&&&&\r\n");
    Record { cn, data_time_ms: 1_767_225_600_000 + i * 60_000, written_ms: i, frame: frame.into_bytes() }
}

/// Fills the filesystem of `path`'s directory with a file at `path`, down to the last byte.
fn fill(path: &Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    for size in [block.len(), 512, 1] {
        while f.write_all(&block[..size]).is_ok() {}
    }
}

/// Every queue holds exactly `stored`, in order, and history its hourly records.
fn check(store: &SledStore, platforms: &[String], stored: &[(u64, Record)], when: &str) {
    for p in platforms {
        let queued = store.queue_range(p, 0, usize::MAX).unwrap();
        assert_eq!(queued.len(), stored.len(), "queue {p} {when}");
        assert!(queued == stored, "queue {p} {when}: records lost, reordered or failed ones kept");
        assert_eq!(store.queue_len(p), stored.len() as u64, "queue {p} length {when}");
        assert_eq!(store.last_seq(p), stored.last().map(|(s, _)| *s), "queue {p} last {when}");
    }
    let hourly: Vec<Record> = stored.iter().filter(|(_, r)| r.cn == 2061).map(|(_, r)| r.clone()).collect();
    assert!(store.history(2061, i64::MIN, i64::MAX, usize::MAX).unwrap() == hourly, "history {when}");
}

#[test]
fn a_full_disk_fails_appends_and_the_same_store_recovers_once_space_is_freed() {
    let dir = common::temp_dir("store-disk");
    let mnt = dir.join("mnt");
    let fs = match Tmpfs::mount(&mnt, "4m") {
        Ok(fs) => fs,
        Err(reason) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "cannot make a small filesystem: {reason}");
            eprintln!("SKIPPED: cannot make a small filesystem for the full-disk test: {reason}");
            return;
        }
    };
    let platforms = ["a".to_string(), "b".to_string()];
    let store = SledStore::open(&mnt.join("store"), &platforms, u64::MAX).unwrap();

    // Records stored before the disk fills up: real-time data and hourly aggregates.
    let mut stored: Vec<(u64, Record)> = Vec::new();
    for i in 0..200 {
        let r = record(if i % 10 == 0 { 2061 } else { 2011 }, i);
        stored.push((store.append(&r).unwrap(), r));
    }

    // Fill the disk, then append until sled hits ENOSPC (its first writes may still fit in
    // space it already holds).
    let filler = mnt.join("filler");
    fill(&filler);
    let mut failures = 0;
    let mut i = 200;
    while failures < 5 {
        assert!(i < 20_000, "no append failed on a full disk");
        let r = record(if i % 10 == 0 { 2061 } else { 2011 }, i);
        match store.append(&r) {
            Ok(seq) => stored.push((seq, r)),
            Err(e) => {
                failures += 1;
                eprintln!("append {i} failed as expected: {e}");
            }
        }
        i += 1;
    }
    // Reads show only what was stored. (They may fail too: sled rebalances its tree while
    // reading, and every write fails now.)
    for p in &platforms {
        match store.queue_range(p, 0, usize::MAX) {
            Ok(queued) => assert!(queued == stored, "queue {p} on the full disk: failed appends visible"),
            Err(e) => eprintln!("queue {p} cannot be read on the full disk: {e}"),
        }
    }
    // Still failing after the reopen interval while the disk is full (and not panicking).
    let until = Instant::now() + REOPEN_INTERVAL + Duration::from_millis(500);
    while Instant::now() < until {
        if let Ok(seq) = store.append(&record(2011, i)) {
            stored.push((seq, record(2011, i)));
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }

    // Space freed: the same store takes appends again, within a few reopen intervals.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + 5 * REOPEN_INTERVAL;
    let seq = loop {
        let r = record(2061, i);
        match store.append(&r) {
            Ok(seq) => {
                stored.push((seq, r));
                break seq;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "the store did not recover once space was freed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    eprintln!("appends work again (seq {seq}) after {failures}+ failures");
    for n in 0..50 {
        let r = record(2011, i + 1 + n);
        stored.push((store.append(&r).unwrap(), r));
    }

    check(&store, &platforms, &stored, "after recovering");
    // A delivered real-time record (not kept as history), then a restart: all of it was durable.
    let (delivered, r) = stored.remove(3);
    assert_eq!(r.cn, 2011);
    for p in &platforms {
        store.remove(p, delivered).unwrap();
    }
    drop(store);
    let store = SledStore::open(&mnt.join("store"), &platforms, u64::MAX).unwrap();
    check(&store, &platforms, &stored, "after a restart");
    drop(store);
    drop(fs);
    let _ = std::fs::remove_dir_all(&dir);
}
