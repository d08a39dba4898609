//! Fleet delivery through Mender, end to end with the real parts: modules of the ../shared
//! ResNet-20 (cat, dog) decomposed and packed by the `classmod` binary, Mender artifacts written
//! by the real `mender-artifact`, installed, committed and rolled back by the real Mender client
//! (`mender` 3.x, standalone mode, its own configuration and data directory) through our update
//! module (deploy/mender/classmod-module and `classmod-update-module`), while a real
//! `classmod-edge` serves the directory and classifies images dropped into its watched directory.
//!
//! Reference for what the device serves after each step: a fresh runtime opened on the device
//! directory as the step left it (the monolithic truth of the manifest on disk), classifying the
//! same 20 lossless CIFAR-10 PNGs; the serving process must answer the same class with the same
//! score. The second test takes a four-stage bottleneck ResNet in torchvision's layout the same
//! way. Needs root (Mender's client reads its update modules from /usr/share/mender/modules/v3
//! and /etc/mender/artifact_info, which it cannot be told otherwise), `mender-client` and
//! `mender-artifact` (CI installs them), and ../shared: absent, the test says so and skips, and
//! fails under CI.

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use classmod::runtime::host::{ResNet, Tensor};
use classmod::runtime::testing::config;
use classmod::runtime::{Device, ModuleRuntime, Rule};

/// A binary the workspace built beside this test's own (`cargo test --workspace` builds them all).
fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built: run `cargo test --workspace`", path.display());
    path
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn ok(o: Output, what: &str) -> Output {
    assert!(
        o.status.success(),
        "{what}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Whether this machine can run the real client here; else why not (skip, or fail under CI).
fn mender_ready() -> Result<(), String> {
    for tool in ["mender", "mender-artifact"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Err(format!("`{tool}` is not installed (apt-get install mender-client mender-artifact)"));
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root: Mender's client reads update modules from /usr/share/mender/modules/v3 only".into());
    }
    Ok(())
}

/// The Mender client of one simulated device: its own configuration and data directory, our
/// update module installed where the client looks for it, the device's settings for it.
struct Client {
    conf: PathBuf,
    data: PathBuf,
    settings: PathBuf,
    module_bin: PathBuf,
}

impl Client {
    fn new(root: &Path, device_dir: &Path, key: &Path, verify_key: Option<&Path>) -> Client {
        let data = root.join("mender-data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(root.join("device_type"), "device_type=classmod-test\n").unwrap();
        let mut conf = serde_json::json!({ "DeviceTypeFile": s(&root.join("device_type")) });
        if let Some(k) = verify_key {
            conf["ArtifactVerifyKey"] = s(k).into();
        }
        let conf_path = root.join("mender.conf");
        std::fs::write(&conf_path, conf.to_string()).unwrap();
        // The install step README gives, done atomically (tests run in parallel).
        let modules = Path::new("/usr/share/mender/modules/v3");
        std::fs::create_dir_all(modules).unwrap();
        let tmp = modules.join(format!(".classmod-module.{}", std::process::id()));
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/mender/classmod-module"), &tmp).unwrap();
        std::fs::rename(&tmp, modules.join("classmod-module")).unwrap();
        if !Path::new("/etc/mender/artifact_info").exists() {
            std::fs::create_dir_all("/etc/mender").unwrap();
            std::fs::write("/etc/mender/artifact_info", "artifact_name=factory\n").unwrap();
        }
        let settings = root.join("classmod-edge.env");
        std::fs::write(
            &settings,
            format!(
                "CLASSMOD_DIR={}\nCLASSMOD_KEY={}\nCLASSMOD_MODULE_ARGS=\"--require-key --board host-sim\"\n",
                s(device_dir),
                s(key)
            ),
        )
        .unwrap();
        Client { conf: conf_path, data, settings, module_bin: built("classmod-update-module") }
    }

    /// `mender VERB [ARG]` with our update module's settings in the environment.
    fn mender(&self, verb: &str, arg: Option<&Path>) -> Output {
        let mut cmd = Command::new("mender");
        cmd.args(["--no-syslog", "-c", s(&self.conf), "-d", s(&self.data), verb])
            .env("CLASSMOD_EDGE_SETTINGS", &self.settings)
            .env("CLASSMOD_UPDATE_MODULE", &self.module_bin);
        if let Some(a) = arg {
            cmd.arg(a);
        }
        run(&mut cmd)
    }

    fn with_module(mut self, bin: &Path) -> Client {
        self.module_bin = bin.to_path_buf();
        self
    }
}

/// A `classmod-edge` serving the device directory in the background, classifying what is
/// dropped into its watched directory; its JSON result lines and log are collected.
struct Serving {
    child: Child,
    results: Arc<Mutex<Vec<serde_json::Value>>>,
    log: Arc<Mutex<Vec<String>>>,
    watch: PathBuf,
}

impl Serving {
    fn start(device: &Path, public: &Path, watch: &Path) -> Serving {
        std::fs::create_dir_all(watch).unwrap();
        let mut child = Command::new(built("classmod-edge"))
            .args([s(device), "--classes", "cat,dog", "--board", "host-sim", "--device", "cpu", "--key", s(public)])
            .args(["--require-key", "--min-score", "off", "--json", "--poll-ms", "100", "--watch", s(watch)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let results = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let r = results.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                r.lock().unwrap().push(serde_json::from_str(&line).expect("a JSON line"));
            }
        });
        let l = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let serving = Serving { child, results, log, watch: watch.to_path_buf() };
        serving.wait_log("status LED: Serving");
        serving
    }

    fn wait_log(&self, needle: &str) {
        let t = Instant::now();
        while !self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no `{needle}` in the log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Drops the PNGs into the watched directory (renamed in) and returns the answers, by file.
    fn classify(&self, pngs: &[PathBuf]) -> BTreeMap<String, (String, f64)> {
        let before = self.results.lock().unwrap().len();
        for p in pngs {
            let name = p.file_name().unwrap();
            let tmp = self.watch.join(format!(".{}", name.to_string_lossy()));
            std::fs::copy(p, &tmp).unwrap();
            std::fs::rename(&tmp, self.watch.join(name)).unwrap();
        }
        let t = Instant::now();
        while self.results.lock().unwrap().len() < before + pngs.len() {
            assert!(t.elapsed() < Duration::from_secs(60), "no answers:\n{}", self.log.lock().unwrap().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(self.watch.join("done"));
        self.results.lock().unwrap()[before..]
            .iter()
            .map(|v| {
                let file = Path::new(v["file"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
                (file, (v["class"].as_str().unwrap_or("none").to_string(), v["score"].as_f64().unwrap()))
            })
            .collect()
    }

    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// What the directory as it is on disk answers (a fresh runtime serving cat and dog).
fn reference(device: &Path, pngs: &[PathBuf]) -> BTreeMap<String, (String, f64)> {
    let rt = ModuleRuntime::open(device, config(None, None)).unwrap();
    rt.load("cat").unwrap();
    rt.load("dog").unwrap();
    let snap = rt.snapshot();
    let spec = snap.input_spec().unwrap().clone();
    pngs.iter()
        .map(|p| {
            let px =
                classmod::edge::pixels(p, &spec, classmod::edge::ImageLimits { max_bytes: 64 << 20, max_side: 4096 })
                    .unwrap();
            let r = snap.classify(&px, Rule::Max, classmod::runtime::MinScore::Off).unwrap();
            let i = r.predictions[0].unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), (r.classes[i].clone(), f64::from(r.scores[0][i])))
        })
        .collect()
}

fn assert_same(got: &BTreeMap<String, (String, f64)>, want: &BTreeMap<String, (String, f64)>, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (file, (class, score)) in want {
        let (c, sc) = &got[file];
        assert!(
            c == class && (sc - score).abs() < 1e-4,
            "{what}: {file}: served {c} {sc}, the directory says {class} {score}"
        );
    }
}

/// Every file of the device directory, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// Installs `dog` (an artifact of a new module of dog, the first) while the directory is
/// served, then rolls it back: the same bytes as before, and the serving process follows back
/// to answering `expected`. The directory's files.
fn install_then_roll_back(
    client: &Client,
    serving: &Serving,
    device: &Path,
    dog: &Path,
    pngs: &[PathBuf],
    expected: &BTreeMap<String, (String, f64)>,
) -> BTreeMap<String, Vec<u8>> {
    let before = files(device);
    ok(client.mender("install", Some(dog)), "mender install dog");
    serving.wait_log("now serving the new module of dog");
    assert_ne!(files(device), before);
    ok(client.mender("rollback", None), "mender rollback");
    assert_eq!(files(device), before, "rolled back to the same bytes");
    let t = Instant::now();
    while serving.log.lock().unwrap().iter().filter(|l| l.contains("now serving the new module of dog")).count() < 2 {
        assert!(t.elapsed() < Duration::from_secs(30), "the rollback is not followed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_same(&serving.classify(pngs), expected, "after rollback");
    before
}

fn artifact(packed: &Path, classes: &str, out: &Path, extra: &[&str]) {
    let o = run(Command::new(built("classmod"))
        .args(["mender-artifact", "--packed", s(packed), "--classes", classes, "--no-base"])
        .args(["--device-type", "classmod-test", "--out", s(out)])
        .args(extra));
    ok(o, "classmod mender-artifact");
}

/// Whether the Mender test can run; a skip says why (and is a failure under CI).
fn mender_or_skip() -> bool {
    match mender_ready() {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => panic!("the Mender test cannot run but CI is set: {why}"),
        Err(why) => {
            eprintln!("SKIPPED the Mender test: {why}");
            false
        }
    }
}

/// A scratch root for one test, emptied first.
fn fleet_root(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("classmod-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

/// `classmod decompose` (mask modules) of `classes`, with `n_pos` positive images per class.
fn decompose(model: &Path, data: &Path, out: &Path, n_pos: &str, classes: &str) {
    ok(
        run(Command::new(built("classmod"))
            .args(["decompose", "--model", s(model), "--data", s(data), "--out", s(out)])
            .args(["--classes", classes, "--n-pos", n_pos, "--golden", "4"])),
        "decompose",
    );
}

/// `classmod pack` of a decomposition, signed, as release `version`.
fn pack(modules: &Path, data: &Path, out: &Path, secret: &Path, version: &str) {
    ok(
        run(Command::new(built("classmod"))
            .args(["pack", "--modules", s(modules), "--data", s(data), "--out", s(out), "--key", s(secret)])
            .args(["--golden", "4", "--version", version])),
        "pack",
    );
}

/// The 20 lossless CIFAR-10 test PNGs of ../shared, in order.
fn lossless_pngs(shared: &Path) -> Vec<PathBuf> {
    (0..20)
        .map(|i| {
            std::fs::read_dir(shared.join("data/cifar10-lossless-20"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("cifar10_{i:02}_")))
                .unwrap()
        })
        .collect()
}

/// A signing key pair for the device: (secret, public).
fn keygen(root: &Path) -> (PathBuf, PathBuf) {
    ok(run(Command::new(built("classmod")).args(["keygen", "--out", s(&root.join("device"))])), "keygen");
    (root.join("device.secret"), root.join("device.public"))
}

#[test]
fn mender_installs_commits_and_rolls_back_class_modules_on_a_serving_device() {
    let Some(shared) = common::shared() else { return };
    if !mender_or_skip() {
        return;
    }
    let root = fleet_root("mender");
    let classmod = built("classmod");
    let data = shared.join("data/cifar10-jpeg.tar.gz");
    let model = root.join("r20.safetensors");
    ok(
        run(Command::new(&classmod).args(["import", s(&shared.join("models/resnet20-cifar10.safetensors"))]).args([
            "--out",
            s(&model),
            "--mean",
            "0.485,0.456,0.406",
            "--std",
            "0.229,0.224,0.225",
            "--class-names",
            &common::CIFAR10_CLASSES.join(","),
        ])),
        "import",
    );
    let (secret, public) = keygen(&root);
    // Release 100 on the device; release 200 (other masks: fewer positives) and release 50
    // (older) for the fleet.
    let (m1, m2) = (root.join("m1"), root.join("m2"));
    decompose(&model, &data, &m1, "40", "cat,dog");
    decompose(&model, &data, &m2, "25", "cat,dog");
    let (device, v200, v50) = (root.join("device-dir"), root.join("v200"), root.join("v50"));
    pack(&m1, &data, &device, &secret, "100");
    pack(&m2, &data, &v200, &secret, "200");
    pack(&m1, &data, &v50, &secret, "50");
    let (cat200, dog200, cat50) =
        (root.join("cat-200.mender"), root.join("dog-200.mender"), root.join("cat-50.mender"));
    artifact(&v200, "cat", &cat200, &[]);
    artifact(&v200, "dog", &dog200, &[]);
    artifact(&v50, "cat", &cat50, &[]);
    let pngs = lossless_pngs(&shared);

    let client = Client::new(&root, &device, &public, None);
    let serving = Serving::start(&device, &public, &root.join("frames"));
    let r0 = reference(&device, &pngs);
    assert_same(&serving.classify(&pngs), &r0, "before any update");

    // 1. Install: the serving process takes the new cat up without a restart (unconfirmed).
    let o = client.mender("install", Some(&cat200));
    ok(o, "mender install cat-200");
    serving.wait_log("now serving the new module of cat (update classmod-cat-v200, not yet committed)");
    let r1 = reference(&device, &pngs);
    assert_ne!(r1, r0, "release 200's cat answers differently somewhere");
    assert_same(&serving.classify(&pngs), &r1, "after install");
    // `classmod verify` checks what a rollback would serve again too.
    let o = ok(run(Command::new(&classmod).args(["verify", s(&device), "--key", s(&public)])), "verify");
    assert!(String::from_utf8_lossy(&o.stdout).contains("pending rollback"), "{}", String::from_utf8_lossy(&o.stdout));
    // 2. Commit: confirmed, Mender's provides name the class's release; a restart serves it too.
    ok(client.mender("commit", None), "mender commit");
    let provides = String::from_utf8_lossy(&client.mender("show-provides", None).stdout).to_string();
    assert!(provides.contains("classmod.cat.version=200"), "{provides}");
    let m = classmod::runtime::Manifest::read(&device).unwrap();
    assert!(m.pending.is_none() && m.module("cat").unwrap().version == 200, "{m:?}");
    serving.stop();
    let serving = Serving::start(&device, &public, &root.join("frames"));
    assert_same(&serving.classify(&pngs), &r1, "after commit and a restart");

    // 3. Install, then roll back: the old module serves again, the same files byte for byte.
    let before = install_then_roll_back(&client, &serving, &device, &dog200, &pngs, &r1);

    // 4. An older release than the committed one: the install fails, Mender rolls back, nothing
    // changes.
    let o = client.mender("install", Some(&cat50));
    assert!(!o.status.success(), "a downgrade installs: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("a downgrade"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(files(&device), before);

    // 5. A module that fails its golden self-test, validly signed: tampered golden scores,
    // re-signed with the device's key. Install fails; nothing changes.
    let tampered = root.join("tampered");
    std::fs::create_dir_all(&tampered).unwrap();
    let m200 = classmod::runtime::Manifest::read(&v200).unwrap();
    let bytes = std::fs::read(v200.join(&m200.module("dog").unwrap().file)).unwrap();
    let store = classmod::runtime::AlignedBytes::new(&bytes);
    let blob = classmod_blob::Blob::parse(store.bytes()).unwrap();
    let mut mb = classmod::runtime::host::ModuleBlob::decode(&blob).unwrap();
    mb.golden.scores[0] += 0.25;
    let key = classmod_blob::parse_secret_key(&std::fs::read_to_string(&secret).unwrap()).unwrap();
    std::fs::write(tampered.join("dog.blob"), mb.encode(Some(&key)).unwrap()).unwrap();
    let bad = root.join("bad.mender");
    ok(
        run(Command::new("mender-artifact")
            .args(["write", "module-image", "-T", "classmod-module", "-n", "bad-dog", "-t", "classmod-test"])
            .args(["-o", s(&bad), "-f", s(&tampered.join("dog.blob"))])),
        "mender-artifact",
    );
    let o = client.mender("install", Some(&bad));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("golden"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(files(&device), before);
    assert_same(&serving.classify(&pngs), &r1, "after the refused artifacts");

    // 6. kill -9 of the update module in ArtifactInstall, at several points: Mender rolls back;
    // the device serves the old module or (never) a broken one, and verifies.
    let killer = root.join("kill-in-install.sh");
    for delay in ["0", "0.05", "0.2", "0.5"] {
        std::fs::write(
            &killer,
            format!(
                "#!/bin/sh\nif [ \"$1\" = ArtifactInstall ]; then\n  {bin} \"$@\" & pid=$!\n  sleep {delay}\n  \
                 kill -9 $pid 2>/dev/null\n  wait $pid\n  exit 1\nfi\nexec {bin} \"$@\"\n",
                bin = s(&built("classmod-update-module"))
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&killer, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = Client::new(&root, &device, &public, None).with_module(&killer);
        let o = c.mender("install", Some(&dog200));
        assert!(!o.status.success(), "killed at {delay} s");
        let m = classmod::runtime::Manifest::read(&device).unwrap();
        assert!(m.pending.is_none(), "killed at {delay} s: rolled back");
        assert_eq!(files(&device), before, "killed at {delay} s: the old files, nothing staged left");
        ok(run(Command::new(&classmod).args(["verify", s(&device), "--key", s(&public)])), "verify");
    }

    // 7. A client that checks signatures: an unsigned artifact is refused by Mender itself, a
    // signed one installs.
    let pem = root.join("mender-signing.pem");
    let pubpem = root.join("mender-verify.pem");
    ok(
        run(Command::new("openssl").args(["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", s(&pem)])),
        "openssl",
    );
    ok(run(Command::new("openssl").args(["ec", "-in", s(&pem), "-pubout", "-out", s(&pubpem)])), "openssl");
    let checking = Client::new(&root.join("checking"), &device, &public, Some(&pubpem));
    let o = checking.mender("install", Some(&dog200));
    assert!(!o.status.success(), "unsigned accepted");
    assert!(
        String::from_utf8_lossy(&o.stderr).to_lowercase().contains("signature"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(files(&device), before);
    let signed = root.join("dog-200-signed.mender");
    artifact(&v200, "dog", &signed, &["--signing-key", s(&pem), "--name", "dog-200-signed"]);
    ok(checking.mender("install", Some(&signed)), "signed install");
    serving.wait_log("now serving the new module of dog (update dog-200-signed");
    ok(checking.mender("commit", None), "commit");
    let r2 = reference(&device, &pngs);
    assert_same(&serving.classify(&pngs), &r2, "after the signed update");
    let log = serving.stop();
    assert!(!log.iter().any(|l| l.contains("cannot be served")), "{}", log.join("\n"));
    let _ = std::fs::remove_dir_all(&root);
}

/// The same fleet path for the network shape users deploy: a small four-stage bottleneck ResNet
/// in torchvision's layout (7x7 stride-2 stem and max-pool, stride on the 3x3, projection
/// shortcuts; seeded random weights and BN statistics), written as a plain state dict under
/// torchvision's tensor names as PyTorch would save it, imported at 64x64 (the 32x32 PNGs
/// scaled and centre-cropped as torchvision's evaluation transform does), decomposed into mask
/// modules, packed, and delivered by the real Mender client to a serving `classmod-edge`: hot
/// swap on install, `verify`, commit, a restart, a rollback to the same bytes. Nothing on the way
/// is told it is not a CIFAR ResNet. Reference as above: a fresh runtime on the directory.
#[test]
fn a_four_stage_bottleneck_resnet_takes_the_same_fleet_path() {
    let Some(shared) = common::shared() else { return };
    if !mender_or_skip() {
        return;
    }
    let root = fleet_root("mender-bottleneck");
    let data = shared.join("data/cifar10-jpeg.tar.gz");
    let tiny = classmod::runtime::testing::tiny_model::tiny_torchvision(21, true, [1, 2, 1, 1], 64);
    let arch = tiny.meta.arch.with_classes(10);
    let net = classmod::runtime::testing::tiny_model::random_model(arch.clone(), tiny.meta.input.clone(), 21);
    // Random weights make a class or two win almost every image: the head's biases are shifted
    // by each class's mean logit over the 20 PNGs, so that predictions spread over the classes
    // and the decomposer finds training images the model calls cat and dog (what the device
    // serves is checked against the directory, not against labels).
    let pngs = lossless_pngs(&shared);
    let spec = net.meta.input.clone();
    let resnet = ResNet::new(&net, &Device::Cpu).unwrap();
    let mut mean = vec![0f32; 10];
    for png in &pngs {
        let px =
            classmod::edge::pixels(png, &spec, classmod::edge::ImageLimits { max_bytes: 64 << 20, max_side: 4096 })
                .unwrap();
        let mut x = vec![0f32; px.len()];
        spec.normalize_into(&px, &mut x);
        let x = Tensor::from_vec(x, (1, 3, spec.height, spec.width), &Device::Cpu).unwrap();
        let logits = resnet.forward(&x).unwrap().to_vec2::<f32>().unwrap().remove(0);
        mean.iter_mut().zip(logits).for_each(|(m, l)| *m += l / pngs.len() as f32);
    }
    let centred = (net.tensor("linear.bias").unwrap() - Tensor::new(mean, &Device::Cpu).unwrap()).unwrap();
    // torchvision's names for what classmod calls the shortcut and the classifier.
    let state_dict: Vec<(String, Tensor)> = arch
        .tensor_shapes()
        .into_iter()
        .map(|(name, _)| {
            let t = if name == "linear.bias" { centred.clone() } else { net.tensor(&name).unwrap().clone() };
            (name.replace(".shortcut.", ".downsample.").replace("linear.", "fc."), t)
        })
        .collect();
    assert!(state_dict.iter().any(|(n, _)| n == "layer2.0.downsample.0.weight"), "torchvision's names");
    let state_dict_file = root.join("resnet-bottleneck.safetensors");
    std::fs::write(&state_dict_file, safetensors::serialize(state_dict, None).unwrap()).unwrap();
    let model = root.join("model.safetensors");
    let o = ok(
        run(Command::new(built("classmod"))
            .args(["import", s(&state_dict_file), "--out", s(&model), "--input-size", "64", "--json"])
            .args(["--class-names", &common::CIFAR10_CLASSES.join(",")])),
        "import",
    );
    let imported: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(imported["name"].as_str().unwrap().contains("bottleneck"), "{imported}");
    assert_eq!(imported["input"]["height"], 64, "{imported}");
    assert!(!imported["input"]["resize"].is_null(), "torchvision's crop by default: {imported}");

    let (secret, public) = keygen(&root);
    let (m1, m2) = (root.join("m1"), root.join("m2"));
    decompose(&model, &data, &m1, "40", "cat,dog");
    decompose(&model, &data, &m2, "25", "cat,dog");
    let (device, v200) = (root.join("device-dir"), root.join("v200"));
    pack(&m1, &data, &device, &secret, "100");
    pack(&m2, &data, &v200, &secret, "200");
    let (cat200, dog200) = (root.join("cat-200.mender"), root.join("dog-200.mender"));
    artifact(&v200, "cat", &cat200, &[]);
    artifact(&v200, "dog", &dog200, &[]);

    let client = Client::new(&root, &device, &public, None);
    let serving = Serving::start(&device, &public, &root.join("frames"));
    let r0 = reference(&device, &pngs);
    assert_same(&serving.classify(&pngs), &r0, "before any update");

    ok(client.mender("install", Some(&cat200)), "mender install cat-200");
    serving.wait_log("now serving the new module of cat (update classmod-cat-v200, not yet committed)");
    let r1 = reference(&device, &pngs);
    assert_ne!(r1, r0, "release 200's cat answers differently somewhere");
    assert_same(&serving.classify(&pngs), &r1, "after install");
    ok(run(Command::new(built("classmod")).args(["verify", s(&device), "--key", s(&public)])), "verify");
    ok(client.mender("commit", None), "mender commit");
    serving.stop();
    let serving = Serving::start(&device, &public, &root.join("frames"));
    assert_same(&serving.classify(&pngs), &r1, "after commit and a restart");

    install_then_roll_back(&client, &serving, &device, &dog200, &pngs, &r1);
    ok(run(Command::new(built("classmod")).args(["verify", s(&device), "--key", s(&public)])), "verify");
    let log = serving.stop();
    assert!(!log.iter().any(|l| l.contains("cannot be served")), "{}", log.join("\n"));
    let _ = std::fs::remove_dir_all(&root);
}
