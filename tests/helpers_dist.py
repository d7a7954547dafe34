"""Module-level functions for multi-process tests (must be importable in spawned processes)."""
import os


def write_world(out_dir):
    import torch
    import torch.distributed as dist
    from fastreid.utils import comm

    t = torch.tensor([float(comm.get_rank() + 1)])
    dist.all_reduce(t)
    with open(os.path.join(out_dir, f"rank{comm.get_rank()}.txt"), "w") as f:
        f.write(f"{comm.get_rank()}/{comm.get_world_size()}/{t.item()}")
