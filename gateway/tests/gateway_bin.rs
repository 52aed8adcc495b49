//! The `hj212-gateway` binary's configuration subcommands and exit codes.

use std::process::Command;

fn gateway() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hj212-gateway"));
    c.env_remove("HJ212_GATEWAY_CONFIG");
    c
}

#[test]
fn print_default_config_prints_a_file_that_check_config_accepts() {
    let out = gateway().arg("print-default-config").output().unwrap();
    assert!(out.status.success());
    let dir = std::env::temp_dir().join(format!("hj212-gw-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = gateway().arg("check-config").arg("--config").arg(&path).output().unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_config_exits_78_and_names_the_setting() {
    let dir = std::env::temp_dir().join(format!("hj212-gw-bin-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, "[acquisition]\nmin_interval_mins = 7\n").unwrap();
    let check = gateway().arg("check-config").arg("--config").arg(&path).output().unwrap();
    assert_eq!(check.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&check.stderr).contains("acquisition.min_interval_mins"));
    std::fs::write(&path, "[site]\npassword = \"x\"\n").unwrap();
    let check = gateway().arg("check-config").arg("--config").arg(&path).output().unwrap();
    assert_eq!(check.status.code(), Some(78));
    let env = gateway().arg("check-config").env("HJ212_GATEWAY_RETENTION_DAYS", "many").output().unwrap();
    assert_eq!(env.status.code(), Some(78));
    let _ = std::fs::remove_dir_all(&dir);
}
