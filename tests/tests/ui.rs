//! The web UI in a real browser (Debian's chromium over WebDriver), against a real plane (and a
//! real S3 API, moto, for resources): signing in and out; the cross-DC run analysis page showing
//! each viewer only what the policy lets them see; filters that live in the URL; text that
//! stays text; kill for those who may, and a forged form refused; schedules with the
//! environment picker and the live cron preview; workflows drawn and edited; resources; and
//! every page walked with every role. Each test saves screenshots of the pages it visits (the
//! README's are made with `MERIDIAN_SCREENSHOTS=docs/screenshots`).

use meridian_bucket::BucketConfig;
use meridian_domain::ManualClock;
use meridian_tests::api_plane::{ApiPlane, Cred};
use meridian_tests::browser::Browser;
use meridian_tests::process::{Daemon, free_port, meridian, ok};
use meridian_tests::s3::S3Server;
use reqwest::{Method, StatusCode};
use serde_json::json;

const PASSWORD: &str = "a long enough password";

/// `n` days before now: before every schedule the tests make, so a backfill's to run.
fn days_ago(n: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::days(n)
}

fn t0() -> chrono::DateTime<chrono::Utc> {
    // The clock the plane stamps runs with: "now", so the page's default window (the last 24
    // hours, by the plane's clock) holds them.
    chrono::Utc::now()
}

/// A plane with two tenants on two data centers, a run of each, and users.
async fn plane() -> ApiPlane {
    meridian_tests::browser::install_crypto();
    let plane = ApiPlane::start(1, ManualClock::at(t0())).await;
    plane.two_tenants().await;
    plane.run_now("ads").await;
    plane.run_now("bi").await;
    plane.user("root", &["admin"], PASSWORD).await;
    plane.user("dev", &["developer@ads"], PASSWORD).await;
    plane.user("view", &["viewer@ads"], PASSWORD).await;
    plane
}

/// The same plane with the resource center on a real S3 API (moto; kept running while the
/// server it returns lives).
async fn plane_with_bucket() -> (ApiPlane, S3Server) {
    meridian_tests::browser::install_crypto();
    let s3 = S3Server::start().await.expect("an S3 server for the tests");
    s3.create_bucket("meridian").await.unwrap();
    let bucket = BucketConfig {
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        attempts: 1,
        ..BucketConfig::new(s3.endpoint.clone(), "meridian")
    };
    let plane = ApiPlane::start_with_bucket(1, ManualClock::at(t0()), Some(bucket)).await;
    plane.two_tenants().await;
    plane.run_now("ads").await;
    plane.run_now("bi").await;
    plane.user("root", &["admin"], PASSWORD).await;
    plane.user("dev", &["developer@ads"], PASSWORD).await;
    plane.user("view", &["viewer@ads"], PASSWORD).await;
    (plane, s3)
}

/// Makes (as the admin, through the API) a thing for the administration page whose delete
/// form posts to `delete_path`: where the API shows it, and the form naming it.
async fn admin_thing(
    plane: &ApiPlane,
    delete_path: &str,
    name: &str,
) -> (String, Vec<(&'static str, String)>) {
    let kind = delete_path
        .trim_start_matches("/admin/")
        .trim_end_matches("/delete");
    let (path, body) = match kind {
        "dcs" => ("/dcs", json!({"name": name})),
        "clusters" => ("/clusters", json!({"name": name, "dc": "nj"})),
        "environments" => ("/environments", json!({"name": name, "cluster": "nj-main"})),
        "tenants" => ("/tenants", json!({"name": name})),
        _ => {
            plane
                .must(
                    Method::POST,
                    "/environments",
                    json!({"name": name, "cluster": "nj-main"}),
                )
                .await;
            plane
                .must(
                    Method::POST,
                    "/grants",
                    json!({"tenant": "bi", "environment": name}),
                )
                .await;
            return (
                format!("/grants/bi/{name}"),
                vec![("tenant", "bi".into()), ("environment", name.into())],
            );
        }
    };
    plane.must(Method::POST, path, body).await;
    (format!("{path}/{name}"), vec![("name", name.into())])
}

/// Stores `key` among `ads`'s resources, as the admin, through the API.
async fn put_resource(plane: &ApiPlane, key: &str) {
    let Cred::Token(token) = &plane.admin else {
        unreachable!()
    };
    let r = plane
        .http
        .put(format!("{}/resources/ads/{key}", plane.urls[0]))
        .bearer_auth(token)
        .body(format!("the content of {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{key}");
}

/// A `multipart/form-data` body of `fields`, `file` sent as a file part: (content type, body).
fn multipart(fields: &[(&str, String)]) -> (String, Vec<u8>) {
    const BOUNDARY: &str = "meridian-walk-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        let file = if *name == "file" {
            "; filename=\"walk.txt\"\r\nContent-Type: text/plain"
        } else {
            ""
        };
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

async fn sign_in(browser: &Browser, root: &str, user: &str) {
    sign_in_with(browser, root, user, PASSWORD).await;
}

async fn sign_in_with(browser: &Browser, root: &str, user: &str, password: &str) {
    browser.goto(&format!("{root}/signin")).await;
    browser.fill("#user", user).await;
    browser.fill("#password", password).await;
    browser.click("#signin").await;
    browser.find("#who").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_and_out() {
    let plane = plane().await;
    let root = &plane.roots[0];
    let browser = Browser::start().await;
    // Not signed in: to the sign-in page, which comes back to where it was going.
    browser.goto(&format!("{root}/runs?state=requested")).await;
    browser.find("#signin").await;
    assert_eq!(browser.url().await.path(), "/signin");
    browser.screenshot("signin").await;
    browser.fill("#user", "dev").await;
    browser.fill("#password", "not the password").await;
    browser.click("#signin").await;
    let error = browser.find("#signin-error").await.text().await.unwrap();
    assert_eq!(error, "Wrong user or password.");
    assert_eq!(browser.url().await.path(), "/signin");
    browser.screenshot("signin-failed").await;
    browser.fill("#password", PASSWORD).await;
    browser.click("#signin").await;
    let who = browser.find("#who").await.text().await.unwrap();
    assert_eq!(who, "dev");
    let url = browser.url().await;
    assert_eq!(
        (url.path(), url.query()),
        ("/runs", Some("state=requested"))
    );
    // Signed out: the session ends, and the pages want a sign-in again.
    browser.click("#signout").await;
    browser.find("#signin").await;
    browser.goto(&format!("{root}/runs")).await;
    browser.find("#signin").await;
    assert_eq!(browser.url().await.path(), "/signin");
    plane.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_viewer_sees_only_what_the_policy_lets_them() {
    let plane = plane().await;
    let root = &plane.roots[0];
    let browser = Browser::start().await;
    sign_in(&browser, root, "dev").await;
    browser.goto(&format!("{root}/runs")).await;
    browser.find("#runs").await;
    // A developer of ads: ads's runs only, and only ads and its data center to pick.
    assert_eq!(browser.texts("#runs tbody td:nth-child(4)").await, ["ads"]);
    let tenants: Vec<String> = browser.texts("#f-tenant option").await;
    assert_eq!(tenants, ["any", "ads"]);
    assert_eq!(browser.texts("#f-dc option").await, ["any", "nj"]);
    browser.screenshot("runs-developer").await;
    // Asking for bi's by URL gives nothing of bi's.
    browser.goto(&format!("{root}/runs?tenant=bi")).await;
    browser.find("#no-runs").await;
    // An admin sees both data centers' runs.
    browser.click("#signout").await;
    sign_in(&browser, root, "root").await;
    browser.goto(&format!("{root}/runs")).await;
    browser.find("#runs").await;
    let mut dcs = browser.texts("#runs tbody td:nth-child(6)").await;
    dcs.sort();
    assert_eq!(dcs, ["nj", "sg"]);
    browser.screenshot("runs").await;
    plane.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_live_in_the_url_and_survive_a_reload() {
    let plane = plane().await;
    let root = &plane.roots[0];
    let browser = Browser::start().await;
    sign_in(&browser, root, "root").await;
    browser.goto(&format!("{root}/runs")).await;
    browser.select("#f-tenant", "bi").await;
    browser.select("#f-state", "requested").await;
    browser.click("#apply").await;
    // The page the form loads, not the one it was sent from (which has `#runs` too).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let url = loop {
        let url = browser.url().await;
        if url.query().is_some_and(|q| q.contains("tenant=bi")) {
            break url;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the filtered page never loaded: {url}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    browser.find("#runs").await;
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert!(query.contains(&("tenant".into(), "bi".into())), "{url}");
    assert!(
        query.contains(&("state".into(), "requested".into())),
        "{url}"
    );
    // The same URL, loaded afresh (a bookmark, a link shared): the same view.
    browser.goto(url.as_str()).await;
    let tenant = browser.value("#f-tenant").await;
    let state = browser.value("#f-state").await;
    assert_eq!(
        (tenant.as_deref(), state.as_deref()),
        (Some("bi"), Some("requested"))
    );
    assert_eq!(browser.texts("#runs tbody td:nth-child(4)").await, ["bi"]);
    // The counts are per state for the filter.
    assert_eq!(
        browser.texts("#counts a[data-state]").await,
        ["requested 1"]
    );
    // A bad time is refused beside its field, and nothing is listed.
    browser.goto(&format!("{root}/runs?from=yesterday")).await;
    let error = browser.find("#error-from").await.text().await.unwrap();
    assert!(error.contains("`yesterday` is not a time"), "{error}");
    assert!(browser.find_all("#runs tbody tr").await.is_empty());
    plane.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_stays_text_and_pages_allow_no_inline_script() {
    let plane = plane().await;
    let root = &plane.roots[0];
    // Every page carries a CSP without inline script, and no framing.
    let page = reqwest::get(format!("{root}/signin")).await.unwrap();
    let csp = page
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let browser = Browser::start().await;
    sign_in(&browser, root, "root").await;
    // A filter value carrying markup comes back as the input's text, never as markup.
    let script = "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>";
    let url =
        reqwest::Url::parse_with_params(&format!("{root}/runs"), [("workflow", script)]).unwrap();
    browser.goto(url.as_str()).await;
    let value = browser
        .find("#f-workflow")
        .await
        .prop("value")
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some(script));
    assert_eq!(
        browser.eval("return window.pwned === undefined").await,
        json!(true)
    );
    // The same for a refused field's message, which quotes the value.
    let url = reqwest::Url::parse_with_params(&format!("{root}/runs"), [("from", script)]).unwrap();
    browser.goto(url.as_str()).await;
    let error = browser.find("#error-from").await.text().await.unwrap();
    assert!(error.contains(script), "{error}");
    assert_eq!(
        browser.eval("return window.pwned === undefined").await,
        json!(true)
    );
    // The vendored scripts load: their hashes match what the page pins.
    assert_eq!(browser.eval("return typeof htmx").await, json!("object"));
    plane.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_for_those_who_may_and_a_forged_form_refused() {
    let plane = plane().await;
    let root = &plane.roots[0];
    let browser = Browser::start().await;
    // A viewer sees no way to kill.
    sign_in(&browser, root, "view").await;
    browser.goto(&format!("{root}/runs")).await;
    browser.find("#runs").await;
    assert!(browser.find_all("#kill-selected").await.is_empty());
    assert!(browser.find_all("input[name=run]").await.is_empty());
    browser.click("#signout").await;
    // A forged form (the viewer's cookie, no CSRF token) is refused and kills nothing.
    let view = plane.sign_in(0, "view", PASSWORD).await;
    let Cred::Session { cookie, .. } = &view else {
        unreachable!()
    };
    let ads = plane.run_now("ads").await;
    let forged = reqwest::Client::new()
        .post(format!("{root}/runs/kill"))
        .header("cookie", format!("meridian_session={cookie}"))
        .form(&[("run", ads.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let (_, run) = plane
        .call(0, Method::GET, &format!("/runs/{ads}"), None)
        .await;
    assert_eq!(run["state"], "requested");
    // A developer ticks it and kills it, after saying yes.
    sign_in(&browser, root, "dev").await;
    browser.goto(&format!("{root}/runs")).await;
    browser
        .click(&format!("input[name=run][value='{ads}']"))
        .await;
    browser.screenshot("runs-kill").await;
    browser.click("#kill-selected").await;
    browser.accept_alert().await;
    let result = browser.find("#killed").await.text().await.unwrap();
    assert!(
        result.contains(&ads) && result.contains("killed"),
        "{result}"
    );
    let (_, run) = plane
        .call(0, Method::GET, &format!("/runs/{ads}"), None)
        .await;
    assert_eq!(run["state"], "killed", "{run}");
    // Issue #20: over, it is ticked again to be run again; the count is asked about first.
    browser.goto(&format!("{root}/runs")).await;
    browser
        .click(&format!("input[name=run][value='{ads}']"))
        .await;
    browser.click("#rerun-selected").await;
    browser.accept_alert().await;
    let result = browser.find("#killed").await.text().await.unwrap();
    assert!(
        result.contains(&format!("requested as {ads}~2")),
        "{result}"
    );
    let (_, again) = plane
        .call(0, Method::GET, &format!("/runs/{ads}~2"), None)
        .await;
    assert_eq!(
        (again["state"].as_str(), again["generation"].as_u64()),
        (Some("requested"), Some(2)),
        "{again}"
    );
    plane.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_is_made_on_a_granted_environment_with_its_fire_times_previewed() {
    let plane = plane().await;
    let root = &plane.roots[0];
    let browser = Browser::start().await;
    sign_in(&browser, root, "dev").await;
    browser.goto(&format!("{root}/schedules/new")).await;
    // The picker: only what was granted to the developer's tenant, with where it runs.
    assert_eq!(browser.texts("#f-tenant option").await, ["ads"]);
    assert_eq!(
        browser.texts("#f-environment option").await,
        ["prod — cluster nj-main, data center nj"]
    );
    // A bad expression: the calendar's own message, live, as it is typed.
    browser.fill("#f-name", "nightly").await;
    browser.fill("#f-cron", "0 0 25 * * ?").await;
    let live = browser.text_when("#error-cron", |t| !t.is_empty()).await;
    assert!(live.contains("hour field `25`"), "{live}");
    browser.screenshot("schedule-bad-cron").await;
    // Sent anyway: the same message beside the field, and nothing stored.
    browser.submit("#create").await;
    let beside = browser.find("#error-cron").await.text().await.unwrap();
    assert_eq!(beside, live);
    let (status, _) = plane
        .call(0, Method::GET, "/schedules/ads/nightly", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A good one in another zone: ten fire times in that zone, then the schedule.
    browser.fill("#f-cron", "0 30 2 * * ?").await;
    browser.fill("#f-time-zone", "Asia/Shanghai").await;
    let times = browser
        .text_when("#preview-times", |t| {
            t.lines().count() == 10 && t.lines().all(|t| t.ends_with("02:30:00 CST"))
        })
        .await;
    assert_eq!(times.lines().count(), 10, "{times}");
    // The error beside the field went with the bad expression.
    assert_eq!(browser.text_when("#error-cron", str::is_empty).await, "");
    // A zone that does not exist: the calendar's message beside the zone, no times.
    browser.fill("#f-time-zone", "Mars/Olympus").await;
    let zone = browser
        .text_when("#error-time-zone", |t| !t.is_empty())
        .await;
    assert!(zone.contains("Mars/Olympus"), "{zone}");
    assert!(browser.texts("#preview-times li").await.is_empty());
    browser.fill("#f-time-zone", "Asia/Shanghai").await;
    browser.text_when("#error-time-zone", str::is_empty).await;
    browser
        .text_when("#preview-times", |t| t.lines().count() == 10)
        .await;
    browser.screenshot("schedule-new").await;
    browser.submit("#create").await;
    browser.find("#schedules").await;
    assert_eq!(browser.url().await.path(), "/schedules");
    let next = browser
        .find("tr[data-schedule='ads.nightly'] td.next")
        .await
        .text()
        .await
        .unwrap();
    assert!(next.contains("02:30:00 CST"), "{next}");
    browser.screenshot("schedules").await;
    let (status, stored) = plane
        .call(0, Method::GET, "/schedules/ads/nightly", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["environment"], "prod");
    assert_eq!(stored["spec"]["time_zone"], "Asia/Shanghai");
    // Edited: what the form does not show (a start, set through the API) stays; a bad
    // expression is refused beside its field and changes nothing.
    let mut with_start = stored.clone();
    with_start["spec"]["start"] = json!("2026-01-01T00:00:00Z");
    plane
        .must(Method::PUT, "/schedules/ads/nightly", with_start)
        .await;
    browser.goto(&format!("{root}/schedules")).await;
    browser
        .click("tr[data-schedule='ads.nightly'] a.edit")
        .await;
    assert_eq!(
        browser.value("#f-cron").await.as_deref(),
        Some("0 30 2 * * ?")
    );
    assert_eq!(browser.value("#f-name").await.as_deref(), Some("nightly"));
    browser.fill("#f-cron", "0 0 25 * * ?").await;
    browser.submit("#create").await;
    let beside = browser.find("#error-cron").await.text().await.unwrap();
    assert!(beside.contains("hour field `25`"), "{beside}");
    let (_, unchanged) = plane
        .call(0, Method::GET, "/schedules/ads/nightly", None)
        .await;
    assert_eq!(unchanged["spec"]["cron"], "0 30 2 * * ?");
    browser.fill("#f-cron", "0 15 3 * * ?").await;
    browser.submit("#create").await;
    browser.find("#schedules").await;
    let (_, edited) = plane
        .call(0, Method::GET, "/schedules/ads/nightly", None)
        .await;
    assert_eq!(edited["spec"]["cron"], "0 15 3 * * ?");
    assert_eq!(edited["spec"]["time_zone"], "Asia/Shanghai");
    assert_eq!(edited["spec"]["start"], "2026-01-01T00:00:00Z", "{edited}");
    // Deleted: gone from the list and the plane.
    browser
        .click("tr[data-schedule='ads.nightly'] button.danger")
        .await;
    browser.accept_alert().await;
    browser
        .text_when("#schedules", |t| !t.contains("nightly"))
        .await;
    let (status, _) = plane
        .call(0, Method::GET, "/schedules/ads/nightly", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    plane.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_cannot_make_schedules_and_a_forged_form_stores_nothing() {
    let plane = plane().await;
    let root = &plane.roots[0];
    let browser = Browser::start().await;
    sign_in(&browser, root, "view").await;
    browser.goto(&format!("{root}/schedules")).await;
    browser.find("#schedules").await;
    assert!(browser.find_all("#new-schedule").await.is_empty());
    // The viewer sees its tenant's schedules and no other's.
    assert_eq!(
        browser.texts("#schedules tbody td:first-child").await,
        ["ads"]
    );
    browser.goto(&format!("{root}/schedules/new")).await;
    browser.find("#cannot-create").await;
    let view = plane.sign_in(0, "view", PASSWORD).await;
    let Cred::Session { cookie, csrf } = &view else {
        unreachable!()
    };
    let form = [
        ("tenant", "ads"),
        ("name", "sneaky"),
        ("workflow", "etl"),
        ("environment", "prod"),
        ("cron", "0 0 * * * ?"),
    ];
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Without the CSRF token, and with it (the viewer's own: the policy refuses).
    for with_csrf in [false, true] {
        let mut fields = form.to_vec();
        if with_csrf {
            fields.push(("csrf", csrf.as_str()));
        }
        let r = client
            .post(format!("{root}/schedules/new"))
            .header("cookie", format!("meridian_session={cookie}"))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "csrf: {with_csrf}");
    }
    let (status, _) = plane
        .call(0, Method::GET, "/schedules/ads/sneaky", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    plane.cluster.shutdown().await;
}

/// Who walks the pages in [`every_page_with_every_role`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Operator,
    Owner,
    Developer,
    Viewer,
    OtherOwner,
    OtherDeveloper,
    OtherViewer,
    /// No cookie.
    Nobody,
    /// An API token: the pages take sessions only.
    Token,
    /// The session of a user deleted since.
    DeletedUser,
}

impl Role {
    const ALL: [Role; 11] = [
        Role::Admin,
        Role::Operator,
        Role::Owner,
        Role::Developer,
        Role::Viewer,
        Role::OtherOwner,
        Role::OtherDeveloper,
        Role::OtherViewer,
        Role::Nobody,
        Role::Token,
        Role::DeletedUser,
    ];

    /// The user signed in for this role (its bindings), if it is a signed-in role.
    fn user(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Role::Admin => ("w-admin", "admin"),
            Role::Operator => ("w-operator", "operator"),
            Role::Owner => ("w-owner", "owner@ads"),
            Role::Developer => ("w-dev", "developer@ads"),
            Role::Viewer => ("w-view", "viewer@ads"),
            Role::OtherOwner => ("w-bi-owner", "owner@bi"),
            Role::OtherDeveloper => ("w-bi-dev", "developer@bi"),
            Role::OtherViewer => ("w-bi-view", "viewer@bi"),
            Role::Nobody | Role::Token | Role::DeletedUser => return None,
        })
    }

    fn other_tenant(self) -> bool {
        matches!(
            self,
            Role::OtherOwner | Role::OtherDeveloper | Role::OtherViewer
        )
    }
}

/// What a page answers a role: a status, or `SIGN_IN` (a redirect to the sign-in page).
const SIGN_IN: u16 = 1;

/// Every page (the UI's own route table) with every role, over plain HTTP: the status each
/// gets; pages of another tenant's objects answered as if they did not exist; forms without
/// the session's CSRF token refused for everyone; refused creates store nothing; and no page
/// shown to another tenant's member names `ads`'s runs or offers `ads` as a tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_with_every_role() {
    use Role::*;
    let (plane, _s3) = plane_with_bucket().await;
    let root = plane.roots[0].clone();
    let ads_run = plane.run_now("ads").await;
    for role in Role::ALL {
        if let Some((user, binding)) = role.user() {
            plane.user(user, &[binding], PASSWORD).await;
        }
    }
    plane.user("w-ghost", &["owner@ads"], PASSWORD).await;
    let ghost = plane.sign_in(0, "w-ghost", PASSWORD).await;
    plane
        .must(Method::DELETE, "/users/w-ghost", json!({}))
        .await;
    let Cred::Token(token) = plane.token("w-token", &["admin"]).await else {
        unreachable!()
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The session (cookie, CSRF token) a role calls with, fresh each time (a sign-out ends it).
    let session = async |role: Role| -> Option<(String, String)> {
        let cred = match role.user() {
            Some((user, _)) => plane.sign_in(0, user, PASSWORD).await,
            None if role == DeletedUser => ghost.clone(),
            None => return None,
        };
        let Cred::Session { cookie, csrf } = cred else {
            unreachable!()
        };
        Some((cookie, csrf))
    };
    // (statuses for Admin, Operator, Owner, Developer, Viewer, and the other tenant's three;
    // what Nobody, Token and DeletedUser get: `SIGN_IN` unless the page is public).
    let expect = |method: &str, path: &str| -> ([u16; 8], u16) {
        const PAGE: [u16; 8] = [200; 8];
        match (method, path) {
            ("get", "/") => ([303; 8], 303),
            // Signed in already: on to the runs.
            ("get", "/signin") => ([303; 8], 200),
            ("get", "/ui/static/{name}") => (PAGE, 200),
            // Signing in as w-view with the right password: to where it was going.
            ("post", "/signin") => ([303; 8], 303),
            ("post", "/signout") => ([303; 8], SIGN_IN),
            ("post", "/runs/kill") => ([200, 200, 200, 200, 403, 404, 404, 404], SIGN_IN),
            ("post", "/runs/again") => ([303, 303, 303, 303, 403, 404, 404, 404], SIGN_IN),
            ("post", "/runs/rerun") => ([303, 303, 303, 303, 403, 404, 404, 404], SIGN_IN),
            ("post", "/runs/rerun-selected") => ([200, 200, 200, 200, 403, 404, 404, 404], SIGN_IN),
            // Settling a schedule's records in doubt: whoever controls the tenant's runs.
            ("post", "/schedules/in-doubt") => ([303, 303, 303, 303, 403, 404, 404, 404], SIGN_IN),
            // Pausing and resuming a schedule: whoever controls the tenant's runs.
            ("post", "/schedules/pause") => ([303, 303, 303, 303, 403, 404, 404, 404], SIGN_IN),
            // Backfilling, pausing and cancelling one: whoever controls the tenant's runs.
            ("post", "/backfills/new" | "/backfills/control") => {
                ([303, 303, 303, 303, 403, 404, 404, 404], SIGN_IN)
            }
            // An alert channel or rule of ads's: whoever writes its definitions.
            ("post", "/alerts/channels/new" | "/alerts/rules/new" | "/alerts/delete") => {
                ([303, 403, 303, 303, 403, 404, 404, 404], SIGN_IN)
            }
            // Operations, not a tenant's: refused, not hidden.
            ("get", "/overview") => ([200, 200, 403, 403, 403, 403, 403, 403], SIGN_IN),
            ("get", "/admin") => ([303; 8], 303),
            // Users and tokens: admins, and owners for their tenants' (operators see no one).
            ("get", "/admin/users" | "/admin/tokens") => {
                ([200, 403, 200, 403, 403, 200, 403, 403], SIGN_IN)
            }
            // Made with a role in ads: the page that shows the secret once.
            ("post", "/admin/users" | "/admin/tokens") => {
                ([201, 403, 201, 403, 403, 404, 404, 404], SIGN_IN)
            }
            // On someone holding a role in ads: hidden from whoever does not own ads.
            ("post", "/admin/users/password") => {
                ([200, 404, 200, 404, 404, 404, 404, 404], SIGN_IN)
            }
            ("post", p) if p.starts_with("/admin/users/") || p.starts_with("/admin/tokens/") => {
                ([303, 404, 303, 404, 404, 404, 404, 404], SIGN_IN)
            }
            // A tenant's members read its part of the trail (the policy's `Audit` scope).
            ("get", "/admin/audit") => (PAGE, SIGN_IN),
            ("get", p) if p.starts_with("/admin/") => {
                ([200, 200, 403, 403, 403, 403, 403, 403], SIGN_IN)
            }
            ("post", p) if p.starts_with("/admin/") => {
                ([303, 403, 403, 403, 403, 403, 403, 403], SIGN_IN)
            }
            ("get", "/schedules/edit") => ([200, 403, 200, 200, 403, 404, 404, 404], SIGN_IN),
            ("post", "/schedules/edit" | "/schedules/delete") => {
                ([303, 403, 303, 303, 403, 404, 404, 404], SIGN_IN)
            }
            ("post", "/schedules/new" | "/workflows/edit" | "/resources/upload")
            | ("post", "/resources/delete") => ([303, 403, 303, 303, 403, 404, 404, 404], SIGN_IN),
            // Pages about one of `ads`'s workflows: not there for another tenant's members.
            ("get", "/workflows/{tenant}/{name}" | "/workflows/edit" | "/resources/download")
            | ("get", "/runs/{run_id}" | "/runs/{run_id}/log" | "/runs/{run_id}/log/download")
            | ("get", "/runs/{run_id}/tail") => ([200, 200, 200, 200, 200, 404, 404, 404], SIGN_IN),
            ("get", _) => (PAGE, SIGN_IN),
            route => panic!("no expectation for {route:?}: add one"),
        }
    };
    let mut wrong = Vec::new();
    let mut refused_creates = Vec::new();
    let mut refused_workflows = Vec::new();
    let (mut admin_creates, mut admin_attempts) = (Vec::new(), Vec::new());
    let (mut refused_uploads, mut refused_deletes) = (Vec::new(), Vec::new());
    let (mut principal_creates, mut principal_changes) = (Vec::new(), Vec::new());
    let (mut schedule_changes, mut infrastructure_edits) = (Vec::new(), Vec::new());
    let mut grant_changes = Vec::new();
    put_resource(&plane, "walk.txt").await;
    let mut n = 0;
    for (method, route) in meridian_plane::ui::routes() {
        let (statuses, anonymous) = expect(method, route);
        for role in Role::ALL {
            n += 1;
            let creds = session(role).await;
            let (path, form): (String, Vec<(&str, String)>) = match (method, route) {
                ("get", "/ui/static/{name}") => ("/ui/static/htmx-2.0.11.min.js".into(), vec![]),
                ("get", "/schedules/new") => ("/schedules/new?tenant=ads".into(), vec![]),
                ("get", "/schedules/edit") => {
                    ("/schedules/edit?tenant=ads&name=hourly".into(), vec![])
                }
                ("post", "/schedules/edit" | "/schedules/delete") => {
                    // A schedule of its own each time, so each refusal is seen to keep it as
                    // it was.
                    let name = format!("walk-{n}");
                    plane
                        .must(
                            Method::POST,
                            "/schedules",
                            json!({"tenant": "ads", "name": name, "workflow": "etl",
                                   "environment": "prod", "spec": {"cron": "0 0 * * * ?"}}),
                        )
                        .await;
                    schedule_changes.push((role, route, name.clone()));
                    let mut form = vec![("tenant", "ads".into()), ("name", name)];
                    if route == "/schedules/edit" {
                        form.extend([
                            ("workflow", "etl".into()),
                            ("environment", "prod".into()),
                            ("cron", "0 30 * * * ?".into()),
                        ]);
                    }
                    (route.into(), form)
                }
                ("get", "/workflows/{tenant}/{name}") => ("/workflows/ads/etl".into(), vec![]),
                ("get", "/workflows/edit") => {
                    ("/workflows/edit?tenant=ads&name=etl".into(), vec![])
                }
                ("get", "/resources") => ("/resources?tenant=ads".into(), vec![]),
                ("get", "/resources/download") => {
                    ("/resources/download?tenant=ads&key=walk.txt".into(), vec![])
                }
                ("post", "/resources/upload") => {
                    let key = format!("up/walk-{n}.txt");
                    refused_uploads.push((role, key.clone()));
                    (
                        route.into(),
                        vec![
                            ("tenant", "ads".into()),
                            ("key", key),
                            ("file", "uploaded by the walk".into()),
                        ],
                    )
                }
                ("post", "/resources/delete") => {
                    // A file of its own for each attempt, so each refusal is seen to keep it.
                    let key = format!("del/walk-{n}.txt");
                    put_resource(&plane, &key).await;
                    refused_deletes.push((role, key.clone()));
                    (route.into(), vec![("tenant", "ads".into()), ("key", key)])
                }
                ("post", "/admin/grants/update") => {
                    // A grant of its own each time, so each refusal is seen to keep its limit.
                    let made =
                        admin_thing(&plane, "/admin/grants/delete", &format!("lim-{n}")).await;
                    grant_changes.push((role, made.0.clone()));
                    let mut form = made.1;
                    form.push(("max_concurrent_runs", "7".into()));
                    (route.into(), form)
                }
                ("get", p) if p.starts_with("/admin/") && p.ends_with("/edit") => {
                    let name = match p {
                        "/admin/dcs/edit" => "nj",
                        "/admin/clusters/edit" => "nj-main",
                        "/admin/environments/edit" => "prod",
                        _ => "ads",
                    };
                    (format!("{p}?name={name}"), vec![])
                }
                ("post", p) if p.starts_with("/admin/") && p.ends_with("/edit") => {
                    // One of its own each time, so each refusal is seen to keep it as it was.
                    let name = format!("walk-{n}");
                    let (api, made, edited) = match p {
                        "/admin/dcs/edit" => (
                            "/dcs",
                            json!({"name": name}),
                            json!({"name": name, "description": "walked"}),
                        ),
                        "/admin/clusters/edit" => (
                            "/clusters",
                            json!({"name": name, "dc": "nj"}),
                            json!({"name": name, "dc": "nj", "lease_seconds": 77}),
                        ),
                        "/admin/environments/edit" => (
                            "/environments",
                            json!({"name": name, "cluster": "nj-main"}),
                            json!({"name": name, "cluster": "nj-main", "vars": {"WALK": "1"}}),
                        ),
                        _ => (
                            "/tenants",
                            json!({"name": name}),
                            json!({"name": name, "description": "walked"}),
                        ),
                    };
                    plane.must(Method::POST, api, made).await;
                    infrastructure_edits.push((role, format!("{api}/{name}"), edited.clone()));
                    (
                        route.into(),
                        vec![
                            ("name", name),
                            ("format", "json".into()),
                            ("document", edited.to_string()),
                        ],
                    )
                }
                ("post", "/admin/users" | "/admin/tokens") => {
                    let name = format!("walk-{n}");
                    let kind = route.trim_start_matches("/admin/");
                    principal_creates.push((role, format!("/{kind}/{name}")));
                    (
                        route.into(),
                        vec![
                            ("name", name),
                            ("role", "developer".into()),
                            ("tenant", "ads".into()),
                        ],
                    )
                }
                ("post", p)
                    if p.starts_with("/admin/users/") || p.starts_with("/admin/tokens/") =>
                {
                    // Someone of its own each time, holding a role in ads (and one to give).
                    let name = format!("walk-{n}");
                    let bindings = ["developer@ads", "viewer@ads"];
                    let mut form = vec![("name", name.clone())];
                    if p.starts_with("/admin/tokens/") {
                        plane.token(&name, &bindings).await;
                    } else {
                        plane.user(&name, &bindings[..1], PASSWORD).await;
                        if p.ends_with("/unbind") {
                            plane
                                .must(
                                    Method::POST,
                                    &format!("/users/{name}/bindings"),
                                    json!({"role": "viewer", "tenant": "ads"}),
                                )
                                .await;
                            form.push(("binding", "viewer@ads".into()));
                        }
                        if p.ends_with("/bind") {
                            form.extend([("role", "viewer".into()), ("tenant", "ads".into())]);
                        }
                    }
                    principal_changes.push((role, p, name));
                    (route.into(), form)
                }
                ("post", p) if p.starts_with("/admin/") && p.ends_with("/delete") => {
                    // Something of its own to delete each time, so each refusal is seen to keep it.
                    let made = admin_thing(&plane, p, &format!("del-{n}")).await;
                    admin_attempts.push((role, made.0.clone()));
                    (route.into(), made.1)
                }
                ("post", p) if p.starts_with("/admin/") => {
                    let name = format!("walk-{n}");
                    let mut form = vec![("name", name.clone())];
                    let check = match p {
                        "/admin/dcs" => format!("/dcs/{name}"),
                        "/admin/tenants" => format!("/tenants/{name}"),
                        "/admin/clusters" => {
                            form.push(("dc", "nj".into()));
                            format!("/clusters/{name}")
                        }
                        "/admin/environments" => {
                            form.push(("cluster", "nj-main".into()));
                            format!("/environments/{name}")
                        }
                        _ => {
                            plane
                                .must(
                                    Method::POST,
                                    "/environments",
                                    json!({"name": name, "cluster": "nj-main"}),
                                )
                                .await;
                            form = vec![("tenant", "bi".into()), ("environment", name.clone())];
                            format!("/grants/bi/{name}")
                        }
                    };
                    admin_creates.push((role, check));
                    (route.into(), form)
                }
                ("post", "/workflows/edit") => {
                    let name = format!("walk-{n}");
                    refused_workflows.push((role, name.clone()));
                    let document = json!({"tenant": "ads", "name": name, "definition":
                        {"tasks": [{"name": "main", "kind": {"noop": {}}}]}});
                    (
                        route.into(),
                        vec![
                            ("format", "json".into()),
                            ("document", document.to_string()),
                        ],
                    )
                }
                ("get", "/schedules/preview") => {
                    ("/schedules/preview?cron=0+0+*+*+*+%3F".into(), vec![])
                }
                ("post", "/signin") => (
                    route.into(),
                    vec![
                        ("user", "w-view".into()),
                        ("password", PASSWORD.into()),
                        ("next", "/runs".into()),
                    ],
                ),
                ("post", "/runs/kill") => (route.into(), vec![("run", plane.run_now("ads").await)]),
                ("post", "/runs/again") => (route.into(), vec![("run", ads_run.clone())]),
                ("post", "/runs/rerun-selected") => {
                    let id = plane.run_now("ads").await;
                    plane
                        .must(Method::POST, &format!("/runs/{id}/kill"), json!({}))
                        .await;
                    (route.into(), vec![("run", id)])
                }
                ("post", "/runs/rerun") => {
                    // A run of ads's killed before an agent took it: finished, so it may run
                    // again.
                    let id = plane.run_now("ads").await;
                    plane
                        .must(Method::POST, &format!("/runs/{id}/kill"), json!({}))
                        .await;
                    (route.into(), vec![("run", id)])
                }
                ("post", "/schedules/pause") => (
                    route.into(),
                    vec![
                        ("tenant", "ads".into()),
                        ("name", "hourly".into()),
                        ("action", "pause".into()),
                        ("reason", format!("walk {n}")),
                    ],
                ),
                ("post", "/backfills/new") => (
                    route.into(),
                    vec![
                        ("schedule", "ads/hourly".into()),
                        ("from", days_ago(3).format("%Y-%m-%d").to_string()),
                        ("to", days_ago(2).format("%Y-%m-%d").to_string()),
                        ("parallel", "2".into()),
                    ],
                ),
                ("post", "/backfills/control") => {
                    let made = plane
                        .must(
                            Method::POST,
                            "/backfills",
                            json!({"tenant": "ads", "schedule": "hourly",
                                   "from": days_ago(3), "to": days_ago(2)}),
                        )
                        .await;
                    let id = made["detail"]["id"].as_str().unwrap().to_owned();
                    (route.into(), vec![("id", id), ("action", "cancel".into())])
                }
                ("post", "/alerts/channels/new") => (
                    route.into(),
                    vec![
                        ("tenant", "ads".into()),
                        ("name", format!("walk-ch-{n}")),
                        ("type", "webhook".into()),
                        ("url", "http://127.0.0.1:9/hook".into()),
                    ],
                ),
                ("post", "/alerts/rules/new" | "/alerts/delete") => {
                    let channel = format!("walk-rc-{n}");
                    plane
                        .must(
                            Method::POST,
                            "/alerts/channels",
                            json!({"tenant": "ads", "name": channel, "type": "webhook",
                                   "url": "http://127.0.0.1:9/hook"}),
                        )
                        .await;
                    let form = if route == "/alerts/delete" {
                        vec![
                            ("kind", "channel".into()),
                            ("tenant", "ads".into()),
                            ("name", channel),
                        ]
                    } else {
                        vec![
                            ("tenant", "ads".into()),
                            ("name", format!("walk-rule-{n}")),
                            ("on", "failed".into()),
                            ("on", "killed".into()),
                            ("channels", channel),
                        ]
                    };
                    (route.into(), form)
                }
                ("post", "/schedules/in-doubt") => (
                    route.into(),
                    vec![
                        ("tenant", "ads".into()),
                        ("name", "hourly".into()),
                        ("resolution", "mark_done".into()),
                    ],
                ),
                ("get", "/runs/{run_id}") => (format!("/runs/{ads_run}"), vec![]),
                ("get", "/runs/{run_id}/tail") => (format!("/runs/{ads_run}/tail"), vec![]),
                ("get", "/runs/{run_id}/log") => {
                    (format!("/runs/{ads_run}/log?task=main&attempt=1"), vec![])
                }
                ("get", "/runs/{run_id}/log/download") => (
                    format!("/runs/{ads_run}/log/download?task=main&attempt=1"),
                    vec![],
                ),
                ("post", "/schedules/new") => {
                    let name = format!("walk-{n}");
                    refused_creates.push((role, name.clone()));
                    (
                        route.into(),
                        vec![
                            ("tenant", "ads".into()),
                            ("name", name),
                            ("workflow", "etl".into()),
                            ("environment", "prod".into()),
                            ("cron", "0 0 * * * ?".into()),
                        ],
                    )
                }
                _ => (route.into(), vec![]),
            };
            let send = |with_csrf: bool| {
                let mut req = client.request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    format!("{root}{path}"),
                );
                let mut form = form.clone();
                if let Some((cookie, csrf)) = &creds {
                    req = req.header("cookie", format!("meridian_session={cookie}"));
                    if with_csrf {
                        // First: a multipart form is read in order, the token before the file.
                        form.insert(0, ("csrf", csrf.clone()));
                    }
                }
                if role == Token {
                    req = req.bearer_auth(&token);
                }
                if route == "/resources/upload" {
                    let (content_type, body) = multipart(&form);
                    req = req.header("content-type", content_type).body(body);
                } else if method == "post" {
                    req = req.form(&form);
                }
                req.send()
            };
            // A form without the session's CSRF token: refused before anything else.
            if method == "post" && route != "/signin" && creds.is_some() && role != DeletedUser {
                let r = send(false).await.unwrap();
                if r.status() != StatusCode::FORBIDDEN {
                    wrong.push(format!(
                        "{method} {path} as {role:?} without CSRF: {}",
                        r.status()
                    ));
                }
            }
            let r = send(true).await.unwrap();
            let status = r.status().as_u16();
            let location = r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned())
                .unwrap_or_default();
            // A live tail that was let in goes on until its run ends: its status is the answer.
            let body = if route.ends_with("/tail") && status == 200 {
                assert_eq!(
                    r.headers()["content-type"],
                    "text/event-stream",
                    "{path} as {role:?}"
                );
                String::new()
            } else {
                r.text().await.unwrap()
            };
            let index = Role::ALL.iter().position(|r| *r == role).unwrap();
            let want = statuses.get(index).copied().unwrap_or(anonymous);
            let got = if status == 303 && location.starts_with("/signin") && want == SIGN_IN {
                SIGN_IN
            } else {
                status
            };
            if got != want {
                wrong.push(format!(
                    "{method} {path} as {role:?}: {status} {location} (want {want})"
                ));
            }
            if role.other_tenant()
                && [ads_run.as_str(), "value=\"ads\"", ">ads<"]
                    .iter()
                    .any(|leak| body.contains(leak))
            {
                wrong.push(format!("{method} {path} as {role:?} shows tenant ads's"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers of {n}:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // The schedules the walk asked for exist exactly where the policy allowed them.
    for (role, name) in refused_creates {
        let (status, _) = plane
            .call(0, Method::GET, &format!("/schedules/ads/{name}"), None)
            .await;
        let made = matches!(role, Admin | Owner | Developer);
        assert_eq!(status.is_success(), made, "{name} as {role:?}: {status}");
    }
    let exists = async |key: &str| {
        let (status, _) = plane
            .call(0, Method::GET, &format!("/resources/ads/{key}"), None)
            .await;
        status.is_success()
    };
    for (role, key) in refused_uploads {
        let made = matches!(role, Admin | Owner | Developer);
        assert_eq!(exists(&key).await, made, "{key} as {role:?}");
    }
    for (role, key) in refused_deletes {
        let deleted = matches!(role, Admin | Owner | Developer);
        assert_eq!(exists(&key).await, !deleted, "{key} as {role:?}");
    }
    for (role, check) in admin_creates {
        let (status, _) = plane.call(0, Method::GET, &check, None).await;
        assert_eq!(
            status.is_success(),
            role == Admin,
            "{check} as {role:?}: {status}"
        );
    }
    for (role, check) in admin_attempts {
        let (status, _) = plane.call(0, Method::GET, &check, None).await;
        assert_eq!(
            status.is_success(),
            role != Admin,
            "{check} as {role:?}: {status}"
        );
    }
    // Grants' limits: changed by admins only.
    for (role, check) in grant_changes {
        let (_, grant) = plane.call(0, Method::GET, &check, None).await;
        let changed = grant["max_concurrent_runs"] == 7;
        assert_eq!(changed, role == Admin, "{check} as {role:?}: {grant}");
    }
    // Environments: edited by admins only.
    // Data centers, clusters, environments and tenants: edited by admins only.
    for (role, path, edited) in infrastructure_edits {
        let (_, stored) = plane.call(0, Method::GET, &path, None).await;
        let changed = edited
            .as_object()
            .unwrap()
            .iter()
            .all(|(field, value)| &stored[field] == value);
        assert_eq!(changed, role == Admin, "{path} as {role:?}: {stored}");
    }
    // Schedules: changed and deleted exactly where the policy allowed it.
    for (role, route, name) in schedule_changes {
        let (status, found) = plane
            .call(0, Method::GET, &format!("/schedules/ads/{name}"), None)
            .await;
        let changed = if route == "/schedules/delete" {
            status == StatusCode::NOT_FOUND
        } else {
            found["spec"]["cron"] == "0 30 * * * ?"
        };
        let may = matches!(role, Admin | Owner | Developer);
        assert_eq!(changed, may, "{route} {name} as {role:?}: {found}");
    }
    // Users and tokens: made and changed exactly where the policy allowed it.
    let (_, tokens) = plane.call(0, Method::GET, "/tokens", None).await;
    for (role, check) in principal_creates {
        let found = match check.strip_prefix("/tokens/") {
            Some(name) => tokens.as_array().unwrap().iter().any(|t| t["name"] == name),
            None => plane
                .call(0, Method::GET, &check, None)
                .await
                .0
                .is_success(),
        };
        let made = matches!(role, Admin | Owner);
        assert_eq!(found, made, "{check} as {role:?}");
    }
    for (role, route, name) in principal_changes {
        let may = matches!(role, Admin | Owner);
        let (path, key) = if route.starts_with("/admin/tokens/") {
            ("/tokens".to_owned(), name.clone())
        } else {
            (format!("/users/{name}"), name.clone())
        };
        let (status, found) = plane.call(0, Method::GET, &path, None).await;
        let found = if route.starts_with("/admin/tokens/") {
            found
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == key.as_str())
                .cloned()
                .unwrap_or(json!(null))
        } else {
            found
        };
        let roles = found["bindings"].as_array().map_or(0, Vec::len);
        let changed = match route {
            "/admin/users/delete" | "/admin/tokens/delete" => {
                !status.is_success() || found.is_null()
            }
            "/admin/users/bind" => roles == 2,
            "/admin/users/unbind" => roles == 1,
            // A new password ends the old one.
            _ => {
                let r = plane
                    .call_as(
                        &Cred::Nobody,
                        0,
                        Method::POST,
                        "/session",
                        Some(json!({"user": name, "password": PASSWORD})),
                    )
                    .await;
                r.status != StatusCode::CREATED
            }
        };
        assert_eq!(changed, may, "{route} on {name} as {role:?}: {found}");
    }
    for (role, name) in refused_workflows {
        let (status, _) = plane
            .call(0, Method::GET, &format!("/workflows/ads/{name}"), None)
            .await;
        let made = matches!(role, Admin | Owner | Developer);
        assert_eq!(status.is_success(), made, "{name} as {role:?}: {status}");
    }
    plane.cluster.shutdown().await;
}

/// The pipeline the editor test saves, as TOML; `lod` is the typo it fixes.
const PIPELINE: &str = r#"tenant = "ads"
name = "pipeline"
environment = "prod"

[[definition.tasks]]
name = "extract"
kind = { shell = { script = "echo extract" } }

[[definition.tasks]]
name = "clean"
depends_on = ["extract"]
kind = { noop = {} }

[[definition.tasks]]
name = "load"
depends_on = ["clean"]
kind = { http = { method = "POST", url = "http://127.0.0.1:9/load" } }

[[definition.tasks]]
name = "report"
depends_on = ["lod", "extract"]
kind = { shell = { script = "echo report" } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_are_drawn_as_dags_and_edited_as_toml_or_json_checked_as_they_are_saved() {
    let plane = plane().await;
    let root = &plane.roots[0];
    let browser = Browser::start().await;
    sign_in(&browser, root, "dev").await;
    browser.goto(&format!("{root}/workflows")).await;
    // Only the developer's tenant's workflows.
    assert_eq!(
        browser.texts("#workflows tbody td:first-child").await,
        ["ads"]
    );
    // A new one, as TOML, with a dependency on a task that does not exist: the server's own
    // message beside the document, the document as typed, nothing stored.
    browser.click("#new-workflow").await;
    browser.click("#format-toml").await;
    let starter = browser.value("#f-document").await.unwrap();
    assert!(starter.contains("tenant = \"ads\""), "{starter}");
    browser.fill("#f-document", PIPELINE).await;
    browser.submit("#save").await;
    let error = browser.find("#error-document").await.text().await.unwrap();
    assert_eq!(
        error,
        "definition: tasks.report.depends_on: `lod` is not a task of this workflow"
    );
    assert!(
        browser
            .value("#f-document")
            .await
            .unwrap()
            .contains("\"lod\"")
    );
    let (status, _) = plane
        .call(0, Method::GET, "/workflows/ads/pipeline", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    browser.screenshot("workflow-error").await;
    // Fixed: saved as version 1 and drawn: four tasks with their kinds, four edges.
    browser
        .fill("#f-document", &PIPELINE.replace("\"lod\"", "\"load\""))
        .await;
    browser.submit("#save").await;
    assert_eq!(browser.url().await.path(), "/workflows/ads/pipeline");
    let drawn = |css: &'static str| browser.texts(css);
    assert_eq!(
        drawn("#about").await[0].split(" ·").next(),
        Some("Version 1")
    );
    let mut tasks = Vec::new();
    for g in browser.find_all("#dag g.task").await {
        let name = g.attr("data-task").await.unwrap().unwrap();
        let kind = g.find(thirtyfour::By::Css("text.kind")).await.unwrap();
        tasks.push(format!("{name}:{}", kind.text().await.unwrap()));
    }
    tasks.sort();
    assert_eq!(
        tasks,
        ["clean:noop", "extract:shell", "load:http", "report:shell"]
    );
    let mut edges = Vec::new();
    for e in browser.find_all("#dag path.edge").await {
        edges.push(format!(
            "{}→{}",
            e.attr("data-from").await.unwrap().unwrap(),
            e.attr("data-to").await.unwrap().unwrap()
        ));
    }
    edges.sort();
    assert_eq!(
        edges,
        [
            "clean→load",
            "extract→clean",
            "extract→report",
            "load→report"
        ]
    );
    browser.screenshot("workflow").await;
    // Edited as JSON: a document that does not parse says where; then a new version.
    browser.click("#edit").await;
    let json = browser.value("#f-document").await.unwrap();
    assert!(json.trim_start().starts_with('{'), "{json}");
    browser
        .fill("#f-document", &json.replacen('{', "", 1))
        .await;
    browser.submit("#save").await;
    let error = browser.find("#error-document").await.text().await.unwrap();
    assert!(
        error.starts_with("document (JSON): ") && error.contains("line "),
        "{error}"
    );
    browser
        .fill(
            "#f-document",
            &json.replace("echo report", "echo report v2"),
        )
        .await;
    browser.submit("#save").await;
    assert_eq!(browser.texts("#versions a").await, ["1"]);
    assert_eq!(browser.texts("#versions strong").await, ["2"]);
    let (_, stored) = plane
        .call(0, Method::GET, "/workflows/ads/pipeline", None)
        .await;
    assert_eq!(stored["version"], 2, "{stored}");
    assert_eq!(
        stored["definition"]["tasks"][3]["kind"]["shell"]["script"],
        "echo report v2"
    );
    // The script of `etl` is text, not markup.
    browser.goto(&format!("{root}/workflows/ads/etl")).await;
    assert_eq!(
        browser.texts("#tasks tr[data-task='main'] code").await,
        ["echo <script>"]
    );
    // A viewer reads, and is offered no way to change.
    browser.submit("#signout").await;
    sign_in(&browser, root, "view").await;
    browser
        .goto(&format!("{root}/workflows/ads/pipeline"))
        .await;
    assert!(browser.find_all("#edit").await.is_empty());
    browser.goto(&format!("{root}/workflows")).await;
    assert!(browser.find_all("#new-workflow").await.is_empty());
    browser
        .goto(&format!("{root}/workflows/edit?tenant=ads&name=pipeline"))
        .await;
    browser.find("#cannot-edit").await;
    assert!(browser.find_all("#f-document").await.is_empty());
    plane.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_are_listed_uploaded_downloaded_and_deleted_by_those_who_may() {
    let (plane, s3) = plane_with_bucket().await;
    let root = &plane.roots[0];
    let browser = Browser::start().await;
    sign_in(&browser, root, "dev").await;
    browser.goto(&format!("{root}/resources")).await;
    // Only the developer's tenant, and nothing there yet.
    assert_eq!(browser.texts("#f-tenant option").await, ["ads"]);
    browser.find("#no-resources").await;
    // Uploaded from a file, under a key of the user's choosing.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("greet.sh");
    std::fs::write(&file, "echo \"greetings from a cached script\"\n").unwrap();
    browser.fill("#f-key", "etl/greet.sh").await;
    browser
        .find("#f-file")
        .await
        .send_keys(file.to_str().unwrap())
        .await
        .unwrap();
    browser.submit("#upload-button").await;
    assert_eq!(
        browser.texts("#resources tbody td:first-child").await,
        ["etl/greet.sh"]
    );
    assert_eq!(
        browser
            .texts("#resources tr[data-key='etl/greet.sh'] td:nth-child(2)")
            .await,
        ["38 B"]
    );
    assert_eq!(
        s3.get("meridian", "tenants/ads/etl/greet.sh")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"echo \"greetings from a cached script\"\n"[..]),
        "stored under the tenant's prefix"
    );
    // Without a key, the file's own name.
    browser
        .find("#f-file")
        .await
        .send_keys(file.to_str().unwrap())
        .await
        .unwrap();
    browser.submit("#upload-button").await;
    assert_eq!(
        browser.texts("#resources tbody td:first-child").await,
        ["etl/greet.sh", "greet.sh"]
    );
    browser.screenshot("resources").await;
    // A key that would leave the tenant's part of the bucket: refused, saying why, nothing stored.
    browser.fill("#f-key", "../bi/greet.sh").await;
    browser
        .find("#f-file")
        .await
        .send_keys(file.to_str().unwrap())
        .await
        .unwrap();
    browser.submit("#upload-button").await;
    let notice = browser.find("#notice").await.text().await.unwrap();
    assert!(notice.contains("key") && notice.contains(".."), "{notice}");
    assert_eq!(
        s3.get("meridian", "tenants/bi/greet.sh").await.unwrap(),
        None
    );
    assert_eq!(
        browser.texts("#resources tbody td:first-child").await,
        ["etl/greet.sh", "greet.sh"]
    );
    // The download link gives the bytes back, as an attachment named for the file.
    let href = browser
        .find("#resources tr[data-key='etl/greet.sh'] a.download")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let Cred::Session { cookie, .. } = plane.sign_in(0, "view", PASSWORD).await else {
        unreachable!()
    };
    let got = plane
        .http
        .get(format!("{root}{href}"))
        .header("cookie", format!("meridian_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(
        got.headers()["content-disposition"],
        "attachment; filename=\"greet.sh\""
    );
    assert_eq!(got.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        got.bytes().await.unwrap(),
        &b"echo \"greetings from a cached script\"\n"[..]
    );
    // Deleted after a confirmation.
    browser
        .click("#resources tr[data-key='greet.sh'] button.danger")
        .await;
    browser.accept_alert().await;
    browser
        .text_when("#resources tbody td:first-child", |keys| {
            keys == "etl/greet.sh"
        })
        .await;
    assert_eq!(
        s3.get("meridian", "tenants/ads/greet.sh").await.unwrap(),
        None
    );
    // A viewer lists and downloads, and is offered neither upload nor delete.
    browser.submit("#signout").await;
    sign_in(&browser, root, "view").await;
    browser.goto(&format!("{root}/resources")).await;
    assert_eq!(
        browser.texts("#resources tbody td:first-child").await,
        ["etl/greet.sh"]
    );
    assert!(browser.find_all("#upload").await.is_empty());
    assert!(
        browser
            .find_all("#resources button.danger")
            .await
            .is_empty()
    );
    plane.cluster.shutdown().await;
}

/// `meridian dev` (a plane, an embedded agent running real tasks, the UI), its root URL, and
/// the admin's password; with the CLI pointed at it.
struct Dev {
    _daemon: Daemon,
    dir: tempfile::TempDir,
    root: String,
    password: String,
}

impl Dev {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let http = format!("127.0.0.1:{}", free_port());
        let mut daemon = Daemon::start(
            &["--data-dir", data.to_str().unwrap(), "dev", "--http", &http],
            &dir.path().join("dev.log"),
        );
        daemon.wait_for_log("REST API", std::time::Duration::from_secs(60));
        let password = std::fs::read_to_string(data.join("admin.password"))
            .unwrap()
            .trim()
            .to_owned();
        Self {
            _daemon: daemon,
            root: format!("http://{http}"),
            password,
            dir,
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let data = self.dir.path().join("data");
        let mut all = vec!["--addr", &self.root, "--data-dir", data.to_str().unwrap()];
        all.extend_from_slice(args);
        ok(meridian(&all, &[]))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_page_tails_a_running_tasks_log_live_then_kills_and_runs_again() {
    let dev = Dev::start();
    let root = &dev.root;
    let go = dev.dir.path().join("go");
    let stop = dev.dir.path().join("stop");
    // A task that prints, waits for the test's word (a file), prints again, then goes on
    // printing a line every 100 ms until told to stop: its line must arrive while it runs,
    // not when it ends.
    let script = format!(
        "echo 'before the page'; while [ ! -e {} ]; do sleep 0.05; done; \
         echo 'after the page loaded: <b>bold</b>'; \
         while [ ! -e {} ]; do echo tick; sleep 0.1; done",
        go.display(),
        stop.display()
    );
    dev.cli(&[
        "workflow", "create", "demo", "tail", "--env", "dev", "--shell", &script,
    ]);
    let run = dev.cli(&["runs", "now", "demo", "tail"]).trim().to_owned();
    let browser = Browser::start().await;
    sign_in_with(&browser, root, "admin", &dev.password).await;
    browser.goto(&format!("{root}/runs/{run}")).await;
    assert_eq!(browser.texts("#run-id").await, [run.as_str()]);
    browser.eval("window.meridianMark = 'the same page'").await;
    browser
        .text_when("pre.log", |t| t.contains("before the page"))
        .await;
    // The task goes on only now, after the page has loaded: its line arrives by itself.
    std::fs::write(&go, "").unwrap();
    let log = browser
        .text_when("pre.log", |t| t.contains("after the page loaded"))
        .await;
    assert!(log.contains("after the page loaded: <b>bold</b>"), "{log}");
    assert_eq!(
        browser.eval("return window.meridianMark").await,
        "the same page",
        "the page was not reloaded"
    );
    // Still running: the line came live, not with the run's end.
    let running = dev.cli(&["runs", "get", &run]);
    assert!(running.contains("\"started\""), "{running}");
    std::fs::write(&stop, "").unwrap();
    browser.text_when("#run-state", |s| s == "succeeded").await;
    // Reloaded: the DAG and the chart by state, the attempts, the whole log.
    browser.goto(&format!("{root}/runs/{run}")).await;
    let task = browser.find("#dag g.task").await;
    assert!(
        task.attr("class")
            .await
            .unwrap()
            .unwrap()
            .contains("state-succeeded"),
        "{:?}",
        task.attr("class").await
    );
    assert_eq!(
        browser.find_all("#gantt g.bar.state-succeeded").await.len(),
        1
    );
    assert_eq!(
        browser.texts("#attempts tbody td:nth-child(3)").await,
        ["succeeded"]
    );
    browser.screenshot("run").await;
    // The whole log, downloaded with the browser's session.
    let href = browser
        .find("a.download")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let session = browser.cookie("meridian_session").await;
    let got = reqwest::Client::new()
        .get(format!("{root}{href}"))
        .header("cookie", format!("meridian_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert!(
        got.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename="),
    );
    let text = got.text().await.unwrap();
    assert!(
        text.contains("before the page\n") && text.contains("after the page loaded: <b>bold</b>"),
        "{text}"
    );
    // Run again now: a new run of the same workflow, and its page.
    browser.submit("#again").await;
    let again = browser.texts("#run-id").await.remove(0);
    assert_ne!(again, run);
    assert!(again.starts_with("demo.tail@"), "{again}");
    browser.text_when("#run-state", |s| s == "succeeded").await;
    // A long log: its last 64 KiB first, then "load earlier" until it is whole, in order.
    dev.cli(&[
        "workflow",
        "create",
        "demo",
        "long",
        "--env",
        "dev",
        "--shell",
        "seq 1 30000",
    ]);
    let long = dev.cli(&["runs", "now", "demo", "long"]).trim().to_owned();
    browser.goto(&format!("{root}/runs/{long}")).await;
    browser.text_when("#run-state", |s| s == "succeeded").await;
    browser.text_when("#kill", str::is_empty).await;
    let whole = "return Array.from(document.querySelectorAll('section.attempt-log pre'))\
                 .map(p => p.textContent).join('')";
    let shown = browser.eval(whole).await.as_str().unwrap().to_owned();
    assert!(
        shown.ends_with("\n30000\n") && !shown.starts_with("1\n"),
        "{}",
        shown.len()
    );
    assert!(shown.len() <= 64 * 1024, "{}", shown.len());
    let mut pages = 0;
    while !browser.find_all("a.earlier").await.is_empty() {
        browser.click("a.earlier").await;
        pages += 1;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while browser.find_all("pre.earlier-text").await.len() < pages {
            assert!(
                std::time::Instant::now() < deadline,
                "load earlier #{pages}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let expected: String = (1..=30000).map(|i| format!("{i}\n")).collect();
    assert_eq!(browser.eval(whole).await.as_str().unwrap(), expected);
    assert!(pages >= 2, "{} bytes in {pages} + 1 pages", expected.len());
    // Kill from the page ends a run that would go on for ten minutes.
    dev.cli(&[
        "workflow",
        "create",
        "demo",
        "sleepy",
        "--env",
        "dev",
        "--shell",
        "echo going; sleep 600",
    ]);
    let sleepy = dev
        .cli(&["runs", "now", "demo", "sleepy"])
        .trim()
        .to_owned();
    browser.goto(&format!("{root}/runs/{sleepy}")).await;
    browser.text_when("pre.log", |t| t.contains("going")).await;
    browser.click("#kill").await;
    browser.accept_alert().await;
    let result = browser.find("#killed").await.text().await.unwrap();
    assert!(result.contains("killed"), "{result}");
    browser.submit("#back").await;
    browser.text_when("#run-state", |s| s == "killed").await;
    // Once it is over the page refreshes its part that changes: no Kill for a killed run.
    browser.text_when("#kill", str::is_empty).await;
    assert_eq!(browser.texts("#run-state").await, ["killed"]);
    browser.screenshot("run-killed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_every_data_center_and_a_cut_off_one_as_quiet_not_broken() {
    let plane = plane().await;
    let root = &plane.roots[0];
    // A third data center whose cluster keeps firing for three minutes when cut off, backed by
    // a standby cluster in sg.
    for (path, body) in [
        ("/dcs", json!({"name": "gz"})),
        (
            "/clusters",
            json!({"name": "sg-standby", "dc": "sg", "role": "backup"}),
        ),
        (
            "/clusters",
            json!({"name": "gz-main", "dc": "gz", "lease_seconds": 180, "backup": "sg-standby"}),
        ),
    ] {
        plane.must(Method::POST, path, body).await;
    }
    // gz's agent was last heard 47 s ago; nj's just now.
    plane.heartbeat("agent-1.gz", "gz-main", 4).await;
    plane.clock.advance(chrono::TimeDelta::seconds(47));
    plane.heartbeat("agent-1.nj", "nj-main", 8).await;
    let browser = Browser::start().await;
    sign_in(&browser, root, "root").await;
    assert_eq!(browser.url().await.path(), "/overview", "an admin's home");
    let status = |dc: &str| format!("section[data-dc='{dc}'] .dc-status");
    assert_eq!(
        browser.texts(&status("gz")).await,
        ["last heard 47 s ago, leases run out in 2 min 13 s"]
    );
    assert_eq!(browser.texts(&status("nj")).await, ["connected"]);
    assert_eq!(browser.texts(&status("sg")).await, ["no agent connected"]);
    let agent = "section[data-dc='gz'] tr[data-agent='agent-1.gz']";
    assert_eq!(
        browser.texts(&format!("{agent} td")).await,
        [
            "agent-1.gz",
            "gz-main",
            "47 s ago",
            "4",
            "16",
            "in 2 min 13 s",
            "0"
        ]
    );
    assert_eq!(
        browser
            .texts("section[data-dc='sg'] tr[data-cluster='sg-standby'] td")
            .await,
        ["sg-standby", "backup", "backup of gz-main", "16", "30 s"]
    );
    // The runs of the last day, by state, each a link to them on the runs page.
    assert_eq!(
        browser
            .texts("section[data-dc='nj'] .counts a[data-state]")
            .await,
        ["requested 1"]
    );
    assert_eq!(
        browser
            .texts("section[data-dc='nj'] svg.hourly rect.runs[height='48']")
            .await
            .len(),
        1,
        "this hour's column, at the top of the scale"
    );
    assert_eq!(browser.texts("#nodes td:nth-child(2)").await, ["leader"]);
    browser.screenshot("overview").await;
    browser
        .click("section[data-dc='nj'] .counts a[data-state='requested']")
        .await;
    assert_eq!(browser.value("#f-dc").await.as_deref(), Some("nj"));
    // Not a developer's page, and not in its navigation.
    browser.submit("#signout").await;
    sign_in(&browser, root, "dev").await;
    assert_eq!(browser.url().await.path(), "/runs", "a developer's home");
    assert!(
        !browser
            .texts("header nav a")
            .await
            .contains(&"Overview".to_owned())
    );
    browser.goto(&format!("{root}/overview")).await;
    assert!(browser.find_all("#dcs").await.is_empty());
    plane.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administration_forms_show_the_servers_errors_beside_their_fields() {
    let plane = plane().await;
    let root = &plane.roots[0];
    let browser = Browser::start().await;
    sign_in(&browser, root, "root").await;
    browser.goto(&format!("{root}/admin/clusters")).await;
    // A number that is not one: the field's own message, the form as typed, nothing stored.
    browser.fill("#f-name", "gz-main").await;
    browser.select("#f-dc", "nj").await;
    browser.fill("#f-partitions", "many").await;
    browser.submit("#create").await;
    let error = browser
        .find("#error-partitions")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        error.contains("invalid type") || error.contains("expected"),
        "{error}"
    );
    assert_eq!(browser.value("#f-name").await.as_deref(), Some("gz-main"));
    let (status, _) = plane.call(0, Method::GET, "/clusters/gz-main", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The plane's own refusal, beside the field it names: a name already taken.
    browser.fill("#f-name", "nj-main").await;
    browser.fill("#f-partitions", "").await;
    browser.submit("#create").await;
    let taken = browser.find("#error-name").await.text().await.unwrap();
    assert!(
        taken.contains("cluster `nj-main` already exists"),
        "{taken}"
    );
    browser.screenshot("admin-error").await;
    // Made, then listed.
    browser.fill("#f-name", "gz-main").await;
    browser.fill("#f-lease_seconds", "180").await;
    browser.submit("#create").await;
    assert_eq!(
        browser.texts("#items tr[data-key='gz-main'] td").await[..6],
        ["gz-main", "nj", "active", "", "16", "180"]
    );
    // Edited in place as a document: the count its schedules are placed by cannot change
    // (the plane says why, beside the document, and nothing is stored); its lease can.
    browser.click("#items tr[data-key='gz-main'] a.edit").await;
    let shown = browser.value("#f-document").await.unwrap_or_default();
    let stored: serde_json::Value = serde_json::from_str(&shown).expect("the cluster as JSON");
    assert_eq!(stored["lease_seconds"], 180, "{shown}");
    let with = |field: &str, value: serde_json::Value| {
        let mut c = stored.clone();
        c[field] = value;
        serde_json::to_string_pretty(&c).unwrap()
    };
    browser
        .fill("#f-document", &with("partitions", json!(32)))
        .await;
    browser.submit("#save").await;
    let error = browser.find("#error-document").await.text().await.unwrap();
    assert!(
        error.contains("partitions: fixed when the cluster was created (16)"),
        "{error}"
    );
    browser
        .fill("#f-document", &with("lease_seconds", json!(240)))
        .await;
    browser.submit("#save").await;
    assert_eq!(
        browser.texts("#items tr[data-key='gz-main'] td").await[..6],
        ["gz-main", "nj", "active", "", "16", "240"]
    );
    // Deleting what is in use says what uses it, and deletes nothing.
    browser.goto(&format!("{root}/admin/environments")).await;
    browser
        .click("#items tr[data-key='prod'] button.danger")
        .await;
    browser.accept_alert().await;
    let refused = browser.find("#refused").await.text().await.unwrap();
    assert!(refused.contains("still used by"), "{refused}");
    assert!(refused.contains("ads"), "{refused}");
    let (status, _) = plane.call(0, Method::GET, "/environments/prod", None).await;
    assert_eq!(status, StatusCode::OK);
    // The grant matrix: a row per tenant, a column per environment, each grant's limit.
    browser.goto(&format!("{root}/admin/grants")).await;
    assert_eq!(
        browser.texts("#matrix tr[data-tenant='ads'] td").await,
        ["—", "10 at once"]
    );
    // A grant's limit changed in its row: 0 refused with the plane's message, 4 kept.
    let limit = "#items tr[data-key='ads/prod'] form.change";
    browser
        .fill(&format!("{limit} input[name=max_concurrent_runs]"), "0")
        .await;
    browser.submit(&format!("{limit} button")).await;
    let refused = browser.find("#refused").await.text().await.unwrap();
    assert!(
        refused.contains("max_concurrent_runs: must be at least 1"),
        "{refused}"
    );
    browser
        .fill(&format!("{limit} input[name=max_concurrent_runs]"), "4")
        .await;
    browser.submit(&format!("{limit} button")).await;
    browser
        .text_when("#matrix tr[data-tenant='ads']", |t| t.contains("4 at once"))
        .await;
    let (_, grant) = plane.call(0, Method::GET, "/grants/ads/prod", None).await;
    assert_eq!(grant["max_concurrent_runs"], 4, "{grant}");
    browser.screenshot("admin-grants").await;
    // An environment edited as a document: a wrong type named by its path, the plane's own
    // check of an OS user beside the document, and nothing stored until it is right.
    browser.goto(&format!("{root}/admin/environments")).await;
    browser.click("#items tr[data-key='prod'] a.edit").await;
    let shown = browser.value("#f-document").await.unwrap_or_default();
    assert!(shown.contains("\"nj-main\""), "{shown}");
    browser.click("#format-toml").await;
    let toml = browser
        .text_when("#f-document", |t| t.contains("cluster = \"nj-main\""))
        .await;
    assert!(toml.contains("name = \"prod\""), "{toml}");
    let edit = |vars: &str, user: &str| {
        format!(
            "name = \"prod\"\ncluster = \"nj-main\"\n[vars]\n{vars}\n\
             [run_as.tenants.ads]\nuser = \"{user}\"\n"
        )
    };
    browser
        .fill("#f-document", &edit("REGION = 1", "etl"))
        .await;
    browser.submit("#save").await;
    let error = browser.find("#error-document").await.text().await.unwrap();
    assert!(error.contains("vars.REGION"), "{error}");
    browser
        .fill("#f-document", &edit("REGION = \"nj\"", "not a user!"))
        .await;
    browser.submit("#save").await;
    let error = browser.find("#error-document").await.text().await.unwrap();
    assert!(error.contains("run_as.tenants.ads"), "{error}");
    let (_, prod) = plane.call(0, Method::GET, "/environments/prod", None).await;
    assert!(prod["vars"].get("REGION").is_none(), "{prod}");
    browser.screenshot("admin-environment-edit").await;
    browser
        .fill("#f-document", &edit("REGION = \"nj\"", "etl"))
        .await;
    browser.submit("#save").await;
    browser.find("#items").await;
    let (_, prod) = plane.call(0, Method::GET, "/environments/prod", None).await;
    assert_eq!(prod["vars"]["REGION"], "nj", "{prod}");
    assert_eq!(prod["run_as"]["tenants"]["ads"]["user"], "etl", "{prod}");
    // The audit trail, filtered: the refused deletion is there, with why.
    browser
        .goto(&format!("{root}/admin/audit?outcome=refused&subject=prod"))
        .await;
    let messages = browser.texts("#audit td.message").await;
    assert!(
        messages.iter().any(|m| m.contains("still used by")),
        "{messages:?}"
    );
    // An operator reads, and the plane refuses its writes.
    plane.user("ops", &["operator"], PASSWORD).await;
    browser.submit("#signout").await;
    sign_in(&browser, root, "ops").await;
    browser.goto(&format!("{root}/admin/dcs")).await;
    browser.fill("#f-name", "ops-dc").await;
    browser.submit("#create").await;
    let refused = browser.find("#refused").await.text().await.unwrap();
    assert!(refused.contains("may not"), "{refused}");
    plane.cluster.shutdown().await;
}

/// Keyset pages (`after`, the last row's cursor) walk every run once, in order, even when many
/// share one time (as runs asked for in the same millisecond do): the id breaks the tie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_pages_walk_every_run_once_in_order() {
    let plane = plane().await;
    for _ in 0..25 {
        plane.run_now("ads").await;
    }
    let (_, all) = plane.call(0, Method::GET, "/runs?limit=1000", None).await;
    let all: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(all.len(), 27);
    let mut walked = Vec::new();
    let mut after = String::new();
    for pages in 0.. {
        // 27 runs in pages of 4: a cursor that does not move on would go round forever.
        assert!(pages <= 7, "still paging after {walked:?}");
        let path = if after.is_empty() {
            "/runs?limit=4".to_owned()
        } else {
            format!("/runs?limit=4&after={}", urlencoding(&after))
        };
        let (status, page) = plane.call(0, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let page = page.as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        after = format!(
            "{}~{}",
            last["fire_ms"]
                .as_i64()
                .or(last["requested_ms"].as_i64())
                .unwrap(),
            last["run_id"].as_str().unwrap()
        );
        walked.extend(
            page.iter()
                .map(|r| r["run_id"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(walked, all);
    plane.cluster.shutdown().await;
}

/// Issue #21: the schedules and workflows pages show a hundred at a time, each page full of
/// what the viewer may see, with links to the next page and back to the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_and_workflows_pages_show_a_hundred_at_a_time() {
    let plane = plane().await;
    for i in 0..105 {
        let name = format!("s{i:03}");
        plane
            .must(
                Method::POST,
                "/schedules",
                json!({"tenant": "bi", "name": name, "workflow": "etl",
                       "environment": "bi-prod", "spec": {"cron": "0 0 * * * ?"}}),
            )
            .await;
    }
    let root = &plane.roots[0];
    let browser = Browser::start().await;
    sign_in(&browser, root, "root").await;
    browser.goto(&format!("{root}/schedules")).await;
    let rows = async || {
        let mut shown = Vec::new();
        for row in browser.find_all("tr[data-schedule]").await {
            shown.push(row.attr("data-schedule").await.unwrap().unwrap());
        }
        shown
    };
    let first = rows().await;
    assert_eq!(first.len(), 100);
    assert_eq!(first[..2], ["ads.hourly", "bi.hourly"]);
    assert!(browser.find_all("#first-page").await.is_empty());
    browser.click("#next-page").await;
    browser.find("#first-page").await;
    let second = rows().await;
    assert_eq!(second.len(), 7, "{second:?}");
    assert_eq!(second.last().unwrap(), "bi.s104");
    assert!(
        !first.iter().any(|s| second.contains(s)),
        "a schedule on both pages"
    );
    assert!(browser.find_all("#next-page").await.is_empty());
    browser.screenshot("schedules-second-page").await;
    browser.click("#first-page").await;
    browser.find("#next-page").await;
    assert_eq!(rows().await, first);
    // The workflows page pages alike: the one after ads's is bi's.
    browser
        .goto(&format!("{root}/workflows?after=ads%2Fetl"))
        .await;
    browser.find("#first-page").await;
    let mut shown = Vec::new();
    for row in browser.find_all("tr[data-workflow]").await {
        shown.push(row.attr("data-workflow").await.unwrap().unwrap());
    }
    assert_eq!(shown, ["bi/etl"]);
    // A developer of ads sees ads's one schedule, and no pages to walk.
    browser.click("#signout").await;
    sign_in(&browser, root, "dev").await;
    browser.goto(&format!("{root}/schedules")).await;
    browser.find("#schedules").await;
    assert_eq!(rows().await, ["ads.hourly"]);
    assert!(browser.find_all("#next-page").await.is_empty());
    // A cursor that is not one is said to be wrong.
    browser.goto(&format!("{root}/schedules?after=bi")).await;
    let said = browser.find("#error").await.text().await.unwrap();
    assert!(
        said.contains("query `after`: `bi` is not `tenant/name`"),
        "{said}"
    );
    plane.cluster.shutdown().await;
}

fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Users and tokens from the administration pages: a generated password and a token's secret
/// shown once and working; roles given and taken; a new password ending the old; a tenant's
/// owner managing only its tenant's people, and a forged form asking for more refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_tokens_are_managed_from_the_pages_by_those_who_may() {
    meridian_tests::browser::install_crypto();
    let t0 = t0();
    let plane = ApiPlane::start(1, ManualClock::at(t0)).await;
    plane.two_tenants().await;
    plane.user("root", &["admin"], PASSWORD).await;
    let root = &plane.roots[0];
    let browser = Browser::start().await;
    sign_in(&browser, root, "root").await;
    browser.goto(&format!("{root}/admin/users")).await;
    // A tenant role without its tenant: the plane's message beside the field, nothing stored.
    browser.fill("#f-name", "carol").await;
    browser.select("#f-role", "developer").await;
    browser.submit("#create").await;
    let error = browser.find("#error-role").await.text().await.unwrap();
    assert!(error.contains("tenant"), "{error}");
    assert_eq!(browser.value("#f-name").await.as_deref(), Some("carol"));
    let (status, _) = plane.call(0, Method::GET, "/users/carol", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Made with a generated password, shown once, which signs in.
    browser.select("#f-tenant", "ads").await;
    browser.submit("#create").await;
    let first = browser.find("#secret").await.text().await.unwrap();
    plane.sign_in(0, "carol", &first).await;
    browser.screenshot("admin-users").await;
    // A role given, then taken.
    let row = "#items tr[data-key='carol']";
    browser
        .select(&format!("{row} select[name=role]"), "viewer")
        .await;
    browser
        .select(&format!("{row} select[name=tenant]"), "bi")
        .await;
    browser
        .submit(&format!("{row} form[action='/admin/users/bind'] button"))
        .await;
    assert_eq!(
        browser.texts(&format!("{row} .binding")).await,
        ["developer@ads", "viewer@bi"]
    );
    let (_, carol) = plane.call(0, Method::GET, "/users/carol", None).await;
    assert_eq!(carol["bindings"].as_array().unwrap().len(), 2, "{carol}");
    browser
        .click(&format!("{row} td.bindings form:last-of-type button"))
        .await;
    browser.accept_alert().await;
    browser
        .text_when(&format!("{row} .bindings"), |t| !t.contains("viewer@bi"))
        .await;
    let (_, carol) = plane.call(0, Method::GET, "/users/carol", None).await;
    assert_eq!(
        carol["bindings"],
        json!([{"role": "developer", "tenant": "ads"}])
    );
    // A new password: shown once; the old one no longer signs in.
    browser
        .click(&format!("{row} form[action$=password] button"))
        .await;
    browser.accept_alert().await;
    let second = browser
        .text_when("#secret", |t| !t.is_empty() && t != first)
        .await;
    let old = plane
        .call_as(
            &Cred::Nobody,
            0,
            Method::POST,
            "/session",
            Some(json!({"user": "carol", "password": first})),
        )
        .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    plane.sign_in(0, "carol", &second).await;
    // A token: its secret shown once, and it works until it is deleted.
    browser.goto(&format!("{root}/admin/tokens")).await;
    browser.fill("#f-name", "ci").await;
    browser.select("#f-role", "developer").await;
    browser.select("#f-tenant", "ads").await;
    browser.fill("#f-expires_days", "30").await;
    browser.submit("#create").await;
    let secret = browser.find("#secret").await.text().await.unwrap();
    let ci = Cred::Token(secret);
    let who = plane.call_as(&ci, 0, Method::GET, "/session", None).await;
    assert_eq!(who.status, StatusCode::OK, "{}", who.body);
    let expires = browser
        .texts("#items tr[data-key='ci'] td")
        .await
        .get(2)
        .cloned()
        .unwrap_or_default();
    assert!(!expires.is_empty() && expires != "never", "{expires}");
    let (_, listed) = plane.call(0, Method::GET, "/tokens", None).await;
    let ci_view = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .cloned()
        .unwrap();
    assert_eq!(
        ci_view["expires_ms"],
        json!(t0.timestamp_millis() + 30 * 86_400_000),
        "{ci_view}"
    );
    browser.screenshot("admin-tokens").await;
    browser
        .click("#items tr[data-key='ci'] button.danger")
        .await;
    browser.accept_alert().await;
    browser.text_when("#none", |_| true).await;
    let who = plane.call_as(&ci, 0, Method::GET, "/session", None).await;
    assert_eq!(who.status, StatusCode::UNAUTHORIZED);
    // A tenant's owner: its tenant's people only, tenant roles only; a forged admin refused.
    plane.user("own", &["owner@ads"], PASSWORD).await;
    browser.submit("#signout").await;
    sign_in(&browser, root, "own").await;
    browser.goto(&format!("{root}/admin")).await;
    assert_eq!(browser.url().await.path(), "/admin/users");
    assert_eq!(
        browser.texts("#admin-tabs a").await,
        ["Users", "Tokens", "Audit trail"]
    );
    let listed = browser.texts("#items tr td:first-child").await;
    assert!(listed.contains(&"carol".to_owned()), "{listed:?}");
    assert!(!listed.contains(&"root".to_owned()), "{listed:?}");
    let roles = browser.texts("#f-role option").await;
    assert!(!roles.iter().any(|r| r == "admin"), "{roles:?}");
    assert_eq!(browser.texts("#f-tenant option").await, ["", "ads"]);
    let forged = browser
        .eval(
            "const f = document.getElementById('create-form'); \
             f.querySelector('#f-name').value = 'mallory'; \
             const o = document.createElement('option'); o.value = 'admin'; o.text = 'admin'; \
             f.querySelector('#f-role').add(o); f.querySelector('#f-role').value = 'admin'; \
             f.querySelector('#f-tenant').value = ''; return 1;",
        )
        .await;
    assert_eq!(forged, json!(1));
    browser.submit("#create").await;
    let refused = browser.find("#refused").await.text().await.unwrap();
    assert!(refused.contains("may not"), "{refused}");
    let (status, _) = plane.call(0, Method::GET, "/users/mallory", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // And deletes one of its tenant's users.
    browser
        .click("#items tr[data-key='carol'] form[action$=delete] button")
        .await;
    browser.accept_alert().await;
    browser.text_when("#items", |t| !t.contains("carol")).await;
    let (status, _) = plane.call(0, Method::GET, "/users/carol", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    plane.cluster.shutdown().await;
}

/// The audit trail's pages walk every entry once, newest first, though the plane's clock
/// stands still (every entry in one millisecond): "Older" goes by log index, not by time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_pages_by_log_index_through_one_millisecond() {
    let plane = plane().await;
    for i in 0..120 {
        plane
            .must(Method::POST, "/dcs", json!({"name": format!("page-{i}")}))
            .await;
    }
    let Cred::Session { cookie, .. } = plane.sign_in(0, "root", PASSWORD).await else {
        unreachable!()
    };
    let (_, all) = plane.call(0, Method::GET, "/audit?limit=1000", None).await;
    let all = all.as_array().unwrap().len();
    assert!(all > 120, "{all}");
    let client = reqwest::Client::new();
    let mut path = "/admin/audit".to_owned();
    let mut pages = 0;
    let mut rows = 0;
    loop {
        pages += 1;
        assert!(pages <= 5, "still paging at {path}");
        let page = client
            .get(format!("{}{path}", plane.roots[0]))
            .header("cookie", format!("meridian_session={cookie}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        rows += page.matches("<td class=\"actor\">").count();
        let Some(older) = page
            .split("id=\"older\"")
            .next()
            .filter(|_| page.contains("id=\"older\""))
            .and_then(|before| before.rsplit("href=\"").next())
            .and_then(|s| s.split('"').next())
        else {
            break;
        };
        path = older.replace("&amp;", "&").replace("&#38;", "&");
    }
    // Every entry once: as many rows as entries, on as few pages as hold them.
    assert_eq!(rows, all);
    assert_eq!(pages, all.div_ceil(100));
    plane.cluster.shutdown().await;
}

/// Issue #19: a schedule's records in doubt after a takeover show on the schedules page —
/// how many, the agent that may have run them and when it was last heard, who holds the
/// partition now — and whoever controls the tenant's runs settles them there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_doubt_show_on_the_schedules_page_and_are_settled_there() {
    let plane = plane().await;
    let root = &plane.roots[0];
    plane
        .must(
            Method::POST,
            "/schedules",
            json!({"tenant": "ads", "name": "often", "workflow": "etl",
                   "environment": "prod", "spec": {"cron": "0/10 * * * * ?"}}),
        )
        .await;
    // a1 holds nj-main; it falls silent, its lease runs out, and a2 (heard meanwhile, so the
    // plane knows the cluster's link is up) takes over.
    plane.heartbeat("a1.test", "nj-main", 4).await;
    let (_, cluster) = plane.call(0, Method::GET, "/clusters/nj-main", None).await;
    let lease = cluster["lease_seconds"].as_i64().unwrap();
    plane.clock.advance(chrono::TimeDelta::seconds(lease / 2));
    plane.heartbeat("a2.test", "nj-main", 4).await;
    plane
        .clock
        .advance(chrono::TimeDelta::seconds(lease / 2 + 1));
    plane.heartbeat("a2.test", "nj-main", 4).await;
    // `often`'s records in doubt (`hourly` has one too when the test runs just before a
    // whole hour).
    let often = |listed: &serde_json::Value| -> Option<usize> {
        listed
            .as_array()?
            .iter()
            .find(|d| d["schedule"] == "ads.often")
            .map(|d| d["records"].as_array().map_or(0, Vec::len))
    };
    let (_, listed) = plane.call(0, Method::GET, "/in-doubt", None).await;
    let records = often(&listed).unwrap_or_default();
    assert!(records >= 2, "{listed}");

    let browser = Browser::start().await;
    sign_in(&browser, root, "view").await;
    browser.goto(&format!("{root}/schedules")).await;
    let row = browser
        .find("tr[data-in-doubt='ads.often']")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        row.contains(&format!("{records} record(s)"))
            && row.contains("a1.test")
            && row.contains("a2.test"),
        "{row}"
    );
    // A viewer sees them, and is offered nothing to do about them.
    assert!(
        browser
            .find_all("tr[data-in-doubt='ads.often'] button")
            .await
            .is_empty()
    );
    browser.click("#signout").await;
    sign_in(&browser, root, "dev").await;
    browser.goto(&format!("{root}/schedules")).await;
    browser.screenshot("schedules-in-doubt").await;
    browser
        .click("tr[data-in-doubt='ads.often'] button.mark-done")
        .await;
    browser.accept_alert().await;
    // Its row goes (`hourly` has at most one record in doubt, `often` two or more).
    let count = format!("{records} record(s)");
    browser
        .text_when("#schedules", |t| !t.contains(&count))
        .await;
    let (_, listed) = plane.call(0, Method::GET, "/in-doubt", None).await;
    assert_eq!(often(&listed), None, "{listed}");
    let (_, runs) = plane
        .call(0, Method::GET, "/runs?schedule=ads.often", None)
        .await;
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), records, "{runs:?}");
    assert!(
        runs.iter()
            .all(|r| r["state"] == "skipped"
                && r["message"].as_str().unwrap().contains("marked done")),
        "{runs:?}"
    );
    plane.cluster.shutdown().await;
}

/// Issue #20: the schedules page says what holds a schedule still and, for whoever controls
/// the tenant's runs, switches it: pause with a reason, resume, resume and catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_is_paused_and_resumed_from_the_schedules_page() {
    let plane = plane().await;
    let root = &plane.roots[0];
    let pauses = async || plane.call(0, Method::GET, "/pauses", None).await.1;
    let browser = Browser::start().await;
    sign_in(&browser, root, "view").await;
    browser.goto(&format!("{root}/schedules")).await;
    // A viewer is offered nothing to switch.
    assert!(
        browser
            .find_all("tr[data-pause='ads.hourly'] button")
            .await
            .is_empty()
    );
    browser.click("#signout").await;
    sign_in(&browser, root, "dev").await;
    browser.goto(&format!("{root}/schedules")).await;
    browser
        .fill(
            "tr[data-pause='ads.hourly'] input[name=reason]",
            "release 4.2",
        )
        .await;
    browser
        .click("tr[data-pause='ads.hourly'] button.pause")
        .await;
    let row = browser
        .text_when("tr[data-pause='ads.hourly']", |t| t.contains("Paused:"))
        .await;
    assert!(
        row.contains("paused since") && row.contains("(release 4.2)"),
        "{row}"
    );
    browser.screenshot("schedule-paused").await;
    let listed = pauses().await;
    assert_eq!(listed[0]["scope"]["schedule"]["name"], "hourly", "{listed}");
    assert_eq!(listed[0]["reason"], "release 4.2", "{listed}");
    // The tenant paused through the API: the row says the tenant holds it too.
    plane
        .must(
            Method::POST,
            "/pauses",
            json!({"scope": {"tenant": {"name": "ads"}}}),
        )
        .await;
    browser.goto(&format!("{root}/schedules")).await;
    let row = browser
        .find("tr[data-pause='ads.hourly']")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        row.contains("held by the pause of tenant ads since"),
        "{row}"
    );
    browser
        .click("tr[data-pause='ads.hourly'] button.catch-up")
        .await;
    browser.accept_alert().await;
    browser
        .text_when("tr[data-pause='ads.hourly']", |t| {
            !t.contains("paused since")
        })
        .await;
    let listed = pauses().await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["scope"]["tenant"]["name"], "ads", "{listed}");
    plane.cluster.shutdown().await;
}

/// Issue #20: the schedules page offers a schedule's backfill; the form makes one (a bad date
/// comes back with the field named and nothing made), the list shows its progress live and
/// pauses, resumes and cancels it; a viewer sees it and is offered nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_is_made_followed_and_cancelled_from_the_backfills_page() {
    let plane = plane().await;
    let root = &plane.roots[0];
    let backfills = async || plane.call(0, Method::GET, "/backfills", None).await.1;
    let browser = Browser::start().await;
    sign_in(&browser, root, "dev").await;
    browser.goto(&format!("{root}/schedules")).await;
    browser
        .click("tr[data-pause='ads.hourly'] a.backfill")
        .await;
    assert_eq!(
        browser.value("#schedule").await.as_deref(),
        Some("ads/hourly")
    );
    browser.fill("#from", "yesterday").await;
    browser
        .fill("#to", &days_ago(2).format("%Y-%m-%d").to_string())
        .await;
    browser.click("#create-backfill").await;
    let error = browser.text_when("#error", |t| !t.is_empty()).await;
    assert!(error.contains("from `yesterday`: want a date"), "{error}");
    assert_eq!(backfills().await, json!([]), "nothing made");
    // Two days of an hourly schedule, 4 at once.
    browser
        .fill("#from", &days_ago(3).format("%Y-%m-%d").to_string())
        .await;
    browser.fill("#parallel", "4").await;
    browser.click("#create-backfill").await;
    browser
        .text_when("#backfills", |t| t.contains("ads/hourly"))
        .await;
    let listed = backfills().await;
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed[0]["total"], 48, "{listed}");
    let row = format!("tr[data-backfill='{id}']");
    let text = browser.text_when(&row, |t| t.contains("running")).await;
    assert!(text.contains("remaining 44 of 48"), "four handed: {text}");
    assert!(text.contains("ads/hourly"), "{text}");
    browser.screenshot("backfill-running").await;
    browser.click(&format!("{row} button.pause")).await;
    browser.text_when(&row, |t| t.contains("paused")).await;
    assert_eq!(backfills().await[0]["state"], "paused");
    browser.click(&format!("{row} button.resume")).await;
    browser.text_when(&row, |t| t.contains("running")).await;
    // A viewer sees it, and may do nothing about it.
    browser.click("#signout").await;
    sign_in(&browser, root, "view").await;
    browser.goto(&format!("{root}/backfills")).await;
    assert!(browser.find_all(&format!("{row} button")).await.is_empty());
    assert!(browser.find_all("#new-backfill").await.is_empty());
    browser.click("#signout").await;
    sign_in(&browser, root, "dev").await;
    browser.goto(&format!("{root}/backfills")).await;
    browser.click(&format!("{row} button.cancel")).await;
    browser.accept_alert().await;
    let text = browser.text_when(&row, |t| t.contains("cancelled")).await;
    assert!(text.contains("dropped 44"), "{text}");
    assert_eq!(backfills().await[0]["state"], "cancelled");
    plane.cluster.shutdown().await;
}

/// Issue #20: a developer makes a webhook channel and a rule from the alerts page (a rule with
/// no event comes back naming the field, nothing made); a kill raises a delivery that the page
/// shows delivered with its attempt; a viewer sees them and is offered nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_channels_and_rules_are_made_on_the_alerts_page_and_deliveries_shown() {
    let plane = plane().await;
    let root = &plane.roots[0];
    let hook = meridian_tests::receiver::Receiver::start().await;
    let rules = async || {
        plane
            .call(0, Method::GET, "/alerts/rules?tenant=ads", None)
            .await
            .1
    };
    let browser = Browser::start().await;
    sign_in(&browser, root, "dev").await;
    browser.goto(&format!("{root}/alerts")).await;
    browser.select("#channel-tenant", "ads").await;
    browser.fill("#channel-name", "ops").await;
    browser.select("#channel-type", "webhook").await;
    browser.fill("#channel-url", &hook.url("/hook")).await;
    browser.click("#create-channel").await;
    let channels = browser.text_when("#channels", |t| t.contains("ops")).await;
    // Shown up to its host: a chat service's URL holds its credential.
    assert!(channels.contains(&hook.url("/…")), "{channels}");
    assert!(!channels.contains("/hook"), "{channels}");
    // No event ticked: refused, naming the field.
    browser.select("#rule-tenant", "ads").await;
    browser.fill("#rule-name", "kills").await;
    browser.fill("#rule-channels", "ops").await;
    browser.click("#create-rule").await;
    let error = browser.text_when("#error", |t| !t.is_empty()).await;
    assert!(error.contains("on: name at least one event"), "{error}");
    assert_eq!(rules().await, json!([]), "nothing made");
    browser.select("#rule-tenant", "ads").await;
    browser.fill("#rule-name", "kills").await;
    browser.fill("#rule-channels", "ops").await;
    browser.click("#rule-on input[value='killed']").await;
    browser.click("#create-rule").await;
    browser.text_when("#rules", |t| t.contains("kills")).await;
    assert_eq!(rules().await[0]["on"], json!(["killed"]));
    // A kill: delivered to the receiver, and shown with its attempt.
    let run = plane.run_now("ads").await;
    plane
        .must(Method::POST, &format!("/runs/{run}/kill"), json!({}))
        .await;
    browser.goto(&format!("{root}/alerts")).await;
    let deliveries = browser
        .text_when("#deliveries", |t| t.contains("delivered"))
        .await;
    assert!(
        deliveries.contains(&format!("run {run} was killed")),
        "{deliveries}"
    );
    assert_eq!(hook.received().len(), 1);
    assert_eq!(browser.find_all("#deliveries tr.attempt").await.len(), 1);
    browser.screenshot("alerts").await;
    // A viewer sees them, and may change nothing.
    browser.click("#signout").await;
    sign_in(&browser, root, "view").await;
    browser.goto(&format!("{root}/alerts")).await;
    browser.text_when("#channels", |t| t.contains("ops")).await;
    assert!(browser.find_all("#channels button").await.is_empty());
    assert!(browser.find_all("#new-channel").await.is_empty());
    assert!(browser.find_all("#new-rule").await.is_empty());
    plane.cluster.shutdown().await;
}
