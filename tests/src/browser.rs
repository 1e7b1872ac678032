//! A real browser for the web UI's tests: Debian's `chromium`, driven over WebDriver through
//! its `chromedriver` (started here on a free port; `tests/run` installs both). Nothing is
//! downloaded; a machine without them fails the test saying what to install.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use thirtyfour::components::SelectElement;
use thirtyfour::prelude::*;

/// A headless chromium session and the driver it runs under (both stopped on drop).
pub struct Browser {
    driver: Option<WebDriver>,
    process: Child,
    _profile: tempfile::TempDir,
}

fn tool(env: &str, default: &str, package: &str) -> String {
    let path = std::env::var(env).unwrap_or_else(|_| default.to_owned());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: the browser tests need Debian's `{package}` (apt-get install -y \
         chromium chromium-driver; tests/run installs it), or {env} set to its path"
    );
    path
}

/// Makes ring rustls's process-wide provider (the workspace builds rustls without choosing one,
/// and plain `reqwest::get` asks for the default).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Browser {
    pub async fn start() -> Self {
        install_crypto();
        let chromium = tool("MERIDIAN_CHROMIUM", "/usr/bin/chromium", "chromium");
        let chromedriver = tool(
            "MERIDIAN_CHROMEDRIVER",
            "/usr/bin/chromedriver",
            "chromium-driver",
        );
        let port = crate::process::free_port();
        let process = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {chromedriver}: {e}"));
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(&chromium).unwrap();
        // The closed network here refuses Chromium's background connections; keep it from
        // trying. A fresh profile per browser: no state between tests.
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1440,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ] {
            caps.add_arg(arg).unwrap();
        }
        let url = format!("http://127.0.0.1:{port}");
        // The driver takes a moment to listen.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let driver = loop {
            match WebDriver::new(&url, caps.clone()).await {
                Ok(d) => break d,
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("connecting to chromedriver on {url}: {e}"),
            }
        };
        Self {
            driver: Some(driver),
            process,
            _profile: profile,
        }
    }

    fn driver(&self) -> &WebDriver {
        self.driver.as_ref().expect("the browser is running")
    }

    pub async fn goto(&self, url: &str) {
        self.driver()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("going to {url}: {e}"));
    }

    /// The element `css` selects, waited for (pages render at once; a live update may lag).
    pub async fn find(&self, css: &str) -> WebElement {
        self.driver()
            .query(By::Css(css))
            .wait(Duration::from_secs(10), Duration::from_millis(50))
            .first()
            .await
            .unwrap_or_else(|e| panic!("finding `{css}`: {e}"))
    }

    /// The visible text of `css` once `done` holds of it: a live update (an htmx swap) lands
    /// when the server has answered, so this polls the page, for at most 10 s.
    pub async fn text_when(&self, css: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.texts(css).await.join("\n");
            if done(&text) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "`{css}` still reads {text:?} after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn find_all(&self, css: &str) -> Vec<WebElement> {
        self.driver()
            .find_all(By::Css(css))
            .await
            .unwrap_or_else(|e| panic!("finding `{css}`: {e}"))
    }

    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.find_all(css).await {
            out.push(e.text().await.unwrap_or_default());
        }
        out
    }

    /// The `value` of the input or select `css` names.
    pub async fn value(&self, css: &str) -> Option<String> {
        self.find(css).await.prop("value").await.unwrap()
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    pub async fn select(&self, css: &str, value: &str) {
        let e = self.find(css).await;
        SelectElement::new(&e)
            .await
            .unwrap()
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("choosing `{value}` in `{css}`: {e}"));
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// Clicks `css` (a submit or a link) and waits until the page it was on is gone, so what
    /// is read next is the answer's page.
    pub async fn submit(&self, css: &str) {
        let page = self.find("html").await;
        self.click(css).await;
        page.wait_until()
            .stale()
            .await
            .unwrap_or_else(|e| panic!("after clicking `{css}` the page stayed: {e}"));
    }

    /// The value of the browser's cookie `name` for the current site (to fetch what a link
    /// gives with the browser's session).
    pub async fn cookie(&self, name: &str) -> String {
        self.driver()
            .get_named_cookie(name)
            .await
            .unwrap_or_else(|e| panic!("the cookie `{name}`: {e}"))
            .value
    }

    pub async fn accept_alert(&self) {
        self.driver().accept_alert().await.unwrap();
    }

    pub async fn url(&self) -> url::Url {
        self.driver().current_url().await.unwrap()
    }

    /// Runs `script` in the page; what it returns.
    pub async fn eval(&self, script: &str) -> Value {
        self.driver()
            .execute(script, Vec::new())
            .await
            .unwrap()
            .json()
            .clone()
    }

    /// Saves the page as `<dir>/<name>.png`: `MERIDIAN_SCREENSHOTS` names the directory (the
    /// README's images are made with `docs/screenshots`), else the target directory's.
    pub async fn screenshot(&self, name: &str) {
        let dir = std::env::var("MERIDIAN_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|_| crate::profile_dir().join("screenshots"));
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.driver().screenshot_as_png().await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session stops its chromium; killing only the driver could leave it behind.
        if let Some(driver) = self.driver.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            tokio::task::block_in_place(|| {
                let _ = handle.block_on(driver.quit());
            });
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
