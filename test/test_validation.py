"""Every misuse gets an error naming the argument, the expectation and what was given (expect-tests)."""

import expecttest
import torch

from samples import bad_inputs, contiguous_inputs, gemm_inputs, masked_inputs, ops

F8 = torch.float8_e4m3fn


class TestValidation(expecttest.TestCase):
    def error(self, fn, *args, **kwargs):
        with self.assertRaises((ValueError, RuntimeError)) as ctx:
            fn(*args, **kwargs)
        return str(ctx.exception)

    def setUp(self):
        self.a, self.sfa, self.b, self.sfb, self.c = gemm_inputs(64, 256, 7168, with_c=True)

    def gemm(self, **kw):
        args = dict(a=self.a, sfa=self.sfa, b=self.b, sfb=self.sfb)
        args.update(kw)
        return self.error(ops.fp8_gemm_nt, **args)

    def test_dtypes(self):
        self.assertExpectedInline(self.gemm(a=self.a.float()), """a must be float8_e4m3fn [M, K], got float32 [64, 7168]""")
        self.assertExpectedInline(self.gemm(b=self.b.to(torch.float8_e5m2)), """b must be float8_e4m3fn [N, K] = [N, 7168], got float8_e5m2 [256, 7168]""")
        self.assertExpectedInline(self.gemm(sfa=self.sfa.bfloat16()), """sfa must be float32 [M, ceil(K/128)] = [64, 56], got bfloat16 [64, 56]""")
        self.assertExpectedInline(self.gemm(sfb=self.sfb.double()), """sfb must be float32 [ceil(N/128), ceil(K/128)] = [2, 56] (128x128 blocks) or [N, ceil(K/128)] = [256, 56] (1x128 rows), got float64 [2, 56]""")
        self.assertExpectedInline(self.gemm(c=self.c.bfloat16()), """c must be float32 [M, N] = [64, 256], got bfloat16 [64, 256]""")

    def test_ranks(self):
        self.assertExpectedInline(self.gemm(a=self.a[None]), """a must be float8_e4m3fn [M, K], got float8_e4m3fn [1, 64, 7168]""")
        self.assertExpectedInline(self.gemm(b=self.b[0]), """b must be float8_e4m3fn [N, K] = [N, 7168], got float8_e4m3fn [7168]""")

    def test_shape_disagreement(self):
        self.assertExpectedInline(self.gemm(b=self.b[:, :7040]), """b must be float8_e4m3fn [N, K] = [N, 7168], got float8_e4m3fn [256, 7040]""")
        self.assertExpectedInline(self.gemm(sfa=self.sfa[:, :55]), """sfa must be float32 [M, ceil(K/128)] = [64, 56], got float32 [64, 55]""")
        self.assertExpectedInline(self.gemm(sfa=self.sfa[:63]), """sfa must be float32 [M, ceil(K/128)] = [64, 56], got float32 [63, 56]""")
        self.assertExpectedInline(self.gemm(sfb=self.sfb[:1]), """sfb must be float32 [ceil(N/128), ceil(K/128)] = [2, 56] (128x128 blocks) or [N, ceil(K/128)] = [256, 56] (1x128 rows), got float32 [1, 56]""")
        self.assertExpectedInline(self.gemm(c=self.c[:, :255]), """c must be float32 [M, N] = [64, 256], got float32 [64, 255]""")

    def test_layout(self):
        self.assertExpectedInline(self.gemm(a=self.a.t().contiguous().t()), """a must be K-major (stride 1 along K), got strides (1, 64) for shape [64, 7168]""")

    def test_out_dtype(self):
        self.assertExpectedInline(self.gemm(out_dtype=torch.float16), """out_dtype must be torch.bfloat16 or torch.float32, got torch.float16""")
        self.assertExpectedInline(self.gemm(c=self.c, out_dtype=torch.bfloat16), """out_dtype must be torch.float32 when c is given (D = C + A*B accumulates in fp32), got torch.bfloat16""")

    def test_devices(self):
        meta = dict(device="meta")
        self.assertExpectedInline(self.gemm(sfa=self.sfa.to(**meta)), """sfa must be on the device of a (cpu), got meta""")
        self.assertExpectedInline(self.gemm(c=self.c.to(**meta)), """c must be on the device of a (cpu), got meta""")

    def test_out(self):
        out = torch.empty(64, 256, dtype=torch.float16)
        self.assertExpectedInline(self.error(ops.fp8_gemm_nt_out, self.a, self.sfa, self.b, self.sfb, out), """out must be bfloat16 or float32 [M, N] = [64, 256], got float16 [64, 256]""")
        out = torch.empty(64, 256, dtype=torch.bfloat16)
        self.assertExpectedInline(
            self.error(ops.fp8_gemm_nt_out, self.a, self.sfa, self.b, self.sfb, out, self.c), """out must be float32 (c is given) [M, N] = [64, 256], got bfloat16 [64, 256]""")
        out = torch.empty(65, 256, dtype=torch.bfloat16)
        self.assertExpectedInline(self.error(ops.fp8_gemm_nt_out, self.a, self.sfa, self.b, self.sfb, out), """out must be bfloat16 or float32 [M, N] = [64, 256], got bfloat16 [65, 256]""")
        out = torch.empty(256, 64, dtype=torch.bfloat16).t()
        self.assertExpectedInline(self.error(ops.fp8_gemm_nt_out, self.a, self.sfa, self.b, self.sfb, out), """out must have stride 1 along N, got strides (1, 64)""")

    def test_contiguous(self):
        a, sfa, b, sfb, m_indices = contiguous_inputs([100, 28], 256, 256)
        fn = ops.m_grouped_fp8_gemm_nt_contiguous
        self.assertExpectedInline(self.error(fn, a, sfa, b, sfb, m_indices.long()), """m_indices must be int32 [M] = [256], got int64 [256]""")
        self.assertExpectedInline(self.error(fn, a, sfa, b, sfb, m_indices[:-1]), """m_indices must be int32 [M] = [256], got int32 [255]""")
        self.assertExpectedInline(self.error(fn, a, sfa, b, sfb[:1], m_indices), """sfb must be float32 [G, ceil(N/128), ceil(K/128)] = [2, 2, 2] (128x128 blocks) or [G, N, ceil(K/128)] = [2, 256, 2] (1x128 rows), got float32 [1, 2, 2]""")
        self.assertExpectedInline(self.error(fn, a, sfa, b[0], sfb, m_indices), """b must be float8_e4m3fn [G, N, K] = [G, N, 256], got float8_e4m3fn [256, 256]""")
        self.assertExpectedInline(self.error(fn, a, sfa, b, sfb, m_indices.to("meta")), """m_indices must be on the device of a (cpu), got meta""")
        bad = m_indices.clone()
        bad[5] = 2
        self.assertExpectedInline(self.error(fn, a, sfa, b, sfb, bad), """m_indices must hold group ids in [0, 2) or -1 (padding), got 2 at row 5""")
        shifted = torch.cat([m_indices[1:], m_indices[-1:]])
        self.assertExpectedInline(self.error(fn, a, sfa, b, sfb, shifted), """m_indices: the rows of group 1 start at row 127, which is not a multiple of get_mk_alignment_for_contiguous_layout() = 128""")

    def test_masked(self):
        a, sfa, b, sfb, masked_m = masked_inputs([3, 64], 64, 256, 256)
        fn = ops.m_grouped_fp8_gemm_nt_masked
        self.assertExpectedInline(self.error(fn, a, sfa, b, sfb, masked_m, 0), """expected_m must be an int >= 1 (the typical rows per group), got 0""")
        self.assertExpectedInline(self.error(fn, a, sfa, b, sfb, masked_m[:1], 32), """masked_m must be int32 [G] = [2], got int32 [1]""")
        self.assertExpectedInline(self.error(fn, a, sfa, b[:1], sfb[:1], masked_m, 32), """b must be float8_e4m3fn [G, N, K] = [2, N, 256], got float8_e4m3fn [1, 256, 256]""")
        self.assertExpectedInline(self.error(fn, a, sfa[:, :, :1], b, sfb, masked_m, 32), """sfa must be float32 [G, Mmax, ceil(K/128)] = [2, 64, 2], got float32 [2, 64, 1]""")
        self.assertExpectedInline(self.error(fn, a, sfa, b, sfb, masked_m.to("meta"), 32), """masked_m must be on the device of a (cpu), got meta""")
        self.assertExpectedInline(self.error(fn, a, sfa, b, sfb, masked_m + 1, 32), """masked_m[1] must be in [0, Mmax = 64], got 65""")
        out = torch.empty(2, 64, 255, dtype=torch.bfloat16)
        self.assertExpectedInline(
            self.error(ops.m_grouped_fp8_gemm_nt_masked_out, a, sfa, b, sfb, masked_m, 32, out), """out must be bfloat16 or float32 [G, Mmax, N] = [2, 64, 256], got bfloat16 [2, 64, 255]""")

    def test_casts_and_layout(self):
        x = torch.randn(4, 256)
        self.assertExpectedInline(self.error(ops.per_token_cast_to_fp8, x.double()), """x must be a 2-D bfloat16, float16 or float32 tensor, got float64 [4, 256]""")
        self.assertExpectedInline(self.error(ops.per_token_cast_to_fp8, x[None]), """x must be a 2-D bfloat16, float16 or float32 tensor, got float32 [1, 4, 256]""")
        self.assertExpectedInline(self.error(ops.per_token_cast_to_fp8, x, 0), """group_size must be an int >= 1, got 0""")
        self.assertExpectedInline(self.error(ops.per_block_cast_to_fp8, x, -128), """block_size must be an int >= 1, got -128""")
        self.assertExpectedInline(self.error(ops.get_mn_major_tma_aligned_tensor, x.bfloat16()), """sf must be float32 [MN, ceil(K/128)] or [G, MN, ceil(K/128)], got bfloat16 [4, 256]""")

    def test_helpers(self):
        import deepgemm_ops

        self.assertExpectedInline(self.error(deepgemm_ops.set_num_sms, 0), """num_sms must be an int >= 1, got 0""")
        self.assertExpectedInline(self.error(deepgemm_ops.set_pdl, 1), """enabled must be a bool, got int""")
        self.assertExpectedInline(self.error(deepgemm_ops.get_tma_aligned_size, 8, 3), """element_size must be 1, 2, 4, 8 or 16 bytes, got 3""")

    def test_bad_input_matrix_same_on_cpu_and_fake_cuda(self):
        # One contract: the CPU kernels and the fakes (so torch.compile, and the CUDA path, which validates through
        # the same functions) reject the same inputs with the same message. test_gpu runs the matrix on the GPU.
        from torch._subclasses.fake_tensor import FakeTensorMode

        cases = bad_inputs()
        messages = {name: self.error(fn, *args) for name, (fn, args) in cases.items()}
        self.assertExpectedInline("\n".join(f"{k}: {v}" for k, v in messages.items()), """\
a float32: a must be float8_e4m3fn [M, K], got float32 [64, 640]
a rows broadcast: a must not repeat elements through a zero stride (a broadcast/expanded view), got strides (0, 1) for shape [64, 640]
a not K-major: a must be K-major (stride 1 along K), got strides (1, 64) for shape [64, 640]
b rows broadcast: b must not repeat elements through a zero stride (a broadcast/expanded view), got strides (0, 1) for shape [256, 640]
b K mismatch: b must be float8_e4m3fn [N, K] = [N, 640], got float8_e4m3fn [256, 512]
sfa short: sfa must be float32 [M, ceil(K/128)] = [64, 5], got float32 [64, 4]
sfb neither recipe: sfb must be float32 [ceil(N/128), ceil(K/128)] = [2, 5] (128x128 blocks) or [N, ceil(K/128)] = [256, 5] (1x128 rows), got float32 [1, 5]
c bfloat16: c must be float32 [M, N] = [64, 256], got bfloat16 [64, 256]
out_dtype float16: out_dtype must be torch.bfloat16 or torch.float32, got torch.float16
out_dtype bf16 with c: out_dtype must be torch.float32 when c is given (D = C + A*B accumulates in fp32), got torch.bfloat16
out float16: out must be bfloat16 or float32 [M, N] = [64, 256], got float16 [64, 256]
out rows broadcast: out must not repeat elements through a zero stride (a broadcast/expanded view), got strides (0, 1) for shape [64, 256]
out bf16 with c: out must be float32 (c is given) [M, N] = [64, 256], got bfloat16 [64, 256]
bias float32, bf16 out: bias must have the output's dtype, bfloat16, got float32 [256]
bias short: bias must be bfloat16 [N] = [256], got bfloat16 [255]
bias broadcast: bias must not repeat elements through a zero stride (a broadcast/expanded view), got strides (0,) for shape [256]
out_ bias bf16, fp32 out: bias must have the output's dtype, float32, got bfloat16 [256]
m_indices int64: m_indices must be int32 [M] = [256], got int64 [256]
contiguous sfb groups: sfb must be float32 [G, ceil(N/128), ceil(K/128)] = [3, 2, 5] (128x128 blocks) or [G, N, ceil(K/128)] = [3, 256, 5] (1x128 rows), got float32 [2, 2, 5]
contiguous out short: out must be bfloat16 or float32 [M, N] = [256, 256], got bfloat16 [255, 256]
masked expected_m 0: expected_m must be an int >= 1 (the typical rows per group), got 0
masked expected_m -3: expected_m must be an int >= 1 (the typical rows per group), got -3
masked_m wrong length: masked_m must be int32 [G] = [2], got int32 [1]
masked out split: out must hold its groups back to back (stride(0) == Mmax * stride(1) = 16384), got strides (32768, 256, 1)
bf16 nn b K mismatch: b must be bfloat16 [K, N] = [640, N], got bfloat16 [512, 256]
bf16 tn a last dim strided: a must have stride 1 along M (stored [K, M] for layout 'tn'), got strides (1, 64) for shape [64, 640]
bf16 nt a float8: a must be bfloat16 [M, K], got float8_e4m3fn [64, 640]
bf16 masked expected_m 0: expected_m must be an int >= 1 (the typical rows per group), got 0
k-grouped sfb block shape: sfb must be float32 [N, ceil(sum(K)/128)] = [256, 5], got float32 [2, 5]
cast float64: x must be a 2-D bfloat16, float16 or float32 tensor, got float64 [4, 256]
cast group 0: group_size must be an int >= 1, got 0
block cast 3-D: x must be a 2-D bfloat16, float16 or float32 tensor, got float32 [1, 4, 256]
block cast and transpose, int: x must be a 2-D bfloat16, float16 or float32 tensor, got int32 [4, 256]
token cast and transpose, 1-D: x must be a 2-D bfloat16, float16 or float32 tensor, got float32 [256]
token cast, transpose and sum, fp64: x must be a 2-D bfloat16, float16 or float32 tensor, got float64 [4, 256]""")
        with FakeTensorMode():
            def fake_cuda(x):  # same shape, strides and dtype; values do not matter to validation
                if not isinstance(x, torch.Tensor):
                    return x
                return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="cuda")

            for name, (fn, args) in cases.items():
                with self.subTest(case=name):
                    self.assertEqual(self.error(fn, *[fake_cuda(x) for x in args]), messages[name])

    def test_typed_entry_points_refuse_bools(self):
        import deepgemm_ops

        a, sfa, b, sfb, masked_m = masked_inputs([3, 5], 64, 256, 128)
        self.assertExpectedInline(self.error(deepgemm_ops.m_grouped_fp8_gemm_nt_masked, a, sfa, b, sfb, masked_m, True), """expected_m must be an int >= 1 (the typical rows per group), got True""")
        self.assertExpectedInline(self.error(deepgemm_ops.per_token_cast_to_fp8, torch.randn(4, 256), True), """group_size must be an int >= 1, got True""")

    def test_k_grouped_gpu_rules(self):
        from deepgemm_ops import _validate as V

        V.check_k_grouped_gpu(384)
        V.check_k_grouped_gpu(0)  # every group empty: no kernel runs
        self.assertExpectedInline(self.error(V.check_k_grouped_gpu, 320), """sum(K) (the K extent of a and b) must be a multiple of 128 on the GPU (every group's K is), got sum(K) = 320""")

    def test_gpu_extents(self):
        # The GPU path's own rules (no GPU needed: shapes on the meta device allocate nothing). 32-bit extents:
        # M = 2^31 rows would otherwise be narrowed and computed modulo 2^32.
        from deepgemm_ops import _cuda

        def meta(*shape, dtype=F8):
            return torch.empty(*shape, dtype=dtype, device="meta")

        huge_a, b, out = meta(2**31, 16), meta(256, 16), meta(2**31, 256, dtype=torch.bfloat16)
        self.assertExpectedInline(self.error(_cuda.check_gpu_gemm, huge_a, b, 16, out), """a is too large for the GPU kernels: 2147483648 rows (over all groups) x 16 columns, at most 2147483647 (2^31 - 1) each (32-bit TMA coordinates)""")
        grouped_b = meta(2**16, 2**15, 16)  # G * N rows
        self.assertExpectedInline(self.error(_cuda.check_gpu_gemm, meta(64, 16), grouped_b, 16, meta(64, 2**15, dtype=torch.bfloat16)), """b is too large for the GPU kernels: 2147483648 rows (over all groups) x 16 columns, at most 2147483647 (2^31 - 1) each (32-bit TMA coordinates)""")
        _cuda.check_gpu_gemm(meta(2**31 - 1, 16), b, 16, meta(2**31 - 1, 256, dtype=torch.bfloat16))  # the largest
        self.assertExpectedInline(self.error(_cuda.check_gpu_gemm, meta(64, 24), meta(256, 24), 24, meta(64, 256)), """K must be a multiple of 16 on the GPU (TMA row alignment), got K = 24""")

    def test_bf16_gpu_rules(self):
        # What the BF16 kernels need (TMA rows of 16-byte units), checked on CPU tensors: the rule reads only shapes,
        # strides and the start address.
        from deepgemm_ops import _validate as V

        def bf16(*shape):
            return torch.zeros(*shape, dtype=torch.bfloat16)

        out = bf16(64, 256)
        V.check_bf16_gpu("nt", bf16(64, 576), bf16(256, 576), out)  # K % 8 == 0: fine
        V.check_bf16_gpu("tn", bf16(577, 64), bf16(577, 256), out)  # no K-major operand: any K
        V.check_bf16_gpu("nt", bf16(64, 584)[:, :577], bf16(256, 584)[:, :577], out)  # padded rows: any K
        self.assertExpectedInline(self.error(V.check_bf16_gpu, "nt", bf16(64, 100), bf16(256, 100), out), """a (stored [M, K] for layout 'nt') must have a row stride that is a multiple of 8 elements and at least K = 100, and a 16-byte aligned start, on the GPU (TMA), got row stride 100 at offset 0 mod 16: pad K to a multiple of 8 (a slice of a padded buffer works)""")
        self.assertExpectedInline(self.error(V.check_bf16_gpu, "tt", bf16(64, 65), bf16(256, 64), out), """a (stored [K, M] for layout 'tt') must have a row stride that is a multiple of 8 elements and at least M = 65, and a 16-byte aligned start, on the GPU (TMA), got row stride 65 at offset 0 mod 16: pad M to a multiple of 8 (a slice of a padded buffer works)""")
        self.assertExpectedInline(self.error(V.check_bf16_gpu, "nn", bf16(64, 64), bf16(64, 258), out), """b (stored [K, N] for layout 'nn') must have a row stride that is a multiple of 8 elements and at least N = 258, and a 16-byte aligned start, on the GPU (TMA), got row stride 258 at offset 0 mod 16: pad N to a multiple of 8 (a slice of a padded buffer works)""")
        self.assertExpectedInline(self.error(V.check_bf16_gpu, "nt", bf16(64, 72)[:, 1:65], bf16(256, 64), out), """a (stored [M, K] for layout 'nt') must have a row stride that is a multiple of 8 elements and at least K = 64, and a 16-byte aligned start, on the GPU (TMA), got row stride 72 at offset 2 mod 16: pad K to a multiple of 8 (a slice of a padded buffer works)""")
        self.assertExpectedInline(self.error(V.check_bf16_gpu, "nt", bf16(8, 64), bf16(256, 64), torch.empty(2**31, 256, dtype=torch.bfloat16, device="meta")), """out is too large for the GPU kernels: 2147483648 rows (over all groups) x 256 columns, at most 2147483647 (2^31 - 1) each (32-bit TMA coordinates)""")


if __name__ == "__main__":
    expecttest.run_tests()
