//! Headless Chromium driven through ChromeDriver over the W3C WebDriver protocol.
//!
//! A dozen WebDriver commands over the HTTP client the crate already has: a full client crate
//! would bring its own TLS stack and a C build for a protocol spoken to localhost.
//!
//! Waiting is done in the page: a script watches the DOM with a `MutationObserver` and answers
//! as soon as what the test waits for appears, or when its timeout runs out.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Desktop and phone viewports the screenshots are taken at.
pub const DESKTOP: (u32, u32) = (1280, 800);
pub const PHONE: (u32, u32) = (390, 844);

/// One ChromeDriver process with one browser session; both end on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    http: reqwest::Client,
    /// `http://127.0.0.1:{port}/session/{id}`.
    session: String,
    session_id: String,
    /// The browser profile: fresh for every session, removed afterwards.
    _profile: tempfile::TempDir,
}

/// A reference to an element of the current page.
pub struct Element(String);

/// Chromium and ChromeDriver, from `HERALD_CHROMIUM` / `HERALD_CHROMEDRIVER` or the `PATH`.
fn find_browser() -> Option<(PathBuf, PathBuf)> {
    let from_env = |name: &str| std::env::var_os(name).map(PathBuf::from);
    let on_path = |names: &[&str]| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
            .find(|candidate| candidate.is_file())
    };
    let chromium = from_env("HERALD_CHROMIUM").or_else(|| {
        on_path(&[
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ])
    })?;
    let driver = from_env("HERALD_CHROMEDRIVER").or_else(|| on_path(&["chromedriver"]))?;
    Some((chromium, driver))
}

impl Browser {
    /// Starts ChromeDriver and a headless browser at the desktop size. `None` (after saying
    /// why) when no browser is installed; with `CI=true` a missing browser is a failure.
    pub async fn start() -> Option<Browser> {
        let Some((chromium, driver_path)) = find_browser() else {
            let why = "no Chromium/ChromeDriver found (install the Debian packages `chromium` and \
                       `chromium-driver`, or set HERALD_CHROMIUM and HERALD_CHROMEDRIVER)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true: the browser tests must run, but {why}");
            }
            eprintln!("skipping the browser test: {why}");
            return None;
        };
        Some(Self::launch(&chromium, &driver_path).await)
    }

    async fn launch(chromium: &Path, driver_path: &Path) -> Browser {
        // Port 0: ChromeDriver picks a free port and says which.
        let mut driver = Command::new(driver_path)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_path.display()));
        let stdout = driver.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(port.parse::<u16>().ok());
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(port)) => port,
            other => {
                let _ = driver.kill();
                panic!("ChromeDriver did not report its port within 20 s: {other:?}");
            }
        };
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--hide-scrollbars".into(),
            "--force-color-profile=srgb".into(),
            "--lang=en-GB".into(),
            format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "unhandledPromptBehavior": "dismiss",
        }}});
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let created = send(
            &http,
            "POST",
            &format!("{base}/session"),
            Some(capabilities),
        )
        .await;
        let session_id = match created {
            Ok(value) => value["sessionId"].as_str().unwrap().to_string(),
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("ChromeDriver could not start {}: {e}", chromium.display());
            }
        };
        let browser = Browser {
            driver,
            port,
            http,
            session: format!("{base}/session/{session_id}"),
            session_id,
            _profile: profile,
        };
        browser
            .cmd(
                "POST",
                "/timeouts",
                Some(json!({"script": 60_000, "pageLoad": 30_000, "implicit": 0})),
            )
            .await;
        browser.resize(DESKTOP).await;
        browser
    }

    async fn try_cmd(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        send(&self.http, method, &format!("{}{path}", self.session), body).await
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.try_cmd(method, path, body).await {
            Ok(value) => value,
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    /// Opens a URL and waits for its load event.
    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// Sets the viewport to exactly `width` × `height` CSS pixels; below 600 px wide the page
    /// is treated as on a phone (its viewport meta tag applies).
    pub async fn resize(&self, (width, height): (u32, u32)) {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(
                json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
                    "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600,
                }}),
            ),
        )
        .await;
    }

    /// Makes the page see `prefers-color-scheme: dark` (or `light`).
    pub async fn color_scheme(&self, scheme: &str) {
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )
        .await;
    }

    /// Sends a Chrome DevTools Protocol command through ChromeDriver.
    pub async fn cdp(&self, command: &str, params: Value) -> Value {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": command, "params": params})),
        )
        .await
    }

    /// Runs a script in the page and returns its value.
    pub async fn script(&self, source: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": source, "args": args})),
        )
        .await
    }

    /// The element `css` selects, which must be there now.
    pub async fn find(&self, css: &str) -> Element {
        let found = self
            .try_cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        match found {
            Ok(value) => Element(value[ELEMENT].as_str().unwrap().to_string()),
            Err(e) => {
                self.screenshot("FAILED-find").await;
                panic!(
                    "no element {css:?} on {}: {e}; the page shows:\n{}",
                    self.location().await,
                    self.page_text().await
                )
            }
        }
    }

    /// How many elements `css` selects now that are rendered (not hidden).
    pub async fn count_visible(&self, css: &str) -> usize {
        self.script(
            "return [...document.querySelectorAll(arguments[0])]
                 .filter((el) => el.getClientRects().length > 0).length;",
            json!([css]),
        )
        .await
        .as_u64()
        .unwrap_or_default() as usize
    }

    /// How many elements `css` selects now.
    pub async fn count(&self, css: &str) -> usize {
        self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .await
        .as_array()
        .map_or(0, Vec::len)
    }

    /// Clicks the element `css` selects, as a user would (it must be visible and enabled).
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.cmd("POST", &format!("/element/{}/click", element.0), None)
            .await;
    }

    /// Presses Enter on the element `css` selects (keyboard use of a button or link).
    pub async fn press_enter(&self, css: &str) {
        let element = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": "\u{E007}" })),
        )
        .await;
    }

    /// Types into the element `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.cmd("POST", &format!("/element/{}/clear", element.0), None)
            .await;
        self.cmd(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The rendered text of the element `css` selects.
    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.cmd("GET", &format!("/element/{}/text", element.0), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The text of the whole page as rendered.
    pub async fn page_text(&self) -> String {
        self.script("return document.body.innerText;", json!([]))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's path and query.
    pub async fn location(&self) -> String {
        self.script("return location.pathname + location.search;", json!([]))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until a visible element matching `css` shows up (and contains `text`, if given);
    /// panics with what the page shows instead, and a screenshot, when `timeout` runs out.
    pub async fn wait_for(&self, css: &str, text: Option<&str>, timeout: Duration) {
        const WATCH: &str = r#"
            const [selector, needle, timeoutMs, done] = arguments;
            const found = () => [...document.querySelectorAll(selector)].some((el) =>
                el.getClientRects().length > 0 && (needle === null || el.textContent.includes(needle)));
            if (found()) return done(true);
            const observer = new MutationObserver(() => {
                if (found()) { observer.disconnect(); clearTimeout(timer); done(true); }
            });
            observer.observe(document.documentElement,
                { subtree: true, childList: true, characterData: true, attributes: true });
            const timer = setTimeout(() => { observer.disconnect(); done(found()); }, timeoutMs);
        "#;
        let appeared = self
            .cmd(
                "POST",
                "/execute/async",
                Some(json!({"script": WATCH, "args": [css, text, timeout.as_millis() as u64]})),
            )
            .await;
        if appeared != Value::Bool(true) {
            self.screenshot("FAILED-wait").await;
            panic!(
                "waited {timeout:?} for {css:?}{} on {}; the page shows:\n{}",
                text.map(|t| format!(" containing {t:?}"))
                    .unwrap_or_default(),
                self.location().await,
                self.page_text().await
            );
        }
    }

    /// Saves what the viewport shows as `target/ui-shots/{name}.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap())
            .unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-shots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    /// Ends the session (ChromeDriver closes the browser), then ChromeDriver itself. Blocking
    /// and dependency-free, so it also runs when a test panics.
    fn drop(&mut self) {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session_id, self.port
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                // The answer comes once the browser has quit; ChromeDriver keeps the
                // connection open after it, so read the answer's start, not to the end.
                let mut answer = [0u8; 512];
                let _ = stream.read(&mut answer);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn send(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut request = http.request(method.parse().unwrap(), url);
    // Every POST carries a JSON object, if only an empty one.
    let body = body.or_else(|| (method == "POST").then(|| json!({})));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let ok = response.status().is_success();
    let text = response.text().await.map_err(|e| e.to_string())?;
    let value: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    if ok {
        Ok(value["value"].clone())
    } else {
        Err(format!(
            "{}: {}",
            value["value"]["error"].as_str().unwrap_or("error"),
            value["value"]["message"].as_str().unwrap_or(&text)
        ))
    }
}
