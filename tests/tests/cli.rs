//! The `meridian` binary as a user drives it: `meridian dev`, the model CLI against it, and a
//! two-node plane from `certs`, `plane init`, `plane serve`, `plane add` and `plane status`;
//! a plane saved to a snapshot file and restored from it.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use meridian_tests::process::{Daemon, free_port, meridian, ok, refused, wait_until_succeeded};

const PATIENCE: Duration = Duration::from_secs(30);

#[test]
fn dev_serves_an_example_federation_and_keeps_state_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let addr = format!("http://{http}");
    let start = |log: &str| {
        let mut dev = Daemon::start(
            &["--data-dir", data, "dev", "--http", &http],
            &dir.path().join(log),
        );
        dev.wait_for_log("REST API", PATIENCE);
        dev
    };
    let mut dev = start("dev-1.log");
    let token_file = dir.path().join("data/admin.token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        dev.log().contains(&token),
        "the first start prints the token once"
    );

    // The admin user's password: printed once, kept 0600 beside the token.
    let password_file = dir.path().join("data/admin.password");
    let password = std::fs::read_to_string(&password_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(
        std::fs::metadata(&password_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(dev.log().contains(&password), "{}", dev.log());

    let cli = |args: &[&str]| {
        let mut all = vec!["--addr", addr.as_str(), "--data-dir", data];
        all.extend_from_slice(args);
        meridian(&all, &[])
    };
    // The web UI is on the address dev prints, beside the API: its sign-in page.
    let log = dev.log();
    assert!(log.contains(&format!("web UI    {addr}/")), "{log}");
    let page = http_get(&http, "/signin");
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("Sign in to Meridian"),
        "{page}"
    );
    // The hint dev prints works as printed: it names the address the API is really on.
    let hint = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("try: "))
        .and_then(|l| l.split("  (").next())
        .expect("dev prints a `try:` line")
        .to_owned();
    assert!(hint.contains(&format!("--addr {addr}")), "{hint}");
    let argv: Vec<&str> = hint.split_whitespace().skip(1).collect();
    // The embedded agent runs the example workflow on demand.
    let run = ok(meridian(&argv, &[])).trim().to_owned();
    assert!(run.starts_with("demo.hello@manual-"), "{run}");
    wait_until_succeeded(&cli, &run, PATIENCE);
    let logs = ok(cli(&["runs", "logs", &run]));
    assert!(logs.contains(&format!("hello from {run} in dev")), "{logs}");
    // `runs logs --follow` prints what a task writes while it runs, and ends with the run.
    let gate = dir.path().join("gate");
    let script = format!(
        "echo before; while [ ! -e {} ]; do sleep 0.05; done; echo after",
        gate.display()
    );
    ok(cli(&[
        "workflow", "create", "demo", "gated", "--shell", &script, "--env", "dev",
    ]));
    let gated = ok(cli(&["runs", "now", "demo", "gated"])).trim().to_owned();
    let mut follow = std::process::Command::new(meridian_tests::binary("meridian"))
        .args(["--addr", addr.as_str(), "--data-dir", data])
        .args(["runs", "logs", &gated, "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let next = || lines.recv_timeout(PATIENCE).expect("a line from --follow");
    assert_eq!(next(), "==> main (attempt 1) <==");
    assert_eq!(next(), "before");
    std::fs::write(&gate, "").unwrap();
    assert_eq!(next(), "after");
    assert!(follow.wait().unwrap().success());
    assert!(lines.recv().is_err(), "nothing after the run's end");
    let listed = ok(cli(&[
        "runs",
        "list",
        "--dc",
        "local",
        "--state",
        "succeeded",
    ]));
    assert!(listed.contains(&run), "{listed}");

    let envs = ok(cli(&["env", "list"]));
    assert!(
        envs.contains("\"dev\"") && envs.contains("\"local\""),
        "{envs}"
    );
    // Workflows and schedules are listed a page at a time: every page read in turn (here a
    // workflow a request), or one page and then the one after it.
    let list =
        |args: &[&str]| -> Vec<serde_json::Value> { serde_json::from_str(&ok(cli(args))).unwrap() };
    let all = list(&["workflow", "list"]);
    assert!(all.len() >= 2, "{all:?}");
    assert_eq!(list(&["workflow", "list", "--chunk-size", "1"]), all);
    assert_eq!(list(&["workflow", "list", "--limit", "1"]), all[..1]);
    let first = format!(
        "{}/{}",
        all[0]["tenant"].as_str().unwrap(),
        all[0]["name"].as_str().unwrap()
    );
    assert_eq!(
        list(&["workflow", "list", "--limit", "1", "--after", &first]),
        all[1..2]
    );
    refused(
        cli(&["dc", "list", "--limit", "1"]),
        "--limit, --after and --chunk-size: only workflows and schedules",
    );
    refused(
        cli(&["schedule", "list", "--after", "demo"]),
        "query `after`: `demo` is not `tenant/name`",
    );
    assert_eq!(
        ok(cli(&["grant", "list", "--tenant", "demo"]))
            .matches("\"dev\"")
            .count(),
        1
    );
    assert_eq!(
        ok(cli(&[
            "cluster",
            "create",
            "edge",
            "--dc",
            "local",
            "--partitions",
            "4"
        ]))
        .trim(),
        "created cluster edge"
    );
    let got: serde_json::Value =
        serde_json::from_str(&ok(cli(&["cluster", "get", "edge"]))).unwrap();
    assert_eq!(got["partitions"], 4);
    refused(
        cli(&[
            "cluster",
            "create",
            "bad",
            "--dc",
            "local",
            "--partitions",
            "0",
        ]),
        "partitions: must be between 1 and 4096",
    );
    // A cluster, data center and tenant changed in place; a cluster's partition count and
    // data center are not.
    assert_eq!(
        ok(cli(&[
            "cluster",
            "update",
            "edge",
            "--dc",
            "local",
            "--partitions",
            "4",
            "--lease-seconds",
            "75"
        ]))
        .trim(),
        "updated cluster edge"
    );
    let got: serde_json::Value =
        serde_json::from_str(&ok(cli(&["cluster", "get", "edge"]))).unwrap();
    assert_eq!(
        (got["partitions"].as_u64(), got["lease_seconds"].as_u64()),
        (Some(4), Some(75))
    );
    refused(
        cli(&[
            "cluster",
            "update",
            "edge",
            "--dc",
            "local",
            "--partitions",
            "8",
        ]),
        "partitions: fixed when the cluster was created (4)",
    );
    for noun in ["dc", "tenant"] {
        let name = if noun == "dc" { "local" } else { "demo" };
        assert_eq!(
            ok(cli(&[noun, "update", name, "--description", "changed"])).trim(),
            format!(
                "updated {} {name}",
                if noun == "dc" { "data center" } else { noun }
            )
        );
        let got: serde_json::Value = serde_json::from_str(&ok(cli(&[noun, "get", name]))).unwrap();
        assert_eq!(got["description"], "changed", "{noun} {name}");
    }
    refused(cli(&["env", "delete", "dev"]), "grant to tenant `demo`");
    refused(cli(&["grant", "get", "demo"]), "takes TENANT ENVIRONMENT");
    // Records in doubt: none on a one-agent plane; settling names what is wrong.
    assert!(ok(cli(&["in-doubt"])).starts_with("SCHEDULE\tRECORDS"));
    assert_eq!(
        ok(cli(&["in-doubt", "resolve", "--run"])).trim(),
        "nothing is in doubt"
    );
    refused(
        cli(&[
            "in-doubt",
            "resolve",
            "--mark-done",
            "--schedule",
            "nightly",
        ]),
        "is not `tenant/name`",
    );
    refused(
        cli(&["in-doubt", "resolve", "--run", "--schedule", "demo/nope"]),
        "schedule `demo/nope`",
    );
    // A grant's limit changed in place, and a limit of 0 refused naming the field.
    assert_eq!(
        ok(cli(&[
            "grant",
            "update",
            "demo",
            "dev",
            "--max-concurrent-runs",
            "4"
        ]))
        .trim(),
        "updated grant demo/dev"
    );
    let grant: serde_json::Value =
        serde_json::from_str(&ok(cli(&["grant", "get", "demo", "dev"]))).unwrap();
    assert_eq!(grant["max_concurrent_runs"], 4);
    refused(
        cli(&[
            "grant",
            "update",
            "demo",
            "dev",
            "--max-concurrent-runs",
            "0",
        ]),
        "max_concurrent_runs: must be at least 1",
    );
    assert!(
        ok(cli(&[
            "workflow", "create", "demo", "hello", "--shell", "echo hi", "--env", "dev"
        ]))
        .contains("version 2"),
        "dev applied version 1 of the example"
    );
    let create_every5 = |extra: &[&str]| {
        let mut args = vec![
            "schedule",
            "create",
            "demo",
            "every5",
            "--workflow",
            "hello",
            "--env",
            "dev",
        ];
        args.extend_from_slice(extra);
        cli(&args)
    };
    refused(
        create_every5(&["--cron", "0 */5 * * * ? *", "--time-zone", "Mars/Olympus"]),
        "time_zone",
    );
    refused(
        create_every5(&["--cron", "0 */5 * * * ?", "--catch-up", "sometimes"]),
        "catch_up",
    );
    ok(create_every5(&[
        "--cron",
        "0 */5 * * * ?",
        "--catch-up",
        "none",
    ]));
    assert!(
        ok(cli(&["schedule", "get", "demo", "every5"])).contains("\"policy\": \"none\""),
        "--catch-up none is the schedule's policy"
    );
    let audit = ok(cli(&["audit", "--limit", "3"]));
    assert!(
        audit.contains("token:admin\tcreate_schedule\tschedule demo/every5"),
        "{audit}"
    );

    // Users and scoped tokens from the CLI: a developer of demo, with a token that expires,
    // may run demo's workflow and nothing of the federation's.
    let made = ok(cli(&[
        "token",
        "create",
        "ci",
        "--role",
        "developer",
        "--tenant",
        "demo",
        "--expires-in",
        "30d",
    ]));
    let ci = made.lines().last().unwrap().trim().to_owned();
    assert!(ci.starts_with("mrd_"), "{made}");
    let as_ci = |args: &[&str]| {
        let mut all = vec!["--addr", addr.as_str()];
        all.extend_from_slice(args);
        meridian(&all, &[("MERIDIAN_TOKEN", ci.as_str())])
    };
    let me = ok(as_ci(&["whoami"]));
    assert!(
        me.contains("token ci") && me.contains("developer@demo"),
        "{me}"
    );
    ok(as_ci(&["runs", "now", "demo", "hello"]));
    refused(as_ci(&["dc", "create", "mine"]), "needs admin");
    refused(
        as_ci(&["token", "create", "root", "--role", "admin"]),
        "needs admin",
    );
    refused(
        as_ci(&[
            "user", "create", "eve", "--role", "viewer", "--tenant", "demo",
        ]),
        "owner of tenant `demo`",
    );
    let list = ok(cli(&["token", "list"]));
    assert!(list.contains("ci\tdeveloper@demo\texpires 20"), "{list}");
    let made = ok(cli(&[
        "user", "create", "alice", "--role", "viewer", "--tenant", "demo",
    ]));
    assert!(made.contains("created user alice"), "{made}");
    ok(cli(&[
        "user",
        "bind",
        "alice",
        "--role",
        "developer",
        "--tenant",
        "demo",
    ]));
    let users = ok(cli(&["user", "list"]));
    assert!(
        users.contains("alice\tdeveloper@demo,viewer@demo"),
        "{users}"
    );
    ok(cli(&[
        "user", "unbind", "alice", "--role", "viewer", "--tenant", "demo",
    ]));
    refused(
        cli(&["user", "create", "bob", "--role", "owner"]),
        "role `owner` is held for a tenant",
    );

    // A wrong token is refused before anything happens.
    let wrong = meridian(
        &["--addr", &addr, "dc", "list"],
        &[("MERIDIAN_TOKEN", "mrd_nope")],
    );
    assert_eq!(wrong.code, Some(1), "{wrong:?}");
    assert!(wrong.stderr.contains("not valid"), "{wrong:?}");

    assert_eq!(
        dev.signal("INT"),
        Some(0),
        "Ctrl-C stops cleanly:\n{}",
        dev.log()
    );
    let dev2 = start("dev-2.log");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
    assert!(
        !dev2.log().contains(&token),
        "a restart does not print the token again"
    );
    let clusters = ok(cli(&["cluster", "list"]));
    assert!(clusters.contains("\"edge\""), "{clusters}");
    assert!(ok(cli(&["schedule", "get", "demo", "every5"])).contains("0 */5 * * * ?"));
}

fn write_config(dir: &std::path::Path, n: usize, peer: u16, http: u16, hosts: &str) -> String {
    let path = dir.join(format!("plane-{n}.toml"));
    std::fs::write(
        &path,
        format!(
            "hostname = \"plane-{n}.test\"\ndata_dir = \"data-{n}\"\nlisten = \"127.0.0.1:{peer}\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n\
             [tls]\nca = \"certs/ca.pem\"\ncert = \"certs/plane-{n}.test.pem\"\nkey = \"certs/plane-{n}.test.key\"\n\
             [hosts]\n{hosts}\n[timing]\nheartbeat_ms = 100\nelection_min_ms = 300\nelection_max_ms = 600\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// Two plane nodes' configs on loopback in `dir`, with a federation CA in `dir/certs` and the
/// nodes' certificates (`plane-1.test`, `plane-2.test`).
struct TwoNodes {
    /// Node 1's and node 2's peer ports, node 1's API port.
    p1: u16,
    p2: u16,
    h1: u16,
    /// `plane-1.toml`, `plane-2.toml`.
    c1: String,
    c2: String,
}

fn two_nodes(dir: &std::path::Path) -> TwoNodes {
    let certs = dir.join("certs");
    let certs = certs.to_str().unwrap();
    ok(meridian(&["certs", "init", "--dir", certs], &[]));
    for n in 1..=2 {
        let host = format!("plane-{n}.test");
        ok(meridian(
            &[
                "certs",
                "issue",
                "--dir",
                certs,
                "--hostname",
                &host,
                "--role",
                "plane",
            ],
            &[],
        ));
    }
    let (p1, p2, h1, h2) = (free_port(), free_port(), free_port(), free_port());
    let hosts = "\"plane-1.test\" = \"127.0.0.1\"\n\"plane-2.test\" = \"127.0.0.1\"";
    TwoNodes {
        p1,
        p2,
        h1,
        c1: write_config(dir, 1, p1, h1, hosts),
        c2: write_config(dir, 2, p2, h2, hosts),
    }
}

#[test]
fn a_two_node_plane_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let TwoNodes { p2, h1, c1, c2, .. } = two_nodes(dir.path());

    // A config with a mistake is refused, naming the field, before anything starts.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&c1)
            .unwrap()
            .replace("data_dir", "datadir"),
    )
    .unwrap();
    refused(
        meridian(&["--config", bad.to_str().unwrap(), "plane", "serve"], &[]),
        "unknown field `datadir`",
    );

    let init = ok(meridian(&["--config", &c1, "plane", "init"], &[]));
    let token = init_token(&init);
    assert!(init.contains("user `admin`, password"), "{init}");
    refused(
        meridian(&["--config", &c1, "plane", "init"], &[]),
        "already part of a plane",
    );

    let mut one = Daemon::start(
        &["--config", &c1, "plane", "serve"],
        &dir.path().join("one.log"),
    );
    one.wait_for_log("serving peers", PATIENCE);
    let mut two = Daemon::start(
        &["--config", &c2, "plane", "serve"],
        &dir.path().join("two.log"),
    );
    two.wait_for_log("not part of a plane yet", PATIENCE);

    let added = ok(meridian(
        &[
            "--config",
            &c1,
            "plane",
            "add",
            &format!("plane-2.test:{p2}"),
        ],
        &[],
    ));
    assert!(added.contains("plane node plane-2.test"), "{added}");

    // Node 2 has no admin.token of its own: the token comes from the environment. Its API is
    // HTTPS, verified against the federation CA by hostname.
    let via_two = |args: &[&str]| {
        let mut all = vec!["--config", c2.as_str()];
        all.extend_from_slice(args);
        meridian(&all, &[("MERIDIAN_TOKEN", &token)])
    };
    ok(via_two(&["dc", "create", "nj"]));
    assert!(ok(meridian(&["--config", &c1, "dc", "list"], &[])).contains("\"nj\""));

    let status = ok(via_two(&["plane", "status"]));
    let rows: Vec<&str> = status.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{status}");
    assert_eq!(
        rows.iter().filter(|r| r.contains(" leader ")).count(),
        1,
        "{status}"
    );
    assert!(
        rows.iter()
            .all(|r| r.contains(" yes ") && r.ends_with("yes")),
        "{status}"
    );

    // Plain HTTP to an HTTPS API, or HTTPS without the CA, fails with a message.
    let no_ca = meridian(
        &["--addr", &format!("https://127.0.0.1:{h1}"), "dc", "list"],
        &[("MERIDIAN_TOKEN", &token)],
    );
    assert_eq!(no_ca.code, Some(1), "{no_ca:?}");
    assert!(
        no_ca.stderr.contains("is the plane running there"),
        "{no_ca:?}"
    );

    two.signal("KILL");
    let status = ok(meridian(&["--config", &c1, "plane", "status"], &[]));
    let row = status
        .lines()
        .find(|l| l.starts_with("plane-2.test"))
        .unwrap();
    assert!(row.ends_with("no") && row.contains("unknown"), "{status}");
    // Removing needs a quorum of the two-node plane: bring node 2 back first. It restarts
    // from its own files, already a member.
    let mut two = Daemon::start(
        &["--config", &c2, "plane", "serve"],
        &dir.path().join("two-again.log"),
    );
    two.wait_for_log("serving peers", PATIENCE);
    assert!(!two.log().contains("not part of a plane"), "{}", two.log());
    let removed = ok(meridian(
        &["--config", &c1, "plane", "remove", "plane-2.test"],
        &[],
    ));
    assert!(
        removed.contains("removed plane node plane-2.test"),
        "{removed}"
    );
    let status = ok(meridian(&["--config", &c1, "plane", "status"], &[]));
    assert_eq!(status.lines().count(), 2, "{status}");
    assert_eq!(two.signal("TERM"), Some(0), "{}", two.log());
    assert_eq!(one.signal("TERM"), Some(0), "{}", one.log());
}

#[test]
fn a_plane_saved_to_a_snapshot_file_and_restored_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let TwoNodes { p1, c1, c2, .. } = two_nodes(dir.path());
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (saved, exported) = (file("saved.snapshot"), file("exported.snapshot"));

    let init = ok(meridian(&["--config", &c1, "plane", "init"], &[]));
    let token = init_token(&init);
    let mut one = Daemon::start(
        &["--config", &c1, "plane", "serve"],
        &dir.path().join("one.log"),
    );
    one.wait_for_log("serving peers", PATIENCE);
    ok(meridian(&["--config", &c1, "dc", "create", "nj"], &[]));
    ok(meridian(
        &["--config", &c1, "tenant", "create", "acme"],
        &[],
    ));

    let out = ok(meridian(
        &["--config", &c1, "plane", "snapshot", "save", &saved],
        &[],
    ));
    assert!(out.starts_with(&format!("saved {saved}: index ")), "{out}");
    assert!(out.contains(" 1 tenants,"), "{out}");
    let out = ok(meridian(&["plane", "snapshot", "inspect", &saved], &[]));
    assert!(out.contains(&format!("members plane-1.test:{p1}")), "{out}");
    assert!(
        !dir.path().join("saved.part").exists(),
        "the partial download is renamed"
    );
    refused(
        meridian(&["plane", "snapshot", "inspect", &c1], &[]),
        "not a Meridian plane snapshot",
    );

    // Written after the snapshot: not in a restore of it, in a restore of an export.
    ok(meridian(&["--config", &c1, "dc", "create", "late"], &[]));
    let running = meridian(
        &["--config", &c1, "plane", "snapshot", "export", &exported],
        &[],
    );
    assert!(
        running.code == Some(1) && running.stderr.contains("stop it first"),
        "{running:?}"
    );
    assert_eq!(one.signal("TERM"), Some(0), "{}", one.log());
    let out = ok(meridian(
        &["--config", &c1, "plane", "snapshot", "export", &exported],
        &[],
    ));
    assert!(
        out.starts_with(&format!("exported {exported} from ")),
        "{out}"
    );

    // Seeding needs an empty data directory, and changes nothing when it has none.
    refused(
        meridian(&["--config", &c1, "plane", "restore", &saved], &[]),
        "already holds a plane node (raft.redb exists)",
    );
    refused(
        meridian(&["--config", &c2, "plane", "restore", &c1], &[]),
        "not a Meridian plane snapshot",
    );
    assert!(
        !dir.path().join("data-2").exists(),
        "a refused restore writes nothing"
    );
    // A model without a log (a damaged node, a restore cut short) is not overwritten, and
    // `serve` will not start from it.
    let data2 = dir.path().join("data-2");
    std::fs::create_dir_all(&data2).unwrap();
    std::fs::copy(&exported, data2.join("model.db")).unwrap();
    refused(
        meridian(&["--config", &c2, "plane", "restore", &saved], &[]),
        "already holds a plane node (model.db exists)",
    );
    assert_eq!(
        std::fs::read(data2.join("model.db")).unwrap(),
        std::fs::read(&exported).unwrap()
    );
    let serve = meridian(&["--config", &c2, "plane", "serve"], &[]);
    assert!(
        serve.code == Some(1) && serve.stderr.contains("but no Raft log (raft.redb)"),
        "{serve:?}"
    );
    std::fs::remove_dir_all(&data2).unwrap();

    let restored = ok(meridian(
        &["--config", &c2, "plane", "restore", &saved],
        &[],
    ));
    assert!(
        restored.contains("one-node plane of plane-2.test"),
        "{restored}"
    );
    let mut files: Vec<String> = std::fs::read_dir(dir.path().join("data-2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["model.db", "raft.redb"], "nothing staged is left");
    let via_two = |args: &[&str]| {
        let mut all = vec!["--config", c2.as_str()];
        all.extend_from_slice(args);
        ok(meridian(&all, &[("MERIDIAN_TOKEN", &token)]))
    };
    let mut two = Daemon::start(
        &["--config", &c2, "plane", "serve"],
        &dir.path().join("two.log"),
    );
    two.wait_for_log("serving peers", PATIENCE);
    assert!(!two.log().contains("not part of a plane"), "{}", two.log());
    until_ok(&["--config", &c2, "dc", "list"], &token);
    // The old plane's token still works: tokens are part of the state.
    let dcs = via_two(&["dc", "list"]);
    assert!(dcs.contains("\"nj\"") && !dcs.contains("\"late\""), "{dcs}");
    assert!(via_two(&["tenant", "list"]).contains("\"acme\""));
    let status = via_two(&["plane", "status"]);
    let rows: Vec<&str> = status.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{status}");
    assert!(
        rows[0].starts_with("plane-2.test") && rows[0].contains(" leader "),
        "{status}"
    );
    // It writes: the new plane's log goes on after the snapshot's entries.
    ok(meridian(
        &["--config", &c2, "dc", "create", "after"],
        &[("MERIDIAN_TOKEN", &token)],
    ));
    refused(
        meridian(&["--config", &c2, "plane", "restore", &saved], &[]),
        "already holds a plane node",
    );
    assert_eq!(two.signal("TERM"), Some(0), "{}", two.log());

    // The export holds what was written after the saved snapshot too.
    std::fs::remove_dir_all(dir.path().join("data-2")).unwrap();
    ok(meridian(
        &["--config", &c2, "plane", "restore", &exported],
        &[],
    ));
    let mut two = Daemon::start(
        &["--config", &c2, "plane", "serve"],
        &dir.path().join("two-again.log"),
    );
    two.wait_for_log("serving peers", PATIENCE);
    until_ok(&["--config", &c2, "dc", "list"], &token);
    let dcs = via_two(&["dc", "list"]);
    assert!(dcs.contains("\"nj\"") && dcs.contains("\"late\""), "{dcs}");
    assert_eq!(two.signal("TERM"), Some(0), "{}", two.log());
}

/// A plain `GET path` to `addr` (`ip:port`): the whole response, headers and body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The admin token `plane init` printed.
fn init_token(init: &str) -> String {
    init.lines()
        .map(str::trim)
        .find(|l| l.starts_with("mrd_"))
        .unwrap_or_else(|| panic!("plane init printed no token: {init}"))
        .to_owned()
}

/// Repeats `meridian ARGS` (with `token`) until it succeeds, for [`PATIENCE`].
fn until_ok(args: &[&str], token: &str) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let out = meridian(args, &[("MERIDIAN_TOKEN", token)]);
        if out.code == Some(0) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{args:?}: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issue #20, day-two CLI: `get -o yaml|json` prints documents that `apply -f FILE|DIR` and
/// `create -f` take back; `apply --dry-run` shows a diff and changes nothing; `apply` writes
/// only what differs and is idempotent; a bad document anywhere stops everything before any
/// write; `schedule update` changes only the flags given; pause, resume and re-run from the
/// CLI.
#[test]
fn documents_round_trip_through_get_and_apply() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let addr = format!("http://{http}");
    let mut dev = Daemon::start(
        &["--data-dir", data, "dev", "--http", &http],
        &dir.path().join("dev.log"),
    );
    dev.wait_for_log("REST API", PATIENCE);
    let cli = |args: &[&str]| {
        let mut all = vec!["--addr", addr.as_str(), "--data-dir", data];
        all.extend_from_slice(args);
        meridian(&all, &[])
    };
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };

    // What `get` prints is a document: its kind, none of what the plane keeps.
    let hello = ok(cli(&["get", "workflow", "demo", "hello"]));
    assert!(
        hello.starts_with("kind: workflow\ntenant: demo\nname: hello\n"),
        "{hello}"
    );
    assert!(!hello.contains("version"), "{hello}");
    let hello_yaml = file("hello.yaml", &hello);
    assert_eq!(
        ok(cli(&["apply", "-f", &hello_yaml])).trim(),
        "workflow demo/hello: unchanged\n1 document: 0 created, 0 updated, 1 unchanged"
    );
    // `create -f` takes `get`'s output, and even `workflow get`'s (its version left out).
    let as_json = file(
        "hello.json",
        &ok(cli(&["get", "workflow", "demo", "hello", "-o", "json"])),
    );
    let api_json = file("api.json", &ok(cli(&["workflow", "get", "demo", "hello"])));
    for f in [&hello_yaml, &as_json, &api_json] {
        assert_eq!(
            ok(cli(&["workflow", "create", "-f", f])).trim(),
            "workflow demo/hello unchanged (version 1)",
            "{f}"
        );
    }
    refused(
        cli(&["schedule", "create", "-f", &hello_yaml]),
        "is not `schedule`",
    );

    // A directory: a changed workflow and a new schedule in one YAML file, a tenant in TOML.
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(
        docs.join("a.yaml"),
        format!(
            "{}\n---\nkind: schedule\ntenant: demo\nname: morning\nworkflow: hello\n\
             environment: dev\nspec:\n  cron: 0 0 6 * * ?\n  time_zone: Asia/Shanghai\n",
            hello.replace("echo \"hello from", "echo \"good morning from")
        ),
    )
    .unwrap();
    std::fs::write(
        docs.join("b.toml"),
        "kind = \"tenant\"\nname = \"demo\"\ndescription = \"the example tenant\"\n",
    )
    .unwrap();
    let docs = docs.to_str().unwrap();
    let dry = ok(cli(&["apply", "-f", docs, "--dry-run"]));
    assert!(dry.contains("tenant demo: would be updated"), "{dry}");
    assert!(dry.contains("+description: the example tenant"), "{dry}");
    assert!(
        dry.contains("workflow demo/hello: would be updated"),
        "{dry}"
    );
    assert!(dry.contains("-        script: echo \"hello from"), "{dry}");
    assert!(
        dry.contains("+        script: echo \"good morning from"),
        "{dry}"
    );
    assert!(
        dry.contains("schedule demo/morning: would be created"),
        "{dry}"
    );
    assert!(dry.contains("+  cron: 0 0 6 * * ?"), "{dry}");
    assert!(
        dry.trim_end()
            .ends_with("3 documents: 1 created, 2 updated, 0 unchanged (dry run: nothing changed)"),
        "{dry}"
    );
    refused(
        cli(&["schedule", "get", "demo", "morning"]),
        "does not exist",
    );
    assert_eq!(ok(cli(&["get", "workflow", "demo", "hello"])), hello);

    // Applied in dependency order (the tenant before the schedule), then nothing left to do.
    let applied = ok(cli(&["apply", "-f", docs]));
    assert_eq!(
        applied.trim().lines().collect::<Vec<_>>(),
        [
            "tenant demo: updated",
            "workflow demo/hello: updated (version 2)",
            "schedule demo/morning: created (version 1)",
            "3 documents: 1 created, 2 updated, 0 unchanged",
        ],
        "{applied}"
    );
    assert!(ok(cli(&["apply", "-f", docs])).contains("0 created, 0 updated, 3 unchanged"));
    let listed: serde_json::Value = serde_json::from_str(&ok(cli(&[
        "get", "schedule", "--tenant", "demo", "-o", "json",
    ])))
    .unwrap();
    assert_eq!(listed[0]["kind"], "schedule");
    assert_eq!(listed[0]["spec"]["time_zone"], "Asia/Shanghai");

    // A bad document anywhere: nothing is written, the error names the file, document, field.
    let bad = file(
        "bad.yaml",
        "kind: schedule\ntenant: demo\nname: evening\nworkflow: hello\nenvironment: dev\n\
         spec:\n  cron: 0 0 18 * * ?\n---\nkind: workflow\ntenant: demo\nname: w\n\
         definition:\n  tasks:\n  - name: a\n    kind:\n      shel: {}\n",
    );
    refused(
        cli(&["apply", "-f", &bad]),
        "bad.yaml#2: definition.tasks[0].kind: unknown variant `shel`",
    );
    refused(
        cli(&["schedule", "get", "demo", "evening"]),
        "does not exist",
    );
    refused(
        cli(&["apply", "-f", &file("nokind.yaml", "name: x\n")]),
        "nokind.yaml: kind: missing (one of dc, cluster, env, tenant, grant, workflow, schedule)",
    );

    // `schedule update` with flags changes only those; `none` removes a start.
    assert_eq!(
        ok(cli(&[
            "schedule",
            "update",
            "demo",
            "morning",
            "--cron",
            "0 30 7 * * ?",
            "--start",
            "2026-01-01T00:00:00Z",
        ]))
        .trim(),
        "updated schedule demo/morning (version 2)"
    );
    let got: serde_json::Value =
        serde_json::from_str(&ok(cli(&["schedule", "get", "demo", "morning"]))).unwrap();
    assert_eq!(got["spec"]["cron"], "0 30 7 * * ?");
    assert_eq!(got["spec"]["time_zone"], "Asia/Shanghai", "kept");
    assert_eq!(got["spec"]["start"], "2026-01-01T00:00:00Z");
    assert_eq!(got["workflow"], "hello", "kept");
    ok(cli(&[
        "schedule", "update", "demo", "morning", "--start", "none",
    ]));
    let got: serde_json::Value =
        serde_json::from_str(&ok(cli(&["schedule", "get", "demo", "morning"]))).unwrap();
    assert!(got["spec"]["start"].is_null(), "{got}");
    assert_eq!(
        ok(cli(&[
            "schedule",
            "update",
            "demo",
            "morning",
            "--cron",
            "0 30 7 * * ?"
        ]))
        .trim(),
        "schedule demo/morning unchanged"
    );
    refused(
        cli(&[
            "schedule",
            "update",
            "demo",
            "morning",
            "--time-zone",
            "Mars/Olympus",
        ]),
        "spec.time_zone",
    );
    refused(
        cli(&["schedule", "update", "demo", "morning"]),
        "nothing to change",
    );

    // Pause and resume: a schedule, and the environment for a release.
    assert!(
        ok(cli(&[
            "schedule",
            "pause",
            "demo",
            "morning",
            "--reason",
            "release 4.2"
        ]))
        .starts_with("paused schedule demo/morning")
    );
    assert_eq!(
        ok(cli(&["pause", "schedule", "demo", "morning"])).trim(),
        "schedule demo/morning was paused already"
    );
    ok(cli(&["pause", "env", "dev", "--reason", "db upgrade"]));
    let paused = ok(cli(&["pauses"]));
    assert!(paused.contains("schedule demo/morning\t20"), "{paused}");
    assert!(paused.contains("\trelease 4.2"), "{paused}");
    assert!(paused.contains("environment dev\t"), "{paused}");
    assert_eq!(
        ok(cli(&[
            "schedule",
            "resume",
            "demo",
            "morning",
            "--catch-up"
        ]))
        .trim(),
        "resumed schedule demo/morning; 0 records it skipped handed to the holder to catch up"
    );
    refused(
        cli(&["schedule", "resume", "demo", "morning"]),
        "schedule demo/morning is not paused itself; it is held by the pause of environment dev",
    );
    refused(
        cli(&["pause", "workflow", "demo"]),
        "a workflow is named by TENANT NAME",
    );
    refused(
        cli(&["pause", "tenant", "nobody"]),
        "tenant `nobody` does not exist",
    );
    assert!(ok(cli(&["resume", "env", "dev"])).starts_with("resumed environment dev"));
    assert_eq!(ok(cli(&["pauses"])).trim(), "PAUSED\tSINCE\tREASON");

    // Re-run: a finished run again, one generation further; by filter only once confirmed.
    let run = ok(cli(&["runs", "now", "demo", "hello"])).trim().to_owned();
    wait_until_succeeded(&cli, &run, PATIENCE);
    refused(
        cli(&["runs", "recover", &run]),
        "recover: the run succeeded",
    );
    assert_eq!(
        ok(cli(&["runs", "rerun", &run])).trim(),
        format!("{run} -> {run}~2")
    );
    wait_until_succeeded(&cli, &format!("{run}~2"), PATIENCE);
    let detail: serde_json::Value =
        serde_json::from_str(&ok(cli(&["runs", "get", &format!("{run}~2")]))).unwrap();
    assert_eq!(
        (detail["generation"].as_u64(), detail["rerun_of"].as_str()),
        (Some(2), Some(run.as_str()))
    );
    assert_eq!(detail["requested_by"], "token:admin", "{detail}");
    let filter = ["runs", "rerun", "--tenant", "demo", "--state", "succeeded"];
    let unconfirmed = cli(&filter);
    assert!(
        unconfirmed.stderr.contains(&format!("{run}~2")),
        "{unconfirmed:?}"
    );
    refused(unconfirmed, "add --yes to go ahead");
    let mut confirmed = filter.to_vec();
    confirmed.push("--yes");
    let done = ok(cli(&confirmed));
    // Of the record's two generations, only the newest is run again.
    assert!(done.starts_with("1 run(s) matched; 1 requested"), "{done}");
    assert!(done.contains(&format!("{run}~3")), "{done}");
    refused(cli(&["runs", "rerun"]), "name the runs, or filter them");

    // Kill by filter: the runs going of a slow workflow, counted and confirmed.
    let sleepy = file(
        "sleepy.yaml",
        &hello.replace("name: hello", "name: sleepy").replace(
            "echo \"hello from $MERIDIAN_RUN_ID in $MERIDIAN_ENV\"",
            "sleep 60",
        ),
    );
    ok(cli(&["apply", "-f", &sleepy]));
    // Alerts on its kills, to a webhook nobody answers: the deliveries wait, their failed
    // attempts shown.
    let secret = file("hook.secret", "a-long-shared-secret\n");
    let made = ok(cli(&[
        "alert",
        "channel",
        "create",
        "ops",
        "--tenant",
        "demo",
        "--webhook",
        "http://127.0.0.1:9/hook",
        "--secret-file",
        &secret,
    ]));
    assert_eq!(made.trim(), "created alert channel demo/ops");
    let channels = ok(cli(&["alert", "channel", "list", "--tenant", "demo"]));
    assert!(
        channels.contains("demo\tops\twebhook\thttp://127.0.0.1:9/…\tyes"),
        "{channels}"
    );
    assert!(!channels.contains("a-long-shared-secret"), "{channels}");
    refused(
        cli(&[
            "alert",
            "rule",
            "create",
            "kills",
            "--tenant",
            "demo",
            "--on",
            "kill",
            "--channel",
            "ops",
        ]),
        "--on `kill`: want one of failed, retries_exhausted",
    );
    refused(
        cli(&[
            "alert",
            "rule",
            "create",
            "kills",
            "--tenant",
            "demo",
            "--on",
            "killed,late",
            "--channel",
            "ops",
        ]),
        "late_seconds: `late` needs it",
    );
    ok(cli(&[
        "alert",
        "rule",
        "create",
        "kills",
        "--tenant",
        "demo",
        "--workflow",
        "sleepy",
        "--on",
        "killed",
        "--channel",
        "ops",
        "--group",
        "0",
    ]));
    let rules = ok(cli(&["alert", "rule", "list", "--tenant", "demo"]));
    assert!(
        rules.contains("demo\tkills\tworkflow sleepy\tkilled\tops\t0s"),
        "{rules}"
    );
    let slow: Vec<String> = (0..2)
        .map(|_| {
            ok(cli(&["runs", "now", "demo", "sleepy"]))
                .trim()
                .to_owned()
        })
        .collect();
    let kill = ["runs", "kill", "--tenant", "demo", "--workflow", "sleepy"];
    let unconfirmed = cli(&kill);
    assert!(unconfirmed.stderr.contains(&slow[0]), "{unconfirmed:?}");
    refused(unconfirmed, "add --yes to go ahead");
    let mut confirmed = kill.to_vec();
    confirmed.push("--yes");
    let killed = ok(cli(&confirmed));
    assert!(
        killed.starts_with("2 run(s) matched; 2 told to stop"),
        "{killed}"
    );
    for run in &slow {
        let deadline = std::time::Instant::now() + PATIENCE;
        while !ok(cli(&["runs", "get", run])).contains("\"killed\"") {
            assert!(std::time::Instant::now() < deadline, "{run} was not killed");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert_eq!(
        ok(cli(&confirmed)).trim(),
        "no run going matches; nothing to do"
    );
    refused(cli(&["runs", "kill"]), "name the runs, or filter them");
    let deadline = std::time::Instant::now() + PATIENCE;
    let listed = loop {
        let listed = ok(cli(&[
            "alert",
            "deliveries",
            "--tenant",
            "demo",
            "--state",
            "pending",
        ]));
        if listed.lines().count() == 3 {
            break listed;
        }
        assert!(std::time::Instant::now() < deadline, "{listed}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for run in &slow {
        assert!(
            listed.contains(&format!("run {run} was killed")),
            "{listed}"
        );
    }
    let id = listed.lines().nth(1).unwrap().split('\t').next().unwrap();
    let delivery = ok(cli(&["alert", "delivery", id]));
    assert!(
        delivery.contains("(pending, rule kills, channel ops)"),
        "{delivery}"
    );
    assert!(delivery.contains("\tno\t"), "an attempt failed: {delivery}");
    refused(
        cli(&["alert", "channel", "delete", "ops", "--tenant", "demo"]),
        "still used by rule `kills`",
    );
    ok(cli(&[
        "alert", "rule", "delete", "kills", "--tenant", "demo",
    ]));
    ok(cli(&[
        "alert", "channel", "delete", "ops", "--tenant", "demo",
    ]));

    // A schedule starting in the past offers a backfill of what lies before its creation; the
    // backfill, followed to its end, runs those records; again, it finds nothing missing.
    let hour = |h: i64| {
        let now = chrono::Utc::now();
        let top = now - chrono::Duration::seconds(now.timestamp() % 3600);
        (top - chrono::Duration::hours(h)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let start = hour(3);
    let made = ok(cli(&[
        "schedule",
        "create",
        "demo",
        "past",
        "--workflow",
        "hello",
        "--env",
        "dev",
        "--cron",
        "0 0 * * * ?",
        "--start",
        &start,
    ]));
    let offer = format!(
        "meridian backfill create demo past --from {start} --to {}",
        hour(0)
    );
    assert!(made.contains("the 4 fire times between"), "{made}");
    assert!(made.contains(&offer), "{made}");
    refused(
        cli(&[
            "backfill",
            "create",
            "demo",
            "past",
            "--from",
            "yesterday",
            "--to",
            &start,
        ]),
        "--from `yesterday`",
    );
    let followed = cli(&[
        "backfill",
        "create",
        "demo",
        "past",
        "--from",
        &start,
        "--to",
        &hour(0),
        "--parallel",
        "2",
        "--wait",
    ]);
    let done = ok(followed.clone());
    assert!(done.contains("(done) of demo/past"), "{done}");
    assert!(
        done.contains("done 4 · running 0 · failed 0 · remaining 0"),
        "{done}"
    );
    assert!(
        followed.stderr.contains("4 records, at most 2 at once"),
        "{followed:?}"
    );
    assert!(followed.stderr.contains("running · done"), "{followed:?}");
    let id = done.split_whitespace().next().unwrap().to_owned();
    assert!(id.starts_with("demo.past@backfill-"), "{id}");
    let listed = ok(cli(&["backfill", "list", "--tenant", "demo"]));
    assert!(listed.contains(&format!("{id}\tdone\t")), "{listed}");
    assert!(listed.contains("\ttoken:admin"), "{listed}");
    refused(
        cli(&["backfill", "cancel", &id]),
        "the backfill is done already",
    );
    refused(
        cli(&[
            "backfill",
            "create",
            "demo",
            "past",
            "--from",
            &start,
            "--to",
            &hour(0),
        ]),
        "nothing to fill",
    );
    let runs = ok(cli(&["runs", "list", "--schedule", "demo.past"]));
    assert_eq!(runs.matches("succeeded").count(), 4, "{runs}");
    assert_eq!(dev.signal("INT"), Some(0), "{}", dev.log());
}
