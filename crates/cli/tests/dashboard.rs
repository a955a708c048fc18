//! The web dashboard in a real headless Chromium, against a real `vgrid
//! serve` over real TLS, with a job that runs in a real QEMU VM: log in
//! (a wrong token first), add a user, submit (a bad job file first),
//! watch the job's state change on the queue page without a reload, its
//! node, output and history, cancel a job, log out, and as a plain user
//! see neither the users page nor the admin's jobs. Skipped, saying why,
//! when Chromium, QEMU or the stock image is missing; under `CI=true` that
//! fails instead.
//!
//! The browser trusts exactly the controller's server key
//! (`--ignore-certificate-errors-spki-list`, with its own profile), never
//! every certificate.
//!
//! Screenshots of every page, at a laptop's and a phone's width, go to
//! `$VGRID_DASHBOARD_SCREENSHOTS` (default
//! `target/vgrid-test/screenshots`); `docs/dashboard/` holds the ones of
//! `VGRID_DASHBOARD_SCREENSHOTS=docs/dashboard`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vgrid_testkit::browser::{Browser, require_chromium, spki_pin};
use vgrid_testkit::local::Local;

const LONG: Duration = Duration::from_secs(600);
const SHORT: Duration = Duration::from_secs(20);

fn screenshot_dir() -> PathBuf {
    match std::env::var_os("VGRID_DASHBOARD_SCREENSHOTS") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                vgrid_testkit::workspace_root().join(dir)
            }
        }
        None => vgrid_testkit::test_root().join("screenshots"),
    }
}

/// A JavaScript string literal of `s`.
fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

struct Page {
    browser: Browser,
    shots: PathBuf,
    log: PathBuf,
}

impl Page {
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        self.browser
            .eval(expression)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.server_log()))
    }

    fn text(&mut self, expression: &str) -> String {
        self.eval(expression)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn wait(&mut self, what: &str, expression: &str, timeout: Duration) -> serde_json::Value {
        match self.browser.wait_for(what, expression, timeout) {
            Ok(v) => v,
            Err(e) => {
                let body = self.text("document.body.innerText");
                panic!("{e}\npage:\n{body}\nserver log:\n{}", self.server_log())
            }
        }
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Goes to a page of the dashboard by its hash route and waits until
    /// it has shown fresh data once.
    fn open(&mut self, route: &str, page: &str) {
        self.eval("delete document.body.dataset.refreshed");
        self.eval(&format!("location.hash = {}", js(route)));
        self.wait(
            &format!("the {page} page"),
            &format!(
                "document.body.dataset.page === {} && !!document.body.dataset.refreshed",
                js(page)
            ),
            SHORT,
        );
    }

    /// A PNG of the page at a laptop's width and at a phone's.
    fn shoot(&mut self, name: &str) {
        for (suffix, width, height, scale, mobile) in [
            ("laptop", 1280, 800, 1.0, false),
            ("phone", 390, 844, 2.0, true),
        ] {
            self.browser
                .set_viewport(width, height, scale, mobile)
                .expect("viewport");
            // Let the layout settle at the new width.
            std::thread::sleep(Duration::from_millis(300));
            // Readable means nothing wider than the screen: no sideways
            // scrolling of the whole page (wide tables scroll in place).
            let overflow = self.eval(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth",
            );
            assert!(
                overflow.as_i64().is_some_and(|o| o <= 0),
                "the {name} page is {overflow} px wider than a {width} px screen"
            );
            let path = self.shots.join(format!("{name}-{suffix}.png"));
            self.browser.screenshot(&path).expect("screenshot");
        }
        self.browser
            .set_viewport(1280, 800, 1.0, false)
            .expect("viewport");
    }

    fn submit(&mut self, source: &str, hold: bool) {
        self.eval(&format!(
            "document.getElementById('job-source').value = {};
             document.getElementById('job-hold').checked = {hold};
             document.getElementById('submit-result').hidden = true;
             document.getElementById('submit-form').requestSubmit()",
            js(source)
        ));
        self.wait(
            "the submission's answer",
            "!document.getElementById('submit-result').hidden",
            SHORT,
        );
    }

    /// The id of the job the last submission made.
    fn submitted(&mut self) -> u64 {
        let text = self.text("document.getElementById('submit-result').textContent");
        text.strip_prefix("Submitted job ")
            .and_then(|t| t.strip_suffix('.'))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("not a submission: {text:?}"))
    }

    fn job_state(&mut self, id: u64) -> String {
        self.text(&format!(
            "(document.querySelector('tr[data-job=\"{id}\"] .state') || {{}}).textContent || ''"
        ))
    }

    fn login(&mut self, token: &str) {
        self.eval(&format!(
            "document.getElementById('login-error').hidden = true;
             document.getElementById('token').value = {};
             document.getElementById('login').requestSubmit()",
            js(token)
        ));
    }
}

#[test]
fn the_dashboard_in_a_real_browser_logs_in_submits_watches_cancels_and_hides_what_a_user_may_not_see()
 {
    let Some(chromium) = require_chromium() else {
        return;
    };
    let Some(_qemu) = vgrid_testkit::require_qemu() else {
        return;
    };
    let Some(image) = vgrid_testkit::stock_image() else {
        return;
    };
    let dir = vgrid_testkit::data_dir_with_stock_image(&image);
    let data = dir.path();
    let _server = Local::serve(
        Path::new(env!("CARGO_BIN_EXE_vgrid")),
        data,
        &["--cpus", "2", "--memory-mb", "2048"],
    );
    let url = std::fs::read_to_string(data.join("url")).expect("url");
    let admin_token = std::fs::read_to_string(data.join("admin.token")).expect("admin token");
    let server_cert = std::fs::read_to_string(data.join("tls/server.pem")).expect("server cert");
    let pin = spki_pin(&server_cert).expect("the server's key");
    // Without the pin, the controller's certificate is refused: the pin is
    // what the browser trusts, nothing looser.
    {
        let mut stranger = Browser::launch(&chromium, &[]).expect("chromium starts");
        let refused = stranger
            .navigate(&format!("{}/", url.trim()))
            .expect_err("an unknown CA is refused");
        assert!(refused.contains("ERR_CERT"), "{refused}");
    }
    let browser = Browser::launch(
        &chromium,
        &[format!("--ignore-certificate-errors-spki-list={pin}")],
    )
    .expect("chromium starts");
    let mut page = Page {
        browser,
        shots: screenshot_dir(),
        log: data.join("serve.log"),
    };

    // The dashboard is at `/`, over the controller's TLS.
    page.browser
        .navigate(&format!("{}/", url.trim()))
        .unwrap_or_else(|e| panic!("{e}"));
    page.wait(
        "the login form",
        "!document.getElementById('login-view').hidden",
        SHORT,
    );
    page.shoot("login");

    // A wrong token: the server's reason, and still the login form.
    page.login("vgt_not-a-token");
    let error = page.wait(
        "the login error",
        "!document.getElementById('login-error').hidden && document.getElementById('login-error').textContent",
        SHORT,
    );
    assert_eq!(error, "the token is not valid");
    assert_eq!(page.eval("document.getElementById('app').hidden"), true);

    // The admin's token opens a session: an HttpOnly, Secure,
    // SameSite=Strict cookie the page's script cannot read.
    page.login(admin_token.trim());
    page.wait(
        "the queue page",
        "document.body.dataset.page === 'queue' && !!document.body.dataset.refreshed",
        SHORT,
    );
    let cookies = page
        .browser
        .call("Network.getCookies", serde_json::json!({}))
        .expect("cookies");
    let session = cookies["cookies"]
        .as_array()
        .expect("cookies")
        .iter()
        .find(|c| c["name"] == "__Host-vgrid-session")
        .unwrap_or_else(|| panic!("no session cookie: {cookies}"));
    assert_eq!(
        (
            &session["httpOnly"],
            &session["secure"],
            &session["sameSite"]
        ),
        (
            &serde_json::json!(true),
            &serde_json::json!(true),
            &serde_json::json!("Strict")
        )
    );
    assert_eq!(page.eval("document.cookie"), "");
    assert_eq!(
        page.eval("document.getElementById('nav-users').hidden"),
        false
    );

    // The admin adds a user on the users page; the token is shown once.
    page.open("#/users", "users");
    page.eval(
        "document.getElementById('user-name').value = 'alice';
         document.getElementById('user-form').requestSubmit()",
    );
    let alice_token = page.wait(
        "alice's token",
        "(document.getElementById('new-token') || {}).textContent",
        SHORT,
    );
    let alice_token = alice_token.as_str().expect("token").to_string();
    page.shoot("users");

    // A bad job file: the server's error, with file, line, column and field.
    page.open("#/queue", "queue");
    page.submit(
        "image = \"tiny\"\ncommand = [\"/bin/true\"]\ncpus = 0\n",
        false,
    );
    assert_eq!(
        page.eval("document.getElementById('submit-result').className"),
        "error"
    );
    let refused = page.text("document.getElementById('submit-result').textContent");
    assert!(
        refused.starts_with("job.toml:3:8: field `cpus`"),
        "{refused}"
    );

    // A job that runs in a VM: its state changes on the queue page, which
    // is never reloaded (the marker set here survives).
    page.eval("window.vgridMarker = 'no reload'");
    page.submit(
        "image = \"tiny\"\ncpus = 1\nmemory_mb = 256\ncommand = [\"/bin/sh\", \"-c\", \"echo '<b id=injected>hello</b> from the dashboard'; sleep 8; echo bye\"]\n",
        false,
    );
    let job = page.submitted();
    let mut seen = BTreeSet::new();
    let deadline = std::time::Instant::now() + LONG;
    while !seen.contains("running") {
        let state = page.job_state(job);
        if !state.is_empty() {
            seen.insert(state.clone());
        }
        assert!(
            !matches!(state.as_str(), "failed" | "cancelled" | "done"),
            "job {job} ended before it was seen running: {seen:?}\n{}",
            page.server_log()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "job {job} never showed running: {seen:?}\n{}",
            page.server_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen.len() >= 2,
        "the row showed one state only, so it did not change live: {seen:?}"
    );
    page.shoot("queue");

    // Its node shows it, with its VM.
    page.open("#/nodes", "nodes");
    let node = page.text("document.querySelector('tr[data-node=\"local\"]').innerText");
    assert!(node.contains(&format!("job {job}")), "{node}");
    assert!(node.contains("1 VM(s)"), "{node}");
    page.shoot("nodes");

    // Its page: the output as it comes, then the end, history included.
    page.open(&format!("#/jobs/{job}"), "job");
    page.wait(
        "the job to end on its page",
        "document.querySelector('[data-field=\"state\"]').textContent === 'done'",
        LONG,
    );
    page.wait(
        "the whole output",
        "document.getElementById('job-output').textContent.includes('bye')",
        SHORT,
    );
    let shown = page.text("document.getElementById('job-output').textContent");
    let stored = page.text(&format!(
        "fetch('/v1/jobs/{job}/output').then(r => r.text())"
    ));
    assert_eq!(
        (shown.as_str(), stored.as_str()),
        (
            "<b id=injected>hello</b> from the dashboard\nbye\n",
            "<b id=injected>hello</b> from the dashboard\nbye\n"
        ),
        "the page's output, then the controller's"
    );
    // Output is text, never HTML.
    assert_eq!(
        page.eval("document.getElementById('injected') === null"),
        true
    );
    let history = page.text("document.getElementById('job-history').innerText");
    for state in ["pending", "staging", "booting", "running", "done"] {
        assert!(history.contains(state), "{state} missing from {history}");
    }
    assert_eq!(page.eval("window.vgridMarker"), "no reload");
    page.shoot("job");

    // The images page: the stock image, on the local node.
    page.open("#/images", "images");
    let tiny = page.text("document.querySelector('tr[data-image=\"tiny\"]').innerText");
    assert!(tiny.contains("local"), "{tiny}");
    page.shoot("images");

    // Cancelling a job that has ended meanwhile (a row a moment old):
    // the controller's refusal, on the page.
    page.open("#/queue", "queue");
    page.eval(&format!("control({job}, 'cancel')"));
    let refused = page.wait(
        "the refused cancel",
        "!document.getElementById('flash').hidden && document.getElementById('flash').textContent",
        SHORT,
    );
    assert_eq!(
        refused,
        format!("cancel job {job}: job {job} has already ended").as_str()
    );

    // A held job, cancelled from the queue page.
    page.submit(
        "image = \"tiny\"\ncommand = [\"/bin/sleep\", \"600\"]\n",
        true,
    );
    let held = page.submitted();
    page.wait(
        "the held job",
        &format!(
            "(document.querySelector('tr[data-job=\"{held}\"] .state') || {{}}).textContent === 'held'"
        ),
        SHORT,
    );
    page.eval(&format!(
        "document.querySelector('tr[data-job=\"{held}\"] button[data-action=\"cancel\"]').click()"
    ));
    page.wait(
        "the cancelled job",
        &format!(
            "(document.querySelector('tr[data-job=\"{held}\"] .state') || {{}}).textContent === 'cancelled'"
        ),
        SHORT,
    );
    assert_eq!(
        page.eval(&format!(
            "document.querySelectorAll('tr[data-job=\"{held}\"] button[data-action=\"cancel\"]').length"
        )),
        0,
        "an ended job has no cancel button"
    );

    // Logging out ends the session: the page is back at the login form,
    // and the cookie no longer opens the API.
    page.eval("document.getElementById('logout').click()");
    page.wait(
        "the login form after logout",
        "!document.getElementById('login-view').hidden",
        SHORT,
    );
    let status = page.eval("fetch('/v1/jobs').then(r => r.status)");
    assert_eq!(status, 401);

    // Alice, a plain user: no users page, none of the admin's jobs, and
    // the admin's job is not found by its id.
    page.login(&alice_token);
    page.wait(
        "alice's queue page",
        "document.body.dataset.page === 'queue' && !!document.body.dataset.refreshed",
        SHORT,
    );
    assert_eq!(
        page.text("document.getElementById('who').textContent"),
        "alice"
    );
    assert_eq!(
        page.eval("document.getElementById('nav-users').hidden"),
        true
    );
    assert_eq!(page.eval("!!document.getElementById('all-users')"), false);
    assert_eq!(
        page.eval("document.querySelectorAll('tr[data-job]').length"),
        0,
        "alice sees the admin's jobs"
    );
    page.submit(
        "image = \"tiny\"\ncommand = [\"/bin/sleep\", \"600\"]\n",
        true,
    );
    let mine = page.submitted();
    page.wait(
        "alice's own job",
        &format!("!!document.querySelector('tr[data-job=\"{mine}\"]')"),
        SHORT,
    );
    assert_eq!(
        page.eval("document.querySelectorAll('tr[data-job]').length"),
        1
    );
    page.eval(&format!("location.hash = '#/jobs/{job}'"));
    let flash = page.wait(
        "the admin's job refused to alice",
        "!document.getElementById('flash').hidden && document.getElementById('flash').textContent",
        SHORT,
    );
    assert!(
        flash
            .as_str()
            .is_some_and(|f| f.contains(&format!("job {job} does not exist"))),
        "{flash}"
    );
    page.open("#/users", "users");
    assert_eq!(
        page.text("document.getElementById('users-forbidden').textContent"),
        "The users page is for administrators."
    );
    // The API refuses what the page hides: adding a user as alice.
    let status = page.eval(
        "fetch('/v1/users', {method: 'POST', headers: {'X-Vgrid-Csrf': '1', 'Content-Type': 'application/json'}, body: '{\"name\": \"mallory\"}'}).then(r => r.status)",
    );
    assert_eq!(status, 403);
    // A state-changing request without the CSRF header is refused.
    let status = page.eval(&format!(
        "fetch('/v1/jobs/{mine}/cancel', {{method: 'POST'}}).then(r => r.status)"
    ));
    assert_eq!(status, 403);
    page.open("#/queue", "queue");
    assert_eq!(
        page.job_state(mine),
        "held",
        "the refused cancel changed nothing"
    );

    let errors = page.browser.page_errors().to_vec();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
}
