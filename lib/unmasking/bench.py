"""The study's speed benchmark: ``make bench`` (``python -m unmasking.bench``) writes ``reports/bench.json``.

Measured in one run on this machine:

* data stage: pairs/s synthesizing pairs from a folder of faces (landmarks + overlay + crop + resize, all workers),
  and pairs/s reading a local Face Mask Lite-layout copy of generated 1024 x 1024 PNGs;
* training: images/s of each model at the configured image size and batch after a warm-up epoch, through the
  training stage's own loop (``train.train_epoch``), how many cores it kept busy (CPU time / wall time), and the
  share of that epoch the input side (batching, flips) takes; FLOPs per training image counted per layer from the
  Keras graph (convolutions: 2 x k x k x C_in x C_out x H_out x W_out for the forward pass, times 3 for forward +
  backward; other layers ignored), hence the achieved GFLOP/s; the GFLOP/s of a large float32 matrix product in the
  backend and through NumPy's BLAS, and the training GFLOP/s of a single 3 x 3 convolution 16, 64 and 256 channels
  wide (how far thin convolutions are from wide ones); the fastest of these is the practical ceiling that the
  models' share is measured against;
* inference: images/s batched, and milliseconds for one photo through ``unmask predict`` (detect, crop, predict,
  paste back): the first generated face of ``download.indomain_faces``, masked with the project's white surgical mask;
* the wall time of each pipeline stage, read from the last ``make repro`` log (``reports/repro.log``).

``mask_gan``'s FLOPs per training image count what one GAN step runs per image: the generator once forward (the
fakes for the discriminator) and once forward and backward (its own step), the discriminator forward and backward on
a real and a fake image and once more forward and backward in the generator's step: 4 F_G + 9 F_D.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from unmasking import params as P
from unmasking import paths


def conv_flops(model) -> int:
    """Forward FLOPs of one image through the model's convolutions (2 per multiply-add)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            _, h, w, cout = layer.output.shape
            total += 2 * kh * kw * cin * cout * h * w
    return int(total)


def best_seconds(fn, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn``, after one untimed warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def numpy_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n float32 matrix product through NumPy's BLAS (best of ``repeats``)."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    return 2 * n**3 / best_seconds(lambda: a @ a, repeats) / 1e9


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n float32 matrix product in the Keras backend (best of ``repeats``)."""
    from keras import ops

    a = ops.convert_to_tensor(np.random.default_rng(0).random((n, n), dtype=np.float32))
    return 2 * n**3 / best_seconds(lambda: ops.convert_to_numpy(ops.matmul(a, a)), repeats) / 1e9


def bench_training(name: str, tp: dict, image_size: int, batch_size: int, n_images: int) -> dict[str, Any]:
    from unmasking import gan, models, train

    train.seed_everything(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n_images, image_size, image_size, 3), dtype=np.uint8)
    y = x.copy()
    y[:, image_size // 2 :] = 255 - y[:, image_size // 2 :]
    ds = train.PairBatches(x, y, batch_size, 0, mask_target=models.needs_mask_target(name))
    if name == "mask_gan":
        trainer = gan.GanTrainer(image_size, tp["mask_unet"], tp["mask_gan"], len(ds))
        model = trainer.generator
        flops = 4 * conv_flops(model) + 9 * conv_flops(trainer.disc)
    else:
        trainer = train.SingleTrainer(models.build(name, image_size, tp[name]))
        model = trainer.model
        flops = 3 * conv_flops(model)
    trainer.train_epoch(ds, 0)  # warm-up: tracing and compilation
    t, cpu = time.perf_counter(), os.times()
    trainer.train_epoch(ds, 1)  # the training stage's own loop
    dt = time.perf_counter() - t
    cpu_s = sum(os.times()[:2]) - sum(cpu[:2])  # this process's user + system CPU time in that epoch
    ds.set_epoch(1)
    t = time.perf_counter()
    for i in range(len(ds)):  # the same epoch's batches alone: what the input side costs the loop
        ds[i]
    input_s = time.perf_counter() - t
    ips = n_images / dt
    x = ds.x.astype(np.float32) / 255
    models.predict(model, x[:64], 64)  # warm-up: tracing
    t = time.perf_counter()
    models.predict(model, x, 64)  # the study's own batched prediction
    infer = n_images / (time.perf_counter() - t)
    return {"parameters": int(model.count_params()), "train_images_per_s": round(ips, 1),
            "train_gflop_per_image": round(flops / 1e9, 3), "train_gflops_achieved": round(ips * flops / 1e9, 1),
            "inference_images_per_s": round(infer, 1), "input_share_of_epoch": round(input_s / dt, 4),
            "cores_busy": round(cpu_s / dt, 2)}


def conv_gflops(widths: tuple[int, ...] = (16, 64, 256), size: int = 64, batch: int = 8, repeats: int = 3
                ) -> dict[str, float]:
    """Training GFLOP/s of one 3 x 3 convolution with ``C`` channels in and out, per width ``C``: how the convolutions'
    speed depends on their width on this machine (the models' are 16-192 channels wide)."""
    import keras

    out = {}
    rng = np.random.default_rng(0)
    for c in widths:
        model = keras.Sequential([keras.Input((size, size, c)), keras.layers.Conv2D(c, 3, padding="same")])
        model.compile(optimizer="sgd", loss="mse")
        x = rng.random((batch, size, size, c), dtype=np.float32)
        seconds = best_seconds(lambda m=model, x=x: m.train_on_batch(x, x), repeats)
        out[str(c)] = round(3 * 2 * 9 * c * c * size * size * batch / seconds / 1e9, 1)
    return out


def bench_synthesis(faces_dir: Path, mask: str, n: int, image_size: int, workers: int) -> dict[str, Any]:
    from unmasking import data, masks

    library = masks.find_templates(mask) if mask else masks.drawn_templates()
    t = time.perf_counter()
    found = data.find_faces(faces_dir, n, 0, True, workers, progress=False)
    names = [sorted(library)[0]] * len(found.faces)
    pairs, _ = data.mask_faces(found, names, library, image_size, workers, progress=False)
    dt = time.perf_counter() - t
    used = sum(p is not None for p in pairs)
    return {"pairs": used, "tried": found.col.tried, "seconds": round(dt, 2),
            "pairs_per_s": round(used / dt, 1), "workers": workers}


def bench_local_copy(n: int, image_size: int, workers: int, side: int = 1024) -> dict[str, Any]:
    from PIL import Image

    from unmasking import data

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "with_mask").mkdir()
        (root / "without_mask").mkdir()
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (side // 8, side // 8, 3), dtype=np.uint8)
        for i in range(n):
            u = np.asarray(Image.fromarray(np.roll(base, i, axis=0)).resize((side, side), Image.BILINEAR))
            m = u.copy()
            m[side // 2 : side * 5 // 6, side // 4 : side * 3 // 4] = 240
            Image.fromarray(u).save(root / "without_mask" / f"seed{i:04d}.png")
            Image.fromarray(m).save(root / "with_mask" / f"with-mask-default-mask-seed{i:04d}.png")
        t = time.perf_counter()
        col = data.collect_local(root, n, image_size, 0, workers, progress=False)
        dt = time.perf_counter() - t
    return {"pairs": len(col.pairs), "image_side": side, "seconds": round(dt, 2),
            "pairs_per_s": round(len(col.pairs) / dt, 1), "workers": workers}


def bench_predict_photo(weights: Path | None, photo: Path | None, repeats: int = 5) -> dict[str, Any] | None:
    """Milliseconds for one photo through ``unmask predict`` (model loaded once, as in a batch run): the photo masked
    with the project's white surgical mask."""
    from unmasking import cli, data, images, masks, models, photos, shipped

    if photo is None or not photo.is_file():
        return None
    model, wpath = cli.load_weights(weights)
    u = images.read_rgb(photo)
    img = masks.apply_mask(u, data.find_landmarks(u), masks.drawn_templates()["surgical-white"])
    flip = models.flip_averaged(model, shipped.settings())

    def once():
        return photos.unmask_image(model, img, flip, masked=shipped.masked_detector())

    once()
    t = time.perf_counter()
    for _ in range(repeats):
        once()
    return {"photo": photo.name, "size": f"{img.shape[1]}x{img.shape[0]}", "weights": wpath.name,
            "ms_per_photo": round((time.perf_counter() - t) / repeats * 1000, 1)}


def stage_times(log: Path) -> dict[str, Any] | None:
    """Wall time of each stage from a ``make repro`` log (lines ``stage NAME: N s``)."""
    if not log.is_file():
        return None
    times = {m.group(1): float(m.group(2)) for m in re.finditer(r"^stage ([\w ]+?): (\d+) s", log.read_text(), re.M)}
    return {"from": str(log.relative_to(paths.PROJ_ROOT)) if log.is_relative_to(paths.PROJ_ROOT) else str(log),
            "seconds": times, "total_s": round(sum(times.values()), 1)} if times else None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` says): trained weights and timings
    differ from one CPU family to another."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(params_file: Path | None, out: Path, faces: Path | None, n_synth: int, n_local: int, n_train: int,
        weights: Path | None, photo: Path | None, log: Path) -> dict[str, Any]:
    import keras

    p = P.load(params_file)
    dl, tp = p["download"], p["train"]
    size = dl["image_size"]
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "platform": platform.platform(),
                                          "backend": keras.backend.backend()}, "image_size": size,
                              "batch_size": tp["batch_size"]}
    faces = faces or (paths.resolve(dl["faces"]) if dl["faces"] else None)
    mask = str(paths.resolve(dl["mask"])) if dl["mask"] else ""
    if faces and Path(faces).is_dir() and n_synth:
        result["data_synthesis"] = bench_synthesis(Path(faces), mask, n_synth, size, dl["workers"])
    if n_local:
        result["data_local_copy"] = bench_local_copy(n_local, size, dl["workers"])
    result["matmul_gflops"] = round(matmul_gflops(), 1)
    result["numpy_matmul_gflops"] = round(numpy_matmul_gflops(), 1)
    result["conv3x3_train_gflops_by_width"] = conv_gflops()
    # The practical ceiling: the fastest dense float32 work measured here (a wide convolution can beat the
    # backend's own matrix product)
    result["ceiling_gflops"] = max(result["matmul_gflops"], result["numpy_matmul_gflops"],
                                   *result["conv3x3_train_gflops_by_width"].values())
    result["training"] = {}
    for name in p["evaluate"]["models"]:
        r = bench_training(name, tp, size, tp["batch_size"], n_train)
        r["share_of_ceiling"] = round(r["train_gflops_achieved"] / result["ceiling_gflops"], 3)
        result["training"][name] = r
    try:
        result["predict_one_photo"] = bench_predict_photo(weights, photo)
    except Exception as e:  # no trained weights yet
        result["predict_one_photo"] = {"error": str(e)}
    result["stages"] = stage_times(log)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(r: dict[str, Any]) -> None:
    print(f"machine: {r['machine']['cpus']} CPUs, {r['machine']['backend']}; image {r['image_size']} px, "
          f"batch {r['batch_size']}")
    for k in ("data_synthesis", "data_local_copy"):
        if k in r:
            print(f"{k:<28}{r[k]['pairs_per_s']:>10} pairs/s  ({r[k]['pairs']} pairs, {r[k]['workers']} workers)")
    print(f"{'matmul (backend, NumPy)':<28}{r['matmul_gflops']:>10}, {r['numpy_matmul_gflops']} GFLOP/s")
    for name, t in r["training"].items():
        print(f"{'train ' + name:<28}{t['train_images_per_s']:>10} img/s  {t['train_gflop_per_image']} GFLOP/img  "
              f"{t['train_gflops_achieved']} GFLOP/s = {t['share_of_ceiling']:.0%} of the ceiling; "
              f"inference {t['inference_images_per_s']} img/s; input {t['input_share_of_epoch']:.1%} of the epoch; "
              f"{t['cores_busy']} cores busy")
    if "conv3x3_train_gflops_by_width" in r:
        print(f"{'3x3 conv, C in = C out':<28}" + ", ".join(f"C={c}: {g} GFLOP/s"
                                                            for c, g in r["conv3x3_train_gflops_by_width"].items()))
    print(f"{'ceiling (fastest of these)':<28}{r['ceiling_gflops']:>10} GFLOP/s")
    ph = r.get("predict_one_photo")
    if ph and "ms_per_photo" in ph:
        print(f"{'unmask predict, one photo':<28}{ph['ms_per_photo']:>10} ms  ({ph['size']}, {ph['weights']})")
    if r.get("stages"):
        s = r["stages"]
        print("stages (" + s["from"] + "): " + ", ".join(f"{k} {v:.0f} s" for k, v in s["seconds"].items())
              + f"; total {s['total_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unmasking.bench", description="Benchmark the study's speed.")
    ap.add_argument("--params", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=paths.REPORTS_DIR / "bench.json")
    ap.add_argument("--faces", type=Path, default=None, help="faces folder (default: download.faces)")
    ap.add_argument("--n-synth", type=int, default=300)
    ap.add_argument("--n-local", type=int, default=200)
    ap.add_argument("--n-train", type=int, default=320)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--photo", type=Path, default=None, help="a face photo (default: the first generated face of "
                    "download.indomain_faces)")
    ap.add_argument("--log", type=Path, default=paths.REPORTS_DIR / "repro.log")
    args = ap.parse_args(argv)
    photo = args.photo
    if photo is None:
        dl = P.load(args.params)["download"]
        folder = paths.resolve(dl["indomain_faces"]) if dl["indomain_faces"] else None
        from unmasking import images

        files = sorted(f for f in folder.rglob("*") if images.is_image_name(f.name)) \
            if folder and folder.is_dir() else []
        photo = files[0] if files else None
    r = run(args.params, args.out, args.faces, args.n_synth, args.n_local, args.n_train, args.weights, photo, args.log)
    print_table(r)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
