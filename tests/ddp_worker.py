"""A worker for ``tests/test_distributed.py``: trains a tiny MetaVAE step by step through the one
``Trainer`` and saves the flattened parameters after every step, per rank.

Run under ``torchrun`` (N ranks) or alone (one process):
    python ddp_worker.py OUT DATA_ROOT STEPS
writes ``OUT/rank<r>.pt``: a ``(STEPS, num_parameters)`` float64 tensor.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TINY  # noqa: E402
from metavae.config import load_config  # noqa: E402
from metavae.experiments.transformed_images import build_model, build_task  # noqa: E402
from metavae.training import Trainer  # noqa: E402


def main(out: str, root: str, steps: int) -> None:
    torch.set_num_threads(1)
    config = load_config(None, [*TINY, ("train.device", "cpu")])
    task = build_task(config, Path(root))
    model = build_model(config, task)
    trainer = Trainer(model, task, config, Path(out) / "run")
    cfg = trainer.train_cfg
    torch.manual_seed(cfg.seed)  # the model's random draws: the same stream on every rank
    history = []
    for step in range(steps):
        batch = task.train_batch(0, step, cfg.batch_size, cfg.context_pool_size, trainer.generator)
        trainer.step(batch, "train")
        history.append(torch.cat([p.detach().double().flatten() for p in model.parameters()]))
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.save(torch.stack(history), Path(out) / f"rank{trainer.dist.rank}.pt")
    trainer.dist.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
