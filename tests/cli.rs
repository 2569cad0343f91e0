//! The `herald` command line as an operator uses it: the real binary against a real daemon.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::Receiver;
use common::daemon::{ADMIN, Daemon};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// `herald ARGS` with the daemon's address and admin token, and nothing from the outer
/// environment that could point it elsewhere.
fn herald(daemon: Option<&Daemon>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    for var in [
        "HERALD_URL",
        "HERALD_TOKEN",
        "HERALD_ADMIN_TOKEN",
        "NO_COLOR",
    ] {
        command.env_remove(var);
    }
    if let Some(daemon) = daemon {
        command
            .env("HERALD_URL", &daemon.base)
            .env("HERALD_TOKEN", ADMIN);
    }
    command.stdin(Stdio::null()).kill_on_drop(true);
    command
}

async fn run(daemon: Option<&Daemon>, args: &[&str]) -> Output {
    tokio::time::timeout(Duration::from_secs(30), herald(daemon).args(args).output())
        .await
        .expect("herald command did not finish in 30 s")
        .unwrap()
}

/// Runs and expects success; returns stdout.
async fn ok(daemon: &Daemon, args: &[&str]) -> String {
    let output = run(Some(daemon), args).await;
    let (stdout, stderr) = texts(&output);
    assert!(
        output.status.success(),
        "herald {args:?}: {stderr}\n{stdout}"
    );
    stdout
}

async fn json(daemon: &Daemon, args: &[&str]) -> Value {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let stdout = ok(daemon, &with_json).await;
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

/// Runs `args` until its output contains `needle` (an outcome is recorded just after the
/// receiver answers); panics after 10 s.
async fn until(daemon: &Daemon, args: &[&str], needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let printed = ok(daemon, args).await;
        if printed.contains(needle) {
            return printed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{args:?} never printed {needle:?}:\n{printed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn texts(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `herald receive` on a free port, started and listening.
struct Receive {
    child: Child,
    port: u16,
    /// Everything it prints after its first line.
    printed: tokio::task::JoinHandle<String>,
}

impl Receive {
    async fn start(args: &[&str]) -> Receive {
        // Port 0: the receiver binds a free one and prints it (a port picked here could be
        // taken by another test before the receiver binds it).
        let mut child = herald(None)
            .args(["receive", "--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("receiver did not start");
        let first = format!("{first:?}");
        let port = first
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|port| port.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no listening address in {first}"));
        let printed = tokio::spawn(async move {
            let mut text = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        Receive {
            child,
            port,
            printed,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/callbacks", self.port)
    }

    /// Waits for the receiver to exit by itself (`--exit-after`) and returns what it printed.
    async fn finish(mut self) -> String {
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the receiver did not get its requests in 20 s")
            .unwrap();
        assert!(status.success());
        self.printed.await.unwrap()
    }
}

fn write_policy(dir: &Path, name: &str, body: &str) {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join(format!("{name}.toml")),
        format!("name = \"{name}\"\n{body}"),
    )
    .unwrap();
}

#[tokio::test]
async fn the_quick_start_delivers_and_the_receiver_verifies_each_signature() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let table = [
        (
            "tolq",
            "customer-api-key",
            "X-Tolq-Signature (HMAC-SHA1 HEX): ok",
        ),
        (
            "standard-webhooks",
            secret,
            "webhook-signature (Standard Webhooks v1): ok",
        ),
    ];
    for (policy, secret, verdict) in table {
        let receive = Receive::start(&["--secret", secret, "--exit-after", "1"]).await;
        let tenant = format!("t-{policy}");
        let created = ok(
            &daemon,
            &[
                "endpoints",
                "create",
                "--tenant",
                &tenant,
                "--policy",
                policy,
                "--default",
                "--url",
                &receive.url(),
                "--secret",
                secret,
            ],
        )
        .await;
        assert!(created.starts_with("created endpoint "), "{created}");
        let sent = ok(
            &daemon,
            &[
                "send",
                "--tenant",
                &tenant,
                "--event-type",
                "job.completed",
                "--payload",
                r#"{"job_id": 7}"#,
            ],
        )
        .await;
        assert!(
            sent.contains("accepted message") && sent.contains("1 delivery"),
            "{sent}"
        );
        let printed = receive.finish().await;
        assert!(printed.contains(r#"{"job_id":7}"#), "{printed}");
        assert!(printed.contains("herald-message-id: "), "{printed}");
        assert!(printed.contains(verdict), "{policy}: {printed}");
    }

    // The wrong secret is a mismatch, and a token policy checks the token.
    let receive = Receive::start(&["--secret", "not-the-key", "--exit-after", "1"]).await;
    ok(
        &daemon,
        &[
            "endpoints",
            "create",
            "--tenant",
            "wrong",
            "--policy",
            "tolq",
            "--url",
            &receive.url(),
            "--secret",
            "customer-api-key",
        ],
    )
    .await;
    ok(
        &daemon,
        &[
            "send",
            "--tenant",
            "wrong",
            "--event-type",
            "e",
            "--payload",
            "{}",
        ],
    )
    .await;
    assert!(
        receive
            .finish()
            .await
            .contains("X-Tolq-Signature (HMAC-SHA1 HEX): MISMATCH")
    );
    let receive =
        Receive::start(&["--security-token", "tok-123", "--exit-after", "1", "--json"]).await;
    // Without its token, the error names the flag (`--token` is the admin token).
    let url = receive.url();
    let create = [
        "endpoints",
        "create",
        "--tenant",
        "phrase",
        "--policy",
        "phrase",
        "--url",
        &url,
    ];
    let refused = run(Some(&daemon), &create).await;
    assert!(!refused.status.success());
    assert!(
        texts(&refused).1.contains("--security-token"),
        "{refused:?}"
    );
    ok(
        &daemon,
        &[&create[..], &["--security-token", "tok-123"]].concat(),
    )
    .await;
    ok(
        &daemon,
        &[
            "send",
            "--tenant",
            "phrase",
            "--event-type",
            "e",
            "--payload",
            "{}",
        ],
    )
    .await;
    // With --json, one object a line.
    let printed = receive.finish().await;
    let request: Value = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(request["headers"]["x-memsource-token"], "tok-123");
    assert_eq!(
        request["signatures"][0],
        "signature: x-memsource-token (token): ok"
    );

    // /metrics describes every metric and buckets durations and group sizes.
    let text = daemon.scrape().await;
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
    for histogram in [
        "herald_attempt_duration_seconds",
        "herald_group_commit_size",
    ] {
        assert!(
            text.contains(&format!("# TYPE {histogram} histogram")),
            "{histogram}: {text}"
        );
    }
    assert!(
        text.contains("herald_group_commit_size_bucket{le=\"1\"}"),
        "{text}"
    );
    assert!(!text.contains("quantile="), "summaries left: {text}");
}

#[tokio::test]
async fn endpoints_are_managed_from_the_cli() {
    let receiver = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let created = json(
        &daemon,
        &[
            "endpoints",
            "create",
            "--tenant",
            "acme",
            "--policy",
            "quick",
            "--url",
            &receiver.url(),
            "--default",
        ],
    )
    .await;
    // The daemon's field order is kept: the id comes first.
    assert_eq!(created.as_object().unwrap().keys().next().unwrap(), "id");
    let id = created["id"].as_str().unwrap().to_string();

    let list = ok(&daemon, &["endpoints", "list"]).await;
    assert!(list.contains(&id) && list.contains("enabled"), "{list}");
    let updated = ok(
        &daemon,
        &[
            "endpoints",
            "update",
            &id,
            "--header",
            "X-Env=prod",
            "--event-type",
            "job.completed",
            "--rate-limit",
            "2.5",
        ],
    )
    .await;
    // The update's answer shows the limit it set, not the one before.
    assert!(
        updated.contains("rate limit   2.5/s (endpoint's)"),
        "{updated}"
    );
    let shown = ok(&daemon, &["endpoints", "show", &id]).await;
    assert!(
        shown.contains("X-Env")
            && shown.contains("job.completed")
            && shown.contains("rate limit   2.5/s (endpoint's)"),
        "{shown}"
    );
    let refused = run(
        Some(&daemon),
        &["endpoints", "update", &id, "--rate-limit", "0"],
    )
    .await;
    assert!(!refused.status.success());
    assert!(
        texts(&refused).1.contains("rate_limit must be"),
        "{refused:?}"
    );
    ok(
        &daemon,
        &["endpoints", "update", &id, "--rate-limit", "none"],
    )
    .await;
    let shown = ok(&daemon, &["endpoints", "show", &id]).await;
    assert!(shown.contains("rate limit   none"), "{shown}");

    let disabled = ok(&daemon, &["endpoints", "disable", &id]).await;
    assert!(disabled.contains("is disabled"), "{disabled}");
    let sent = json(
        &daemon,
        &[
            "send",
            "--tenant",
            "acme",
            "--event-type",
            "job.completed",
            "--payload",
            "{}",
        ],
    )
    .await;
    let delivery = sent["deliveries"][0]["id"].as_str().unwrap().to_string();
    let held = ok(&daemon, &["deliveries", "show", &delivery]).await;
    assert!(
        held.contains("held       endpoint disabled: by an operator"),
        "{held}"
    );
    assert!(held.contains("tenant acme, event job.completed"), "{held}");
    assert!(held.contains("policy quick"), "{held}");
    ok(&daemon, &["endpoints", "enable", &id]).await;
    until(
        &daemon,
        &["deliveries", "show", &delivery],
        "succeeded on attempt 1 of 50",
    )
    .await;

    let tested = ok(&daemon, &["endpoints", "test", &id]).await;
    assert!(tested.starts_with("success: HTTP 200"), "{tested}");
    let stats = ok(&daemon, &["endpoints", "stats", &id]).await;
    assert_eq!(stats.lines().count(), 15, "a header and 14 days: {stats}");
    assert!(stats.lines().last().unwrap().contains('█'), "{stats}");

    // Deleting asks; without a terminal and without --yes nothing is deleted.
    let refused = run(Some(&daemon), &["endpoints", "delete", &id]).await;
    assert!(!refused.status.success());
    assert!(texts(&refused).1.contains("--yes"));
    ok(&daemon, &["endpoints", "show", &id]).await;
    ok(&daemon, &["endpoints", "delete", &id, "--yes"]).await;
    let gone = run(Some(&daemon), &["endpoints", "show", &id]).await;
    assert!(
        texts(&gone).1.contains("not_found (404)"),
        "{:?}",
        texts(&gone)
    );
}

#[tokio::test]
async fn deliveries_list_newest_first_and_says_how_many_more() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let endpoint = json(
        &daemon,
        &[
            "endpoints",
            "create",
            "--tenant",
            "acme",
            "--policy",
            "quick",
            "--url",
            "http://127.0.0.1:9/never",
        ],
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    ok(&daemon, &["endpoints", "disable", id]).await; // deliveries stay held, in order
    let mut sent = Vec::new();
    for i in 0..5 {
        let payload = format!("{{\"i\": {i}}}");
        let receipt = json(
            &daemon,
            &[
                "send",
                "--tenant",
                "acme",
                "--event-type",
                "e",
                "--payload",
                &payload,
            ],
        )
        .await;
        sent.push(receipt["deliveries"][0]["id"].as_str().unwrap().to_string());
    }
    let page = ok(
        &daemon,
        &["deliveries", "list", "--limit", "2", "--tenant", "acme"],
    )
    .await;
    let rows: Vec<&str> = page.lines().skip(1).take(2).collect();
    assert!(
        rows[0].starts_with(&sent[4]) && rows[1].starts_with(&sent[3]),
        "{page}"
    );
    let last = page.lines().last().unwrap();
    let expected = format!("3 more — use --cursor {}", sent[3]);
    assert_eq!(last, expected, "{page}");

    let next = ok(
        &daemon,
        &["deliveries", "list", "--limit", "2", "--cursor", &sent[3]],
    )
    .await;
    assert!(next.lines().nth(1).unwrap().starts_with(&sent[2]), "{next}");
    assert!(
        next.ends_with(&format!("1 more — use --cursor {}\n", sent[1])),
        "{next}"
    );

    let oldest = json(
        &daemon,
        &["deliveries", "list", "--oldest-first", "--status", "held"],
    )
    .await;
    let ids: Vec<&str> = oldest["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, sent.iter().map(String::as_str).collect::<Vec<_>>());
}

#[tokio::test]
async fn deliveries_show_says_which_attempt_of_the_schedule_and_replay_status_follows() {
    let receiver = Receiver::start(|_, _| common::Reply::Status(500, "down for maintenance")).await;
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        "twice",
        "[schedule]\nkind = \"explicit\"\ndelays = [\"100ms\"]\n[request]\ntimeout = \"2s\"\n",
    );
    let daemon = Daemon::start(dir.path());
    let endpoint = json(
        &daemon,
        &[
            "endpoints",
            "create",
            "--tenant",
            "acme",
            "--policy",
            "twice",
            "--url",
            &receiver.url(),
        ],
    )
    .await;
    let endpoint = endpoint["id"].as_str().unwrap().to_string();
    let receipt = json(
        &daemon,
        &[
            "send",
            "--tenant",
            "acme",
            "--event-type",
            "e",
            "--payload",
            "{}",
        ],
    )
    .await;
    let delivery = receipt["deliveries"][0]["id"].as_str().unwrap().to_string();
    assert!(receiver.wait_for(2, Duration::from_secs(10)).await);
    // The outcome is recorded just after the receiver answers: wait for it, bounded.
    let shown = until(&daemon, &["deliveries", "show", &delivery], "failed after").await;
    assert!(
        shown.contains("status     failed after 2 of 2 attempts"),
        "{shown}"
    );
    assert!(shown.contains("HTTP 500 (rejected), failed"), "{shown}");
    assert!(shown.contains("response: down for maintenance"), "{shown}");
    assert!(
        shown.contains("Z (just now)") || shown.contains(" ago)"),
        "{shown}"
    );
    // `retry` is for pending deliveries; refusing a finished one names what sends it again.
    let refused = run(Some(&daemon), &["deliveries", "retry", &delivery]).await;
    assert!(!refused.status.success());
    let hint = format!("herald deliveries replay {delivery}");
    assert!(texts(&refused).1.contains(&hint), "{refused:?}");

    let started = ok(
        &daemon,
        &["replay", "--endpoint", &endpoint, "--status", "failed"],
    )
    .await;
    let job = started
        .split("herald replay status ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("{started}"))
        .to_string();
    let followed = ok(&daemon, &["replay", "status", &job]).await;
    assert!(followed.trim_end().ends_with("— done"), "{followed}");
    assert!(followed.contains("1/1 replayed"), "{followed}");
    let once = json(&daemon, &["replay", "status", &job, "--no-wait"]).await;
    assert_eq!(once["state"], "done");
    assert!(receiver.wait_for(4, Duration::from_secs(10)).await);

    // The replayed cycle fails too; `deliveries replay` sends it once more.
    until(&daemon, &["deliveries", "show", &delivery], "failed after").await;
    let replayed = ok(&daemon, &["deliveries", "replay", &delivery]).await;
    assert!(replayed.starts_with("replaying delivery"), "{replayed}");
    assert!(receiver.wait_for(5, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn the_daemons_client_options_are_refused_after_serve_and_receive() {
    for (args, names) in [
        (
            &["serve", "--token", "abcdefghijklmnopqrst"][..],
            "--admin-token",
        ),
        (
            &["--token", "abcdefghijklmnopqrst", "serve"][..],
            "--admin-token",
        ),
        (
            &["serve", "--server", "http://127.0.0.1:1", "--json"][..],
            "--listen",
        ),
        (&["receive", "--token", "abc"][..], "--secret"),
    ] {
        let output = run(None, args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let stderr = texts(&output).1;
        assert!(
            stderr.contains("for commands that talk to a running daemon") && stderr.contains(names),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_mistyped_endpoint_filter_is_named_by_its_flag() {
    for command in [&["deliveries", "list"][..], &["replay"][..]] {
        let mut args = command.to_vec();
        args.extend(["--endpoint", "nope"]);
        let output = run(None, &args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let stderr = texts(&output).1;
        assert!(
            stderr.contains("'--endpoint <ID>': not an endpoint id"),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn global_options_go_before_or_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    for args in [
        vec![
            "--server",
            &daemon.base,
            "--token",
            ADMIN,
            "--json",
            "endpoints",
            "list",
        ],
        vec![
            "endpoints",
            "list",
            "--json",
            "--server",
            &daemon.base,
            "--token",
            ADMIN,
        ],
    ] {
        let output = run(None, &args).await;
        let (stdout, stderr) = texts(&output);
        assert!(output.status.success(), "{args:?}: {stderr}");
        let list: Value = serde_json::from_str(&stdout).unwrap();
        assert!(list["endpoints"].is_array());
    }
    let policies = json(&daemon, &["policies", "list"]).await;
    assert!(policies.as_array().unwrap().len() >= 6);
    // Without a token the daemon's 401 comes back with what to do about it.
    let output = run(None, &["deliveries", "list", "--server", &daemon.base]).await;
    assert!(texts(&output).1.contains("unauthorized (401)"));
    assert!(texts(&output).1.contains("HERALD_TOKEN"));
}

#[tokio::test]
async fn an_unreachable_daemon_is_named_with_what_to_check() {
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let output = run(None, &["deliveries", "list", "--server", &server]).await;
    assert!(!output.status.success());
    let stderr = texts(&output).1;
    let expected = format!("cannot reach {server} — is `herald serve` running?");
    assert!(stderr.contains(&expected), "{stderr}");
}

#[tokio::test]
async fn help_lists_every_verb_version_has_the_commit_and_completions_are_printed() {
    let verbs: &[(&[&str], &[&str])] = &[
        (
            &[],
            &[
                "serve",
                "receive",
                "send",
                "endpoints",
                "deliveries",
                "replay",
                "policies",
                "openapi",
                "completions",
            ],
        ),
        (
            &["endpoints"],
            &[
                "list", "show", "create", "update", "enable", "disable", "delete", "test", "stats",
            ],
        ),
        (
            &["deliveries"],
            &["list", "show", "retry", "cancel", "replay"],
        ),
        (&["replay"], &["status"]),
        (
            &["deliveries", "list"],
            &[
                "--status",
                "--endpoint",
                "--tenant",
                "--since",
                "--until",
                "--cursor",
                "--oldest-first",
            ],
        ),
    ];
    for (command, expected) in verbs {
        let mut args = command.to_vec();
        args.push("--help");
        let help = texts(&run(None, &args).await).0;
        for verb in *expected {
            assert!(
                help.contains(&format!("  {verb}")),
                "{command:?} --help lacks {verb}:\n{help}"
            );
        }
    }
    let version = texts(&run(None, &["--version"]).await).0;
    assert!(version.starts_with("herald 0."), "{version}");
    assert!(
        version.contains('('),
        "the commit, or `commit unknown`: {version}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let script = texts(&run(None, &["completions", shell]).await).0;
        assert!(
            script.contains("herald") && script.contains("deliveries"),
            "{shell}"
        );
    }
}

#[tokio::test]
async fn serve_help_lists_every_setting_with_its_variable() {
    let help = texts(&run(None, &["serve", "--help"]).await).0;
    for setting in herald::config::SETTINGS {
        assert!(
            help.contains(&format!("--{}", setting.flag())),
            "{}",
            setting.key
        );
        assert!(help.contains(&setting.env_var()), "{}", setting.key);
    }
}

/// `herald serve` with only the given environment; returns its stderr once it serves or exits.
async fn serve(env: &[(&str, &str)]) -> (Child, String) {
    let mut command = herald(None);
    command.arg("serve").stderr(Stdio::piped());
    for var in [
        "HERALD_LOG",
        "HERALD_DATA_DIR",
        "HERALD_LISTEN",
        "HERALD_ALLOW_PRIVATE_TARGETS",
    ] {
        command.env_remove(var);
    }
    let mut child = command.envs(env.iter().copied()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let read = async {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push_str(&line);
            log.push('\n');
            if line.contains("herald serving") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("serve neither served nor exited in 20 s");
    (child, log)
}

#[tokio::test]
async fn serve_binds_first_logs_plainly_and_refusals_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    // A port in use: nothing is created.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("never");
    let (mut child, log) = serve(&[
        ("HERALD_LISTEN", &listen),
        ("HERALD_DATA_DIR", data.to_str().unwrap()),
    ])
    .await;
    assert!(!child.wait().await.unwrap().success());
    assert!(log.contains(&format!("cannot listen on {listen}")), "{log}");
    assert!(
        !data.exists(),
        "a failed bind left {} behind",
        data.display()
    );
    drop(taken);

    // Served: plain text into a pipe, the absolute data dir, no scheduler chatter; port 0
    // binds a free port, named in the serving line.
    let (mut child, log) = serve(&[
        ("HERALD_LISTEN", "127.0.0.1:0"),
        ("HERALD_DATA_DIR", data.to_str().unwrap()),
    ])
    .await;
    assert!(log.contains("herald serving"), "{log}");
    let listen = log
        .lines()
        .find_map(common::daemon::listening)
        .unwrap_or_else(|| panic!("no listening address in {log}"));
    assert_ne!(listen.port(), 0, "{log}");
    assert!(!log.contains('\u{1b}'), "colours in a pipe: {log:?}");
    assert!(
        log.contains(&format!("store=sled data_dir={}", data.display())),
        "{log}"
    );
    assert!(!log.contains("tokio_cron_scheduler"), "{log}");

    // A second daemon on the same store names the first.
    let (mut second, log) = serve(&[
        ("HERALD_LISTEN", "127.0.0.1:0"),
        ("HERALD_DATA_DIR", data.to_str().unwrap()),
    ])
    .await;
    assert!(!second.wait().await.unwrap().success());
    assert!(
        log.contains(&format!("another herald is using {}", data.display())),
        "{log}"
    );
    if log.contains("by pid ") {
        assert!(
            log.contains(&format!("by pid {}", child.id().unwrap())),
            "{log}"
        );
    }

    // A loopback target without the allowance names the settings that would allow it.
    let base = format!("http://{listen}");
    let output = herald(None)
        .env("HERALD_URL", &base)
        .args([
            "endpoints",
            "create",
            "--tenant",
            "a",
            "--policy",
            "ovesio",
            "--url",
            "http://127.0.0.1:9/x",
        ])
        .output()
        .await
        .unwrap();
    let stderr = texts(&output).1;
    assert!(stderr.contains("invalid_url"), "{stderr}");
    assert!(stderr.contains("127.0.0.1 is loopback"), "{stderr}");
    assert!(
        stderr.contains("HERALD_ALLOW_PRIVATE_TARGETS=true"),
        "{stderr}"
    );
    assert!(stderr.contains("HERALD_ALLOW_CIDRS"), "{stderr}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn policy_descriptions_agree_with_their_schedules() {
    let listed = texts(&run(None, &["policies", "list", "--json"]).await).0;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    for policy in listed.as_array().unwrap() {
        let description = policy["description"].as_str().unwrap();
        let attempts = policy["attempts"].as_u64().unwrap();
        let words: Vec<&str> = description.split_whitespace().collect();
        for pair in words.windows(2) {
            if pair[1].starts_with("attempts")
                && let Ok(claimed) = pair[0].parse::<u64>()
            {
                assert_eq!(claimed, attempts, "{description}");
            }
        }
    }
    let tolq = texts(&run(None, &["policies", "show", "tolq"]).await).0;
    assert!(
        tolq.contains("~2h") && tolq.contains("last attempt 2h 3m 30s after the first"),
        "{tolq}"
    );
    assert!(tolq.contains("success     any 2xx"), "{tolq}");
    assert!(
        !tolq.contains("form_field") && !tolq.contains("status = []"),
        "{tolq}"
    );
    let gengo = texts(&run(None, &["policies", "show", "gengo-15m-12h"]).await).0;
    assert!(
        gengo.contains("HTTP 200") && gengo.contains("field `job`"),
        "{gengo}"
    );
}

#[test]
fn the_readme_embedding_example_is_the_shipped_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/embed.rs")).unwrap();
    let start = readme
        .find("async fn deliver(")
        .expect("README has the embedding example");
    let end = start + readme[start..].find("```").unwrap();
    let deliver = readme[start..end].trim_end();
    assert!(
        example.contains(deliver),
        "examples/embed.rs and the README's `deliver` differ; keep them the same"
    );
}

#[tokio::test]
async fn a_pending_delivery_is_retried_now_or_cancelled() {
    let receiver = Receiver::start(|_, _| common::Reply::Status(503, "busy")).await;
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        "hourly",
        "[schedule]\nkind = \"explicit\"\ndelays = [\"1h\", \"1h\"]\nhonor_retry_after = false\n",
    );
    let daemon = Daemon::start(dir.path());
    json(
        &daemon,
        &[
            "endpoints",
            "create",
            "--tenant",
            "acme",
            "--policy",
            "hourly",
            "--url",
            &receiver.url(),
        ],
    )
    .await;
    let receipt = json(
        &daemon,
        &[
            "send",
            "--tenant",
            "acme",
            "--event-type",
            "e",
            "--payload",
            "{}",
        ],
    )
    .await;
    let delivery = receipt["deliveries"][0]["id"].as_str().unwrap().to_string();
    until(
        &daemon,
        &["deliveries", "show", &delivery],
        "1 of 3 attempts made",
    )
    .await;

    // The next attempt is an hour away; retry makes it now.
    let retried = ok(&daemon, &["deliveries", "retry", &delivery]).await;
    assert!(retried.contains("will be attempted now"), "{retried}");
    assert!(receiver.wait_for(2, Duration::from_secs(10)).await);
    until(
        &daemon,
        &["deliveries", "show", &delivery],
        "2 of 3 attempts made",
    )
    .await;

    let cancelled = ok(&daemon, &["deliveries", "cancel", &delivery]).await;
    assert!(cancelled.contains("is cancelled"), "{cancelled}");
    let shown = ok(&daemon, &["deliveries", "show", &delivery]).await;
    assert!(shown.contains("last error cancelled"), "{shown}");
    let again = run(Some(&daemon), &["deliveries", "cancel", &delivery]).await;
    assert!(!again.status.success());
    assert!(texts(&again).1.contains("(409)"), "{:?}", texts(&again));
}

#[tokio::test]
async fn the_library_opens_without_a_policies_directory_as_the_daemon_does() {
    let dir = tempfile::tempdir().unwrap();
    let herald = herald::Herald::builder()
        .data_dir(dir.path().join("store"))
        .policies_dir(dir.path().join("no-such-directory"))
        .open()
        .await
        .expect("a missing policies directory is not an error");
    assert!(herald.policies().get("tolq").is_some());
    herald.shutdown().await.unwrap();
}
