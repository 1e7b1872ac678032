//! The `meridian-agent` executable as an operator starts it.

use std::process::Command;

use meridian_tests::binary;

fn run_with_config(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(binary("meridian-agent"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "nothing on stdout"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_config_with_an_unknown_field_is_refused_naming_it() {
    let (code, stderr) = run_with_config(
        "hostname = \"agent-1\"\ncluster = \"c\"\nplane = [\"plane-1:7443\"]\ntls = { ca = \"a\", cert = \"b\", key = \"c\" }\nhostmap = {}\n",
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("unknown field `hostmap`"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_named() {
    let out = Command::new(binary("meridian-agent"))
        .args(["--config", "/nonexistent/agent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reading agent config /nonexistent/agent.toml"),
        "{stderr}"
    );
}

#[test]
fn a_config_whose_certificate_files_are_missing_names_the_field() {
    let (code, stderr) = run_with_config(
        "hostname = \"agent-1.dc-a.example\"\ncluster = \"dc-a-main\"\nplane = [\"plane-1.dc-a.example:7443\"]\ntls = { ca = \"nope/ca.pem\", cert = \"nope/a.pem\", key = \"nope/a.key\" }\n",
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("agent config field `tls`"), "{stderr}");
    assert!(stderr.contains("nope/ca.pem"), "{stderr}");
}
