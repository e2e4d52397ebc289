//! A Debian Linux kernel booted under qemu (software emulation, one CPU) with an
//! initramfs built here: busybox, kernel modules, and programs of ours with their
//! shared libraries. For what this machine's own kernel lacks: the V4L2 test driver
//! `vivid` gives a real `/dev/video0` (a kernel driver, not a mock) to capture from.
//!
//! The kernel and its media modules come from Debian's `linux-image-amd64`, unpacked by
//! `scripts/test` into `$HUSH_TEST_KERNEL` (default `~/.cache/hushphone-kernel`).

use crate::process::tag;
use crate::{HarnessError, Result, io};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the init script prints, with the script's exit status, before powering off.
const EXIT_MARK: &str = "HUSH-VM-EXIT";

fn fail(what: impl Into<String>) -> HarnessError {
    HarnessError::Io {
        what: what.into(),
        source: std::io::Error::other("virtual machine"),
    }
}

/// Where `scripts/test` unpacked the kernel: `vmlinuz` and `modules/` (the kernel's
/// `drivers/media` tree).
pub fn test_kernel_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HUSH_TEST_KERNEL") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    cache.join("hushphone-kernel")
}

/// vivid's 75 % colour bars, left to right (white, yellow, cyan, green, magenta, red,
/// blue, black), as BT.601 limited-range Y, U, V.
pub const VIVID_BARS: [(u8, u8, u8); 8] = [
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
    (16, 128, 128),
];

/// Whether a `width`×`height` picture, read by `pixel` (Y, U, V at x, y), shows vivid's
/// colour bars: the mean of a patch in the middle of each bar, near the bottom (vivid
/// writes its text at the top), within `tolerance` (the sum of the three differences).
pub fn shows_vivid_bars(
    width: u32,
    height: u32,
    pixel: impl Fn(u32, u32) -> Option<(u8, u8, u8)>,
    tolerance: i32,
) -> std::result::Result<(), String> {
    let mut seen = Vec::new();
    for bar in 0..8 {
        let x0 = width * (2 * bar + 1) / 16;
        let mut sum = [0i32; 3];
        let mut n = 0;
        for y in (height * 3 / 4)..(height * 3 / 4 + 8) {
            for x in x0.saturating_sub(4)..x0 + 4 {
                let (py, pu, pv) = pixel(x, y).ok_or("the picture is too small")?;
                sum[0] += i32::from(py);
                sum[1] += i32::from(pu);
                sum[2] += i32::from(pv);
                n += 1;
            }
        }
        seen.push((sum[0] / n, sum[1] / n, sum[2] / n));
    }
    for (i, (got, want)) in seen.iter().zip(VIVID_BARS).enumerate() {
        let off = (got.0 - i32::from(want.0)).abs()
            + (got.1 - i32::from(want.1)).abs()
            + (got.2 - i32::from(want.2)).abs();
        if off > tolerance {
            return Err(format!(
                "bar {i} is {got:?}, not about {want:?} (all: {seen:?})"
            ));
        }
    }
    Ok(())
}

/// An initramfs being put together, then booted.
pub struct Vm {
    kernel: PathBuf,
    modules: PathBuf,
    /// Guest path → contents (host file, or bytes).
    files: BTreeMap<String, Entry>,
    /// Modules to load, in order, with their parameters.
    load: Vec<(String, String)>,
    cpus: u32,
}

enum Entry {
    Host(PathBuf, u32),
    /// A program of ours, without its debugging information (a debug build's would
    /// not fit in the machine's memory).
    Stripped(PathBuf),
    Bytes(Vec<u8>, u32),
}

impl Vm {
    /// A machine with busybox and nothing else yet.
    pub fn new() -> Result<Vm> {
        let dir = test_kernel_dir();
        let kernel = dir.join("vmlinuz");
        let modules = dir.join("modules");
        if !kernel.is_file() || !modules.is_dir() {
            return Err(fail(format!(
                "no test kernel in {} (scripts/test fetches it)",
                dir.display()
            )));
        }
        let busybox = PathBuf::from("/bin/busybox");
        if !busybox.is_file() {
            return Err(fail("no /bin/busybox (Debian's busybox-static)"));
        }
        let mut vm = Vm {
            kernel,
            modules,
            files: BTreeMap::new(),
            load: Vec::new(),
            cpus: 1,
        };
        vm.files
            .insert("bin/busybox".into(), Entry::Host(busybox, 0o755));
        Ok(vm)
    }

    /// A machine with a camera: the kernel's V4L2 test driver, vivid, as one video
    /// capture node (`/dev/video0`, colour bars).
    pub fn with_camera() -> Result<Vm> {
        Vm::new()?.module("vivid", "n_devs=1 node_types=0x1")
    }

    /// Boots with the running test binary inside and runs there the test `test` alone,
    /// with `inside` set in its environment (the test's cue that it is the part inside);
    /// returns what the machine printed once that test passed there.
    pub fn run_this_test(self, inside: &str, test: &str, limit: Duration) -> Result<String> {
        let me = std::env::current_exe().map_err(io("find the test binary"))?;
        let script = format!(
            "{inside}=1 {} --exact {test} --nocapture --test-threads 1",
            me.display()
        );
        let console = self.program(&me)?.run(&script, limit)?;
        if !console.contains("test result: ok. 1 passed") {
            return Err(fail(format!("{test} did not pass inside:\n{console}")));
        }
        Ok(console)
    }

    /// Emulates `n` processors (one host thread each).
    pub fn cpus(mut self, n: u32) -> Vm {
        self.cpus = n.clamp(1, 4);
        self
    }

    /// Loads `module` (and what it depends on, first) at boot, with `params`.
    pub fn module(mut self, module: &str, params: &str) -> Result<Vm> {
        let index = self.module_index()?;
        let mut order = Vec::new();
        visit(&index, &module.replace('-', "_"), &mut order, 0)?;
        for name in order {
            let path = &index[&name];
            let guest = format!("mods/{name}.ko");
            if let std::collections::btree_map::Entry::Vacant(slot) = self.files.entry(guest) {
                slot.insert(Entry::Host(path.clone(), 0o644));
                let p = if name == module.replace('-', "_") {
                    params.to_string()
                } else {
                    String::new()
                };
                self.load.push((name, p));
            }
        }
        Ok(self)
    }

    /// Every module under the kernel's media tree: name → file.
    fn module_index(&self) -> Result<BTreeMap<String, PathBuf>> {
        let mut index = BTreeMap::new();
        let mut stack = vec![self.modules.clone()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(io(format!("read {}", dir.display())))?;
            for e in entries.flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Some(stem) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".ko"))
                {
                    index.insert(stem.replace('-', "_"), path.clone());
                }
            }
        }
        Ok(index)
    }

    /// Puts the host program at the same path in the guest, with every shared library
    /// `ldd` says it loads.
    pub fn program(mut self, path: &Path) -> Result<Vm> {
        let out = Command::new("ldd")
            .arg(path)
            .output()
            .map_err(io("run ldd"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        for word in text.split_whitespace() {
            if word.starts_with('/') {
                let lib = std::fs::canonicalize(word).map_err(io(format!("find {word}")))?;
                self.files.insert(
                    word.trim_start_matches('/').to_string(),
                    Entry::Host(lib, 0o755),
                );
            }
        }
        let guest = path.to_string_lossy().trim_start_matches('/').to_string();
        self.files
            .insert(guest, Entry::Stripped(path.to_path_buf()));
        Ok(self)
    }

    /// A file of the given bytes at `guest` (an absolute path in the guest).
    pub fn file(mut self, guest: &str, bytes: Vec<u8>, mode: u32) -> Vm {
        self.files.insert(
            guest.trim_start_matches('/').to_string(),
            Entry::Bytes(bytes, mode),
        );
        self
    }

    /// Boots, runs `script` (busybox sh, after the modules are loaded, with `/tmp` and
    /// loopback up) and returns what the machine printed, once the script has ended
    /// with status 0; an error with the console's text otherwise or after `limit`.
    pub fn run(self, script: &str, limit: Duration) -> Result<String> {
        let work = tempfile::tempdir().map_err(io("vm dir"))?;
        let mut init = String::from(
            "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nmkdir -p /dev /proc /sys /tmp\n\
             mount -t devtmpfs dev /dev\nmount -t proc proc /proc\nmount -t sysfs sys /sys\n\
             mount -t tmpfs tmp /tmp\nip link set lo up\nexport HOME=/tmp PATH=/bin\n",
        );
        for (name, params) in &self.load {
            init.push_str(&format!(
                "insmod /mods/{name}.ko {params} || echo 'cannot load {name}'\n"
            ));
        }
        init.push_str(&format!(
            "sh /script; echo \"{EXIT_MARK} $?\"\npoweroff -f\n"
        ));
        let vm = self.file("/init", init.into_bytes(), 0o755).file(
            "/script",
            script.as_bytes().to_vec(),
            0o644,
        );
        let initrd = work.path().join("initrd.cpio");
        vm.write_cpio(&initrd)?;
        let console = work.path().join("console.log");
        let log = std::fs::File::create(&console).map_err(io("console log"))?;
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-cpu", "max", "-m", "2048"])
            .args(["-smp", &vm.cpus.to_string()])
            .args([
                "-nographic",
                "-no-reboot",
                "-nic",
                "none",
                "-monitor",
                "none",
            ])
            .arg("-kernel")
            .arg(&vm.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1 rdinit=/init"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                log.try_clone().map_err(io("clone console log"))?,
            ))
            .stderr(Stdio::from(log));
        tag(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(io("start qemu-system-x86_64 (Debian's qemu-system-x86)"))?;
        let deadline = Instant::now() + limit;
        let status = loop {
            let waited = child.try_wait();
            if waited.is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
            match waited.map_err(io("wait for qemu"))? {
                Some(s) => break Some(s),
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let mut bytes = Vec::new();
        std::fs::File::open(&console)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io("read console log"))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let code = text
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(EXIT_MARK))
            .and_then(|c| c.trim().parse::<i32>().ok());
        match (status, code) {
            (Some(_), Some(0)) => Ok(text),
            (None, _) => Err(fail(format!(
                "the machine did not finish within {limit:?}:\n{text}"
            ))),
            (_, c) => Err(fail(format!("the script ended with {c:?}:\n{text}"))),
        }
    }

    /// The initramfs: an uncompressed `newc` cpio archive (the kernel unpacks it).
    fn write_cpio(&self, to: &Path) -> Result<()> {
        let file = std::fs::File::create(to).map_err(io("create initrd"))?;
        let mut out = std::io::BufWriter::new(file);
        let mut dirs: Vec<String> = Vec::new();
        for path in self.files.keys() {
            let mut at = String::new();
            for part in path
                .split('/')
                .rev()
                .skip(1)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                if !at.is_empty() {
                    at.push('/');
                }
                at.push_str(part);
                if !dirs.contains(&at) {
                    dirs.push(at.clone());
                }
            }
        }
        let mut ino = 1;
        for d in &dirs {
            cpio_entry(&mut out, ino, d, 0o040_755, &[], (0, 0))?;
            ino += 1;
        }
        for (path, entry) in &self.files {
            let (bytes, mode) = match entry {
                Entry::Host(p, mode) => (
                    std::fs::read(p).map_err(io(format!("read {}", p.display())))?,
                    *mode,
                ),
                Entry::Stripped(p) => (stripped(p)?, 0o755),
                Entry::Bytes(b, mode) => (b.clone(), *mode),
            };
            cpio_entry(&mut out, ino, path, 0o100_000 | mode, &bytes, (0, 0))?;
            ino += 1;
        }
        // The console init's output goes to (the kernel opens it before init runs).
        if !dirs.iter().any(|d| d == "dev") {
            cpio_entry(&mut out, ino, "dev", 0o040_755, &[], (0, 0))?;
            ino += 1;
        }
        cpio_entry(&mut out, ino, "dev/console", 0o020_600, &[], (5, 1))?;
        ino += 1;
        cpio_entry(&mut out, ino, "TRAILER!!!", 0, &[], (0, 0))?;
        out.flush().map_err(io("write initrd"))
    }
}

/// The program at `path` without debugging information (`objcopy --strip-debug`).
fn stripped(path: &Path) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir().map_err(io("strip dir"))?;
    let out = dir.path().join("program");
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(path)
        .arg(&out)
        .status()
        .map_err(io("run objcopy"))?;
    if !status.success() {
        return Err(fail(format!("objcopy could not strip {}", path.display())));
    }
    std::fs::read(&out).map_err(io("read the stripped program"))
}

/// One `newc` record: a 110-byte ASCII header, the name, the data, each padded to 4.
fn cpio_entry(
    out: &mut impl Write,
    ino: u32,
    name: &str,
    mode: u32,
    data: &[u8],
    rdev: (u32, u32),
) -> Result<()> {
    if u32::try_from(data.len()).is_err() {
        return Err(fail(format!("{name} is too large for an initramfs")));
    }
    let header = format!(
        "070701{ino:08X}{mode:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
        0,
        0,
        1,
        0,
        data.len(),
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() + 1,
        0
    );
    let pad = |n: usize| (4 - n % 4) % 4;
    let mut record = header.into_bytes();
    record.extend_from_slice(name.as_bytes());
    record.push(0);
    record.resize(record.len() + pad(record.len()), 0);
    record.extend_from_slice(data);
    record.resize(record.len() + pad(data.len()), 0);
    out.write_all(&record).map_err(io("write initrd"))
}

/// The modules a `.ko` file says it needs (its `.modinfo` `depends=` entry).
fn depends(ko: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('-', "_"))
        .collect()
}

fn visit(
    index: &BTreeMap<String, PathBuf>,
    name: &str,
    order: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    if order.iter().any(|n| n == name) {
        return Ok(());
    }
    let path = index
        .get(name)
        .ok_or_else(|| fail(format!("no module {name} in the test kernel")))?;
    if depth > 32 {
        return Err(fail("module dependencies loop"));
    }
    let bytes = std::fs::read(path).map_err(io(format!("read {}", path.display())))?;
    for d in depends(&bytes) {
        visit(index, &d, order, depth + 1)?;
    }
    order.push(name.to_string());
    Ok(())
}
