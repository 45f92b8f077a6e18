"""Training speed: patches per second of our training loop (augmentation included) against the network alone.

One run, same network, same patch size and batch:

1. the network alone: forward + backward + AdamW step on batches already on the device;
2. the batches alone: ``PatchSampler.batch``, patches cut from real DSB2018 images and augmented
   on the device (flips, rotation, zoom, elastic deformation, blur, intensity), no network: the
   most the training loop can reach, whatever the network;
3. ``iter_train``: those batches, the loss with the border weight map and the optimiser step -
   everything a fine-tune does except validation.

With ``--compile`` the network alone is timed again under ``torch.compile`` (its first steps,
where the compilation happens, timed apart): whether compiling would pay in a fine-tune of a few
minutes.

    python benchmarks/bench_train.py [--device cpu|cuda] [--steps 30] [--patch 128] [--batch 16] [--width 16]
        [--compile] [--npz gpu/dsb2018.npz]

``--npz`` reads the images from ``gpu_train.py pack``'s file instead of ``../shared/data``, which
a lent GPU machine does not have (carry the file's folder): on the device, run this first, for a
minute, to see whether the batches or the network set the pace at the kit's batch and patch size.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch

from napari_unet_loop.core.device import resolve_device
from napari_unet_loop.core.image import prepare_input
from napari_unet_loop.core.sampling import PatchSampler, Sample
from napari_unet_loop.core.train import TrainConfig, iter_train, training_dtype, training_precision
from napari_unet_loop.core.unet import UNet, UNetConfig
from napari_unet_loop.io.images import pair_files, read_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018"


def sync(device: torch.device) -> None:
    """Wait for the device."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def network_alone(
    net: torch.nn.Module, device, batch: int, patch: int, steps: int, precision: str
) -> tuple[float, float]:
    """Patches per second of forward + backward + step on device-resident random batches, and the
    seconds the three warm-up steps took (where ``torch.compile`` compiles)."""
    dtype = training_dtype(device, precision)
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    cfg = getattr(net, "_orig_mod", net).config  # a compiled network wraps the UNet
    x = torch.randn(batch, cfg.in_channels, patch, patch, device=device).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, cfg.n_classes, (batch, patch, patch), device=device)
    net.train()

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            y = net(x)
        loss = torch.nn.functional.cross_entropy(y[:, : cfg.n_classes].float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(3):
        step()
    sync(device)
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return batch * steps / (time.perf_counter() - t0), warmup


def batches_alone(samples: list[Sample], config: TrainConfig, device: torch.device, steps: int) -> float:
    """Patches per second of cutting and augmenting training batches, without the network."""
    sampler = PatchSampler(samples, config, device)
    for _ in range(2):
        sampler.batch(config.batch_size)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        sampler.batch(config.batch_size)
    sync(device)
    return config.batch_size * steps / (time.perf_counter() - t0)


def read_samples(args: argparse.Namespace) -> list[Sample]:
    """The first ``--images`` image/label pairs, from ``--npz`` or the DSB2018 folder, as network input."""
    if args.npz is not None:
        from gpu_train import packed

        return [
            Sample(prepare_input(image, 1), labels.astype(np.int32), name=name)
            for name, image, labels in packed(args.npz, args.images)
        ]
    pairs = pair_files(args.data / "images", args.data / "labels")[: args.images]
    return [Sample(prepare_input(read_image(i), 1), read_image(lab), name=i.stem) for i, lab in pairs]


def main() -> None:
    """Run the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--images", type=int, default=40, help="DSB2018 images to draw patches from")
    p.add_argument("--precision", default="auto")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--npz", type=Path, default=None, help="images from gpu_train.py pack's file instead of --data")
    p.add_argument("--compile", action="store_true", help="also time the network alone under torch.compile")
    args = p.parse_args()
    device = resolve_device(args.device)
    cfg = UNetConfig(depth=args.depth, base_width=args.width)
    torch.manual_seed(0)
    net = UNet(cfg).to(device, memory_format=torch.channels_last)  # as iter_train trains it
    alone, _ = network_alone(net, device, args.batch, args.patch, args.steps, args.precision)
    if args.compile:
        compiled, compile_s = network_alone(
            torch.compile(copy.deepcopy(net)), device, args.batch, args.patch, args.steps, args.precision
        )

    samples = read_samples(args)
    config = TrainConfig(
        patch_size=args.patch, batch_size=args.batch, steps=args.steps + 3, minutes=None, precision=args.precision
    )
    batches = batches_alone(samples, config, device, args.steps)
    net = UNet(cfg)
    times = []
    t_prev = None
    for ev in iter_train(net, samples, [], config, device):
        if ev.kind == "step":
            sync(device)
            now = time.perf_counter()
            if t_prev is not None and ev.step > 3:
                times.append(now - t_prev)
            t_prev = now
    ours = args.batch / float(np.median(times))
    print(
        f"device {device} ({torch.__version__}, {torch.get_num_threads()} threads), "
        f"precision {training_precision(device, args.precision)}"
    )
    print(f"U-Net depth {args.depth}, width {args.width}; patches {args.patch} x {args.patch}, batch {args.batch}")
    print(f"network alone (device-resident batches):     {alone:8.1f} patches/s")
    print(f"batches alone (cut + augmented, no network): {batches:8.1f} patches/s")
    print(f"iter_train (augmentation + loss included):   {ours:8.1f} patches/s")
    print(f"ratio ours / network alone:                  {ours / alone:8.2f}")
    if args.compile:
        print(f"network alone, torch.compile:                {compiled:8.1f} patches/s")
        print(f"ratio compiled / network alone:              {compiled / alone:8.2f}")
        print(f"compiling (first 3 steps):                   {compile_s:8.1f} s")


if __name__ == "__main__":
    main()
