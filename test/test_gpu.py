"""GPU kernels against the reference (skipped without an SM90 device).

Outputs are poisoned with NaN before every run and every element is checked. The reference is the library's own
reference GEMM (``_ops.reference_gemm``: dequantize, fp32 matmul) run on the GPU for the large seed shapes and the
CPU op itself for the small ones; both were checked against an independent float64 computation in test_reference.
"""

import itertools
import threading

import pytest
import torch
from conftest import requires_sm90

import deepgemm_ops
from deepgemm_ops import _ops
from samples import bad_inputs, contiguous_inputs, gemm_inputs, masked_inputs, ops, quantized_b

pytestmark = requires_sm90

SEED_NK = [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)]
EDGES = [(1, 576, 576), (65, 2112, 576), (4097, 576, 7168), (65, 576, 7168), (1, 2112, 7168), (300, 256, 128)]


def rel_err(x, ref):
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm().clamp(min=1e-30)).item()


def reference(a, sfa, b, sfb, c=None):
    if a.numel() * b.shape[0] < 2 ** 28:
        return ops.fp8_gemm_nt(a.cpu(), sfa.cpu(), b.cpu(), sfb.cpu(), None if c is None else c.cpu(),
                               torch.float32).to(a.device)
    recipe = "128x128" if sfb.shape[0] != b.shape[0] else "1x128"
    return _ops.reference_gemm(a, sfa, b, sfb, recipe, c)


def check_gemm(m, n, k, recipe="128x128", out_dtype=torch.bfloat16, with_c=False, seed=0):
    a, sfa, b, sfb, c = gemm_inputs(m, n, k, recipe, device="cuda", with_c=with_c, seed=seed)
    out_dtype = torch.float32 if with_c else out_dtype
    out = torch.full((m, n), float("nan"), dtype=out_dtype, device="cuda")
    ops.fp8_gemm_nt_out(a, sfa, b, sfb, out, c)
    assert not out.isnan().any(), "unwritten output elements"
    ref = reference(a, sfa, b, sfb, c)
    assert rel_err(out, ref) < (4e-3 if out_dtype == torch.bfloat16 else 1e-3)
    # The functional op gives the same numbers.
    got = ops.fp8_gemm_nt(a, sfa, b, sfb, c, None if with_c else out_dtype)
    assert torch.equal(got, out)


@pytest.mark.parametrize("m,nk", list(itertools.product([64, 128, 4096], SEED_NK)))
def test_seed_shapes(m, nk):
    check_gemm(m, *nk, seed=m)


@pytest.mark.parametrize("m,n,k", EDGES)
@pytest.mark.parametrize("recipe", ["128x128", "1x128"])
def test_edges(m, n, k, recipe):
    check_gemm(m, n, k, recipe, seed=m + n)


@pytest.mark.parametrize("m,n,k", [(65, 2112, 576), (128, 4096, 7168)])
def test_fp32_out_and_c(m, n, k):
    check_gemm(m, n, k, out_dtype=torch.float32)
    check_gemm(m, n, k, "1x128", with_c=True)


# fp32 D through the TMA epilogue: a TMA store (no C), a TMA reduce-add into D when C is D itself (N a multiple of
# 4), and the direct epilogue where TMA cannot take the output (N = 577) or C is another tensor.
@pytest.mark.parametrize("m,n,k", [(65, 576, 576), (300, 577, 1024), (4096, 7168, 2048), (1, 2112, 7168)])
@pytest.mark.parametrize("recipe", ["128x128", "1x128"])
def test_fp32_accumulates_into_c_in_place(m, n, k, recipe):
    check_fp32_in_place(m, n, k, recipe)


def check_fp32_in_place(m, n, k, recipe):
    a, sfa, b, sfb, c = gemm_inputs(m, n, k, recipe, device="cuda", with_c=True, seed=m + n)
    expected = reference(a, sfa, b, sfb, c)
    for _ in range(2):  # the second call runs through the installed plan
        ops.fp8_gemm_nt_out(a, sfa, b, sfb, c, c)
        assert rel_err(c, expected) < 1e-3
        expected = reference(a, sfa, b, sfb, c)
    out = torch.full((m, n), float("nan"), device="cuda")
    ops.fp8_gemm_nt_out(a, sfa, b, sfb, out)  # fp32 without C: a TMA store of the staged tile
    assert not out.isnan().any(), "unwritten output elements"
    assert rel_err(out, reference(a, sfa, b, sfb)) < 1e-3


def test_out_into_a_slice_of_a_larger_buffer():
    a, sfa, b, sfb, _ = gemm_inputs(65, 576, 576, device="cuda")
    buf = torch.full((65, 1024), float("nan"), dtype=torch.bfloat16, device="cuda")
    ops.fp8_gemm_nt_out(a, sfa, b, sfb, buf[:, 128:704])
    assert rel_err(buf[:, 128:704], reference(a, sfa, b, sfb)) < 4e-3
    assert buf[:, :128].isnan().all() and buf[:, 704:].isnan().all()


def test_zero_sizes_on_gpu():
    a, sfa, b, sfb, c = gemm_inputs(0, 576, 576, device="cuda", with_c=True)
    assert ops.fp8_gemm_nt(a, sfa, b, sfb).shape == (0, 576)
    a, sfa, b, sfb, c = gemm_inputs(5, 64, 0, device="cuda", with_c=True)
    assert torch.equal(ops.fp8_gemm_nt(a, sfa, b, sfb, c), c)


def test_zero_column_slices_of_padded_buffers():
    """K = 0 from slicing wider buffers (row stride > 0, no columns): the doors decline, the planning path returns
    the empty sum, like the CPU. (The doors' extent check once divided by the column count here.)"""
    a = torch.zeros(4, 32, device="cuda").to(torch.float8_e4m3fn)[:, :0]
    b = torch.zeros(8, 32, device="cuda").to(torch.float8_e4m3fn)[:, :0]
    sfa, sfb = torch.ones(4, 0, device="cuda"), torch.ones(1, 0, device="cuda")
    assert torch.equal(ops.fp8_gemm_nt(a, sfa, b, sfb).cpu(), ops.fp8_gemm_nt(a.cpu(), sfa.cpu(), b.cpu(), sfb.cpu()))
    x = torch.zeros(4, 32, device="cuda", dtype=torch.bfloat16)[:, :0]
    y = torch.zeros(8, 32, device="cuda", dtype=torch.bfloat16)[:, :0]
    assert torch.equal(ops.bf16_gemm_nt(x, y).cpu(), torch.zeros(4, 8, dtype=torch.bfloat16))


def test_gpu_shape_errors():
    a, sfa, b, sfb, _ = gemm_inputs(64, 256, 520, device="cuda")
    with pytest.raises(ValueError, match="K must be a multiple of 16"):
        ops.fp8_gemm_nt(a[:, :100], sfa[:, :1], b[:, :100], sfb[:, :1])


def test_fast_path_of_repeated_calls():
    # A repeated fp8_gemm_nt call is checked and launched by the C++ door (csrc/host/gemm_door.cpp): same numbers,
    # layouts the kernel does not read as they are are made in C++, and every misuse still gets the Python error.
    from deepgemm_ops import _cuda

    m, n, k = 96, 2112, 7168
    a, sfa, b, sfb, c = gemm_inputs(m, n, k, device="cuda", with_c=True, seed=5)
    sfa = torch.ops.deepgemm.get_mn_major_tma_aligned_tensor(sfa)
    first = ops.fp8_gemm_nt(a, sfa, b, sfb)  # planning path: validates, compiles, installs the plan
    lookups = _cuda._config.cache_info()
    again = ops.fp8_gemm_nt(a, sfa, b, sfb)
    assert _cuda._config.cache_info() == lookups, "the repeated call went through the planning path"
    assert torch.equal(again, first)
    assert rel_err(again, reference(a, sfa, b, sfb)) < 4e-3
    with_c = ops.fp8_gemm_nt(a, sfa, b, sfb, c)  # fp32 + C: a problem of its own
    assert torch.equal(ops.fp8_gemm_nt(a, sfa, b, sfb, c), with_c)
    assert rel_err(with_c, reference(a, sfa, b, sfb, c)) < 1e-3
    lookups = _cuda._config.cache_info()
    assert torch.equal(ops.fp8_gemm_nt(a, sfa.contiguous(), b, sfb), first)  # K-major sfa: copied MN-major in C++
    assert torch.equal(ops.fp8_gemm_nt(a, sfa, b, sfb.t().contiguous().t()), first)  # non-contiguous sfb
    assert _cuda._config.cache_info() == lookups
    with pytest.raises(ValueError, match="out_dtype must be torch.float32 when c is given"):
        ops.fp8_gemm_nt(a, sfa, b, sfb, c, torch.bfloat16)
    with pytest.raises(ValueError, match="out_dtype must be torch.bfloat16 or torch.float32"):
        ops.fp8_gemm_nt(a, sfa, b, sfb, None, torch.float16)
    with pytest.raises(ValueError, match="sfb must be float32"):
        ops.fp8_gemm_nt(a, sfa, b, sfb[:, :-1])
    misaligned = torch.empty(n, k + 8, dtype=b.dtype, device="cuda")[:, :k]  # row stride 7176 bytes
    misaligned.copy_(b)
    with pytest.raises(ValueError, match="16-byte aligned"):
        ops.fp8_gemm_nt(a, sfa, misaligned, sfb)


def _every_gemm_op():
    """(name, op, args, output index or None) for each GEMM op, functional and _out, on small problems."""
    a, sfa, b, sfb, c = gemm_inputs(96, 576, 1024, device="cuda", with_c=True, seed=21)
    ga, gsfa, gb, gsfb, m_indices = contiguous_inputs([128, 0, 256], 576, 1024, "1x128", device="cuda", seed=22)
    ma, msfa, mb, msfb, masked_m = masked_inputs([5, 64, 0], 64, 576, 1024, device="cuda", seed=23)

    def empty(*shape, dtype=torch.bfloat16):
        return torch.full(shape, float("nan"), dtype=dtype, device="cuda")

    return [
        ("fp8_gemm_nt", ops.fp8_gemm_nt, (a, sfa, b, sfb), None),
        ("fp8_gemm_nt fp32 + c", ops.fp8_gemm_nt, (a, sfa, b, sfb, c), None),
        ("fp8_gemm_nt_out", ops.fp8_gemm_nt_out, (a, sfa, b, sfb, empty(96, 576)), 4),
        ("fp8_gemm_nt_out + c", ops.fp8_gemm_nt_out, (a, sfa, b, sfb, empty(96, 576, dtype=torch.float32), c), 4),
        ("contiguous", ops.m_grouped_fp8_gemm_nt_contiguous, (ga, gsfa, gb, gsfb, m_indices), None),
        ("contiguous_out", ops.m_grouped_fp8_gemm_nt_contiguous_out,
         (ga, gsfa, gb, gsfb, m_indices, empty(ga.shape[0], 576)), 5),
        ("masked", ops.m_grouped_fp8_gemm_nt_masked, (ma, msfa, mb, msfb, masked_m, 32), None),
        ("masked_out", ops.m_grouped_fp8_gemm_nt_masked_out, (ma, msfa, mb, msfb, masked_m, 32, empty(3, 64, 576)), 6),
    ]


def _valid_rows(name, out, args):
    if name.startswith("contiguous"):
        return out[args[4] >= 0]
    if name.startswith("masked"):
        return torch.cat([out[g, :int(rows)] for g, rows in enumerate(args[4].tolist())])
    return out


def test_repeat_calls_of_every_op_never_enter_the_planner(monkeypatch):
    from deepgemm_ops import _cuda

    calls = _every_gemm_op()
    first = {}
    for name, op, args, out_index in calls:
        result = op(*args)
        first[name] = _valid_rows(name, (result if out_index is None else args[out_index]).clone(), args)

    def planner_entered(*args, **kwargs):
        raise AssertionError("a repeated call entered the planning path")

    monkeypatch.setattr(_cuda, "_plan_and_launch", planner_entered)
    for check in ("check_gemm_nt", "check_grouped_contiguous", "check_grouped_masked"):
        monkeypatch.setattr(_cuda.V, check, planner_entered)
    for name, op, args, out_index in calls:
        if out_index is not None:
            args[out_index].fill_(float("nan"))
        result = op(*args)
        got = _valid_rows(name, result if out_index is None else args[out_index], args)
        assert torch.equal(got, first[name]), name
    monkeypatch.undo()
    assert _cuda.clear_plans() >= len(calls) - 1  # (the two dense _out calls share a plan with the functional ones)
    for name, op, args, out_index in calls:  # planned again after clear_plans
        result = op(*args)
        assert torch.equal(_valid_rows(name, result if out_index is None else args[out_index], args), first[name])


def test_bad_inputs_after_plans_get_the_same_messages_as_on_cpu():
    """The shared bad-input matrix (samples.bad_inputs) on CUDA, after every op's plan for the well-formed shapes is
    installed: each call must still miss the door and get the CPU path's message."""
    cases = bad_inputs("cuda")
    for _, op, args, _ in _every_gemm_op():
        op(*args)
    a, sfa, b, sfb, c = gemm_inputs(64, 256, 640, device="cuda", with_c=True)  # the matrix's own shapes, planned
    ops.fp8_gemm_nt(a, sfa, b, sfb)
    ops.fp8_gemm_nt(a, sfa, b, sfb, c)

    def message(fn, args):
        with pytest.raises(ValueError) as e:
            fn(*args)
        return str(e.value)

    def like_on_cpu(x):  # same shape, strides and dtype (validation fails before any value is read)
        return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype) if isinstance(x, torch.Tensor) else x

    for name, (fn, args) in cases.items():
        assert message(fn, args) == message(fn, [like_on_cpu(x) for x in args]), name


def test_non_default_stream():
    a, sfa, b, sfb, _ = gemm_inputs(256, 2112, 7168, device="cuda", seed=3)
    ref = reference(a, sfa, b, sfb)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = ops.fp8_gemm_nt(a, sfa, b, sfb)
    torch.cuda.current_stream().wait_stream(stream)
    assert rel_err(out, ref) < 4e-3


def test_launches_from_a_thread_whose_first_cuda_work_is_ours():
    # Autograd runs backward on its own thread; torch leaves no context current there until its first runtime call,
    # and a driver-API launch must bind one itself. Each op gets a fresh thread.
    a, sfa, b, sfb, _ = gemm_inputs(256, 2112, 7168, device="cuda", seed=5)
    x = torch.randn(256, 7168, device="cuda", dtype=torch.bfloat16)
    want_gemm, want_cast = ops.fp8_gemm_nt(a, sfa, b, sfb), ops.per_token_cast_to_fp8(x)
    out = torch.full_like(want_gemm, float("nan"))
    got = {}

    def in_a_fresh_thread(name, fn):
        def run():
            try:
                got[name] = fn()
            except Exception as e:  # re-raised below, in the test's thread
                got[name] = e
        torch.cuda.synchronize()
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        if isinstance(got[name], Exception):
            raise got[name]
        torch.cuda.synchronize()
        return got[name]

    in_a_fresh_thread("gemm", lambda: ops.fp8_gemm_nt_out(a, sfa, b, sfb, out))
    assert torch.equal(out, want_gemm)
    q, sf = in_a_fresh_thread("cast", lambda: ops.per_token_cast_to_fp8(x))
    assert torch.equal(q.view(torch.uint8), want_cast[0].view(torch.uint8)) and torch.equal(sf, want_cast[1])


def test_cuda_graph_replay_with_new_inputs():
    m, n, k = 64, 2112, 7168
    a, sfa, b, sfb, _ = gemm_inputs(m, n, k, device="cuda")
    sfa = ops.get_mn_major_tma_aligned_tensor(sfa)  # static buffer in the layout the kernel reads: no copy
    out = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")
    deepgemm_ops.warmup(m, n, k)
    ops.fp8_gemm_nt_out(a, sfa, b, sfb, out)  # one eager call: allocator and kernel ready
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ops.fp8_gemm_nt_out(a, sfa, b, sfb, out)
    for seed in range(3):
        a2, sfa2, b2, sfb2, _ = gemm_inputs(m, n, k, device="cuda", seed=100 + seed)
        a.copy_(a2), sfa.copy_(sfa2), b.copy_(b2), sfb.copy_(sfb2)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert rel_err(out, reference(a2, sfa2, b2, sfb2)) < 4e-3


def test_cold_shape_during_capture_is_a_clear_error():
    a, sfa, b, sfb, _ = gemm_inputs(64, 1104, 1424, device="cuda")  # a shape no other test compiles
    out = torch.empty(64, 1104, dtype=torch.bfloat16, device="cuda")
    sfa = ops.get_mn_major_tma_aligned_tensor(sfa)
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="warmup"):
        with torch.cuda.graph(graph):
            ops.fp8_gemm_nt_out(a, sfa, b, sfb, out)
    # The process and the device stay usable.
    ops.fp8_gemm_nt_out(a, sfa, b, sfb, out)
    assert rel_err(out, reference(a, sfa, b, sfb)) < 4e-3


def test_compile_reduce_overhead_mlp():
    gen = torch.Generator().manual_seed(0)
    w1, s1 = quantized_b(1024, 512, device="cuda", gen=gen)
    w2, s2 = quantized_b(512, 1024, "1x128", device="cuda", gen=gen)

    def mlp(x):
        q, sf = ops.per_token_cast_to_fp8(x)
        h = torch.nn.functional.silu(ops.fp8_gemm_nt(q, sf, w1, s1))
        q, sf = ops.per_token_cast_to_fp8(h)
        return ops.fp8_gemm_nt(q, sf, w2, s2)

    compiled = torch.compile(mlp, mode="reduce-overhead", fullgraph=True)
    for step in range(4):
        x = torch.randn(64, 512, dtype=torch.bfloat16, device="cuda")
        got = compiled(x).clone()
        want = mlp(x)
        assert rel_err(got, want) < 1e-2, step


def _check_contiguous(group_rows, n, k, recipe, seed):
    a, sfa, b, sfb, m_indices = contiguous_inputs(group_rows, n, k, recipe, device="cuda", seed=seed)
    out = torch.full((a.shape[0], n), float("nan"), dtype=torch.bfloat16, device="cuda")
    ops.m_grouped_fp8_gemm_nt_contiguous_out(a, sfa, b, sfb, m_indices, out)
    for g in range(len(group_rows)):
        rows = (m_indices == g).nonzero().flatten()
        if rows.numel():
            got = out[rows]
            assert not got.isnan().any(), f"group {g}: unwritten rows"
            assert rel_err(got, reference(a[rows], sfa[rows], b[g], sfb[g])) < 4e-3, g
    assert torch.equal(ops.m_grouped_fp8_gemm_nt_contiguous(a, sfa, b, sfb, m_indices)[m_indices >= 0],
                       out[m_indices >= 0])


@pytest.mark.parametrize("group_rows,n,k", [([300, 0, 57, 1024], 4096, 7168), ([1, 128, 129, 700, 5, 64, 256, 400],
                                                                             2112, 576)])
@pytest.mark.parametrize("recipe", ["128x128", "1x128"])
def test_grouped_contiguous(group_rows, n, k, recipe):
    _check_contiguous(group_rows, n, k, recipe, seed=len(group_rows))


def _check_masked(counts, m_max, n, k, recipe="128x128", seed=0, expected_m=None):
    a, sfa, b, sfb, masked_m = masked_inputs(counts, m_max, n, k, recipe, device="cuda", seed=seed)
    out = torch.full((len(counts), m_max, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    ops.m_grouped_fp8_gemm_nt_masked_out(a, sfa, b, sfb, masked_m, expected_m or max(1, m_max // 2), out)
    for g, rows in enumerate(counts):
        if rows:
            got = out[g, :rows]
            assert not got.isnan().any(), f"group {g}: unwritten rows"
            assert rel_err(got, reference(a[g, :rows], sfa[g, :rows], b[g], sfb[g])) < 4e-3, g


@pytest.mark.parametrize("groups,m_max,n,k", [(1, 1024, 4096, 7168), (2, 512, 7168, 2048), (4, 256, 576, 576),
                                              (32, 192, 6144, 7168)])
@pytest.mark.parametrize("recipe", ["128x128", "1x128"])
def test_grouped_masked(groups, m_max, n, k, recipe):
    gen = torch.Generator().manual_seed(groups)
    counts = torch.randint(0, m_max + 1, (groups,), generator=gen).tolist()
    counts[0] = m_max
    if groups > 1:
        counts[1] = 0
    _check_masked(counts, m_max, n, k, recipe, seed=groups)


# Tiles the heuristic may not pick for the shapes above, forced: 256-row tiles (two 64-row waves per math warpgroup)
# alone and in A-sharing clusters (odd n-block counts leave the last pair's second block past N), B-sharing clusters
# with an odd m-block count; M, N and K tails, fp32 + C, both recipes, masked groups.
FORCED = [  # (m, n, k, recipe, with_c, (block_m, block_n, cluster_size))
    (4096, 7168, 2048, "128x128", False, (256, 128, 2)),
    (300, 576, 576, "128x128", False, (256, 128, 2)),  # 2 m-blocks (one partial), 5 n-blocks: odd pair count
    (257, 2112, 7168, "1x128", True, (256, 128, 2)),
    (513, 4096, 7168, "128x128", False, (256, 128, 1)),
    (65, 2112, 576, "1x128", False, (256, 96, 1)),
    (300, 2112, 1024, "1x128", True, (256, 112, 2)),  # the weight gradient's tile: 19 n-blocks, fp32 + C
    (513, 7168, 1024, "1x128", False, (256, 112, 2)),
    (300, 2112, 576, "128x128", False, (128, 128, 2)),
]


@pytest.mark.parametrize("m,n,k,recipe,with_c,tile", FORCED)
def test_forced_tiles(force_tile, m, n, k, recipe, with_c, tile):
    force_tile(*tile)
    check_gemm(m, n, k, recipe, with_c=with_c, seed=m + k)


# 256-row fp32 tiles stage one 64-row wave per math warpgroup at a time: in place (the weight gradient's tile, TMA
# reduce-add) and a plain fp32 TMA store; a partial m-block, and clusters whose last n-block pair lies half past N.
@pytest.mark.parametrize("m,n,k,recipe,tile", [(300, 2112, 1024, "1x128", (256, 112, 2)),
                                                (513, 576, 2112, "128x128", (256, 128, 1)),
                                                (257, 640, 7168, "1x128", (256, 128, 2))])
def test_fp32_in_place_256_row_tiles(force_tile, m, n, k, recipe, tile):
    force_tile(*tile)
    check_fp32_in_place(m, n, k, recipe)


BIAS_CASES = [  # both epilogues (TMA store: N % 8 == 0; direct stores: fp32, or N % 8 != 0), C, tails, 256-row tiles
    (65, 2112, 576, "128x128", torch.bfloat16, False, None),
    (65, 2100, 576, "1x128", torch.bfloat16, False, None),
    (300, 576, 7168, "1x128", torch.float32, True, None),
    (4096, 7168, 2048, "128x128", torch.bfloat16, False, (256, 128, 2)),
    (520, 576, 2112, "1x128", torch.bfloat16, False, (256, 128, 2)),
]


@pytest.mark.parametrize("m,n,k,recipe,out_dtype,with_c,tile", BIAS_CASES)
def test_bias_in_the_epilogue(force_tile, m, n, k, recipe, out_dtype, with_c, tile):
    if tile:
        force_tile(*tile)
    a, sfa, b, sfb, c = gemm_inputs(m, n, k, recipe, device="cuda", with_c=with_c, seed=n)
    bias = (torch.randn(n, device="cuda") * 4).to(out_dtype)
    ref = reference(a, sfa, b, sfb, c) + bias.float()
    got = ops.fp8_gemm_nt(a, sfa, b, sfb, c, out_dtype, bias)
    assert got.dtype == out_dtype and not got.isnan().any()
    assert rel_err(got, ref) < (4e-3 if out_dtype == torch.bfloat16 else 1e-3)
    assert torch.equal(ops.fp8_gemm_nt(a, sfa, b, sfb, c, out_dtype, bias), got)  # the door's launch of the plan
    # the _out form, with a bias read through a stride (made contiguous on the way); and the same plan without bias
    strided = torch.stack([bias, torch.full_like(bias, float("nan"))], 1).flatten()[::2]
    out = torch.full((m, n), float("nan"), dtype=out_dtype, device="cuda")
    ops.fp8_gemm_nt_out(a, sfa, b, sfb, out, c, strided)
    assert torch.equal(out, got)
    plain = ops.fp8_gemm_nt(a, sfa, b, sfb, c, out_dtype)
    assert rel_err(plain, reference(a, sfa, b, sfb, c)) < (4e-3 if out_dtype == torch.bfloat16 else 1e-3)


# Split-K (a cluster of splits per tile, reduced by split 0 in split order): both epilogues (TMA store; direct stores
# for N % 8 != 0 and for C distinct from D), uneven splits and a partial last k-block (K = 576: 5 k-blocks), several
# m-blocks with a ragged last one, 8 splits, fp32 + C, bias, a reduce-add into C in place; two launches agree bit for
# bit (check_gemm), so the sum does not depend on which split finishes first.
SPLIT_K = [
    (64, 2112, 7168, "128x128", False, (64, 64, 1, 4)),
    (65, 2100, 576, "1x128", False, (64, 32, 1, 3)),
    (128, 576, 7168, "1x128", True, (128, 64, 1, 8)),
    (300, 2112, 2048, "128x128", False, (128, 128, 1, 2)),
    (1, 7168, 16384, "1x128", False, (64, 128, 1, 2)),
]


@pytest.mark.parametrize("m,n,k,recipe,with_c,tile", SPLIT_K)
def test_split_k(force_tile, m, n, k, recipe, with_c, tile):
    force_tile(*tile)
    check_gemm(m, n, k, recipe, with_c=with_c, seed=m + n)
    a, sfa, b, sfb, c = gemm_inputs(m, n, k, recipe, device="cuda", with_c=True, seed=k)
    bias = torch.randn(n, device="cuda")
    got = ops.fp8_gemm_nt(a, sfa, b, sfb, None, torch.bfloat16, bias.bfloat16())
    assert rel_err(got, reference(a, sfa, b, sfb) + bias.bfloat16().float()) < 4e-3
    expected = reference(a, sfa, b, sfb, c) + bias
    ops.fp8_gemm_nt_out(a, sfa, b, sfb, c, c, bias)  # fp32 into C in place (a TMA reduce-add where N allows)
    assert rel_err(c, expected) < 1e-3


def test_split_k_in_a_cuda_graph(force_tile):
    force_tile(64, 64, 1, 4)
    a, sfa, b, sfb, _ = gemm_inputs(64, 2112, 7168, device="cuda", seed=1)
    out = torch.full((64, 2112), float("nan"), dtype=torch.bfloat16, device="cuda")
    ops.fp8_gemm_nt_out(a, sfa, b, sfb, out)  # plans and compiles outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ops.fp8_gemm_nt_out(a, sfa, b, sfb, out)
    for seed in (2, 3):
        fresh = gemm_inputs(64, 2112, 7168, device="cuda", seed=seed)
        for dst, src in zip((a, sfa, b, sfb), fresh[:4]):
            dst.copy_(src)
        out.fill_(float("nan"))
        graph.replay()
        assert rel_err(out, reference(a, sfa, b, sfb)) < 4e-3


# m-grouped GEMMs in 2-CTA clusters pair n-blocks and share A: odd n-block counts (the last pair's second block past
# N), padding and empty groups (skipped in lock step by both CTAs), masked halves without valid rows, both recipes.
@pytest.mark.parametrize("tile", [(128, 128, 2), (128, 192, 2), (64, 96, 2)])
@pytest.mark.parametrize("recipe", ["128x128", "1x128"])
def test_forced_grouped_clusters(force_tile, tile, recipe):
    force_tile(*tile)
    _check_contiguous([300, 0, 57, 1024], 2112, 576, recipe, seed=tile[1])
    _check_masked([512, 0, 300, 17], 512, 2112, 576, recipe, seed=tile[1])


# Contiguous 256-row tiles: group boundaries at odd multiples of 128 rows (the halves of a tile in two groups, computed
# in two passes over K), an empty group, a padded last group, a last tile whose upper half lies past M; both recipes,
# with and without the A-sharing cluster.
@pytest.mark.parametrize("cluster", [2, 1])
@pytest.mark.parametrize("recipe", ["128x128", "1x128"])
def test_forced_256_row_tiles_contiguous(force_tile, cluster, recipe):
    force_tile(256, 128, cluster)
    _check_contiguous([300, 0, 57, 1024, 129, 100], 2112, 576, recipe, seed=cluster)


# Masked 256-row tiles: a warpgroup with one live 64-row wave (the 1-wave loop), one with none (stages passed through),
# an empty group; with and without the A-sharing cluster.
@pytest.mark.parametrize("block_n,cluster", [(128, 1), (64, 1), (128, 2)])
def test_forced_256_row_tiles_masked(force_tile, block_n, cluster):
    force_tile(256, block_n, cluster)
    _check_masked([512, 0, 300, 17], 512, 2112, 576, seed=block_n)


def test_masked_decode_step_in_a_cuda_graph():
    """Two-layer MoE step (masked GEMM -> SiLU -> masked GEMM) captured once, replayed with new counts and inputs."""
    groups, m_max, hidden, inner = 8, 64, 1024, 512
    gen = torch.Generator().manual_seed(7)
    w1, s1 = quantized_b(inner, hidden, device="cuda", gen=gen, groups=groups)
    w2, s2 = quantized_b(hidden, inner, device="cuda", gen=gen, groups=groups)
    x = torch.zeros(groups, m_max, hidden, dtype=torch.bfloat16, device="cuda")
    masked_m = torch.zeros(groups, dtype=torch.int32, device="cuda")

    def step():
        q, sf = ops.per_token_cast_to_fp8(x.view(-1, hidden))
        h = ops.m_grouped_fp8_gemm_nt_masked(q.view(groups, m_max, hidden), sf.view(groups, m_max, -1), w1, s1,
                                             masked_m, 32)
        h = torch.nn.functional.silu(h)
        q, sf = ops.per_token_cast_to_fp8(h.view(-1, inner))
        return ops.m_grouped_fp8_gemm_nt_masked(q.view(groups, m_max, inner), sf.view(groups, m_max, -1), w2, s2,
                                                masked_m, 32)

    def reference_step(x_now, counts):
        out = []
        for g, rows in enumerate(counts):
            xq, xs = ops.per_token_cast_to_fp8(x_now[g, :rows])
            h = torch.nn.functional.silu(reference(xq, xs, w1[g], s1[g]).bfloat16())
            hq, hs = ops.per_token_cast_to_fp8(h)
            out.append(reference(hq, hs, w2[g], s2[g]))
        return out

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()  # compile + load outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = step()
    for replay in range(4):
        counts = torch.randint(0, m_max + 1, (groups,), generator=gen)
        counts[replay % groups] = 0
        x.copy_(torch.randn(groups, m_max, hidden, generator=gen).bfloat16())
        masked_m.copy_(counts)
        graph.replay()
        torch.cuda.synchronize()
        for g, want in enumerate(reference_step(x, counts.tolist())):
            rows = int(counts[g])
            if rows:
                assert rel_err(y[g, :rows], want) < 2e-2, (replay, g)


def test_offsets_beyond_32_bits():
    """M·K and M·N beyond 2^31 elements (A 2.1 GB of FP8, D 8.6 GB of fp32): every offset in the kernels and the
    casts must be 64-bit. Sampled rows, including the last ones, against the reference."""
    m, n, k = 300_000, 7168, 7168
    if torch.cuda.get_device_properties(0).total_memory < 40 << 30:
        pytest.skip("needs 40 GB of GPU memory")
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=gen)
    a, sfa = ops.per_token_cast_to_fp8(x)
    rows = torch.tensor([0, 1, 150_000, 299_592, 299_593, 299_600, m - 2, m - 1], device="cuda")
    want_q, want_sf = ops.per_token_cast_to_fp8(x[rows].cpu())
    assert torch.equal(a[rows].cpu().view(torch.uint8), want_q.view(torch.uint8)) and torch.equal(sfa[rows].cpu(), want_sf)
    del x
    b, sfb = ops.per_block_cast_to_fp8(torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=gen))
    out = ops.fp8_gemm_nt(a, sfa, b, sfb, out_dtype=torch.float32)
    assert rel_err(out[rows], _ops.reference_gemm(a[rows], sfa[rows], b, sfb, "128x128")) < 1e-3
    del out, a


def test_out_of_memory_in_the_door_and_the_casts_leaves_the_process_usable():
    a, sfa, b, sfb, _ = gemm_inputs(4096, 7168, 1024, device="cuda", seed=31)
    ga, gsfa, gb, gsfb, m_indices = contiguous_inputs([1024] * 4, 7168, 1024, device="cuda", seed=32)
    ma, msfa, mb, msfb, masked_m = masked_inputs([1024] * 4, 1024, 7168, 1024, device="cuda", seed=33)
    x = torch.randn(4096, 7168, device="cuda", dtype=torch.bfloat16)
    calls = {
        "dense": lambda: ops.fp8_gemm_nt(a, sfa, b, sfb),
        "contiguous": lambda: ops.m_grouped_fp8_gemm_nt_contiguous(ga, gsfa, gb, gsfb, m_indices),
        "masked": lambda: ops.m_grouped_fp8_gemm_nt_masked(ma, msfa, mb, msfb, masked_m, 1024),
        "per_token_cast": lambda: ops.per_token_cast_to_fp8(x)[0],
        "per_block_cast": lambda: ops.per_block_cast_to_fp8(x)[0],
        "transposed_cast": lambda: ops.per_token_cast_to_fp8(x.t())[0],
    }
    before = {name: fn() for name, fn in calls.items()}  # plans and kernels installed: the door path is taken
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    hog, chunk = [], 1 << 30
    try:
        while chunk >= 1 << 20:  # take all but < 1 MB of the device
            try:
                hog.append(torch.empty(chunk, dtype=torch.uint8, device="cuda"))
            except torch.OutOfMemoryError:
                chunk //= 2
        for fn in calls.values():
            with pytest.raises(torch.OutOfMemoryError):
                fn()
    finally:
        del hog
        torch.cuda.empty_cache()
    for name, fn in calls.items():  # the process, the device and the plans are intact
        got = fn()
        assert torch.equal(got.view(torch.uint8) if got.dtype == torch.float8_e4m3fn else got,
                           before[name].view(torch.uint8) if got.dtype == torch.float8_e4m3fn else before[name]), name
