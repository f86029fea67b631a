//! `gradstep import` of untrusted files (issue "Reliability and security"): the unpickling
//! interpreter cannot be taken over through the temporary folder, the current folder or
//! PYTHON* variables, and writes nothing there; a few-KB file that expands to gigabytes is
//! refused before anything is copied; nothing is left behind on any exit path. Also deepinv
//! state dicts with 1, 2 or 4 blocks per scale (one block renames the body) import, gray and
//! colour, and denoise as deepinv does.
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gradstep_model::{import, Checkpoint, Graph, Sigma};
use tch::{Device, Kind, Tensor};

mod common;
use common::*;

/// Runs a script with the venv's Python (torch, safetensors), in `dir`.
fn py(dir: &Path, script: &str) {
    let o = Command::new(python())
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "test script failed: {}", stderr(&o));
}

/// The entries of a folder (the temporary folder given to gradstep as TMPDIR).
fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// Caps the child's data segment (heap and anonymous mappings; shared libraries' code does
/// not count): the expanded 20000² tensor alone needs 1.6 GB.
fn limit_memory(c: &mut Command, bytes: u64) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit,
    // which is async-signal-safe, on a value it owns.
    unsafe {
        c.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// The tiny reference GS-DRUNet (widths 8–64, 2 blocks) saved with torch.save as `name`.
fn tiny_pth(shared: &Path, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    py(
        dir,
        &format!(
            "import torch; from safetensors.torch import load_file; torch.save(load_file(r'{}'), r'{}')",
            shared
                .join("reference/gsdrunet_tiny_elu_weights.safetensors")
                .display(),
            out.display()
        ),
    );
    out
}

/// Regression: the importer wrote its script into `$TMPDIR/gradstep-import-<pid>`, accepted
/// that folder when someone else had made it, and ran Python on the script there, so a
/// planted `torch.py` ran as the user and a planted symlink redirected its writes; Python
/// also honoured PYTHONPATH / PYTHONSTARTUP / PYTHONHOME and modules in the current folder.
#[test]
fn planted_modules_temp_folders_and_python_variables_are_ignored() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (tmp, cwd, pypath) = (
        dir.path().join("tmp"),
        dir.path().join("cwd"),
        dir.path().join("pypath"),
    );
    for d in [&tmp, &cwd, &pypath] {
        std::fs::create_dir(d).unwrap();
    }
    let marker = dir.path().join("pwned");
    let payload = format!(
        "open(r'{}', 'a').write(__file__ + '\\n')\n",
        marker.display()
    );
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    for d in [&cwd, &pypath] {
        for module in ["torch.py", "safetensors.py", "sitecustomize.py"] {
            std::fs::write(d.join(module), &payload).unwrap();
        }
    }
    let startup = dir.path().join("startup.py");
    std::fs::write(&startup, &payload).unwrap();
    let ckpt = tiny_pth(&shared, dir.path(), "tiny.pth");
    // The folders the old importer would have taken for its own, for the next process ids.
    let mut probe = Command::new("true").spawn().unwrap();
    let last_pid = probe.id();
    probe.wait().unwrap();
    let planted = 400;
    for pid in last_pid + 1..=last_pid + planted {
        let d = tmp.join(format!("gradstep-import-{pid}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("torch.py"), &payload).unwrap();
        symlink(&victim, d.join("state.safetensors")).unwrap();
        symlink(&victim, d.join("unpickle.py")).unwrap();
    }
    let out = dir.path().join("out.safetensors");
    let o = gradstep()
        .arg("import")
        .arg(&ckpt)
        .arg(&out)
        .current_dir(&cwd)
        .env("TMPDIR", &tmp)
        .env("PYTHONPATH", &pypath)
        .env("PYTHONSTARTUP", &startup)
        .env("PYTHONHOME", dir.path().join("no-python-home"))
        .output()
        .unwrap();
    assert!(
        !marker.exists(),
        "planted code ran: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("widths [8, 16, 32, 64], 2 blocks"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        entries(&tmp).len(),
        planted as usize,
        "the import wrote to the temporary folder"
    );
}

/// Regression: a 1.5 KB checkpoint holding `zeros(1).expand(20000, 20000)` was copied out
/// (3.5 GB of memory, 1.6 GB of temporary file); at 60000² it took a 23 GB machine down.
/// Such views, overlapping layouts and archives that unpack to more than the limit are now
/// refused before anything is copied, with one line naming the file (and the key); a view
/// outside the network is not copied at all.
#[test]
fn expanded_and_overlapping_tensors_are_refused_before_they_are_copied() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    py(
        dir.path(),
        r#"
import collections, io, pickle, torch, zipfile
torch.save({"student_grad.model.m_head.weight": torch.zeros(1).expand(20000, 20000)}, "bomb.pth")
torch.save({"m_head.weight": torch.zeros(300).as_strided((8, 4, 3, 3), (9, 9, 3, 1))}, "overlap.pth")

# A storage of 2^28 + 2^22 float32 zeros (1.016 GiB), deflated to 5 MB: torch reads
# compressed zip entries, and would unpack it whole before the importer sees the tensor.
numel = (1 << 28) + (1 << 22)
class Storage: pass
class Rebuild:
    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (Storage(), 0, (numel,), (1,), False, collections.OrderedDict()))
class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("storage", torch.FloatStorage, "0", "cpu", numel) if isinstance(obj, Storage) else None
pkl = io.BytesIO()
Pickler(pkl, protocol=2).dump({"m_head.weight": Rebuild()})
zeros = bytes(1 << 24)
with zipfile.ZipFile("zipbomb.pth", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
    z.writestr("zipbomb/data.pkl", pkl.getvalue())
    z.writestr("zipbomb/byteorder", "little")
    with z.open("zipbomb/data/0", "w", force_zip64=True) as f:
        for _ in range(numel * 4 // len(zeros)):
            f.write(zeros)
    z.writestr("zipbomb/version", "3\n")
"#,
    );
    let bomb = dir.path().join("bomb.pth");
    assert!(std::fs::metadata(&bomb).unwrap().len() < 4096);
    let import = |file: &str| {
        let out = dir.path().join("out.safetensors");
        let t0 = Instant::now();
        let o = limit_memory(&mut gradstep(), 3 << 29)
            .arg("import")
            .arg(dir.path().join(file))
            .arg(&out)
            .env("TMPDIR", &tmp)
            .output()
            .unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{file}: took {:?}",
            t0.elapsed()
        );
        assert!(!out.exists(), "{file}: an output was written");
        assert!(entries(&tmp).is_empty(), "{file}: left {:?}", entries(&tmp));
        o
    };
    assert_clear_error(
        &import("bomb.pth"),
        &[
            "bomb.pth",
            "student_grad.model.m_head.weight",
            "400000000 elements over a storage of 1 elements",
        ],
    );
    assert_clear_error(
        &import("overlap.pth"),
        &["overlap.pth", "m_head.weight", "overlapping layout"],
    );
    assert_clear_error(
        &import("zipbomb.pth"),
        &["zipbomb.pth", "unpacks to 1090519", "import limit"],
    );
    // The same expanded view beside a real network, under a key outside it (as optimizer
    // state would be): never copied, the import succeeds under the same memory limit.
    let Some(shared) = shared() else { return };
    py(
        dir.path(),
        &format!(
            "import torch; from safetensors.torch import load_file; sd = load_file(r'{}'); sd['optimizer.exp_avg'] = torch.zeros(1).expand(20000, 20000); torch.save(sd, 'beside.pth')",
            shared
                .join("reference/gsdrunet_tiny_elu_weights.safetensors")
                .display()
        ),
    );
    let out = dir.path().join("beside.safetensors");
    let o = limit_memory(&mut gradstep(), 3 << 29)
        .arg("import")
        .arg(dir.path().join("beside.pth"))
        .arg(&out)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.exists());
    assert!(entries(&tmp).is_empty(), "left {:?}", entries(&tmp));
}

/// A safetensors file of `dtype` holding one tensor `x` of `numel` elements, sparse on disk.
fn sparse_safetensors(path: &Path, dtype: &str, numel: u64, element_bytes: u64) {
    let header = format!(
        r#"{{"x":{{"dtype":"{dtype}","shape":[{numel}],"data_offsets":[0,{}]}}}}"#,
        numel * element_bytes
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    std::fs::write(path, &bytes).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(bytes.len() as u64 + numel * element_bytes)
        .unwrap();
}

/// Regression: a safetensors file was read whole and copied into tensors whatever its size
/// (a 1 GiB file cost 2 GiB before its keys were looked at). Now a file over the import
/// limit is refused unread, and one whose tensors hold more elements than the limit before
/// any tensor is made.
#[test]
fn oversized_safetensors_are_refused_before_they_are_copied() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let big = dir.path().join("big.safetensors");
    sparse_safetensors(&big, "F32", (1 << 28) + (1 << 23), 4);
    let many = dir.path().join("many.safetensors");
    sparse_safetensors(&many, "U8", (1 << 28) + 1, 1);
    let import = |input: &Path| {
        limit_memory(&mut gradstep(), 3 << 29)
            .arg("import")
            .arg(input)
            .arg(&out)
            .output()
            .unwrap()
    };
    assert_clear_error(
        &import(&big),
        &["big.safetensors", "1107296", "more than the import limit"],
    );
    assert_clear_error(
        &import(&many),
        &[
            "many.safetensors",
            "268435457 elements, more than the import limit of 268435456",
        ],
    );
    assert!(!out.exists());
}

/// Regression: the temporary folder stayed behind when Python could not be started (and on
/// a panic or an error after Python ran). Now there is none to leave: on success, on a bad
/// file and on a missing Python the temporary folder stays empty.
#[test]
fn nothing_is_left_in_the_temporary_folder() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out = dir.path().join("out.safetensors");
    py(
        dir.path(),
        "import torch; torch.save({'m_head.weight': torch.zeros(8, 4, 3, 3)}, 'good.pth')",
    );
    let bytes = std::fs::read(dir.path().join("good.pth")).unwrap();
    let cut = dir.path().join("cut.pth");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let run = |input: &Path, python: Option<&str>| {
        let mut c = gradstep();
        c.arg("import").arg(input).arg(&out).env("TMPDIR", &tmp);
        if let Some(p) = python {
            c.env("GRADSTEP_PYTHON", p);
        }
        let o = c.output().unwrap();
        assert!(entries(&tmp).is_empty(), "left {:?}", entries(&tmp));
        o
    };
    assert_clear_error(&run(&cut, None), &["cut.pth"]);
    assert_clear_error(
        &run(&cut, Some("/nonexistent/python")),
        &["/nonexistent/python", "GRADSTEP_PYTHON"],
    );
    assert!(!out.exists());
    let Some(shared) = shared() else { return };
    let ckpt = tiny_pth(&shared, dir.path(), "tiny.pth");
    let o = run(&ckpt, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.exists());
}

/// deepinv itself from the wheel in `shared/bench/wheels` when it is not installed: its
/// package `__init__` needs torchvision and imports everything, so only the parents are
/// stand-ins and `models/drunet.py`, `models/GSPnP.py` and their helpers are deepinv's own.
const LOAD_DEEPINV: &str = r#"
import glob, importlib, sys, types
try:
    from deepinv.models import GSDRUNet
except ImportError:
    wheel = sorted(glob.glob(WHEELS + "/deepinv-*.whl"))[0]
    sys.path.insert(0, wheel)
    for name in ("deepinv", "deepinv.models", "deepinv.utils"):
        stand_in = types.ModuleType(name)
        stand_in.__path__ = [wheel + "/" + name.replace(".", "/")]
        sys.modules[name] = stand_in
    io = types.ModuleType("deepinv.utils.io")  # only its DownloadError is used; needs requests
    io.DownloadError = type("DownloadError", (Exception,), {})
    sys.modules["deepinv.utils.io"] = io
    GSDRUNet = importlib.import_module("deepinv.models.GSPnP").GSDRUNet
"#;

/// Regression (deepinv nb=1): with one block per scale deepinv names the body's block
/// `m_body.res.*`, and the import refused it as missing `m_body.0.res.0.weight`. State dicts
/// made by deepinv with 1, 2 and 4 blocks, gray and colour, import and denoise like deepinv:
/// the imported checkpoint to 1e-5, and with one block `gradstep denoise`'s 8-bit output to
/// one grey level.
#[test]
fn deepinv_state_dicts_with_1_2_4_blocks_import_and_denoise_like_deepinv() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    py(
        dir.path(),
        &format!(
            "WHEELS = r'{}'\n{LOAD_DEEPINV}\n{}",
            shared.join("bench/wheels").display(),
            r#"
import torch
from safetensors.torch import save_file
for c in (1, 3):
    for nb in (1, 2, 4):
        torch.manual_seed(10 * c + nb)
        model = GSDRUNet(in_channels=c, out_channels=c, nb=nb, nc=(8, 16, 32, 64), act_mode="E", pretrained=None)
        torch.save(model.state_dict(), f"deepinv-c{c}-nb{nb}.pth")
        x = torch.randint(0, 256, (1, c, 32, 40)).float() / 255
        save_file({"x": x, "D": model(x, 25 / 255).detach()}, f"deepinv-c{c}-nb{nb}-io.safetensors")
"#
        ),
    );
    for c in [1i64, 3] {
        for nb in [1, 2, 4] {
            let tag = format!("deepinv-c{c}-nb{nb}");
            let ckpt = dir.path().join(format!("{tag}.safetensors"));
            let o = gradstep()
                .arg("import")
                .arg(dir.path().join(format!("{tag}.pth")))
                .arg(&ckpt)
                .output()
                .unwrap();
            assert!(o.status.success(), "{tag}: {}", stderr(&o));
            let expect = format!("{c} channel(s), widths [8, 16, 32, 64], {nb} blocks");
            assert!(stdout(&o).contains(&expect), "{tag}: {}", stdout(&o));
            let (io, _) =
                import::read_safetensors(&dir.path().join(format!("{tag}-io.safetensors")))
                    .unwrap();
            let (x, d) = (&io["x"], &io["D"]);
            // The network as `gradstep denoise` loads it.
            let den = Checkpoint::read(&ckpt)
                .unwrap()
                .denoiser(Device::Cpu, Kind::Float, &ckpt)
                .unwrap();
            let ours = den
                .denoise(x, &Sigma::Scalar(25.0 / 255.0), Graph::Inference)
                .unwrap();
            let err = (&ours - d).abs().max().double_value(&[]);
            assert!(err < 1e-5, "{tag}: max |D - deepinv| = {err:.2e}");
            let signal = (d - x).abs().max().double_value(&[]);
            assert!(
                signal > 1e-3,
                "{tag}: the denoiser changes nothing ({signal:.2e})"
            );
            if nb != 1 {
                continue;
            }
            // End to end through 8-bit images, for the case that used to fail.
            let to_u8 = |t: &Tensor| -> Vec<u8> {
                let t = (t.clamp(0.0, 1.0) * 255.0).round().to_kind(Kind::Uint8);
                let t = t
                    .squeeze_dim(0)
                    .permute([1, 2, 0])
                    .contiguous()
                    .flatten(0, -1);
                Vec::<u8>::try_from(&t).unwrap()
            };
            let input = dir.path().join(format!("{tag}.png"));
            let (w, h) = (40, 32);
            if c == 1 {
                image::GrayImage::from_raw(w, h, to_u8(x))
                    .unwrap()
                    .save(&input)
            } else {
                image::RgbImage::from_raw(w, h, to_u8(x))
                    .unwrap()
                    .save(&input)
            }
            .unwrap();
            let output = dir.path().join(format!("{tag}-out.png"));
            let o = gradstep()
                .args([
                    "denoise",
                    "--device",
                    "cpu",
                    "--sigma",
                    "25",
                    "--checkpoint",
                ])
                .arg(&ckpt)
                .arg(&input)
                .arg(&output)
                .output()
                .unwrap();
            assert!(o.status.success(), "{tag}: {}", stderr(&o));
            let got = image::open(&output).unwrap().into_bytes();
            let want = to_u8(d);
            assert_eq!(got.len(), want.len(), "{tag}");
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(worst <= 1, "{tag}: 8-bit output off by {worst}");
        }
    }
}
