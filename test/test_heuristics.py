"""Config choices of the FP8 GEMM heuristics (pure Python) as expect-tests: a change of choice shows up in review."""

import dataclasses
import itertools

import pytest
from expecttest import TestCase

from deepgemm_ops import _heuristics as H

SEED_NK = ((2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048))


def _row(cfg):
    split = f" sk={cfg.num_splits}" if cfg.num_splits > 1 else ""
    return f"bm={cfg.block_m} bn={cfg.block_n} st={cfg.num_stages} cl={cfg.cluster_size}{split} smem={cfg.smem_bytes}"


class TestHeuristics(TestCase):
    def test_dense_seed_shapes(self):
        lines = []
        for m in (64, 128, 4096):
            for n, k in SEED_NK:
                cfg = H.choose_fp8_gemm_config(m, n, k, num_sms=132, out_dtype="bf16", sfb_recipe="128x128",
                                               has_c=False, gemm_type="normal")
                lines.append(f"{m}x{n}x{k}: {_row(cfg)}")
        self.assertExpectedInline("\n".join(lines), """\
64x2112x7168: bm=64 bn=32 st=16 cl=1 sk=2 smem=207112
64x24576x1536: bm=64 bn=96 st=10 cl=1 smem=223648
64x32768x512: bm=64 bn=128 st=8 cl=1 smem=219264
64x7168x16384: bm=64 bn=64 st=13 cl=1 smem=228048
64x4096x7168: bm=64 bn=32 st=16 cl=1 smem=207104
64x7168x2048: bm=64 bn=64 st=13 cl=1 smem=228048
128x2112x7168: bm=64 bn=64 st=13 cl=1 sk=2 smem=228056
128x24576x1536: bm=128 bn=96 st=7 cl=1 smem=231664
128x32768x512: bm=128 bn=128 st=5 cl=1 smem=201808
128x7168x16384: bm=128 bn=112 st=6 cl=1 sk=2 smem=218856
128x4096x7168: bm=128 bn=64 st=8 cl=1 sk=2 smem=219272
128x7168x2048: bm=64 bn=112 st=9 cl=1 smem=223568
4096x2112x7168: bm=128 bn=192 st=4 cl=2 smem=218176
4096x24576x1536: bm=256 bn=128 st=3 cl=2 smem=217648
4096x32768x512: bm=256 bn=128 st=3 cl=2 smem=217648
4096x7168x16384: bm=256 bn=128 st=3 cl=2 smem=217648
4096x4096x7168: bm=256 bn=128 st=3 cl=2 smem=217648
4096x7168x2048: bm=256 bn=128 st=3 cl=2 smem=217648""")

    def test_grouped_seed_shapes(self):
        lines = []
        for g, m in ((4, 8192), (8, 4096)):
            for n, k in ((4096, 7168), (7168, 2048)):
                cfg = H.choose_fp8_gemm_config(g * m, n, k, num_sms=132, out_dtype="bf16", sfb_recipe="128x128",
                                               has_c=False, gemm_type="contiguous", num_groups=g)
                lines.append(f"contiguous {g}x{m} {n}x{k}: {_row(cfg)}")
        for g, m, n, k in ((1, 1024, 4096, 7168), (2, 512, 7168, 2048), (4, 256, 4096, 7168), (32, 192, 6144, 7168),
                           (32, 20, 6144, 7168)):
            mmax = m if g <= 4 else max(128, -(-int(m * 1.3) // 64) * 64)
            cfg = H.choose_fp8_gemm_config(mmax, n, k, num_sms=132, out_dtype="bf16", sfb_recipe="128x128",
                                           has_c=False, gemm_type="masked", num_groups=g, expected_m=m)
            lines.append(f"masked {g}x{m} {n}x{k}: {_row(cfg)}")
        self.assertExpectedInline("\n".join(lines), """\
contiguous 4x8192 4096x7168: bm=256 bn=128 st=3 cl=2 smem=217648
contiguous 4x8192 7168x2048: bm=256 bn=128 st=3 cl=2 smem=217648
contiguous 8x4096 4096x7168: bm=256 bn=128 st=3 cl=2 smem=217648
contiguous 8x4096 7168x2048: bm=256 bn=128 st=3 cl=2 smem=217648
masked 1x1024 4096x7168: bm=256 bn=128 st=3 cl=2 smem=217648
masked 2x512 7168x2048: bm=128 bn=160 st=5 cl=1 smem=231120
masked 4x256 4096x7168: bm=256 bn=128 st=3 cl=2 smem=217648
masked 32x192 6144x7168: bm=256 bn=128 st=3 cl=2 smem=217648
masked 32x20 6144x7168: bm=64 bn=128 st=8 cl=1 smem=219264""")

    def test_fp32_with_c_and_1x128(self):
        cfg = H.choose_fp8_gemm_config(4096, 576, 576, num_sms=132, out_dtype="fp32", sfb_recipe="1x128",
                                       has_c=True, gemm_type="normal")
        self.assertExpectedInline(repr(cfg), """GemmConfig(block_m=128, block_n=144, block_k=128, num_stages=4, num_math_warpgroups=2, num_threads=384, cluster_size=1, swizzle_group_n=8, smem_bytes=217408, num_sms=132, gemm_type='normal', sfb_recipe='1x128', out_dtype='fp32', has_c=True, num_splits=1)""")
        self.assertEqual(len(cfg.as_ints()), len(dataclasses.fields(H.GemmConfig)))

    def test_dense_weight_gradient_tiles(self):
        # 1x128 on both operands, bf16 out or fp32 += C: 256-row tiles in A-sharing pairs where they add few waves
        # (fp32 through the TMA epilogue: +8-16% over 128x128 tiles, docs/PERF.md session 19).
        rows = []
        for m, n, k in ((7168, 7168, 8192), (7168, 4096, 8192), (4096, 7168, 8192), (7168, 2048, 8192)):
            for out in ("bf16", "fp32"):
                cfg = H.choose_fp8_gemm_config(m, n, k, num_sms=132, out_dtype=out, sfb_recipe="1x128",
                                               has_c=out == "fp32", gemm_type="normal")
                rows.append(f"{m}x{n}x{k} {out}: {_row(cfg)}")
        self.assertExpectedInline("\n".join(rows), """\
7168x7168x8192 bf16: bm=256 bn=112 st=3 cl=2 smem=203120
7168x7168x8192 fp32: bm=256 bn=112 st=3 cl=2 smem=203120
7168x4096x8192 bf16: bm=256 bn=128 st=3 cl=2 smem=217648
7168x4096x8192 fp32: bm=256 bn=128 st=3 cl=2 smem=217648
4096x7168x8192 bf16: bm=256 bn=112 st=3 cl=2 smem=203120
4096x7168x8192 fp32: bm=256 bn=112 st=3 cl=2 smem=203120
7168x2048x8192 bf16: bm=128 bn=128 st=5 cl=2 smem=201808
7168x2048x8192 fp32: bm=128 bn=128 st=4 cl=2 smem=200768""")

    def test_every_config_fits_and_is_deterministic(self):
        for m in (1, 65, 300, 4097):
            for n in (8, 576, 2112, 7168, 32768):
                for out, has_c in (("bf16", False), ("fp32", False), ("fp32", True)):
                    kw = dict(num_sms=132, out_dtype=out, sfb_recipe="1x128", has_c=has_c, gemm_type="normal")
                    cfg = H.choose_fp8_gemm_config(m, n, 576, **kw)
                    self.assertLessEqual(cfg.smem_bytes, H.SM90_MAX_SMEM_BYTES)
                    self.assertEqual(cfg.smem_bytes,
                                     H.smem_bytes(cfg.block_m, cfg.block_n, cfg.num_stages, out, cfg.num_splits))
                    self.assertEqual(H.choose_fp8_gemm_config.__wrapped__(m, n, 576, **kw), cfg)

    def test_with_tile_derives_the_dependent_fields(self):
        base = H.choose_fp8_gemm_config(4096, 7168, 2048, num_sms=132, out_dtype="bf16", sfb_recipe="128x128",
                                        has_c=False, gemm_type="normal")
        cfg = H.with_tile(base, block_m=64, block_n=112)
        self.assertExpectedInline(_row(cfg) + f" wg={cfg.num_math_warpgroups} threads={cfg.num_threads}",
                                  """bm=64 bn=112 st=9 cl=1 smem=223568 wg=1 threads=256""")
        cfg = H.with_tile(base, block_m=128, block_n=192, cluster_size=2)
        self.assertExpectedInline(_row(cfg) + f" wg={cfg.num_math_warpgroups} threads={cfg.num_threads}",
                                  """bm=128 bn=192 st=4 cl=2 smem=218176 wg=2 threads=384""")
        self.assertGreater(H.smem_bytes(128, 192, 5, "bf16"), H.SM90_MAX_SMEM_BYTES)  # 4 is the most that fit
        self.assertEqual(H.with_tile(base, block_m=64, block_n=16, num_stages=3).num_stages, 3)
        with self.assertRaises(ValueError) as ctx:  # a forced depth beyond shared memory fails here, not at load
            H.with_tile(base, block_m=128, block_n=192, num_stages=5)
        self.assertExpectedInline(str(ctx.exception), """num_stages=5 with a 128x192 tile needs 260432 bytes of shared memory; an SM90 block has at most 232448 (at most 4 stages fit)""")

    def test_split_k_only_in_one_wave_of_normal_gemms(self):
        """Split-K: normal GEMMs only, tiles of at most 128 rows, no multicast cluster, every split at least two
        k-blocks, and all of a launch's clusters (one per tile) at once within the SM budget."""
        splits = set()
        for m, n, k, sms in itertools.product([1, 64, 128, 256, 512, 4096], [576, 2112, 4096, 7168, 24576],
                                              [512, 2048, 7168, 16384], [132, 66, 20]):
            for recipe, out, has_c in (("128x128", "bf16", False), ("1x128", "fp32", True)):
                kw = dict(num_sms=sms, out_dtype=out, sfb_recipe=recipe, has_c=has_c)
                cfg = H.choose_fp8_gemm_config(m, n, k, gemm_type="normal", **kw)
                if cfg.num_splits > 1:
                    splits.add((m, n, k, sms))
                    tiles = -(-m // cfg.block_m) * -(-n // cfg.block_n)
                    self.assertLessEqual(tiles * cfg.num_splits, sms)
                    self.assertGreaterEqual(-(-k // 128), 2 * cfg.num_splits)
                    self.assertEqual((cfg.cluster_size, cfg.block_m <= 128), (1, True))
                for gemm_type in ("contiguous", "masked"):
                    self.assertEqual(H.choose_fp8_gemm_config(m, n, k, gemm_type=gemm_type, num_groups=2,
                                                              **kw).num_splits, 1)
        self.assertIn((64, 2112, 7168, 132), splits)
        self.assertNotIn((64, 7168, 2048, 132), splits)  # bound by its DRAM bytes: two splits were slower

    def test_contiguous_tiles_hold_at_most_two_groups(self):
        # Contiguous groups start at multiples of 128 rows: a 64/128-row tile holds one group's rows, a 256-row tile's
        # halves at most two (then computed in two passes over K), and 256-row tiles take 128x128 B scales only.
        align = H.get_mk_alignment_for_contiguous_layout()
        picked_256 = False
        for m, n, k in itertools.product([128, 4096, 65536], [576, 4096, 24576], [512, 7168]):
            for recipe in H.SFB_RECIPES:
                cfg = H.choose_fp8_gemm_config(m, n, k, num_sms=132, out_dtype="bf16", sfb_recipe=recipe,
                                               has_c=False, gemm_type="contiguous", num_groups=4)
                if cfg.block_m == 2 * align:
                    picked_256 = True
                    self.assertEqual((recipe, cfg.cluster_size), ("128x128", 2), (m, n, k))
                else:
                    self.assertEqual(align % cfg.block_m, 0, (m, n, k, recipe))
        self.assertTrue(picked_256)

    def test_errors(self):
        kw = dict(num_sms=132, out_dtype="bf16", sfb_recipe="128x128", has_c=False, gemm_type="normal")
        with self.assertRaises(ValueError) as e:
            H.choose_fp8_gemm_config(128, 256, 100, **kw)
        self.assertExpectedInline(str(e.exception), """need m >= 1, n >= 1 and k a positive multiple of 16, got m=128, n=256, k=100""")
        with self.assertRaises(ValueError) as e:
            H.choose_fp8_gemm_config(128, 256, 128, **{**kw, "has_c": True})
        self.assertExpectedInline(str(e.exception), """a C operand needs out_dtype 'fp32', got 'bf16'""")
        with self.assertRaises(ValueError) as e:
            H.choose_fp8_gemm_config(128, 256, 128, **{**kw, "gemm_type": "dense"})
        self.assertExpectedInline(str(e.exception), """gemm_type must be one of ('normal', 'contiguous', 'masked', 'k_grouped'), got 'dense'""")
        with self.assertRaises(ValueError) as e:
            H.choose_fp8_gemm_config(128, 256, 128, **{**kw, "gemm_type": "k_grouped", "num_groups": 4})
        self.assertExpectedInline(str(e.exception), """a k_grouped GEMM takes sfb_recipe '1x128' and out_dtype 'fp32', got '128x128' and 'bf16'""")

    def test_k_grouped_wgrad_shapes(self):
        # DeepGEMM's wgrad cases (M = 4096 / 7168, ~8192 / 4096 / 2048 tokens per group): every group's M x N tiles,
        # no width that spills in the k-grouped kernel (_K_GROUPED_SPILLING_BLOCK_N).
        picks = []
        for m, n, group_k, g in [(4096, 7168, 8192, 4), (7168, 2048, 4096, 8), (4096, 7168, 2048, 16), (65, 96, 128, 3)]:
            for has_c in (False, True):
                cfg = H.choose_fp8_gemm_config(m, n, group_k, num_sms=132, out_dtype="fp32", sfb_recipe="1x128",
                                               has_c=has_c, gemm_type="k_grouped", num_groups=g)
                self.assertNotIn(cfg.block_n, H._K_GROUPED_SPILLING_BLOCK_N)
                self.assertEqual((cfg.cluster_size, cfg.gemm_type), (1, "k_grouped"))
                picks.append(f"{m}x{n}x{group_k} x{g}{' +C' if has_c else ''}: {cfg.block_m}x{cfg.block_n} "
                             f"s{cfg.num_stages}")
        self.assertExpectedInline("\n".join(picks), """\
4096x7168x8192 x4: 256x128 s3
4096x7168x8192 x4 +C: 256x128 s3
7168x2048x4096 x8: 256x128 s3
7168x2048x4096 x8 +C: 256x128 s3
4096x7168x2048 x16: 256x128 s3
4096x7168x2048 x16 +C: 256x128 s3
65x96x128 x3: 64x16 s16
65x96x128 x3 +C: 64x16 s16""")


    def test_bf16_seed_picks(self):
        """BF16 tiles at M = 4096 per layout (an N-major b takes multiples of 64); 176 columns at N = 2112 for normal
        GEMMs only, grouped ones never take it."""
        from deepgemm_ops import _bf16_heuristics as BH

        rows = []
        for layout in BH.BF16_LAYOUTS:
            picks = [BH.choose_bf16_gemm_config(4096, n, k, num_sms=132, layout=layout, out_dtype="bf16",
                                                has_c=False, gemm_type="normal") for n, k in SEED_NK]
            rows.append(f"{layout}: " + " ".join(f"{c.block_m}x{c.block_n}s{c.num_stages}" for c in picks))
        self.assertExpectedInline("\n".join(rows), """\
nt: 128x176s4 128x224s3 128x224s3 128x256s3 128x256s3 128x256s3
nn: 128x192s4 128x256s3 128x256s3 128x256s3 128x256s3 128x256s3
tn: 128x192s4 128x256s3 128x256s3 128x256s3 128x256s3 128x256s3
tt: 128x176s4 128x224s3 128x224s3 128x256s3 128x256s3 128x256s3""")
        for (g, rows_per_group), (n, k) in itertools.product([(4, 4096), (32, 256)], [(6144, 7168), (2112, 7168)]):
            for gemm_type, m in (("contiguous", g * rows_per_group), ("masked", rows_per_group)):
                cfg = BH.choose_bf16_gemm_config(m, n, k, num_sms=132, layout="nt", out_dtype="bf16", has_c=False,
                                                 gemm_type=gemm_type, num_groups=g)
                self.assertNotIn(cfg.block_n, BH._NORMAL_ONLY_BLOCK_N, (gemm_type, g, n, k))
        with self.assertRaisesRegex(ValueError, r"num_stages=9 with a 128x256 tile needs \d+ bytes"):
            BH.with_bf16_tile(cfg, block_m=128, block_n=256, num_stages=9)

if __name__ == "__main__":
    pytest.main([__file__])
