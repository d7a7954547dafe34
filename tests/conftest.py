import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pytest  # noqa: E402

import fastreid_ext  # noqa: E402,F401  (compat before anything of fastreid)


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory):
    """A session-wide FASTREID_DATASETS with tiny SynthPed domains created on first use."""
    root = tmp_path_factory.mktemp("datasets")
    old = os.environ.get("FASTREID_DATASETS")
    os.environ["FASTREID_DATASETS"] = str(root)
    yield root
    if old is None:
        os.environ.pop("FASTREID_DATASETS", None)
    else:
        os.environ["FASTREID_DATASETS"] = old


@pytest.fixture(autouse=True)
def _loggers_propagate():
    """FastReID's setup_logger (called by in-process train_net runs) turns propagation off, which hides
    our warnings from pytest's caplog in later tests, and adds handlers bound to that test's captured stdout
    and OUTPUT_DIR: restore propagation and drop the added handlers around every test."""
    import logging

    names = ("fastreid_ext", "fastreid")
    old = {n: logging.getLogger(n).propagate for n in names}
    handlers = {n: list(logging.getLogger(n).handlers) for n in names}
    for n in names:
        logging.getLogger(n).propagate = True
    yield
    for n, v in old.items():
        lg = logging.getLogger(n)
        lg.propagate = v
        for h in [h for h in lg.handlers if h not in handlers[n]]:
            lg.removeHandler(h)
            h.close()


@pytest.fixture
def one_thread():
    """One intra-op torch thread: on 2 shared cores, 2 OpenMP threads next to another busy process make small CPU
    convolutions ~10x slower (spin-waiting); one thread is steady. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    yield from _one_torch_thread()


@pytest.fixture(scope="module")
def one_thread_module():
    """:func:`one_thread` for a whole test module (``pytest.mark.usefixtures("one_thread_module")``)."""
    yield from _one_torch_thread()


def _one_torch_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def batch_losses():
    """``f(model, batch) -> {name: float}``: a model's training losses on one fixed batch, computed on a copy in
    training mode without gradients and with torch's random state fixed (random draws inside the forward, e.g.
    sampled pairs, are the same at every call; the model, its BN statistics and the caller's random state are left
    as they are). End-to-end tests take them before and after training: a model that does not learn keeps them."""
    import copy

    import torch
    from fastreid.utils.events import EventStorage

    def losses(model, batch):
        m = copy.deepcopy(model).train()
        with torch.random.fork_rng(devices=[]), torch.no_grad(), EventStorage(0):
            torch.manual_seed(0)
            return {k: float(v) for k, v in m(batch).items()}

    return losses
