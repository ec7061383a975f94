"""Bring your own family: one MetaVAE over MNIST digits from K scanners of different quality.

Not a transformation of the digits: distribution k is "a handwritten digit as scanner k sees it",
with its own rate of speckle (background pixels switched on) and of dropout (ink pixels lost),
both growing with k — the kind of family a researcher brings (a data set per instrument, per
site, per acquisition setting). Each distribution gets its own disjoint slice of the MNIST train
and test images. Two scanners are held out: never trained on, they are represented at test time
only by context sets of their images. The linear probe then asks whether the meta-inference
network q(z | D, x) still reads the digit off images from the unseen scanners.

Only top-level imports of metavae are used. Run (after ``metavae data mnist``)::

    python examples/byo_family.py [--steps 1500] [--per-distribution 6000] [--out runs/byo_family]
"""

from __future__ import annotations

import argparse

import torch

from metavae import DatasetFamily, MetaVAE, MetaVAEConfig, TrainConfig, Trainer, load_mnist, probe


def scanned(images: torch.Tensor, speckle: float, dropout: float, generator: torch.Generator) -> torch.Tensor:
    """uint8 digits ``(n, 28, 28)`` as a scanner sees them → ``(n, 1, 28, 28)`` in [0, 1]: each pixel
    switched on with probability ``speckle``, and the ink of each pixel lost with probability ``dropout``."""
    x = images.float() / 255.0
    x = x * (torch.rand(x.shape, generator=generator) >= dropout)
    x = torch.maximum(x, (torch.rand(x.shape, generator=generator) < speckle).float())
    return x.unsqueeze(1)


def build_family(num_scanners: int, per_distribution: int, held_out: list[int], data_dir: str | None) -> DatasetFamily:
    train, test = load_mnist(data_dir, train=True), load_mnist(data_dir, train=False)
    n_train = min(per_distribution, len(train) // num_scanners)
    n_test = min(per_distribution // 5, len(test) // num_scanners)
    generator = torch.Generator().manual_seed(0)
    parts: dict[str, list] = {"train": [], "test": []}
    for k in range(num_scanners):
        speckle, dropout = 0.015 * k, 0.05 * k
        for name, split, n in (("train", train, n_train), ("test", test, n_test)):
            rows = slice(k * n, (k + 1) * n)  # disjoint images per distribution
            parts[name].append((scanned(split.images[rows], speckle, dropout, generator), split.labels[rows]))
    names = [f"scanner {k}" for k in range(num_scanners)]
    return DatasetFamily(parts["train"], parts["test"], held_out=held_out, names=names, context_size=10)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scanners", type=int, default=8)
    parser.add_argument("--held-out", default="2,5", help="comma-separated indices of held-out scanners")
    parser.add_argument("--per-distribution", type=int, default=6000, help="train images per distribution")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--hidden", type=int, default=400, help="hidden width (the paper's is 400)")
    parser.add_argument("--probe-examples", type=int, default=2000)
    parser.add_argument("--data-dir", default=None, help="MNIST root (default $METAVAE_DATA or ./data)")
    parser.add_argument("--out", default="runs/byo_family")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    task = build_family(args.scanners, args.per_distribution, [int(i) for i in args.held_out.split(",")], args.data_dir)
    print(task)
    config = MetaVAEConfig(hidden_dim=args.hidden, summary_dim=args.hidden, summary_hidden=(args.hidden,))
    model = MetaVAE.from_config(config, task.event_shape, task.num_decoders)
    train = TrainConfig(batch_size=50, max_steps=args.steps, validate_every=max(1, args.steps // 3), val_examples=200,
                        val_importance_samples=10, val_pool_size=100, context_pool_size=100, lr=1e-3)
    trainer = Trainer(model, task, train, args.out)
    fit = trainer.fit(resume=True)
    trainer.restore_best()  # probe the parameters of the best validation IWAE
    print(f"trained {fit.step} steps, best validation IWAE {fit.best_val:.1f} at step {fit.best_step}")

    result = probe(model, task, train_examples=args.probe_examples, test_examples=args.probe_examples // 2, pool_size=200,
                   reference=task.distribution_names()[0])
    for name, accuracy in result["per_distribution"].items():
        transfer = result["invariance"]["per_distribution"][name]
        print(f"held-out {name:>10}: probe accuracy {accuracy:.3f}  (classifier of {result['invariance']['reference']}: "
              f"{transfer:.3f})")
    print(f"mean held-out probe accuracy {result['mean_accuracy']:.3f}")
    return result


if __name__ == "__main__":
    main()
