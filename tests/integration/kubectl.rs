//! The real kubectl against the apiserver stand-in (issue 20): kubeconfigs written by
//! `kubectl config set-cluster / set-credentials / set-context / use-context` in every shape,
//! each read by kubectl and by the agent, which must reach the stand-in with the same server,
//! CA and credential or refuse with the key named; and kubectl's discovery, `get` and
//! `annotate`. Skipped, saying so, where there is no kubectl.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use yurt_ota_apisim::apiserver::Options;

use crate::util::*;

/// The machine's kubectl, if any (CI installs Debian's `kubernetes-client` where there is none).
pub(crate) fn kubectl(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file());
    if found.is_none() {
        // CI installs one (.ci/run): there a missing kubectl is a broken run, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: no kubectl on this machine, and CI must have one"
        );
        eprintln!("{test}: SKIPPED: no kubectl on this machine");
    }
    found
}

struct Kubectl {
    bin: PathBuf,
    /// HOME and the discovery cache, away from the user's.
    home: PathBuf,
}

impl Kubectl {
    fn run(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .env("HOME", &self.home)
            .env("KUBECACHEDIR", self.home.join("cache"))
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    }

    /// `kubectl config …` on `file`, which must succeed.
    fn config(&self, file: &Path, args: &[&str]) {
        let mut all = vec!["config"];
        all.extend_from_slice(args);
        let out = self.run(file, &all);
        assert!(
            out.status.success(),
            "kubectl {all:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The stand-in's RSA client (`--rsa-client`): a PKCS#1 key, as kubeadm writes them, and its
/// certificate signed by the stand-in's CA, in the group the manifest binds: (cert, key).
fn rsa_client(dir: &Path) -> (PathBuf, PathBuf) {
    assert!(std::fs::read_to_string(dir.join("client-rsa.key"))
        .unwrap()
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    (dir.join("client-rsa.crt"), dir.join("client-rsa.key"))
}

/// What the agent does with a kubeconfig: `Ok` when it listed the node's pods from the
/// stand-in, else the error it named (check-config's, or why it did not list).
fn agent_reads(kubeconfig: &Path) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let upstream = format!(
        "[upstream]\nkind = \"apiserver\"\nkubeconfig = \"{}\"\nnode_name = \"edge-node-1\"\ndetect = \"revision\"\n",
        kubeconfig.display()
    );
    std::fs::write(&cfg, &upstream).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let agent = Agent::start(&upstream);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let pods = get(&agent.url("/pods")).json();
        if pods["items"].as_array().is_some_and(|i| !i.is_empty()) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("listed no pods in 30 s:\n{}", agent.log()))
}

/// kubectl's verdict: whether it read the node's pods.
fn kubectl_reads(k: &Kubectl, kubeconfig: &Path) -> Result<(), String> {
    let out = k.run(
        kubeconfig,
        &[
            "get",
            "--raw",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-node-1",
        ],
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

#[test]
fn kubeconfigs_written_by_kubectl_are_read_as_kubectl_reads_them() {
    let Some(bin) = kubectl("kubeconfigs_written_by_kubectl_are_read_as_kubectl_reads_them") else {
        return;
    };
    let options = Options {
        nodes: apisim_nodes(1),
        ..Options::default()
    };
    let (h, d) = apisim_start(Duration::from_secs(60), options, |c| c.rsa_client = true);
    let home = tempfile::tempdir().unwrap();
    let k = Kubectl {
        bin,
        home: home.path().to_owned(),
    };
    let dir = d.path();
    let s = h.url();
    let ca = dir.join("ca.crt");
    let ca = ca.to_str().unwrap();
    let token = h.token();
    let token_file = dir.join("token");
    let (rsa_crt, rsa_key) = rsa_client(dir);
    let ec = (dir.join("client.crt"), dir.join("client.key"));
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    // kubeadm's kubelet.conf: certificate and key in one rotated PEM file.
    let both = dir.join("kubelet-client-current.pem");
    std::fs::write(
        &both,
        std::fs::read_to_string(&rsa_crt).unwrap() + &std::fs::read_to_string(&rsa_key).unwrap(),
    )
    .unwrap();
    let long =
        "edge fleet cluster of the northern depot with a name long enough to be folded by kubectl";
    // (shape, kubectl commands, whether the agent reaches the stand-in or the key it names)
    type Shape<'a> = (&'a str, Vec<Vec<String>>, Result<(), &'a str>);
    let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    let ctx = |cluster: &str, user: &str| {
        vec![
            v(&["set-context", "c", "--cluster", cluster, "--user", user]),
            v(&["use-context", "c"]),
        ]
    };
    let with = |mut a: Vec<Vec<String>>, b: Vec<Vec<String>>| {
        a.extend(b);
        a
    };
    // Cluster "k" at the stand-in (its CA embedded or named as a file), user "u" as `user` sets
    // it, context "c" current.
    let on_k = |embed: bool, user: Vec<Vec<String>>| {
        let mut cluster = v(&[
            "set-cluster",
            "k",
            "--server",
            &s,
            "--certificate-authority",
            ca,
        ]);
        if embed {
            cluster.push("--embed-certs".into());
        }
        with(with(vec![cluster], user), ctx("k", "u"))
    };
    // User "u" with a client certificate and key (embedded or named as files).
    let cert = |crt: &Path, key: &Path, embed: bool| {
        let mut c = v(&[
            "set-credentials",
            "u",
            "--client-certificate",
            &path(crt),
            "--client-key",
            &path(key),
        ]);
        if embed {
            c.push("--embed-certs".into());
        }
        c
    };
    let shapes: Vec<Shape> = vec![
        (
            "embedded CA, token",
            on_k(true, vec![v(&["set-credentials", "u", "--token", &token])]),
            Ok(()),
        ),
        (
            "CA file, token",
            on_k(false, vec![v(&["set-credentials", "u", "--token", &token])]),
            Ok(()),
        ),
        (
            "CA file, tokenFile",
            on_k(
                false,
                vec![v(&["set", "users.u.tokenFile", &path(&token_file)])],
            ),
            Ok(()),
        ),
        (
            "token and tokenFile (the file's token is the right one)",
            on_k(
                false,
                vec![
                    v(&["set-credentials", "u", "--token", "not-the-token"]),
                    v(&["set", "users.u.tokenFile", &path(&token_file)]),
                ],
            ),
            Ok(()),
        ),
        (
            "EC client certificate, embedded",
            on_k(true, vec![cert(&ec.0, &ec.1, true)]),
            Ok(()),
        ),
        (
            "EC client certificate, files",
            on_k(false, vec![cert(&ec.0, &ec.1, false)]),
            Ok(()),
        ),
        (
            "RSA client certificate (PKCS#1 key), embedded",
            on_k(true, vec![cert(&rsa_crt, &rsa_key, true)]),
            Ok(()),
        ),
        (
            "kubeadm kubelet.conf (RSA certificate and key in one file)",
            with(
                vec![
                    v(&[
                        "set-cluster",
                        "kubernetes",
                        "--server",
                        &s,
                        "--certificate-authority",
                        ca,
                        "--embed-certs",
                    ]),
                    v(&[
                        "set-credentials",
                        "system:node:edge-node-1",
                        "--client-certificate",
                        &path(&both),
                        "--client-key",
                        &path(&both),
                    ]),
                    v(&[
                        "set-context",
                        "system:node:edge-node-1@kubernetes",
                        "--cluster",
                        "kubernetes",
                        "--user",
                        "system:node:edge-node-1",
                    ]),
                    v(&["use-context", "system:node:edge-node-1@kubernetes"]),
                ],
                vec![],
            ),
            Ok(()),
        ),
        (
            "several contexts, the current one not the first",
            vec![
                v(&[
                    "set-cluster",
                    "elsewhere",
                    "--server",
                    "https://127.0.0.1:1",
                    "--certificate-authority",
                    ca,
                ]),
                v(&[
                    "set-cluster",
                    "k",
                    "--server",
                    &s,
                    "--certificate-authority",
                    ca,
                ]),
                v(&["set-credentials", "nobody", "--token", "wrong"]),
                v(&["set-credentials", "u", "--token", &token]),
                v(&[
                    "set-context",
                    "a",
                    "--cluster",
                    "elsewhere",
                    "--user",
                    "nobody",
                ]),
                v(&["set-context", "b", "--cluster", "k", "--user", "u"]),
                v(&["set-context", "z", "--cluster", "elsewhere", "--user", "u"]),
                v(&["use-context", "b"]),
            ],
            Ok(()),
        ),
        (
            "long names with spaces (folded)",
            vec![
                v(&[
                    "set-cluster",
                    long,
                    "--server",
                    &s,
                    "--certificate-authority",
                    ca,
                ]),
                v(&["set-credentials", long, "--token", &token]),
                v(&["set-context", long, "--cluster", long, "--user", long]),
                v(&["use-context", long]),
            ],
            Ok(()),
        ),
        (
            "names that need quoting",
            vec![
                v(&[
                    "set-cluster",
                    "yes",
                    "--server",
                    &s,
                    "--certificate-authority",
                    ca,
                ]),
                v(&["set-credentials", "6443", "--token", &token]),
                v(&[
                    "set-context",
                    "a: b #c",
                    "--cluster",
                    "yes",
                    "--user",
                    "6443",
                ]),
                v(&["set-context", "*star", "--cluster", "yes", "--user", "6443"]),
                v(&["use-context", "a: b #c"]),
            ],
            Ok(()),
        ),
        (
            "no CA",
            with(
                vec![
                    v(&["set-cluster", "k", "--server", &s]),
                    v(&["set-credentials", "u", "--token", &token]),
                ],
                ctx("k", "u"),
            ),
            Err("no CA for the apiserver"),
        ),
        (
            "insecure-skip-tls-verify",
            with(
                vec![
                    v(&[
                        "set-cluster",
                        "k",
                        "--server",
                        &s,
                        "--insecure-skip-tls-verify",
                    ]),
                    v(&["set-credentials", "u", "--token", &token]),
                ],
                ctx("k", "u"),
            ),
            Err("clusters[k].cluster.insecure-skip-tls-verify: not supported"),
        ),
        (
            "exec credential plugin",
            on_k(
                false,
                vec![v(&[
                    "set-credentials",
                    "u",
                    "--exec-api-version",
                    "client.authentication.k8s.io/v1",
                    "--exec-command",
                    "/bin/false",
                ])],
            ),
            Err("users[u].user.exec: not supported"),
        ),
    ];
    let mut table = vec![
        "| kubeconfig shape (written by kubectl config) | kubectl | yurt-ota |".to_owned(),
        "|---|---|---|".to_owned(),
    ];
    let mut failures = Vec::new();
    // k3s's /etc/rancher/k3s/k3s.yaml as k3s writes it (not by kubectl config): `default`
    // names, everything inline.
    let b64 = |p: &Path| yurt_ota_apisim::apiserver::tls::base64(&std::fs::read(p).unwrap());
    let k3s_yaml = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {s}\n  name: default\n\
         contexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\n\
         kind: Config\npreferences: {{}}\nusers:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&dir.join("ca.crt")),
        b64(&ec.0),
        b64(&ec.1)
    );
    let mut shapes = shapes;
    shapes.insert(7, ("k3s.yaml (as k3s writes it)", Vec::new(), Ok(())));
    for (i, (shape, commands, want)) in shapes.iter().enumerate() {
        let file = dir.join(format!("kubeconfig-{i}"));
        if commands.is_empty() {
            std::fs::write(&file, &k3s_yaml).unwrap();
        }
        for c in commands {
            let args: Vec<&str> = c.iter().map(String::as_str).collect();
            k.config(&file, &args);
        }
        let by_kubectl = kubectl_reads(&k, &file);
        let by_agent = agent_reads(&file);
        let verdict = |r: &Result<(), String>| match r {
            Ok(()) => "reads the pods".to_owned(),
            Err(e) => format!("refused: {}", e.lines().last().unwrap_or_default()),
        };
        table.push(format!(
            "| {shape} | {} | {} |",
            verdict(&by_kubectl),
            verdict(&by_agent)
        ));
        let ok = match (want, &by_agent) {
            (Ok(()), Ok(())) => by_kubectl.is_ok(),
            (Err(key), Err(e)) => e.contains(key),
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{shape}: kubectl {by_kubectl:?}, agent {by_agent:?}\n{}",
                std::fs::read_to_string(&file).unwrap()
            ));
        }
    }
    eprintln!("{}", table.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn kubectl_discovers_gets_and_annotates_and_the_service_account_is_refused_the_rest() {
    let Some(bin) =
        kubectl("kubectl_discovers_gets_and_annotates_and_the_service_account_is_refused_the_rest")
    else {
        return;
    };
    let (h, d) = apisim_start(Duration::from_secs(60), Options::default(), |_| {});
    let home = tempfile::tempdir().unwrap();
    let k = Kubectl {
        bin,
        home: home.path().to_owned(),
    };
    let admin = d.path().join("kubeconfig-admin");
    let sa = d.path().join("kubeconfig");
    let out = k.run(&admin, &["get", "pods", "-A", "-o", "name"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("pod/telemetry-agent-"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = k.run(
        &admin,
        &[
            "-n",
            "edge-apps",
            "annotate",
            "--overwrite",
            "ds",
            "camera-bridge",
            "apps.openyurt.io/max-unavailable=2",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        h.cluster().describe()["daemonsets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "camera-bridge")
            .unwrap()["annotations"]["apps.openyurt.io/max-unavailable"],
        "2"
    );
    // The agent's ServiceAccount may not annotate, nor read Leases outside the fleet's
    // namespace: kubectl shows the apiserver's own Forbidden text.
    let out = k.run(
        &sa,
        &["-n", "edge-apps", "annotate", "ds", "camera-bridge", "x=y"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Error from server (Forbidden)") && err.contains("User \"system:serviceaccount:yurt-ota:yurt-ota\" cannot get resource \"daemonsets\" in API group \"apps\" in the namespace \"edge-apps\""), "{err}");
    let out = k.run(&sa, &["get", "leases", "-A"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot list resource \"leases\" in API group \"coordination.k8s.io\" at the cluster scope"),
        "{err}"
    );
    let out = k.run(&sa, &["get", "leases", "-n", "yurt-ota"]);
    assert!(out.status.success(), "{out:?}");
}

/// The most nodes at once between a DELETE of `ds`'s pod and their replacement's Ready, from
/// the stand-in's record, and the nodes upgraded.
fn down_at_once(
    hist: &[serde_json::Value],
    ds: &str,
) -> (usize, std::collections::BTreeSet<String>) {
    let (mut down, mut most, mut done) = (
        std::collections::BTreeSet::new(),
        0,
        std::collections::BTreeSet::new(),
    );
    for e in hist.iter().filter(|e| e["daemonset"] == ds) {
        let node = e["node"].as_str().unwrap().to_owned();
        match e["event"].as_str() {
            Some("delete") => {
                down.insert(node);
            }
            Some("ready") if down.remove(&node) => {
                done.insert(node);
            }
            _ => {}
        }
        most = most.max(down.len());
    }
    (most, done)
}

/// Issue 20's show: a real kubectl applies the shipped manifest to a stand-in that grants the
/// agent nothing before it, a node's kubeconfig is made from the ServiceAccount's token Secret
/// with `kubectl config`, kubectl annotates a DaemonSet `AdvancedRollingUpdate` with
/// `max-unavailable: 2`, and three agents with that kubeconfig upgrade it under RBAC, never more
/// than two down at once, no call refused.
#[test]
fn kubectl_applies_the_manifest_and_three_agents_with_its_token_upgrade_two_at_a_time() {
    let test = "kubectl_applies_the_manifest_and_three_agents_with_its_token_upgrade_two_at_a_time";
    let Some(bin) = kubectl(test) else {
        return;
    };
    let options = Options {
        nodes: apisim_nodes(3),
        grace: Duration::from_millis(100),
        recreate_delay: Duration::from_millis(200),
        ready_delay: Duration::from_secs(2),
        observe_delay: Duration::from_millis(100),
        ..Options::default()
    };
    // Nothing granted to the agent until the manifest is applied.
    let (h, d) = apisim_start(Duration::from_millis(300), options, |c| {
        c.rbac = Some(String::new())
    });
    let home = tempfile::tempdir().unwrap();
    let k = Kubectl {
        bin,
        home: home.path().to_owned(),
    };
    let admin = d.path().join("kubeconfig-admin");
    let ok = |out: Output| {
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes/rbac.yaml");
    let applied = ok(k.run(
        &admin,
        &[
            "apply",
            "--validate=false",
            "-f",
            manifest.to_str().unwrap(),
        ],
    ));
    assert!(
        applied.contains("clusterrole.rbac.authorization.k8s.io/yurt-ota created"),
        "{applied}"
    );
    // The ServiceAccount's token, from its Secret, into a node's kubeconfig.
    let token = ok(k.run(
        &admin,
        &[
            "-n",
            "yurt-ota",
            "get",
            "secret",
            "yurt-ota-token",
            "-o",
            "jsonpath={.data.token}",
        ],
    ));
    let token = String::from_utf8(
        yurt_ota::upstream::apiserver::kubeconfig::base64(&token).expect("base64"),
    )
    .unwrap();
    let node = d.path().join("node-kubeconfig");
    let ca = d.path().join("ca.crt");
    for args in [
        vec![
            "set-cluster",
            "fleet",
            "--server",
            &h.url(),
            "--certificate-authority",
            ca.to_str().unwrap(),
            "--embed-certs",
        ],
        vec!["set-credentials", "yurt-ota", "--token", &token],
        vec![
            "set-context",
            "yurt-ota",
            "--cluster",
            "fleet",
            "--user",
            "yurt-ota",
        ],
        vec!["use-context", "yurt-ota"],
    ] {
        k.config(&node, &args);
    }
    ok(k.run(
        &admin,
        &[
            "-n",
            "edge-apps",
            "annotate",
            "--overwrite",
            "ds",
            "camera-bridge",
            "apps.openyurt.io/update-strategy=AdvancedRollingUpdate",
            "apps.openyurt.io/max-unavailable=2",
        ],
    ));
    let agents: Vec<Agent> = (1..=3)
        .map(|i| {
            Agent::start(&format!(
                "[upstream]\nkind = \"apiserver\"\nkubeconfig = \"{}\"\nnode_name = \"edge-node-{i}\"\n\
                 detect = \"revision\"\n[policy]\nstable_for = \"300ms\"\ngate_check_interval = \"50ms\"\n\
                 prepull = false\n",
                node.display()
            ))
        })
        .collect();
    for a in &agents {
        wait_for("the budget of 2 seen", Duration::from_secs(60), || {
            get(&a.url("/v1/status")).json()["fleet"]
                .as_array()
                .is_some_and(|f| {
                    f.iter()
                        .any(|d| d["daemonset"] == "edge-apps/camera-bridge" && d["budget"] == 2)
                })
        });
    }
    post(&format!(
        "{}/sim/rollout/edge-apps/camera-bridge",
        h.control_url()
    ));
    let history = || {
        get(&format!("{}/sim/history", h.control_url()))
            .json()
            .as_array()
            .unwrap()
            .clone()
    };
    let start = Instant::now();
    wait_for("three nodes upgraded", Duration::from_secs(120), || {
        down_at_once(&history(), "edge-apps/camera-bridge").1.len() == 3
    });
    let (most, done) = down_at_once(&history(), "edge-apps/camera-bridge");
    eprintln!(
        "{test}: {done:?} upgraded in {:.1} s, at most {most} down at once",
        start.elapsed().as_secs_f64()
    );
    assert!(most <= 2, "{most} down at once");
    let sim = get(&format!("{}/sim", h.control_url())).json();
    let refused: Vec<&String> = sim["requests"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("forbidden"))
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}");
}

/// The k3s recipe of docs/apiserver.md. Where there is a kubectl, its commands run as written in bash
/// against a stand-in that grants the agent nothing before them (the manifest's path is the
/// repository's, `--validate=false` added to the apply, the kubeconfig the admin one): apply, `kubectl create token`, the CA and
/// server read back, the kubeconfig written. Elsewhere its kubeconfig is read out of the page
/// with `$SERVER` filled in. Then, installed into a directory standing for `/etc/yurt-ota/`,
/// the agent lists the node's pods with it.
#[test]
fn the_readmes_k3s_recipe_works_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/apiserver.md"))
            .unwrap();
    let intro = "On a machine with `kubectl` for the cluster:\n\n```sh\n";
    let script = &readme[readme.find(intro).expect("the recipe") + intro.len()..];
    let script = &script[..script.find("```").unwrap()];
    let heredoc = "cat > kubeconfig <<KC\n";
    let body = &script[script.find(heredoc).expect("its kubeconfig") + heredoc.len()..];
    let body = &body[..body.find("\nKC\n").expect("its end")];
    assert!(
        body.contains("cluster: {server: \"$SERVER\""),
        "flow maps, as the recipe writes them:\n{body}"
    );
    let (h, d) = apisim_start(Duration::from_secs(60), Options::default(), |c| {
        c.rbac = Some(String::new())
    });
    let etc = tempfile::tempdir().unwrap();
    let kc = match kubectl("the_readmes_k3s_recipe_works_as_written (its kubectl commands)") {
        Some(bin) => {
            let manifest =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes/rbac.yaml");
            // The stand-in serves no OpenAPI schema for kubectl's client-side validation.
            let script = script
                .replace(
                    "/usr/share/doc/yurt-ota/kubernetes/rbac.yaml",
                    manifest.to_str().unwrap(),
                )
                .replace("kubectl apply -f", "kubectl apply --validate=false -f");
            let out = Command::new("bash")
                .args(["-euo", "pipefail", "-c", &script])
                .current_dir(etc.path())
                .env(
                    "PATH",
                    format!("{}:/usr/bin:/bin", bin.parent().unwrap().display()),
                )
                .env("HOME", etc.path())
                .env("KUBECONFIG", d.path().join("kubeconfig-admin"))
                .output()
                .unwrap();
            assert!(out.status.success(), "the recipe: {out:?}");
            assert_eq!(
                std::fs::read_to_string(etc.path().join("token"))
                    .unwrap()
                    .trim(),
                h.token()
            );
            std::fs::read_to_string(etc.path().join("kubeconfig")).unwrap()
        }
        None => {
            std::fs::copy(d.path().join("ca.crt"), etc.path().join("ca.crt")).unwrap();
            std::fs::write(etc.path().join("token"), h.token()).unwrap();
            body.replace("$SERVER", &h.url())
        }
    };
    // `sudo install … /etc/yurt-ota/`, here into a temporary directory.
    let kubeconfig = etc.path().join("installed-kubeconfig");
    std::fs::write(
        &kubeconfig,
        kc.replace("/etc/yurt-ota/", &format!("{}/", etc.path().display())),
    )
    .unwrap();
    agent_reads(&kubeconfig).unwrap();
}
