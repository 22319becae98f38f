"""Issue 11, item 4 ("fits on one GPU"): the probe chunked, its teacher outputs stored compactly off the
device or recomputed, with the same loss as the whole probe at once; activation checkpointing for the
student with the same loss and gradients as without. Random nano models and inputs: no data, seconds."""

from pathlib import Path

import pytest
import torch

from optima.config import MODULES, load_config
from optima.distill.bench_step import RandomTaskData, pool_size
from optima.config import with_defaults
from optima.distill.setup import build_objective
from optima.distill.objectives import DistillationObjective
from unittest import mock

import optima.distill.probe as probe_module
from optima.distill.probe import Probe, slice_batch, split_probe
from optima.runtime import Runtime
from optima.distill.sampling import fixed_batch
from optima.errors import ConfigError
from optima.models import create_coca
from optima.tasks import create_task_model
from optima.models.student import make_student

from tests.numerics import FLOAT64_REL

CONTEXT, VOCAB, IMAGE = 12, 128, 32
NUM_CLASSES = {"captions": None, "vqa": 11, "snli_ve": 3, "nlvr2": 2}
CPU = Runtime(device=torch.device("cpu"))


def make(task, n=10, dtype=torch.float32, **options):
    """A random nano teacher, its half-depth student, the objective, and a batch of ``n`` random examples whose
    captions/sentences have very different lengths (so token masks weigh the chunks unequally); models and
    inputs in ``dtype``."""
    torch.manual_seed(0)
    data = RandomTaskData(task, n, IMAGE, CONTEXT, VOCAB, NUM_CLASSES[task], seed=0)
    g = torch.Generator().manual_seed(1)
    for i in range(n):
        length = 2 + (i * 7) % (CONTEXT - 1)  # 2 .. 12 real tokens
        data.texts[i] = 0
        data.texts[i, :length] = torch.randint(3, VOCAB, (length,), generator=g)
    coca = create_coca("optima-nano-teacher", vocab_size=VOCAB, context_length=CONTEXT)
    teacher = create_task_model(task, coca, NUM_CLASSES[task])
    student_coca, layer_map = make_student(teacher.coca, 0.5)
    student = create_task_model(task, student_coca, NUM_CLASSES[task])
    kd_kind = "sigmoid" if task == "vqa" else "softmax"
    teacher.to(dtype), student.to(dtype)
    objective = DistillationObjective(student, teacher, layer_map, 1.0, 2.0, 1.0, kd_kind=kd_kind, **options)
    batch = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v
             for k, v in fixed_batch(data, range(n)).items()}
    return objective.to(dtype), batch


# Chunked vs whole in float64 (tests/numerics.py), the probe keeping the teacher's outputs in float64 too (Probe64):
# the sums run in another order (error ~ terms x 1.1e-16, under 1e-12 for the ~10^4 terms here). FLOAT64_REL (1e-9)
# bounds that with a wide margin and still catches any mis-weighted chunk (those err by percents). (Stored in
# float32, distill.probe_dtype's default, the teacher's VQA logits alone would move kd_loss by 1e-6 of itself.)
# A teacher output stored in float16 (bfloat16) rounds once, by at most its unit roundoff u = 2^-11 (2^-8) of
# itself; a squared difference (student - teacher)^2 then moves by about 2u of itself where the two differ by
# about the teacher's size (random nano models), and every loss term is a mean of such non-negative terms, or of
# KD terms whose inputs moved as little: 2u bounds the losses' relative change.
FLOAT16_REL, BFLOAT16_REL = 2 * 2.0 ** -11, 2 * 2.0 ** -8


def Probe64(objective, batch, runtime, **options):
    """A probe that keeps the teacher's outputs in float64 (a dtype distill.probe_dtype does not offer): with a
    float64 model, the whole probe, its chunks, its recomputation and the training loss compute one quantity."""
    with mock.patch.object(probe_module, "PROBE_DTYPES", (*probe_module.PROBE_DTYPES, "float64")):
        return Probe(objective, batch, runtime, dtype="float64", **options)


def close(a, b, rel=FLOAT64_REL):
    assert set(a) == set(b)
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=rel, abs=0), key


# ---------------------------------------------------------------------- chunked == unchunked
@pytest.mark.numerics
@pytest.mark.parametrize("task,reduction", [("captions", "module_sum"), ("captions", "layer_mean"),
                                            ("vqa", "module_sum"), ("nlvr2", "layer_mean")])
def test_chunked_probe_gives_the_unchunked_loss(task, reduction):
    # exactness is the point: in float64 the chunks' sums differ from the whole's only by rounding (CPU-independent)
    objective, batch = make(task, dtype=torch.float64, layer_reduction=reduction)
    whole = Probe64(objective, batch, CPU).losses()
    assert {"loss", "task_loss", "kd_loss", "layer_loss", *(f"layer_loss_{m}" for m in MODULES)} == set(whole)
    for chunk in (1, 3, 4, 9):  # uneven last chunks included
        close(Probe64(objective, batch, CPU, chunk=chunk).losses(), whole, rel=FLOAT64_REL)
    # the same as the training loss on the whole batch (what the probe measured before chunking existed)
    objective.eval()
    with torch.no_grad():
        direct = {k: float(v) for k, v in objective.compute(batch, MODULES).items()}
    objective.train()
    close(direct, whole, rel=FLOAT64_REL)


@pytest.mark.numerics
def test_chunks_are_weighted_by_their_real_tokens_not_averaged():
    """On captions the chunks hold different numbers of real tokens: a plain mean of the chunks' losses
    would be wrong, so the test above would catch an unweighted combination."""
    objective, batch = make("captions", dtype=torch.float64)
    whole = Probe64(objective, batch, CPU).losses()
    probe = Probe64(objective, batch, CPU, chunk=3)
    parts = []
    objective.eval()
    with torch.no_grad():
        for start, stop in probe.bounds:
            parts.append(float(objective.compute(slice_batch(batch, start, stop, 10), MODULES)["task_loss"]))
    objective.train()
    naive = sum(parts) / len(parts)
    assert abs(naive - whole["task_loss"]) > 1e-3 * whole["task_loss"]
    assert probe.losses()["task_loss"] == pytest.approx(whole["task_loss"], rel=FLOAT64_REL)


@pytest.mark.numerics
def test_classification_task_loss_counts_examples():
    objective, batch = make("snli_ve", dtype=torch.float64)
    close(Probe64(objective, batch, CPU, chunk=4).losses(), Probe64(objective, batch, CPU).losses())


# ---------------------------------------------------------------------- storage and dtype
@pytest.mark.numerics
@pytest.mark.parametrize("task", ["captions", "nlvr2"])
def test_storage_off_the_device_or_recomputed_in_a_compact_dtype(task):
    objective, batch = make(task, dtype=torch.float64)
    whole = Probe64(objective, batch, CPU).losses()
    full = Probe(objective, batch, CPU, chunk=4)  # float32 storage (the default), which float16 halves
    half = Probe(objective, batch, CPU, chunk=4, dtype="float16", storage="cpu")
    bf16 = Probe(objective, batch, CPU, chunk=4, dtype="bfloat16", storage="cpu")
    again = Probe64(objective, batch, CPU, chunk=4, storage="recompute")
    assert again.stored is None and again.stored_bytes == 0  # nothing kept between measurements
    close(again.losses(), whole)
    # float16 halves what float32 keeps (the bool masks stay bool) and moves the loss by rounding only
    assert half.stored_bytes < 0.55 * full.stored_bytes
    for out in half.stored:
        assert out["logits"].dtype == torch.float16 and out["logits"].device.type == "cpu"
        assert all(f.dtype == torch.float16 for f in out["features"].values())
        assert all(m.dtype == torch.bool for m in out["masks"].values())
    close(half.losses(), whole, rel=FLOAT16_REL)
    close(bf16.losses(), whole, rel=BFLOAT16_REL)
    # every measurement of a stored probe gives the same value (the reward's L_before / L_after)
    assert half.losses() == half.losses()


def test_probe_options_are_checked_and_come_from_the_config(smoke_config_path):
    objective, batch = make("vqa", n=6)
    for kwargs, key in (({"storage": "gpu"}, "distill.probe_storage"), ({"dtype": "int8"}, "distill.probe_dtype"),
                        ({"chunk": 0}, "distill.probe_chunk")):
        with pytest.raises(ConfigError, match=key):
            Probe(objective, batch, CPU, **kwargs)
    for override, key in (("distill.probe_storage=gpu", "distill.probe_storage"),
                          ("distill.probe_dtype=half", "distill.probe_dtype"),
                          ("distill.probe_chunk=0", "distill.probe_chunk"),
                          ("distill.grad_checkpointing=maybe", "distill.grad_checkpointing")):
        with pytest.raises(ConfigError, match=key):
            load_config(smoke_config_path, [override])
    section = load_config(smoke_config_path, ["distill.probe_chunk=4", "distill.probe_dtype=bfloat16",
                                              "distill.probe_storage=cpu"])["distill"]
    probe = Probe.from_config(objective, batch, CPU, section)
    assert (probe.chunk, probe.dtype, probe.storage, len(probe.bounds)) == (4, torch.bfloat16, "cpu", 2)
    # the paper config keeps the probe in float16 on the host, 32 examples per forward
    paper = load_config(Path(__file__).resolve().parents[1] / "config" / "paper.yaml")["distill"]
    assert (paper["probe_chunk"], paper["probe_dtype"], paper["probe_storage"]) == (32, "float16", "cpu")


def test_a_contrastive_caption_loss_refuses_to_be_chunked():
    objective, batch = make("captions", n=6)
    objective.student.options["contrastive_weight"] = 1.0
    Probe(objective, batch, CPU)  # whole: fine
    with pytest.raises(ConfigError, match="distill.probe_chunk"):
        Probe(objective, batch, CPU, chunk=3)


# ---------------------------------------------------------------------- activation checkpointing
def grads_of(objective, batch):
    objective.zero_grad(set_to_none=True)
    losses = objective.compute(batch, MODULES)
    losses["loss"].backward()
    losses = {k: v.detach() for k, v in losses.items()}
    grads = {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}
    return {k: float(v) for k, v in losses.items()}, grads


@pytest.mark.numerics
@pytest.mark.parametrize("task", ["captions", "vqa"])
def test_grad_checkpointing_gives_the_same_loss_and_gradients(task):
    torch.manual_seed(0)
    data = RandomTaskData(task, 6, IMAGE, CONTEXT, VOCAB, NUM_CLASSES[task], seed=0)
    batch = fixed_batch(data, range(6))
    coca = create_coca("optima-nano-teacher", vocab_size=VOCAB, context_length=CONTEXT)
    teacher = create_task_model(task, coca, NUM_CLASSES[task])
    config = with_defaults({"distill": {"grad_checkpointing": True}, "model": {"student_layers": 0.5, "layer_map": None}})
    objective, student, _ = build_objective(task, config, teacher, NUM_CLASSES[task], 1.0, 2.0, 1.0)
    # float64: recomputation inside backward gives the same values up to rounding whatever the kernels
    teacher.double(), objective.double()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    towers = (student.coca.visual.transformer, student.coca.text.transformer, student.coca.text_decoder)
    assert all(t.grad_checkpointing for t in towers)  # the config key switched it on

    calls = []
    block = student.coca.visual.transformer.resblocks[0]
    handle = block.register_forward_pre_hook(lambda *_: calls.append(1))  # (recomputation may stop early)
    with_ckpt = grads_of(objective, batch)
    assert len(calls) == 2  # the block ran again inside backward: checkpointing is really in effect
    handle.remove()

    student.coca.set_grad_checkpointing(False)
    without = grads_of(objective, batch)
    close(with_ckpt[0], without[0])
    assert set(with_ckpt[1]) == set(without[1]) and len(without[1]) > 10
    for name, grad in without[1].items():  # a gradient element may be a cancellation: compared at the tensor's size
        assert torch.allclose(with_ckpt[1][name], grad, rtol=0, atol=FLOAT64_REL * float(grad.abs().max())), name


# ---------------------------------------------------------------------- bench inputs at paper scale
def test_random_inputs_cost_no_host_memory_and_are_reproducible():
    n = pool_size(64, 256)
    assert n == 1024  # 256 probe examples may hold out at most 25% of the images; 768 examples still train
    data = RandomTaskData("nlvr2", n, 224, 76, 49408, 2, seed=0)
    assert data.texts.numel() * data.texts.element_size() < 1e6  # images are drawn per item, not kept
    assert not hasattr(data, "images")
    assert torch.equal(data[5]["images"], data[5]["images"]) and data[5]["images"].shape == (2, 3, 224, 224)
    assert not torch.equal(data[5]["images"], data[6]["images"])
    probe, train = split_probe(data, 256, seed=0)
    assert len(probe) == 256 and len(train) == n - 256
