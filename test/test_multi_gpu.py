"""Two GPUs (skipped unless two SM90 devices exist): every op on cuda:1 while cuda:0 is current, two threads on two
devices at once, a CUDA graph and a compiled function on cuda:1, cold JIT compiles on both devices at the same time,
and two processes sharing one cold kernel cache."""

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import torch
from conftest import requires_two_gpus

from samples import contiguous_inputs, gemm_inputs, masked_inputs, ops

pytestmark = requires_two_gpus
REPO = Path(__file__).resolve().parent.parent


def rel_err(x, ref):
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


def cpu(args):
    return [a.cpu() if isinstance(a, torch.Tensor) else a for a in args]


def test_every_op_on_the_second_device():
    torch.cuda.set_device(0)
    dev = "cuda:1"
    a, sfa, b, sfb, c = gemm_inputs(96, 576, 1024, device=dev, with_c=True, seed=1)
    for args in ((a, sfa, b, sfb), (a, sfa, b, sfb, c)):
        got = ops.fp8_gemm_nt(*args)
        assert got.device == torch.device(dev)
        assert rel_err(got.cpu(), ops.fp8_gemm_nt(*cpu(args), None if len(args) == 5 else torch.bfloat16)) < 4e-3
    ga, gsfa, gb, gsfb, m_indices = contiguous_inputs([128, 256], 576, 1024, device=dev, seed=2)
    got = ops.m_grouped_fp8_gemm_nt_contiguous(ga, gsfa, gb, gsfb, m_indices)
    assert rel_err(got.cpu(), ops.m_grouped_fp8_gemm_nt_contiguous(*cpu((ga, gsfa, gb, gsfb, m_indices)))) < 4e-3
    ma, msfa, mb, msfb, masked_m = masked_inputs([64, 64], 64, 576, 1024, device=dev, seed=3)
    got = ops.m_grouped_fp8_gemm_nt_masked(ma, msfa, mb, msfb, masked_m, 64)
    assert rel_err(got.cpu(), ops.m_grouped_fp8_gemm_nt_masked(*cpu((ma, msfa, mb, msfb, masked_m)), 64)) < 4e-3
    x = torch.randn(300, 1024, device=dev, dtype=torch.bfloat16)
    for fn, arg in ((ops.per_token_cast_to_fp8, x), (ops.per_block_cast_to_fp8, x), (ops.per_token_cast_to_fp8, x.t())):
        q, sf = fn(arg)
        q_ref, sf_ref = fn(arg.cpu())
        assert q.device == torch.device(dev) and torch.equal(q.cpu().view(torch.uint8), q_ref.view(torch.uint8))
        assert torch.equal(sf.cpu(), sf_ref)
    assert torch.cuda.current_device() == 0


def test_two_threads_on_two_devices():
    calls = 2000
    errors = []

    def worker(device, m, n, k):
        try:
            a, sfa, b, sfb, _ = gemm_inputs(m, n, k, device=device, seed=m)
            want = ops.fp8_gemm_nt(*cpu((a, sfa, b, sfb)))
            first = ops.fp8_gemm_nt(a, sfa, b, sfb)
            assert rel_err(first.cpu(), want) < 4e-3
            for i in range(calls):
                got = ops.fp8_gemm_nt(a, sfa, b, sfb)
                if i % 100 == 0 and not torch.equal(got, first):
                    raise AssertionError(f"{device}: call {i} differs")
            torch.cuda.synchronize(device)
        except Exception as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=("cuda:0", 128, 2112, 1024)),
               threading.Thread(target=worker, args=("cuda:1", 64, 576, 2048))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_graph_and_compile_on_the_second_device():
    torch.cuda.set_device(0)
    dev = "cuda:1"
    a, sfa, b, sfb, _ = gemm_inputs(64, 576, 1024, device=dev, seed=5)
    sfa = ops.get_mn_major_tma_aligned_tensor(sfa)
    ops.fp8_gemm_nt(a, sfa, b, sfb)  # plan outside the capture
    with torch.cuda.device(1):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = ops.fp8_gemm_nt(a, sfa, b, sfb)
    graph.replay()
    torch.cuda.synchronize(dev)
    assert rel_err(out.cpu(), ops.fp8_gemm_nt(*cpu((a, sfa, b, sfb)))) < 4e-3
    compiled = torch.compile(lambda x: ops.fp8_gemm_nt(*ops.per_token_cast_to_fp8(x), b, sfb), fullgraph=True)
    x = torch.randn(64, 1024, device=dev, dtype=torch.bfloat16)
    assert rel_err(compiled(x).cpu(), ops.fp8_gemm_nt(*ops.per_token_cast_to_fp8(x.cpu()), b.cpu(), sfb.cpu())) < 4e-3


def test_cold_compiles_on_both_devices_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DG_JIT_CACHE_DIR", str(tmp_path))
    errors = []

    def worker(device, n):
        try:
            a, sfa, b, sfb, _ = gemm_inputs(32, n, 1152, device=device, seed=n)  # shapes no other test compiles
            assert rel_err(ops.fp8_gemm_nt(a, sfa, b, sfb).cpu(), ops.fp8_gemm_nt(*cpu((a, sfa, b, sfb)))) < 4e-3
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(f"cuda:{d}", n)) for d in (0, 1) for n in (1184, 1200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


_RANK = """
import sys, torch
sys.path.insert(0, "test")
from samples import gemm_inputs, ops
rank = int(sys.argv[1])
torch.cuda.set_device(rank)
for n in (1216, 1232 + 16 * rank):  # one shape both ranks compile, one each
    a, sfa, b, sfb, _ = gemm_inputs(48, n, 1152, device="cuda", seed=n)
    got = ops.fp8_gemm_nt(a, sfa, b, sfb).cpu()
    want = ops.fp8_gemm_nt(a.cpu(), sfa.cpu(), b.cpu(), sfb.cpu())
    err = ((got.double() - want.double()).norm() / want.double().norm()).item()
    assert err < 4e-3, (rank, n, err)
print("rank", rank, "ok")
"""


def test_two_processes_share_one_cold_cache():
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "DG_JIT_CACHE_DIR": cache}
        procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(_RANK), str(r)], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
        outs = [p.communicate(timeout=600) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0 and "ok" in out, err[-3000:]
        cubins = list(Path(cache).rglob("*.cubin"))
        assert len(cubins) == 3 and all(c.read_bytes()[:4] == b"\x7fELF" for c in cubins)
