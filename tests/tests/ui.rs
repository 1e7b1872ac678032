//! The web UI in a real browser (Debian's chromium over WebDriver), against a real plane: signing
//! in and out; the cross-DC run analysis page showing each viewer only what the policy lets them
//! see; filters that live in the URL; text that stays text; kill for those who may, and a
//! forged form refused. Each test saves screenshots of the pages it visits (the README's are
//! made with `MERIDIAN_SCREENSHOTS=docs/screenshots`).

use meridian_proto::ManualClock;
use meridian_tests::api_plane::{ApiPlane, Cred};
use meridian_tests::browser::Browser;
use reqwest::{Method, StatusCode};
use serde_json::json;

const PASSWORD: &str = "a long enough password";

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

async fn sign_in(browser: &Browser, root: &str, user: &str) {
    browser.goto(&format!("{root}/signin")).await;
    browser.fill("#user", user).await;
    browser.fill("#password", PASSWORD).await;
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
    browser.find("#runs").await;
    let url = browser.url().await;
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
    plane.cluster.shutdown().await;
}
