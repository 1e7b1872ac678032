//! The resource center as a user drives it: `meridian dev` on a real S3 server (moto),
//! `meridian resources upload/ls/get/rm`, a workflow whose task declares a resource, the
//! embedded agent running it from its cache, and tenants kept apart.

use std::time::Duration;

use meridian_tests::process::{Daemon, free_port, meridian, ok, refused, wait_until_succeeded};
use meridian_tests::s3::S3Server;

const PATIENCE: Duration = Duration::from_secs(30);
const CREDENTIALS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_uploaded_by_a_tenant_reach_its_tasks_and_no_other_tenant() {
    let mut s3 = S3Server::start().await.expect("an S3 server for the tests");
    s3.create_bucket("meridian").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap().to_owned();
    let http = format!("127.0.0.1:{}", free_port());
    let addr = format!("http://{http}");
    let mut dev = Daemon::start_with_env(
        &[
            "--data-dir",
            &data,
            "dev",
            "--http",
            &http,
            "--s3-endpoint",
            &s3.endpoint,
            "--s3-bucket",
            "meridian",
        ],
        &CREDENTIALS,
        &dir.path().join("dev.log"),
    );
    dev.wait_for_log("REST API", PATIENCE);
    let cli = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["--addr", addr.as_str(), "--data-dir", data.as_str()];
        all.extend_from_slice(args);
        meridian(&all, env)
    };
    let admin = |args: &[&str]| cli(args, &[]);

    let script = dir.path().join("greet.sh");
    std::fs::write(&script, "echo \"greetings from a cached script\"\n").unwrap();
    let script = script.to_str().unwrap();
    let uploaded = ok(admin(&[
        "resources",
        "--tenant",
        "demo",
        "upload",
        script,
        "etl/greet.sh",
    ]));
    assert!(
        uploaded.contains("uploaded etl/greet.sh (38 bytes"),
        "{uploaded}"
    );
    assert_eq!(
        s3.get("meridian", "tenants/demo/etl/greet.sh")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"echo \"greetings from a cached script\"\n"[..]),
        "stored under the tenant's prefix"
    );
    // An upload is a write like any other: in the audit trail, with who made it (recorded in
    // the background, so looked for until it shows).
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let audit = ok(admin(&["audit", "--tenant", "demo", "--limit", "5"]));
        if audit.contains("token:admin\tupload_resource\tresource demo/etl/greet.sh") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{audit}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let listed = ok(admin(&["resources", "--tenant", "demo", "ls", "etl/"]));
    assert!(listed.contains(" etl/greet.sh"), "{listed}");
    assert_eq!(
        ok(admin(&[
            "resources",
            "--tenant",
            "demo",
            "get",
            "etl/greet.sh"
        ])),
        "echo \"greetings from a cached script\"\n"
    );
    let copy = dir.path().join("copy.sh");
    let saved = ok(admin(&[
        "resources",
        "--tenant",
        "demo",
        "get",
        "etl/greet.sh",
        "-o",
        copy.to_str().unwrap(),
    ]));
    assert!(saved.starts_with("38 bytes to "), "{saved}");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(script).unwrap()
    );
    refused(
        admin(&[
            "resources",
            "--tenant",
            "demo",
            "upload",
            script,
            "../x/greet.sh",
        ]),
        "`..` segment",
    );

    // A task that declares it gets it in its working directory.
    ok(admin(&[
        "workflow",
        "create",
        "demo",
        "greet",
        "--env",
        "dev",
        "--shell",
        "sh ./greet.sh",
        "--resource",
        "etl/greet.sh=greet.sh",
    ]));
    s3.reset_requests().await.unwrap();
    for _ in 0..2 {
        let run = ok(admin(&["runs", "now", "demo", "greet"]))
            .trim()
            .to_owned();
        wait_until_succeeded(&admin, &run, PATIENCE);
        let logs = ok(admin(&["runs", "logs", &run]));
        assert!(logs.contains("greetings from a cached script"), "{logs}");
    }
    assert_eq!(
        (
            s3.count("GET", "tenants/demo/etl/greet.sh").await.unwrap(),
            s3.count("HEAD", "tenants/demo/etl/greet.sh").await.unwrap()
        ),
        (1, 1),
        "the agent downloads for the first run and only checks for the second"
    );

    // Another tenant's token sees only its own tenant: demo's files are not there for it.
    ok(admin(&["tenant", "create", "media"]));
    let created = ok(admin(&[
        "token",
        "create",
        "media-ci",
        "--role",
        "developer",
        "--tenant",
        "media",
    ]));
    let secret = created.lines().last().unwrap().trim().to_owned();
    let media = |args: &[&str]| cli(args, &[("MERIDIAN_TOKEN", secret.as_str())]);
    refused(
        media(&["resources", "--tenant", "demo", "ls"]),
        "tenant `demo` does not exist",
    );
    refused(
        media(&[
            "resources",
            "--tenant",
            "demo",
            "upload",
            script,
            "etl/greet.sh",
        ]),
        "tenant `demo` does not exist",
    );
    ok(media(&[
        "resources",
        "--tenant",
        "media",
        "upload",
        script,
        "greet.sh",
    ]));
    assert_eq!(
        ok(media(&["resources", "--tenant", "media", "ls"]))
            .lines()
            .count(),
        1,
        "media sees its one file, not demo's"
    );
    refused(
        admin(&["resources", "--tenant", "nobody", "ls"]),
        "tenant `nobody` does not exist",
    );

    ok(admin(&[
        "resources",
        "--tenant",
        "demo",
        "upload",
        script,
        "etl/tmp.sh",
    ]));
    assert_eq!(
        ok(admin(&[
            "resources",
            "--tenant",
            "demo",
            "rm",
            "etl/tmp.sh"
        ]))
        .trim(),
        "deleted etl/tmp.sh"
    );
    refused(
        admin(&["resources", "--tenant", "demo", "rm", "etl/tmp.sh"]),
        "does not exist",
    );
    let left = ok(admin(&["resources", "--tenant", "demo", "ls"]));
    assert!(
        left.contains("etl/greet.sh") && !left.contains("etl/tmp.sh"),
        "{left}"
    );

    // S3 down: the agent runs with its cached copy and the attempt says so.
    let endpoint = s3.endpoint.clone();
    s3.stop();
    let run = ok(admin(&["runs", "now", "demo", "greet"]))
        .trim()
        .to_owned();
    let detail = wait_until_succeeded(&admin, &run, PATIENCE);
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    let warning = detail["attempts"][0]["warning"]
        .as_str()
        .unwrap_or_default();
    assert!(
        warning.contains("etl/greet.sh") && warning.contains(&endpoint),
        "{detail}"
    );
    let logs = ok(admin(&["runs", "logs", &run]));
    assert!(
        logs.contains("meridian: warning: resource `etl/greet.sh`")
            && logs.contains("greetings from a cached script"),
        "{logs}"
    );
    assert_eq!(dev.signal("INT"), Some(0), "{}", dev.log());
}
